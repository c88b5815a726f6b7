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
//! ([`Activations`]); nothing inside a layer is recomputed. [`bytes_per_token`] counts them. The
//! record of a scored batch ([`GpuRecord`]) holds those activations only when the whole batch was one
//! chunk; otherwise the backward recomputes each chunk's forward before its backward (one more forward
//! pass), so device memory is bounded by one chunk whatever the batch.
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
use crate::gpu::logprob::{head_bwd_with, head_logprob, HeadGradScratch};
use crate::gpu::matmul::{matmul_bwd_db, matmul_bwd_dw, matmul_bwd_dx, matmul_fwd, MatmulTile};
use crate::gpu::residual::residual_add;
use crate::gpu::rmsnorm::{bwd_scratch_len, rmsnorm_bwd, rmsnorm_fwd};
use crate::gpu::rope::{rope_bwd, rope_fwd};
use crate::gpu::swiglu::{swiglu_bwd, swiglu_fwd};
use crate::gpu::{DView, DViewMut, DeviceBuffer, GpuFloat};
use crate::layout::LayerRanges;
use crate::policy::{ScoreBatch, ScoredResponses};
use std::ops::Range;

/// The activation memory a chunk may use when no budget is set ([`GpuModel::set_max_tokens_per_chunk`]):
/// the default token budget is this over [`bytes_per_token`]. A placeholder until the device memory
/// estimate (src/gpu/memory.rs) sets the budget from what the device has.
pub const DEFAULT_CHUNK_BYTES: usize = 4 << 30;

