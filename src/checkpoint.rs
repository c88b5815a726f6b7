//! Training checkpoints: a Hugging Face model folder plus what resuming needs.
//!
//! ```text
//! DIR/config.json              ModelConfig::to_json (torch_dtype = the saved dtype)
//! DIR/model.safetensors        the weights, HF names and shapes (weights::save_params)
//! DIR/tokenizer.json …         tokenizer files and chat template, copied from the source model folder
//!                              when present (TOKENIZER_FILES)
//! DIR/optimizer.safetensors    AdamW moments: exp_avg.<HF name>, exp_avg_sq.<HF name>, HF shapes,
//!                              in the state's float type (F32 / F64); metadata "step"
//! DIR/trainer_state.json       {"format": "drpo-checkpoint", "version": 1,
//!                               "optimizer": {"step", "dtype"}, "trainer": <the trainer's JSON>}
//! ```
//! So DIR loads anywhere a model folder does (`Model::load`, transformers), and `load_checkpoint`
//! gives back the model, the optimizer state and the trainer's JSON (data order, RNG seed, metrics).
//!
//! Atomicity: the whole folder is written as `DIR.tmp` (each file fsynced, then the folder itself),
//! then renamed to DIR; an existing DIR is first renamed to `DIR.old` and deleted after the swap. A
//! folder named DIR is therefore always complete. A crash inside the swap leaves `DIR.old` (the
//! previous checkpoint) and/or `DIR.tmp` (the new one, complete when it holds trainer_state.json,
//! which is written last). [`recover_interrupted_save`] puts the newest complete one back as DIR; a
//! resuming trainer calls it before looking for DIR. [`load_checkpoint`] itself never moves folders:
//! on a missing DIR it fails with a hint naming the complete survivors.
//!
//! Resuming is bit-exact when the parameters and the state are saved in their own float type
//! (f32 model with [`SaveDtype::F32`]); a BF16 save is an export, not a resumable state.

use crate::cpu::Float;
use crate::error::{check_len, read_file, read_json, write_atomic, Error, Result};
use crate::layout::ParamLayout;
use crate::model::Model;
use crate::optim::AdamWState;
use crate::weights::{save_params, write_safetensors_atomic, SaveDtype, TensorOut};
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const FORMAT: &str = "drpo-checkpoint";
const VERSION: u64 = 1;

/// Files of a model folder that are not weights or config, copied into a checkpoint when present
/// (transformers ≥ 4.43 keeps the chat template in chat_template.jinja / .json, not in
/// tokenizer_config.json).
pub const TOKENIZER_FILES: [&str; 9] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
];

/// A loaded training checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint<T: Float> {
    pub model: Model<T>,
    pub optim: AdamWState<T>,
    /// whatever the trainer saved (data position, RNG seed, metrics…)
    pub trainer: Value,
}

/// `DIR` + suffix, as a sibling path (`runs/step_20` → `runs/step_20.tmp`).
fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::input(format!("checkpoint folder `{}` has no final name component", dir.display())))?;
    let mut name = name.to_os_string();
    name.push(suffix);
    Ok(dir.with_file_name(name))
}

fn remove_dir_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Saves a training checkpoint into `dir` (replacing it atomically when it exists).
/// `source_dir`: the model folder training started from, whose tokenizer files are copied.
pub fn save_checkpoint<T: Float>(
    dir: &Path,
    model: &Model<T>,
    optim: &AdamWState<T>,
    trainer: &Value,
    source_dir: Option<&Path>,
    dtype: SaveDtype,
) -> Result<()> {
    const OP: &str = "save_checkpoint";
    check_len(OP, "optimizer m", optim.m.len(), model.layout.total)?;
    check_len(OP, "optimizer v", optim.v.len(), model.layout.total)?;
    let tmp = sibling(dir, ".tmp")?;
    let old = sibling(dir, ".old")?;
    remove_dir_if_present(&tmp)?; // a leftover of an interrupted save
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;

    save_params(&tmp, &model.cfg, &model.layout, &model.params, dtype)?;
    if let Some(src) = source_dir {
        for name in TOKENIZER_FILES {
            let from = src.join(name);
            if from.is_file() {
                write_atomic(tmp.join(name), &read_file(&from)?)?;
            }
        }
    }
    write_optimizer(&tmp.join(OPTIMIZER_FILE), &model.layout, optim)?;
    let state = json!({
        "format": FORMAT,
        "version": VERSION,
        "optimizer": { "step": optim.step, "dtype": T::NAME, "file": OPTIMIZER_FILE },
        "trainer": trainer,
    });
    let path = tmp.join(TRAINER_STATE_FILE);
    let text = serde_json::to_string_pretty(&state).map_err(|e| Error::json(&path, e))?;
    write_atomic(&path, text.as_bytes())?;
    // the folder's entries (every file's name) are durable before the folder becomes DIR
    sync_dir(&tmp);

    // swap: DIR → DIR.old, DIR.tmp → DIR, drop DIR.old
    remove_dir_if_present(&old)?;
    let replaced = dir.exists();
    if replaced {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    if replaced {
        remove_dir_if_present(&old)?;
    }
    // make the renames durable
    sync_parent(dir);
    Ok(())
}

/// fsync of a folder (its entries). Best effort: a file system without directory fsync loses nothing
/// but the durability guarantee of a rename that already happened.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn sync_parent(path: &Path) {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
}

