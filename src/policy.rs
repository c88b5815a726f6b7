//! The policy seam: one contract for the CPU model ([`crate::model::Model`]) and the GPU model
//! ([`crate::model::gpu::GpuModel`], on a CUDA GPU or the simulated device). Generation
//! ([`crate::generate::generate`], the one decoding loop), the trainer, sft, eval, the study and
//! gradcheck are written against [`Policy`] only.
//!
//! ```text
//! forward_last(cache, chunks)   run (slot, tokens) chunks after each slot's cached prefix: a prefill
//!                               (whole prompts) and a decoding step (one token per slot) are one call;
//!                               gives the logits of the last new row of each chunk, where the device keeps them
//! sample(cache, logits, ..)     one token per row from uniform(seed, stream, step), on the device,
//!                               and its log-prob under softmax(logits / T) (`Sampled`)
//! generation_round(..)          how many sequences one round of generation holds (device memory)
//! score_responses(batch)        log π(response token | prompt, earlier tokens) at the batch's temperature
//! backward_responses(.., dlogp, grads)   grads += ∂loss/∂θ from d loss / d logp of the response tokens
//! chunk_objective(scored, obj)  one chunk's objective: its numbers, and d loss / d logp where the model is
//! backward_token_grad(.., g, grads)      backward_responses from chunk_objective's token gradient
//! clip_grad_norm(grads, max)    ‖grads‖₂ in the fixed order of optim::global_grad_norm, torch's clip
//! apply_update(opt, grads, ..)  one AdamW step on the parameters the policy samples and scores with
//! export_state / import_state   parameters and AdamW state in the CPU's f32 format (checkpoints)
//! ```
//!
//! Gradients ([`Policy::Grads`]) and the optimizer state ([`Policy::Optimizer`]) live where the model
//! lives: host vectors on the CPU, device buffers on a GPU (f32 gradient and AdamW moments; a bf16
//! model made to train keeps its f32 master weights next to its compute copy), and so does a chunk's
//! token gradient ([`Policy::TokenGrad`]): a training step moves a few numbers per response token
//! (the log-probs back, the current and old ones to the objective) and per response (the metrics),
//! never a parameter-sized buffer, and d loss / d logp never leaves the device.
//! The host format ([`HostState`]) is what a checkpoint holds; a run saved from one device resumes on
//! another.
//!
//! Input is checked once, where a batch is built: [`Chunks`] (slot in range and increasing, token
//! ids < vocab_size, positions ≤ max_position_embeddings and the cache's capacity) and
//! [`ScoreBatch`] (the same for fresh sequences, a prompt token before every response, a positive
//! finite temperature). The devices trust a built batch. Prompt tokens never carry gradient
//! (SPEC §4.5: only response tokens enter the objectives).
//!
//! The GPU model scores (with a record for the backward), computes the gradient and applies AdamW on
//! the device (`model::gpu_train`, `model::gpu_state`; NOTES.md, "One policy seam", "Device training state").

use crate::config::ModelConfig;
use crate::error::{check_len, Error, Result};
use crate::generate::{GenerateOptions, Generation};
use crate::optim::{AdamWConfig, AdamWState};
use crate::rl::chunk::{ChunkObjective, ChunkResult};
use crate::sampling::SamplingParams;
use std::ops::Range;

/// What [`Policy::sample`] draws, one entry per row: the token, and its log-probability under the
/// sampling distribution before top-k / top-p truncation, log softmax(logits / T)[token] in f64 (0
/// when greedy), computed by the sampler from the logits it drew from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub tokens: Vec<u32>,
    pub logp: Vec<f64>,
}

/// What a policy does, whatever the device.
pub trait Policy {
    /// Keys and values of every layer for a number of sequences (slots), and their lengths.
    type Cache;
    /// The logits of the last new row of each chunk of a [`Policy::forward_last`], [rows, vocab].
    type Logits;
    /// What [`Policy::backward_responses`] needs from a forward scored with `record`.
    type Record;
    /// A parameter gradient, flat in [`crate::layout::ParamLayout`] order, where the model lives.
    type Grads;
    /// What AdamW carries from step to step (moments, step count), where the model lives.
    type Optimizer;
    /// d loss / d logp of a chunk's response tokens, where the model lives ([`Policy::chunk_objective`]).
    type TokenGrad;

    fn config(&self) -> &ModelConfig;
    /// "cpu", "gpu" or "sim": for run records and messages.
    fn device(&self) -> &'static str;
    /// Number of parameters (the length of a gradient).
    fn n_params(&self) -> usize;

