//! The GPU model's training forward and whole-model backward: fresh sequences packed as rows, no KV
//! cache, run in chunks of whole sequences whose token count fits a budget. Scoring (with or without a
//! backward to follow) and the backward of [`crate::policy::Policy`] on the device use it.
//!
//! ```text
//! per chunk:   x = embed[ids]
//!   layer:     h1 = rmsnorm(x_in; ln1)   q,k,v = h1·W{q,k,v}ᵀ + b   rope(q), rope(k)
//!              att, lse = attention_fwd(q, k, v)                     x_mid = att·Woᵀ + x_in
//!              h2 = rmsnorm(x_mid; ln2)   gu = h2·[Wg;Wu]ᵀ   act = silu(gate)⊙up   x_out = act·Wdᵀ + x_mid
//!   hf = rmsnorm(x; norm)   logp, lse = head_logprob(hf, W_lm, next tokens, temp)
//! backward, chunk after chunk: head (response rows only) → final norm → layers in reverse → embedding
//! ```
//!
//! **What is recorded.** With `record`, a chunk keeps every layer's [`LayerActs`] (the CPU's names,
//! `model::cpu::LayerActs`, with the attention probabilities replaced by the log-sum-exp the
//! backward recomputes them from, and gate | up fused as `gu`) and the final norm's and head's inputs
//! ([`Activations`]); nothing inside a layer is recomputed. They live in the model's
//! [`TrainWorkspace`], allocated for the largest chunk seen and reused by every later call (with the
//! backward's buffers and the head's scratch); [`bytes_per_token`] counts it. A scored batch's record
//! ([`GpuRecord`]) uses the activations left there when the whole batch was one chunk and no other
//! forward has replaced them; otherwise the backward recomputes each chunk's forward before its
//! backward (one more forward pass), so device memory is bounded by one chunk whatever the batch. The
//! token budget of a chunk comes from `gpu::memory::tokens_per_chunk` of the device's free memory
//! (`GpuModel::chunk_budget`; `set_max_tokens_per_chunk` overrides it).
//!
//! **The same bits whatever the budget.** Every row of the forward is computed by kernels whose
//! arithmetic does not depend on the other rows (GEMMs, norms, the head) or on the other sequences
//! (attention), so log-probs do not depend on the chunking. In the backward every sum over tokens that
//! lands in a weight gradient (dW, db, RMSNorm dw, the head's dW) runs **per sequence** and the
//! per-sequence sums are added in sequence order, so chunk boundaries (always between sequences)
//! never change a sum's order; the embedding's rows are summed in row order across chunks (tied
//! embeddings: the gather part in a compact table of the batch's distinct ids, added after the last
//! chunk, so the head's and the gather's parts do not interleave by chunk). The gradient is therefore
//! bit-identical for any token budget, hence for any device memory size. The cost: one launch per
//! sequence for each weight gradient, and each dW read and written once per sequence (NOTES.md).

use super::gpu::GpuModel;
use crate::config::ModelConfig;
use crate::error::{check_len, Error, Result};
use crate::gpu::attention::{attention_bwd, attention_fwd, PackedSeqs};
use crate::gpu::embedding::{embedding_bwd, embedding_fwd, EmbeddingGradPlan};
use crate::gpu::logprob::{head_bwd_with, head_logprob, HeadGradScratch, BWD_ROW_CHUNK};
use crate::gpu::memory::{chunk_budget_bytes, tokens_per_chunk};
use crate::gpu::matmul::{matmul_bwd_db, matmul_bwd_dw, matmul_bwd_dx, matmul_fwd, MatmulPlan, MatmulTile};
use crate::gpu::residual::residual_add;
use crate::gpu::rmsnorm::{bwd_scratch_len, rmsnorm_bwd, rmsnorm_fwd};
use crate::gpu::rope::{rope_bwd, rope_fwd};
use crate::gpu::swiglu::{swiglu_bwd, swiglu_fwd};
use crate::gpu::{DView, DViewMut, DeviceBuffer, Gpu, GpuFloat};
use crate::layout::LayerRanges;
use crate::policy::{ScoreBatch, ScoredResponses};
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::MutexGuard;

/// Device bytes per token of a chunk's workspace ([`TrainWorkspace`]), for elements of `elem` bytes
/// (the storage type); exactly what the buffers hold per row.
/// - forward (`record`: every layer; without: one layer's buffers, reused by every layer): per layer
///   [`LayerActs`] (x_in, h1, x_mid, h2: 4c; q, att: 2·q_dim; k, v: 2·kv_dim; gu, act: 3·ff; rstd1,
///   rstd2 and lse (nh) in f32), then the chunk's residual output and hf (2c), its f32 rows (rstd_f,
///   lse, logp) and the u32 ids and positions.
/// - `record` adds the backward's buffers of one layer ([`BackwardBuffers`]: dx, dh: 2c; d of a
///   projection's input, max(ff, q_dim); dgu: 2·ff; dq: q_dim; dk, dv: 2·kv_dim; delta (nh) in
///   f32 (d loss / d logp is the caller's device buffer); the RMSNorm dw partials, c f32 per 16 rows, counted as c/16 per token).
///
/// Not per token, so not counted: the head backward's scratch (≤ 4096 rows × 8192 ids of dlogits and
/// 4096 rows of f32 dh), the split-k partials of the device's workspace, the per-call uploads of the
/// sequence starts and targets, and tied embeddings' gather table (≤ the batch's distinct ids × c f32).
pub fn bytes_per_token(cfg: &ModelConfig, elem: usize, record: bool) -> usize {
    let (c, ff, qd, kvd, nh) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim(), cfg.num_attention_heads);
    // saturating: a config's sizes come from a file (an absurd one gives usize::MAX, never a wrap)
    let sum = |xs: &[usize]| xs.iter().fold(0usize, |a, &x| a.saturating_add(x));
    let elems = |xs: &[usize]| sum(xs).saturating_mul(elem);
    let layer = sum(&[elems(&[4 * c, 2 * qd, 2 * kvd, 3 * ff]), (2 + nh).saturating_mul(4)]);
    let chunk = sum(&[elems(&[2 * c]), 5 * 4]);
    let backward = sum(&[elems(&[2 * c, ff.max(qd), 2 * ff, qd, 2 * kvd]), nh.saturating_mul(4), c.div_ceil(16).saturating_mul(4)]);
    if record {
        sum(&[cfg.num_hidden_layers.saturating_mul(layer), chunk, backward])
    } else {
        sum(&[layer, chunk])
    }
}

/// The simulated device's training budget: the simulator has no memory of its own (host memory,
/// allocated on demand), so a fixed 4 GiB stands for "free memory" and every fixture batch is one
/// chunk unless a test sets a smaller budget ([`GpuModel::set_max_tokens_per_chunk`]).
pub const SIM_CHUNK_BYTES: u64 = 4 << 30;