/// A checkpoint folder is complete when it holds trainer_state.json: [`save_checkpoint`] writes it
/// last, after every other file was written and fsynced.
pub fn is_complete(dir: &Path) -> bool {
    dir.join(TRAINER_STATE_FILE).is_file()
}

/// Repairs what an interrupted [`save_checkpoint`] to `dir` left behind, before anything loads `dir`:
///
/// * `dir` complete: nothing to do (a leftover `DIR.tmp` / `DIR.old` is cleared by the next save);
/// * else, `DIR.tmp` complete (the crash came after the new checkpoint was written): it becomes `dir`;
/// * else, `DIR.old` complete (the crash came between the two renames, or the new one is partial):
///   the previous checkpoint becomes `dir` again.
///
/// An incomplete `dir` (not written by this module) is moved aside to `DIR.incomplete`, never deleted.
/// Returns a sentence saying what was done, or None when there was nothing to repair.
pub fn recover_interrupted_save(dir: &Path) -> Result<Option<String>> {
    if is_complete(dir) {
        return Ok(None);
    }
    let tmp = sibling(dir, ".tmp")?;
    let old = sibling(dir, ".old")?;
    let source = if is_complete(&tmp) {
        (tmp, "the new checkpoint written just before the interruption")
    } else if is_complete(&old) {
        (old, "the previous checkpoint (the new one was not complete)")
    } else {
        return Ok(None);
    };
    let mut what = String::new();
    if dir.exists() {
        let aside = sibling(dir, ".incomplete")?;
        remove_dir_if_present(&aside)?;
        std::fs::rename(dir, &aside).map_err(|e| Error::io(dir, e))?;
        what = format!(" (the incomplete `{}` was moved to `{}`)", dir.display(), aside.display());
    }
    std::fs::rename(&source.0, dir).map_err(|e| Error::io(&source.0, e))?;
    sync_parent(dir);
    Ok(Some(format!(
        "a checkpoint save was interrupted: restored `{}` from `{}`, {}{what}",
        dir.display(),
        source.0.display(),
        source.1
    )))
}

/// The moments as one safetensors file in the state's own float type (bit-exact round trip),
/// streamed: each tensor is converted when the writer asks for it, so the save holds one tensor's
/// bytes at a time, not a second and third copy of both moments.
fn write_optimizer<T: Float>(path: &Path, layout: &ParamLayout, optim: &AdamWState<T>) -> Result<()> {
    let dtype = if T::NAME == "f64" { Dtype::F64 } else { Dtype::F32 };
    let mut tensors = Vec::with_capacity(2 * layout.entries.len());
    for e in &layout.entries {
        tensors.push((format!("exp_avg.{}", e.name), TensorOut::new(&optim.m[e.range()], e.shape.clone(), dtype)));
        tensors.push((format!("exp_avg_sq.{}", e.name), TensorOut::new(&optim.v[e.range()], e.shape.clone(), dtype)));
    }
    let meta: HashMap<String, String> = [("format".to_string(), FORMAT.to_string()), ("step".to_string(), optim.step.to_string())].into();
    write_safetensors_atomic(path, tensors, meta)
}

