//! The RL trainer (`drpo train`): rollouts → verifier rewards → objective → backward → AdamW, with the
//! batching of SPEC §5.1:
//!
//! ```text
//! per step: Q questions (SPEC §5.6's dataloader: shuffle, drop_last), G rollouts each at temperature T
//!   old log-probs: re-scored with the current weights at temperature T (not taken from the sampler)
//!   for each inner epoch, for each mini-batch of questions (consecutive, in step order):
//!       grads = 0
//!       for each chunk of `chunk_questions` questions (their G rollouts together):
//!           objective on the chunk (groups complete; KL pooled over the chunk's tokens)
//!           grads += ∇(chunk loss) / (number of chunks in the mini-batch)
//!       clip the global grad norm; AdamW step (skipped when the norm is not finite)
//! ```
//! So the discriminative part is divided by the questions of the mini-batch, and the KL penalty is
//! computed per chunk and averaged over chunks, as SPEC §5.2 asks of a single-process implementation
//! ([`minibatch_gradient`] is one mini-batch of this loop).
//! Policy-gradient baselines compute their rewards and advantages once per step on all rollouts
//! (they are constants of the step; HAPO's history is read, then updated, once per step).
//!
//! Data order ([`questions_of_step`]): epoch e is a permutation of the problems seeded by
//! (seed, e); step s of the epoch takes its s-th slice of Q problems; the < Q problems left at the
//! end of an epoch are dropped (drop_last), so a step never spans two epochs and never holds a problem
//! twice. The group id of a rollout is its question's slot in the step (verl gives each prompt row its
//! own uid); the problem index is only HAPO's history key.
//!
//! A run folder holds `train_config.json` (every setting, the start model, data file and limit, and
//! the device), `metrics.jsonl` (one line per step) and `checkpoint/` (HF weights + optimizer +
//! trainer state, see [`crate::checkpoint`]); a run there is resumed bit-identically, after
//! repairing an interrupted checkpoint save. The trainer is generic over the [`Policy`] it trains:
//! rollouts, old log-probs, each chunk's objective ([`Policy::chunk_objective`]), the backward
//! passes, the clip and AdamW run where the policy lives (the host f32 model, or the GPU model with
//! its training state on the device, where d loss / d logp never leaves the device and the objective
//! reads the forward's log-probs where the forward wrote them, ℓ^old uploaded per chunk); the host keeps
//! the group bookkeeping, the rewards, the baselines' advantages and the metrics. A checkpoint holds the CPU's f32 format
//! ([`Policy::export_state`]), so a run saved on one device resumes on another. The folder is locked while a trainer runs in it
//! ([`crate::runlock`]); what it may hold and what a resume checks is [`crate::rl::run_folder`].

use crate::checkpoint::{load_checkpoint, recover_interrupted_save, save_checkpoint};
use crate::error::{read_json, write_atomic, Error, Result};
use crate::eval::mean;
use crate::generate::GenerateOptions;
use crate::model::Model;
use crate::optim::{AdamWConfig, LrDecay, LrSchedule};
use crate::policy::{HostState, Policy, ScoreBatch};
use crate::rl::env::Environment;
use crate::rl::chunk::{ChunkLoss, ChunkObjective};
pub use crate::rl::chunk::ChunkResult;
use crate::rl::objectives::{self, Baseline, HapoHistory, Hyper, Outcomes};
use crate::rl::run_folder::{self, RunStart};
use crate::runlock::RunLock;
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
    /// Every objective, in declaration order.
    pub const ALL: [ObjectiveKind; 9] = [
        ObjectiveKind::Drpo,
        ObjectiveKind::Disco,
        ObjectiveKind::Grpo,
        ObjectiveKind::GrpoLp,
        ObjectiveKind::RlooLp,
        ObjectiveKind::Alp,
        ObjectiveKind::Hapo,
        ObjectiveKind::ShorterBetter,
        ObjectiveKind::Kimi,
    ];

    /// The policy-gradient baseline, or None for the discriminative objectives (DRPO, DisCO).
    pub fn baseline(self) -> Option<Baseline> {
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

/// What the learning rate does after the warmup (the schedule of [`crate::optim::LrSchedule`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LrDecayKind {
    /// the base rate (SPEC §5.6)
    #[default]
    Constant,
    /// half a cosine from the base rate down to `min_lr` at the run's last optimizer step
    Cosine,
}

