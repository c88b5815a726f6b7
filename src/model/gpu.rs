//! Qwen2 forward on the GPU: the listing of `model::cpu`, op for op, with the kernels of `crate::gpu`.
//!
//! Storage type T is `f32` (every kernel on the CUDA cores: the path held to the CPU f32 reference,
//! greedy decoding token-identical) or `bf16` (tensor-core GEMMs, f32 accumulation everywhere, every
//! activation rounded once to bf16 when stored, including the residual stream).
//!
//! Parameters are one flat device buffer in [`ParamLayout`] order (the same offsets as the CPU
//! `Model::params`), so gate_w and up_w, adjacent there, form one [2·ff, c] GEMM. Sequences are packed
//! rows with a per-sequence KV cache slot, exactly as on the CPU: a full forward, a prefill and one
//! decoding step are the same code; decoding steps (one row per sequence) use the decode kernel.
//!
//! ```text
//! x = embed[ids]
//! per layer: h = rmsnorm(x; ln1)   q,k,v = h·W{q,k,v}ᵀ + b   rope(q), rope(k)   cache ← k, v
//!            att = attention(q, cache)   x += att·Woᵀ
//!            h = rmsnorm(x; ln2)   gu = h·[Wg;Wu]ᵀ   act = silu(gate)⊙up   x += act·Wdᵀ
//! hf = rmsnorm(x; norm)   generation: logits of last rows
//! ```
//! Scoring and the training forward and backward run without a KV cache, in chunks of whole
//! sequences within a token budget: `model::gpu_train`.

use crate::config::ModelConfig;
use crate::cpu::Float;
use crate::error::{Error, Result};
use crate::gpu::attention::{attention_decode, attention_prefill, kv_append, Heads, SeqTable};
use crate::gpu::{self, Gpu, GpuFloat};
use crate::layout::ParamLayout;
use crate::model::Model;
use crate::model::gpu_state::{self, GpuAdamW, GpuGrads};
use crate::model::gpu_train::{GpuRecord, TrainWorkspace};
use crate::optim::AdamWConfig;
use crate::policy::{check_score_temperature, Chunks, Draw, HostState, Policy, Sampled, ScoreBatch, ScoredResponses};
use crate::rl::chunk::{ChunkObjective, ChunkResult};
use crate::gpu::DeviceBuffer;
use std::sync::{Arc, Mutex};

/// A Qwen2 model on the GPU: config, layout, one flat parameter buffer, the rotary tables.
pub struct GpuModel<T: GpuFloat> {
    pub gpu: Arc<Gpu>,
    pub cfg: ModelConfig,
    pub layout: ParamLayout,
    /// the compute copy: what every kernel reads
    pub params: DeviceBuffer<T>,
    /// the f32 master weights of a bf16 model made to train (`GpuModel::for_training`; see
    /// `model::gpu_state`); None for generation-only models and f32 ones (their params are the master)
    pub master: Option<DeviceBuffer<f32>>,
    /// [max_position_embeddings, head_dim / 2], f32 whatever T is
    pub(super) cos: DeviceBuffer<f32>,
    pub(super) sin: DeviceBuffer<f32>,
    /// token budget of a chunk of the uncached forward (`gpu_train`); None: the default estimate
    pub(super) chunk_tokens: Option<usize>,
    /// sequences of a generation round; None: what the free device memory holds
    /// ([`GpuModel::set_generation_round`])
    generation_round: Option<usize>,
    /// the uncached forward's and the backward's buffers, allocated once per shape (`gpu_train`)
    pub(super) workspace: Mutex<TrainWorkspace<T>>,
}

/// Keys and values of every layer for `slots` sequences.  k, v: [layers, slots, cap, kv_dim]
pub struct GpuKvCache<T: GpuFloat> {
    pub k: DeviceBuffer<T>,
    pub v: DeviceBuffer<T>,
    /// cached positions of each slot
    pub lens: Vec<usize>,
    pub slots: usize,
    pub cap: usize,
}

