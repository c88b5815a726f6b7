//! `drpo objective`: evaluates DRPO, DisCO and the fixture's GRPO on cases given as JSON, in the
//! layout of `tests/fixtures/*/objectives.json` (its `formulas.json_layout`).
//!
//! Input:  `{"cases": [{"name", "hyper": {tau, lambda, beta, delta, grpo_alpha, grpo_eps, clip_eps?},
//!          "responses": [{group, reward (0/1), length, max_len, logp[length], old_logp[length],
//!          finished?}]}]}` — a missing hyper key takes [`Hyper::default`], except `clip_eps`, which
//!          defaults to no clipping (the fixture's `grpo`); other keys of a case are ignored.
//! Output: `{"cases": [{"name", "num_groups_Q", "num_tokens", "intermediate": {scores, groups},
//!          "disco": {J, kl, penalty, loss, grad_logp}, "drpo": {length_rewards, weights, J, kl,
//!          penalty, loss, grad_logp}, "grpo": {rewards, advantages, loss, grad_logp}}]}`,
//!          every per-token list nested per response.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::{disco, drpo, grpo, Batch, Hyper, Outcomes};
use crate::error::{read_json, write_atomic};
use crate::{Error, Result};

/// Placeholder path in errors when the input did not come from a file.
const NO_PATH: &str = "<objective cases>";

/// Evaluates every case of `input`; a malformed case gives `Error::Data` naming the case index,
/// the response index and the field.
pub fn evaluate_cases(input: &Value) -> Result<Value> {
    evaluate(input, Path::new(NO_PATH))
}

/// Reads cases from `input`, writes the results to `out` (atomically, pretty JSON).
pub fn run_objective_file(input: &Path, out: &Path) -> Result<()> {
    let value = read_json(input)?;
    let result = evaluate(&value, input)?;
    let text = serde_json::to_string_pretty(&result).map_err(|e| Error::json(out, e))?;
    write_atomic(out, text.as_bytes())
}

fn evaluate(input: &Value, path: &Path) -> Result<Value> {
    let cases = input
        .get("cases")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::json(path, "expected an object with a `cases` array"))?;
    let mut out = Vec::with_capacity(cases.len());
    for (k, case) in cases.iter().enumerate() {
        let bad = |what: String| Error::data(path, k, what);
        let parsed = parse_case(case).map_err(bad)?;
        out.push(evaluate_case(&parsed).map_err(|e| Error::data(path, k, format!("case `{}`: {e}", parsed.name)))?);
    }
    Ok(json!({ "cases": out }))
}

/// One case, owned, in the flat layout of [`Batch`] (what `objectives.json` holds per case; the
/// device objective's tests read the fixtures through it too).
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub hyper: Hyper,
    pub group: Vec<usize>,
    pub correct: Vec<bool>,
    pub finished: Vec<bool>,
    pub len: Vec<usize>,
    pub max_len: usize,
    pub logp: Vec<f64>,
    pub old_logp: Vec<f64>,
}

impl Case {
    pub fn outcomes(&self) -> Outcomes<'_> {
        Outcomes { group: &self.group, correct: &self.correct, finished: &self.finished, len: &self.len, max_len: self.max_len }
    }
    pub fn batch(&self) -> Batch<'_> {
        Batch { outcomes: self.outcomes(), logp: &self.logp, old_logp: &self.old_logp }
    }
}

