//! Batched autoregressive generation with the KV cache: prompts of different lengths are prefilled
//! together, then each step feeds one new token per unfinished sequence. A sequence stops at one of
//! the eos ids (which is kept as its last token, as SPEC §1 counts it) or after `max_new_tokens`.

use crate::cpu::Float;
use crate::error::{Error, Result};
use crate::model::{KvCache, Model};
use crate::rng::uniform;
use crate::sampling::{sample, SamplingParams};
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    pub eos_ids: Vec<u32>,
    /// Sequence i of the batch draws its uniforms from stream `stream_offset + i`.
    pub stream_offset: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// New tokens, the eos included when it stopped on one.
    pub tokens: Vec<u32>,
    pub stopped_on_eos: bool,
}

/// Checks the options and that every prompt is non-empty and leaves room for `max_new_tokens`
/// within `max_pos` positions (shared by the CPU and GPU generators).
pub fn check_request(prompts: &[Vec<u32>], opts: &GenerateOptions, max_pos: usize) -> Result<()> {
    opts.sampling.validate()?;
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(Error::input(format!("prompt {i} is empty")));
        }
        // checked: a huge max_new_tokens must not wrap around and pass (release builds do not trap)
        if p.len().checked_add(opts.max_new_tokens).is_none_or(|t| t > max_pos) {
            return Err(Error::input(format!(
                "prompt {i} has {} tokens; with max_new_tokens = {} that exceeds max_position_embeddings = {max_pos}",
                p.len(),
                opts.max_new_tokens
            )));
        }
    }
    Ok(())
}

/// Generates a continuation of every prompt.
pub fn generate<T: Float>(model: &Model<T>, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Result<Vec<Generation>> {
    check_request(prompts, opts, model.cfg.max_position_embeddings)?;
    let b = prompts.len();
    let v = model.cfg.vocab_size;
    // room for the longest sequence, allocated once (what the memory estimate counts; no doubling)
    let max_len = prompts.iter().map(Vec::len).max().unwrap_or(0) + opts.max_new_tokens; // ≤ max_pos: checked
    let mut cache = KvCache::with_capacity(&model.cfg, b, max_len);
    let mut out: Vec<Generation> = vec![Generation { tokens: Vec::new(), stopped_on_eos: false }; b];
    let mut active: Vec<bool> = vec![opts.max_new_tokens > 0; b];
    let chunks: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let logits = model.forward_last(&mut cache, &chunks)?;
    check_logits(&logits, v, 0)?;
    let mut last_rows: Vec<Vec<T>> = logits.chunks_exact(v).map(<[T]>::to_vec).collect();
    for step in 0..opts.max_new_tokens {
        // draw in parallel: sequence i's uniform depends on (seed, stream, step) only, so the tokens
        // do not depend on the thread count
        let drawn: Vec<Option<u32>> = (0..b)
            .into_par_iter()
            .map(|i| active[i].then(|| sample(&last_rows[i], &opts.sampling, uniform(opts.seed, opts.stream_offset + i as u64, step as u64))))
            .collect();
        let mut next: Vec<Vec<u32>> = vec![Vec::new(); b];
        for (i, tok) in drawn.into_iter().enumerate() {
            let Some(tok) = tok else { continue };
            out[i].tokens.push(tok);
            if opts.eos_ids.contains(&tok) {
                out[i].stopped_on_eos = true;
                active[i] = false;
            } else if out[i].tokens.len() == opts.max_new_tokens {
                active[i] = false;
            } else {
                next[i].push(tok);
            }
        }
        if !active.iter().any(|&a| a) {
            break;
        }
        let chunks: Vec<&[u32]> = next.iter().map(Vec::as_slice).collect();
        let logits = model.forward_last(&mut cache, &chunks)?;
        check_logits(&logits, v, step + 1)?;
        let mut row = 0;
        for i in 0..b {
            if !next[i].is_empty() {
                last_rows[i].copy_from_slice(&logits[row * v..(row + 1) * v]);
                row += 1;
            }
        }
    }
    Ok(out)
}

/// A sampler fed NaN or ±inf logits still returns an id (the first of a NaN row): refuse instead, so
/// generation never emits tokens of a model whose numbers overflowed. `step`: the token being drawn.
fn check_logits<T: Float>(logits: &[T], v: usize, step: usize) -> Result<()> {
    match logits.iter().position(|x| !x.to_f64().is_finite()) {
        None => Ok(()),
        Some(k) => Err(Error::NonFinite {
            what: format!("generation: the model's logits before new token {step} (the weights or the activations overflow)"),
            at: format!("batch row {}, id {}", k / v, k % v),
            value: logits[k].to_f64(),
        }),
    }
}