    /// An empty cache of `slots` sequences with room for `cap` tokens each.
    fn new_cache(&self, slots: usize, cap: usize) -> Result<Self::Cache>;
    /// Tokens cached in each slot.
    fn cache_lens<'c>(&self, cache: &'c Self::Cache) -> &'c [usize];
    /// The capacity given to [`Policy::new_cache`].
    fn cache_cap(&self, cache: &Self::Cache) -> usize;
    /// Runs each chunk after its slot's cached prefix, appends the chunks' keys and values, and gives
    /// the logits of the last new row of each non-empty chunk, in chunk order. `chunks` was built
    /// against this cache's lengths.
    fn forward_last(&self, cache: &mut Self::Cache, chunks: &Chunks) -> Result<Self::Logits>;
    /// The logits on the host, as f64 (for checks; generation samples where they are).
    fn logits_to_host(&self, logits: &Self::Logits) -> Result<Vec<f64>>;
    /// Row r of `logits` draws its token with `uniform(seed, streams[r], step)`
    /// ([`crate::sampling::sample`]'s contract) and reports its log-probability
    /// ([`crate::sampling::sampled_logp`]). Non-finite logits are an error, not a token.
    fn sample(&self, cache: &mut Self::Cache, logits: &Self::Logits, draw: &Draw) -> Result<Sampled>;
    /// Sequences of `len` tokens (the longest prompt, `prompt_len` tokens, and the new ones) that one
    /// generation round holds ([`crate::generate::generate`]): on a device, what its free memory takes
    /// next to what is resident ([`crate::gpu::memory::generation_round`]; 0 when not one fits); on the
    /// host, unlimited (the commands check the host's memory for their whole batch,
    /// [`crate::memory::ensure_fits`]).
    fn generation_round(&self, prompt_len: usize, len: usize) -> Result<usize> {
        let _ = (prompt_len, len);
        Ok(usize::MAX)
    }

    /// Log-probabilities of every response token, in f64. With `record`, keeps what
    /// [`Policy::backward_responses`] and [`Policy::chunk_objective`] need (a device keeps its own
    /// copy of the log-probs there, the values of the host copy: the objective reads that one).
    fn score_responses(&self, batch: &ScoreBatch, record: bool) -> Result<ScoredResponses<Self::Record>>;

    /// A zero gradient.
    fn new_grads(&self) -> Result<Self::Grads>;
    /// Sets every element of `grads` to zero (before the first backward of a mini-batch).
    fn zero_grads(&self, grads: &mut Self::Grads) -> Result<()>;
    /// Adds to `grads` the parameter gradient given dlogp[i][t] = d loss / d logp[i][t] of the
    /// response tokens of a batch scored with `record`: a mini-batch is the sum of its chunks'
    /// backward passes into one buffer.
    fn backward_responses(&self, scored: &ScoredResponses<Self::Record>, dlogp: &[Vec<f64>], grads: &mut Self::Grads) -> Result<()>;
    /// One chunk's objective on a batch scored with `record` ([`crate::rl::chunk`]): the chunk's
    /// numbers on the host, and scale · d loss / d logp of its response tokens where the policy
    /// keeps it, for [`Policy::backward_token_grad`]. The host computes it in f64 from the host
    /// log-probs; a device computes it where the log-probs and the backward are, from the record's
    /// device copy of ℓ (`scored.logp` gives the shapes checked; ℓ^old comes from `obj`) (NOTES.md,
    /// "The objective on the device inside the trainer").
    fn chunk_objective(&self, scored: &ScoredResponses<Self::Record>, obj: &ChunkObjective) -> Result<(ChunkResult, Self::TokenGrad)>;
    /// [`Policy::backward_responses`] from the token gradient of [`Policy::chunk_objective`] on
    /// the same scored batch.
    fn backward_token_grad(&self, scored: &ScoredResponses<Self::Record>, dlogp: &Self::TokenGrad, grads: &mut Self::Grads) -> Result<()>;
    /// [`crate::optim::clip_grad_norm`] on `grads`, in its reduction order (the same norm, bit for
    /// bit, on every device for the same gradient): returns the norm before clipping; a non-finite
    /// norm leaves `grads` untouched (the caller skips that step).
    fn clip_grad_norm(&self, grads: &mut Self::Grads, max_norm: f64) -> Result<f64>;
    /// The gradient on the host, as f64 (gradcheck, tests).
    fn grads_to_host(&self, grads: &Self::Grads) -> Result<Vec<f64>>;

    /// Fresh AdamW state for the parameters as they are: zero moments, no step taken.
    fn new_optimizer(&self) -> Result<Self::Optimizer>;
    /// One AdamW step at learning rate `lr` on the policy's parameters ([`AdamWState::step`]'s
    /// arithmetic, bit for bit, on every device).
    fn apply_update(&mut self, opt: &mut Self::Optimizer, grads: &Self::Grads, cfg: &AdamWConfig, lr: f64) -> Result<()>;
    /// The parameters (the master weights where the compute copy is bf16) and the AdamW state on
    /// the host in the CPU's f32 format: what a checkpoint holds.
    fn export_state(&self, opt: &Self::Optimizer) -> Result<HostState>;
    /// Sets the parameters and `opt` from a host state of this policy's config (a checkpoint's):
    /// the master weights take `state.params` exactly, a bf16 compute copy their rounding.
    fn import_state(&mut self, opt: &mut Self::Optimizer, state: &HostState) -> Result<()>;
}