/// Where a run's problems and start weights came from. Part of the configuration: a resume with a
/// different start model, data file or `--limit` is refused like any other changed setting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSource {
    /// the model folder training started from (canonical path)
    pub model: Option<String>,
    /// the problem set (canonical path); None = the toy task
    pub data: Option<String>,
    /// `--limit`: only the first K problems
    pub limit: Option<usize>,
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
    /// problems whose templated prompt is longer are dropped from a `--data` training set
    /// (SPEC §5.6: max_prompt_length 1024)
    #[serde(default = "default_max_prompt_tokens")]
    pub max_prompt_tokens: usize,
    pub lr: f64,
    /// linear warmup, in optimizer steps (see NOTES: verl counts training steps)
    pub warmup_steps: u64,
    #[serde(default)]
    pub lr_decay: LrDecayKind,
    /// the rate the cosine decays to
    #[serde(default)]
    pub min_lr: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub seed: u64,
    /// checkpoint every this many steps (0: only at the end)
    pub save_every: usize,
    /// where the problems and the start weights came from (filled by the caller)
    #[serde(default)]
    pub source: RunSource,
}

/// Cap on `inner_epochs` (SPEC: 1; PPO-style runs use a few): a work count with no progress bar of its own.
pub const MAX_INNER_EPOCHS: usize = 1024;

fn default_max_prompt_tokens() -> usize {
    1024
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
            max_prompt_tokens: 1024,
            lr: 2e-6,
            warmup_steps: 0,
            lr_decay: LrDecayKind::Constant,
            min_lr: 0.0,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 0,
            save_every: 20,
            source: RunSource::default(),
        }
    }
}

