//! Qwen2 forward and backward on the CPU, generic over f32 and f64, written as a listing of the ops
//! in `crate::cpu` (the definitions the CUDA kernels are tested against).
//!
//! Sequences are packed, not padded: a batch is a list of token chunks of any lengths, laid end to end
//! as rows; every row-wise op runs on all rows at once and attention runs per sequence. Padding
//! therefore cannot change a valid output, by construction. Each chunk continues its sequence's KV cache
//! (empty for a fresh sequence), so a full forward, a prefill and one decoding step are the same code.
//!
//! One decoder layer (x: the residual stream, [n, c]):
//! ```text
//! h1 = rmsnorm(x; ln1)              q, k, v = h1·Wqᵀ+bq, h1·Wkᵀ+bk, h1·Wvᵀ+bv     rope(q), rope(k)
//! att = causal_gqa_attention(q, k, v)                         x_mid = x + att·Woᵀ
//! h2 = rmsnorm(x_mid; ln2)          act = silu(h2·Wgᵀ) ⊙ (h2·Wuᵀ)                 x_out = x_mid + act·Wdᵀ
//! ```
//! then logits = rmsnorm(x; norm)·W_lmᵀ (W_lm = the embedding when tied).

use crate::config::ModelConfig;
use crate::cpu::attention::{attention_bwd, attention_fwd, attention_head_infer, head_slices, AttnShape};
use crate::cpu::embedding::{embedding_bwd, embedding_fwd};
use crate::cpu::matmul::{matmul_bwd, matmul_fwd};
use crate::cpu::rmsnorm::{rmsnorm_bwd, rmsnorm_fwd};
use crate::cpu::rope::{rope_bwd, rope_fwd, rope_tables};
use crate::cpu::swiglu::{swiglu_bwd, swiglu_fwd};
use crate::cpu::{math, Float};
use crate::error::{check_len, Error, Result};
use crate::layout::ParamLayout;
use crate::optim::{AdamWConfig, AdamWState};
use crate::policy::{check_score_temperature, Chunks, Draw, HostState, Policy, Sampled, ScoreBatch, ScoredResponses};
use crate::rl::chunk::{ChunkObjective, ChunkResult};
use crate::rng::uniform;
use crate::sampling::sample_with_logp;
use rayon::prelude::*;
use std::ops::Range;
use std::path::Path;

/// A Qwen2 model: its config, its layout and its flat parameter buffer.
#[derive(Clone, Debug)]
pub struct Model<T: Float> {
    pub cfg: ModelConfig,
    pub layout: ParamLayout,
    pub params: Vec<T>,
}

/// Keys and values of every layer for each sequence of a batch.  k[layer][seq]: [len, kv_dim]
#[derive(Clone, Debug)]
pub struct KvCache<T: Float> {
    pub k: Vec<Vec<Vec<T>>>,
    pub v: Vec<Vec<Vec<T>>>,
    pub lens: Vec<usize>,
}

impl<T: Float> KvCache<T> {
    /// An empty cache that grows as tokens arrive (by doubling: up to 2× the final size, plus a copy
    /// while it grows). Prefer [`KvCache::with_capacity`] when the final length is known.
    pub fn new(cfg: &ModelConfig, n_seqs: usize) -> Self {
        let empty = vec![vec![Vec::new(); n_seqs]; cfg.num_hidden_layers];
        KvCache { k: empty.clone(), v: empty, lens: vec![0; n_seqs] }
    }

    /// An empty cache with room for `max_len` tokens per sequence, allocated once: what the memory
    /// estimate counts (`2 · layers · n_seqs · max_len · kv_dim` elements). Longer sequences still
    /// work (the buffers then grow).
    pub fn with_capacity(cfg: &ModelConfig, n_seqs: usize, max_len: usize) -> Self {
        let per_seq = max_len.saturating_mul(cfg.kv_dim());
        let make = || (0..cfg.num_hidden_layers).map(|_| (0..n_seqs).map(|_| Vec::with_capacity(per_seq)).collect()).collect();
        KvCache { k: make(), v: make(), lens: vec![0; n_seqs] }
    }
}

/// Rows of the lm head computed at once by the scoring path: [`HEAD_ROWS`, vocab] logits exist at a
/// time, never [tokens, vocab] (151936 × 4 bytes = 0.6 MB per row at real vocab sizes).
pub const HEAD_ROWS: usize = 64;

/// Per-layer activations kept for the backward pass.  All [n, ·] over the packed rows.
#[derive(Clone, Debug, Default)]
pub struct LayerActs<T> {
    pub x_in: Vec<T>,
    pub rstd1: Vec<T>,
    pub h1: Vec<T>,
    pub q: Vec<T>,
    pub k: Vec<T>,
    pub v: Vec<T>,
    /// per sequence: [nh, t, t]
    pub probs: Vec<Vec<T>>,
    pub att: Vec<T>,
    pub x_mid: Vec<T>,
    pub rstd2: Vec<T>,
    pub h2: Vec<T>,
    pub gate: Vec<T>,
    pub up: Vec<T>,
    pub act: Vec<T>,
}

