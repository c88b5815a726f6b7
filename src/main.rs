//! `drpo`: the command-line tool. A thin layer over the library; the only place that prints errors.

use clap::{Parser, Subcommand, ValueEnum};
use drpo::config::ModelConfig;
use drpo::error::{read_json, write_atomic, Error, Result};
use drpo::engine::{Device, Engine};
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
    /// Config summary, parameter count, dtypes and a memory estimate of a checkpoint.
    Inspect {
        #[arg(long)]
        model: PathBuf,
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
        /// CPU float type (the GPU runs bf16)
        #[arg(long, value_enum, default_value = "f32")]
        dtype: FloatType,
        #[arg(long, value_enum, default_value = "auto")]
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
        #[arg(long, requires = "prompt")]
        chat: bool,
        /// Prompt token ids, comma separated
        #[arg(long, value_delimiter = ',')]
        prompt_ids: Option<Vec<u32>>,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// 0 = greedy
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// 0 = off
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print {"prompt_ids", "generated_ids", "text"} as JSON
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value = "auto")]
        device: Device,
    },
    /// f64 analytic gradients vs central differences for every parameter tensor.
    Gradcheck {
        /// checkpoint folder; without it, a randomly configured Qwen2 model
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// coordinates checked per tensor
        #[arg(long, default_value_t = 8)]
        samples: usize,
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
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        steps: Option<usize>,
        #[arg(long)]
        seed: Option<u64>,
        /// JSON file with any SftConfig fields
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// RL training (DRPO and the baselines) on the toy task or a math problem set.
    Train(TrainArgs),
    /// The toy DRPO study end to end: SFT base, RL with DRPO / DisCO / GRPO-LP, evaluation, report.
    Demo {
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// a ≈ 3-minute version (one seed, fewer steps, easier task)
        #[arg(long)]
        quick: bool,
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
    /// run folder: train_config.json, metrics.jsonl, checkpoint/ (an existing run there is resumed)
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "drpo")]
    objective: ObjectiveKind,
    /// JSON file with any TrainConfig fields (CLI options override it)
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    lambda: Option<f64>,
    #[arg(long)]
    tau: Option<f64>,
    #[arg(long)]
    alpha: Option<f64>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    questions_per_step: Option<usize>,
    #[arg(long)]
    group_size: Option<usize>,
    #[arg(long)]
    mini_batch_questions: Option<usize>,
    #[arg(long)]
    chunk_questions: Option<usize>,
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    max_new_tokens: Option<usize>,
    #[arg(long)]
    save_every: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// use only the first K problems
    #[arg(long)]
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
    #[arg(long, default_value_t = 1)]
    n: usize,
    #[arg(long)]
    max_new_tokens: Option<usize>,
    #[arg(long, default_value_t = 0.6)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// evaluate only the first K problems
    #[arg(long)]
    limit: Option<usize>,
    /// folder for eval.json and eval.md
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// sequences generated together
    #[arg(long, default_value_t = 64)]
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

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Inspect { model } => inspect(&model),
        Cmd::Logprobs { model, input, out, dtype, device } => match dtype {
            FloatType::F32 => logprobs::<f32>(&model, &input, &out, device),
            FloatType::F64 => logprobs::<f64>(&model, &input, &out, device),
        },
        Cmd::Generate { model, prompt, chat, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, json, device } => {
            let sampling = drpo::sampling::SamplingParams { temperature, top_k, top_p };
            generate_cmd(&model, prompt.as_deref(), chat, prompt_ids, max_new_tokens, sampling, seed, json, device)
        }
        Cmd::Gradcheck { model, seed, samples } => gradcheck(model.as_deref(), seed, samples),
        Cmd::Objective { input, out } => drpo::rl::objectives::run_objective_file(&input, &out),
        Cmd::Grade { input, out, no_think } => {
            drpo::rl::grader::grade_cases_file(&input, &out, &drpo::rl::grader::GraderConfig { require_think_close: !no_think })
        }
        Cmd::Kernels { arch } => kernels(&arch),
        Cmd::Sft { out, steps, seed, config } => sft(&out, steps, seed, config.as_deref()),
        Cmd::Train(a) => train(a),
        Cmd::Demo { out, quick, device } => {
            let study = drpo::study::StudyConfig::new(quick);
            drpo::study::run_study(&study, &out, device, &mut |line| eprintln!("{line}"))?;
            println!("report: {}", out.join("report.md").display());
            Ok(())
        }
        Cmd::Eval(a) => eval(a),
    }
}

fn gib(bytes: f64) -> String {
    format!("{:.3} GiB", bytes / (1u64 << 30) as f64)
}