/// Consecutive runs of whole sequences whose token count stays within `max_tokens` (≥ 1), in order;
/// a sequence longer than the budget runs alone (a sequence is never split: attention needs all of it).
pub fn token_chunks(lens: &[usize], max_tokens: usize) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let (mut start, mut tokens) = (0, 0usize);
    for (i, &len) in lens.iter().enumerate() {
        if i > start && tokens.saturating_add(len) > max_tokens {
            chunks.push(start..i);
            (start, tokens) = (i, 0);
        }
        tokens = tokens.saturating_add(len);
    }
    if start < lens.len() {
        chunks.push(start..lens.len());
    }
    chunks
}

/// One decoder layer's activations over a chunk's n rows, as the forward leaves them for the backward
/// (the CPU's `LayerActs`, with lse instead of the probabilities and gate | up fused). Each buffer
/// holds the workspace's capacity of rows; a chunk uses the first n.
pub struct LayerActs<T: GpuFloat> {
    /// the residual stream entering the layer: [n, c]
    pub x_in: DeviceBuffer<T>,
    /// [n] f32
    pub rstd1: DeviceBuffer<f32>,
    /// rmsnorm(x_in; ln1): [n, c]
    pub h1: DeviceBuffer<T>,
    /// after the rotary: [n, q_dim], [n, kv_dim], [n, kv_dim]
    pub q: DeviceBuffer<T>,
    pub k: DeviceBuffer<T>,
    pub v: DeviceBuffer<T>,
    /// attention output: [n, q_dim]
    pub att: DeviceBuffer<T>,
    /// log-sum-exp of each row's scaled scores: [n, nh] f32
    pub lse: DeviceBuffer<f32>,
    /// x_in + att·Woᵀ: [n, c]
    pub x_mid: DeviceBuffer<T>,
    pub rstd2: DeviceBuffer<f32>,
    pub h2: DeviceBuffer<T>,
    /// gate | up: [n, 2·ff]
    pub gu: DeviceBuffer<T>,
    /// silu(gate) ⊙ up: [n, ff]
    pub act: DeviceBuffer<T>,
}

impl<T: GpuFloat> LayerActs<T> {
    fn new(gpu: &Gpu, cfg: &ModelConfig, n: usize) -> Result<Self> {
        let (c, ff, qd, kvd, nh) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim(), cfg.num_attention_heads);
        Ok(LayerActs {
            x_in: gpu.alloc_zeros(n * c)?,
            rstd1: gpu.alloc_zeros(n)?,
            h1: gpu.alloc_zeros(n * c)?,
            q: gpu.alloc_zeros(n * qd)?,
            k: gpu.alloc_zeros(n * kvd)?,
            v: gpu.alloc_zeros(n * kvd)?,
            att: gpu.alloc_zeros(n * qd)?,
            lse: gpu.alloc_zeros(n * nh)?,
            x_mid: gpu.alloc_zeros(n * c)?,
            rstd2: gpu.alloc_zeros(n)?,
            h2: gpu.alloc_zeros(n * c)?,
            gu: gpu.alloc_zeros(n * 2 * ff)?,
            act: gpu.alloc_zeros(n * ff)?,
        })
    }
}

/// Everything the backward needs from one chunk's forward (the CPU's `Activations`): the device
/// buffers of the workspace, for up to `rows` rows and `layers.len()` layers (1: a forward without a
/// record, whose layers reuse one set; every layer with a record).
pub struct Activations<T: GpuFloat> {
    /// rows every buffer holds
    rows: usize,
    /// token ids and positions (the rotary's table lookup) of the packed rows: [n] each
    pub ids: DeviceBuffer<u32>,
    pub pos: DeviceBuffer<i32>,
    pub layers: Vec<LayerActs<T>>,
    /// the last layer's output (a forward without a record: the spare residual the layers swap with)
    pub x_final: DeviceBuffer<T>,
    pub rstd_f: DeviceBuffer<f32>,
    /// rmsnorm(x_final; norm), the head's input: [n, c]
    pub hf: DeviceBuffer<T>,
    /// log-sum-exp of every row's logits / temp: [n] f32 (the head backward's softmax)
    pub lse: DeviceBuffer<f32>,
    /// the log-prob of every row's next token: [n] f32
    pub logp: DeviceBuffer<f32>,
}

impl<T: GpuFloat> Activations<T> {
    fn new(gpu: &Gpu, cfg: &ModelConfig, rows: usize, layers: usize) -> Result<Self> {
        let c = cfg.hidden_size;
        Ok(Activations {
            rows,
            ids: gpu.alloc_zeros(rows)?,
            pos: gpu.alloc_zeros(rows)?,
            layers: (0..layers).map(|_| LayerActs::new(gpu, cfg, rows)).collect::<Result<_>>()?,
            x_final: gpu.alloc_zeros(rows * c)?,
            rstd_f: gpu.alloc_zeros(rows)?,
            hf: gpu.alloc_zeros(rows * c)?,
            lse: gpu.alloc_zeros(rows)?,
            logp: gpu.alloc_zeros(rows)?,
        })
    }
}

/// The backward's buffers of one chunk, for up to `rows` rows; the layers reuse them one after another.
/// The backward's kernels accumulate (`+=`), so each is zeroed (its first n rows) before a use, as the
/// per-call allocation (zeros) did.
struct BackwardBuffers<T: GpuFloat> {
    rows: usize,
    /// d loss / d residual stream: [n, c]
    dx: DeviceBuffer<T>,
    /// d loss / d a norm's output: hf, then each layer's h2 and h1: [n, c]
    dh: DeviceBuffer<T>,
    /// d loss / d a projection's input: each layer's act [n, ff], then att [n, q_dim]
    dproj_in: DeviceBuffer<T>,
    /// d loss / d gate | up: [n, 2·ff]
    dgu: DeviceBuffer<T>,
    /// [n, q_dim], [n, kv_dim], [n, kv_dim]
    dq: DeviceBuffer<T>,
    dk: DeviceBuffer<T>,
    dv: DeviceBuffer<T>,
    /// attention backward's rowsum(dout ∘ out): [n, nh] f32
    delta: DeviceBuffer<f32>,
    /// RMSNorm dw partials of one sequence: [`bwd_scratch_len`]`(rows, c)` f32
    dw_part: DeviceBuffer<f32>,
}