/// One case of an `objectives.json` file, validated; the error names the field (and the response).
pub fn parse_case(case: &Value) -> std::result::Result<Case, String> {
    let obj = case.as_object().ok_or("a case must be a JSON object")?;
    let name = obj.get("name").and_then(Value::as_str).ok_or("field `name`: missing or not a string")?.to_string();
    let ctx = |what: String| format!("case `{name}`: {what}");
    let hyper = match obj.get("hyper") {
        None => Hyper { clip_eps: None, ..Hyper::default() },
        Some(h) => parse_hyper(h).map_err(ctx)?,
    };
    let responses = obj
        .get("responses")
        .and_then(Value::as_array)
        .ok_or_else(|| ctx("field `responses`: missing or not an array".into()))?;
    if responses.is_empty() {
        return Err(ctx("field `responses`: empty".into()));
    }
    let mut c = Case {
        name: name.clone(),
        hyper,
        group: Vec::new(),
        correct: Vec::new(),
        finished: Vec::new(),
        len: Vec::new(),
        max_len: 0,
        logp: Vec::new(),
        old_logp: Vec::new(),
    };
    for (i, r) in responses.iter().enumerate() {
        let field = |f: &str, what: &str| ctx(format!("response {i}: field `{f}`: {what}"));
        let r = r.as_object().ok_or_else(|| ctx(format!("response {i}: not a JSON object")))?;
        let uint = |f: &str| -> std::result::Result<usize, String> {
            r.get(f)
                .and_then(Value::as_u64)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| field(f, "missing or not a non-negative integer"))
        };
        let group = uint("group")?;
        let len = uint("length")?;
        let max_len = uint("max_len")?;
        if len == 0 {
            return Err(field("length", "is 0 (EOS counts, so a response has at least one token)"));
        }
        if max_len < len {
            return Err(field("max_len", &format!("{max_len} is below the length {len}")));
        }
        if i > 0 && max_len != c.max_len {
            return Err(field("max_len", &format!("{max_len} differs from response 0's {}", c.max_len)));
        }
        let correct = match r.get("reward") {
            Some(Value::Bool(b)) => *b,
            Some(v) if v.as_f64() == Some(1.0) => true,
            Some(v) if v.as_f64() == Some(0.0) => false,
            _ => return Err(field("reward", "missing or not 0/1")),
        };
        let finished = match r.get("finished") {
            None => true,
            Some(v) => v.as_bool().ok_or_else(|| field("finished", "not a boolean"))?,
        };
        for (f, dst) in [("logp", &mut c.logp), ("old_logp", &mut c.old_logp)] {
            let values = r.get(f).and_then(Value::as_array).ok_or_else(|| field(f, "missing or not an array"))?;
            if values.len() != len {
                return Err(field(f, &format!("has {} entries, expected `length` = {len}", values.len())));
            }
            for (t, v) in values.iter().enumerate() {
                match v.as_f64() {
                    Some(x) if x.is_finite() => dst.push(x),
                    _ => return Err(field(f, &format!("entry {t} is not a finite number"))),
                }
            }
        }
        c.group.push(group);
        c.correct.push(correct);
        c.finished.push(finished);
        c.len.push(len);
        c.max_len = max_len;
    }
    Ok(c)
}

fn parse_hyper(h: &Value) -> std::result::Result<Hyper, String> {
    let obj = h.as_object().ok_or("field `hyper`: not a JSON object")?;
    let mut hyper = Hyper { clip_eps: None, ..Hyper::default() };
    for (key, v) in obj {
        let num = || v.as_f64().ok_or_else(|| format!("field `hyper.{key}`: not a number"));
        match key.as_str() {
            "tau" => hyper.tau = num()?,
            "lambda" => hyper.lambda = num()?,
            "beta" => hyper.beta = num()?,
            "delta" => hyper.delta = num()?,
            "grpo_alpha" => hyper.grpo_alpha = num()?,
            "grpo_eps" => hyper.grpo_eps = num()?,
            "clip_eps" => hyper.clip_eps = if v.is_null() { None } else { Some(num()?) },
            _ => return Err(format!("field `hyper.{key}`: unknown hyper-parameter")),
        }
    }
    hyper.validate().map_err(|e| e.to_string())?;
    Ok(hyper)
}

fn evaluate_case(c: &Case) -> Result<Value> {
    let batch = c.batch();
    let off = batch.offsets();
    let nest = |flat: &[f64]| -> Vec<Vec<f64>> { off.windows(2).map(|w| flat[w[0]..w[1]].to_vec()).collect() };
    let d = drpo(&batch, &c.hyper)?;
    let di = disco(&batch, &c.hyper)?;
    let g = grpo(&batch, &c.hyper)?;

    let groups: Vec<Value> = d
        .groups
        .iter()
        .zip(&di.groups)
        .map(|(gd, gi)| {
            json!({
                "group": gd.id,
                "members": gd.members,
                "n_pos": gd.n_pos,
                "n_neg": gd.n_neg,
                "valid": gd.valid,
                "log_mean_exp_neg": gd.log_mean_exp_neg,
                "disco_J_g": gi.j,
                "drpo_J_g": gd.j,
            })
        })
        .collect();
    let mut case = Map::new();
    case.insert("name".into(), json!(c.name));
    case.insert("num_groups_Q".into(), json!(d.num_groups));
    case.insert("num_tokens".into(), json!(d.num_tokens));
    case.insert("intermediate".into(), json!({ "scores": d.scores, "groups": groups }));
    case.insert(
        "disco".into(),
        json!({ "J": di.j, "kl": di.kl, "penalty": di.penalty, "loss": di.loss, "grad_logp": nest(&di.dlogp) }),
    );
    case.insert(
        "drpo".into(),
        json!({
            "length_rewards": d.length_rewards,
            "weights": d.weights,
            "J": d.j,
            "kl": d.kl,
            "penalty": d.penalty,
            "loss": d.loss,
            "grad_logp": nest(&d.dlogp),
        }),
    );
    case.insert(
        "grpo".into(),
        json!({ "rewards": g.rewards, "advantages": g.advantages, "loss": g.loss, "grad_logp": nest(&g.dlogp) }),
    );
    Ok(Value::Object(case))
}
