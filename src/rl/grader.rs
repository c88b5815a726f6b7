//! The math answer grader (SPEC §8): the prompt suffix, `\boxed{}` extraction, the Hendrycks-MATH
//! (`mathd`) normalization, the `sympy` normalization, and a numeric stand-in for sympy's
//! `simplify(a - b) == 0`. Pure Rust, no Python; never panics on any input.
//!
//! A response is correct when, for some ground truth `g`, the extracted answer `a` satisfies
//! `mathd_equal(a, g) || sympy_equal(a, g)` (SPEC §8.2 step 5).
//!
//! Where this grader must differ from the authors' (pylatexenc + sympy), the difference is written at
//! the function that makes it: `\sqrt[n]{x}` is an n-th root (pylatexenc reads it as `√x`); equality
//! of expressions is numeric (|A − B| ≤ 1e-9·max(|A|, |B|) at random complex points), so it also
//! accepts true identities sympy fails to simplify and decimals within 1e-9 of an exact value.
//! The authors' quirks are kept on purpose, since their verdicts are what the paper reports:
//! `\frac{a}{b}` reads as `a/b` without parentheses on the sympy side (`\frac{x+1}{2}` is x + 1/2),
//! more than two distinct letters are never evaluated, an integer answer must be an integer.
//! Checked against the authors' grader (pylatexenc 2.10, sympy 1.14) on 56,211 variants of the
//! vendored datasets' answers: 121 differ, all from the two deviations above (tests/grader.rs).

mod exact;
mod expr;
mod latex;
mod py;

use std::path::Path;

use serde_json::Value;

use crate::error::{read_json, write_atomic};
use crate::{Error, Result};

/// What the training prompt appends to a problem (SPEC §8.1), single space included.
pub const PROMPT_SUFFIX: &str = " Let's think step by step and output the final answer within \\boxed{}.";

/// The user message for a problem: the problem text followed by [`PROMPT_SUFFIX`].
pub fn math_prompt(problem: &str) -> String {
    format!("{problem}{PROMPT_SUFFIX}")
}

/// How a response is cut before its answer is extracted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraderConfig {
    /// Thinking models (DeepSeek-R1-Distill): only the text after the first `</think>` (and before a
    /// second one) is searched for `\boxed{}`; a response with no `</think>` is incorrect (SPEC §8.2
    /// steps 1–2). Off: the whole response is searched.
    pub require_think_close: bool,
}

impl Default for GraderConfig {
    /// The authors' setting for their thinking models: `require_think_close = true`.
    fn default() -> Self {
        GraderConfig { require_think_close: true }
    }
}

const THINK_CLOSE: &str = "</think>";

/// The part of a response that holds the final answer: with `require_think_close`, the text
/// between the first `</think>` and the next one (or the end); `None` when there is no `</think>`.
pub fn solution_part<'a>(response: &'a str, cfg: &GraderConfig) -> Option<&'a str> {
    if !cfg.require_think_close {
        return Some(response);
    }
    let start = response.find(THINK_CLOSE)? + THINK_CLOSE.len();
    let rest = &response[start..];
    Some(rest.find(THINK_CLOSE).map_or(rest, |end| &rest[..end]))
}

/// The inner text of the last `\boxed{…}` (SPEC §8.2 step 3): from the last `\boxed` (or, failing
/// that, the last `\fbox`), braces are counted until depth returns to 0. `None` when there is no
/// box, the braces never close, or the span is not `\boxed{…}` (so `\boxed 5` and `\fbox{5}` fail).
pub fn extract_boxed(text: &str) -> Option<String> {
    let start = text.rfind("\\boxed").or_else(|| text.rfind("\\fbox"))?;
    let mut depth: i64 = 0;
    let mut end = None;
    for (k, ch) in text[start..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = Some(start + k);
                    break;
                }
            }
            _ => {}
        }
    }
    let span = &text[start..=end?];
    span.strip_prefix("\\boxed{")?.strip_suffix('}').map(str::to_string)
}