/// Everything the backward pass needs from a forward over fresh sequences.
#[derive(Clone, Debug, Default)]
pub struct Activations<T> {
    pub ids: Vec<u32>,
    /// row range of each sequence
    pub seqs: Vec<Range<usize>>,
    pub cos: Vec<T>,
    pub sin: Vec<T>,
    pub layers: Vec<LayerActs<T>>,
    pub x_final: Vec<T>,
    pub rstd_f: Vec<T>,
    pub hf: Vec<T>,
}

impl<T: Float> Model<T> {
    /// Loads config.json and the safetensors weights of a Hugging Face checkpoint folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg = ModelConfig::from_dir(dir)?;
        let layout = ParamLayout::new(&cfg);
        let params = crate::weights::load_params(dir, &layout)?;
        Ok(Model { cfg, layout, params })
    }

    pub fn from_params(cfg: ModelConfig, params: Vec<T>) -> Self {
        let layout = ParamLayout::new(&cfg);
        assert_eq!(params.len(), layout.total, "Model::from_params: buffer does not match the config");
        Model { cfg, layout, params }
    }

    /// The same model in another float type.
    pub fn cast<U: Float>(&self) -> Model<U> {
        Model { cfg: self.cfg.clone(), layout: self.layout.clone(), params: self.params.iter().map(|p| U::from_f64(p.to_f64())).collect() }
    }

    fn w(&self, r: &Range<usize>) -> &[T] {
        &self.params[r.clone()]
    }

    /// Checks a batch of chunks by position (chunk s continues sequence s of a cache holding lens[s]
    /// tokens) against the config: [`Chunks`], the one check of every device.
    fn check_chunks(&self, lens: &[usize], chunks: &[&[u32]]) -> Result<()> {
        if chunks.len() != lens.len() {
            return Err(Error::input(format!("{} token chunks for a cache of {} sequences", chunks.len(), lens.len())));
        }
        Chunks::new(&self.cfg, lens, usize::MAX, chunks.iter().copied().enumerate().collect()).map(|_| ())
    }

    /// Runs `chunks[s]` through the model after the cached prefix of sequence s, appends their keys and
    /// values to the cache, and returns the logits of every new row: [Σ_s len(chunks[s]), vocab].
    /// With `acts`, also records what [`Model::backward`] needs (only valid for an empty cache).
    pub fn forward(&self, cache: &mut KvCache<T>, chunks: &[&[u32]], acts: Option<&mut Activations<T>>) -> Result<Vec<T>> {
        self.check_chunks(&cache.lens, chunks)?;
        let (x, ids, seqs, cos, sin, layer_acts) = self.decoder(Some(cache), chunks, acts.is_some())?;
        let (hf, rstd_f) = self.final_norm(&x);
        let logits = self.lm_head(&hf);
        if let Some(a) = acts {
            *a = Activations { ids, seqs, cos, sin, layers: layer_acts, x_final: x, rstd_f, hf };
        }
        Ok(logits)
    }

    /// Like [`Model::forward`], but returns only the logits of the last new row of each sequence with a
    /// non-empty chunk ([that many, vocab]): what decoding needs, without [prompt rows × vocab] logits.
    pub fn forward_last(&self, cache: &mut KvCache<T>, chunks: &[&[u32]]) -> Result<Vec<T>> {
        self.check_chunks(&cache.lens, chunks)?;
        self.forward_last_checked(cache, chunks)
    }

    /// [`Model::forward_last`] of chunks already checked against the cache.
    fn forward_last_checked(&self, cache: &mut KvCache<T>, chunks: &[&[u32]]) -> Result<Vec<T>> {
        let (x, _, seqs, _, _, _) = self.decoder(Some(cache), chunks, false)?;
        let c = self.cfg.hidden_size;
        let last: Vec<T> = seqs.iter().filter(|r| !r.is_empty()).flat_map(|r| x[(r.end - 1) * c..r.end * c].iter().copied()).collect();
        Ok(self.lm_head(&self.final_norm(&last).0))
    }

    /// The final RMSNorm of residual rows x: [n, c] → (hf [n, c], rstd [n]).
    fn final_norm(&self, x: &[T]) -> (Vec<T>, Vec<T>) {
        let c = self.cfg.hidden_size;
        let n = x.len() / c;
        let (mut hf, mut rstd) = (vec![T::ZERO; n * c], vec![T::ZERO; n]);
        rmsnorm_fwd(&mut hf, &mut rstd, x, self.w(&self.layout.final_norm), c, self.cfg.rms_norm_eps);
        (hf, rstd)
    }

    /// The lm head of normed rows: hf [n, c] → logits [n, vocab].
    fn lm_head(&self, hf: &[T]) -> Vec<T> {
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let n = hf.len() / c;
        let mut logits = vec![T::ZERO; n * v];
        matmul_fwd(&mut logits, hf, self.w(&self.layout.lm_head), None, n, c, v);
        logits
    }

    /// Embedding and decoder layers: the residual stream after the last layer, [n, c], plus the packed
    /// ids, row ranges, rope tables and (with `record`) the per-layer activations. The chunks were
    /// checked by the caller ([`Model::check_chunks`]).
    /// `cache`: `None` for fresh sequences whose keys and values are not kept (scoring): attention then
    /// reads this chunk's own keys and values, and no cache is built.
    #[allow(clippy::type_complexity)]
    fn decoder(
        &self,
        mut cache: Option<&mut KvCache<T>>,
        chunks: &[&[u32]],
        record: bool,
    ) -> Result<(Vec<T>, Vec<u32>, Vec<Range<usize>>, Vec<T>, Vec<T>, Vec<LayerActs<T>>)> {
        let fresh = vec![0; chunks.len()];
        let lens: Vec<usize> = cache.as_ref().map_or(fresh, |c| c.lens.clone());
        let cfg = &self.cfg;
        let (c, ff, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (nh, nkv, qd, kvd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.q_dim(), cfg.kv_dim());
        let eps = cfg.rms_norm_eps;
        assert!(!record || lens.iter().all(|&l| l == 0), "activations are recorded for fresh sequences only");

        // packed rows: ids, positions and the row range of each sequence
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut seqs = Vec::with_capacity(chunks.len());
        for (s, chunk) in chunks.iter().enumerate() {
            seqs.push(ids.len()..ids.len() + chunk.len());
            ids.extend_from_slice(chunk);
            positions.extend(lens[s]..lens[s] + chunk.len());
        }
        let n = ids.len();
        let (cos, sin) = rope_tables::<T>(&positions, hd, cfg.rope_theta);

        let mut x = vec![T::ZERO; n * c];
        embedding_fwd(&mut x, &ids, self.w(&self.layout.embed), c);
        let mut layer_acts = Vec::new();
        for (l, lr) in self.layout.layers.iter().enumerate() {
            let mut rstd1 = vec![T::ZERO; n];
            let mut h1 = vec![T::ZERO; n * c];
            rmsnorm_fwd(&mut h1, &mut rstd1, &x, self.w(&lr.ln1_w), c, eps);
            let (mut q, mut k, mut vv) = (vec![T::ZERO; n * qd], vec![T::ZERO; n * kvd], vec![T::ZERO; n * kvd]);
            matmul_fwd(&mut q, &h1, self.w(&lr.q_w), Some(self.w(&lr.q_b)), n, c, qd);
            matmul_fwd(&mut k, &h1, self.w(&lr.k_w), Some(self.w(&lr.k_b)), n, c, kvd);
            matmul_fwd(&mut vv, &h1, self.w(&lr.v_w), Some(self.w(&lr.v_b)), n, c, kvd);
            rope_fwd(&mut q, &cos, &sin, nh, hd);
            rope_fwd(&mut k, &cos, &sin, nkv, hd);

            // append the new keys/values, then attend per sequence over the whole cache
            if let Some(cache) = cache.as_deref_mut() {
                for (s, rows) in seqs.iter().enumerate() {
                    cache.k[l][s].extend_from_slice(&k[rows.start * kvd..rows.end * kvd]);
                    cache.v[l][s].extend_from_slice(&vv[rows.start * kvd..rows.end * kvd]);
                }
            }
            // keys and values of sequence s: the cache, or (no cache) this chunk's own rows
            let keys_values = |s: usize| -> (&[T], &[T]) {
                match cache.as_deref() {
                    Some(cache) => (&cache.k[l][s], &cache.v[l][s]),
                    None => (&k[seqs[s].start * kvd..seqs[s].end * kvd], &vv[seqs[s].start * kvd..seqs[s].end * kvd]),
                }
            };
            let shape = |s: usize| AttnShape { tq: seqs[s].len(), tk: lens[s] + seqs[s].len(), nh, nkv, hd };
            let mut att = vec![T::ZERO; n * qd];
            let seq_lens: Vec<usize> = seqs.iter().map(|r| r.len()).collect();
            let per_seq_out = split_rows(&mut att, &seq_lens, qd);
            let mut probs_all = Vec::new();
            if record {
                // training: every sequence's probabilities [nh, t, t] are kept for the backward
                probs_all = per_seq_out
                    .into_par_iter()
                    .enumerate()
                    .map(|(s, out)| {
                        let shape = shape(s);
                        let (ks, vs) = keys_values(s);
                        let mut probs = vec![T::ZERO; nh * shape.tq * shape.tk];
                        attention_fwd(out, &mut probs, &q[seqs[s].start * qd..seqs[s].end * qd], ks, vs, shape);
                        probs
                    })
                    .collect();
            } else {
                // inference: one task per (sequence, head), one [tk] row of probabilities each
                let mut tasks = Vec::with_capacity(seqs.len() * nh);
                for (s, out) in per_seq_out.into_iter().enumerate().filter(|(s, _)| !seqs[*s].is_empty()) {
                    tasks.extend(head_slices(out, nh, hd).into_iter().enumerate().map(|(h, rows)| (s, h, rows)));
                }
                tasks.into_par_iter().for_each(|(s, h, mut rows)| {
                    let (ks, vs) = keys_values(s);
                    attention_head_infer(&mut rows, &q[seqs[s].start * qd..seqs[s].end * qd], ks, vs, shape(s), h);
                });
            }

            let x_in = if record { x.clone() } else { Vec::new() };
            let mut proj = vec![T::ZERO; n * c];
            matmul_fwd(&mut proj, &att, self.w(&lr.o_w), None, n, qd, c);
            for (xi, pi) in x.iter_mut().zip(&proj) {
                *xi += *pi;
            }
            let x_mid = if record { x.clone() } else { Vec::new() };
            let mut rstd2 = vec![T::ZERO; n];
            let mut h2 = vec![T::ZERO; n * c];
            rmsnorm_fwd(&mut h2, &mut rstd2, &x, self.w(&lr.ln2_w), c, eps);
            let (mut gate, mut up, mut act) = (vec![T::ZERO; n * ff], vec![T::ZERO; n * ff], vec![T::ZERO; n * ff]);
            matmul_fwd(&mut gate, &h2, self.w(&lr.gate_w), None, n, c, ff);
            matmul_fwd(&mut up, &h2, self.w(&lr.up_w), None, n, c, ff);
            swiglu_fwd(&mut act, &gate, &up);
            matmul_fwd(&mut proj, &act, self.w(&lr.down_w), None, n, ff, c);
            for (xi, pi) in x.iter_mut().zip(&proj) {
                *xi += *pi;
            }
            if record {
                layer_acts.push(LayerActs { x_in, rstd1, h1, q, k, v: vv, probs: probs_all, att, x_mid, rstd2, h2, gate, up, act });
            }
        }
        if let Some(cache) = cache {
            for (s, rows) in seqs.iter().enumerate() {
                cache.lens[s] += rows.len();
            }
        }
        Ok((x, ids, seqs, cos, sin, layer_acts))
    }

    /// Logits of fresh sequences (no cache kept): [Σ len, vocab]. This is [tokens × vocab] numbers;
    /// for log-probs of long sequences use [`Model::score`], which never holds them all.
    pub fn logits(&self, seqs: &[&[u32]]) -> Result<Vec<T>> {
        self.check_chunks(&vec![0; seqs.len()], seqs)?;
        let (x, _, _, _, _, _) = self.decoder(None, seqs, false)?;
        Ok(self.lm_head(&self.final_norm(&x).0))
    }

    /// Gradient of a scalar loss w.r.t. every parameter, given d loss / d logits of every row of the
    /// forward that recorded `acts`.  dlogits: [n, vocab]; returns a flat buffer in layout order.
    /// ([`Model::score_backward`] does the same from d loss / d logp without [n, vocab] buffers.)
    pub fn backward(&self, acts: &Activations<T>, dlogits: &[T]) -> Vec<T> {
        let (c, v, n) = (self.cfg.hidden_size, self.cfg.vocab_size, acts.ids.len());
        assert_eq!(dlogits.len(), n * v, "backward: dlogits does not match the recorded forward");
        let mut grads = vec![T::ZERO; self.layout.total];
        // head: logits = hf · W_lmᵀ
        let mut dhf = vec![T::ZERO; n * c];
        matmul_bwd(&mut dhf, &mut grads[self.layout.lm_head.clone()], None, dlogits, &acts.hf, self.w(&self.layout.lm_head), n, c, v);
        self.backward_from_hf(acts, &dhf, &mut grads);
        grads
    }

    /// The backward below the lm head: from d loss / d hf (hf = rmsnorm(x_final), [n, c]) through the
    /// final norm, every layer and the embedding, accumulating into `grads` (which already holds the
    /// lm head's gradient).
    fn backward_from_hf(&self, acts: &Activations<T>, dhf: &[T], grads: &mut [T]) {
        let cfg = &self.cfg;
        let (c, ff, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (nh, nkv, qd, kvd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.q_dim(), cfg.kv_dim());
        let n = acts.ids.len();
        assert_eq!(acts.layers.len(), cfg.num_hidden_layers, "backward: the forward recorded no activations");
        let mut dx = vec![T::ZERO; n * c];
        rmsnorm_bwd(&mut dx, &mut grads[self.layout.final_norm.clone()], dhf, &acts.x_final, self.w(&self.layout.final_norm), &acts.rstd_f, c);

        for (lr, a) in self.layout.layers.iter().zip(&acts.layers).rev() {
            // MLP branch: x_out = x_mid + act·Wdᵀ; the residual passes dx through unchanged
            let mut dact = vec![T::ZERO; n * ff];
            matmul_bwd(&mut dact, &mut grads[lr.down_w.clone()], None, &dx, &a.act, self.w(&lr.down_w), n, ff, c);
            let (mut dgate, mut dup) = (vec![T::ZERO; n * ff], vec![T::ZERO; n * ff]);
            swiglu_bwd(&mut dgate, &mut dup, &dact, &a.gate, &a.up);
            let mut dh2 = vec![T::ZERO; n * c];
            matmul_bwd(&mut dh2, &mut grads[lr.gate_w.clone()], None, &dgate, &a.h2, self.w(&lr.gate_w), n, c, ff);
            matmul_bwd(&mut dh2, &mut grads[lr.up_w.clone()], None, &dup, &a.h2, self.w(&lr.up_w), n, c, ff);
            rmsnorm_bwd(&mut dx, &mut grads[lr.ln2_w.clone()], &dh2, &a.x_mid, self.w(&lr.ln2_w), &a.rstd2, c);

            // attention branch: x_mid = x_in + att·Woᵀ
            let mut datt = vec![T::ZERO; n * qd];
            matmul_bwd(&mut datt, &mut grads[lr.o_w.clone()], None, &dx, &a.att, self.w(&lr.o_w), n, qd, c);
            let (mut dq, mut dk, mut dv) = (vec![T::ZERO; n * qd], vec![T::ZERO; n * kvd], vec![T::ZERO; n * kvd]);
            // sequences in parallel: each writes its own rows of dq, dk and dv
            let lens: Vec<usize> = acts.seqs.iter().map(|r| r.len()).collect();
            let (dq_s, dk_s, dv_s) = (split_rows(&mut dq, &lens, qd), split_rows(&mut dk, &lens, kvd), split_rows(&mut dv, &lens, kvd));
            (dq_s, dk_s, dv_s, &acts.seqs, &a.probs).into_par_iter().for_each(|(dq, dk, dv, rows, probs)| {
                let (q, kv) = (rows.start * qd..rows.end * qd, rows.start * kvd..rows.end * kvd);
                let t = rows.len();
                attention_bwd(dq, dk, dv, &datt[q.clone()], &a.q[q], &a.k[kv.clone()], &a.v[kv], probs, AttnShape { tq: t, tk: t, nh, nkv, hd });
            });
            rope_bwd(&mut dq, &acts.cos, &acts.sin, nh, hd);
            rope_bwd(&mut dk, &acts.cos, &acts.sin, nkv, hd);
            let mut dh1 = vec![T::ZERO; n * c];
            for (dy, w, b, d_out) in [(&dq, &lr.q_w, &lr.q_b, qd), (&dk, &lr.k_w, &lr.k_b, kvd), (&dv, &lr.v_w, &lr.v_b, kvd)] {
                let (dw, db) = split_two(grads, w, b);
                matmul_bwd(&mut dh1, dw, Some(db), dy, &a.h1, self.w(w), n, c, d_out);
            }
            rmsnorm_bwd(&mut dx, &mut grads[lr.ln1_w.clone()], &dh1, &a.x_in, self.w(&lr.ln1_w), &a.rstd1, c);
        }
        // tied: the lm-head contribution is already in the embedding's range; this adds the gather's
        embedding_bwd(&mut grads[self.layout.embed.clone()], &dx, &acts.ids, c);
    }
}

/// Consecutive pieces of `buf` of lens[s] rows of `width` each (the packed sequences' rows).
fn split_rows<'a, T>(buf: &'a mut [T], lens: &[usize], width: usize) -> Vec<&'a mut [T]> {
    let mut rest = buf;
    lens.iter()
        .map(|&len| {
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(len * width);
            rest = tail;
            mine
        })
        .collect()
}