impl<T: GpuFloat> BackwardBuffers<T> {
    fn new(gpu: &Gpu, cfg: &ModelConfig, rows: usize) -> Result<Self> {
        let (c, ff, qd, kvd, nh) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim(), cfg.num_attention_heads);
        Ok(BackwardBuffers {
            rows,
            dx: gpu.alloc_zeros(rows * c)?,
            dh: gpu.alloc_zeros(rows * c)?,
            dproj_in: gpu.alloc_zeros(rows * ff.max(qd))?,
            dgu: gpu.alloc_zeros(rows * 2 * ff)?,
            dq: gpu.alloc_zeros(rows * qd)?,
            dk: gpu.alloc_zeros(rows * kvd)?,
            dv: gpu.alloc_zeros(rows * kvd)?,
            delta: gpu.alloc_zeros(rows * nh)?,
            dw_part: gpu.alloc_zeros(bwd_scratch_len(rows, c).max(1))?,
        })
    }
}

/// The host side of a chunk: its rows' ids, targets and sequence ranges.
struct ChunkRows {
    /// token ids of the packed rows
    ids: Vec<u32>,
    /// each sequence's row range
    seqs: Vec<Range<usize>>,
    /// the next token of every row (0 on a sequence's last row, which predicts nothing)
    targets: Vec<u32>,
    packed: PackedSeqs,
}

/// The training forward's and backward's device buffers of one model, allocated for the largest
/// chunk seen and reused by every later chunk of that size or smaller: the forward's [`Activations`]
/// (rows × layers: a forward with a record needs every layer, one without one), the backward's
/// [`BackwardBuffers`] and the head backward's scratch, each grown (freed, then allocated at the
/// larger size) only when a chunk needs more. Its per-token bytes are [`bytes_per_token`]'s.
/// Behind a mutex in the model: a scoring or a backward holds it from its first chunk to its last.
pub struct TrainWorkspace<T: GpuFloat> {
    forward: Option<Activations<T>>,
    backward: Option<BackwardBuffers<T>>,
    head: Option<HeadGradScratch<T>>,
    /// the scoring whose activations `forward` holds (the stamp of its [`GpuRecord`]) and its rows
    held: Option<(u64, ChunkRows)>,
    /// the default token budget, from the device's free memory when first asked for
    default_tokens: Option<usize>,
    /// buffer sets allocated so far (forward, backward and head scratch each count one per growth)
    allocations: usize,
}

impl<T: GpuFloat> Default for TrainWorkspace<T> {
    fn default() -> Self {
        TrainWorkspace { forward: None, backward: None, head: None, held: None, default_tokens: None, allocations: 0 }
    }
}

impl<T: GpuFloat> TrainWorkspace<T> {
    /// The forward's buffers for `n` rows and `layers` layers, grown to the larger of each.
    fn forward(&mut self, gpu: &Gpu, cfg: &ModelConfig, n: usize, layers: usize) -> Result<&mut Activations<T>> {
        let have = self.forward.as_ref().map_or((0, 0), |a| (a.rows, a.layers.len()));
        if have.0 < n || have.1 < layers {
            self.held = None;
            self.forward = None; // freed (in stream order) before the larger set is allocated
            self.forward = Some(Activations::new(gpu, cfg, n.max(have.0), layers.max(have.1))?);
            self.allocations += 1;
        }
        Ok(self.forward.as_mut().expect("allocated above"))
    }

    /// The backward's buffers for `n` rows, and the head scratch for response rows of up to
    /// `longest_response` (its row chunk at least min(that, the default row chunk), so each
    /// sequence's head backward cuts its rows as a fresh scratch would).
    fn backward(&mut self, gpu: &Gpu, cfg: &ModelConfig, n: usize, longest_response: usize) -> Result<()> {
        if self.backward.as_ref().is_none_or(|b| b.rows < n) {
            let rows = n.max(self.backward.as_ref().map_or(0, |b| b.rows));
            self.backward = None;
            self.backward = Some(BackwardBuffers::new(gpu, cfg, rows)?);
            self.allocations += 1;
        }
        let rows = longest_response.clamp(1, BWD_ROW_CHUNK);
        if self.head.as_ref().is_none_or(|h| h.rows() < rows) {
            self.head = None;
            // made for `rows` targets (zeros), so its row chunk is exactly `rows`
            self.head = Some(HeadGradScratch::new(gpu, &vec![0; rows], cfg.vocab_size)?);
            self.allocations += 1;
        }
        Ok(())
    }

    /// Frees every buffer (a record's kept activations with them: its backward recomputes them); the
    /// next chunk allocates again. Generation calls it: its KV cache and the training chunk share
    /// the memory the budget was sized for, one phase at a time (`gpu::memory::StepPlan`).
    pub fn release(&mut self) {
        (self.held, self.forward, self.backward, self.head) = (None, None, None, None);
    }

    /// Device bytes its buffers hold now (the head scratch's as allocated: dlogits in T, dh in f32).
    pub fn bytes(&self) -> usize {
        let (e, f) = (size_of::<T>(), size_of::<f32>());
        let forward = self.forward.as_ref().map_or(0, |a| {
            let layer = |l: &LayerActs<T>| {
                (l.x_in.len() + l.h1.len() + l.q.len() + l.k.len() + l.v.len() + l.att.len() + l.x_mid.len() + l.h2.len() + l.gu.len() + l.act.len()) * e
                    + (l.rstd1.len() + l.lse.len() + l.rstd2.len()) * f
            };
            a.layers.iter().map(layer).sum::<usize>() + (a.x_final.len() + a.hf.len()) * e + (a.ids.len() + a.pos.len() + a.rstd_f.len() + a.lse.len() + a.logp.len()) * f
        });
        let backward = self.backward.as_ref().map_or(0, |b| {
            (b.dx.len() + b.dh.len() + b.dproj_in.len() + b.dgu.len() + b.dq.len() + b.dk.len() + b.dv.len()) * e + (b.delta.len() + b.dw_part.len()) * f
        });
        forward + backward
    }
}

/// Stamps of scorings that kept their activations: unique in the process, so a record is only ever
/// matched with the activations of its own scoring, on its own model.
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1);

/// What [`GpuModel::backward_into`] needs from a batch scored with `record`: the batch, its chunks
/// and, when the batch was one chunk, the stamp of the activations it left in the model's workspace
/// (used by the backward while no other forward has replaced them; recomputed otherwise: the same
/// bits); and what the chunk objective reads: the response log-probs as the forward wrote them.
pub struct GpuRecord<T: GpuFloat> {
    batch: ScoreBatch,
    chunks: Vec<Range<usize>>,
    kept: Option<u64>,
    /// `[T]` f32: the response tokens' log-probs, responses in batch order (the token layout of
    /// `gpu::objective`), gathered device to device from each chunk's forward
    logp: DeviceBuffer<f32>,
    _model: PhantomData<T>,
}

impl<T: GpuFloat> GpuRecord<T> {
    /// The sequence ranges of the chunks the scoring ran (the backward walks the same ones).
    pub fn chunks(&self) -> &[Range<usize>] {
        &self.chunks
    }

