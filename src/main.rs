//! `drpo`: the command-line tool. A thin layer over the library; the only place that prints errors.

use clap::{Parser, Subcommand, ValueEnum};
use drpo::config::ModelConfig;
use drpo::error::{read_json, write_atomic, Error, Result};
use drpo::engine::{Device, Engine, Trainee};
use drpo::model::Model;
use drpo::rl::trainer::ObjectiveKind;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "drpo", version, about = "DRPO (Decoupled Reward Policy Optimization) from scratch: CPU reference + CUDA kernels")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum FloatType {
    F32,
    F64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Config summary, parameter count, dtypes, eos ids and the memory a command would need.
    Inspect {
        #[arg(long)]
        model: PathBuf,
        /// sequences generated (or scored for training) together [default: 8]
        #[arg(long, value_parser = positive::<u64>)]
        batch: Option<u64>,
        /// prompt tokens per sequence [default: 1024, capped at half the context]
        #[arg(long, value_parser = positive::<u64>)]
        prompt_tokens: Option<u64>,
        /// new tokens per sequence [default: 8192, capped by the context left after the prompt]
        #[arg(long, value_parser = positive::<u64>)]
        new_tokens: Option<u64>,
        /// device memory the DRPO step is planned for, in GiB (an H100 has 80)
        #[arg(long, default_value_t = 80, value_parser = positive::<u64>)]
        device_gib: u64,
    },
    /// Log-probabilities of every next token of token sequences.
    Logprobs {
        #[arg(long)]
        model: PathBuf,
        /// JSON file: {"sequences": [[id, ...], ...]}
        #[arg(long)]
        input: PathBuf,
        /// JSON file written: {"logprobs": [[...], ...]}, row i has len_i − 1 entries
        #[arg(long)]
        out: PathBuf,
        /// CPU float type (the GPU runs bf16; f64 needs the CPU)
        #[arg(long, value_enum, default_value = "f32")]
        dtype: FloatType,
        /// the CPU by default: exact numbers are this command's purpose (the GPU computes in bf16)
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
    },
    /// Generate a continuation of a prompt.
    Generate {
        #[arg(long)]
        model: PathBuf,
        /// Prompt text (tokenized with the model's tokenizer.json)
        #[arg(long, conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
        prompt: Option<String>,
        /// Wrap --prompt in the chat template as a user turn, with the assistant turn opened
        #[arg(long, requires = "prompt", conflicts_with = "prompt_ids")]
        chat: bool,
        /// Prompt token ids, comma separated
        #[arg(long, value_delimiter = ',')]
        prompt_ids: Option<Vec<u32>>,
        #[arg(long, default_value_t = 64, value_parser = positive::<usize>)]
        max_new_tokens: usize,
        /// 0 = greedy
        #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
        temperature: f64,
        /// 0 = off
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0, value_parser = probability)]
        top_p: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print {"prompt_ids", "generated_ids", "text"} as JSON
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value = "auto")]
        device: Device,
    },
    /// f64 analytic gradients vs central differences for every parameter tensor; with --device gpu|sim,
    /// the device's f32 gradient vs the CPU's f64 gradient instead (every coordinate).
    Gradcheck {
        /// checkpoint folder; without it, a randomly configured Qwen2 model
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// coordinates checked per tensor (at most 10000; the device check takes every coordinate)
        #[arg(long, default_value_t = 8, value_parser = positive::<usize>)]
        samples: usize,
        /// cpu: the f64 backward vs finite differences; gpu|sim: the device backward vs the CPU
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
    },
    /// Evaluate the RL objectives on a cases file (the schema of tests/fixtures/*/objectives.json).
    Objective {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Grade math responses: {"cases": [{"response", "answer"}]} -> {"verdicts": [...]}.
    Grade {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// grade the whole response, not only what follows `</think>`
        #[arg(long)]
        no_think: bool,
    },
    /// Compile every CUDA kernel with NVRTC (no GPU needed): registers, shared memory, spills.
    Kernels {
        #[arg(long, value_delimiter = ',', default_value = "sm_80,sm_90")]
        arch: Vec<String>,
    },
    /// Supervised fine-tuning of the toy study's base model from scratch.
    Sft {
        /// model folder written (locked while SFT runs)
        #[arg(long)]
        out: PathBuf,
        /// optimizer steps on the mixture of trace shapes (phase 2; 0 with --full-only-steps 0: write
        /// the initial model only)
        #[arg(long)]
        steps: Option<usize>,
        /// at most this many steps on full-granularity traces first (phase 1, ended once greedy
        /// decoding solves 90% of a probe; 0: no phase 1)
        #[arg(long)]
        full_only_steps: Option<usize>,
        #[arg(long)]
        seed: Option<u64>,
        /// JSON file with any SftConfig fields
        #[arg(long)]
        config: Option<PathBuf>,
        /// where the model trains (gpu, sim: the training state on the device)
        #[arg(long, value_enum, default_value = "auto")]
        device: Device,
    },
    /// RL training (DRPO and the baselines) on the toy task or a math problem set.
    Train(Box<TrainArgs>),
    /// The toy DRPO study end to end: SFT base, its length-accuracy trade-off, Pareto sweeps of DRPO
    /// and the length-penalty baselines, evaluation, report with the answer.
    Demo {
        /// output folder [default: runs/demo (also --full), or runs/demo-quick with --quick]
        #[arg(long)]
        out: Option<PathBuf>,
        /// a ≈ 2-minute smoke test (one seed, fewer steps, easier task)
        #[arg(long, conflicts_with = "full")]
        quick: bool,
        /// the complete sweep of every method over its knob (see NOTES.md for its time)
        #[arg(long)]
        full: bool,
        #[arg(long, value_enum, default_value = "auto")]
        device: Device,
    },
    /// pass@1 and response lengths on the toy task's held-out split or a math benchmark.
    Eval(EvalArgs),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// starting checkpoint (HF folder)
    #[arg(long)]
    model: PathBuf,
    /// problem set (JSON / JSONL of {problem, answer}); without it, the toy task
    #[arg(long)]
    data: Option<PathBuf>,
    /// run folder: train_config.json, metrics.jsonl, checkpoint/ (an existing run there is resumed;
    /// the folder is locked while training runs)
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "drpo")]
    objective: ObjectiveKind,
    /// JSON file with any TrainConfig fields (CLI options override it)
    #[arg(long)]
    config: Option<PathBuf>,
    /// training steps (0: write the run folder without training)
    #[arg(long)]
    steps: Option<usize>,
    /// DRPO's λ; `inf` = DisCO
    #[arg(long)]
    lambda: Option<f64>,
    #[arg(long)]
    tau: Option<f64>,
    /// GRPO-LP's and RLOO-LP's α
    #[arg(long)]
    alpha: Option<f64>,
    #[arg(long)]
    lr: Option<f64>,
    /// linear warmup length, in optimizer steps
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// the rate after the warmup
    #[arg(long, value_enum)]
    lr_decay: Option<drpo::rl::trainer::LrDecayKind>,
    /// the rate the cosine decays to
    #[arg(long)]
    min_lr: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// max global L2 norm of the gradient
    #[arg(long)]
    grad_clip: Option<f64>,
    #[arg(long, value_parser = positive::<usize>)]
    questions_per_step: Option<usize>,
    #[arg(long, value_parser = positive::<usize>)]
    group_size: Option<usize>,
    #[arg(long, value_parser = positive::<usize>)]
    mini_batch_questions: Option<usize>,
    #[arg(long, value_parser = positive::<usize>)]
    chunk_questions: Option<usize>,
    #[arg(long, value_parser = positive::<usize>)]
    inner_epochs: Option<usize>,
    #[arg(long, value_parser = non_negative)]
    temperature: Option<f64>,
    #[arg(long, value_parser = probability)]
    top_p: Option<f64>,
    /// generation budget C [default: 8192 for --data, the toy budget otherwise; capped by the context]
    #[arg(long, value_parser = positive::<usize>)]
    max_new_tokens: Option<usize>,
    /// --data problems whose templated prompt is longer are dropped [default: 1024]
    #[arg(long, value_parser = positive::<usize>)]
    max_prompt_tokens: Option<usize>,
    #[arg(long)]
    save_every: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// use only the first K problems
    #[arg(long, value_parser = positive::<usize>)]
    limit: Option<usize>,
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
}