impl<T: GpuFloat> GpuKvCache<T> {
    pub fn new(gpu: &Gpu, cfg: &ModelConfig, slots: usize, cap: usize) -> Result<Self> {
        let len = cfg.num_hidden_layers * slots * cap * cfg.kv_dim();
        Ok(GpuKvCache {
            k: gpu.alloc_zeros::<T>(len.max(1))?,
            v: gpu.alloc_zeros::<T>(len.max(1))?,
            lens: vec![0; slots],
            slots,
            cap,
        })
    }
}

/// The final-norm output of a forward and where each sequence's rows are.
pub struct Hidden<T: GpuFloat> {
    /// [n_rows, hidden]
    pub hf: DeviceBuffer<T>,
    /// row ranges, one per chunk of the call
    pub rows: Vec<std::ops::Range<usize>>,
}

impl<T: GpuFloat> GpuModel<T> {
    /// Copies a CPU model's parameters (any float type) to the device as T.
    pub fn from_cpu<U: Float>(gpu: Arc<Gpu>, model: &Model<U>) -> Result<Self> {
        let params = gpu.htod(&Self::host_params(model))?;
        let cfg = model.cfg.clone();
        let (cos, sin) = gpu::rope::rope_table(cfg.max_position_embeddings, cfg.head_dim, cfg.rope_theta);
        let (cos, sin) = (gpu.htod(&cos)?, gpu.htod(&sin)?);
        for lr in &model.layout.layers {
            assert_eq!(lr.gate_w.end, lr.up_w.start, "layout: up_w must follow gate_w (one fused GEMM)");
        }
        if cfg.head_dim > gpu::attention::MAX_HEAD_DIM || !cfg.head_dim.is_multiple_of(2) {
            return Err(Error::input(format!(
                "head_dim {} is not supported by the GPU attention kernels (even, ≤ {})",
                cfg.head_dim,
                gpu::attention::MAX_HEAD_DIM
            )));
        }
        Ok(GpuModel {
            gpu,
            cfg,
            layout: model.layout.clone(),
            params,
            master: None,
            cos,
            sin,
            chunk_tokens: None,
            generation_round: None,
            workspace: Default::default(),
        })
    }

    /// Fixes the sequences of a generation round (`None`: what the free device memory holds,
    /// [`gpu::memory::generation_round`]): for tests, and for sharing a device with other work.
    pub fn set_generation_round(&mut self, round: Option<usize>) -> Result<()> {
        if round == Some(0) {
            return Err(Error::input("a generation round needs at least 1 sequence"));
        }
        self.generation_round = round;
        Ok(())
    }

    /// The parameters as T (through f32: see NOTES.md on bf16 rounding).
    fn host_params<U: Float>(model: &Model<U>) -> Vec<T> {
        model.params.iter().map(|p| T::from_f32(p.to_f64() as f32)).collect()
    }

    pub(super) fn heads(&self) -> Heads {
        Heads { nh: self.cfg.num_attention_heads, nkv: self.cfg.num_key_value_heads, hd: self.cfg.head_dim }
    }

    /// Runs `chunks[i] = (slot, tokens)` after the cached prefix of each slot (slots increasing),
    /// appends their keys and values to the cache, and returns the final-norm rows (the lm head's
    /// input). Chunks may be empty.
    pub fn forward_hidden(&self, cache: &mut GpuKvCache<T>, chunks: &[(usize, &[u32])]) -> Result<Hidden<T>> {
        let chunks = Chunks::new(&self.cfg, &cache.lens, cache.cap, chunks.to_vec())?;
        self.forward_chunks(cache, &chunks)
    }