    /// Whether the scoring kept its activations (one chunk) rather than leaving them to the backward.
    pub fn kept(&self) -> bool {
        self.kept.is_some()
    }

    /// The response log-probs on the device, `[T]` f32 (responses in batch order): the values whose
    /// f64 copy [`ScoredResponses::logp`] holds.
    pub fn logp(&self) -> DView<'_, f32> {
        self.logp.as_view()
    }
}

/// A forward over a batch of fresh sequences: the log-probs of every sequence (len − 1 each), the
/// sequence ranges of its chunks, and when recorded the stamp of the activations of a batch that
/// was one chunk and the response log-probs gathered on the device.
pub(super) struct Scoring {
    pub logp: Vec<Vec<f32>>,
    chunks: Vec<Range<usize>>,
    kept: Option<u64>,
    device_logp: Option<DeviceBuffer<f32>>,
}

/// The gradient of tied embeddings' gather part, kept apart from the head's part until the end:
/// a compact [distinct ids, c] table (rows of absent ids would be zeros).
struct TiedGather {
    /// the batch's distinct ids, ascending
    ids: Vec<u32>,
    /// id → row of the compact table (u32::MAX: absent)
    row_of: Vec<u32>,
    table: DeviceBuffer<f32>,
}

impl<T: GpuFloat> GpuModel<T> {
    /// Sets the token budget of a chunk (`None`: the default of `chunk_budget`, from the memory model).
    pub fn set_max_tokens_per_chunk(&mut self, tokens: Option<usize>) -> Result<()> {
        if tokens == Some(0) {
            return Err(Error::input("max_tokens_per_chunk must be at least 1"));
        }
        self.chunk_tokens = tokens;
        Ok(())
    }

    /// The training workspace (a poisoned lock is taken back: every user clears what it overwrites).
    pub(super) fn workspace(&self) -> MutexGuard<'_, TrainWorkspace<T>> {
        self.workspace.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Buffer sets the training workspace has allocated (each growth counts), and the bytes it holds.
    pub fn workspace_stats(&self) -> (usize, usize) {
        let ws = self.workspace();
        (ws.allocations, ws.bytes())
    }

    /// The token budget of a chunk, with or without a record (one budget: the workspace's buffers
    /// serve both): the one set, else `gpu::memory::tokens_per_chunk` of the device's training budget
    /// (a GPU: [`chunk_budget_bytes`] of the driver's free memory plus what this workspace already
    /// holds, asked once; the simulator: [`SIM_CHUNK_BYTES`]), at least 1.
    fn chunk_budget(&self, ws: &mut TrainWorkspace<T>) -> Result<usize> {
        if let Some(tokens) = self.chunk_tokens {
            return Ok(tokens);
        }
        if let Some(tokens) = ws.default_tokens {
            return Ok(tokens);
        }
        // the simulator's memory is the host's, allocated on demand: a documented fixed budget
        let budget = if self.gpu.is_simulated() {
            SIM_CHUNK_BYTES
        } else {
            chunk_budget_bytes(self.gpu.free_bytes()?.saturating_add(ws.bytes() as u64))
        };
        let tokens = tokens_per_chunk::<T>(&self.cfg, budget).max(1);
        ws.default_tokens = Some(tokens);
        Ok(tokens)
    }

    /// logp[s][t] = log softmax(logits(x_≤t) / temp)[x_{t+1}] of fresh sequences (len − 1 each), chunk
    /// by chunk without a KV cache. `record`: the response range of each sequence (indices into its
    /// logp), for a scoring the backward will follow: then also the chunks of the backward, the stamp
    /// of the activations of a batch that is one such chunk, and the response log-probs gathered on
    /// the device chunk by chunk (the next chunk's forward overwrites the workspace's). The sequences
    /// and temperature were checked by the caller.
    pub(super) fn score_chunks(&self, seqs: &[&[u32]], temp: f64, record: Option<&[Range<usize>]>) -> Result<Scoring> {
        let mut ws = self.workspace();
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let chunks = token_chunks(&lens, self.chunk_budget(&mut ws)?);
        let keep = record.is_some() && chunks.len() == 1;
        let mut device_logp = match record {
            Some(responses) => Some(self.gpu.alloc_zeros::<f32>(responses.iter().map(|r| r.len()).sum())?),
            None => None,
        };
        let mut logp = Vec::with_capacity(seqs.len());
        let (mut kept, mut gathered) = (None, 0);
        for chunk in &chunks {
            let (rows, host) = self.chunk_forward(&mut ws, &seqs[chunk.clone()], temp, keep)?;
            let mut row = 0;
            for (i, s) in chunk.clone().zip(&seqs[chunk.clone()]) {
                logp.push(rows[row..row + s.len().saturating_sub(1)].to_vec());
                if let (Some(responses), Some(dst), Some(fwd)) = (record, device_logp.as_mut(), ws.forward.as_ref()) {
                    let r = &responses[i];
                    self.gpu.memcpy_dtod(&fwd.logp.slice(row + r.start..row + r.end), &mut dst.slice_mut(gathered..gathered + r.len()))?;
                    gathered += r.len();
                }
                row += s.len();
            }
            if let (true, Some(host)) = (keep, host) {
                let stamp = NEXT_STAMP.fetch_add(1, Ordering::Relaxed);
                ws.held = Some((stamp, host));
                kept = Some(stamp);
            }
        }
        Ok(Scoring { logp, chunks, kept, device_logp })
    }

    /// The response log-probs of a checked batch, and with `record` what the backward and the chunk
    /// objective need.
    pub(super) fn score_batch(&self, batch: &ScoreBatch, record: bool) -> Result<ScoredResponses<GpuRecord<T>>> {
        let responses: Vec<Range<usize>> = (0..batch.len()).map(|i| batch.response_range(i)).collect();
        let Scoring { logp, chunks, kept, device_logp } = self.score_chunks(&batch.seqs(), batch.temp(), record.then_some(&responses[..]))?;
        let logp = logp.iter().zip(&responses).map(|(lp, r)| lp[r.clone()].iter().map(|&x| x as f64).collect()).collect();
        let record = device_logp.map(|logp| GpuRecord { batch: batch.clone(), chunks, kept, logp, _model: PhantomData });
        Ok(ScoredResponses { logp, record })
    }

