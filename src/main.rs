//! `drpo`: the command-line tool. A thin layer over the library; the only place that prints errors.

use clap::{Parser, Subcommand, ValueEnum};
use drpo::config::ModelConfig;
use drpo::error::{read_json, write_atomic, Error, Result};
use drpo::model::Model;
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
        #[arg(long, value_enum, default_value = "f32")]
        dtype: FloatType,
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
    },
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
        Cmd::Logprobs { model, input, out, dtype } => match dtype {
            FloatType::F32 => logprobs::<f32>(&model, &input, &out),
            FloatType::F64 => logprobs::<f64>(&model, &input, &out),
        },
        Cmd::Generate { model, prompt, chat, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, json } => {
            let sampling = drpo::sampling::SamplingParams { temperature, top_k, top_p };
            generate_cmd(&model, prompt.as_deref(), chat, prompt_ids, max_new_tokens, sampling, seed, json)
        }
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
    Ok(())
}

fn logprobs<T: drpo::cpu::Float>(dir: &Path, input: &Path, out: &Path) -> Result<()> {
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
    let scored = model.score(&refs, 1.0, false)?;
    let lp: Vec<Vec<f64>> = scored.logp.iter().map(|r| r.iter().map(|x| x.to_f64()).collect()).collect();
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
) -> Result<()> {
    let model = Model::<f32>::load(dir)?;
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
    let out = drpo::generate::generate(&model, &[ids.clone()], &opts)?;
    let generated = &out[0].tokens;
    let text = match &tokenizer {
        Ok(tok) => tok.decode(generated, false)?,
        Err(_) => String::new(),
    };
    if as_json {
        println!("{}", json!({ "prompt_ids": ids, "generated_ids": generated, "text": text }));
    } else {
        println!("{text}");
    }
    Ok(())
}