/// Reads `dir/trainer_state.json` and checks its format; returns (optimizer step, trainer JSON).
fn read_trainer_state(dir: &Path) -> Result<(u64, Value)> {
    let path = dir.join(TRAINER_STATE_FILE);
    if !path.is_file() {
        let mut what = format!("`{}` is not a training checkpoint: it has no {TRAINER_STATE_FILE}", dir.display());
        // trainer_state.json is written last, so a DIR.tmp holding it is complete
        let survivors: Vec<String> = [(".tmp", "the new one"), (".old", "the previous one")]
            .iter()
            .filter_map(|(suffix, which)| {
                let p = sibling(dir, suffix).ok()?;
                p.join(TRAINER_STATE_FILE).is_file().then(|| format!("`{}` ({which})", p.display()))
            })
            .collect();
        if !survivors.is_empty() {
            what += &format!("\n  hint: a save was interrupted; the checkpoint is in {}", survivors.join(" or "));
        }
        return Err(Error::input(what));
    }
    let v = read_json(&path)?;
    if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(Error::config(&path, "format", format!("expected \"{FORMAT}\", got {}", v.get("format").unwrap_or(&Value::Null))));
    }
    match v.get("version").and_then(Value::as_u64) {
        Some(VERSION) => {}
        _ => {
            let got = v.get("version").unwrap_or(&Value::Null);
            return Err(Error::config(&path, "version", format!("expected {VERSION}, got {got} (written by another drpo version?)")));
        }
    }
    let step = v
        .pointer("/optimizer/step")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::config(&path, "optimizer.step", "missing or not a non-negative integer"))?;
    Ok((step, v.get("trainer").cloned().unwrap_or(Value::Null)))
}

/// Loads the optimizer state and the trainer JSON of a checkpoint for a model of `layout`.
pub fn load_optimizer_state<T: Float>(dir: &Path, layout: &ParamLayout) -> Result<(AdamWState<T>, Value)> {
    let (step, trainer) = read_trainer_state(dir)?;
    let path = dir.join(OPTIMIZER_FILE);
    let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    // SAFETY: read-only private map; a file rewritten underneath gives wrong numbers, not unsafety.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&map)
        .map_err(|e| Error::weights(&path, "", format!("not a valid safetensors file (truncated or corrupt?): {e}")))?;
    let st = SafeTensors::deserialize(&map)
        .map_err(|e| Error::weights(&path, "", format!("not a valid safetensors file (truncated or corrupt?): {e}")))?;
    let file_step = meta.metadata().as_ref().and_then(|m| m.get("step")).cloned().unwrap_or_else(|| "none".into());
    if file_step != step.to_string() {
        return Err(Error::weights(
            &path,
            "",
            format!("optimizer step {file_step} in the file disagrees with {step} in {TRAINER_STATE_FILE} (files from different saves?)"),
        ));
    }
    let mut state = AdamWState::<T> { m: vec![T::ZERO; layout.total], v: vec![T::ZERO; layout.total], step };
    for e in &layout.entries {
        for (prefix, dst) in [("exp_avg", &mut state.m), ("exp_avg_sq", &mut state.v)] {
            let name = format!("{prefix}.{}", e.name);
            let view = st.tensor(&name).map_err(|_| Error::weights(&path, &name, "missing (a checkpoint of another model?)"))?;
            if view.shape() != e.shape.as_slice() {
                return Err(Error::weights(&path, &name, format!("has shape {:?}, expected {:?} from config.json", view.shape(), e.shape)));
            }
            let out = &mut dst[e.range()];
            let bytes = view.data();
            match view.dtype() {
                Dtype::F32 if bytes.len() == 4 * out.len() => {
                    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                        *o = T::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    }
                }
                Dtype::F64 if bytes.len() == 8 * out.len() => {
                    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                        *o = T::from_f64(f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
                    }
                }
                d => {
                    let what = format!("dtype {d:?} with {} bytes: expected F32 or F64 data of its shape", bytes.len());
                    return Err(Error::weights(&path, &name, what));
                }
            }
            // a NaN moment would turn every later update into NaN; exp_avg_sq is a mean of squares
            let negative_allowed = prefix == "exp_avg";
            if let Some(i) = out.iter().position(|x| !(x.to_f64().is_finite() && (negative_allowed || x.to_f64() >= 0.0))) {
                let what = format!("element {i} (flat) is {}: optimizer moments must be finite (and exp_avg_sq ≥ 0)", out[i]);
                return Err(Error::weights(&path, &name, what));
            }
        }
    }
    Ok((state, trainer))
}

/// Loads a checkpoint written by [`save_checkpoint`]: the model (config.json + weights), the optimizer
/// state and the trainer JSON.
pub fn load_checkpoint<T: Float>(dir: &Path) -> Result<Checkpoint<T>> {
    read_trainer_state(dir)?; // a model folder without state fails here, with the clearer message
    let model = Model::<T>::load(dir)?;
    let (optim, trainer) = load_optimizer_state(dir, &model.layout)?;
    Ok(Checkpoint { model, optim, trainer })
}

