//! The device memory of a DRPO step, by arithmetic from the config (no device needed): what
//! `drpo inspect` prints, and the token chunk of the training forward ([`tokens_per_chunk`]).
//!
//! ```text
//! resident, whole run      compute copy [n]·e   f32 master [n]·4 (bf16 only)   AdamW m, v [n]·4 each
//!                          gradient [n]·4   rotary tables [max_pos, hd/2]·4·2   norm scratch
//! training, per token      recorded forward (the CPU's LayerActs listing, every layer):
//!                            x_in h1 x_mid h2 [c]   q att [qd]   k v [kvd]   gate up act [ff]   (·e)
//!                            rstd1 rstd2 [1]   attention log-sum-exp [nh]                       (·4)
//!                          then x_final hf [c]·e, rstd_f, the head's lse and logp (f32), the target
//!                          and the position (u32); the backward's transient gradients of one layer
//!                          (the same listing, counted in f32) and the residual-stream gradient [c]·4
//! generation, per sequence KV cache 2·layers·kvd·e per token; logits [v]·4 and the sampler's
//!                          fixed-point masses [v]·8 of its row; one decode row's activations;
//!                          decode attention's split states nh·ceil(len/256)·(hd + 2)·4
//! generation, fixed        the split-k GEMM partials of a decoding step of ≤ 64 rows (the device's
//!                          workspace, `Gpu::with_workspace`): splits·rows·d_out·4 of its largest GEMM
//! ```
//! e = 2 (bf16) or 4 (f32), n = parameters (counted here from the shapes, independently of
//! [`crate::layout::ParamLayout`]; tests/memory.rs checks they agree). Attention never holds the
//! [t, t] probabilities (the flash kernels keep a log-sum-exp per row and head), the fused head never
//! [tokens, vocab] logits (it recomputes them by vocabulary tiles). Estimates count the big buffers
//! and saturate like [`crate::memory`]'s: they are for planning, not byte exact.

use crate::config::ModelConfig;
use crate::gpu::attention::DECODE_SPLIT_KEYS;
use crate::gpu::matmul::{MatmulPlan, SPLIT_ROWS};
use crate::gpu::GpuFloat;

/// Saturating product.
fn mul(xs: &[u64]) -> u64 {
    xs.iter().fold(1u64, |acc, &x| acc.saturating_mul(x))
}

/// Saturating sum.
fn add(xs: &[u64]) -> u64 {
    xs.iter().fold(0u64, |acc, &x| acc.saturating_add(x))
}

/// Bytes of a DRPO step's device buffers for one config and compute type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepMemory {
    /// parameters, from the tensor shapes
    pub params: u64,
    /// the compute copy every kernel reads: params × e
    pub weights: u64,
    /// the f32 master weights AdamW updates (0 when the compute copy is f32: it is the master)
    pub master: u64,
    pub adam_m: u64,
    pub adam_v: u64,
    /// the f32 gradient the backward passes accumulate into
    pub grads: u64,
    /// the rotary cos / sin tables and the gradient norm's chunk sums
    pub tables: u64,
    /// the training forward's recorded activations of one token, every layer (the log-sum-exp
    /// included)
    pub activations_per_token: u64,
    /// of which the attention log-sum-exp: nh f32 per layer
    pub lse_per_token: u64,
    /// the backward's transient gradients of one token (one layer at a time, f32)
    pub backward_per_token: u64,
    /// the generation KV cache of one token of one sequence
    pub kv_per_token: u64,
    /// a generating sequence's fixed share: its logits row, the sampler's masses, one decode row
    pub generation_per_sequence: u64,
    /// the device workspace's split-k GEMM partials of a generation, whatever its batch: those of a
    /// decoding step of [`SPLIT_ROWS`] rows ([`decode_gemm_workspace_values`]), f32
    pub decode_gemm_workspace: u64,
    /// decode attention's split states per query head, per 256-key split of a sequence: hd + 2 f32
    pub decode_split_state: u64,
    /// query heads (decode attention keeps split states per head)
    heads: u64,
}