fn inspect(dir: &Path) -> Result<()> {
    let cfg = ModelConfig::from_dir(dir)?;
    let layout = drpo::layout::ParamLayout::new(&cfg);
    let files = drpo::weights::WeightFiles::open(dir)?;
    let tensors = files.tensors()?;
    let mut dtypes: Vec<String> = tensors.iter().map(|t| t.1.clone()).collect();
    dtypes.sort();
    dtypes.dedup();
    let n = layout.total as f64;
    println!("model        {}", dir.display());
    println!("layers       {}   hidden {}   mlp {}   vocab {}", cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    println!(
        "attention    {} query heads, {} kv heads (GQA {}:1), head_dim {}, rope theta {}",
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.num_attention_heads / cfg.num_key_value_heads,
        cfg.head_dim,
        cfg.rope_theta
    );
    println!("context      {} positions   rms eps {:e}   tied embeddings {}", cfg.max_position_embeddings, cfg.rms_norm_eps, cfg.tie_word_embeddings);
    println!("eos ids      {:?}   bos {:?}", cfg.eos_token_ids, cfg.bos_token_id);
    println!("parameters   {} ({:.3} B)   {} tensors in the checkpoint, dtypes {}", layout.total, n / 1e9, tensors.len(), dtypes.join(", "));
    let kv_per_token = 2.0 * cfg.num_hidden_layers as f64 * cfg.kv_dim() as f64;
    println!("memory       weights: {} in bf16, {} in f32, {} in f64", gib(2.0 * n), gib(4.0 * n), gib(8.0 * n));
    println!("             KV cache per token: {} KiB in f32", kv_per_token * 4.0 / 1024.0);
    println!("             training state (f32 params + grads + 2 AdamW moments): {}", gib(16.0 * n));
    let g = drpo::memory::generation(&cfg, 4, 8, 1024, 1024 + 8192);
    println!("             CPU generation, 8 sequences of 1024 + 8192 tokens (f32): {}", gib(g.total() as f64));
    let t = drpo::memory::training(&cfg, 4, 32 * (1024 + 8192), 1024 + 8192);
    println!("             CPU training chunk, 4 questions × 8 responses of 1024 + 8192 tokens (f32): {}", gib(t.total() as f64));
    if let Some(a) = drpo::memory::available_bytes() {
        println!("             available on this machine: {}", gib(a as f64));
    }
    Ok(())
}

fn logprobs<T: drpo::cpu::Float>(dir: &Path, input: &Path, out: &Path, device: Device) -> Result<()> {
    let v = read_json(input)?;
    let rows = v.get("sequences").and_then(|s| s.as_array()).ok_or_else(|| Error::json(input, "expected {\"sequences\": [[id, ...], ...]}"))?;
    let mut seqs = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
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
        seqs.push(ids);
    }
    let model = Model::<T>::load(dir)?;
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let engine = Engine::new(device, &model, &mut |n| eprintln!("{n}"))?;
    let lp = engine.score(&model, &refs, 1.0)?;
    let text = serde_json::to_vec(&json!({ "logprobs": lp })).map_err(|e| Error::json(out, e))?;
    write_atomic(out, &text)
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
    let cfg = ModelConfig::from_dir(dir)?;
    let prompt_len = prompt_ids.as_ref().map_or(1024, Vec::len) as u64;
    let est = drpo::memory::generation(&cfg, 4, 1, prompt_len, prompt_len + max_new_tokens as u64);
    drpo::memory::ensure_fits("generation on the CPU (f32 weights, KV cache)", &est)?;
    let model = Model::<f32>::load(dir)?;
    let engine = Engine::new(device, &model, &mut |n| eprintln!("{n}"))?;
    let tokenizer = drpo::tokenizer::Tokenizer::from_dir(dir);
    let ids = match (prompt, prompt_ids) {
        (_, Some(ids)) => ids,
        (Some(text), None) => {
            let tok = tokenizer.as_ref().map_err(|e| Error::input(format!("--prompt needs the model's tokenizer: {e}")))?;
            let text = if chat {
                tok.apply_chat_template(&[drpo::tokenizer::Message::user(text)], true)?
            } else {
                text.to_string()
            };
            tok.encode(&text)?
        }
        (None, None) => return Err(Error::input("give --prompt or --prompt-ids")),
    };
    let mut eos = model.cfg.eos_token_ids.clone();
    if let Ok(tok) = &tokenizer {
        eos.extend_from_slice(tok.eos_ids());
    }
    eos.sort_unstable();
    eos.dedup();
    let opts = drpo::generate::GenerateOptions { max_new_tokens, sampling, seed, eos_ids: eos, stream_offset: 0 };
    let out = engine.generate(&model, std::slice::from_ref(&ids), &opts)?;
    let generated = &out[0].tokens;
    let text = match &tokenizer {
        Ok(tok) => tok.decode_lossy(generated, false)?, // `generated_ids` has every id
        Err(_) => String::new(),
    };
    if as_json {
        println!("{}", json!({ "prompt_ids": ids, "generated_ids": generated, "text": text }));
    } else {
        println!("{text}");
    }
    Ok(())
}