/// A policy's training state on the host, in the CPU's f32 format: the parameters flat in
/// [`crate::layout::ParamLayout`] order and the AdamW moments and step (a checkpoint's content).
#[derive(Clone, Debug, PartialEq)]
pub struct HostState {
    pub params: Vec<f32>,
    pub optim: AdamWState<f32>,
}

impl HostState {
    /// Checks the lengths against a policy of `n` parameters; `op` names the caller in the error.
    pub fn check(&self, op: &'static str, n: usize) -> Result<()> {
        check_len(op, "params", self.params.len(), n)?;
        check_len(op, "optimizer m", self.optim.m.len(), n)?;
        check_len(op, "optimizer v", self.optim.v.len(), n)
    }
}

/// The uniforms of one sampling step: row r of the logits uses stream `streams[r]`.
#[derive(Clone, Copy, Debug)]
pub struct Draw<'a> {
    pub params: &'a SamplingParams,
    pub seed: u64,
    pub streams: &'a [u64],
    /// the index of the new token within its sequence (the Philox counter)
    pub step: u64,
}

/// A validated batch of token chunks for a cache: chunk i continues slot `slot` from position
/// `start` (the slot's cached length when the batch was built). Slots are increasing, so the rows
/// of a forward come in chunk order on every device.
#[derive(Clone, Debug)]
pub struct Chunks<'a> {
    pairs: Vec<(usize, &'a [u32])>,
    starts: Vec<usize>,
}

impl<'a> Chunks<'a> {
    /// Checks `pairs` against the config and a cache holding `lens[s]` tokens in slot s, with room
    /// for `cap` tokens per slot (`usize::MAX`: a cache that grows).
    pub fn new(cfg: &ModelConfig, lens: &[usize], cap: usize, pairs: Vec<(usize, &'a [u32])>) -> Result<Self> {
        let mut starts = Vec::with_capacity(pairs.len());
        let mut prev: Option<usize> = None;
        for &(slot, chunk) in &pairs {
            if slot >= lens.len() || prev.is_some_and(|p| slot <= p) {
                return Err(Error::input(format!(
                    "sequence {slot}: out of range (a cache of {} sequences) or not after the previous chunk's sequence",
                    lens.len()
                )));
            }
            prev = Some(slot);
            let start = lens[slot];
            check_ids(cfg, chunk, |t| format!("sequence {slot}, position {}", start + t))?;
            let end = start.saturating_add(chunk.len());
            if end > cfg.max_position_embeddings {
                return Err(Error::input(format!(
                    "sequence {slot} would be {end} tokens long, more than max_position_embeddings = {}",
                    cfg.max_position_embeddings
                )));
            }
            if end > cap {
                return Err(Error::input(format!("sequence {slot} would be {end} tokens long, more than the cache's capacity of {cap}")));
            }
            starts.push(start);
        }
        Ok(Chunks { pairs, starts })
    }

    /// Fresh sequences: chunk i is sequence i from position 0.
    pub fn fresh(cfg: &ModelConfig, seqs: &[&'a [u32]]) -> Result<Self> {
        Chunks::new(cfg, &vec![0; seqs.len()], usize::MAX, seqs.iter().copied().enumerate().collect())
    }

    /// (slot, tokens) of each chunk.
    pub fn pairs(&self) -> &[(usize, &'a [u32])] {
        &self.pairs
    }

    /// The cached length of each chunk's slot when the batch was built.
    pub fn starts(&self) -> &[usize] {
        &self.starts
    }

    /// Every chunk by slot (empty for the slots the batch does not touch): `slots` of them.
    pub fn by_slot(&self, slots: usize) -> Vec<&'a [u32]> {
        let mut out: Vec<&[u32]> = vec![&[]; slots];
        for &(slot, chunk) in &self.pairs {
            out[slot] = chunk;
        }
        out
    }
}

/// Token ids must index the vocabulary; `at(t)` names position t of the chunk in the error.
fn check_ids(cfg: &ModelConfig, ids: &[u32], at: impl Fn(usize) -> String) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= cfg.vocab_size) {
        None => Ok(()),
        Some(t) => Err(Error::input(format!("{}: token id {} is out of range (vocab_size = {})", at(t), ids[t], cfg.vocab_size))),
    }
}

