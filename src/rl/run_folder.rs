//! What `drpo train` finds in its run folder, and what a resume checks before it trusts it.
//!
//! A run folder is *fresh* (none of train_config.json, metrics.jsonl, checkpoint/), *started*
//! (train_config.json, maybe metrics of steps never checkpointed, no checkpoint: it starts over at
//! step 0 with a note) or *resumable* (train_config.json and a complete checkpoint/). Anything else
//! is refused with what is missing and what the user can do, never restarted silently over the saved
//! weights and metrics:
//! - checkpoint/ without trainer_state.json (after [`crate::checkpoint::recover_interrupted_save`]
//!   had its chance): not written by a finished save;
//! - a checkpoint or metrics.jsonl without train_config.json: the run's settings are unknown.
//!
//! A resume then checks the checkpoint against the settings and the metrics ([`check_resume`]): the
//! step is within the run's steps, the optimizer's step counter agrees with the trainer's, and
//! metrics.jsonl holds one line per step before the checkpoint, numbered 0, 1, … (lines after it,
//! written by steps that were never checkpointed, are dropped).

use crate::checkpoint::{is_complete, TRAINER_STATE_FILE};
use crate::error::{write_atomic, Error, Result};
use crate::rl::trainer::{StepMetrics, TrainConfig};
use std::path::Path;

pub const CONFIG_FILE: &str = "train_config.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// What a run folder holds, once it passed [`classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStart {
    Fresh,
    /// train_config.json (and maybe metrics) but no checkpoint: the run starts over at step 0;
    /// `metrics_lines` lines of metrics.jsonl are dropped
    StartOver { metrics_lines: usize },
    /// a complete checkpoint
    Resume,
}

/// Classifies `run_dir` (see the module doc) or refuses it, naming what is missing.
pub fn classify(run_dir: &Path) -> Result<RunStart> {
    let ckpt = run_dir.join(CHECKPOINT_DIR);
    let has_config = run_dir.join(CONFIG_FILE).is_file();
    let metrics_lines = std::fs::read_to_string(run_dir.join(METRICS_FILE)).ok().map(|t| t.lines().count());
    let refuse = |what: String| Err(Error::RunFolder { path: run_dir.to_path_buf(), what });
    if ckpt.exists() && !is_complete(&ckpt) {
        return refuse(format!(
            "`{CHECKPOINT_DIR}/` has no {TRAINER_STATE_FILE}: it was not written by a finished save, so this run cannot \
             resume from it\n  hint: move `{CHECKPOINT_DIR}/` out of the folder (or delete it) to start the run over from step 0, \
             or use another --out folder"
        ));
    }
    if !has_config && (ckpt.exists() || metrics_lines.is_some()) {
        let held: Vec<String> = [(ckpt.exists(), format!("`{CHECKPOINT_DIR}/`")), (metrics_lines.is_some(), format!("`{METRICS_FILE}`"))]
            .into_iter()
            .filter_map(|(has, what)| has.then_some(what))
            .collect();
        let held = held.join(" and ");
        return refuse(format!(
            "holds {held} but no {CONFIG_FILE}, so the run's settings are unknown\n  hint: put its {CONFIG_FILE} back to resume \
             it; to start over here, move {held} out of the folder; or use another --out folder"
        ));
    }
    Ok(if ckpt.exists() {
        RunStart::Resume
    } else if has_config {
        RunStart::StartOver { metrics_lines: metrics_lines.unwrap_or(0) }
    } else {
        RunStart::Fresh
    })
}

/// The numbers of a checkpoint a resume checks.
#[derive(Clone, Copy, Debug)]
pub struct ResumePoint {
    /// steps done (trainer_state.json `trainer.step`)
    pub step: usize,
    /// optimizer steps taken (trainer_state.json `trainer.optimizer_steps`)
    pub optimizer_steps: u64,
    /// the AdamW state's own step counter (`optimizer.step`, also in optimizer.safetensors)
    pub adam_step: u64,
}

/// Checks a checkpoint against the run's settings and metrics.jsonl (module doc), then cuts
/// metrics.jsonl to the checkpoint's steps.
pub fn check_resume(run_dir: &Path, cfg: &TrainConfig, at: ResumePoint) -> Result<()> {
    let state = run_dir.join(CHECKPOINT_DIR).join(TRAINER_STATE_FILE);
    let refuse = |what: String| Err(Error::RunFolder { path: state.clone(), what });
    if at.step > cfg.steps {
        return refuse(format!("the checkpoint is at step {}, past the run's steps = {} of {CONFIG_FILE}", at.step, cfg.steps));
    }
    if at.optimizer_steps != at.adam_step {
        return refuse(format!(
            "trainer.optimizer_steps = {} disagrees with optimizer.step = {} (files from different saves?)",
            at.optimizer_steps, at.adam_step
        ));
    }
    let most = (at.step as u64).saturating_mul(cfg.optimizer_steps_per_step());
    if at.optimizer_steps > most {
        return refuse(format!(
            "{} optimizer steps after {} steps, more than the {most} the settings allow (files from another run?)",
            at.optimizer_steps, at.step
        ));
    }
    keep_metrics_of_checkpoint(&run_dir.join(METRICS_FILE), at.step)
}

/// metrics.jsonl must hold steps 0..steps in order; later lines (steps after the checkpoint) are cut.
fn keep_metrics_of_checkpoint(path: &Path, steps: usize) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let lines: Vec<&str> = text.lines().collect();
    let hint = "\n  hint: put the run's metrics.jsonl back to resume it, or start a new run in another --out folder \
                (the checkpoint folder is a model folder: --model RUN/checkpoint)";
    if lines.len() < steps {
        return Err(Error::RunFolder {
            path: path.to_path_buf(),
            what: format!(
                "has {} step line(s) but the checkpoint is at step {steps}: the metrics of steps {}..{steps} are missing{hint}",
                lines.len(),
                lines.len()
            ),
        });
    }
    for (i, line) in lines.iter().take(steps).enumerate() {
        let m: StepMetrics = serde_json::from_str(line).map_err(|e| Error::data(path, i, format!("not a metrics line: {e}")))?;
        if m.step != i {
            return Err(Error::RunFolder {
                path: path.to_path_buf(),
                what: format!("line {} holds step {} where step {i} belongs (lines of several runs mixed?){hint}", i + 1, m.step),
            });
        }
    }
    if lines.len() > steps {
        let kept: String = lines[..steps].iter().map(|l| format!("{l}\n")).collect();
        write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}