#[derive(clap::Args)]
struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    /// benchmark file (JSON / JSONL of {problem, answer}); without it, the toy task's eval split
    #[arg(long)]
    data: Option<PathBuf>,
    /// samples per problem
    #[arg(long, default_value_t = 1, value_parser = positive::<usize>)]
    n: usize,
    #[arg(long, value_parser = positive::<usize>)]
    max_new_tokens: Option<usize>,
    #[arg(long, default_value_t = 0.6, value_parser = non_negative)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95, value_parser = probability)]
    top_p: f64,
    /// evaluate only the first K problems
    #[arg(long, value_parser = positive::<usize>)]
    limit: Option<usize>,
    /// folder for eval.json, eval.md and responses.jsonl (one line per response: problem, sample, verdict, length, text)
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// sequences generated together
    #[arg(long, default_value_t = 64, value_parser = positive::<usize>)]
    batch_size: usize,
    /// grade only after `</think>`: auto = when the chat template opens a think block
    #[arg(long, value_enum, default_value = "auto")]
    think: Think,
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
}

#[derive(Clone, Copy, ValueEnum)]
enum Think {
    Auto,
    On,
    Off,
}

// One rule per option, shared by every command that has it (NOTES: "Guarantees"). A count that 0
// would make meaningless (samples, batch sizes, token budgets, limits) is positive; `--steps`,
// `--save-every`, `--warmup-steps`, `--top-k` and `--seed` take 0 with a documented meaning.

/// Counts: a positive integer.
fn positive<T: std::str::FromStr + Default + PartialEq>(s: &str) -> std::result::Result<T, String> {
    match s.parse::<T>() {
        Ok(v) if v == T::default() => Err("must be a positive integer (1 or more), got 0".into()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("must be a positive integer (1 or more), got `{s}`")),
    }
}

/// `--temperature`: a finite number ≥ 0 (0 = greedy where a command samples; training needs > 0).
fn non_negative(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("must be a finite number ≥ 0, got `{s}`")),
    }
}

/// `--top-p`: a probability in (0, 1].
fn probability(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err(format!("must be in (0, 1], got `{s}`")),
    }
}

