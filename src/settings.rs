//! Settings files (`--config FILE` of `drpo train` and `drpo sft`): a JSON object whose keys
//! override a configuration's defaults, nested objects merged key by key (`{"hyper": {"tau": 5}}`
//! changes τ and keeps every other hyper-parameter). A key the configuration does not have is an
//! error naming its path (`hyper.tua`), so a typo never passes silently.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// `base` with the settings of `patch` applied (see the module doc); `file` names the source in errors.
pub fn apply_overrides<T: serde::Serialize + serde::de::DeserializeOwned>(base: T, patch: &Value, file: &Path) -> Result<T> {
    let mut v = serde_json::to_value(&base).map_err(|e| Error::json(file, e))?;
    if !patch.is_object() {
        return Err(Error::json(file, "expected a JSON object of settings"));
    }
    merge(&mut v, patch, "", file)?;
    serde_json::from_value(v).map_err(|e| Error::json(file, e))
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