/// Grades one response against its ground truths (SPEC §8.2). Ground truths that contain `\boxed`
/// are replaced by their boxed content (and dropped when that extraction fails).
pub fn grade(response: &str, answers: &[String], cfg: &GraderConfig) -> bool {
    let Some(solution) = solution_part(response, cfg) else { return false };
    let Some(answer) = extract_boxed(solution) else { return false };
    answers.iter().any(|gt| {
        let gt = if gt.contains("\\boxed") {
            match extract_boxed(gt) {
                Some(inner) => inner,
                None => return false,
            }
        } else {
            gt.clone()
        };
        equivalent(&answer, &gt)
    })
}

/// `mathd_equal(answer, gt) || sympy_equal(answer, gt)`: the verdict on an extracted answer. An empty
/// (or all-blank) ground truth matches nothing, an empty box included: it states no answer.
pub fn equivalent(answer: &str, gt: &str) -> bool {
    if py::py_strip(gt).is_empty() {
        return false;
    }
    mathd_equal(answer, gt) || sympy_equal(answer, gt)
}

/// Hendrycks-MATH string equality after [`normalize_mathd`] on both sides (SPEC §8.3).
pub fn mathd_equal(answer: &str, gt: &str) -> bool {
    normalize_mathd(gt) == normalize_mathd(answer)
}

/// The MATH normalization of SPEC §8.3, step for step. Where the original raises (two `\text{ `,
/// or a `\sqrt` / `\frac` at the very end), the stripped (and `\text{}`-unwrapped) string is returned.
pub fn normalize_mathd(answer: &str) -> String {
    let stripped = py::py_strip(answer);
    let unwrapped = py::text_wrapper_inner(stripped).map_or(stripped, py::py_strip);
    strip_string(unwrapped).unwrap_or_else(|| unwrapped.to_string())
}

/// SPEC §8.3 steps 2–12; `None` where the original raises.
fn strip_string(s: &str) -> Option<String> {
    let mut s = s.replace('\n', "").replace("\\!", "").replace("\\\\", "\\");
    s = s.replace("tfrac", "frac").replace("dfrac", "frac");
    s = s.replace("\\left", "").replace("\\right", "");
    s = s.replace("^{\\circ}", "").replace("^\\circ", "");
    s = s.replace("\\$", "");
    // units on the right: `\text{ ` marks them; a second one is an error in the original
    if s.contains("\\text{ ") {
        let parts: Vec<&str> = s.split("\\text{ ").collect();
        if parts.len() != 2 {
            return None;
        }
        s = parts[0].to_string();
    }
    s = s.replace("\\%", "");
    s = s.replace(" .", " 0.").replace("{.", "{0.");
    if s.is_empty() {
        return Some(s);
    }
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    let sides: Vec<&str> = s.split('=').collect();
    if sides.len() == 2 && sides[0].chars().count() <= 2 {
        s = sides[1].to_string();
    }
    s = fix_sqrt(&s)?;
    s = s.replace(' ', "");
    s = fix_fracs(&s)?;
    if s == "0.5" {
        s = "\\frac{1}{2}".to_string();
    }
    Some(fix_a_slash_b(&s))
}

/// `\sqrtX` → `\sqrt{X}` for one character X; `None` (the original's IndexError) when `\sqrt` ends the string.
fn fix_sqrt(s: &str) -> Option<String> {
    let mut parts = s.split("\\sqrt");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        let mut chars = part.chars();
        let first = chars.next()?;
        if first == '{' {
            out.push_str("\\sqrt");
            out.push_str(part);
        } else {
            out.push_str(&format!("\\sqrt{{{first}}}{}", chars.as_str()));
        }
    }
    Some(out)
}

/// `\fracab` → `\frac{a}{b}`, `\frac1{b}` → `\frac{1}{b}`. A `\frac` followed by fewer than two
/// characters returns the input unchanged; a `\frac` at the very end is the original's IndexError.
fn fix_fracs(s: &str) -> Option<String> {
    let mut parts = s.split("\\frac");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        out.push_str("\\frac");
        let c: Vec<char> = part.chars().collect();
        let first = *c.first()?;
        if first == '{' {
            out.push_str(part);
            continue;
        }
        if c.len() < 2 {
            return Some(s.to_string());
        }
        let rest: String = c[2..].iter().collect();
        if c[1] != '{' {
            out.push_str(&format!("{{{}}}{{{}}}{rest}", c[0], c[1]));
        } else {
            out.push_str(&format!("{{{}}}{{{rest}", c[0]));
        }
    }
    Some(out)
}