/// `println!` that returns an error instead of panicking when stdout is closed (`drpo inspect | head`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err(|e| Error::io("<stdout>", e))?
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--device gpu` fails here, before any work, when no GPU is usable (`auto` falls back later with a
/// notice; `cpu` needs nothing). Every command with `--device` calls it first.
fn probe_device(device: Device) -> Result<()> {
    if device == Device::Gpu {
        drpo::gpu::Gpu::new(0)?;
    }
    Ok(())
}

fn run(cmd: Cmd) -> Result<()> {
    // a DRPO_CPU_SIMD the CPU cannot run (or a typo) is an error, not a silent fallback
    drpo::cpu::simd::level_from_env()?;
    drpo::cpu::retain_freed_memory();
    let device = match &cmd {
        Cmd::Logprobs { device, .. } | Cmd::Generate { device, .. } | Cmd::Demo { device, .. } => Some(*device),
        Cmd::Gradcheck { device, .. } => Some(*device),
        Cmd::Train(a) => Some(a.device),
        Cmd::Eval(a) => Some(a.device),
        Cmd::Sft { device, .. } => Some(*device),
        _ => None,
    };
    // options that contradict each other first: they fail the same way on every machine
    if let Cmd::Logprobs { dtype: FloatType::F64, device: Device::Gpu | Device::Sim, .. } = &cmd {
        return Err(Error::input("--dtype f64 runs on the CPU only (the GPU computes in bf16); use --device cpu"));
    }
    if let Some(d) = device {
        probe_device(d)?;
    }
    match cmd {
        Cmd::Inspect { model, batch, prompt_tokens, new_tokens, device_gib } => inspect(&model, batch, prompt_tokens, new_tokens, device_gib),
        Cmd::Logprobs { model, input, out, dtype, device } => match dtype {
            FloatType::F32 => logprobs::<f32>(&model, &input, &out, device),
            // f64 asks for exact numbers: the GPU computes in bf16 (`--device gpu|sim` was refused above)
            FloatType::F64 => logprobs::<f64>(&model, &input, &out, Device::Cpu),
        },
        Cmd::Generate { model, prompt, chat, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, json, device } => {
            let sampling = drpo::sampling::SamplingParams { temperature, top_k, top_p };
            generate_cmd(&model, prompt.as_deref(), chat, prompt_ids, max_new_tokens, sampling, seed, json, device)
        }
        Cmd::Gradcheck { model, seed, samples, device } => gradcheck(model.as_deref(), seed, samples, device),
        Cmd::Objective { input, out } => drpo::rl::objectives::run_objective_file(&input, &out),
        Cmd::Grade { input, out, no_think } => {
            drpo::rl::grader::grade_cases_file(&input, &out, &drpo::rl::grader::GraderConfig { require_think_close: !no_think })
        }
        Cmd::Kernels { arch } => kernels(&arch),
        Cmd::Sft { out, steps, full_only_steps, seed, config, device } => sft(&out, steps, full_only_steps, seed, config.as_deref(), device),
        Cmd::Train(a) => train(*a),
        Cmd::Demo { out, quick, full, device } => {
            use drpo::study::Preset;
            let (preset, folder) = match (quick, full) {
                (true, _) => (Preset::Quick, "runs/demo-quick"),
                // the full sweep contains the default one: sharing the folder reuses its runs
                (_, true) => (Preset::Full, "runs/demo"),
                _ => (Preset::Default, "runs/demo"),
            };
            let out = out.unwrap_or_else(|| PathBuf::from(folder));
            let study = drpo::study::StudyConfig::preset(preset);
            drpo::study::run_study(&study, &out, device, &mut |line| eprintln!("{line}"))?;
            say!("report: {}", out.join("report.md").display());
            Ok(())
        }
        Cmd::Eval(a) => eval(a),
    }
}

fn gib(bytes: f64) -> String {
    format!("{:.3} GiB", bytes / (1u64 << 30) as f64)
}

/// Bytes in the largest binary unit that keeps the number ≥ 1 (B, KiB, MiB, GiB, TiB).
fn size(bytes: u64) -> String {
    let mut x = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if x < 1024.0 {
            return if unit == "B" { format!("{bytes} B") } else { format!("{x:.2} {unit}") };
        }
        x /= 1024.0;
    }
    format!("{x:.2} TiB")
}

/// eos ids of one JSON source: `field` of `dir/file` (an id, a list of ids, or for tokenizer_config a
/// token string resolved through the tokenizer). None when the file or the field is absent.
fn eos_of(dir: &Path, file: &str, tok: Option<&drpo::tokenizer::Tokenizer>) -> Result<Option<Vec<u32>>> {
    let path = dir.join(file);
    if !path.is_file() {
        return Ok(None);
    }
    let v = read_json(&path)?;
    if file == "tokenizer_config.json" {
        let name = match v.get("eos_token") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
            _ => None,
        };
        return Ok(name.map(|n| tok.and_then(|t| t.token_to_id(&n)).into_iter().collect()));
    }
    match v.get("eos_token_id") {
        None | Some(serde_json::Value::Null) => Ok(None),
        x => drpo::config::token_ids(x, &path, "eos_token_id").map(Some),
    }
}

fn inspect(dir: &Path, batch: Option<u64>, prompt_tokens: Option<u64>, new_tokens: Option<u64>, device_gib: u64) -> Result<()> {
    // the loader's own check of the tensor list against the config, from the headers alone
    let cfg = drpo::weights::checked_config(dir)?;
    let layout = drpo::layout::ParamLayout::new(&cfg);
    let tensors = drpo::weights::WeightFiles::open(dir)?.tensors()?;
    let mut dtypes: Vec<String> = tensors.iter().map(|t| t.1.clone()).collect();
    dtypes.sort();
    dtypes.dedup();
    // a corrupt tokenizer.json fails here, as it would for generate / eval / train; a missing one is
    // shown as such. Everything that can fail is read before the first line is printed.
    let tok = drpo::tokenizer::Tokenizer::from_dir_if_present(dir)?;
    let eos = [
        eos_of(dir, "generation_config.json", tok.as_ref())?,
        eos_of(dir, "tokenizer_config.json", tok.as_ref())?,
        eos_of(dir, "config.json", None)?,
    ];
    let n = layout.total as f64;
    say!("model        {}", dir.display());
    say!("layers       {}   hidden {}   mlp {}   vocab {}", cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    say!(
        "attention    {} query heads, {} kv heads (GQA {}:1), head_dim {}, rope theta {}",
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.num_attention_heads / cfg.num_key_value_heads,
        cfg.head_dim,
        cfg.rope_theta
    );
    let ctx = cfg.max_position_embeddings as u64;
    say!("context      {} positions   rms eps {:e}   tied embeddings {}", ctx, cfg.rms_norm_eps, cfg.tie_word_embeddings);
    let show = |x: &Option<Vec<u32>>| x.as_ref().map_or("–".to_string(), |ids| format!("{ids:?}"));
    say!(
        "eos ids      generation_config {}   tokenizer_config {}   config {}   → used {}",
        show(&eos[0]),
        show(&eos[1]),
        show(&eos[2]),
        tok.as_ref().map_or("– (no tokenizer.json)".to_string(), |t| format!("{:?}", t.eos_ids()))
    );
    if let Some(t) = &tok {
        say!("tokenizer    {} ids (the model has {} rows)   chat template {:?}   bos {:?}", t.vocab_size(), cfg.vocab_size, t.chat_family(), cfg.bos_token_id);
    }
    say!("parameters   {} ({:.3} B)   {} tensors in the checkpoint, dtypes {}", layout.total, n / 1e9, tensors.len(), dtypes.join(", "));
    let kv_per_token = 2.0 * cfg.num_hidden_layers as f64 * cfg.kv_dim() as f64;
    say!("memory       weights: {} in bf16, {} in f32, {} in f64", gib(2.0 * n), gib(4.0 * n), gib(8.0 * n));
    say!("             KV cache per token: {} KiB in f32", kv_per_token * 4.0 / 1024.0);
    say!("             training state (f32 params + grads + 2 AdamW moments): {}", gib(16.0 * n));
    // explicit values are positive (the option's rule); the defaults are kept ≥ 1 for tiny contexts
    let b = batch.unwrap_or(8);
    let p = prompt_tokens.unwrap_or_else(|| 1024.min(ctx / 2).max(1));
    let new = new_tokens.unwrap_or_else(|| 8192.min(ctx.saturating_sub(p)).max(1));
    let seq = p.saturating_add(new);
    if seq > ctx {
        say!("             note: {p} + {new} tokens exceed the context of {ctx}: generate / eval / train would refuse");
    }
    let g = drpo::memory::generation(&cfg, 4, b, p, seq);
    say!(
        "             generate / eval, {b} sequences of {p} + {new} tokens (f32): {}  (weights {}, KV cache {}, activations {})",
        gib(g.total() as f64),
        gib(g.weights as f64),
        gib(g.kv_cache as f64),
        gib(g.activations as f64)
    );
    let t = drpo::memory::training(&cfg, 4, b.saturating_mul(seq), seq);
    say!(
        "             train, a chunk of {b} sequences of {p} + {new} tokens (f32): {}  (weights {}, optimizer {}, activations {})",
        gib(t.total() as f64),
        gib(t.weights as f64),
        gib(t.optimizer as f64),
        gib(t.activations as f64)
    );
    say!("             (train also holds the rollout KV cache of questions × G sequences: the generate line with --batch Q·G)");
    if let Some(a) = drpo::memory::available_bytes() {
        say!("             available on this machine: {}", gib(a as f64));
    }
    inspect_device(&cfg, b, p, seq, device_gib)
}

/// The device memory of a DRPO step (`train --device gpu`: bf16 compute copy, f32 master weights,
/// moments and gradient on the device), planned for a device of `device_gib` GiB.
fn inspect_device(cfg: &ModelConfig, batch: u64, prompt: u64, seq: u64, device_gib: u64) -> Result<()> {
    use drpo::gpu::memory::StepPlan;
    let device_bytes = device_gib.saturating_mul(1 << 30);
    let plan = StepPlan::new(cfg, 2, seq, device_bytes);
    let m = &plan.memory;
    say!("device       a DRPO step on a {device_gib} GiB GPU (--device gpu: bf16 compute copy, f32 master weights; --device-gib):");
    say!(
        "             resident {}: weights (bf16) {}, f32 master {}, AdamW m {} and v {}, gradient (f32) {}, tables (rotary, norm scratch) {}",
        size(m.resident()),
        size(m.weights),
        size(m.master),
        size(m.adam_m),
        size(m.adam_v),
        size(m.grads),
        size(m.tables)
    );
    say!(
        "             training, per token: recorded forward {} (attention log-sum-exp {} of it), backward gradients {}; a sequence of {seq} tokens: {}",
        size(m.activations_per_token),
        size(m.lse_per_token),
        size(m.backward_per_token),
        size(m.training_per_token().saturating_mul(seq))
    );
    say!(
        "             generation, per sequence of {seq} tokens: KV cache {} + {} (logits, sampler, one decode row); {batch} sequences: {}",
        size(m.kv_per_token.saturating_mul(seq)),
        size(m.generation_per_sequence),
        size(m.generation_sequence(seq).saturating_mul(batch))
    );
    match plan.free {
        None => say!("             does not fit: the resident state alone exceeds {device_gib} GiB"),
        Some(free) => {
            say!(
                "             left {}: a training chunk of {} tokens ({:.2} sequences), {} sequences generating at once",
                size(free),
                plan.chunk_tokens,
                plan.chunk_tokens as f64 / seq.max(1) as f64,
                plan.generation_sequences
            );
            say!(
                "             {} (a sequence must train in one chunk); generation runs in rounds of {} sequences (the round rule: \
                 15/16 of what is left, the prefill of {prompt}-token prompts counted)",
                if plan.fits() { "fits" } else { "does not fit" },
                drpo::gpu::memory::generation_round(cfg, 2, prompt, seq, free)
            );
        }
    }
    Ok(())
}

/// `drpo logprobs`'s output: row i has len_i − 1 entries.
#[derive(serde::Serialize)]
struct LogprobsOut {
    logprobs: Vec<Vec<f64>>,
}

fn logprobs<T: drpo::cpu::Float>(dir: &Path, input: &Path, out: &Path, device: Device) -> Result<()> {
    let v = read_json(input)?;
    let rows = v.get("sequences").and_then(|s| s.as_array()).ok_or_else(|| Error::json(input, "expected {\"sequences\": [[id, ...], ...]}"))?;
    let cfg = drpo::weights::checked_config(dir)?;
    let vocab = cfg.vocab_size;
    let mut seqs = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        // Error::data names the record (the sequence's index): the text need not repeat it
        let ids = row
            .as_array()
            .ok_or_else(|| Error::data(input, i, "a sequence must be a list of token ids"))?
            .iter()
            .map(|x| x.as_u64().filter(|&t| t <= u32::MAX as u64).map(|t| t as u32))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| Error::data(input, i, "token ids must be non-negative integers"))?;
        if ids.is_empty() {
            return Err(Error::data(input, i, "empty sequence"));
        }
        if let Some((t, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(Error::data(input, i, format!("token id {id} at position {t} is out of range (the model's vocab_size is {vocab})")));
        }
        seqs.push(ids);
    }
    let tokens = seqs.iter().map(|s| s.len() as u64).fold(0u64, u64::saturating_add);
    let elem = std::mem::size_of::<T>() as u64;
    drpo::memory::ensure_fits(&format!("scoring {tokens} tokens on the CPU ({})", T::NAME), &drpo::memory::scoring(&cfg, elem, tokens))?;
    let model = Model::<T>::load(dir)?;
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let engine = Engine::new(device, &model, &mut |n| eprintln!("{n}"))?;
    let batch = drpo::policy::ScoreBatch::sequences(&model.cfg, &refs, 1.0)?;
    let logprobs = engine.generator(&model).score(&batch)?;
    drpo::output::write_json(out, &LogprobsOut { logprobs }, false)
}

/// One warning line when prompts will be rendered with a chat template this tool does not recognise.
fn warn_chat_family(tok: &drpo::tokenizer::Tokenizer) {
    use drpo::tokenizer::ChatFamily;
    match tok.chat_family() {
        ChatFamily::Unrecognised => eprintln!(
            "warning: the chat template is neither ChatML nor DeepSeek-R1; prompts are rendered as ChatML, which may not be what the model was trained on"
        ),
        ChatFamily::NoTemplate => eprintln!("warning: the checkpoint has no chat template; prompts are rendered as ChatML"),
        ChatFamily::ChatMl | ChatFamily::DeepSeekR1 => {}
    }
}

#[allow(clippy::too_many_arguments)]
fn generate_cmd(
    dir: &Path,
    prompt: Option<&str>,
    chat: bool,
    prompt_ids: Option<Vec<u32>>,
    max_new_tokens: usize,
    sampling: drpo::sampling::SamplingParams,
    seed: u64,
    as_json: bool,
    device: Device,
) -> Result<()> {
    let cfg = drpo::weights::checked_config(dir)?;
    let max_pos = cfg.max_position_embeddings as u64;
    let max_new = max_new_tokens as u64;
    // up front, with checked sums: a huge --max-new-tokens must not wrap around and pass
    let (prompt_len, total) = match &prompt_ids {
        Some(ids) => (ids.len() as u64, (ids.len() as u64).checked_add(max_new)),
        // a text's length is known once tokenized (checked again then); it has at least one token
        None => {
            let p = 1024.min(max_pos.saturating_sub(max_new)).max(1);
            (p, p.checked_add(max_new))
        }
    };
    let total = match total {
        Some(t) if t <= max_pos => t,
        _ => {
            return Err(Error::input(format!(
                "--max-new-tokens {max_new_tokens} with a prompt of {} tokens exceeds max_position_embeddings = {max_pos}",
                if prompt_ids.is_some() { prompt_len.to_string() } else { "at least 1".to_string() }
            )))
        }
    };
    let est = drpo::memory::generation(&cfg, 4, 1, prompt_len, total);
    drpo::memory::ensure_fits("generation on the CPU (f32 weights, KV cache)", &est)?;
    // a corrupt tokenizer.json is an error; a missing one is one only where text is needed
    let tokenizer = drpo::tokenizer::Tokenizer::from_dir_if_present(dir)?;
    let ids = match (prompt, prompt_ids) {
        (_, Some(ids)) => ids,
        (Some(text), None) => {
            let tok = tokenizer
                .as_ref()
                .ok_or_else(|| Error::input(format!("--prompt needs the model's tokenizer, and {} has no tokenizer.json (give --prompt-ids)", dir.display())))?;
            let text = if chat {
                warn_chat_family(tok);
                tok.apply_chat_template(&[drpo::tokenizer::Message::user(text)], true)?
            } else {
                text.to_string()
            };
            tok.encode(&text)?
        }
        (None, None) => return Err(Error::input("give --prompt or --prompt-ids")),
    };
    let model = Model::<f32>::load(dir)?;
    let engine = Engine::new(device, &model, &mut |n| eprintln!("{n}"))?;
    let mut eos = model.cfg.eos_token_ids.clone();
    if let Some(tok) = &tokenizer {
        eos.extend_from_slice(tok.eos_ids());
    }
    eos.sort_unstable();
    eos.dedup();
    let opts = drpo::generate::GenerateOptions { max_new_tokens, sampling, seed, eos_ids: eos, stream_offset: 0 };
    let out = engine.generator(&model).generate(std::slice::from_ref(&ids), &opts)?;
    let generated = &out[0].tokens;
    let text = match &tokenizer {
        Some(tok) => {
            let (text, skipped) = tok.decode_lenient(generated, false)?;
            if skipped > 0 {
                eprintln!("note: {skipped} generated ids are not in the tokenizer ({} ids); the text leaves them out", tok.vocab_size());
            }
            Some(text)
        }
        None => {
            eprintln!("note: {} has no tokenizer.json: the generated ids are not decoded", dir.display());
            None
        }
    };
    if as_json {
        // "text": null (not "") when there is no tokenizer to decode with
        say!("{}", json!({ "prompt_ids": ids, "generated_ids": generated, "text": text }));
    } else {
        match text {
            Some(text) => say!("{text}"),
            None => say!("{}", generated.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
        }
    }
    Ok(())
}

fn gradcheck(model: Option<&Path>, seed: u64, samples: usize, device: Device) -> Result<()> {
    let rows = match device {
        Device::Cpu => drpo::gradcheck::gradcheck(model, None, seed, samples)?,
        Device::Gpu | Device::Sim => {
            let gpu = if device == Device::Sim { drpo::gpu::Gpu::sim()? } else { drpo::gpu::Gpu::new(0)? };
            say!("device ({}) f32 gradient vs the CPU's f64 gradient, every coordinate", gpu.device_name);
            drpo::gradcheck::device_gradcheck(std::sync::Arc::new(gpu), model, None, seed)?
        }
        // the two checks answer different questions: one must be named
        Device::Auto => return Err(Error::input("gradcheck --device takes cpu, gpu or sim (auto would pick what is checked)")),
    };
    let tolerance = rows.first().map_or(drpo::gradcheck::TOLERANCE, |r| r.tolerance);
    say!("{:<55} {:>8} {:>12} {:>12}  result", "tensor", "checked", "max abs err", "max rel err");
    let mut failed = 0;
    for r in &rows {
        say!(
            "{:<55} {:>8} {:>12.3e} {:>12.3e}  {}",
            r.tensor,
            r.checked,
            r.max_abs_err,
            r.max_rel_err,
            if r.pass { "pass" } else { "FAIL" }
        );
        failed += (!r.pass) as usize;
    }
    if failed > 0 {
        return Err(Error::input(format!("gradcheck: {failed} of {} tensors failed (tolerance {tolerance:e})", rows.len())));
    }
    say!("all {} tensors pass (relative tolerance {tolerance:e})", rows.len());
    Ok(())
}

fn kernels(archs: &[String]) -> Result<()> {
    // compiling needs NVRTC only: no driver, no GPU, and no --device option to suggest
    if !drpo::gpu::nvrtc_available() {
        return Err(Error::NoNvrtc {
            why: "libnvrtc.so.13 was not found\n  hint: run `eval \"$(bash .ci/install-nvrtc.sh)\"` in this shell, or put the \
                  CUDA 13 lib folder on LD_LIBRARY_PATH"
                .into(),
        });
    }
    say!("{:<10} {:<28} {:<6} {:>5} {:>10} {:>7} {:>12}", "family", "kernel", "arch", "regs", "smem B", "stack", "spill st/ld");
    for arch in archs {
        for r in drpo::gpu::compile_all(arch)? {
            say!(
                "{:<10} {:<28} {:<6} {:>5} {:>10} {:>7} {:>6}/{:<5}",
                r.family, r.kernel, r.arch, r.registers, r.shared_bytes, r.stack_bytes, r.spill_store_bytes, r.spill_load_bytes
            );
        }
    }
    Ok(())
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_string());
    bar
}