impl TrainConfig {
    /// Rejects settings the trainer cannot run; the error names the field.
    pub fn validate(&self) -> Result<()> {
        const WHO: &str = "train config";
        self.hyper.validate()?;
        let bad = |field: &str, why: String| Err(Error::input(format!("{WHO}: {field}: {why}")));
        for (field, v) in [
            ("questions_per_step", self.questions_per_step),
            ("group_size", self.group_size),
            ("mini_batch_questions", self.mini_batch_questions),
            ("chunk_questions", self.chunk_questions),
            ("inner_epochs", self.inner_epochs),
            ("max_new_tokens", self.max_new_tokens),
            ("max_prompt_tokens", self.max_prompt_tokens),
        ] {
            crate::settings::check_positive(WHO, field, v)?;
        }
        if self.inner_epochs > MAX_INNER_EPOCHS {
            return bad("inner_epochs", format!("{} is above the cap of {MAX_INNER_EPOCHS} passes per step", self.inner_epochs));
        }
        if !self.mini_batch_questions.is_multiple_of(self.chunk_questions) {
            return bad(
                "chunk_questions",
                format!("{} must divide mini_batch_questions = {}", self.chunk_questions, self.mini_batch_questions),
            );
        }
        if !self.questions_per_step.is_multiple_of(self.mini_batch_questions) {
            return bad(
                "mini_batch_questions",
                format!("{} must divide questions_per_step = {}", self.mini_batch_questions, self.questions_per_step),
            );
        }
        // rollouts per step, and the rollout stream of the last one, must fit in the counters
        let rows = self.questions_per_step.checked_mul(self.group_size);
        if rows.and_then(|r| r.checked_mul(self.steps.max(1))).is_none_or(|r| u64::try_from(r).is_err()) {
            return bad("questions_per_step", "questions_per_step × group_size × steps overflows".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad("temperature", format!("{} must be finite and > 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} must be in (0, 1]", self.top_p));
        }
        let optimizer = crate::settings::OptimizerSettings {
            lr: self.lr,
            min_lr: self.min_lr,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
        };
        optimizer.validate(WHO)
    }

    /// The objective's hyper-parameters as used (DisCO forces λ = ∞).
    pub fn effective_hyper(&self) -> Hyper {
        let mut h = self.hyper;
        if self.objective == ObjectiveKind::Disco {
            h.lambda = f64::INFINITY;
        }
        h
    }

    /// Optimizer steps per training step: mini-batches × inner epochs.
    pub fn optimizer_steps_per_step(&self) -> u64 {
        ((self.questions_per_step / self.mini_batch_questions.max(1)) as u64).saturating_mul(self.inner_epochs as u64)
    }

    /// The learning-rate schedule over optimizer steps; the cosine ends at the run's last one.
    pub fn lr_schedule(&self) -> LrSchedule {
        let decay = match self.lr_decay {
            LrDecayKind::Constant => LrDecay::Constant,
            LrDecayKind::Cosine => {
                LrDecay::Cosine { min_lr: self.min_lr, total_steps: (self.steps as u64).saturating_mul(self.optimizer_steps_per_step()) }
            }
        };
        LrSchedule { lr: self.lr, warmup_steps: self.warmup_steps, decay }
    }
}

/// One line of metrics.jsonl. Fields that can be non-finite are `None` (JSON null) when they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    pub accuracy: f64,
    pub mean_length: f64,
    pub mean_length_correct: Option<f64>,
    /// toy task: mean useless (padding) and useful steps per rollout (see task::Verdict)
    pub mean_redundant_steps: Option<f64>,
    pub mean_necessary_steps: Option<f64>,
    pub truncation_rate: f64,
    /// responses holding sampled ids the tokenizer cannot decode (graded on the decodable text)
    pub undecodable_responses: usize,
    /// k1 KL(π_old ‖ π_θ) of the last chunk of the last mini-batch (the most off-policy one)
    pub kl_last: Option<f64>,
    /// mean over chunks of the KL penalty value
    pub penalty: Option<f64>,
    /// −mean old log-prob per token: an unbiased estimate of the policy's per-token entropy at T
    pub entropy: f64,
    /// share of questions whose group has both correct and wrong answers
    pub valid_group_share: f64,
    /// DRPO/DisCO: max and min of ω = |P|·ŵ over the positives of valid groups (ω averages 1 in
    /// each group, so its mean says nothing)
    pub omega_max: Option<f64>,
    pub omega_min: Option<f64>,
    /// DRPO/DisCO: effective sample size of the positives' weights, 1/(|P|·Σŵ²) ∈ (0, 1], averaged
    /// over valid groups (1 = uniform weights, as DisCO; 1/|P| = all weight on one answer)
    pub weight_ess: Option<f64>,
    /// baselines: mean and min advantage of the correct responses, and the share of them below 0
    pub adv_mean_correct: Option<f64>,
    pub adv_min_correct: Option<f64>,
    pub negative_advantage_share_correct: Option<f64>,
    /// every objective: share of the correct rollouts the objective pushes down (push < 0, see
    /// [`ChunkResult::push`]; the mechanism of SPEC §6.3) and share it leaves alone (push = 0, e.g.
    /// all-correct groups under DRPO); first inner epoch. Absent in metrics written before them.
    #[serde(default)]
    pub correct_pushed_down_share: Option<f64>,
    #[serde(default)]
    pub correct_unpushed_share: Option<f64>,
    pub loss: Option<f64>,
    pub objective: Option<f64>,
    /// mean and max over the step's optimizer steps of the gradient norm before clipping
    pub grad_norm_mean: Option<f64>,
    pub grad_norm_max: Option<f64>,
    /// optimizer steps skipped because the gradient norm was not finite
    pub skipped_optimizer_steps: usize,
    /// mean and max over the step's optimizer steps of the learning rate
    pub lr_mean: f64,
    pub lr_max: f64,
    pub step_seconds: f64,
    /// mean over the step's response tokens of |ℓ_sampler − ℓ_old|: the log-prob the sampler reported
    /// for the token it drew (decode path: KV cache, decode GEMMs, decode attention) against the old
    /// log-prob the scorer recomputed (uncached training forward), both log softmax(z / T) of one set
    /// of weights on one device. They differ only by the two paths' summation orders (and, in bf16,
    /// their roundings): a measured train/inference mismatch, not a precision split. None when no
    /// token was drawn; older metrics files (None then, or a precision split's number) still read.
    #[serde(default)]
    pub sampler_logp_mismatch: Option<f64>,
}

/// `Some(x)` for a finite x.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Trainer state saved with each checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    optimizer_steps: u64,
    hapo: HapoHistory,
}

/// One rollout of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollout {
    /// index of the problem in the environment (HAPO's history key)
    pub problem: usize,
    /// group id: the question's slot in the step (0..Q)
    pub group: usize,
    /// the response tokens, EOS included when it stopped on one
    pub tokens: Vec<u32>,
    pub finished: bool,
    pub correct: bool,
    pub steps: Option<(usize, usize)>,
    /// ids the tokenizer could not decode (skipped in the graded text)
    pub undecodable: usize,
    /// log-probs of `tokens` under the weights that sampled them, at the run's temperature
    pub old_logp: Vec<f64>,
}

