//! Batched autoregressive generation with the KV cache: prompts of different lengths are prefilled
//! together, then each step feeds one new token per unfinished sequence. A sequence stops at one of
//! the eos ids (which is kept as its last token, as SPEC §1 counts it) or after `max_new_tokens`.
//!
//! A request larger than what the policy's memory holds at once runs in **rounds**: consecutive
//! prompts, at most [`Policy::generation_round`] of them, each round a whole generation with its own
//! cache (freed before the next). Prompt i draws from stream `stream_offset + i` whatever round it is
//! in, so rounds change no uniform; on a device whose arithmetic for a row does not depend on the
//! other rows of its batch (the CPU always; NOTES.md, "Rollouts in rounds", says where the GPU's does)
//! they change no token either.

use crate::error::{Error, Result};
use crate::policy::{Chunks, Draw, Policy};
use crate::sampling::SamplingParams;

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
    /// The sampler's log-probability of each token ([`crate::policy::Sampled`]): log softmax(z / T)
    /// of the logits it drew from, before top-k / top-p (0 when greedy).
    pub logp: Vec<f64>,
    pub stopped_on_eos: bool,
}

/// Checks the options and that every prompt is non-empty and leaves room for `max_new_tokens`
/// within `max_pos` positions.
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

/// Generates a continuation of every prompt: the one decoding loop of every device, in rounds of at
/// most [`Policy::generation_round`] sequences (all of them on the host).
pub fn generate<P: Policy + ?Sized>(policy: &P, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Result<Vec<Generation>> {
    check_request(prompts, opts, policy.config().max_position_embeddings)?;
    let prompt_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let round = policy.generation_round(prompt_len, prompt_len + opts.max_new_tokens)?; // ≤ max_pos: checked
    generate_in_rounds(policy, prompts, opts, round)
}

/// [`generate`] in rounds of at most `round` consecutive prompts (`usize::MAX`: one round): the
/// tokens of one-round generation, round by round.
pub fn generate_in_rounds<P: Policy + ?Sized>(policy: &P, prompts: &[Vec<u32>], opts: &GenerateOptions, round: usize) -> Result<Vec<Generation>> {
    check_request(prompts, opts, policy.config().max_position_embeddings)?;
    if round == 0 && !prompts.is_empty() {
        let len = prompts.iter().map(Vec::len).max().unwrap_or(0) + opts.max_new_tokens;
        return Err(Error::input(format!(
            "not one sequence of {len} tokens (prompt + max_new_tokens) fits in the {} device's free memory for generation\n  \
             hint: lower max_new_tokens, or use a device with more memory",
            policy.device()
        )));
    }
    let mut out = Vec::with_capacity(prompts.len());
    for (k, part) in prompts.chunks(round.max(1)).enumerate() {
        // the first prompt of the round keeps its stream: round k starts at prompt k·round
        let first = (k as u64).checked_mul(round as u64).and_then(|f| f.checked_add(opts.stream_offset));
        let stream_offset = first.ok_or_else(|| Error::input("generation stream index overflows"))?;
        out.extend(generate_round(policy, part, &GenerateOptions { stream_offset, ..opts.clone() })?);
    }
    Ok(out)
}

/// One round: prompts prefilled together (slot i = prompt i); each step draws one token per
/// unfinished sequence on the device ([`Policy::sample`]) and feeds it back as a one-token chunk.
fn generate_round<P: Policy + ?Sized>(policy: &P, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Result<Vec<Generation>> {
    let cfg = policy.config();
    let b = prompts.len();
    // room for the longest sequence, allocated once (what the memory estimate counts; no doubling)
    let max_len = prompts.iter().map(Vec::len).max().unwrap_or(0) + opts.max_new_tokens; // ≤ max_pos: checked
    let mut cache = policy.new_cache(b, max_len)?;
    let prefill = Chunks::new(cfg, policy.cache_lens(&cache), policy.cache_cap(&cache), prompts.iter().map(Vec::as_slice).enumerate().collect())?;
    let mut out: Vec<Generation> = vec![Generation { tokens: Vec::new(), logp: Vec::new(), stopped_on_eos: false }; b];
    if b == 0 || opts.max_new_tokens == 0 {
        return Ok(out);
    }
    let mut logits = policy.forward_last(&mut cache, &prefill)?;
    // the sequences whose next token is drawn now, in slot order (row r of `logits` is active[r])
    let mut active: Vec<usize> = (0..b).collect();
    for step in 0..opts.max_new_tokens {
        let streams: Vec<u64> = active.iter().map(|&i| opts.stream_offset + i as u64).collect();
        let draw = Draw { params: &opts.sampling, seed: opts.seed, streams: &streams, step: step as u64 };
        let drawn = policy.sample(&mut cache, &logits, &draw)?;
        let mut next: Vec<(usize, [u32; 1])> = Vec::with_capacity(active.len());
        for ((&i, &tok), &logp) in active.iter().zip(&drawn.tokens).zip(&drawn.logp) {
            out[i].tokens.push(tok);
            out[i].logp.push(logp);
            if opts.eos_ids.contains(&tok) {
                out[i].stopped_on_eos = true;
            } else if out[i].tokens.len() < opts.max_new_tokens {
                next.push((i, [tok]));
            }
        }
        if next.is_empty() {
            break;
        }
        let pairs = next.iter().map(|(i, t)| (*i, &t[..])).collect();
        let chunks = Chunks::new(cfg, policy.cache_lens(&cache), policy.cache_cap(&cache), pairs)?;
        logits = policy.forward_last(&mut cache, &chunks)?;
        active = next.iter().map(|&(i, _)| i).collect();
    }
    Ok(out)
}