/// Scoring divides the logits by the temperature: it must be a positive finite number.
pub fn check_score_temperature(temp: f64) -> Result<()> {
    if temp > 0.0 && temp.is_finite() {
        Ok(())
    } else {
        Err(Error::input(format!("temperature must be positive to score log-probs, got {temp}")))
    }
}

/// A validated scoring batch: (prompt, response) pairs as whole sequences, at one temperature.
#[derive(Clone, Debug)]
pub struct ScoreBatch {
    /// prompt ++ response of each pair
    seqs: Vec<Vec<u32>>,
    prompt_lens: Vec<usize>,
    temp: f64,
}

impl ScoreBatch {
    /// Every prompt needs a token (the first response token is predicted from the last prompt position).
    pub fn responses(cfg: &ModelConfig, prompts: &[&[u32]], responses: &[&[u32]], temp: f64) -> Result<Self> {
        check_len("score batch", "responses", responses.len(), prompts.len())?;
        if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
            return Err(Error::input(format!("score batch: prompt {i} is empty (a response needs a prompt token to follow)")));
        }
        let seqs: Vec<Vec<u32>> = prompts.iter().zip(responses).map(|(p, r)| [*p, *r].concat()).collect();
        ScoreBatch::checked(cfg, seqs, prompts.iter().map(|p| p.len()).collect(), temp)
    }

    /// Every next token of each sequence (len − 1 log-probs each): the first token is the prompt.
    pub fn sequences(cfg: &ModelConfig, seqs: &[&[u32]], temp: f64) -> Result<Self> {
        if let Some(i) = seqs.iter().position(|s| s.is_empty()) {
            return Err(Error::input(format!("score batch: sequence {i} is empty")));
        }
        ScoreBatch::checked(cfg, seqs.iter().map(|s| s.to_vec()).collect(), vec![1; seqs.len()], temp)
    }

    fn checked(cfg: &ModelConfig, seqs: Vec<Vec<u32>>, prompt_lens: Vec<usize>, temp: f64) -> Result<Self> {
        check_score_temperature(temp)?;
        Chunks::fresh(cfg, &seqs.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        Ok(ScoreBatch { seqs, prompt_lens, temp })
    }

    /// The sequences as fresh chunks (checked when the batch was built).
    pub fn chunks(&self) -> Chunks<'_> {
        Chunks { pairs: self.seqs.iter().map(Vec::as_slice).enumerate().collect(), starts: vec![0; self.seqs.len()] }
    }

    /// The whole sequences (prompt ++ response).
    pub fn seqs(&self) -> Vec<&[u32]> {
        self.seqs.iter().map(Vec::as_slice).collect()
    }

    pub fn prompt_lens(&self) -> &[usize] {
        &self.prompt_lens
    }

    pub fn temp(&self) -> f64 {
        self.temp
    }

    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Where the log-probs of response i sit among the len − 1 next-token log-probs of its sequence.
    pub fn response_range(&self, i: usize) -> Range<usize> {
        self.prompt_lens[i] - 1..self.seqs[i].len() - 1
    }
}

/// Log-probabilities of a [`ScoreBatch`]'s response tokens, and what the backward needs.
pub struct ScoredResponses<R> {
    /// logp[i][t] = log π(response_i[t] | prompt_i, response_i[<t]) under softmax(logits / temp), in f64
    pub logp: Vec<Vec<f64>>,
    /// the recorded forward (`None` unless scored with `record`); a device's holds its own copy of `logp`
    pub record: Option<R>,
}

impl<R> ScoredResponses<R> {
    /// The record, or the error of a backward asked of a batch scored without one.
    pub fn recorded(&self) -> Result<&R> {
        self.record.as_ref().ok_or_else(|| Error::input("backward_responses needs a batch scored with record = true"))
    }
}

/// The object-safe face of a [`Policy`] for the commands that only generate and score (eval, the
/// study's evaluations, the trainer's rollouts): one `&dyn Generator` whatever the device.
pub trait Generator {
    fn device_name(&self) -> &'static str;
    /// [`crate::generate::generate`] with this policy.
    fn generate(&self, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Result<Vec<Generation>>;
    /// The response log-probs of a batch (no record).
    fn score(&self, batch: &ScoreBatch) -> Result<Vec<Vec<f64>>>;
}

impl<P: Policy> Generator for P {
    fn device_name(&self) -> &'static str {
        self.device()
    }

    fn generate(&self, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Result<Vec<Generation>> {
        crate::generate::generate(self, prompts, opts)
    }

    fn score(&self, batch: &ScoreBatch) -> Result<Vec<Vec<f64>>> {
        Ok(self.score_responses(batch, false)?.logp)
    }
}