impl StepMemory {
    /// The buffers a training run keeps from start to end.
    pub fn resident(&self) -> u64 {
        add(&[self.weights, self.master, self.adam_m, self.adam_v, self.grads, self.tables])
    }

    /// Bytes one token adds to a training chunk: its recorded forward and its backward's gradients.
    pub fn training_per_token(&self) -> u64 {
        add(&[self.activations_per_token, self.backward_per_token])
    }

    /// Bytes one generating sequence of `len` tokens (prompt + response) needs: its KV cache, its fixed
    /// share and its decode attention split states (counted for every sequence: the workspace gives
    /// each sequence the splits of the batch's longest).
    pub fn generation_sequence(&self, len: u64) -> u64 {
        add(&[mul(&[self.kv_per_token, len]), self.generation_per_sequence, mul(&[self.heads, decode_splits(len), self.decode_split_state])])
    }
}

/// Decode attention's key splits for a sequence of `keys` keys (one split needs no states).
fn decode_splits(keys: u64) -> u64 {
    match keys.div_ceil(DECODE_SPLIT_KEYS as u64) {
        s if s > 1 => s,
        _ => 0,
    }
}

/// f32 values of the device workspace a GEMM of `rows` rows of generation asks for (split k at most
/// [`SPLIT_ROWS`] rows, `MatmulPlan::forward`): the largest of the decoder's q, k, v, o, gate | up,
/// down and the head's logits, splits × rows × d_out each; 0 when none splits (more rows, or k too short).
pub fn decode_gemm_workspace_values(cfg: &ModelConfig, rows: usize) -> u64 {
    if rows == 0 || rows > SPLIT_ROWS {
        return 0;
    }
    let (c, ff, v, qd, kvd) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.q_dim(), cfg.kv_dim());
    let gemms = [(c, qd), (c, kvd), (qd, c), (c, 2 * ff), (ff, c), (c, v)]; // (d_in, d_out)
    gemms
        .iter()
        .map(|&(d_in, d_out)| match MatmulPlan::split_k(d_out.div_ceil(64), d_in).splits(d_in) {
            1 => 0,
            s => mul(&[s as u64, rows as u64, d_out as u64]),
        })
        .max()
        .unwrap_or(0)
}

/// f32 values of the device workspace decode attention asks for when `seqs` sequences decode and the
/// longest attends to `max_keys` keys: seqs · nh · splits · (hd + 2), 0 with one split.
pub fn decode_attention_workspace_values(cfg: &ModelConfig, seqs: usize, max_keys: usize) -> u64 {
    mul(&[seqs as u64, cfg.num_attention_heads as u64, decode_splits(max_keys as u64), cfg.head_dim as u64 + 2])
}

/// Bytes of the device workspace of a decoding step of `seqs` sequences whose longest attends to
/// `max_keys` keys: one buffer, the largest request of its launches.
pub fn decode_workspace_bytes(cfg: &ModelConfig, seqs: usize, max_keys: usize) -> u64 {
    mul(&[decode_gemm_workspace_values(cfg, seqs).max(decode_attention_workspace_values(cfg, seqs, max_keys)), 4])
}

/// Parameters of `cfg` counted from its tensor shapes (the embedding once when tied).
pub fn param_count(cfg: &ModelConfig) -> u64 {
    let (c, v, ff) = (cfg.hidden_size as u64, cfg.vocab_size as u64, cfg.intermediate_size as u64);
    let (qd, kvd) = (mul(&[cfg.num_attention_heads as u64, cfg.head_dim as u64]), mul(&[cfg.num_key_value_heads as u64, cfg.head_dim as u64]));
    let embed = mul(&[v, c]);
    let attention = add(&[mul(&[qd, c]), qd, mul(&[2, kvd, c]), mul(&[2, kvd]), mul(&[c, qd])]); // q, q_b, k v, k_b v_b, o
    let mlp = mul(&[3, ff, c]); // gate, up, down
    let layer = add(&[mul(&[2, c]), attention, mlp]); // + the two norms
    let head = if cfg.tie_word_embeddings { 0 } else { embed };
    add(&[embed, mul(&[cfg.num_hidden_layers as u64, layer]), c, head]) // + the final norm
}