fn json_overrides<T: serde::Serialize + serde::de::DeserializeOwned>(base: T, file: Option<&Path>) -> Result<(T, serde_json::Value)> {
    match file {
        None => Ok((base, json!({}))),
        Some(file) => drpo::settings::overrides_from_file(base, file),
    }
}

fn sft(out: &Path, steps: Option<usize>, full_only_steps: Option<usize>, seed: Option<u64>, config: Option<&Path>, device: Device) -> Result<()> {
    let (mut cfg, _) = json_overrides(drpo::sft::SftConfig::default(), config)?;
    if let Some(s) = steps {
        cfg.steps = s;
    }
    if let Some(s) = full_only_steps {
        cfg.full_only_steps = s;
    }
    if let Some(s) = seed {
        cfg.seed = s;
    }
    // at most: the full-only phase usually ends early
    let bar = progress(cfg.full_only_steps.saturating_add(cfg.steps) as u64, "sft");
    let on_step = &mut |s: &drpo::sft::SftStep| {
        bar.set_position(s.step as u64 + 1);
        bar.set_message(format!("loss {:.4}", s.loss));
    };
    drpo::sft::run_sft_with_notices(&cfg, out, device, on_step, &mut |line| eprintln!("{line}"))?;
    bar.finish();
    eprintln!("base model written to {}", out.display());
    Ok(())
}

