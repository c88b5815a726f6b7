//! The few Python built-ins and regular expressions the authors' grader leans on, restated for Rust.
//!
//! Each function says which Python expression it stands for. Strings are walked as `char`s, as Python
//! indexes code points. Where Python's `\d` would accept any Unicode decimal digit we accept ASCII
//! digits only (the datasets and model outputs use ASCII digits).

/// `c.isspace()` in Python: Unicode White_Space plus the four ASCII separators U+001C..U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `s.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// `float(s)`: `Some(value)` when Python accepts the text. Grammar after stripping whitespace:
/// `[+-]? (inf | infinity | nan | digits [. digits?] [e [+-]? digits] | . digits [e [+-]? digits])`,
/// case-insensitive words, single underscores allowed between digits.
pub fn py_float(s: &str) -> Option<f64> {
    let t = py_strip(s);
    let (sign, body) = match t.as_bytes().first() {
        Some(b'+') => ("", &t[1..]),
        Some(b'-') => ("-", &t[1..]),
        _ => ("", t),
    };
    let lower = body.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" {
        return Some(if sign == "-" { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if lower == "nan" {
        return Some(f64::NAN);
    }
    let chars: Vec<char> = body.chars().collect();
    let mut clean = String::from(sign);
    let mut i = 0;
    let int_digits = take_digit_part(&chars, &mut i, &mut clean);
    let mut frac_digits = 0;
    if i < chars.len() && chars[i] == '.' {
        clean.push('.');
        i += 1;
        frac_digits = take_digit_part(&chars, &mut i, &mut clean);
    }
    if int_digits == 0 && frac_digits == 0 {
        return None;
    }
    if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
        clean.push('e');
        i += 1;
        if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
            clean.push(chars[i]);
            i += 1;
        }
        if take_digit_part(&chars, &mut i, &mut clean) == 0 {
            return None;
        }
    }
    if i != chars.len() {
        return None;
    }
    clean.parse::<f64>().ok()
}

/// Reads `digit (_? digit)*` at `*i` into `out` (underscores dropped); returns the number of digits.
fn take_digit_part(chars: &[char], i: &mut usize, out: &mut String) -> usize {
    let mut n = 0;
    while *i < chars.len() {
        let c = chars[*i];
        if c.is_ascii_digit() {
            out.push(c);
            n += 1;
            *i += 1;
        } else if c == '_' && n > 0 && *i + 1 < chars.len() && chars[*i + 1].is_ascii_digit() {
            *i += 1;
        } else {
            break;
        }
    }
    n
}

/// `abs(x - int(round(x))) <= 1e-7`, false where `int()` raises (inf, nan).
pub fn is_near_int(x: f64) -> bool {
    x.is_finite() && (x - x.round_ties_even()).abs() <= 1e-7
}

/// The integer a number literal of [`py_float`]'s grammar denotes, printed as `str(int(…))` does but
/// without passing through a float: `123456789012345678901` keeps its 21 digits (the float route
/// gives `123456789012345683968`, so the authors equate it with its neighbours), `1.5e3` is `1500`.
/// None when the literal's value is not an integer exactly, or is not a literal, or its exponent
/// passes 1000 (the float route applies then).
pub fn exact_int_literal(s: &str) -> Option<String> {
    let t = py_strip(s);
    let (negative, body) = match t.as_bytes().first() {
        Some(b'+') => (false, &t[1..]),
        Some(b'-') => (true, &t[1..]),
        _ => (false, t),
    };
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    let mut digits = String::new();
    let int_len = take_digit_part(&chars, &mut i, &mut digits) as i64;
    if i < chars.len() && chars[i] == '.' {
        i += 1;
        take_digit_part(&chars, &mut i, &mut digits);
    }
    if digits.is_empty() {
        return None;
    }
    let mut exponent = 0i64;
    if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
        i += 1;
        let sign = match chars.get(i) {
            Some('-') => {
                i += 1;
                -1
            }
            Some('+') => {
                i += 1;
                1
            }
            _ => 1,
        };
        let mut e = String::new();
        if take_digit_part(&chars, &mut i, &mut e) == 0 || e.len() > 4 {
            return None;
        }
        exponent = sign * e.parse::<i64>().ok()?;
    }
    if i != chars.len() || exponent.abs() > 1000 {
        return None;
    }
    // the decimal point sits after `point` digits; everything after it must be zeros
    let point = int_len + exponent;
    let n = digits.len() as i64;
    let whole = if point >= n {
        format!("{digits}{}", "0".repeat((point - n) as usize))
    } else {
        let cut = point.max(0) as usize;
        if digits[cut..].bytes().any(|b| b != b'0') {
            return None;
        }
        digits[..cut].to_string()
    };
    let whole = whole.trim_start_matches('0');
    Some(match (whole.is_empty(), negative) {
        (true, _) => "0".to_string(),
        (false, true) => format!("-{whole}"),
        (false, false) => whole.to_string(),
    })
}