/// The memory of a DRPO step on the device for `cfg` with a compute copy of `elem` bytes per value
/// (2: bf16, what `--device gpu` trains; 4: the f32 path).
pub fn step_memory(cfg: &ModelConfig, elem: u64) -> StepMemory {
    let (c, v, ff, l) = (cfg.hidden_size as u64, cfg.vocab_size as u64, cfg.intermediate_size as u64, cfg.num_hidden_layers as u64);
    let (qd, kvd, nh) = (cfg.q_dim() as u64, cfg.kv_dim() as u64, cfg.num_attention_heads as u64);
    let n = param_count(cfg);
    // one layer's activations in the compute type: x_in h1 x_mid h2, q att, k v, gate up act
    let layer_values = add(&[mul(&[4, c]), mul(&[2, qd]), mul(&[2, kvd]), mul(&[3, ff])]);
    let lse = mul(&[l, nh, 4]);
    let per_layer = add(&[mul(&[layer_values, elem]), mul(&[2, 4]), mul(&[nh, 4])]); // + rstd1 rstd2, lse
    // x_final, hf; rstd_f, head lse, logp (f32); target, position (u32)
    let after_layers = add(&[mul(&[2, c, elem]), mul(&[5, 4])]);
    let rotary = mul(&[2, cfg.max_position_embeddings as u64, (cfg.head_dim / 2) as u64, 4]);
    let norm_scratch = mul(&[(n.div_ceil(crate::optim::CHUNK as u64)).max(1).saturating_add(1), 8]);
    StepMemory {
        params: n,
        weights: mul(&[n, elem]),
        master: if elem == 4 { 0 } else { mul(&[n, 4]) },
        adam_m: mul(&[n, 4]),
        adam_v: mul(&[n, 4]),
        grads: mul(&[n, 4]),
        tables: add(&[rotary, norm_scratch]),
        activations_per_token: add(&[mul(&[l, per_layer]), after_layers]),
        lse_per_token: lse,
        backward_per_token: mul(&[add(&[layer_values, c]), 4]),
        kv_per_token: mul(&[2, l, kvd, elem]),
        generation_per_sequence: add(&[mul(&[v, 4 + 8]), mul(&[layer_values, elem])]),
        decode_gemm_workspace: mul(&[decode_gemm_workspace_values(cfg, SPLIT_ROWS), 4]),
        decode_split_state: mul(&[cfg.head_dim as u64 + 2, 4]),
        heads: nh,
    }
}

/// Tokens of a training chunk (whole sequences packed) of a model whose compute copy is T, whose
/// recorded forward and backward gradients fit in `budget` bytes: the device memory left once the
/// resident state ([`StepMemory::resident`]) is allocated. 0 when not even one token fits.
pub fn tokens_per_chunk<T: GpuFloat>(cfg: &ModelConfig, budget: u64) -> usize {
    usize::try_from(chunk_tokens(cfg, size_of::<T>() as u64, budget)).unwrap_or(usize::MAX)
}

fn chunk_tokens(cfg: &ModelConfig, elem: u64, budget: u64) -> u64 {
    budget / step_memory(cfg, elem).training_per_token().max(1)
}

/// Bytes of device memory the training workspace leaves to everything else when its budget comes from
/// the driver's free memory ([`chunk_budget_bytes`]): a fixed 1 GiB plus 1/16 of what is free.
/// They hold what the per-token estimate does not count ([`crate::model::gpu_train::bytes_per_token`]'s list: the head
/// backward's scratch, 64 MiB of bf16 dlogits + 24 MiB of f32 dh at 1.5B; the split-k partials,
/// < 16 MiB; tied embeddings' gather table, ≤ 0.93 GB at 1.5B when every id of the vocabulary
/// occurs), the allocator's rounding and fragmentation, and the error of an estimate.
pub const CHUNK_MARGIN_BYTES: u64 = 1 << 30;