/// Two disjoint mutable ranges of one buffer (a weight and its bias), `a` before `b`.
fn split_two<'a, T>(buf: &'a mut [T], a: &Range<usize>, b: &Range<usize>) -> (&'a mut [T], &'a mut [T]) {
    assert!(a.end <= b.start, "split_two: ranges out of order");
    let (lo, hi) = buf.split_at_mut(b.start);
    (&mut lo[a.clone()], &mut hi[..b.len()])
}

/// Token log-probabilities of whole sequences and what their backward needs.
#[derive(Clone, Debug, Default)]
pub struct Scored<T> {
    /// logp[s][t] = log softmax(logits(x_≤t) / temp)[x_{t+1}],  len(seq s) − 1 entries
    pub logp: Vec<Vec<T>>,
    /// the recorded forward (empty unless scored with `record`); `acts.hf` is what the head's
    /// backward recomputes the logits from, [`HEAD_ROWS`] rows at a time
    pub acts: Activations<T>,
    /// log-sum-exp of logits / temp of every row: [n]
    pub lse: Vec<T>,
    /// next token of every row (the last row of a sequence has none; it gets 0 and no gradient)
    pub targets: Vec<u32>,
    pub temp: f64,
}

impl<T: Float> Model<T> {
    /// Log-probabilities of every next token of each sequence under softmax(logits / temp).
    /// With `record`, keeps the activations for [`Model::score_backward`]. The lm head runs
    /// [`HEAD_ROWS`] rows at a time: [HEAD_ROWS, vocab] logits at most, whatever the batch.
    pub fn score(&self, seqs: &[&[u32]], temp: f64, record: bool) -> Result<Scored<T>> {
        check_score_temperature(temp)?;
        self.check_chunks(&vec![0; seqs.len()], seqs)?;
        self.score_checked(seqs, temp, record)
    }