    /// The forward of one chunk of fresh sequences into the workspace: the log-prob of every row's
    /// next token ([n]; a sequence's last row gets a meaningless value) and the chunk's rows (None:
    /// no rows). With `record` every layer's activations stay in the workspace for the backward.
    fn chunk_forward(&self, ws: &mut TrainWorkspace<T>, seqs: &[&[u32]], temp: f64, record: bool) -> Result<(Vec<f32>, Option<ChunkRows>)> {
        let gpu = &*self.gpu;
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let (mut ids, mut pos, mut targets, mut rows) = (Vec::new(), Vec::new(), Vec::new(), Vec::with_capacity(seqs.len()));
        for s in seqs {
            rows.push(ids.len()..ids.len() + s.len());
            ids.extend_from_slice(s);
            // positions < max_position_embeddings (checked with the batch), so they fit an i32
            pos.extend((0..s.len()).map(|p| p as i32));
            targets.extend(s.iter().skip(1).copied().chain(s.first().map(|_| 0)));
        }
        // the buffers are about to be overwritten: whatever scoring kept them loses them
        ws.held = None;
        let n = ids.len();
        if n == 0 {
            return Ok((Vec::new(), None));
        }
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let packed = PackedSeqs::new(gpu, &lens)?;
        let layers = if record { self.layout.layers.len() } else { 1 };
        let acts = ws.forward(gpu, &self.cfg, n, layers)?;
        gpu.memcpy_htod(&pos, &mut acts.pos.slice_mut(0..n))?;
        gpu.memcpy_htod(&ids, &mut acts.ids.slice_mut(0..n))?;
        let Activations { ids: ids_d, pos: pos_d, layers: layer_acts, x_final, .. } = acts;
        let (pos_d, x0) = (pos_d.slice(0..n), &mut layer_acts[0].x_in);
        embedding_fwd(gpu, &mut x0.slice_mut(0..n * c), &ids_d.slice(0..n), &self.params.slice(self.layout.embed.clone()), n, c, v)?;
        if record {
            // layer l's output is layer l + 1's input; the last one's is x_final
            for (l, lr) in self.layout.layers.iter().enumerate() {
                let (done, rest) = layer_acts.split_at_mut(l + 1);
                let out = match rest.first_mut() {
                    Some(next) => &mut next.x_in,
                    None => &mut *x_final,
                };
                self.layer_fwd(lr, &mut done[l], out, &pos_d, &packed)?;
            }
        } else {
            // one set of buffers for every layer: after each, its output becomes the next one's input
            // and the old input the next output's buffer
            let a = &mut layer_acts[0];
            for lr in &self.layout.layers {
                self.layer_fwd(lr, a, x_final, &pos_d, &packed)?;
                std::mem::swap(&mut a.x_in, x_final);
            }
            std::mem::swap(&mut a.x_in, x_final);
        }
        let eps = self.cfg.rms_norm_eps as f32;
        let Activations { x_final, rstd_f, hf, lse, logp, .. } = acts;
        let (cols, row_range) = (0..n * c, 0..n);
        let norm = self.params.slice(self.layout.final_norm.clone());
        rmsnorm_fwd(gpu, &mut hf.slice_mut(cols.clone()), &mut rstd_f.slice_mut(row_range.clone()), &x_final.slice(cols.clone()), &norm, n, c, eps)?;
        let lm = self.params.slice(self.layout.lm_head.clone());
        head_logprob(gpu, &mut logp.slice_mut(row_range.clone()), &mut lse.slice_mut(row_range.clone()), &hf.slice(cols), &lm, &targets, n, c, v, temp)?;
        let logp = gpu.dtoh(&logp.slice(row_range))?;
        Ok((logp, Some(ChunkRows { ids, seqs: rows, targets, packed })))
    }

