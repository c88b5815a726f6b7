//! Supervised fine-tuning from scratch (`drpo sft`): a small Qwen2-config model learns the toy task
//! from a mixture of trace shapes ([`crate::task::TraceMix`]: full granularity, shortcut steps,
//! guesses; most of them padded with checks), giving a base model that is verbose and whose shorter
//! habits are less reliable — the situation the paper's RL starts from (DeepSeek-R1-Distill models
//! over-think, and cutting their reasoning can cost accuracy).
//!
//! Loss: the token-level mean negative log-likelihood of the response tokens (EOS included) of a
//! batch; prompt tokens carry no loss. AdamW, linear warmup then cosine decay, global-norm clipping.

use crate::config::ModelConfig;
use crate::engine::{Device, Trainee};
use crate::error::{write_atomic, Error, Result};
use crate::model::Model;
use crate::optim::{AdamWConfig, LrDecay, LrSchedule};
use crate::policy::{Generator, Policy, ScoreBatch};
use crate::task::{generate_split, render_shaped, Split, TaskConfig, TraceMix};
use crate::tokenizer::Tokenizer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SftConfig {
    pub min_level: usize,
    pub max_level: usize,
    /// distinct training questions
    pub n_train: usize,
    /// steps on the trace mixture (phase 2; the whole SFT when `full_only_steps` is 0)
    pub steps: usize,
    /// sequences per step
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub seed: u64,
    /// share of the non-guess traces written without any check (padding)
    pub concise_share: f64,
    /// a padded trace of level k gets 1..=k + extra_checks checks, uniformly
    pub extra_checks: usize,
    /// share of guesses (the answer alone); absent in configs older than guesses: 0
    #[serde(default)]
    pub guess_share: f64,
    /// share of the other traces (level ≥ 2) with shortcut steps; absent in older configs: 0
    #[serde(default)]
    pub shortcut_share: f64,
    /// phase 1: at most this many steps on full-granularity traces only, ended early once the model
    /// solves the probe (see [`run_sft`]); 0 = none (configs older than it)
    #[serde(default)]
    pub full_only_steps: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            min_level: 1,
            max_level: 4,
            n_train: 4000,
            steps: 1000,
            batch_size: 32,
            lr: 3e-3,
            warmup_steps: 50,
            seed: 0,
            concise_share: 0.2,
            extra_checks: 2,
            guess_share: 0.15,
            shortcut_share: 0.35,
            full_only_steps: 2500,
            hidden_size: 64,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            intermediate_size: 176,
        }
    }
}

impl SftConfig {
    pub fn task(&self) -> TaskConfig {
        TaskConfig { min_level: self.min_level, max_level: self.max_level, seed: self.seed }
    }

    /// The mixture of trace shapes the base is fine-tuned on.
    pub fn trace_mix(&self) -> TraceMix {
        TraceMix {
            guess_share: self.guess_share,
            shortcut_share: self.shortcut_share,
            concise_share: self.concise_share,
            extra_checks: self.extra_checks,
        }
    }

    /// The Qwen2 config of the toy model for the task tokenizer `tok`.
    pub fn model_config(&self, tok: &Tokenizer) -> ModelConfig {
        self.model_config_for(tok.vocab_size(), tok.eos_ids().to_vec())
    }

    fn model_config_for(&self, vocab_size: usize, eos_token_ids: Vec<u32>) -> ModelConfig {
        let max_len = crate::task::prompt_tokens(self.max_level) + crate::task::trace_tokens(self.max_level, 3 * self.max_level + 8);
        ModelConfig {
            vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_layers,
            num_attention_heads: self.num_heads,
            num_key_value_heads: self.num_kv_heads,
            head_dim: self.hidden_size / self.num_heads.max(1),
            rope_theta: 10000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: max_len.next_power_of_two(),
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_ids,
            torch_dtype: Some("float32".into()),
        }
    }