/// The per-rollout columns an objective reads: group ids, correctness, finished flags, lengths.
struct Columns {
    group: Vec<usize>,
    correct: Vec<bool>,
    finished: Vec<bool>,
    len: Vec<usize>,
}

impl Columns {
    fn of(rollouts: &[Rollout]) -> Self {
        Columns {
            group: rollouts.iter().map(|r| r.group).collect(),
            correct: rollouts.iter().map(|r| r.correct).collect(),
            finished: rollouts.iter().map(|r| r.finished).collect(),
            len: rollouts.iter().map(|r| r.tokens.len()).collect(),
        }
    }

    fn outcomes(&self, max_len: usize) -> Outcomes<'_> {
        Outcomes { group: &self.group, correct: &self.correct, finished: &self.finished, len: &self.len, max_len }
    }
}

/// The questions of step `step`: epoch e = step / ⌊n/q⌋ shuffles the problems with a generator seeded
/// by (seed, e); the step takes slice step mod ⌊n/q⌋ of q problems. The n mod q problems left over in
/// an epoch are not used in it (drop_last). Errors when q = 0 or the set has fewer than q problems.
pub fn questions_of_step(n_problems: usize, per_step: usize, seed: u64, step: usize) -> Result<Vec<usize>> {
    if per_step == 0 || n_problems < per_step {
        return Err(Error::input(format!("{per_step} questions per step but only {n_problems} problems in the training set")));
    }
    let steps_per_epoch = n_problems / per_step;
    let (epoch, slot) = (step / steps_per_epoch, step % steps_per_epoch);
    let mut perm: Vec<usize> = (0..n_problems).collect();
    perm.shuffle(&mut StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    Ok(perm[slot * per_step..(slot + 1) * per_step].to_vec())
}

/// The gradient of one mini-batch (SPEC §5.1): the rollouts are cut into chunks of
/// `chunk_questions · group_size` rows; each chunk's loss comes from the objective on that chunk
/// (groups by [`Rollout::group`], KL pooled over its tokens), its token gradient is scaled by
/// 1/(number of chunks) and backpropagated through the model at the run's temperature. For DRPO the
/// per-token coefficient is thus −g_i/(Q_mb·L_i) − (1/n_chunks)·β[K_B − δ]_+/T_B. The objective and
/// the backward of a chunk run where the policy lives ([`Policy::chunk_objective`],
/// [`Policy::backward_token_grad`]); the chunk's numbers come to the host.
///
/// prompts: `[rows]` the prompt of each rollout.  advantages: `[rows]` the baselines' advantages
/// (None: DRPO / DisCO from `cfg`).  grads: set to ∇ of the mini-batch loss (1/chunks) Σ_B loss_B,
/// the chunks' backward passes added into it in order.  Returns the chunks' numbers.
pub fn minibatch_gradient<P: Policy>(
    policy: &P,
    cfg: &TrainConfig,
    prompts: &[&[u32]],
    rollouts: &[Rollout],
    advantages: Option<&[f64]>,
    grads: &mut P::Grads,
) -> Result<Vec<ChunkResult>> {
    crate::error::check_len("minibatch_gradient", "prompts", prompts.len(), rollouts.len())?;
    if let Some(a) = advantages {
        crate::error::check_len("minibatch_gradient", "advantages", a.len(), rollouts.len())?;
    }
    let hyper = cfg.effective_hyper();
    let rows_per_chunk = cfg.chunk_questions * cfg.group_size;
    let n_chunks = rollouts.len().div_ceil(rows_per_chunk).max(1);
    let scale = 1.0 / n_chunks as f64;
    policy.zero_grads(grads)?;
    let mut chunks = Vec::with_capacity(n_chunks);
    for (ci, chunk) in rollouts.chunks(rows_per_chunk).enumerate() {
        let first = ci * rows_per_chunk;
        let resps: Vec<&[u32]> = chunk.iter().map(|r| r.tokens.as_slice()).collect();
        let batch = ScoreBatch::responses(policy.config(), &prompts[first..first + chunk.len()], &resps, cfg.temperature)?;
        let scored = policy.score_responses(&batch, true)?;
        let old: Vec<f64> = chunk.iter().flat_map(|r| r.old_logp.iter().copied()).collect();
        let cols = Columns::of(chunk);
        let loss = match advantages {
            None => ChunkLoss::Discriminative(&hyper),
            Some(adv) => ChunkLoss::Surrogate { advantages: &adv[first..first + chunk.len()], clip_eps: hyper.clip_eps },
        };
        let obj = ChunkObjective { outcomes: cols.outcomes(cfg.max_new_tokens), old_logp: &old, loss, scale };
        // where the policy lives: the host in f64, or the device (the token gradient stays there)
        let (result, dlogp) = policy.chunk_objective(&scored, &obj)?;
        policy.backward_token_grad(&scored, &dlogp, grads)?;
        chunks.push(result);
    }
    Ok(chunks)
}

/// A training run in a folder, of the policy `P` (the host model, or a device model: see
/// [`crate::engine::Trainee`]).
pub struct Trainer<'a, P: Policy> {
    pub cfg: TrainConfig,
    /// the policy trained: it samples the rollouts, scores them and is updated (evaluate through it)
    pub model: P,
    pub opt: P::Optimizer,
    /// the mini-batch gradient, allocated once
    grads: P::Grads,
    pub env: &'a dyn Environment,
    pub tok: &'a Tokenizer,
    pub run_dir: PathBuf,
    /// folder with the tokenizer files to copy into checkpoints
    pub source_dir: PathBuf,
    /// lines for the user (e.g. an interrupted checkpoint save that was repaired); the caller prints them
    pub notices: Vec<String>,
    state: TrainerState,
    /// the run folder's lock, held while the trainer lives
    _lock: RunLock,
}