    /// [`Model::score`] of sequences and a temperature already checked.
    fn score_checked(&self, seqs: &[&[u32]], temp: f64, record: bool) -> Result<Scored<T>> {
        let (x, ids, seq_rows, cos, sin, layers) = self.decoder(None, seqs, record)?;
        let n = ids.len();
        let (hf, rstd_f) = self.final_norm(&x);
        let targets: Vec<u32> = seqs.iter().flat_map(|s| s.iter().skip(1).copied().chain(s.first().map(|_| 0))).collect();
        let (mut logp_rows, mut lse) = (vec![T::ZERO; n], vec![T::ZERO; n]);
        self.head_blocks(&hf, |_| false, |rows, logits| {
            let r = rows.clone();
            crate::cpu::logprob::logprob_fwd(&mut logp_rows[r.clone()], &mut lse[r.clone()], logits, &targets[r], self.cfg.vocab_size, temp);
        });
        let mut logp = Vec::with_capacity(seqs.len());
        let mut row = 0;
        for s in seqs {
            logp.push(logp_rows[row..row + s.len().saturating_sub(1)].to_vec());
            row += s.len();
        }
        let acts = if record {
            Activations { ids, seqs: seq_rows, cos, sin, layers, x_final: x, rstd_f, hf }
        } else {
            Activations::default()
        };
        Ok(Scored { logp, acts, lse, targets, temp })
    }