/// Device bytes per token of one chunk, for elements of `elem` bytes (the storage type).
/// - `record`: every layer's [`LayerActs`] (x_in, h1, x_mid, h2: 4c; q, att: 2·q_dim; k, v: 2·kv_dim;
///   gu, act: 3·ff; rstd1, rstd2 and lse (nh) in f32), the chunk's residual output, hf and its f32
///   rows (rstd, lse, logp, ids, targets, positions), and the backward's buffers of one layer (dx,
///   dh2, dh1: 3c; dact, dgu: 3·ff; datt, dq: 2·q_dim; dk, dv: 2·kv_dim; delta (nh) and dlogp in f32).
/// - without: one layer's buffers (reused by every layer), the spare residual, hf and the f32 rows.
///
/// Not per token, so not counted: the head's scratch (≤ 4096 rows × 8192 ids of dlogits, the
/// log-prob partials of ≤ 4096 rows), the RMSNorm dw partials.
pub fn bytes_per_token(cfg: &ModelConfig, elem: usize, record: bool) -> usize {
    let (c, ff, qd, kvd, nh) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim(), cfg.num_attention_heads);
    // saturating: a config's sizes come from a file (an absurd one gives usize::MAX, never a wrap)
    let sum = |xs: &[usize]| xs.iter().fold(0usize, |a, &x| a.saturating_add(x));
    let elems = |xs: &[usize]| sum(xs).saturating_mul(elem);
    let layer = sum(&[elems(&[4 * c, 2 * qd, 2 * kvd, 3 * ff]), (2 + nh).saturating_mul(4)]);
    let chunk = sum(&[elems(&[2 * c]), 6 * 4]);
    let backward = sum(&[elems(&[3 * c, 3 * ff, 2 * qd, 2 * kvd]), (nh + 1).saturating_mul(4)]);
    if record {
        sum(&[cfg.num_hidden_layers.saturating_mul(layer), chunk, backward])
    } else {
        sum(&[layer, chunk])
    }
}

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
/// (the CPU's `LayerActs`, with lse instead of the probabilities and gate | up fused).
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
    fn new(m: &GpuModel<T>, n: usize, x_in: DeviceBuffer<T>) -> Result<Self> {
        let (gpu, cfg) = (&*m.gpu, &m.cfg);
        let (c, ff, qd, kvd, nh) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim(), cfg.num_attention_heads);
        Ok(LayerActs {
            x_in,
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

/// Everything the backward needs from one chunk's forward (the CPU's `Activations`).
pub struct Activations<T: GpuFloat> {
    /// token ids of the packed rows, and each sequence's row range
    pub ids: Vec<u32>,
    pub seqs: Vec<Range<usize>>,
    /// the next token of every row (0 on a sequence's last row, which predicts nothing)
    pub targets: Vec<u32>,
    /// position of every row within its sequence: [n] (the rotary's table lookup)
    pub pos: DeviceBuffer<i32>,
    pub packed: PackedSeqs,
    pub layers: Vec<LayerActs<T>>,
    pub x_final: DeviceBuffer<T>,
    pub rstd_f: DeviceBuffer<f32>,
    /// rmsnorm(x_final; norm), the head's input: [n, c]
    pub hf: DeviceBuffer<T>,
    /// log-sum-exp of every row's logits / temp: [n] f32 (the head backward's softmax)
    pub lse: DeviceBuffer<f32>,
}

/// What [`GpuModel::backward_into`] needs from a batch scored with `record`: the batch, its chunks
/// and, when the batch was one chunk, that chunk's activations (else the backward recomputes them).
pub struct GpuRecord<T: GpuFloat> {
    batch: ScoreBatch,
    chunks: Vec<Range<usize>>,
    kept: Option<Activations<T>>,
}

impl<T: GpuFloat> GpuRecord<T> {
    /// The sequence ranges of the chunks the scoring ran (the backward walks the same ones).
    pub fn chunks(&self) -> &[Range<usize>] {
        &self.chunks
    }

    /// Whether the activations were kept (one chunk) rather than recomputed by the backward.
    pub fn kept(&self) -> bool {
        self.kept.is_some()
    }
}

/// A forward over a batch of fresh sequences: the log-probs of every sequence (len − 1 each), the
/// sequence ranges of its chunks, and the activations of a batch that was one chunk (when recorded).
pub(super) struct Scoring<T: GpuFloat> {
    pub logp: Vec<Vec<f32>>,
    chunks: Vec<Range<usize>>,
    kept: Option<Activations<T>>,
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
    /// Sets the token budget of a chunk (`None`: [`DEFAULT_CHUNK_BYTES`] over [`bytes_per_token`]).
    pub fn set_max_tokens_per_chunk(&mut self, tokens: Option<usize>) -> Result<()> {
        if tokens == Some(0) {
            return Err(Error::input("max_tokens_per_chunk must be at least 1"));
        }
        self.chunk_tokens = tokens;
        Ok(())
    }

    /// The token budget of a chunk of a forward with or without `record`.
    pub fn max_tokens_per_chunk(&self, record: bool) -> usize {
        self.chunk_tokens.unwrap_or_else(|| (DEFAULT_CHUNK_BYTES / bytes_per_token(&self.cfg, size_of::<T>(), record)).max(1))
    }

    /// logp[s][t] = log softmax(logits(x_≤t) / temp)[x_{t+1}] of fresh sequences (len − 1 each), chunk
    /// by chunk without a KV cache; with `record`, the chunks of the backward and the activations of a
    /// batch that is one such chunk. The sequences and temperature were checked by the caller.
    pub(super) fn score_chunks(&self, seqs: &[&[u32]], temp: f64, record: bool) -> Result<Scoring<T>> {
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let chunks = token_chunks(&lens, self.max_tokens_per_chunk(record));
        let keep = record && chunks.len() == 1;
        // a forward that keeps nothing runs in the larger chunks of the budget without a record
        // (the log-probs are the same bits whatever the chunking)
        let forward = if keep { chunks.clone() } else { token_chunks(&lens, self.max_tokens_per_chunk(false)) };
        let mut logp = Vec::with_capacity(seqs.len());
        let mut kept = None;
        for chunk in &forward {
            let (rows, acts) = self.chunk_forward(&seqs[chunk.clone()], temp, keep)?;
            let mut row = 0;
            for s in &seqs[chunk.clone()] {
                logp.push(rows[row..row + s.len().saturating_sub(1)].to_vec());
                row += s.len();
            }
            kept = acts;
        }
        Ok(Scoring { logp, chunks, kept })
    }

    /// The response log-probs of a checked batch, and with `record` what the backward needs.
    pub(super) fn score_batch(&self, batch: &ScoreBatch, record: bool) -> Result<ScoredResponses<GpuRecord<T>>> {
        let Scoring { logp, chunks, kept } = self.score_chunks(&batch.seqs(), batch.temp(), record)?;
        let logp = logp.iter().enumerate().map(|(i, lp)| lp[batch.response_range(i)].iter().map(|&x| x as f64).collect()).collect();
        Ok(ScoredResponses { logp, record: record.then(|| GpuRecord { batch: batch.clone(), chunks, kept }) })
    }

    /// The forward of one chunk of fresh sequences: the log-prob of every row's next token ([n]; a
    /// sequence's last row gets a meaningless value) and, with `record`, the activations.
    fn chunk_forward(&self, seqs: &[&[u32]], temp: f64, record: bool) -> Result<(Vec<f32>, Option<Activations<T>>)> {
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
        let n = ids.len();
        if n == 0 {
            return Ok((Vec::new(), None));
        }
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let packed = PackedSeqs::new(gpu, &lens)?;
        let pos_d = gpu.htod(&pos)?;
        let ids_d = gpu.htod(&ids)?;
        let mut x0 = gpu.alloc_zeros::<T>(n * c)?;
        embedding_fwd(gpu, &mut x0.as_view_mut(), &ids_d.as_view(), &self.params.slice(self.layout.embed.clone()), n, c, v)?;
        let mut layers = Vec::with_capacity(if record { self.layout.layers.len() } else { 0 });
        let x_final = if record {
            let mut x = x0;
            for lr in &self.layout.layers {
                let mut a = LayerActs::new(self, n, x)?;
                let mut out = gpu.alloc_zeros::<T>(n * c)?;
                self.layer_fwd(lr, &mut a, &mut out, &pos_d, &packed)?;
                layers.push(a);
                x = out;
            }
            x
        } else {
            // one set of buffers for every layer: after each, its output becomes the next one's input
            // and the old input the next output's buffer
            let mut a = LayerActs::new(self, n, x0)?;
            let mut out = gpu.alloc_zeros::<T>(n * c)?;
            for lr in &self.layout.layers {
                self.layer_fwd(lr, &mut a, &mut out, &pos_d, &packed)?;
                std::mem::swap(&mut a.x_in, &mut out);
            }
            a.x_in
        };
        let eps = self.cfg.rms_norm_eps as f32;
        let mut hf = gpu.alloc_zeros::<T>(n * c)?;
        let mut rstd_f = gpu.alloc_zeros::<f32>(n)?;
        let norm = self.params.slice(self.layout.final_norm.clone());
        rmsnorm_fwd(gpu, &mut hf.as_view_mut(), &mut rstd_f.as_view_mut(), &x_final.as_view(), &norm, n, c, eps)?;
        let mut logp = gpu.alloc_zeros::<f32>(n)?;
        let mut lse = gpu.alloc_zeros::<f32>(n)?;
        let lm = self.params.slice(self.layout.lm_head.clone());
        head_logprob(gpu, &mut logp.as_view_mut(), &mut lse.as_view_mut(), &hf.as_view(), &lm, &targets, n, c, v, temp)?;
        let logp = gpu.dtoh(&logp)?;
        let acts = record.then(|| Activations { ids, seqs: rows, targets, pos: pos_d, packed, layers, x_final, rstd_f, hf, lse });
        Ok((logp, acts))
    }

    /// One decoder layer over a chunk: reads `a.x_in`, fills the rest of `a`, writes the layer's
    /// output (the next residual stream) to `x_out`.
    fn layer_fwd(&self, lr: &LayerRanges, a: &mut LayerActs<T>, x_out: &mut DeviceBuffer<T>, pos: &DeviceBuffer<i32>, packed: &PackedSeqs) -> Result<()> {
        let gpu = &*self.gpu;
        let cfg = &self.cfg;
        let (c, ff, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (nh, nkv, qd, kvd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.q_dim(), cfg.kv_dim());
        let eps = cfg.rms_norm_eps as f32;
        let n = packed.n_rows;
        let w = |r: &Range<usize>| self.params.slice(r.clone());
        let (cos, sin, pos) = (self.cos.as_view(), self.sin.as_view(), pos.as_view());

        rmsnorm_fwd(gpu, &mut a.h1.as_view_mut(), &mut a.rstd1.as_view_mut(), &a.x_in.as_view(), &w(&lr.ln1_w), n, c, eps)?;
        matmul_fwd(gpu, &mut a.q.as_view_mut(), &a.h1.as_view(), &w(&lr.q_w), Some(&w(&lr.q_b)), n, c, qd)?;
        matmul_fwd(gpu, &mut a.k.as_view_mut(), &a.h1.as_view(), &w(&lr.k_w), Some(&w(&lr.k_b)), n, c, kvd)?;
        matmul_fwd(gpu, &mut a.v.as_view_mut(), &a.h1.as_view(), &w(&lr.v_w), Some(&w(&lr.v_b)), n, c, kvd)?;
        rope_fwd(gpu, &mut a.q.as_view_mut(), &pos, &cos, &sin, n, nh, hd)?;
        rope_fwd(gpu, &mut a.k.as_view_mut(), &pos, &cos, &sin, n, nkv, hd)?;
        attention_fwd(gpu, &mut a.att.as_view_mut(), &mut a.lse.as_view_mut(), &a.q.as_view(), &a.k.as_view(), &a.v.as_view(), packed, self.heads())?;
        // x_mid = att·Woᵀ + x_in, written apart from x_in (the backward needs both); the f32 sum of
        // the two stored values is the cached forward's x + proj (addition commutes exactly)
        matmul_fwd(gpu, &mut a.x_mid.as_view_mut(), &a.att.as_view(), &w(&lr.o_w), None, n, qd, c)?;
        residual_add(gpu, &mut a.x_mid.as_view_mut(), &a.x_in.as_view())?;
        rmsnorm_fwd(gpu, &mut a.h2.as_view_mut(), &mut a.rstd2.as_view_mut(), &a.x_mid.as_view(), &w(&lr.ln2_w), n, c, eps)?;
        matmul_fwd(gpu, &mut a.gu.as_view_mut(), &a.h2.as_view(), &w(&(lr.gate_w.start..lr.up_w.end)), None, n, c, 2 * ff)?;
        swiglu_fwd(gpu, &mut a.act.as_view_mut(), &a.gu.as_view(), n, ff)?;
        matmul_fwd(gpu, &mut x_out.as_view_mut(), &a.act.as_view(), &w(&lr.down_w), None, n, ff, c)?;
        residual_add(gpu, &mut x_out.as_view_mut(), &a.x_mid.as_view())
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
        for chunk in &record.chunks {
            let recomputed;
            let acts = match &record.kept {
                Some(a) => a,
                None => {
                    recomputed = self.chunk_forward(&seqs[chunk.clone()], batch.temp(), true)?.1;
                    match &recomputed {
                        Some(a) => a,
                        None => continue, // no rows
                    }
                }
            };
            // the response rows of each sequence, and their gradient
            let mut response_rows = Vec::with_capacity(chunk.len());
            let mut row_dlogp = Vec::with_capacity(chunk.len());
            for (k, i) in chunk.clone().enumerate() {
                let r = batch.response_range(i);
                response_rows.push(acts.seqs[k].start + r.start..acts.seqs[k].start + r.end);
                row_dlogp.push(dlogp.slice(offsets[i]..offsets[i + 1]));
            }
            self.chunk_backward(acts, &row_dlogp, &response_rows, batch.temp(), grads, tied.as_mut())?;
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

    /// The backward of one chunk. `response_rows`: the rows of each sequence whose log-probs carry a
    /// gradient; `dlogp`: the gradient of each sequence's response rows (as long).
    fn chunk_backward(
        &self,
        acts: &Activations<T>,
        dlogp: &[DView<f32>],
        response_rows: &[Range<usize>],
        temp: f64,
        grads: &mut DViewMut<f32>,
        tied: Option<&mut TiedGather>,
    ) -> Result<()> {
        let gpu = &*self.gpu;
        let (c, v, nh) = (self.cfg.hidden_size, self.cfg.vocab_size, self.cfg.num_attention_heads);
        let n = acts.ids.len();
        let longest = acts.seqs.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut dw_part = gpu.alloc_zeros::<f32>(bwd_scratch_len(longest, c).max(1))?;
        let mut dx = gpu.alloc_zeros::<T>(n * c)?;
        {
            // head: logits recomputed by vocabulary chunks, dW_lm summed per sequence in order
            let mut dhf = gpu.alloc_zeros::<T>(n * c)?;
            let lm = self.params.slice(self.layout.lm_head.clone());
            let mut dw_lm = grads.slice_mut(self.layout.lm_head.clone());
            for (r, g) in response_rows.iter().zip(dlogp).filter(|(r, _)| !r.is_empty()) {
                let mut scratch = HeadGradScratch::<T>::new(gpu, &acts.targets[r.clone()], v)?;
                let rows = r.start * c..r.end * c;
                let (lse, h) = (acts.lse.slice(r.clone()), acts.hf.slice(rows.clone()));
                head_bwd_with(gpu, &mut scratch, &mut dhf.slice_mut(rows), &mut dw_lm, g, &lse, &h, &lm, r.len(), c, v, temp)?;
            }
            let norm = self.params.slice(self.layout.final_norm.clone());
            let mut dw = grads.slice_mut(self.layout.final_norm.clone());
            self.norm_grads(&mut dx, &mut dw, &mut dw_part, &dhf, &acts.x_final, &norm, &acts.rstd_f, &acts.seqs)?;
        }
        let mut delta = gpu.alloc_zeros::<f32>(n * nh)?;
        for (lr, a) in self.layout.layers.iter().zip(&acts.layers).rev() {
            self.layer_bwd(lr, a, acts, &mut dx, grads, &mut dw_part, &mut delta)?;
        }
        // the embedding's gather: rows of one id in row order (EmbeddingGradPlan), chunk after chunk
        match tied {
            None => {
                let plan = EmbeddingGradPlan::new(gpu, &acts.ids, v)?;
                embedding_bwd(gpu, &mut grads.slice_mut(self.layout.embed.clone()), &dx.as_view(), &plan, c)
            }
            Some(g) => {
                let compact: Vec<u32> = acts.ids.iter().map(|&id| g.row_of[id as usize]).collect();
                let plan = EmbeddingGradPlan::new(gpu, &compact, g.ids.len())?;
                embedding_bwd(gpu, &mut g.table.as_view_mut(), &dx.as_view(), &plan, c)
            }
        }
    }

    /// One decoder layer's backward (the reverse listing of [`GpuModel::layer_fwd`]): `dx` holds
    /// d loss / d x_out on entry and d loss / d x_in on return; weight gradients add to `grads`.
    #[allow(clippy::too_many_arguments)]
    fn layer_bwd(
        &self,
        lr: &LayerRanges,
        a: &LayerActs<T>,
        acts: &Activations<T>,
        dx: &mut DeviceBuffer<T>,
        grads: &mut DViewMut<f32>,
        dw_part: &mut DeviceBuffer<f32>,
        delta: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        let gpu = &*self.gpu;
        let cfg = &self.cfg;
        let (c, ff, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (nh, nkv, qd, kvd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.q_dim(), cfg.kv_dim());
        let n = acts.ids.len();
        let seqs = &acts.seqs;
        let w = |r: &Range<usize>| self.params.slice(r.clone());
        let dx_tile = |d_in: usize| MatmulTile::choose(gpu, n, d_in);

        // MLP branch: x_out = act·Wdᵀ + x_mid; the residual passes dx through unchanged
        let mut dact = gpu.alloc_zeros::<T>(n * ff)?;
        matmul_bwd_dx(gpu, dx_tile(ff), &mut dact.as_view_mut(), &dx.as_view(), &w(&lr.down_w), n, ff, c)?;
        self.linear_grads(&mut grads.slice_mut(lr.down_w.clone()), None, dx, &a.act, ff, c, seqs)?;
        let mut dgu = gpu.alloc_zeros::<T>(n * 2 * ff)?;
        swiglu_bwd(gpu, &mut dgu.as_view_mut(), &dact.as_view(), &a.gu.as_view(), n, ff)?;
        drop(dact);
        let gate_up = lr.gate_w.start..lr.up_w.end;
        let mut dh2 = gpu.alloc_zeros::<T>(n * c)?;
        matmul_bwd_dx(gpu, dx_tile(c), &mut dh2.as_view_mut(), &dgu.as_view(), &w(&gate_up), n, c, 2 * ff)?;
        self.linear_grads(&mut grads.slice_mut(gate_up), None, &dgu, &a.h2, c, 2 * ff, seqs)?;
        drop(dgu);
        self.norm_grads(dx, &mut grads.slice_mut(lr.ln2_w.clone()), dw_part, &dh2, &a.x_mid, &w(&lr.ln2_w), &a.rstd2, seqs)?;
        drop(dh2);

        // attention branch: x_mid = att·Woᵀ + x_in
        let mut datt = gpu.alloc_zeros::<T>(n * qd)?;
        matmul_bwd_dx(gpu, dx_tile(qd), &mut datt.as_view_mut(), &dx.as_view(), &w(&lr.o_w), n, qd, c)?;
        self.linear_grads(&mut grads.slice_mut(lr.o_w.clone()), None, dx, &a.att, qd, c, seqs)?;
        let (mut dq, mut dk, mut dv) = (gpu.alloc_zeros::<T>(n * qd)?, gpu.alloc_zeros::<T>(n * kvd)?, gpu.alloc_zeros::<T>(n * kvd)?);
        attention_bwd(
            gpu,
            &mut dq.as_view_mut(),
            &mut dk.as_view_mut(),
            &mut dv.as_view_mut(),
            &mut delta.as_view_mut(),
            &datt.as_view(),
            &a.q.as_view(),
            &a.k.as_view(),
            &a.v.as_view(),
            &a.att.as_view(),
            &a.lse.as_view(),
            &acts.packed,
            self.heads(),
        )?;
        drop(datt);
        let (cos, sin, pos) = (self.cos.as_view(), self.sin.as_view(), acts.pos.as_view());
        rope_bwd(gpu, &mut dq.as_view_mut(), &pos, &cos, &sin, n, nh, hd)?;
        rope_bwd(gpu, &mut dk.as_view_mut(), &pos, &cos, &sin, n, nkv, hd)?;
        let mut dh1 = gpu.alloc_zeros::<T>(n * c)?;
        for (dy, wr, br, d_out) in [(&dq, &lr.q_w, &lr.q_b, qd), (&dk, &lr.k_w, &lr.k_b, kvd), (&dv, &lr.v_w, &lr.v_b, kvd)] {
            matmul_bwd_dx(gpu, dx_tile(c), &mut dh1.as_view_mut(), &dy.as_view(), &w(wr), n, c, d_out)?;
            // weight and bias are adjacent in the layout: one view split in two
            assert_eq!(wr.end, br.start, "layout: a projection's bias follows its weight");
            let mut wb = grads.slice_mut(wr.start..br.end);
            let (mut dw, mut db) = wb.split_at_mut(wr.len());
            self.linear_grads(&mut dw, Some(&mut db), dy, &a.h1, c, d_out, seqs)?;
        }
        self.norm_grads(dx, &mut grads.slice_mut(lr.ln1_w.clone()), dw_part, &dh1, &a.x_in, &w(&lr.ln1_w), &a.rstd1, seqs)
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
        let tile = MatmulTile::choose(gpu, d_out, d_in);
        for r in seqs {
            let (dy, xs) = (dout.slice(r.start * d_out..r.end * d_out), x.slice(r.start * d_in..r.end * d_in));
            matmul_bwd_dw(gpu, tile, dw, &dy, &xs, r.len(), d_in, d_out)?;
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
        assert_eq!((bytes_per_token(&small, 2, true), bytes_per_token(&small, 2, false)), (1_014_612, 44_120));
        assert_eq!((bytes_per_token(&large, 2, true), bytes_per_token(&large, 2, false)), (2_127_980, 79_440));
        assert_eq!(DEFAULT_CHUNK_BYTES / 2_127_980, 2_018);
    }
}