    /// [`GpuModel::forward_hidden`] of a checked batch.
    fn forward_chunks(&self, cache: &mut GpuKvCache<T>, chunks: &Chunks) -> Result<Hidden<T>> {
        let cfg = &self.cfg;
        let gpu = &*self.gpu;
        let (c, v, ff, hd) = (cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size, cfg.head_dim);
        let (nh, nkv, qd, kvd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.q_dim(), cfg.kv_dim());
        let eps = cfg.rms_norm_eps as f32;
        if chunks.pairs().iter().zip(chunks.starts()).any(|(&(slot, _), &start)| cache.lens.get(slot) != Some(&start)) {
            return Err(Error::input("forward: the chunks were checked against another cache"));
        }

        let mut ids = Vec::new();
        let mut rows = Vec::with_capacity(chunks.pairs().len());
        let mut entries = Vec::new();
        for &(slot, chunk) in chunks.pairs() {
            rows.push(ids.len()..ids.len() + chunk.len());
            ids.extend_from_slice(chunk);
            if !chunk.is_empty() {
                entries.push((slot, cache.lens[slot], chunk.len()));
            }
        }
        let n = ids.len();
        if n == 0 {
            return Ok(Hidden { hf: gpu.alloc_zeros::<T>(1)?, rows });
        }
        let table = SeqTable::new(gpu, &entries, cache.slots, cache.cap)?;
        let decode = table.max_tq == 1;
        let p = &self.params;
        let w = |r: &std::ops::Range<usize>| p.slice(r.clone());

        let ids_d = gpu.htod(&ids)?;
        let mut x = gpu.alloc_zeros::<T>(n * c)?;
        let mut h = gpu.alloc_zeros::<T>(n * c)?;
        let mut rstd = gpu.alloc_zeros::<f32>(n)?;
        let mut q = gpu.alloc_zeros::<T>(n * qd)?;
        let mut k = gpu.alloc_zeros::<T>(n * kvd)?;
        let mut vv = gpu.alloc_zeros::<T>(n * kvd)?;
        let mut att = gpu.alloc_zeros::<T>(n * qd)?;
        let mut proj = gpu.alloc_zeros::<T>(n * c)?;
        let mut gu = gpu.alloc_zeros::<T>(n * 2 * ff)?;
        let mut act = gpu.alloc_zeros::<T>(n * ff)?;
        let per_layer = cache.slots * cache.cap * kvd;
        let heads = self.heads();

        gpu::embedding::embedding_fwd(gpu, &mut x.as_view_mut(), &ids_d.as_view(), &w(&self.layout.embed), n, c, v)?;
        for (l, lr) in self.layout.layers.iter().enumerate() {
            gpu::rmsnorm::rmsnorm_fwd(gpu, &mut h.as_view_mut(), &mut rstd.as_view_mut(), &x.as_view(), &w(&lr.ln1_w), n, c, eps)?;
            gpu::matmul::matmul_fwd(gpu, &mut q.as_view_mut(), &h.as_view(), &w(&lr.q_w), Some(&w(&lr.q_b)), n, c, qd)?;
            gpu::matmul::matmul_fwd(gpu, &mut k.as_view_mut(), &h.as_view(), &w(&lr.k_w), Some(&w(&lr.k_b)), n, c, kvd)?;
            gpu::matmul::matmul_fwd(gpu, &mut vv.as_view_mut(), &h.as_view(), &w(&lr.v_w), Some(&w(&lr.v_b)), n, c, kvd)?;
            let (cos, sin) = (self.cos.as_view(), self.sin.as_view());
            gpu::rope::rope_fwd(gpu, &mut q.as_view_mut(), &table.row_pos.slice(0..n), &cos, &sin, n, nh, hd)?;
            gpu::rope::rope_fwd(gpu, &mut k.as_view_mut(), &table.row_pos.slice(0..n), &cos, &sin, n, nkv, hd)?;

            let layer = l * per_layer..(l + 1) * per_layer;
            let mut kc = cache.k.slice_mut(layer.clone());
            let mut vc = cache.v.slice_mut(layer);
            kv_append(gpu, &mut kc, &mut vc, &k.as_view(), &vv.as_view(), &table, kvd)?;
            if decode {
                attention_decode(gpu, &mut att.as_view_mut(), &q.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)?;
            } else {
                attention_prefill(gpu, &mut att.as_view_mut(), &q.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)?;
            }

            gpu::matmul::matmul_fwd(gpu, &mut proj.as_view_mut(), &att.as_view(), &w(&lr.o_w), None, n, qd, c)?;
            gpu::residual::residual_add(gpu, &mut x.as_view_mut(), &proj.as_view())?;
            gpu::rmsnorm::rmsnorm_fwd(gpu, &mut h.as_view_mut(), &mut rstd.as_view_mut(), &x.as_view(), &w(&lr.ln2_w), n, c, eps)?;
            let gate_up = lr.gate_w.start..lr.up_w.end;
            gpu::matmul::matmul_fwd(gpu, &mut gu.as_view_mut(), &h.as_view(), &w(&gate_up), None, n, c, 2 * ff)?;
            gpu::swiglu::swiglu_fwd(gpu, &mut act.as_view_mut(), &gu.as_view(), n, ff)?;
            gpu::matmul::matmul_fwd(gpu, &mut proj.as_view_mut(), &act.as_view(), &w(&lr.down_w), None, n, ff, c)?;
            gpu::residual::residual_add(gpu, &mut x.as_view_mut(), &proj.as_view())?;
        }
        for &(slot, chunk) in chunks.pairs() {
            cache.lens[slot] += chunk.len();
        }
        gpu::rmsnorm::rmsnorm_fwd(gpu, &mut h.as_view_mut(), &mut rstd.as_view_mut(), &x.as_view(), &w(&self.layout.final_norm), n, c, eps)?;
        Ok(Hidden { hf: h, rows })
    }