    /// Calls `f(rows, logits)` for consecutive blocks of at most [`HEAD_ROWS`] rows of hf: [n, c],
    /// with logits = hf[rows] · W_lmᵀ ([rows.len(), vocab], one buffer reused). A block for which
    /// `skip(rows)` holds is passed over before its logits are computed.
    fn head_blocks(&self, hf: &[T], skip: impl Fn(&Range<usize>) -> bool, mut f: impl FnMut(Range<usize>, &[T])) {
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let n = hf.len() / c.max(1);
        let mut logits = vec![T::ZERO; HEAD_ROWS.min(n) * v];
        for r0 in (0..n).step_by(HEAD_ROWS) {
            let r1 = (r0 + HEAD_ROWS).min(n);
            if skip(&(r0..r1)) {
                continue;
            }
            let block = &mut logits[..(r1 - r0) * v];
            matmul_fwd(block, &hf[r0 * c..r1 * c], self.w(&self.layout.lm_head), None, r1 - r0, c, v);
            f(r0..r1, block);
        }
    }

    /// Parameter gradient of a loss given d loss / d logp[s][t] for the log-probs of [`Model::score`].
    /// The head's logits are recomputed from hf, [`HEAD_ROWS`] rows at a time (the same numbers as
    /// the forward's, bit for bit); d logits never exists for more rows than that.
    pub fn score_backward(&self, scored: &Scored<T>, dlogp: &[Vec<T>]) -> Vec<T> {
        assert!(!scored.acts.layers.is_empty(), "score_backward needs a score(.., record = true)");
        assert_eq!(dlogp.len(), scored.logp.len(), "score_backward: one dlogp row per sequence");
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let mut dlogp_rows = Vec::with_capacity(scored.targets.len());
        for (d, lp) in dlogp.iter().zip(&scored.logp) {
            assert_eq!(d.len(), lp.len(), "score_backward: dlogp row length");
            dlogp_rows.extend_from_slice(d);
            dlogp_rows.push(T::ZERO); // the last position predicts nothing
        }
        let n = scored.targets.len();
        let hf = &scored.acts.hf;
        let mut grads = vec![T::ZERO; self.layout.total];
        let mut dhf = vec![T::ZERO; n * c];
        let mut dlogits = vec![T::ZERO; HEAD_ROWS.min(n) * v];
        let lm = self.layout.lm_head.clone();
        // rows with no gradient (prompts, padding) contribute exactly nothing: a block made only of
        // them is skipped before its logits are recomputed
        let no_gradient = |rows: &Range<usize>| dlogp_rows[rows.clone()].iter().all(|&g| g == T::ZERO);
        self.head_blocks(hf, no_gradient, |rows, logits| {
            let m = rows.len();
            let dl = &mut dlogits[..m * v];
            dl.fill(T::ZERO);
            let r = rows.clone();
            crate::cpu::logprob::logprob_bwd(dl, &dlogp_rows[r.clone()], logits, &scored.lse[r.clone()], &scored.targets[r], v, scored.temp);
            let (r0, r1) = (rows.start, rows.end);
            matmul_bwd(&mut dhf[r0 * c..r1 * c], &mut grads[lm.clone()], None, dl, &hf[r0 * c..r1 * c], self.w(&lm), m, c, v);
        });
        self.backward_from_hf(&scored.acts, &dhf, &mut grads);
        grads
    }
}