fn gradcheck(model: Option<&Path>, seed: u64, samples: usize) -> Result<()> {
    let rows = drpo::gradcheck::gradcheck(model, None, seed, samples)?;
    println!("{:<55} {:>8} {:>12} {:>12}  result", "tensor", "checked", "max abs err", "max rel err");
    let mut failed = 0;
    for r in &rows {
        println!(
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
        return Err(Error::input(format!("gradcheck: {failed} of {} tensors failed (tolerance {:e})", rows.len(), drpo::gradcheck::TOLERANCE)));
    }
    println!("all {} tensors pass (relative tolerance {:e})", rows.len(), drpo::gradcheck::TOLERANCE);
    Ok(())
}

fn kernels(archs: &[String]) -> Result<()> {
    println!("{:<10} {:<28} {:<6} {:>5} {:>10} {:>7} {:>12}", "family", "kernel", "arch", "regs", "smem B", "stack", "spill st/ld");
    for arch in archs {
        for r in drpo::gpu::compile_all(arch)? {
            println!(
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

fn json_overrides<T: serde::Serialize + serde::de::DeserializeOwned>(base: T, file: Option<&Path>) -> Result<T> {
    let Some(file) = file else { return Ok(base) };
    let mut v = serde_json::to_value(&base).map_err(|e| Error::json(file, e))?;
    let patch = read_json(file)?;
    let obj = patch.as_object().ok_or_else(|| Error::json(file, "expected a JSON object of settings"))?;
    for (k, val) in obj {
        let target = v.as_object_mut().ok_or_else(|| Error::json(file, "settings are not an object"))?;
        if !target.contains_key(k) {
            return Err(Error::config(file, k.clone(), "unknown setting"));
        }
        target.insert(k.clone(), val.clone());
    }
    serde_json::from_value(v).map_err(|e| Error::json(file, e))
}

fn sft(out: &Path, steps: Option<usize>, seed: Option<u64>, config: Option<&Path>) -> Result<()> {
    let mut cfg = json_overrides(drpo::sft::SftConfig::default(), config)?;
    if let Some(s) = steps {
        cfg.steps = s;
    }
    if let Some(s) = seed {
        cfg.seed = s;
    }
    let bar = progress(cfg.steps as u64, "sft");
    drpo::sft::run_sft(&cfg, out, &mut |s| {
        bar.set_position(s.step as u64 + 1);
        bar.set_message(format!("loss {:.4}", s.loss));
    })?;
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

fn load_env(
    model: &Path,
    data: Option<&Path>,
    limit: Option<usize>,
    split: drpo::task::Split,
    tok: &drpo::tokenizer::Tokenizer,
    think: Think,
) -> Result<(Box<dyn drpo::rl::env::Environment>, usize)> {
    match data {
        Some(file) => {
            let mut problems = drpo::data::load_problems(file)?;
            if let Some(k) = limit {
                problems.truncate(k);
            }
            use drpo::rl::env::Environment;
            let max_pos = ModelConfig::from_dir(model)?.max_position_embeddings;
            let env = drpo::rl::env::MathEnv::new(problems, tok, think_rule(think, tok))?;
            if let Some(i) = (0..env.len()).find(|&i| env.prompt(i).len() >= max_pos) {
                return Err(Error::data(
                    file,
                    i,
                    format!("the prompt has {} tokens, not less than max_position_embeddings = {max_pos}", env.prompt(i).len()),
                ));
            }
            Ok((Box::new(env), 1024))
        }
        None => {
            let sft = toy_task_of(model)?;
            let n = limit.unwrap_or(match split {
                drpo::task::Split::Train => sft.n_train,
                drpo::task::Split::Eval => 200,
            });
            let examples = drpo::task::generate_split(&sft.task(), split, n)?;
            let budget = drpo::task::trace_tokens(sft.max_level, 3 * sft.max_level + 8);
            Ok((Box::new(drpo::rl::env::ToyEnv::new(examples, tok)?), budget))
        }
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let tok = drpo::tokenizer::Tokenizer::from_dir(&a.model)?;
    let (env, toy_budget) = load_env(&a.model, a.data.as_deref(), a.limit, drpo::task::Split::Train, &tok, Think::Auto)?;
    let base = if a.data.is_some() {
        drpo::rl::trainer::TrainConfig { objective: a.objective, ..Default::default() }
    } else {
        drpo::study::toy_train_config(a.objective, toy_budget)
    };
    let mut cfg = json_overrides(base, a.config.as_deref())?;
    cfg.objective = a.objective;
    macro_rules! set {
        ($($opt:ident => $field:expr),*) => { $(if let Some(v) = a.$opt { $field = v; })* };
    }
    set!(steps => cfg.steps, lambda => cfg.hyper.lambda, tau => cfg.hyper.tau, lr => cfg.lr,
         questions_per_step => cfg.questions_per_step, group_size => cfg.group_size,
         mini_batch_questions => cfg.mini_batch_questions, chunk_questions => cfg.chunk_questions,
         temperature => cfg.temperature, max_new_tokens => cfg.max_new_tokens, save_every => cfg.save_every, seed => cfg.seed);
    if let Some(alpha) = a.alpha {
        cfg.hyper.grpo_alpha = alpha;
        cfg.hyper.rloo_alpha = alpha;
    }
    let mcfg = ModelConfig::from_dir(&a.model)?;
    let max_prompt = (0..env.len()).map(|i| env.prompt(i).len()).max().unwrap_or(0) as u64;
    let seq = max_prompt + cfg.max_new_tokens as u64;
    let rows = (cfg.chunk_questions * cfg.group_size) as u64 * seq;
    let mut est = drpo::memory::training(&mcfg, 4, rows, seq);
    est.kv_cache = drpo::memory::generation(&mcfg, 4, (cfg.questions_per_step * cfg.group_size) as u64, max_prompt, seq).kv_cache;
    drpo::memory::ensure_fits("training on the CPU (weights, optimizer, one chunk's activations, rollout KV cache)", &est)?;
    let model = Model::<f32>::load(&a.model)?;
    let engine = Engine::new(a.device, &model, &mut |n| eprintln!("{n}"))?;
    let mut trainer = drpo::rl::trainer::Trainer::new(cfg, model, env.as_ref(), &tok, &a.out, &a.model, engine)?;
    let bar = progress(trainer.cfg.steps as u64, "train");
    bar.set_position(trainer.step() as u64);
    trainer.run(&mut |m| {
        bar.set_position(m.step as u64 + 1);
        bar.set_message(format!("acc {:.3} len {:.1} kl {:.1e}", m.accuracy, m.mean_length, m.kl_last));
    })?;
    bar.finish();
    eprintln!("run written to {}", a.out.display());
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let tok = drpo::tokenizer::Tokenizer::from_dir(&a.model)?;
    let (env, toy_budget) = load_env(&a.model, a.data.as_deref(), a.limit, drpo::task::Split::Eval, &tok, a.think)?;
    let mcfg = ModelConfig::from_dir(&a.model)?;
    let max_prompt = (0..env.len()).map(|i| env.prompt(i).len()).max().unwrap_or(0) as u64;
    // default: SPEC's 8192 (the toy budget for the toy task), capped by the model's context
    let room = mcfg.max_position_embeddings.saturating_sub(max_prompt as usize);
    let max_new = a.max_new_tokens.unwrap_or(if a.data.is_some() { 8192 } else { toy_budget }.min(room));
    let est = drpo::memory::generation(&mcfg, 4, a.batch_size as u64, max_prompt, max_prompt + max_new as u64);
    drpo::memory::ensure_fits("evaluation on the CPU (f32 weights, KV cache of one batch)", &est)?;
    let model = Model::<f32>::load(&a.model)?;
    let engine = Engine::new(a.device, &model, &mut |n| eprintln!("{n}"))?;
    let opts = drpo::eval::EvalOptions {
        n_samples: a.n.max(1),
        max_new_tokens: max_new,
        sampling: drpo::sampling::SamplingParams { temperature: a.temperature, top_k: 0, top_p: a.top_p },
        seed: a.seed,
        batch_size: a.batch_size,
    };
    let bar = progress((env.len() * opts.n_samples) as u64, "eval");
    let (report, _) = drpo::eval::eval_env(&engine, &model, env.as_ref(), &tok, &opts, &mut |done, _| bar.set_position(done as u64))?;
    bar.finish();
    let table = drpo::eval::markdown_table(&report);
    println!("{table}");
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