/// `a/b` with canonical integers a, b (exactly that text) → `\frac{a}{b}`.
fn fix_a_slash_b(s: &str) -> String {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() == 2 && py::is_canonical_int(parts[0]) && py::is_canonical_int(parts[1]) {
        return format!("\\frac{{{}}}{{{}}}", parts[0], parts[1]);
    }
    s.to_string()
}

/// The unit words the sympy normalization deletes, in the original's order.
const UNITS: [&str; 16] = [
    "degree",
    "cm",
    "centimeter",
    "meter",
    "mile",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "year",
    "foot",
    "feet",
    "inch",
    "yard",
];

/// The sympy-side normalization `_normalize` of SPEC §8.4 steps 1–10. The result is text in
/// sympy's input syntax (`sqrt(2)`, `pi`, `1/2`), lower-cased, without spaces or braces.
pub fn normalize_sympy(expr: &str) -> String {
    let mut e = py::text_wrapper_inner(expr).unwrap_or(expr).to_string();
    e = e.replace("\\%", "%").replace("\\$", "$").replace(['$', '%'], "");
    e = e.replace(" or ", " , ").replace(" and ", " , ");
    e = e.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12");
    for unit in UNITS {
        e = py::remove_unit(&e, unit);
    }
    e = py::remove_spaced(&e, "^", "\\circ");
    if e.len() >= 2 && e.starts_with('{') && e.ends_with('}') {
        e = e[1..e.len() - 1].to_string();
    }
    e = py::remove_spaced(&e, ",\\!", "");
    if let Some(x) = py::py_float(&e) {
        if py::is_near_int(x) {
            // an exact integer keeps its digits (the authors' float route rounds past 2^53)
            e = py::exact_int_literal(&e).unwrap_or_else(|| py::int_string(x.round_ties_even()));
        }
    }
    if e.contains('\\') {
        if let Some(text) = latex_for_sympy(&e) {
            e = text;
        }
    }
    e = py::tighten_minus(&e);
    e = py::join_mixed_numbers(&e);
    e = e.replace(' ', "").replace(['{', '}'], "");
    e = e.to_lowercase();
    if py::str_is_int(&e) {
        if let Some(i) = py::exact_int_literal(&e.replace(',', "")).or_else(|| py::str_to_int(&e)) {
            e = i;
        }
    }
    e
}

/// `_parse_latex`: LaTeX to sympy-readable text (SPEC §8.4 step 8); `None` where pylatexenc raises.
fn latex_for_sympy(e: &str) -> Option<String> {
    let e = e.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac");
    let text = latex::latex_to_text(&e)?;
    let text =
        text.replace('√', "sqrt").replace('π', "pi").replace('∞', "inf").replace('∪', "U").replace(['·', '×'], "*");
    Some(py::py_strip(&text).to_string())
}

/// `grade_answer_sympy` (SPEC §8.4 comparison): normalized strings equal, or element-wise equal
/// tuples/intervals with matching brackets, where unreduced literal fractions and integer-vs-non-integer
/// pairs are never equal and everything else goes to the numeric check.
pub fn sympy_equal(answer: &str, gt: &str) -> bool {
    let gt_norm = normalize_sympy(gt);
    let given = normalize_sympy(answer);
    if gt_norm == given {
        return true;
    }
    if given.is_empty() {
        return false;
    }
    let gt_elems = split_tuple(&gt_norm);
    let given_elems = split_tuple(&given);
    if gt_elems.len() > 1
        && (gt_norm.chars().next() != given.chars().next() || gt_norm.chars().last() != given.chars().last())
    {
        return false;
    }
    if gt_elems.len() != given_elems.len() {
        return false;
    }
    gt_elems.iter().zip(&given_elems).all(|(g, a)| {
        if py::is_literal_fraction(g) && py::is_literal_fraction(a) {
            g == a
        } else if py::str_is_int(g) != py::str_is_int(a) {
            false
        } else {
            expressions_equal(g, a)
        }
    })
}