impl<T: Float> Model<T> {
    /// A freshly initialised model (for training from scratch): linear weights and the embedding
    /// ~ N(0, std²) (GPT-2 / Qwen `initializer_range` style), RMSNorm weights 1, biases 0.
    /// Deterministic in `seed` (Box-Muller on Philox uniforms).
    pub fn random(cfg: ModelConfig, seed: u64, std: f64) -> Self {
        let layout = ParamLayout::new(&cfg);
        let mut params = vec![T::ZERO; layout.total];
        for (k, e) in layout.entries.iter().enumerate() {
            let p = &mut params[e.range()];
            if e.name.ends_with("norm.weight") {
                p.fill(T::ONE);
            } else if e.name.ends_with(".bias") {
                p.fill(T::ZERO);
            } else {
                // element i depends on (seed, k, i) only: the same numbers with any thread count
                p.par_iter_mut().enumerate().for_each(|(i, x)| {
                    let u1 = crate::rng::uniform(seed, k as u64, 2 * i as u64).max(f64::MIN_POSITIVE);
                    let u2 = crate::rng::uniform(seed, k as u64, 2 * i as u64 + 1);
                    *x = T::from_f64(std * (-2.0 * math::ln(u1)).sqrt() * math::cos(std::f64::consts::TAU * u2));
                });
            }
        }
        Model { cfg, layout, params }
    }
}

