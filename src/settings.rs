//! Settings files (`--config FILE` of `drpo train` and `drpo sft`): a JSON object whose keys
//! override a configuration's defaults, nested objects merged key by key (`{"hyper": {"tau": 5}}`
//! changes τ and keeps every other hyper-parameter). A key the configuration does not have is an
//! error naming its path (`hyper.tua`), so a typo never passes silently; so is a value of the wrong
//! type (`{"lr": "fast"}` names `lr`).
//!
//! Also the optimizer rules shared by `drpo sft` and `drpo train` ([`OptimizerSettings`]): the two
//! commands accept and refuse the same learning rates, warmups, decays and clips.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// `base` with the settings of `patch` applied (see the module doc); `file` names the source in errors.
pub fn apply_overrides<T: serde::Serialize + serde::de::DeserializeOwned>(base: T, patch: &Value, file: &Path) -> Result<T> {
    let v = serde_json::to_value(&base).map_err(|e| Error::json(file, e))?;
    if !patch.is_object() {
        return Err(Error::json(file, "expected a JSON object of settings"));
    }
    let merged = {
        let mut v = v.clone();
        merge(&mut v, patch, "", file)?;
        v
    };
    match serde_json::from_value(merged) {
        Ok(t) => Ok(t),
        // serde's message does not say where: find the setting that fails on its own
        Err(e) => Err(match culprit::<T>(&v, patch, "") {
            Some((path, why)) => Error::config(file, path, why),
            None => Error::json(file, e),
        }),
    }
}

/// The first leaf setting of `patch` (depth first, in the file's key order) that, applied alone to
/// `base`, does not deserialize as `T`: its path and serde's reason.
fn culprit<T: serde::de::DeserializeOwned>(base: &Value, patch: &Value, prefix: &str) -> Option<(String, String)> {
    for (k, val) in patch.as_object()? {
        let path = format!("{prefix}{k}");
        let nested = base.pointer(&json_pointer(&path)).is_some_and(Value::is_object) && val.is_object();
        if nested {
            if let Some(found) = culprit::<T>(base, val, &format!("{path}.")) {
                return Some(found);
            }
            continue;
        }
        let mut one = base.clone();
        *one.pointer_mut(&json_pointer(&path))? = val.clone();
        if let Err(e) = serde_json::from_value::<T>(one) {
            return Some((path, format!("{val} is not accepted: {e}")));
        }
    }
    None
}

/// `a.b` → `/a/b` (RFC 6901, `~` and `/` escaped).
fn json_pointer(dotted: &str) -> String {
    dotted.split('.').map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1"))).collect()
}

/// Reads `file` and applies it to `base` ([`apply_overrides`]); also returns the file's JSON.
pub fn overrides_from_file<T: serde::Serialize + serde::de::DeserializeOwned>(base: T, file: &Path) -> Result<(T, Value)> {
    let patch = crate::error::read_json(file)?;
    Ok((apply_overrides(base, &patch, file)?, patch))
}

fn merge(target: &mut Value, patch: &Value, prefix: &str, file: &Path) -> Result<()> {
    let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) else {
        *target = patch.clone();
        return Ok(());
    };
    for (k, val) in p {
        let path = format!("{prefix}{k}");
        match t.get_mut(k) {
            None => return Err(Error::config(file, path, "unknown setting")),
            Some(slot) if slot.is_object() && val.is_object() => merge(slot, val, &format!("{path}."), file)?,
            Some(slot) => *slot = val.clone(),
        }
    }
    Ok(())
}

/// The optimizer settings both trainers take (SFT fixes some of them): one rule for each, so `sft`
/// and `train` refuse the same values with the same words.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerSettings {
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
}

impl OptimizerSettings {
    /// `who` prefixes the message (`train config`, `sft config`); the field is named.
    pub fn validate(&self, who: &str) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::input(format!("{who}: {field}: {why}")));
        for (field, x) in [("lr", self.lr), ("min_lr", self.min_lr), ("weight_decay", self.weight_decay)] {
            if !(x.is_finite() && x >= 0.0) {
                return bad(field, format!("{x} must be finite and ≥ 0"));
            }
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return bad("grad_clip", format!("{} must be finite and > 0", self.grad_clip));
        }
        Ok(())
    }
}

/// The rule for every count a user sets (steps, sizes, samples): a positive integer. `who` and
/// `field` name it in the message, the same words on the command line and in a settings file.
pub fn check_positive(who: &str, field: &str, n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::input(format!("{who}: {field}: must be positive (1 or more), got 0")));
    }
    Ok(())
}
