//! The RL trainer (`drpo train`): rollouts → verifier rewards → objective → backward → AdamW, with the
//! batching of SPEC §5.1:
//!
//! ```text
//! per step: Q questions (a seeded shuffle, epoch by epoch), G rollouts each at temperature T
//!   old log-probs: re-scored with the current weights at temperature T (not taken from the sampler)
//!   for each inner epoch, for each mini-batch of questions (consecutive, in step order):
//!       grads = 0
//!       for each chunk of `chunk_questions` questions (their G rollouts together):
//!           objective on the chunk (groups complete; KL pooled over the chunk's tokens)
//!           grads += ∇(chunk loss) / (number of chunks in the mini-batch)
//!       clip the global grad norm; AdamW step
//! ```
//! So the discriminative part is divided by the questions of the mini-batch, and the KL penalty is
//! computed per chunk and averaged over chunks, as SPEC §5.2 asks of a single-process implementation.
//! Policy-gradient baselines compute their rewards and advantages once per step on all rollouts
//! (they are constants of the step; HAPO's history is read, then updated, once per step).
//!
//! A run folder holds `train_config.json`, `metrics.jsonl` (one line per step) and `checkpoint/`
//! (HF weights + optimizer + trainer state, see [`crate::checkpoint`]); `resume` continues from it
//! bit-identically on the CPU.

use crate::checkpoint::{load_checkpoint, save_checkpoint};
use crate::engine::Engine;
use crate::error::{read_json, write_atomic, Error, Result};
use crate::eval::mean;
use crate::generate::GenerateOptions;
use crate::model::Model;
use crate::optim::{clip_grad_norm, AdamWConfig, AdamWState, LrDecay, LrSchedule};
use crate::policy::{backward_responses, score_responses};
use crate::rl::env::Environment;
use crate::rl::objectives::{self, Baseline, Batch, HapoHistory, Hyper, Outcomes};
use crate::sampling::SamplingParams;
use crate::tokenizer::Tokenizer;
use crate::weights::SaveDtype;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The objective a run optimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectiveKind {
    /// DRPO: DisCO with the correct answers weighted by softmax(length reward / λ)
    Drpo,
    /// DisCO (log-likelihood score), = DRPO with λ = ∞
    Disco,
    /// GRPO on the accuracy reward, clipped ratio surrogate
    Grpo,
    /// GRPO with the length-penalised reward c·(1 − α L/C)
    GrpoLp,
    /// RLOO with the Arora & Zanette length penalty
    RlooLp,
    /// GRPO with the adaptive length penalty (ALP)
    Alp,
    /// GRPO with HAPO's history-aware length reward
    Hapo,
    /// GRPO with ShorterBetter's reward
    ShorterBetter,
    /// GRPO with the Kimi-k1.5 length reward added
    Kimi,
}