    /// f32 logits of the given rows of `hidden`: [rows.len(), vocab] (what generation samples from).
    /// Rows are gathered with the embedding kernel (a row gather is what it is).
    pub fn logits_of_rows(&self, hidden: &Hidden<T>, rows: &[u32]) -> Result<DeviceBuffer<f32>> {
        let gpu = &*self.gpu;
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let n_hidden = hidden.rows.iter().map(|r| r.end).max().unwrap_or(0);
        let b = rows.len();
        let rows_d = gpu.htod(rows)?;
        let mut picked = gpu.alloc_zeros::<T>(b * c)?;
        gpu::embedding::embedding_fwd(gpu, &mut picked.as_view_mut(), &rows_d.as_view(), &hidden.hf.slice(0..n_hidden * c), b, c, n_hidden)?;
        let mut logits = gpu.alloc_zeros::<f32>(b * v)?;
        let lm = self.params.slice(self.layout.lm_head.clone());
        gpu::matmul::matmul_fwd_f32out(gpu, &mut logits.as_view_mut(), &picked.as_view(), &lm, None, b, c, v)?;
        Ok(logits)
    }

    /// Logits of fresh sequences, every row: [Σ len, vocab] (for checks against the CPU; scoring
    /// uses the fused head instead and never forms them).
    pub fn logits(&self, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        let cap = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut cache = GpuKvCache::new(&self.gpu, &self.cfg, seqs.len(), cap)?;
        let chunks: Vec<(usize, &[u32])> = seqs.iter().enumerate().map(|(i, s)| (i, *s)).collect();
        let hidden = self.forward_hidden(&mut cache, &chunks)?;
        let n = hidden.rows.last().map_or(0, |r| r.end);
        if n == 0 {
            return Ok(Vec::new());
        }
        let all: Vec<u32> = (0..n as u32).collect();
        let logits = self.logits_of_rows(&hidden, &all)?;
        self.gpu.dtoh(&logits)
    }

    /// logp[s][t] = log softmax(logits(x_≤t) / temp)[x_{t+1}] for every sequence (len − 1 values
    /// each), as `Model::score(..).logp`: the uncached forward of `gpu_train` (no KV cache, chunks of
    /// whole sequences within the token budget) and the fused head (the [n, vocab] logits never exist).
    pub fn score(&self, seqs: &[&[u32]], temp: f64) -> Result<Vec<Vec<f32>>> {
        check_score_temperature(temp)?;
        Chunks::fresh(&self.cfg, seqs)?;
        Ok(self.score_chunks(seqs, temp, None)?.logp)
    }
}