/// The toy task settings a model was fine-tuned for (its sft_config.json), or the defaults.
fn toy_task_of(model: &Path) -> Result<drpo::sft::SftConfig> {
    let path = model.join("sft_config.json");
    if path.exists() {
        serde_json::from_value(read_json(&path)?).map_err(|e| Error::json(&path, e))
    } else {
        Ok(drpo::sft::SftConfig::default())
    }
}

fn think_rule(think: Think, tok: &drpo::tokenizer::Tokenizer) -> drpo::rl::grader::GraderConfig {
    let on = match think {
        Think::On => true,
        Think::Off => false,
        Think::Auto => tok.opens_think_block(),
    };
    drpo::rl::grader::GraderConfig { require_think_close: on }
}

/// The canonical form of a path for the run record (the path as given when it cannot be resolved).
fn canonical(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

/// The toy task's generation budget for a model fine-tuned by `drpo sft`.
fn toy_budget(model: &Path) -> Result<usize> {
    let sft = toy_task_of(model)?;
    Ok(drpo::task::trace_tokens(sft.max_level, 3 * sft.max_level + 8))
}

/// The problems of a command: a --data file (its first `limit` problems; for training, prompts
/// over `max_prompt_tokens` dropped with a line saying how many), or the toy task's split.
fn load_env(
    model: &Path,
    data: Option<&Path>,
    limit: Option<usize>,
    split: drpo::task::Split,
    tok: &drpo::tokenizer::Tokenizer,
    think: Think,
    max_prompt_tokens: Option<usize>,
) -> Result<Box<dyn drpo::rl::env::Environment>> {
    if limit == Some(0) {
        return Err(Error::input("--limit 0 selects no problem; give K ≥ 1 or leave --limit out"));
    }
    match data {
        Some(file) => {
            let mut problems = drpo::data::load_problems(file)?;
            if let Some(k) = limit {
                problems.truncate(k);
            }
            use drpo::rl::env::Environment;
            let max_pos = ModelConfig::from_dir(model)?.max_position_embeddings;
            let mut env = drpo::rl::env::MathEnv::new(problems, tok, think_rule(think, tok))?;
            // training grades decode(prompt + response), evaluation the response alone (SPEC §8.2)
            env.grade_with_prompt = matches!(split, drpo::task::Split::Train);
            if let Some(max) = max_prompt_tokens {
                let before = env.len();
                let dropped = env.retain_prompts_up_to(max);
                if dropped > 0 {
                    eprintln!("dropped {dropped} of {before} problems whose prompt has more than {max} tokens (max_prompt_tokens)");
                }
                if env.is_empty() {
                    return Err(Error::input(format!("{}: no problem has a prompt of at most {max} tokens", file.display())));
                }
            }
            if let Some(i) = (0..env.len()).find(|&i| env.prompt(i).len() >= max_pos) {
                return Err(Error::data(
                    file,
                    i,
                    format!("the prompt has {} tokens, not less than max_position_embeddings = {max_pos}", env.prompt(i).len()),
                ));
            }
            Ok(Box::new(env))
        }
        None => {
            let sft = toy_task_of(model)?;
            let n = limit.unwrap_or(match split {
                drpo::task::Split::Train => sft.n_train,
                drpo::task::Split::Eval => 200,
            });
            let examples = drpo::task::generate_split(&sft.task(), split, n)?;
            Ok(Box::new(drpo::rl::env::ToyEnv::new(examples, tok)?))
        }
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let tok = drpo::tokenizer::Tokenizer::from_dir(&a.model)?;
    warn_chat_family(&tok);
    let mcfg = drpo::weights::checked_config(&a.model)?;
    let base = if a.data.is_some() {
        drpo::rl::trainer::TrainConfig { objective: a.objective, ..Default::default() }
    } else {
        drpo::study::toy_train_config(a.objective, toy_budget(&a.model)?)
    };
    let (mut cfg, from_file) = json_overrides(base, a.config.as_deref())?;
    cfg.objective = a.objective;
    macro_rules! set {
        ($($opt:ident => $field:expr),*) => { $(if let Some(v) = a.$opt { $field = v; })* };
    }
    set!(steps => cfg.steps, lambda => cfg.hyper.lambda, tau => cfg.hyper.tau, lr => cfg.lr,
         warmup_steps => cfg.warmup_steps, lr_decay => cfg.lr_decay, min_lr => cfg.min_lr,
         weight_decay => cfg.weight_decay, grad_clip => cfg.grad_clip,
         questions_per_step => cfg.questions_per_step, group_size => cfg.group_size,
         mini_batch_questions => cfg.mini_batch_questions, chunk_questions => cfg.chunk_questions,
         inner_epochs => cfg.inner_epochs, temperature => cfg.temperature, top_p => cfg.top_p,
         max_new_tokens => cfg.max_new_tokens, max_prompt_tokens => cfg.max_prompt_tokens,
         save_every => cfg.save_every, seed => cfg.seed);
    if let Some(alpha) = a.alpha {
        cfg.hyper.grpo_alpha = alpha;
        cfg.hyper.rloo_alpha = alpha;
    }
    cfg.source = drpo::rl::trainer::RunSource { model: Some(canonical(&a.model)), data: a.data.as_deref().map(canonical), limit: a.limit };
    cfg.validate()?;
    let max_prompt_filter = a.data.is_some().then_some(cfg.max_prompt_tokens);
    let env = load_env(&a.model, a.data.as_deref(), a.limit, drpo::task::Split::Train, &tok, Think::Auto, max_prompt_filter)?;
    let max_prompt = (0..env.len()).map(|i| env.prompt(i).len()).max().unwrap_or(0);
    // the default budget (SPEC's 8192, or the toy's) is capped by the context, as in eval
    let room = mcfg.max_position_embeddings.saturating_sub(max_prompt);
    if a.max_new_tokens.is_none() && from_file.get("max_new_tokens").is_none() && cfg.max_new_tokens > room {
        eprintln!("max_new_tokens: {} capped to {room} (context {} − longest prompt {max_prompt})", cfg.max_new_tokens, mcfg.max_position_embeddings);
        cfg.max_new_tokens = room;
    }
    if max_prompt.checked_add(cfg.max_new_tokens).is_none_or(|t| t > mcfg.max_position_embeddings) {
        return Err(Error::input(format!(
            "max_new_tokens = {} after the longest prompt ({max_prompt} tokens) exceeds max_position_embeddings = {}",
            cfg.max_new_tokens, mcfg.max_position_embeddings
        )));
    }
    cfg.validate()?;
    let needs = drpo::engine::TrainingNeeds::rl(&mcfg, &cfg, max_prompt as u64);
    let model = Model::<f32>::load(&a.model)?;
    match Trainee::new(a.device, model, &needs, &mut |n| eprintln!("{n}"))? {
        Trainee::Cpu(m) => train_policy(m, cfg, env.as_ref(), &tok, &a),
        Trainee::Gpu(m) => train_policy(m, cfg, env.as_ref(), &tok, &a),
    }
}

/// `drpo train`'s run with the policy `--device` chose.
fn train_policy<P: drpo::policy::Policy>(
    model: P,
    cfg: drpo::rl::trainer::TrainConfig,
    env: &dyn drpo::rl::env::Environment,
    tok: &drpo::tokenizer::Tokenizer,
    a: &TrainArgs,
) -> Result<()> {
    let mut trainer = drpo::rl::trainer::Trainer::new(cfg, model, env, tok, &a.out, &a.model)?;
    for line in &trainer.notices {
        eprintln!("note: {line}");
    }
    let bar = progress(trainer.cfg.steps as u64, "train");
    bar.set_position(trainer.step() as u64);
    trainer.run(&mut |m| {
        bar.set_position(m.step as u64 + 1);
        let kl = m.kl_last.map_or("–".to_string(), |k| format!("{k:.1e}"));
        bar.set_message(format!("acc {:.3} len {:.1} kl {kl}", m.accuracy, m.mean_length));
    })?;
    bar.finish();
    eprintln!("run written to {}", a.out.display());
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    // --out is locked for the whole evaluation (train's and sft's run lock): a second eval into the
    // same folder is refused before any work, instead of racing this one's renames
    let _lock = match &a.out {
        Some(out) => {
            let (lock, stale) = drpo::runlock::RunLock::acquire(out, "drpo eval")?;
            if let Some(note) = stale {
                eprintln!("note: {note}");
            }
            Some(lock)
        }
        None => None,
    };
    let tok = drpo::tokenizer::Tokenizer::from_dir(&a.model)?;
    warn_chat_family(&tok);
    let env = load_env(&a.model, a.data.as_deref(), a.limit, drpo::task::Split::Eval, &tok, a.think, None)?;
    let mcfg = drpo::weights::checked_config(&a.model)?;
    let max_prompt = (0..env.len()).map(|i| env.prompt(i).len()).max().unwrap_or(0) as u64;
    // default: SPEC's 8192 (the toy budget for the toy task), capped by the model's context
    let room = mcfg.max_position_embeddings.saturating_sub(max_prompt as usize);
    let default_budget = if a.data.is_some() { 8192 } else { toy_budget(&a.model)? };
    let max_new = a.max_new_tokens.unwrap_or(default_budget.min(room));
    let n = a.n;
    let responses = env.len().checked_mul(n).filter(|&r| r <= drpo::eval::MAX_RESPONSES).ok_or_else(|| {
        Error::input(format!("--n {n} × {} problems: more than {} responses (lower --n or --limit)", env.len(), drpo::eval::MAX_RESPONSES))
    })?;
    // the batches eval really generates: at most --batch-size sequences, at most every response
    let batch = a.batch_size.min(responses) as u64;
    let est = drpo::memory::generation(&mcfg, 4, batch, max_prompt, max_prompt.saturating_add(max_new as u64));
    drpo::memory::ensure_fits("evaluation on the CPU (f32 weights, KV cache of one batch)", &est)?;
    let model = Model::<f32>::load(&a.model)?;
    let engine = Engine::new(a.device, &model, &mut |n| eprintln!("{n}"))?;
    let opts = drpo::eval::EvalOptions {
        n_samples: n,
        max_new_tokens: max_new,
        sampling: drpo::sampling::SamplingParams { temperature: a.temperature, top_k: 0, top_p: a.top_p },
        seed: a.seed,
        batch_size: a.batch_size,
    };
    let bar = progress(responses as u64, "eval");
    // every response, one JSON line each, streamed to a temp file renamed at the end
    let mut lines = match &a.out {
        Some(out) => Some(drpo::error::AtomicWriter::create(&out.join("responses.jsonl"))?),
        None => None,
    };
    let (report, _) = drpo::eval::eval_env(engine.generator(&model), env.as_ref(), &tok, &opts, &mut |records, done, _| {
        if let Some(lines) = lines.as_mut() {
            for r in records {
                let line = drpo::output::json_text("responses.jsonl", r, false)?;
                lines.write(format!("{line}\n").as_bytes())?;
            }
        }
        bar.set_position(done as u64);
        Ok(())
    })?;
    bar.finish();
    if let Some(lines) = lines {
        lines.finish()?;
    }
    // the table and eval.json print the report's numbers: none may be NaN or ±inf
    drpo::output::ensure_finite("the evaluation report", &report)?;
    let table = drpo::eval::markdown_table(&report);
    say!("{table}");
    if let Some(out) = a.out {
        let doc = json!({
            "model": a.model, "data": a.data, "options": opts, "device": engine.name(),
            "overall": report.overall, "per_level": report.per_level,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::json(&out, e))?;
        write_atomic(out.join("eval.json"), text.as_bytes())?;
        write_atomic(out.join("eval.md"), table.as_bytes())?;
    }
    Ok(())
}