/// `str(int(x))` for a finite float: the exact decimal digits of its integer part.
pub fn int_string(x: f64) -> String {
    let t = x.trunc();
    if t == 0.0 {
        return "0".to_string();
    }
    // `{:.0}` prints the exact decimal expansion; `t` is integral so nothing is rounded
    format!("{t:.0}")
}

/// `s == str(int(s))`: an integer written the way Python prints it (`-?(0|[1-9][0-9]*)`, no `-0`).
pub fn is_canonical_int(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return false;
    }
    !(s.starts_with('-') && digits == "0")
}

/// Python `$` inside a pattern: the end of the text, or just before one final newline.
fn at_dollar(c: &[char], pos: usize) -> bool {
    pos == c.len() || (pos + 1 == c.len() && c[pos] == '\n')
}

/// `re.sub(r"(\d)(,)(\d\d\d)($|\D)", r"\1\3\4", s)` repeated until nothing changes:
/// removes thousands separators such as `1,000,000` but leaves tuple commas `(1,2)`.
pub fn strip_thousands_commas(s: &str) -> String {
    let mut cur: Vec<char> = s.chars().collect();
    loop {
        let mut out = Vec::with_capacity(cur.len());
        let mut i = 0;
        while i < cur.len() {
            let d = |k: usize| k < cur.len() && cur[k].is_ascii_digit();
            if d(i) && i + 1 < cur.len() && cur[i + 1] == ',' && d(i + 2) && d(i + 3) && d(i + 4) {
                let end = if at_dollar(&cur, i + 5) {
                    Some(i + 5)
                } else if !d(i + 5) {
                    Some(i + 6)
                } else {
                    None
                };
                if let Some(end) = end {
                    out.push(cur[i]);
                    out.extend_from_slice(&cur[i + 2..end]);
                    i = end;
                    continue;
                }
            }
            out.push(cur[i]);
            i += 1;
        }
        if out == cur {
            return cur.into_iter().collect();
        }
        cur = out;
    }
}