/// The decoding state of the GPU model: the KV cache and the sampler's buffers ([rows] tokens then
/// [rows] non-finite flags, [rows, vocab] fixed-point masses), allocated once per generation.
pub struct GpuDecode<T: GpuFloat> {
    pub kv: GpuKvCache<T>,
    tokens: DeviceBuffer<u32>,
    /// the sampler's log-probability of each drawn token
    logp: DeviceBuffer<f64>,
    scratch: DeviceBuffer<u64>,
}

/// The logits of the last rows of a forward, on the device: [rows, vocab] f32.
pub struct GpuLogits {
    pub values: DeviceBuffer<f32>,
    pub rows: usize,
}

impl<T: GpuFloat> Policy for GpuModel<T> {
    type Cache = GpuDecode<T>;
    type Logits = GpuLogits;
    type Record = GpuRecord<T>;
    type Grads = GpuGrads;
    type Optimizer = GpuAdamW;
    /// `[T]` f32 on the device, the chunk's response tokens in batch order
    type TokenGrad = DeviceBuffer<f32>;

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn device(&self) -> &'static str {
        if self.gpu.is_simulated() {
            "sim"
        } else {
            "gpu"
        }
    }

    fn n_params(&self) -> usize {
        self.layout.total
    }

    fn new_cache(&self, slots: usize, cap: usize) -> Result<GpuDecode<T>> {
        let gpu = &*self.gpu;
        // a generation starts: the training workspace's memory goes to the KV cache until training resumes
        self.workspace().release();
        let kv = GpuKvCache::new(gpu, &self.cfg, slots, cap)?;
        // the sampler's tokens, then its non-finite flags: one copy back per step
        let tokens = gpu.alloc_zeros::<u32>(2 * slots.max(1))?;
        let logp = gpu.alloc_zeros::<f64>(slots.max(1))?;
        let scratch = gpu.alloc_zeros::<u64>((slots * self.cfg.vocab_size).max(1))?;
        Ok(GpuDecode { kv, tokens, logp, scratch })
    }

    fn cache_lens<'c>(&self, cache: &'c GpuDecode<T>) -> &'c [usize] {
        &cache.kv.lens
    }

    fn cache_cap(&self, cache: &GpuDecode<T>) -> usize {
        cache.kv.cap
    }

    fn generation_round(&self, prompt_len: usize, len: usize) -> Result<usize> {
        if let Some(round) = self.generation_round {
            return Ok(round);
        }
        // asked as a generation starts: the training workspace that new_cache would release is free
        // memory for its rounds, so release it before counting
        self.workspace().release();
        let elem = size_of::<T>() as u64;
        let round = gpu::memory::generation_round(&self.cfg, elem, prompt_len as u64, len as u64, self.gpu.free_bytes()?);
        Ok(usize::try_from(round).unwrap_or(usize::MAX))
    }

    fn forward_last(&self, cache: &mut GpuDecode<T>, chunks: &Chunks) -> Result<GpuLogits> {
        let hidden = self.forward_chunks(&mut cache.kv, chunks)?;
        let last: Vec<u32> = hidden.rows.iter().filter(|r| !r.is_empty()).map(|r| (r.end - 1) as u32).collect();
        if last.is_empty() {
            return Ok(GpuLogits { values: self.gpu.alloc_zeros::<f32>(1)?, rows: 0 });
        }
        Ok(GpuLogits { values: self.logits_of_rows(&hidden, &last)?, rows: last.len() })
    }

    fn logits_to_host(&self, logits: &GpuLogits) -> Result<Vec<f64>> {
        let n = logits.rows * self.cfg.vocab_size;
        Ok(self.gpu.dtoh(&logits.values.slice(0..n))?.iter().map(|&x| x as f64).collect())
    }

    fn sample(&self, cache: &mut GpuDecode<T>, logits: &GpuLogits, draw: &Draw) -> Result<Sampled> {
        let (rows, v) = (logits.rows, self.cfg.vocab_size);
        crate::error::check_len("sample", "streams", draw.streams.len(), rows)?;
        if rows == 0 {
            return Ok(Sampled { tokens: Vec::new(), logp: Vec::new() });
        }
        let gpu = &*self.gpu;
        let streams = gpu.htod(draw.streams)?;
        let mut both = cache.tokens.slice_mut(0..2 * rows);
        let (mut tokens, mut nonfinite) = both.split_at_mut(rows);
        let mut scratch = cache.scratch.slice_mut(0..rows * v);
        let lv = logits.values.slice(0..rows * v);
        let mut logp = cache.logp.slice_mut(0..rows);
        gpu::sampling::sample(gpu, &mut tokens, &mut nonfinite, &mut logp, &mut scratch, &lv, &streams.as_view(), rows, v, draw.params, draw.seed, draw.step)?;
        let mut tokens = gpu.dtoh(&cache.tokens.slice(0..2 * rows))?;
        let flags = tokens.split_off(rows);
        // the CPU's error: the first non-finite logit of the batch (its value fetched only then)
        if let Some((row, &id)) = flags.iter().enumerate().find(|(_, &id)| id != gpu::sampling::NO_NONFINITE) {
            let at = row * v + id as usize;
            let value = gpu.dtoh(&logits.values.slice(at..at + 1))?[0];
            return Err(crate::sampling::non_finite_logits(draw.step, row, id as usize, value as f64));
        }
        // f64, so a copy of its own (8 bytes a row), made once no row was refused
        let logp = gpu.dtoh(&cache.logp.slice(0..rows))?;
        Ok(Sampled { tokens, logp })
    }

    /// The uncached chunked forward of `gpu_train` (no KV cache), with or without a record.
    fn score_responses(&self, batch: &ScoreBatch, record: bool) -> Result<ScoredResponses<GpuRecord<T>>> {
        self.score_batch(batch, record)
    }

    fn new_grads(&self) -> Result<GpuGrads> {
        gpu_state::new_grads(self)
    }

    fn zero_grads(&self, grads: &mut GpuGrads) -> Result<()> {
        gpu_state::zero_grads(self, grads)
    }

    /// [`GpuModel::backward_into`]: accumulates into the device gradient.
    fn backward_responses(&self, scored: &ScoredResponses<GpuRecord<T>>, dlogp: &[Vec<f64>], grads: &mut GpuGrads) -> Result<()> {
        self.backward_into(scored.recorded()?, dlogp, &mut grads.g.as_view_mut())
    }

    /// [`GpuModel::chunk_objective_on_device`]: `gpu::objective` on the device, on the record's device log-probs.
    fn chunk_objective(&self, scored: &ScoredResponses<GpuRecord<T>>, obj: &ChunkObjective) -> Result<(ChunkResult, DeviceBuffer<f32>)> {
        self.chunk_objective_on_device(scored, obj)
    }

    /// [`GpuModel::backward_from_device`]: no host round trip.
    fn backward_token_grad(&self, scored: &ScoredResponses<GpuRecord<T>>, dlogp: &DeviceBuffer<f32>, grads: &mut GpuGrads) -> Result<()> {
        self.backward_from_device(scored.recorded()?, &dlogp.as_view(), &mut grads.g.as_view_mut())
    }

    fn clip_grad_norm(&self, grads: &mut GpuGrads, max_norm: f64) -> Result<f64> {
        gpu_state::clip_grad_norm(self, grads, max_norm)
    }

    fn grads_to_host(&self, grads: &GpuGrads) -> Result<Vec<f64>> {
        gpu_state::grads_to_host(self, grads)
    }

    fn new_optimizer(&self) -> Result<GpuAdamW> {
        gpu_state::new_optimizer(self)
    }

    fn apply_update(&mut self, opt: &mut GpuAdamW, grads: &GpuGrads, cfg: &AdamWConfig, lr: f64) -> Result<()> {
        gpu_state::apply_update(self, opt, grads, cfg, lr)
    }

    fn export_state(&self, opt: &GpuAdamW) -> Result<HostState> {
        gpu_state::export_state(self, opt)
    }

    fn import_state(&mut self, opt: &mut GpuAdamW, state: &HostState) -> Result<()> {
        gpu_state::import_state(self, opt, state)
    }
}