    /// Every setting checked before anything is written: sizes positive and capped, the optimizer
    /// settings by the rules `drpo train` uses ([`crate::settings::OptimizerSettings`]), and the model
    /// by the rules a config.json is loaded with ([`ModelConfig::validate`]), so a finished SFT always
    /// writes a folder every command can load. The error names the setting.
    pub fn validate(&self) -> Result<()> {
        const WHO: &str = "sft config";
        self.task().validate()?;
        let bad = |field: &str, why: String| Err(Error::input(format!("{WHO}: {field}: {why}")));
        for (field, v) in [
            ("n_train", self.n_train),
            ("batch_size", self.batch_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("intermediate_size", self.intermediate_size),
        ] {
            crate::settings::check_positive(WHO, field, v)?;
        }
        if self.n_train > crate::task::MAX_EXAMPLES {
            return bad("n_train", format!("{} is above the cap of {} questions", self.n_train, crate::task::MAX_EXAMPLES));
        }
        if self.batch_size > MAX_BATCH {
            return bad("batch_size", format!("{} is above the cap of {MAX_BATCH} sequences per step", self.batch_size));
        }
        // a padded trace has up to max_level + extra_checks checks; the model's context holds
        // 3·max_level + 8 (model_config)
        let max_extra = 2 * self.max_level + 8;
        if self.extra_checks > max_extra {
            return bad("extra_checks", format!("{} is above 2·max_level + 8 = {max_extra} (longer traces do not fit the context)", self.extra_checks));
        }
        self.trace_mix().validate(WHO)?;
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad("num_heads", format!("{} does not divide hidden_size = {}", self.num_heads, self.hidden_size));
        }
        let optimizer = crate::settings::OptimizerSettings { lr: self.lr, min_lr: 0.1 * self.lr, weight_decay: 0.0, grad_clip: 1.0 };
        optimizer.validate(WHO)?;
        self.model_config_for(crate::task::TASK_VOCAB.len(), Vec::new()).validate(Path::new("sft config (the model it builds)"))
    }

    /// The memory SFT needs on the CPU: f32 weights, gradients and AdamW moments, and one step's
    /// activations (batch_size sequences of the longest prompt + trace).
    pub fn memory_estimate(&self) -> crate::memory::MemoryEstimate {
        let cfg = self.model_config_for(crate::task::TASK_VOCAB.len(), Vec::new());
        let seq = cfg.max_position_embeddings as u64;
        crate::memory::training(&cfg, 4, (self.batch_size as u64).saturating_mul(seq), seq)
    }
}

/// Cap on SFT's sequences per step (the questions are capped by [`crate::task::MAX_EXAMPLES`], the
/// steps have a progress bar): far above the toy study's 32.
pub const MAX_BATCH: usize = 1 << 16;

/// Which traces an SFT step trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SftPhase {
    /// full-granularity traces only, until the model can write the derivation
    FullOnly,
    /// the configured mixture of shapes
    Mixture,
}

/// One SFT step's numbers, for the progress bar and the log.
#[derive(Clone, Debug, Serialize)]
pub struct SftStep {
    pub step: usize,
    pub phase: SftPhase,
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    /// greedy pass@1 on the probe questions, when probed before this step
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_accuracy: Option<f64>,
}

/// The full-only phase ends once greedy decoding solves this share of the probe questions.
pub const PROBE_ACCURACY: f64 = 0.9;
/// The probe runs every this many full-only steps.
pub const PROBE_EVERY: usize = 50;
/// Training questions the probe decodes (the first of the training split: levels dealt evenly).
pub const PROBE_QUESTIONS: usize = 60;

/// Greedy pass@1 of `model` on `probe` (examples with their prompt ids).
fn probe_accuracy(model: &dyn Generator, probe: &[(&crate::task::TaskExample, &Vec<u32>)], tok: &Tokenizer, max_new_tokens: usize) -> Result<f64> {
    let prompts: Vec<Vec<u32>> = probe.iter().map(|(_, p)| (*p).clone()).collect();
    let opts = crate::generate::GenerateOptions {
        max_new_tokens,
        sampling: crate::sampling::SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 },
        seed: 0,
        eos_ids: tok.eos_ids().to_vec(),
        stream_offset: 0,
    };
    let out = model.generate(&prompts, &opts)?;
    let mut correct = 0;
    for ((ex, _), g) in probe.iter().zip(&out) {
        correct += usize::from(crate::task::verify(ex, &tok.decode_lenient(&g.tokens, false)?.0).correct);
    }
    Ok(correct as f64 / probe.len().max(1) as f64)
}