/// Bytes a training chunk may use when the device reports `free` bytes free (the resident state,
/// weights, master copy, moments, gradient, already allocated): `free` less [`CHUNK_MARGIN_BYTES`]
/// and a sixteenth of `free`; 0 when that is negative.
pub fn chunk_budget_bytes(free: u64) -> u64 {
    free.saturating_sub(CHUNK_MARGIN_BYTES).saturating_sub(free / 16)
}

/// A DRPO step's memory on a device of `device_bytes`: the resident state, then each phase with
/// what is left (`None` when the resident state alone does not fit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepPlan {
    pub memory: StepMemory,
    /// tokens per sequence: prompt + response
    pub seq_len: u64,
    /// bytes left for the phases
    pub free: Option<u64>,
    /// tokens of a training chunk that fit ([`tokens_per_chunk`] of [`chunk_budget_bytes`], the
    /// runtime's budget): at least `seq_len` for a sequence's forward and backward to run in one piece
    pub chunk_tokens: u64,
    /// sequences that generate together
    pub generation_sequences: u64,
}

impl StepPlan {
    pub fn new(cfg: &ModelConfig, elem: u64, seq_len: u64, device_bytes: u64) -> Self {
        let memory = step_memory(cfg, elem);
        let free = device_bytes.checked_sub(memory.resident());
        let left = free.unwrap_or(0);
        StepPlan {
            memory,
            seq_len,
            free,
            chunk_tokens: chunk_tokens(cfg, elem, chunk_budget_bytes(left)),
            generation_sequences: left.saturating_sub(memory.decode_gemm_workspace) / memory.generation_sequence(seq_len).max(1),
        }
    }

    /// The step runs: the resident state fits, a whole sequence trains in one chunk, and at least
    /// one sequence generates at a time.
    pub fn fits(&self) -> bool {
        self.free.is_some() && self.chunk_tokens >= self.seq_len && self.generation_sequences >= 1
    }
}

/// The share of the free device memory a generation round leaves unused (1/16): the allocator's
/// granularity and the small buffers a decoding step allocates next to the cache (token ids, streams,
/// the sequence table).
pub const GENERATION_RESERVE_DIVISOR: u64 = 16;

/// Sequences of `len` tokens, the longest prompt `prompt_len` of them, that one generation round
/// holds in `free` bytes of device memory not allocated when it starts (what is resident, the
/// weights and a trainer's master copy, moments and gradient, is already out of it): 15/16 of
/// `free`, less the decode GEMMs' split-k partials ([`StepMemory::decode_gemm_workspace`], once per
/// round), over one sequence's share, which is [`StepMemory::generation_sequence`] (its KV cache,
/// logits, sampler row, a decode row, its decode attention split states) and its prompt's rows of the
/// prefill, which runs one layer at a time over every prompt token of the round (`model::gpu`'s
/// forward: x h proj hf [c], q att [qd], k v [kvd], gate up act [ff] in the compute type, rstd f32).
/// 0 when not one fits.
pub fn generation_round(cfg: &ModelConfig, elem: u64, prompt_len: u64, len: u64, free: u64) -> u64 {
    let (c, ff) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let (qd, kvd) = (cfg.q_dim() as u64, cfg.kv_dim() as u64);
    let m = step_memory(cfg, elem);
    let prefill_row = add(&[mul(&[add(&[mul(&[4, c]), mul(&[2, qd]), mul(&[2, kvd]), mul(&[3, ff])]), elem]), 4]);
    let per_sequence = add(&[m.generation_sequence(len), mul(&[prefill_row, prompt_len])]);
    (free - free / GENERATION_RESERVE_DIVISOR).saturating_sub(m.decode_gemm_workspace) / per_sequence.max(1)
}