impl<'a, P: Policy> Trainer<'a, P> {
    /// Starts a run in `run_dir` from `model`, or resumes the one there if it has a checkpoint
    /// (whichever device wrote it: its parameters and optimizer state replace `model`'s, which must
    /// have the checkpoint's config). The folder is locked while the trainer lives ([`RunLock`]); a
    /// folder whose train_config.json differs from `cfg` (the device aside), or that is neither
    /// fresh nor a complete run, is refused ([`run_folder`]).
    pub fn new(
        cfg: TrainConfig,
        mut model: P,
        env: &'a dyn Environment,
        tok: &'a Tokenizer,
        run_dir: &Path,
        source_dir: &Path,
    ) -> Result<Self> {
        cfg.validate()?;
        if env.is_empty() {
            return Err(Error::input("the training set has no problems"));
        }
        questions_of_step(env.len(), cfg.questions_per_step, cfg.seed, 0)?;
        // the lock first: the repairs and checks below must not race another process
        let (lock, stale) = RunLock::acquire(run_dir, "drpo train")?;
        let mut notices: Vec<String> = stale.into_iter().collect();
        let ckpt = run_dir.join(run_folder::CHECKPOINT_DIR);
        notices.extend(recover_interrupted_save(&ckpt)?);
        let start = run_folder::classify(run_dir)?;
        let config_path = run_dir.join(run_folder::CONFIG_FILE);
        if config_path.exists() {
            let saved = read_json(&config_path)?;
            let saved: TrainConfig = serde_json::from_value(saved).map_err(|e| Error::json(&config_path, e))?;
            if saved != cfg {
                return Err(Error::input(format!(
                    "{} holds a run with a different configuration ({}); use another --out folder or the same settings",
                    run_dir.display(),
                    config_difference(&saved, &cfg)
                )));
            }
        }
        let mut opt = model.new_optimizer()?;
        let state = if start == RunStart::Resume {
            let c = load_checkpoint::<f32>(&ckpt)?;
            let state: TrainerState =
                serde_json::from_value(c.trainer).map_err(|e| Error::json(ckpt.join(crate::checkpoint::TRAINER_STATE_FILE), e))?;
            let at = run_folder::ResumePoint { step: state.step, optimizer_steps: state.optimizer_steps, adam_step: c.optim.step };
            run_folder::check_resume(run_dir, &cfg, at)?;
            // the dtype a config declares is the saved one's (f32 in a checkpoint): informational
            let shape = |m: &crate::config::ModelConfig| crate::config::ModelConfig { torch_dtype: None, ..m.clone() };
            if shape(&c.model.cfg) != shape(model.config()) {
                return Err(Error::input(format!(
                    "{} holds a checkpoint of another model config than the start model's ({} vs {} parameters)",
                    ckpt.display(),
                    c.model.layout.total,
                    model.n_params()
                )));
            }
            model.import_state(&mut opt, &HostState { params: c.model.params, optim: c.optim })?;
            state
        } else {
            if let RunStart::StartOver { metrics_lines } = start {
                notices.push(format!(
                    "{} holds a run that never reached a checkpoint: starting it over at step 0 ({metrics_lines} line(s) of {} dropped)",
                    run_dir.display(),
                    run_folder::METRICS_FILE
                ));
            }
            let mut v = serde_json::to_value(&cfg).map_err(|e| Error::json(&config_path, e))?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("device".into(), model.device().into()); // recorded, not compared
            }
            let text = serde_json::to_string_pretty(&v).map_err(|e| Error::json(&config_path, e))?;
            write_atomic(&config_path, text.as_bytes())?;
            match std::fs::remove_file(run_dir.join(run_folder::METRICS_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(run_dir.join(run_folder::METRICS_FILE), e)),
                _ => {}
            }
            TrainerState::default()
        };
        let grads = model.new_grads()?;
        Ok(Trainer {
            cfg,
            model,
            opt,
            grads,
            env,
            tok,
            run_dir: run_dir.to_path_buf(),
            source_dir: source_dir.to_path_buf(),
            notices,
            state,
            _lock: lock,
        })
    }

    /// The next step to run (after a resume: the first one not yet done).
    pub fn step(&self) -> usize {
        self.state.step
    }

    /// Writes the checkpoint (atomically): the policy's state in the CPU's f32 format.
    pub fn save(&self) -> Result<()> {
        let trainer = serde_json::to_value(&self.state).map_err(|e| Error::json(&self.run_dir, e))?;
        let HostState { params, optim } = self.model.export_state(&self.opt)?;
        let model = Model::from_params(self.model.config().clone(), params);
        save_checkpoint(&self.run_dir.join("checkpoint"), &model, &optim, &trainer, Some(&self.source_dir), SaveDtype::F32)
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
            let path = self.run_dir.join(run_folder::METRICS_FILE);
            let line = crate::output::json_text(&path.display().to_string(), &m, false)?;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
            writeln!(f, "{line}").and_then(|_| f.flush()).map_err(|e| Error::io(&path, e))?;
            on_step(&m);
            self.state.step += 1;
            let done = self.state.step == self.cfg.steps;
            if done || (self.cfg.save_every > 0 && self.state.step.is_multiple_of(self.cfg.save_every)) {
                self.save()?;
            }
        }
        Ok(())
    }

    /// The text the verifier grades for a rollout: the response, or the prompt and the response
    /// decoded together (SPEC §8.2) when the environment asks for it; special tokens kept, ids the
    /// tokenizer does not know skipped and counted.
    fn graded_text(&self, problem: usize, tokens: &[u32]) -> Result<(String, usize)> {
        if self.env.grades_prompt_and_response() {
            let ids = [self.env.prompt(problem), tokens].concat();
            self.tok.decode_lenient(&ids, false)
        } else {
            self.tok.decode_lenient(tokens, false)
        }
    }

    /// The step's rollouts, sampled and scored by the policy that trains, and the mean |Δ log-prob|
    /// per response token between the sampler's and the scorer's log-probs (`sampler_logp_mismatch`;
    /// None when no token was drawn).
    fn rollouts(&self, questions: &[usize]) -> Result<(Vec<Rollout>, Option<f64>)> {
        let cfg = &self.cfg;
        let g = cfg.group_size;
        let prompts: Vec<Vec<u32>> = questions.iter().flat_map(|&q| std::iter::repeat_n(self.env.prompt(q).to_vec(), g)).collect();
        // validate() checked that Q·G·steps fits
        let stream_offset = (self.state.step as u64).checked_mul(prompts.len() as u64).ok_or_else(|| Error::input("rollout stream index overflows"))?;
        let opts = GenerateOptions {
            max_new_tokens: cfg.max_new_tokens,
            sampling: SamplingParams { temperature: cfg.temperature, top_k: 0, top_p: cfg.top_p },
            seed: cfg.seed,
            eos_ids: self.tok.eos_ids().to_vec(),
            stream_offset,
        };
        // in rounds of what the device's free memory holds next to the training state; each rollout
        // keeps its stream whatever its round (generate::generate_in_rounds)
        let gens = crate::generate::generate(&self.model, &prompts, &opts)?;
        // old log-probs: the current weights, temperature T, recomputed (SPEC §5.1) by the policy
        // that sampled them and trains
        let p_refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let r_refs: Vec<&[u32]> = gens.iter().map(|g| g.tokens.as_slice()).collect();
        let batch = ScoreBatch::responses(self.model.config(), &p_refs, &r_refs, cfg.temperature)?;
        let old = self.model.score_responses(&batch, false)?.logp;
        // the sampler ran the decode path (KV cache, decode GEMMs and attention), the scorer the
        // uncached training forward: the same weights, other kernels and summation orders
        let mismatch = mean(gens.iter().zip(&old).flat_map(|(g, o)| g.logp.iter().zip(o).map(|(s, o)| (s - o).abs())));
        let mut out = Vec::with_capacity(gens.len());
        for (k, (gen, old_logp)) in gens.into_iter().zip(old).enumerate() {
            let problem = questions[k / g];
            let (text, undecodable) = self.graded_text(problem, &gen.tokens)?;
            let v = self.env.grade(problem, &text);
            out.push(Rollout {
                problem,
                group: k / g,
                tokens: gen.tokens,
                finished: gen.stopped_on_eos,
                correct: v.correct,
                steps: v.steps,
                undecodable,
                old_logp,
            });
        }
        Ok((out, mismatch))
    }

    /// One training step (rollouts, then the optimizer steps of its mini-batches).
    fn train_step(&mut self) -> Result<StepMetrics> {
        let t0 = std::time::Instant::now();
        let cfg = self.cfg.clone();
        let hyper = cfg.effective_hyper();
        let g = cfg.group_size;
        let questions = questions_of_step(self.env.len(), cfg.questions_per_step, cfg.seed, self.state.step)?;
        let (rollouts, sampler_logp_mismatch) = self.rollouts(&questions)?;

        // baselines: rewards and advantages once per step, on all rollouts
        let advantages = match cfg.objective.baseline() {
            None => None,
            Some(b) => {
                let cols = Columns::of(&rollouts);
                let problem: Vec<usize> = rollouts.iter().map(|r| r.problem).collect();
                let o = cols.outcomes(cfg.max_new_tokens);
                Some(objectives::baseline_advantages_keyed(b, &o, &problem, &hyper, &mut self.state.hapo)?.1)
            }
        };

        let adamw = AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() };
        let sched = cfg.lr_schedule();
        let (mut kl_last, mut penalties, mut losses, mut objs) = (f64::NAN, Vec::new(), Vec::new(), Vec::new());
        let (mut grad_norms, mut lrs, mut skipped) = (Vec::new(), Vec::new(), 0usize);
        let mut positive_weights: Vec<Vec<f64>> = Vec::new();
        let mut push: Vec<f64> = Vec::with_capacity(rollouts.len());
        let mb_rows = cfg.mini_batch_questions * g;
        for epoch in 0..cfg.inner_epochs {
            for (mi, mb) in rollouts.chunks(mb_rows).enumerate() {
                let prompts: Vec<&[u32]> = mb.iter().map(|r| self.env.prompt(r.problem)).collect();
                let adv = advantages.as_ref().map(|a| &a[mi * mb_rows..mi * mb_rows + mb.len()]);
                let chunks = minibatch_gradient(&self.model, &cfg, &prompts, mb, adv, &mut self.grads)?;
                for c in chunks {
                    kl_last = c.kl;
                    penalties.push(c.penalty);
                    losses.push(c.loss);
                    objs.push(c.objective);
                    if epoch == 0 {
                        positive_weights.extend(c.positive_weights);
                        push.extend(c.push);
                    }
                }
                let norm = self.model.clip_grad_norm(&mut self.grads, cfg.grad_clip)?;
                let lr = sched.lr_at(self.state.optimizer_steps);
                grad_norms.push(norm);
                lrs.push(lr);
                if norm.is_finite() {
                    self.model.apply_update(&mut self.opt, &self.grads, &adamw, lr)?;
                    self.state.optimizer_steps += 1;
                } else {
                    skipped += 1;
                }
            }
        }

        let n = rollouts.len() as f64;
        let tokens: usize = rollouts.iter().map(|r| r.tokens.len()).sum();
        let valid = (0..questions.len())
            .filter(|&k| {
                let grp = &rollouts[k * g..(k + 1) * g];
                grp.iter().any(|r| r.correct) && grp.iter().any(|r| !r.correct)
            })
            .count();
        // ω = |P|·ŵ per positive; ESS = 1/(|P| Σ ŵ²) per valid group
        let omegas = positive_weights.iter().flat_map(|w| w.iter().map(move |x| x * w.len() as f64));
        let omega_max = omegas.clone().reduce(f64::max);
        let omega_min = omegas.reduce(f64::min);
        let weight_ess = mean(positive_weights.iter().map(|w| 1.0 / (w.len() as f64 * w.iter().map(|x| x * x).sum::<f64>())));
        let adv_correct: Vec<f64> = match &advantages {
            Some(a) => a.iter().zip(&rollouts).filter(|(_, r)| r.correct).map(|(&x, _)| x).collect(),
            None => Vec::new(),
        };
        // epoch 0 visits every rollout once, in order
        let correct_push: Vec<f64> = push.iter().zip(&rollouts).filter(|(_, r)| r.correct).map(|(&p, _)| p).collect();
        let grad_norm_mean = mean(grad_norms.iter().copied()).and_then(finite);
        let grad_norm_max = if grad_norms.iter().all(|x| x.is_finite()) { grad_norms.iter().copied().reduce(f64::max) } else { None };
        Ok(StepMetrics {
            step: self.state.step,
            accuracy: rollouts.iter().filter(|r| r.correct).count() as f64 / n,
            mean_length: tokens as f64 / n,
            mean_length_correct: mean(rollouts.iter().filter(|r| r.correct).map(|r| r.tokens.len() as f64)),
            mean_redundant_steps: mean(rollouts.iter().filter_map(|r| r.steps.map(|s| s.1 as f64))),
            mean_necessary_steps: mean(rollouts.iter().filter_map(|r| r.steps.map(|s| s.0 as f64))),
            truncation_rate: rollouts.iter().filter(|r| !r.finished).count() as f64 / n,
            undecodable_responses: rollouts.iter().filter(|r| r.undecodable > 0).count(),
            kl_last: finite(kl_last),
            penalty: mean(penalties.iter().copied()).and_then(finite),
            entropy: -rollouts.iter().flat_map(|r| r.old_logp.iter()).sum::<f64>() / tokens.max(1) as f64,
            valid_group_share: valid as f64 / questions.len() as f64,
            omega_max: omega_max.and_then(finite),
            omega_min: omega_min.and_then(finite),
            weight_ess: weight_ess.and_then(finite),
            adv_mean_correct: mean(adv_correct.iter().copied()),
            adv_min_correct: adv_correct.iter().copied().reduce(f64::min),
            negative_advantage_share_correct: advantages.as_ref().and(mean(adv_correct.iter().map(|&a| (a < 0.0) as u8 as f64))),
            correct_pushed_down_share: mean(correct_push.iter().map(|&p| (p < 0.0) as u8 as f64)),
            correct_unpushed_share: mean(correct_push.iter().map(|&p| (p == 0.0) as u8 as f64)),
            loss: mean(losses.iter().copied()).and_then(finite),
            objective: mean(objs.iter().copied()).and_then(finite),
            grad_norm_mean,
            grad_norm_max: grad_norm_max.and_then(finite),
            skipped_optimizer_steps: skipped,
            lr_mean: mean(lrs.iter().copied()).unwrap_or(0.0),
            lr_max: lrs.iter().copied().reduce(f64::max).unwrap_or(0.0),
            step_seconds: t0.elapsed().as_secs_f64(),
            sampler_logp_mismatch: sampler_logp_mismatch.and_then(finite),
        })
    }
}

/// The first top-level setting where two configurations differ, for the refusal message.
fn config_difference(saved: &TrainConfig, now: &TrainConfig) -> String {
    let (a, b) = (serde_json::to_value(saved).unwrap_or_default(), serde_json::to_value(now).unwrap_or_default());
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, va) in a {
            if b.get(k) != Some(va) {
                return format!("`{k}` was {va}, now {}", b.get(k).unwrap_or(&serde_json::Value::Null));
            }
        }
    }
    "settings differ".into()
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