/// Trains the toy base model and writes it to `out` as a Hugging Face checkpoint (config.json,
/// model.safetensors, tokenizer.json, tokenizer_config.json) plus `sft_log.jsonl` and, last,
/// `sft_config.json` (deleted at the start: a folder holding it holds the weights of that config).
///
/// Two phases. Phase 1 (`full_only_steps` > 0) trains on full-granularity traces only, at the
/// warmed-up constant rate, until greedy decoding solves [`PROBE_ACCURACY`] of the probe questions
/// (checked every [`PROBE_EVERY`] steps) or for `full_only_steps` steps at most: a 2-layer model learns
/// to copy each step's operator from the question suddenly, after 700 to 1300 steps depending on the
/// seed (measured), and shapes mixed in before that delay it further or prevent it. Phase 2 trains
/// `steps` steps on the mixture, the rate decaying along a cosine to a tenth. Without phase 1 the
/// schedule is warmup, then the cosine over `steps` (the SFT of configurations older than phase 1).
///
/// `out` is locked for the run ([`crate::runlock::RunLock`]). A loss or gradient norm that is not
/// finite stops the run with an error before the update, and no model is saved (the weights are
/// only saved at the end, after the last good step).
///
/// On the CPU; [`run_sft_with_notices`] takes a device.
pub fn run_sft(cfg: &SftConfig, out: &Path, on_step: &mut dyn FnMut(&SftStep)) -> Result<Model<f32>> {
    run_sft_with_notices(cfg, out, Device::Cpu, on_step, &mut |_| {})
}

/// [`run_sft`] on `device` (`drpo sft --device`): the model is made on the host, then trained where
/// [`Trainee::new`] puts it (the loss, its gradient, the clip and AdamW through the [`Policy`]; the
/// probe generates with it). Lines for the user, whole (a stale lock taken over, the CPU fallback
/// of `auto`), go to `notice`. The saved weights are the f32 master weights.
pub fn run_sft_with_notices(
    cfg: &SftConfig,
    out: &Path,
    device: Device,
    on_step: &mut dyn FnMut(&SftStep),
    notice: &mut dyn FnMut(String),
) -> Result<Model<f32>> {
    cfg.validate()?;
    // where it runs, and that it fits there, before the folder is touched
    let shape = cfg.model_config_for(crate::task::TASK_VOCAB.len(), Vec::new());
    let needs = crate::engine::TrainingNeeds {
        what: "SFT",
        holds: "weights, gradients, optimizer, one batch's activations",
        host: cfg.memory_estimate(),
        seq_len: shape.max_position_embeddings as u64,
    };
    let at = Trainee::open(device, &shape, &needs, notice)?;
    let (_lock, note) = crate::runlock::RunLock::acquire(out, "drpo sft")?;
    note.into_iter().for_each(|line| notice(format!("note: {line}")));
    // sft_config.json marks a finished base (a study reuses a folder holding it): remove a previous
    // one first, so a run stopped before the end never leaves new weights under an old config
    let marker = out.join("sft_config.json");
    match std::fs::remove_file(&marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&marker, e)),
        _ => {}
    }
    crate::task::write_task_tokenizer(out)?;
    let tok = Tokenizer::from_dir(out)?;
    let examples = generate_split(&cfg.task(), Split::Train, cfg.n_train)?;
    let prompts: Vec<Vec<u32>> = examples.iter().map(|e| tok.encode(&e.prompt())).collect::<Result<_>>()?;
    let data = SftData { tok: &tok, examples: &examples, prompts: &prompts };
    let model = Model::<f32>::random(cfg.model_config(&tok), cfg.seed, 0.02);
    let (params, log) = match Trainee::place(at, model)? {
        Trainee::Cpu(mut m) => sft_steps(&mut m, cfg, &data, out, on_step)?,
        Trainee::Gpu(mut m) => sft_steps(&mut m, cfg, &data, out, on_step)?,
    };
    let model = Model::from_params(cfg.model_config(&tok), params);
    crate::weights::save_params(out, &model.cfg, &model.layout, &model.params, crate::weights::SaveDtype::F32)?;
    write_atomic(out.join("sft_log.jsonl"), log.as_bytes())?;
    write_atomic(&marker, serde_json::to_string_pretty(cfg).map_err(|e| Error::json(out, e))?.as_bytes())?;
    Ok(model)
}

/// What every SFT step draws from: the tokenizer, the training questions and their prompt ids.
struct SftData<'a> {
    tok: &'a Tokenizer,
    examples: &'a [crate::task::TaskExample],
    prompts: &'a [Vec<u32>],
}

