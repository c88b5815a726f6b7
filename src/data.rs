//! Math problem sets: a JSON array file or a JSONL file of `{problem, answer}` records.
//!
//! Record keys (every file vendored in `data/math-eval/` uses `problem` and `answer`):
//! - the problem: `problem`, or `question` (GSM8K's original key);
//! - the answer: `answer` — a string, a number or a list of those (OlympiadBench and Minerva use
//!   lists: any one is accepted). A string answer holding `####` (GSM8K's original format) keeps the
//!   text after the last `####`. With no `answer` key, a string `solution` holding a `\boxed{}`
//!   gives its boxed content (the MATH format);
//! - the level: `level`, or `difficulty` (MATH500 and AMC carry `difficulty` as a number), kept as a
//!   string; other fields (`solution`, `unique_id`, `url`, …) are ignored.
//!
//! Numbers become strings as Python's `str()` prints them (SPEC §8.2 step 4): integers as written,
//! floats in shortest round-trip form with a `.0` when integral (`142.0` stays `"142.0"`, `1e16` is
//! `"1e+16"`). JSON integers beyond 64 bits arrive as floats (serde_json without arbitrary precision).

use std::path::Path;

use serde_json::Value;

use crate::error::read_file;
use crate::{Error, Result};

/// One problem with its reference answers (any one of them is correct).
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub problem: String,
    pub answers: Vec<String>,
    /// `level` or `difficulty` as written (numbers in Python's `str()` form), if the record has one.
    pub level: Option<String>,
}

/// Loads a JSON array (the file starts with `[`, after an optional UTF-8 byte-order mark) or JSONL (one
/// object per non-empty line) of problems.
/// Errors name the file and the record (0-based index; for JSONL, the index among non-empty lines).
pub fn load_problems(path: &Path) -> Result<Vec<Problem>> {
    let bytes = read_file(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::json(path, format!("not UTF-8: {e}")))?;
    // a UTF-8 byte-order mark (Windows editors write one) is not part of the JSON
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let records: Vec<Value> = if text.trim_start().starts_with('[') {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::json(path, e))?;
        match v {
            Value::Array(items) => items,
            _ => return Err(Error::json(path, "expected an array of records")),
        }
    } else {
        let mut items = Vec::new();
        for (line_no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str(line)
                .map_err(|e| Error::data(path, items.len(), format!("line {}: invalid JSON: {e}", line_no + 1)))?;
            items.push(v);
        }
        items
    };
    if records.is_empty() {
        return Err(Error::json(path, "no records"));
    }
    records.iter().enumerate().map(|(k, r)| problem_from_json(r).map_err(|what| Error::data(path, k, what))).collect()
}

/// One record; the error text names the field.
fn problem_from_json(record: &Value) -> std::result::Result<Problem, String> {
    let obj = record.as_object().ok_or("expected an object")?;
    let (key, problem) = match (obj.get("problem"), obj.get("question")) {
        (Some(p), _) => ("problem", p),
        (None, Some(q)) => ("question", q),
        (None, None) => return Err("missing field `problem` (or `question`)".to_string()),
    };
    let problem = problem.as_str().ok_or(format!("field `{key}`: expected a string"))?.to_string();
    let answers = match (obj.get("answer"), obj.get("solution")) {
        (Some(a), _) => answers_from_json(a).map_err(|what| format!("field `answer`: {what}"))?,
        (None, Some(Value::String(sol))) => match crate::rl::grader::extract_boxed(sol) {
            Some(boxed) if boxed.trim().is_empty() => return Err("field `solution`: its `\\boxed{}` answer is empty".to_string()),
            Some(boxed) => vec![boxed],
            None => return Err("field `solution`: no `\\boxed{}` answer and no `answer` field".to_string()),
        },
        (None, _) => return Err("missing field `answer`".to_string()),
    };
    let level = match obj.get("level").or_else(|| obj.get("difficulty")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(python_str_number(n)),
        Some(_) => return Err("field `level`/`difficulty`: expected a string or a number".to_string()),
    };
    Ok(Problem { problem, answers, level })
}

/// Reference answers from JSON: a string, a number, or a non-empty list of those. Each is turned
/// into a string as Python's `str()` would; a string holding `####` keeps what follows the last one.
/// An empty or blank answer is an error.
pub fn answers_from_json(v: &Value) -> std::result::Result<Vec<String>, String> {
    let one = |x: &Value| -> std::result::Result<String, String> {
        match x {
            Value::String(s) => {
                let answer = match s.rfind("####") {
                    Some(k) => s[k + 4..].trim().to_string(),
                    None => s.clone(),
                };
                // an empty reference would grade every empty box as correct
                if answer.trim().is_empty() {
                    return Err(format!("empty answer ({x})"));
                }
                Ok(answer)
            }
            Value::Number(n) => Ok(python_str_number(n)),
            other => Err(format!("expected a string or a number, got {}", json_kind(other))),
        }
    };
    match v {
        Value::Array(items) if items.is_empty() => Err("empty list".to_string()),
        Value::Array(items) => {
            items.iter().enumerate().map(|(k, x)| one(x).map_err(|e| format!("item {k}: {e}"))).collect()
        }
        other => Ok(vec![one(other)?]),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `str(x)` in Python for a JSON number: integers as is, floats via [`python_float_repr`].
pub fn python_str_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    python_float_repr(n.as_f64().unwrap_or(f64::NAN))
}

/// `repr(x)` of a Python float: shortest round-trip digits; fixed notation for exponents −4..15 with
/// at least one decimal (`142.0`), otherwise `d.ddde±XX` (`1e+16`, `1.5e-05`).
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // Rust's `{:e}` prints the shortest round-trip digits: "-1.42e2"
    let sci = format!("{:e}", x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let n = digits.len() as i32;
    let body = if (-4..16).contains(&exp) {
        if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp >= n - 1 {
            format!("{}{}.0", digits, "0".repeat((exp - (n - 1)) as usize))
        } else {
            let point = (exp + 1) as usize;
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    } else {
        let tail = if n > 1 { format!(".{}", &digits[1..]) } else { String::new() };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{}{}e{}{:02}", &digits[..1], tail, esign, exp.abs())
    };
    format!("{sign}{body}")
}