/// `re.sub("([0-9]) +([0-9])", r"\1+\2", s)`: a mixed number `7 3/4` becomes `7+3/4`.
pub fn join_mixed_numbers(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < c.len() {
        if c[i].is_ascii_digit() {
            let mut j = i + 1;
            while j < c.len() && c[j] == ' ' {
                j += 1;
            }
            if j > i + 1 && j < c.len() && c[j].is_ascii_digit() {
                out.push(c[i]);
                out.push('+');
                out.push(c[j]);
                i = j + 1;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// `re.sub("- *", "-", s)`.
pub fn tighten_minus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut after_minus = false;
    for c in s.chars() {
        if after_minus && c == ' ' {
            continue;
        }
        after_minus = c == '-';
        out.push(c);
    }
    out
}

/// `re.sub(f"{unit}(es)?(s)? *(\^[0-9]+)?", "", s)`: the unit word, its plural, spaces after it
/// and a power such as `^2` are deleted wherever the word occurs (also inside longer words).
pub fn remove_unit(s: &str, unit: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let u: Vec<char> = unit.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < c.len() {
        if c[i..].starts_with(&u) {
            let mut j = i + u.len();
            if c[j..].starts_with(&['e', 's']) {
                j += 2;
            }
            if j < c.len() && c[j] == 's' {
                j += 1;
            }
            while j < c.len() && c[j] == ' ' {
                j += 1;
            }
            if j + 1 < c.len() && c[j] == '^' && c[j + 1].is_ascii_digit() {
                j += 1;
                while j < c.len() && c[j].is_ascii_digit() {
                    j += 1;
                }
            }
            i = j;
            continue;
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// Deletes `head`, then any spaces, then `tail` wherever the three occur in a row: `re.sub(r"\^ *\\circ", "", s)`
/// is `remove_spaced(s, "^", "\\circ")`; with an empty tail it deletes `head` and the spaces after it.
pub fn remove_spaced(s: &str, head: &str, tail: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let h: Vec<char> = head.chars().collect();
    let t: Vec<char> = tail.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < c.len() {
        if c[i..].starts_with(&h) {
            let mut j = i + h.len();
            while j < c.len() && c[j] == ' ' {
                j += 1;
            }
            if c[j..].starts_with(&t) {
                i = j + t.len();
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// The inner text of `re.search(r"^\\text\{(?P<text>.+?)\}$", s)`: the whole string is one
/// `\text{...}` (non-empty, one line), allowing one final newline after the closing brace.
pub fn text_wrapper_inner(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("\\text{")?;
    let body = rest.strip_suffix('\n').unwrap_or(rest);
    let inner = body.strip_suffix('}')?;
    if inner.is_empty() || inner.contains('\n') {
        return None;
    }
    Some(inner)
}

/// `re.search(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$", s)`: a literal fraction `a/b` (the `.` is any character
/// but a newline, as in the original, so `3x/4` qualifies too).
pub fn is_literal_fraction(s: &str) -> bool {
    let c: Vec<char> = s.chars().collect();
    // the slash can only sit right after the leading digit run or one character later
    let sign = usize::from(c.first() == Some(&'-'));
    let digits = c[sign..].iter().take_while(|d| d.is_ascii_digit()).count();
    [sign + digits, sign + digits + 1]
        .into_iter()
        .filter(|&k| k < c.len() && c[k] == '/')
        .any(|k| frac_left(&c[..k]) && frac_right(&c[k + 1..]))
}

fn frac_left(l: &[char]) -> bool {
    let l = l.strip_prefix(&['-']).unwrap_or(l);
    let all_digits = |x: &[char]| !x.is_empty() && x.iter().all(|c| c.is_ascii_digit());
    all_digits(l) || (l.len() >= 2 && all_digits(&l[..l.len() - 1]) && l[l.len() - 1] != '\n')
}

fn frac_right(r: &[char]) -> bool {
    let ok = |x: &[char]| x.iter().all(|c| c.is_ascii_digit()) && x.iter().any(|&c| c != '0');
    let mut candidates = vec![r];
    if let Some(r2) = r.strip_suffix(&['\n']) {
        candidates.push(r2);
    }
    candidates.into_iter().any(|x| ok(x) || (!x.is_empty() && x[x.len() - 1] != '\n' && ok(&x[..x.len() - 1])))
}

/// `_str_is_int`: after removing thousands separators, `float()` accepts it and it is within 1e-7 of an integer.
pub fn str_is_int(s: &str) -> bool {
    py_float(&strip_thousands_commas(s)).is_some_and(is_near_int)
}

/// `_str_to_int`: `str(int(float(s.replace(",", ""))))` (truncation, as the original does).
pub fn str_to_int(s: &str) -> Option<String> {
    let x = py_float(&s.replace(',', ""))?;
    x.is_finite().then(|| int_string(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_integer_literals() {
        assert_eq!(exact_int_literal("123456789012345678901").as_deref(), Some("123456789012345678901"));
        assert_eq!(exact_int_literal(" -0012 ").as_deref(), Some("-12"));
        assert_eq!(exact_int_literal("-0").as_deref(), Some("0"));
        assert_eq!(exact_int_literal("1.5e3").as_deref(), Some("1500"));
        assert_eq!(exact_int_literal("12.000").as_deref(), Some("12"));
        assert_eq!(exact_int_literal("1_000").as_deref(), Some("1000"));
        assert_eq!(exact_int_literal("2500e-2").as_deref(), Some("25"));
        assert_eq!(exact_int_literal("12.00000001"), None);
        assert_eq!(exact_int_literal("1e2000"), None);
        assert_eq!(exact_int_literal("inf"), None);
        assert_eq!(exact_int_literal("1,000"), None);
    }

    #[test]
    fn floats_follow_python() {
        assert_eq!(py_float(" 5.0\n"), Some(5.0));
        assert_eq!(py_float("1_000"), Some(1000.0));
        assert_eq!(py_float(".5"), Some(0.5));
        assert_eq!(py_float("5."), Some(5.0));
        assert_eq!(py_float("-1e3"), Some(-1000.0));
        assert_eq!(py_float("Infinity"), Some(f64::INFINITY));
        assert!(py_float("nan").is_some_and(f64::is_nan));
        for bad in ["", ".", "1_", "_1", "1__0", "e5", "1e", "1,000", "0x10", "5 5", "--5"] {
            assert_eq!(py_float(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn regex_ports() {
        assert_eq!(strip_thousands_commas("1,000,000"), "1000000");
        assert_eq!(strip_thousands_commas("(1,2)"), "(1,2)");
        assert_eq!(strip_thousands_commas("1,0000"), "1,0000");
        assert_eq!(join_mixed_numbers("7 3/4 1 2 3"), "7+3/4+1 2+3"); // Python re.sub output
        assert_eq!(tighten_minus("- 5 -  x"), "-5 -x");
        assert_eq!(remove_unit("5 inches^2 and 3 inch", "inch"), "5  and 3 "); // Python re.sub output
        assert_eq!(remove_spaced("30^ \\circ", "^", "\\circ"), "30");
        assert_eq!(text_wrapper_inner("\\text{Evelyn}"), Some("Evelyn"));
        assert_eq!(text_wrapper_inner("\\text{a} b"), None);
        assert!(is_literal_fraction("-12/40"));
        assert!(is_literal_fraction("3x/4"));
        assert!(!is_literal_fraction("1/0"));
        assert!(!is_literal_fraction("1/2/3"));
        assert!(is_literal_fraction("1//2"));
        assert!(is_literal_fraction("12x/05y"));
        assert!(!is_literal_fraction("x1/2"));
        assert!(is_canonical_int("-12") && !is_canonical_int("012") && !is_canonical_int("-0"));
        assert_eq!(int_string(1e20), "100000000000000000000");
        assert_eq!(int_string(-0.0), "0");
        assert_eq!(str_to_int("4.99999999"), Some("4".to_string()));
    }
}