/// What [`Policy::backward_responses`] needs from the CPU model: the recorded scoring of whole
/// sequences and where each response starts.
pub struct Recorded<T> {
    pub scored: Scored<T>,
    pub prompt_lens: Vec<usize>,
}

/// On the CPU the gradient and the optimizer are host vectors in the model's float type, the
/// parameters are the master weights (no compute copy), and [`crate::optim`] is the arithmetic.
impl<T: Float> Policy for Model<T> {
    type Cache = KvCache<T>;
    type Logits = Vec<T>;
    type Record = Recorded<T>;
    type Grads = Vec<T>;
    type Optimizer = AdamWState<T>;
    /// `[n][L_i]` on the host, the rows of [`Policy::backward_responses`]
    type TokenGrad = Vec<Vec<f64>>;

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn device(&self) -> &'static str {
        "cpu"
    }

    fn n_params(&self) -> usize {
        self.layout.total
    }

    fn new_cache(&self, slots: usize, cap: usize) -> Result<KvCache<T>> {
        Ok(KvCache::with_capacity(&self.cfg, slots, cap))
    }

    fn cache_lens<'c>(&self, cache: &'c KvCache<T>) -> &'c [usize] {
        &cache.lens
    }

    /// The CPU cache grows past the capacity it was made with.
    fn cache_cap(&self, _: &KvCache<T>) -> usize {
        usize::MAX
    }

    fn forward_last(&self, cache: &mut KvCache<T>, chunks: &Chunks) -> Result<Vec<T>> {
        self.forward_last_checked(cache, &chunks.by_slot(cache.lens.len()))
    }

    fn logits_to_host(&self, logits: &Vec<T>) -> Result<Vec<f64>> {
        Ok(logits.iter().map(|x| x.to_f64()).collect())
    }

    fn sample(&self, _: &mut KvCache<T>, logits: &Vec<T>, draw: &Draw) -> Result<Sampled> {
        let v = self.cfg.vocab_size;
        check_len("sample", "logits", logits.len(), draw.streams.len() * v)?;
        check_logits(logits, v, draw.step)?;
        // in parallel: row r's uniform depends on (seed, stream, step) only, so the tokens do not
        // depend on the thread count
        let (tokens, logp) = logits
            .par_chunks(v.max(1))
            .zip(draw.streams)
            .map(|(row, &stream)| sample_with_logp(row, draw.params, uniform(draw.seed, stream, draw.step)))
            .unzip();
        Ok(Sampled { tokens, logp })
    }

    fn score_responses(&self, batch: &ScoreBatch, record: bool) -> Result<ScoredResponses<Recorded<T>>> {
        let scored = self.score_checked(&batch.seqs(), batch.temp(), record)?;
        let logp = (0..batch.len()).map(|i| scored.logp[i][batch.response_range(i)].iter().map(|x| x.to_f64()).collect()).collect();
        let record = record.then(|| Recorded { scored, prompt_lens: batch.prompt_lens().to_vec() });
        Ok(ScoredResponses { logp, record })
    }

    fn new_grads(&self) -> Result<Vec<T>> {
        Ok(vec![T::ZERO; self.layout.total])
    }

    fn zero_grads(&self, grads: &mut Vec<T>) -> Result<()> {
        check_len("zero_grads", "grads", grads.len(), self.layout.total)?;
        grads.fill(T::ZERO);
        Ok(())
    }

    /// [`crate::rl::chunk::host_objective`]: `rl::objectives` in f64 on the host log-probs.
    fn chunk_objective(&self, scored: &ScoredResponses<Recorded<T>>, obj: &ChunkObjective) -> Result<(ChunkResult, Vec<Vec<f64>>)> {
        crate::rl::chunk::host_objective(&scored.logp, obj)
    }

    fn backward_token_grad(&self, scored: &ScoredResponses<Recorded<T>>, dlogp: &Vec<Vec<f64>>, grads: &mut Vec<T>) -> Result<()> {
        self.backward_responses(scored, dlogp, grads)
    }

    /// The backward runs into a buffer of its own, added to `grads` element by element (one
    /// rounding per chunk and element, the order the trainer has always summed its chunks in).
    fn backward_responses(&self, scored: &ScoredResponses<Recorded<T>>, dlogp: &[Vec<f64>], grads: &mut Vec<T>) -> Result<()> {
        let rec = scored.recorded()?;
        check_len("backward_responses", "dlogp", dlogp.len(), scored.logp.len())?;
        check_len("backward_responses", "grads", grads.len(), self.layout.total)?;
        let mut rows = Vec::with_capacity(dlogp.len());
        for ((lp, d), (seq_lp, &p)) in scored.logp.iter().zip(dlogp).zip(rec.scored.logp.iter().zip(&rec.prompt_lens)) {
            check_len("backward_responses", "dlogp row", d.len(), lp.len())?;
            // prompt positions carry no gradient
            let mut row = vec![T::ZERO; seq_lp.len()];
            for (t, &g) in d.iter().enumerate() {
                row[p - 1 + t] = T::from_f64(g);
            }
            rows.push(row);
        }
        let g = self.score_backward(&rec.scored, &rows);
        grads.par_iter_mut().zip(&g).for_each(|(a, &b)| *a += b);
        Ok(())
    }

    fn clip_grad_norm(&self, grads: &mut Vec<T>, max_norm: f64) -> Result<f64> {
        check_len("clip_grad_norm", "grads", grads.len(), self.layout.total)?;
        Ok(crate::optim::clip_grad_norm(grads, max_norm))
    }

    fn grads_to_host(&self, grads: &Vec<T>) -> Result<Vec<f64>> {
        Ok(grads.iter().map(|g| g.to_f64()).collect())
    }

    fn new_optimizer(&self) -> Result<AdamWState<T>> {
        Ok(AdamWState::new(self.layout.total))
    }

    fn apply_update(&mut self, opt: &mut AdamWState<T>, grads: &Vec<T>, cfg: &AdamWConfig, lr: f64) -> Result<()> {
        check_len("apply_update", "grads", grads.len(), self.params.len())?;
        check_len("apply_update", "optimizer m", opt.m.len(), self.params.len())?;
        check_len("apply_update", "optimizer v", opt.v.len(), self.params.len())?;
        opt.step(&mut self.params, grads, cfg, lr);
        Ok(())
    }

    /// f32 as it is; an f64 model's state rounded to f32.
    fn export_state(&self, opt: &AdamWState<T>) -> Result<HostState> {
        let f32s = |x: &[T]| x.iter().map(|v| v.to_f64() as f32).collect::<Vec<f32>>();
        Ok(HostState { params: f32s(&self.params), optim: AdamWState { m: f32s(&opt.m), v: f32s(&opt.v), step: opt.step } })
    }

    fn import_state(&mut self, opt: &mut AdamWState<T>, state: &HostState) -> Result<()> {
        state.check("import_state", self.layout.total)?;
        let copy = |dst: &mut [T], src: &[f32]| dst.iter_mut().zip(src).for_each(|(d, &s)| *d = T::from_f32(s));
        copy(&mut self.params, &state.params);
        opt.m.resize(self.layout.total, T::ZERO);
        opt.v.resize(self.layout.total, T::ZERO);
        copy(&mut opt.m, &state.optim.m);
        copy(&mut opt.v, &state.optim.v);
        opt.step = state.optim.step;
        Ok(())
    }
}

/// A sampler fed NaN or ±inf logits still returns an id (the first of a NaN row): refuse instead, so
/// generation never emits tokens of a model whose numbers overflowed. `step`: the token being drawn.
fn check_logits<T: Float>(logits: &[T], v: usize, step: u64) -> Result<()> {
    match logits.iter().position(|x| !x.to_f64().is_finite()) {
        None => Ok(()),
        Some(k) => Err(crate::sampling::non_finite_logits(step, k / v, k % v, logits[k].to_f64())),
    }
}