    /// One decoder layer over a chunk's n rows: reads `a.x_in`, fills the rest of `a`, writes the
    /// layer's output (the next residual stream) to `x_out`.
    fn layer_fwd(&self, lr: &LayerRanges, a: &mut LayerActs<T>, x_out: &mut DeviceBuffer<T>, pos: &DView<i32>, packed: &PackedSeqs) -> Result<()> {
        let gpu = &*self.gpu;
        let cfg = &self.cfg;
        let (c, ff, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (nh, nkv, qd, kvd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.q_dim(), cfg.kv_dim());
        let eps = cfg.rms_norm_eps as f32;
        let n = packed.n_rows;
        let w = |r: &Range<usize>| self.params.slice(r.clone());
        let (cos, sin) = (self.cos.as_view(), self.sin.as_view());
        // the first n rows of each buffer (it holds the workspace's capacity)
        let (rc, rq, rkv, rh, r1) = (0..n * c, 0..n * qd, 0..n * kvd, 0..n * nh, 0..n);

        rmsnorm_fwd(gpu, &mut a.h1.slice_mut(rc.clone()), &mut a.rstd1.slice_mut(r1.clone()), &a.x_in.slice(rc.clone()), &w(&lr.ln1_w), n, c, eps)?;
        matmul_fwd(gpu, &mut a.q.slice_mut(rq.clone()), &a.h1.slice(rc.clone()), &w(&lr.q_w), Some(&w(&lr.q_b)), n, c, qd)?;
        matmul_fwd(gpu, &mut a.k.slice_mut(rkv.clone()), &a.h1.slice(rc.clone()), &w(&lr.k_w), Some(&w(&lr.k_b)), n, c, kvd)?;
        matmul_fwd(gpu, &mut a.v.slice_mut(rkv.clone()), &a.h1.slice(rc.clone()), &w(&lr.v_w), Some(&w(&lr.v_b)), n, c, kvd)?;
        rope_fwd(gpu, &mut a.q.slice_mut(rq.clone()), pos, &cos, &sin, n, nh, hd)?;
        rope_fwd(gpu, &mut a.k.slice_mut(rkv.clone()), pos, &cos, &sin, n, nkv, hd)?;
        let (q, k, v) = (a.q.slice(rq.clone()), a.k.slice(rkv.clone()), a.v.slice(rkv));
        attention_fwd(gpu, &mut a.att.slice_mut(rq.clone()), &mut a.lse.slice_mut(rh), &q, &k, &v, packed, self.heads())?;
        // x_mid = att·Woᵀ + x_in, written apart from x_in (the backward needs both); the f32 sum of
        // the two stored values is the cached forward's x + proj (addition commutes exactly)
        matmul_fwd(gpu, &mut a.x_mid.slice_mut(rc.clone()), &a.att.slice(rq), &w(&lr.o_w), None, n, qd, c)?;
        residual_add(gpu, &mut a.x_mid.slice_mut(rc.clone()), &a.x_in.slice(rc.clone()))?;
        rmsnorm_fwd(gpu, &mut a.h2.slice_mut(rc.clone()), &mut a.rstd2.slice_mut(r1), &a.x_mid.slice(rc.clone()), &w(&lr.ln2_w), n, c, eps)?;
        matmul_fwd(gpu, &mut a.gu.slice_mut(0..n * 2 * ff), &a.h2.slice(rc.clone()), &w(&(lr.gate_w.start..lr.up_w.end)), None, n, c, 2 * ff)?;
        swiglu_fwd(gpu, &mut a.act.slice_mut(0..n * ff), &a.gu.slice(0..n * 2 * ff), n, ff)?;
        matmul_fwd(gpu, &mut x_out.slice_mut(rc.clone()), &a.act.slice(0..n * ff), &w(&lr.down_w), None, n, ff, c)?;
        residual_add(gpu, &mut x_out.slice_mut(rc.clone()), &a.x_mid.slice(rc))
    }

    /// The whole-model backward of a batch scored with `record` ([`crate::policy::Policy::score_responses`]
    /// on this model): given dlogp[i][t] = d loss / d logp of response token t of batch entry i, ADDS
    /// the parameter gradient to `grads` (f32, flat in `ParamLayout` order, on the device). The host
    /// entry (gradcheck, tests): the values are rounded to f32 and uploaded once, then
    /// [`GpuModel::backward_from_device`].
    pub fn backward_into(&self, record: &GpuRecord<T>, dlogp: &[Vec<f64>], grads: &mut DViewMut<f32>) -> Result<()> {
        const OP: &str = "backward_responses";
        let batch = &record.batch;
        check_len(OP, "dlogp", dlogp.len(), batch.len())?;
        let mut flat = Vec::with_capacity(dlogp.iter().map(Vec::len).sum());
        for (i, d) in dlogp.iter().enumerate() {
            check_len(OP, "dlogp row", d.len(), batch.response_range(i).len())?;
            if let Some(t) = d.iter().position(|&g| !(g as f32).is_finite()) {
                return Err(Error::input(format!("{OP}: dlogp[{i}][{t}] = {} is not a finite f32", d[t])));
            }
            flat.extend(d.iter().map(|&g| g as f32));
        }
        self.backward_from_device(record, &self.gpu.htod(&flat)?.as_view(), grads)
    }

    /// [`GpuModel::backward_into`] from d loss / d logp on the device: `dlogp` is `[T]`, the batch's
    /// response tokens concatenated in batch order (the layout of `gpu::objective`'s token arrays,
    /// whose `dlogp` it takes as it is). Chunk after chunk (recomputing a chunk's forward unless the
    /// record kept it): the head backward of the response rows (prompt rows carry no gradient) at
    /// the batch's temperature, the final norm, every layer in reverse, the embedding; tied
    /// embeddings get the head's and the gather's parts. No atomics, every sum in a fixed order: the
    /// same bits from run to run, and for any chunking. The values must be finite (the objective
    /// checks its gradient; the host entry checks its input).
    pub fn backward_from_device(&self, record: &GpuRecord<T>, dlogp: &DView<f32>, grads: &mut DViewMut<f32>) -> Result<()> {
        const OP: &str = "backward_responses";
        let batch = &record.batch;
        // where each response's gradient starts in `dlogp`
        let mut offsets = Vec::with_capacity(batch.len() + 1);
        offsets.push(0);
        for i in 0..batch.len() {
            offsets.push(offsets[i] + batch.response_range(i).len());
        }
        check_len(OP, "dlogp (response tokens)", dlogp.len(), offsets[batch.len()])?;
        check_len(OP, "grads", grads.len(), self.layout.total)?;
        let seqs = batch.seqs();
        let mut tied = if self.layout.tied { Some(self.tied_gather(&seqs)?) } else { None };
        let mut ws = self.workspace();
        for chunk in &record.chunks {
            // the record's own activations while no other forward replaced them, else recomputed
            let held = match (&ws.held, record.kept) {
                (Some((stamp, _)), Some(kept)) if *stamp == kept => ws.held.take().map(|(_, host)| host),
                _ => self.chunk_forward(&mut ws, &seqs[chunk.clone()], batch.temp(), true)?.1,
            };
            let Some(host) = held else { continue }; // no rows
            // the response rows of each sequence, and their gradient
            let mut response_rows = Vec::with_capacity(chunk.len());
            let mut row_dlogp = Vec::with_capacity(chunk.len());
            for (k, i) in chunk.clone().enumerate() {
                let r = batch.response_range(i);
                response_rows.push(host.seqs[k].start + r.start..host.seqs[k].start + r.end);
                row_dlogp.push(dlogp.slice(offsets[i]..offsets[i + 1]));
            }
            self.chunk_backward(&mut ws, &host, &row_dlogp, &response_rows, batch.temp(), grads, tied.as_mut())?;
        }
        if let Some(g) = tied {
            // the gather part, summed apart over every chunk, joins the head's part
            let plan = EmbeddingGradPlan::new(&self.gpu, &g.ids, self.cfg.vocab_size)?;
            embedding_bwd(&self.gpu, &mut grads.slice_mut(self.layout.embed.clone()), &g.table.as_view(), &plan, self.cfg.hidden_size)?;
        }
        Ok(())
    }

    /// The compact gather table of tied embeddings for the ids of `seqs`.
    fn tied_gather(&self, seqs: &[&[u32]]) -> Result<TiedGather> {
        let mut ids: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut row_of = vec![u32::MAX; self.cfg.vocab_size];
        for (r, &id) in ids.iter().enumerate() {
            row_of[id as usize] = r as u32;
        }
        let table = self.gpu.alloc_zeros::<f32>(ids.len() * self.cfg.hidden_size)?;
        Ok(TiedGather { ids, row_of, table })
    }

    /// The backward of one chunk whose forward (with record) the workspace holds. `response_rows`:
    /// the rows of each sequence whose log-probs carry a gradient; `dlogp`: the gradient of each
    /// sequence's response rows (as long), on the device.
    #[allow(clippy::too_many_arguments)]
    fn chunk_backward(
        &self,
        ws: &mut TrainWorkspace<T>,
        host: &ChunkRows,
        dlogp: &[DView<f32>],
        response_rows: &[Range<usize>],
        temp: f64,
        grads: &mut DViewMut<f32>,
        tied: Option<&mut TiedGather>,
    ) -> Result<()> {
        let gpu = &*self.gpu;
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let n = host.ids.len();
        let longest_response = response_rows.iter().map(|r| r.len()).max().unwrap_or(0);
        ws.backward(gpu, &self.cfg, n, longest_response)?;
        let TrainWorkspace { forward: Some(acts), backward: Some(b), head: Some(scratch), .. } = ws else {
            unreachable!("the chunk's forward filled the workspace and its backward buffers were made above")
        };
        let rc = 0..n * c;
        gpu.memset_zero(&mut b.dx.slice_mut(rc.clone()))?;
        gpu.memset_zero(&mut b.dh.slice_mut(rc.clone()))?;
        {
            // head: logits recomputed by vocabulary chunks, dW_lm summed per sequence in order; dh = dhf
            let lm = self.params.slice(self.layout.lm_head.clone());
            let mut dw_lm = grads.slice_mut(self.layout.lm_head.clone());
            for (r, g) in response_rows.iter().zip(dlogp).filter(|(r, _)| !r.is_empty()) {
                scratch.set_targets(gpu, &host.targets[r.clone()])?;
                let rows = r.start * c..r.end * c;
                let (lse, h) = (acts.lse.slice(r.clone()), acts.hf.slice(rows.clone()));
                head_bwd_with(gpu, scratch, &mut b.dh.slice_mut(rows), &mut dw_lm, g, &lse, &h, &lm, r.len(), c, v, temp)?;
            }
            let norm = self.params.slice(self.layout.final_norm.clone());
            let mut dw = grads.slice_mut(self.layout.final_norm.clone());
            self.norm_grads(&mut b.dx, &mut dw, &mut b.dw_part, &b.dh, &acts.x_final, &norm, &acts.rstd_f, &host.seqs)?;
        }
        gpu.memset_zero(&mut b.delta.slice_mut(0..n * self.cfg.num_attention_heads))?;
        for (lr, a) in self.layout.layers.iter().zip(&acts.layers).rev() {
            self.layer_bwd(lr, a, acts, host, b, grads)?;
        }
        // the embedding's gather: rows of one id in row order (EmbeddingGradPlan), chunk after chunk
        let dx = b.dx.slice(rc);
        match tied {
            None => {
                let plan = EmbeddingGradPlan::new(gpu, &host.ids, v)?;
                embedding_bwd(gpu, &mut grads.slice_mut(self.layout.embed.clone()), &dx, &plan, c)
            }
            Some(g) => {
                let compact: Vec<u32> = host.ids.iter().map(|&id| g.row_of[id as usize]).collect();
                let plan = EmbeddingGradPlan::new(gpu, &compact, g.ids.len())?;
                embedding_bwd(gpu, &mut g.table.as_view_mut(), &dx, &plan, c)
            }
        }
    }

    /// One decoder layer's backward (the reverse listing of [`GpuModel::layer_fwd`]): `b.dx` holds
    /// d loss / d x_out on entry and d loss / d x_in on return; weight gradients add to `grads`.
    fn layer_bwd(&self, lr: &LayerRanges, a: &LayerActs<T>, acts: &Activations<T>, host: &ChunkRows, b: &mut BackwardBuffers<T>, grads: &mut DViewMut<f32>) -> Result<()> {
        let gpu = &*self.gpu;
        let cfg = &self.cfg;
        let (c, ff, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (nh, nkv, qd, kvd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.q_dim(), cfg.kv_dim());
        let n = host.ids.len();
        let seqs = &host.seqs;
        let w = |r: &Range<usize>| self.params.slice(r.clone());
        let dx_tile = |d_in: usize| MatmulTile::choose(gpu, n, d_in);
        let (rc, rq, rkv, rff, rgu) = (0..n * c, 0..n * qd, 0..n * kvd, 0..n * ff, 0..n * 2 * ff);

        // MLP branch: x_out = act·Wdᵀ + x_mid; the residual passes dx through unchanged
        gpu.memset_zero(&mut b.dproj_in.slice_mut(rff.clone()))?;
        matmul_bwd_dx(gpu, dx_tile(ff), &mut b.dproj_in.slice_mut(rff.clone()), &b.dx.slice(rc.clone()), &w(&lr.down_w), n, ff, c)?;
        self.linear_grads(&mut grads.slice_mut(lr.down_w.clone()), None, &b.dx, &a.act, ff, c, seqs)?;
        gpu.memset_zero(&mut b.dgu.slice_mut(rgu.clone()))?;
        swiglu_bwd(gpu, &mut b.dgu.slice_mut(rgu.clone()), &b.dproj_in.slice(rff), &a.gu.slice(rgu.clone()), n, ff)?;
        let gate_up = lr.gate_w.start..lr.up_w.end;
        gpu.memset_zero(&mut b.dh.slice_mut(rc.clone()))?;
        matmul_bwd_dx(gpu, dx_tile(c), &mut b.dh.slice_mut(rc.clone()), &b.dgu.slice(rgu), &w(&gate_up), n, c, 2 * ff)?;
        self.linear_grads(&mut grads.slice_mut(gate_up), None, &b.dgu, &a.h2, c, 2 * ff, seqs)?;
        self.norm_grads(&mut b.dx, &mut grads.slice_mut(lr.ln2_w.clone()), &mut b.dw_part, &b.dh, &a.x_mid, &w(&lr.ln2_w), &a.rstd2, seqs)?;

        // attention branch: x_mid = att·Woᵀ + x_in; dproj_in now holds datt
        gpu.memset_zero(&mut b.dproj_in.slice_mut(rq.clone()))?;
        matmul_bwd_dx(gpu, dx_tile(qd), &mut b.dproj_in.slice_mut(rq.clone()), &b.dx.slice(rc.clone()), &w(&lr.o_w), n, qd, c)?;
        self.linear_grads(&mut grads.slice_mut(lr.o_w.clone()), None, &b.dx, &a.att, qd, c, seqs)?;
        for (d, r) in [(&mut b.dq, &rq), (&mut b.dk, &rkv), (&mut b.dv, &rkv)] {
            gpu.memset_zero(&mut d.slice_mut(r.clone()))?;
        }
        attention_bwd(
            gpu,
            &mut b.dq.slice_mut(rq.clone()),
            &mut b.dk.slice_mut(rkv.clone()),
            &mut b.dv.slice_mut(rkv.clone()),
            &mut b.delta.slice_mut(0..n * nh),
            &b.dproj_in.slice(rq.clone()),
            &a.q.slice(rq.clone()),
            &a.k.slice(rkv.clone()),
            &a.v.slice(rkv.clone()),
            &a.att.slice(rq.clone()),
            &a.lse.slice(0..n * nh),
            &host.packed,
            self.heads(),
        )?;
        let (cos, sin, pos) = (self.cos.as_view(), self.sin.as_view(), acts.pos.slice(0..n));
        rope_bwd(gpu, &mut b.dq.slice_mut(rq.clone()), &pos, &cos, &sin, n, nh, hd)?;
        rope_bwd(gpu, &mut b.dk.slice_mut(rkv.clone()), &pos, &cos, &sin, n, nkv, hd)?;
        gpu.memset_zero(&mut b.dh.slice_mut(rc.clone()))?;
        for (dy, wr, br, d_out) in [(&b.dq, &lr.q_w, &lr.q_b, qd), (&b.dk, &lr.k_w, &lr.k_b, kvd), (&b.dv, &lr.v_w, &lr.v_b, kvd)] {
            matmul_bwd_dx(gpu, dx_tile(c), &mut b.dh.slice_mut(rc.clone()), &dy.slice(0..n * d_out), &w(wr), n, c, d_out)?;
            // weight and bias are adjacent in the layout: one view split in two
            assert_eq!(wr.end, br.start, "layout: a projection's bias follows its weight");
            let mut wb = grads.slice_mut(wr.start..br.end);
            let (mut dw, mut db) = wb.split_at_mut(wr.len());
            self.linear_grads(&mut dw, Some(&mut db), dy, &a.h1, c, d_out, seqs)?;
        }
        self.norm_grads(&mut b.dx, &mut grads.slice_mut(lr.ln1_w.clone()), &mut b.dw_part, &b.dh, &a.x_in, &w(&lr.ln1_w), &a.rstd1, seqs)
    }

    /// dw[o, i] += Σ_r dout[r, o]·x[r, i] and db[o] += Σ_r dout[r, o], one sum per sequence, added in
    /// sequence order (so a chunk boundary between sequences changes no sum).
    /// dout: [n, d_out]   x: [n, d_in]   dw: [d_out, d_in]   db: [d_out]
    #[allow(clippy::too_many_arguments)]
    fn linear_grads(
        &self,
        dw: &mut DViewMut<f32>,
        mut db: Option<&mut DViewMut<f32>>,
        dout: &DeviceBuffer<T>,
        x: &DeviceBuffer<T>,
        d_in: usize,
        d_out: usize,
        seqs: &[Range<usize>],
    ) -> Result<()> {
        let gpu = &*self.gpu;
        for r in seqs {
            let (dy, xs) = (dout.slice(r.start * d_out..r.end * d_out), x.slice(r.start * d_in..r.end * d_in));
            // split k (the sequence's tokens) when the weight has few tiles: the plan depends on the
            // sequence's length and the shape only, never on the chunk or the device, so the bits do not
            let plan = MatmulPlan::dw(gpu, r.len(), d_in, d_out);
            matmul_bwd_dw(gpu, plan, dw, &dy, &xs, r.len(), d_in, d_out)?;
            if let Some(db) = db.as_deref_mut() {
                matmul_bwd_db(gpu, db, &dy, r.len(), d_out)?;
            }
        }
        Ok(())
    }

    /// RMSNorm backward sequence by sequence: dx[rows] += …, dw += Σ over the sequence's rows (its
    /// 16-row partials then their sum), sequences in order. dx, dout, x: [n, c]   rstd: [n]
    #[allow(clippy::too_many_arguments)]
    fn norm_grads(
        &self,
        dx: &mut DeviceBuffer<T>,
        dw: &mut DViewMut<f32>,
        dw_part: &mut DeviceBuffer<f32>,
        dout: &DeviceBuffer<T>,
        x: &DeviceBuffer<T>,
        w: &DView<T>,
        rstd: &DeviceBuffer<f32>,
        seqs: &[Range<usize>],
    ) -> Result<()> {
        let c = self.cfg.hidden_size;
        for r in seqs {
            let (t, rows) = (r.len(), r.start * c..r.end * c);
            let mut part = dw_part.slice_mut(0..bwd_scratch_len(t, c));
            let (g, xs, s) = (dout.slice(rows.clone()), x.slice(rows.clone()), rstd.slice(r.clone()));
            rmsnorm_bwd(&self.gpu, &mut dx.slice_mut(rows), dw, &mut part, &g, &xs, w, &s, t, c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_runs_of_whole_sequences_within_the_budget() {
        assert_eq!(token_chunks(&[3, 4, 2, 5], 100), vec![0..4]);
        assert_eq!(token_chunks(&[3, 4, 2, 5], 7), vec![0..2, 2..4]);
        assert_eq!(token_chunks(&[3, 4, 2, 5], 6), vec![0..1, 1..3, 3..4]);
        // one sequence per chunk, and a sequence over the budget alone
        assert_eq!(token_chunks(&[3, 4, 2, 5], 1), vec![0..1, 1..2, 2..3, 3..4]);
        assert_eq!(token_chunks(&[9, 1, 1], 4), vec![0..1, 1..3]);
        // empty sequences ride along; no sequences, no chunks
        assert_eq!(token_chunks(&[0, 2, 0, 3], 2), vec![0..3, 3..4]);
        assert!(token_chunks(&[], 5).is_empty());
    }

    #[test]
    fn bytes_per_token_of_the_qwen_sizes() {
        // the figures of NOTES.md: Qwen2.5-0.5B and 1.5B in bf16, with and without a record
        let qwen = |c, ff, layers, nh, nkv| ModelConfig {
            hidden_size: c,
            intermediate_size: ff,
            num_hidden_layers: layers,
            num_attention_heads: nh,
            num_key_value_heads: nkv,
            head_dim: c / nh,
            ..crate::gradcheck::random_config(7)
        };
        let (small, large) = (qwen(896, 4864, 24, 14, 2), qwen(1536, 8960, 28, 12, 2));
        assert_eq!((bytes_per_token(&small, 2, true), bytes_per_token(&small, 2, false)), (1_011_244, 44_116));
        assert_eq!((bytes_per_token(&large, 2, true), bytes_per_token(&large, 2, false)), (2_122_212, 79_436));
        // the memory model's estimate, which sets the budget, covers the workspace (2,210,356 B at 1.5B)
        for cfg in [&small, &large] {
            let estimate = crate::gpu::memory::step_memory(cfg, 2).training_per_token();
            assert!(estimate >= bytes_per_token(cfg, 2, true) as u64, "{estimate}");
        }
    }

    #[test]
    fn the_default_chunk_comes_from_free_memory_through_the_memory_model() {
        let large = ModelConfig {
            hidden_size: 1536,
            intermediate_size: 8960,
            num_hidden_layers: 28,
            num_attention_heads: 12,
            num_key_value_heads: 2,
            head_dim: 128,
            ..crate::gradcheck::random_config(7)
        };
        // 16 GiB free: less 1 GiB and 1 GiB (a sixteenth), over 2,210,356 B per token (the memory
        // model's recorded forward + backward gradients of Qwen2.5-1.5B in bf16, NOTES.md)
        let free = 16u64 << 30;
        assert_eq!(chunk_budget_bytes(free), 15_032_385_536);
        assert_eq!(tokens_per_chunk::<crate::gpu::bf16>(&large, chunk_budget_bytes(free)), 6_800);
        // the simulator's fixed budget, and a device with less free than the margin
        assert_eq!(tokens_per_chunk::<crate::gpu::bf16>(&large, SIM_CHUNK_BYTES), 1_943);
        assert_eq!(chunk_budget_bytes(1 << 30), 0);
        assert_eq!(chunk_budget_bytes(0), 0);
    }
}