/// The steps of [`run_sft_with_notices`] on any policy; gives the trained (master) weights and the
/// log's lines.
fn sft_steps<P: Policy>(
    model: &mut P,
    cfg: &SftConfig,
    data: &SftData,
    out: &Path,
    on_step: &mut dyn FnMut(&SftStep),
) -> Result<(Vec<f32>, String)> {
    let tok = data.tok;
    let probe: Vec<_> = data.examples.iter().zip(data.prompts).take(PROBE_QUESTIONS).collect();
    let probe_budget = crate::task::trace_tokens(cfg.max_level, 3 * cfg.max_level + 8);
    let mut opt = model.new_optimizer()?;
    let mut grads = model.new_grads()?;
    let adamw = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() };
    let warmup = cfg.warmup_steps as u64;
    let constant = LrSchedule { lr: cfg.lr, warmup_steps: warmup, decay: LrDecay::Constant };
    let cosine = |warmup_steps| LrSchedule {
        lr: cfg.lr,
        warmup_steps,
        decay: LrDecay::Cosine { min_lr: cfg.lr * 0.1, total_steps: cfg.steps as u64 },
    };
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5f7);
    let mix = cfg.trace_mix();
    let full_only = TraceMix { guess_share: 0.0, shortcut_share: 0.0, ..mix.clone() };
    let mut log = String::new();
    // the step phase 2 started at (phase 1 absent: 0)
    let mut mixture_from = (cfg.full_only_steps == 0).then_some(0);
    for step in 0.. {
        let mut probed = None;
        if mixture_from.is_none() {
            if step == cfg.full_only_steps {
                mixture_from = Some(step);
            } else if step > 0 && step % PROBE_EVERY == 0 {
                let acc = probe_accuracy(model, &probe, tok, probe_budget)?;
                probed = Some(acc);
                if acc >= PROBE_ACCURACY {
                    mixture_from = Some(step);
                }
            }
        }
        let (phase, lr) = match mixture_from {
            None => (SftPhase::FullOnly, constant.lr_at(step as u64)),
            Some(from) if step - from == cfg.steps => break,
            // the cosine starts at the full rate after a phase 1 (its warmup is done)
            Some(from) => (SftPhase::Mixture, cosine(if from == 0 { warmup } else { 0 }).lr_at((step - from) as u64)),
        };
        let mut batch_prompts = Vec::with_capacity(cfg.batch_size);
        let mut responses = Vec::with_capacity(cfg.batch_size);
        for _ in 0..cfg.batch_size {
            let i = rng.random_range(0..data.examples.len());
            let ex = &data.examples[i];
            let shape = if phase == SftPhase::FullOnly { full_only.sample(ex.level, &mut rng) } else { mix.sample(ex.level, &mut rng) };
            responses.push(tok.encode(&render_shaped(ex, &shape, &mut rng)?)?);
            batch_prompts.push(data.prompts[i].as_slice());
        }
        let resp: Vec<&[u32]> = responses.iter().map(Vec::as_slice).collect();
        let scored = model.score_responses(&ScoreBatch::responses(model.config(), &batch_prompts, &resp, 1.0)?, true)?;
        let n_tokens: usize = resp.iter().map(|r| r.len()).sum();
        let loss = -scored.logp.iter().flatten().sum::<f64>() / n_tokens as f64;
        let dlogp: Vec<Vec<f64>> = scored.logp.iter().map(|r| vec![-1.0 / n_tokens as f64; r.len()]).collect();
        model.zero_grads(&mut grads)?;
        model.backward_responses(&scored, &dlogp, &mut grads)?;
        let grad_norm = model.clip_grad_norm(&mut grads, 1.0)?;
        if !(loss.is_finite() && grad_norm.is_finite()) {
            let (at, value) = if loss.is_finite() { ("gradient norm", grad_norm) } else { ("loss", loss) };
            return Err(Error::NonFinite {
                what: format!("sft at step {step} (stopped before the update: no model was saved to {}; a lower lr may help)", out.display()),
                at: at.into(),
                value,
            });
        }
        model.apply_update(&mut opt, &grads, &adamw, lr)?;
        let rec = SftStep { step, phase, loss, grad_norm, lr, probe_accuracy: probed };
        log.push_str(&crate::output::json_text("sft_log.jsonl", &rec, false)?);
        log.push('\n');
        on_step(&rec);
    }
    Ok((model.export_state(&opt)?.params, log))
}