impl ObjectiveKind {
    fn baseline(self) -> Option<Baseline> {
        Some(match self {
            ObjectiveKind::Drpo | ObjectiveKind::Disco => return None,
            ObjectiveKind::Grpo => Baseline::Grpo,
            ObjectiveKind::GrpoLp => Baseline::GrpoLp,
            ObjectiveKind::RlooLp => Baseline::RlooLp,
            ObjectiveKind::Alp => Baseline::Alp,
            ObjectiveKind::Hapo => Baseline::Hapo,
            ObjectiveKind::ShorterBetter => Baseline::ShorterBetter,
            ObjectiveKind::Kimi => Baseline::Kimi,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub objective: ObjectiveKind,
    pub hyper: Hyper,
    pub steps: usize,
    /// questions per step (SPEC: 128)
    pub questions_per_step: usize,
    /// rollouts per question G (SPEC: 8)
    pub group_size: usize,
    /// questions per optimizer step (SPEC: 32 → 4 optimizer steps per training step)
    pub mini_batch_questions: usize,
    /// questions per loss chunk; the KL is pooled per chunk (SPEC: 4)
    pub chunk_questions: usize,
    /// passes over each step's rollouts (SPEC: 1)
    pub inner_epochs: usize,
    /// rollout temperature, also used for every log-prob (SPEC: 0.6)
    pub temperature: f64,
    pub top_p: f64,
    /// generation budget = C of the length reward (SPEC: 8192)
    pub max_new_tokens: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub seed: u64,
    /// checkpoint every this many steps (0: only at the end)
    pub save_every: usize,
}

impl Default for TrainConfig {
    /// SPEC §5.6 (1.5B script): the paper's settings, for real models.
    fn default() -> Self {
        TrainConfig {
            objective: ObjectiveKind::Drpo,
            hyper: Hyper::default(),
            steps: 1001,
            questions_per_step: 128,
            group_size: 8,
            mini_batch_questions: 32,
            chunk_questions: 4,
            inner_epochs: 1,
            temperature: 0.6,
            top_p: 1.0,
            max_new_tokens: 8192,
            lr: 2e-6,
            warmup_steps: 0,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 0,
            save_every: 20,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        self.hyper.validate()?;
        let bad = |w: String| Err(Error::input(format!("train config: {w}")));
        if self.questions_per_step == 0 || self.group_size == 0 || self.chunk_questions == 0 || self.mini_batch_questions == 0 {
            return bad("questions per step, group size, mini-batch and chunk sizes must be positive".into());
        }
        if self.questions_per_step % self.mini_batch_questions != 0 || self.mini_batch_questions % self.chunk_questions != 0 {
            return bad(format!(
                "chunk ({}) must divide the mini-batch ({}), which must divide the questions per step ({})",
                self.chunk_questions, self.mini_batch_questions, self.questions_per_step
            ));
        }
        if self.temperature.is_nan() || self.temperature <= 0.0 || self.max_new_tokens == 0 || self.inner_epochs == 0 {
            return bad("temperature, max_new_tokens and inner epochs must be positive".into());
        }
        Ok(())
    }

    /// The objective's hyper-parameters as used (DisCO forces λ = ∞).
    fn effective_hyper(&self) -> Hyper {
        let mut h = self.hyper;
        if self.objective == ObjectiveKind::Disco {
            h.lambda = f64::INFINITY;
        }
        h
    }
}

/// One line of metrics.jsonl.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    pub accuracy: f64,
    pub mean_length: f64,
    pub mean_length_correct: Option<f64>,
    pub mean_redundant_steps: Option<f64>,
    pub mean_necessary_steps: Option<f64>,
    pub truncation_rate: f64,
    /// k1 KL(π_old ‖ π_θ) of the last chunk of the last mini-batch (the most off-policy one)
    pub kl_last: f64,
    /// mean over chunks of the KL penalty value
    pub penalty: f64,
    /// −mean old log-prob per token: an unbiased estimate of the policy's per-token entropy at T
    pub entropy: f64,
    /// share of questions whose group has both correct and wrong answers
    pub valid_group_share: f64,
    /// DRPO/DisCO: mean and min weight ŵ of the positives of valid groups (×|P|, so mean-one ω);
    /// baselines: mean advantage of correct responses and the share of negative ones
    pub weight_or_adv_mean: Option<f64>,
    pub weight_or_adv_min: Option<f64>,
    pub negative_advantage_share_correct: Option<f64>,
    pub loss: f64,
    pub objective: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub step_seconds: f64,
}

/// Trainer state saved with each checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    optimizer_steps: u64,
    hapo: HapoHistory,
}

/// One rollout.
struct Rollout {
    problem: usize,
    tokens: Vec<u32>,
    finished: bool,
    correct: bool,
    steps: Option<(usize, usize)>,
    old_logp: Vec<f64>,
}

/// The questions of step `step`: consecutive slices of per-epoch seeded permutations.
fn questions_of_step(n_problems: usize, per_step: usize, seed: u64, step: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(per_step);
    let mut pos = step * per_step;
    while out.len() < per_step {
        let epoch = pos / n_problems;
        let mut perm: Vec<usize> = (0..n_problems).collect();
        perm.shuffle(&mut StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let from = pos % n_problems;
        let take = (n_problems - from).min(per_step - out.len());
        out.extend_from_slice(&perm[from..from + take]);
        pos += take;
    }
    out
}

/// A training run in a folder.
pub struct Trainer<'a> {
    pub cfg: TrainConfig,
    pub model: Model<f32>,
    pub opt: AdamWState<f32>,
    pub env: &'a dyn Environment,
    pub tok: &'a Tokenizer,
    pub run_dir: PathBuf,
    /// folder with the tokenizer files to copy into checkpoints
    pub source_dir: PathBuf,
    pub engine: Engine,
    state: TrainerState,
}

impl<'a> Trainer<'a> {
    /// Starts a run in `run_dir` from `model`, or resumes the one there if it has a checkpoint.
    pub fn new(
        cfg: TrainConfig,
        model: Model<f32>,
        env: &'a dyn Environment,
        tok: &'a Tokenizer,
        run_dir: &Path,
        source_dir: &Path,
        engine: Engine,
    ) -> Result<Self> {
        cfg.validate()?;
        if env.is_empty() {
            return Err(Error::input("the training set has no problems"));
        }
        if cfg.questions_per_step > env.len() {
            return Err(Error::input(format!(
                "{} questions per step but only {} problems in the training set",
                cfg.questions_per_step,
                env.len()
            )));
        }
        std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
        let ckpt = run_dir.join("checkpoint");
        let (model, opt, state) = if ckpt.join(crate::checkpoint::TRAINER_STATE_FILE).exists() {
            let saved = read_json(run_dir.join("train_config.json"))?;
            let saved: TrainConfig = serde_json::from_value(saved).map_err(|e| Error::json(run_dir.join("train_config.json"), e))?;
            if saved != cfg {
                return Err(Error::input(format!(
                    "{} holds a run with a different configuration; use another --out folder or the same settings",
                    run_dir.display()
                )));
            }
            let c = load_checkpoint::<f32>(&ckpt)?;
            let state: TrainerState =
                serde_json::from_value(c.trainer).map_err(|e| Error::json(ckpt.join(crate::checkpoint::TRAINER_STATE_FILE), e))?;
            truncate_metrics(&run_dir.join("metrics.jsonl"), state.step)?;
            (c.model, c.optim, state)
        } else {
            let text = serde_json::to_string_pretty(&cfg).map_err(|e| Error::json(run_dir, e))?;
            write_atomic(run_dir.join("train_config.json"), text.as_bytes())?;
            let _ = std::fs::remove_file(run_dir.join("metrics.jsonl"));
            let opt = AdamWState::new(model.layout.total);
            (model, opt, TrainerState::default())
        };
        let mut engine = engine;
        engine.sync(&model)?;
        Ok(Trainer { cfg, model, opt, env, tok, run_dir: run_dir.to_path_buf(), source_dir: source_dir.to_path_buf(), engine, state })
    }

    /// The next step to run (after a resume: the first one not yet done).
    pub fn step(&self) -> usize {
        self.state.step
    }

    pub fn save(&self) -> Result<()> {
        let trainer = serde_json::to_value(&self.state).map_err(|e| Error::json(&self.run_dir, e))?;
        save_checkpoint(&self.run_dir.join("checkpoint"), &self.model, &self.opt, &trainer, Some(&self.source_dir), SaveDtype::F32)
    }

    /// Runs the remaining steps; `on_step` sees every step's metrics.
    pub fn run(&mut self, on_step: &mut dyn FnMut(&StepMetrics)) -> Result<()> {
        self.run_until(self.cfg.steps, on_step)
    }

    /// Runs steps until `stop` (at most the configured number), writing metrics and checkpoints as
    /// [`Trainer::run`] does; a later `run` on the same folder continues from the last checkpoint.
    pub fn run_until(&mut self, stop: usize, on_step: &mut dyn FnMut(&StepMetrics)) -> Result<()> {
        while self.state.step < stop.min(self.cfg.steps) {
            let m = self.train_step()?;
            let line = serde_json::to_string(&m).map_err(|e| Error::json(&self.run_dir, e))?;
            let path = self.run_dir.join("metrics.jsonl");
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
            writeln!(f, "{line}").and_then(|_| f.flush()).map_err(|e| Error::io(&path, e))?;
            on_step(&m);
            self.state.step += 1;
            let done = self.state.step == self.cfg.steps;
            if done || (self.cfg.save_every > 0 && self.state.step % self.cfg.save_every == 0) {
                self.save()?;
            }
        }
        Ok(())
    }

    fn rollouts(&self, questions: &[usize]) -> Result<Vec<Rollout>> {
        let cfg = &self.cfg;
        let g = cfg.group_size;
        let prompts: Vec<Vec<u32>> = questions.iter().flat_map(|&q| std::iter::repeat_n(self.env.prompt(q).to_vec(), g)).collect();
        let opts = GenerateOptions {
            max_new_tokens: cfg.max_new_tokens,
            sampling: SamplingParams { temperature: cfg.temperature, top_k: 0, top_p: cfg.top_p },
            seed: cfg.seed,
            eos_ids: self.tok.eos_ids().to_vec(),
            stream_offset: (self.state.step * prompts.len()) as u64,
        };
        let gens = self.engine.generate(&self.model, &prompts, &opts)?;
        // old log-probs: the current weights, temperature T, recomputed (SPEC §5.1)
        let p_refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let r_refs: Vec<&[u32]> = gens.iter().map(|g| g.tokens.as_slice()).collect();
        let old = score_responses(&self.model, &p_refs, &r_refs, cfg.temperature, false)?;
        let mut out = Vec::with_capacity(gens.len());
        for (k, (gen, old_logp)) in gens.into_iter().zip(old.logp).enumerate() {
            let problem = questions[k / g];
            let text = self.tok.decode_lossy(&gen.tokens, false)?;
            let v = self.env.grade(problem, &text);
            out.push(Rollout { problem, tokens: gen.tokens, finished: gen.stopped_on_eos, correct: v.correct, steps: v.steps, old_logp });
        }
        Ok(out)
    }

    /// One training step (rollouts, then the optimizer steps of its mini-batches).
    fn train_step(&mut self) -> Result<StepMetrics> {
        let t0 = std::time::Instant::now();
        let cfg = self.cfg.clone();
        let hyper = cfg.effective_hyper();
        let g = cfg.group_size;
        let questions = questions_of_step(self.env.len(), cfg.questions_per_step, cfg.seed, self.state.step);
        let rollouts = self.rollouts(&questions)?;
        let c_max = cfg.max_new_tokens;

        // baselines: rewards and advantages once per step, on all rollouts
        let advantages = match cfg.objective.baseline() {
            None => None,
            Some(b) => {
                let group: Vec<usize> = rollouts.iter().map(|r| r.problem).collect();
                let correct: Vec<bool> = rollouts.iter().map(|r| r.correct).collect();
                let finished: Vec<bool> = rollouts.iter().map(|r| r.finished).collect();
                let len: Vec<usize> = rollouts.iter().map(|r| r.tokens.len()).collect();
                let o = Outcomes { group: &group, correct: &correct, finished: &finished, len: &len, max_len: c_max };
                Some(objectives::baseline_advantages(b, &o, &hyper, &mut self.state.hapo)?.1)
            }
        };

        let adamw = AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() };
        let sched = LrSchedule { lr: cfg.lr, warmup_steps: cfg.warmup_steps, decay: LrDecay::Constant };
        let (mut kl_last, mut penalties, mut losses, mut objs, mut grad_norm, mut lr) = (0.0, Vec::new(), Vec::new(), Vec::new(), 0.0, 0.0);
        let (mut weights_seen, mut adv_correct) = (Vec::new(), Vec::new());
        let rows_per_chunk = cfg.chunk_questions * g;
        let chunks_per_mb = cfg.mini_batch_questions / cfg.chunk_questions;
        for epoch in 0..cfg.inner_epochs {
            let mb_rows = cfg.mini_batch_questions * g;
            for (mi, mb) in rollouts.chunks(mb_rows).enumerate() {
                let mut grads = vec![0.0f32; self.model.layout.total];
                for (ci, chunk) in mb.chunks(rows_per_chunk).enumerate() {
                    let first_row = mi * mb_rows + ci * rows_per_chunk;
                    let prompts: Vec<&[u32]> = chunk.iter().map(|r| self.env.prompt(r.problem)).collect();
                    let resps: Vec<&[u32]> = chunk.iter().map(|r| r.tokens.as_slice()).collect();
                    let scored = score_responses(&self.model, &prompts, &resps, cfg.temperature, true)?;
                    let logp: Vec<f64> = scored.logp.concat();
                    let old: Vec<f64> = chunk.iter().flat_map(|r| r.old_logp.iter().copied()).collect();
                    let group: Vec<usize> = chunk.iter().map(|r| r.problem).collect();
                    let correct: Vec<bool> = chunk.iter().map(|r| r.correct).collect();
                    let finished: Vec<bool> = chunk.iter().map(|r| r.finished).collect();
                    let len: Vec<usize> = chunk.iter().map(|r| r.tokens.len()).collect();
                    let batch = Batch {
                        outcomes: Outcomes { group: &group, correct: &correct, finished: &finished, len: &len, max_len: c_max },
                        logp: &logp,
                        old_logp: &old,
                    };
                    let (dlogp, loss, obj, kl, penalty) = match &advantages {
                        None => {
                            let out = objectives::drpo(&batch, &hyper)?;
                            if epoch == 0 {
                                for gs in out.groups.iter().filter(|gs| gs.valid) {
                                    for &i in &gs.members {
                                        if correct[i] {
                                            weights_seen.push(out.weights[i] * gs.n_pos as f64);
                                        }
                                    }
                                }
                            }
                            (out.dlogp, out.loss, out.j, out.kl, out.penalty)
                        }
                        Some(adv) => {
                            let a = &adv[first_row..first_row + chunk.len()];
                            if epoch == 0 {
                                adv_correct.extend(a.iter().zip(&correct).filter(|(_, &c)| c).map(|(&x, _)| x));
                            }
                            let out = objectives::clipped_surrogate(&batch, a, hyper.clip_eps)?;
                            (out.dlogp, out.loss, out.j, out.kl, out.penalty)
                        }
                    };
                    kl_last = kl;
                    penalties.push(penalty);
                    losses.push(loss);
                    objs.push(obj);
                    // flat [T] → per response, scaled by 1/chunks (the chunk-mean of SPEC §5.1)
                    let scale = 1.0 / chunks_per_mb as f64;
                    let mut rows = Vec::with_capacity(chunk.len());
                    let mut at = 0;
                    for l in &len {
                        rows.push(dlogp[at..at + l].iter().map(|d| d * scale).collect::<Vec<f64>>());
                        at += l;
                    }
                    let gch = backward_responses(&self.model, &scored, &rows);
                    for (a, b) in grads.iter_mut().zip(&gch) {
                        *a += *b;
                    }
                }
                grad_norm = clip_grad_norm(&mut grads, cfg.grad_clip);
                lr = sched.lr_at(self.state.optimizer_steps);
                if grad_norm.is_finite() {
                    self.opt.step(&mut self.model.params, &grads, &adamw, lr);
                    self.state.optimizer_steps += 1;
                }
            }
        }
        self.engine.sync(&self.model)?;

        let n = rollouts.len() as f64;
        let tokens: usize = rollouts.iter().map(|r| r.tokens.len()).sum();
        let valid = questions
            .iter()
            .enumerate()
            .filter(|(k, _)| {
                let grp = &rollouts[k * g..(k + 1) * g];
                grp.iter().any(|r| r.correct) && grp.iter().any(|r| !r.correct)
            })
            .count();
        let (wa_mean, wa_min, neg_share) = if advantages.is_some() {
            (mean(adv_correct.iter().copied()), adv_correct.iter().copied().reduce(f64::min), mean(adv_correct.iter().map(|&a| (a < 0.0) as u8 as f64)))
        } else {
            (mean(weights_seen.iter().copied()), weights_seen.iter().copied().reduce(f64::min), None)
        };
        Ok(StepMetrics {
            step: self.state.step,
            accuracy: rollouts.iter().filter(|r| r.correct).count() as f64 / n,
            mean_length: tokens as f64 / n,
            mean_length_correct: mean(rollouts.iter().filter(|r| r.correct).map(|r| r.tokens.len() as f64)),
            mean_redundant_steps: mean(rollouts.iter().filter_map(|r| r.steps.map(|s| s.1 as f64))),
            mean_necessary_steps: mean(rollouts.iter().filter_map(|r| r.steps.map(|s| s.0 as f64))),
            truncation_rate: rollouts.iter().filter(|r| !r.finished).count() as f64 / n,
            kl_last,
            penalty: mean(penalties.iter().copied()).unwrap_or(0.0),
            entropy: -rollouts.iter().flat_map(|r| r.old_logp.iter()).sum::<f64>() / tokens.max(1) as f64,
            valid_group_share: valid as f64 / questions.len() as f64,
            weight_or_adv_mean: wa_mean,
            weight_or_adv_min: wa_min,
            negative_advantage_share_correct: neg_share,
            loss: mean(losses.iter().copied()).unwrap_or(0.0),
            objective: mean(objs.iter().copied()).unwrap_or(0.0),
            grad_norm,
            lr,
            step_seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// Keeps the first `steps` lines of a metrics file (a resumed run rewrites what follows).
fn truncate_metrics(path: &Path, steps: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text.lines().take(steps).map(|l| format!("{l}\n")).collect();
    write_atomic(path, kept.as_bytes())
}

/// Reads metrics.jsonl back (for reports and tests).
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| Error::data(path, i, e.to_string())))
        .collect()
}