/// Splits `(a,b)` / `[a,b)` style tuples and intervals (brackets only at the two ends) on commas,
/// after removing thousands separators; anything else is one element.
fn split_tuple(e: &str) -> Vec<String> {
    let e = py::strip_thousands_commas(e);
    let c: Vec<char> = e.chars().collect();
    if c.is_empty() {
        return Vec::new();
    }
    let bracket = |ch: char| "()[]".contains(ch);
    if c.len() > 2 && bracket(c[0]) && bracket(c[c.len() - 1]) && !c[1..c.len() - 1].iter().any(|&ch| bracket(ch)) {
        let inner: String = c[1..c.len() - 1].iter().collect();
        return inner.split(',').map(|x| py::py_strip(x).to_string()).collect();
    }
    vec![e]
}

/// The stand-in for `are_equal_under_sympy(gt, given)` on normalized elements: the same gate
/// (at most 2 distinct letters once `sqrt`/`frac` are removed; no `^{`, `^(`, `^digits^`, or
/// multi-digit exponent), then the numeric check of `(gt)-(given)` at fixed-seed random points.
pub fn expressions_equal(gt: &str, given: &str) -> bool {
    let expr = format!("({gt})-({given})");
    allow_eval(&expr) && expr::difference_is_zero(&expr.replace('^', "**"))
}

/// `should_allow_eval`: what the authors let sympy look at.
fn allow_eval(expr: &str) -> bool {
    let letters: std::collections::BTreeSet<char> =
        expr.replace("sqrt", "").replace("frac", "").chars().filter(|c| c.is_alphabetic()).collect();
    if letters.len() > 2 || expr.contains("^{") || expr.contains("^(") {
        return false;
    }
    // `\^[0-9]+\^` and `\^[0-9][0-9]+`
    let c: Vec<char> = expr.chars().collect();
    for (k, _) in c.iter().enumerate().filter(|(_, &ch)| ch == '^') {
        let digits = c[k + 1..].iter().take_while(|ch| ch.is_ascii_digit()).count();
        if digits >= 2 || (digits >= 1 && c.get(k + 1 + digits) == Some(&'^')) {
            return false;
        }
    }
    true
}

/// `drpo grade`: reads CASES `{"cases": [{"response": "...", "answer": "..." | number | [...]}, ...]}`
/// and writes OUT `{"verdicts": [true, false, ...]}` (same order) atomically.
///
/// Answers follow [`crate::data::answers_from_json`] (numbers printed as Python's `str()` does,
/// `142.0` stays `"142.0"`). The CLI passes `GraderConfig::default()` (thinking models,
/// `</think>` required) unless told otherwise.
pub fn grade_cases_file(input: &Path, out: &Path, cfg: &GraderConfig) -> Result<()> {
    let doc = read_json(input)?;
    let cases = doc
        .get("cases")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::json(input, "expected an object with a `cases` array"))?;
    let mut verdicts = Vec::with_capacity(cases.len());
    for (k, case) in cases.iter().enumerate() {
        let obj = case.as_object().ok_or_else(|| Error::data(input, k, "expected an object"))?;
        let response = obj
            .get("response")
            .ok_or_else(|| Error::data(input, k, "missing field `response`"))?
            .as_str()
            .ok_or_else(|| Error::data(input, k, "field `response`: expected a string"))?;
        let answer = obj.get("answer").ok_or_else(|| Error::data(input, k, "missing field `answer`"))?;
        let answers = crate::data::answers_from_json(answer)
            .map_err(|what| Error::data(input, k, format!("field `answer`: {what}")))?;
        verdicts.push(grade(response, &answers, cfg));
    }
    let text = serde_json::json!({ "verdicts": verdicts }).to_string();
    write_atomic(out, format!("{text}\n").as_bytes())
}
