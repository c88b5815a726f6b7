//! Launchers of `cuda/attention.cu`: KV-cache append, prefill (flash) attention, decode attention,
//! and the training pair: the forward over packed sequences that saves the log-sum-exp, and its
//! backward (dq, dk, dv; P recomputed tile by tile from the log-sum-exp).

use super::{as_i32, blocks, grid_dims, DView, DViewMut, DeviceBuffer, Gpu, GpuFloat, LaunchCfg, ATTENTION};
use crate::error::{check_len, Error, Result};

/// Largest head dim the kernels hold in registers / shared memory (Qwen2: 64 or 128).
pub const MAX_HEAD_DIM: usize = 128;

/// Query rows per prefill block: `ATT_BQ` in cuda/attention.cu.
pub const PREFILL_ROWS: usize = 16;
/// Query rows per block of the bf16 prefill, training forward and backward dq, and keys per block of
/// the bf16 backward dk dv, which run on the tensor cores (16 per warp): `ATC_BQ` and `ATB_TC` in
/// cuda/attention.cu.
pub const TC_ROWS: usize = 64;
/// Query rows per block of [`attention_prefill`] / [`attention_fwd`] for storage type T.
fn fwd_rows<T: GpuFloat>() -> usize {
    if T::NAME == "bf16" {
        TC_ROWS
    } else {
        PREFILL_ROWS
    }
}
/// Warps per prefill block: `ATT_PREFILL_WARPS` in cuda/attention.cu, a compile-time constant there
/// (the kernel's row-to-warp split and its loop strides assume exactly this many);
/// tests/kernels_compile.rs checks the two agree.
pub const PREFILL_WARPS: usize = 4;
/// Query rows and keys per tile of the training backward, and its warps per block: `ATB_BQ`,
/// `ATB_BK`, `ATB_WARPS` in cuda/attention.cu (checked equal by tests/kernels_compile.rs).
pub const BWD_ROWS: usize = 16;
pub const BWD_KEYS: usize = 16;
pub const BWD_WARPS: usize = 4;
/// Warps per decode block: `ATT_DECODE_WARPS` in cuda/attention.cu (its shared tiles are sized by it).
pub const DECODE_WARPS: usize = 8;
/// Keys per decode split (one 32-key tile per warp): `ATT_SPLIT_KEYS`. A constant, so a sequence's
/// decode bits depend on its own length only.
pub const DECODE_SPLIT_KEYS: usize = 256;
/// Query heads of one GQA group a decode block serves (larger groups are cut into chunks of this many):
/// `ATT_GROUP_MAX`.
pub const DECODE_GROUP_MAX: usize = 8;

/// Where the packed rows of a batch come from, validated on the host and uploaded once per forward.
/// Entry s: `tq[s]` new rows (rows `seq_start[s] ..`), appended after `past[s]` cached positions of
/// cache slot `slot[s]`. Every row's slot and position are kept for the KV append and the rotary.
#[derive(Debug)]
pub struct SeqTable {
    pub n_seqs: usize,
    pub n_rows: usize,
    pub max_tq: usize,
    /// most keys a sequence holds after the append: max past + tq
    pub max_keys: usize,
    /// cache capacity (positions per slot) the table was checked against
    pub cap: usize,
    pub slots: usize,
    pub slot: DeviceBuffer<i32>,
    pub seq_start: DeviceBuffer<i32>,
    pub past: DeviceBuffer<i32>,
    pub row_slot: DeviceBuffer<i32>,
    pub row_pos: DeviceBuffer<i32>,
}

impl SeqTable {
    /// `entries[s] = (slot, past, tq)`; fails unless every slot < `slots`, past + tq ≤ `cap`, and
    /// (to keep the attention kernels in bounds) past + tq ≥ 1.
    pub fn new(gpu: &Gpu, entries: &[(usize, usize, usize)], slots: usize, cap: usize) -> Result<SeqTable> {
        let mut slot = Vec::with_capacity(entries.len());
        let mut seq_start = vec![0i32];
        let mut past = Vec::with_capacity(entries.len());
        let (mut row_slot, mut row_pos) = (Vec::new(), Vec::new());
        let (mut max_tq, mut max_keys) = (0, 0);
        for (s, &(sl, p, tq)) in entries.iter().enumerate() {
            if sl >= slots || p + tq > cap || p + tq == 0 {
                return Err(Error::input(format!(
                    "sequence {s}: slot {sl} of {slots}, {p} cached + {tq} new positions, cache capacity {cap}"
                )));
            }
            slot.push(as_i32("SeqTable", "slot", sl)?);
            past.push(as_i32("SeqTable", "past", p)?);
            for t in 0..tq {
                row_slot.push(sl as i32);
                row_pos.push(as_i32("SeqTable", "position", p + t)?);
            }
            seq_start.push(as_i32("SeqTable", "rows", row_slot.len())?);
            max_tq = max_tq.max(tq);
            max_keys = max_keys.max(p + tq);
        }
        let up = |v: &[i32]| -> Result<DeviceBuffer<i32>> { gpu.htod(v) };
        Ok(SeqTable {
            n_seqs: entries.len(),
            n_rows: row_slot.len(),
            max_tq,
            max_keys,
            cap,
            slots,
            slot: up(&slot)?,
            seq_start: up(&seq_start)?,
            past: up(&past)?,
            row_slot: up(&row_slot)?,
            row_pos: up(&row_pos)?,
        })
    }
}

/// Appends the batch's new keys and values to the cache (one layer).
/// k_cache, v_cache: [slots, cap, kvd]   k, v: [n_rows, kvd]
pub fn kv_append<T: GpuFloat>(
    gpu: &Gpu,
    k_cache: &mut DViewMut<T>,
    v_cache: &mut DViewMut<T>,
    k: &DView<T>,
    v: &DView<T>,
    seqs: &SeqTable,
    kvd: usize,
) -> Result<()> {
    const OP: &str = "kv_append";
    check_len(OP, "k_cache", k_cache.len(), seqs.slots * seqs.cap * kvd)?;
    check_len(OP, "v_cache", v_cache.len(), seqs.slots * seqs.cap * kvd)?;
    check_len(OP, "k", k.len(), seqs.n_rows * kvd)?;
    check_len(OP, "v", v.len(), seqs.n_rows * kvd)?;
    if seqs.n_rows == 0 {
        return Ok(());
    }
    let name = T::pick("kv_append_f32", "kv_append_bf16");
    let (kvd32, cap32) = (as_i32(OP, "kvd", kvd)?, as_i32(OP, "cap", seqs.cap)?);
    let grid = grid_dims(OP, [(seqs.n_rows, "rows"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&ATTENTION, name, LaunchCfg::new(grid, 128));
    l.arg_mut(k_cache).arg_mut(v_cache).arg(k).arg(v).arg(&seqs.row_slot.as_view()).arg(&seqs.row_pos.as_view()).i32(kvd32).i32(cap32);
    // SAFETY: order and types match kv_append_<T>; SeqTable::new checked every slot < slots and
    // position < cap; buffer lengths checked above.
    unsafe { l.run() }
}

/// Head counts of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub nh: usize,
    pub nkv: usize,
    pub hd: usize,
}

fn check_heads(op: &'static str, h: Heads) -> Result<()> {
    if h.nkv == 0 || !h.nh.is_multiple_of(h.nkv) || h.hd == 0 || h.hd > MAX_HEAD_DIM || !h.hd.is_multiple_of(2) {
        return Err(Error::input(format!("{op}: unsupported heads {h:?} (hd even and ≤ {MAX_HEAD_DIM}, nkv | nh)")));
    }
    Ok(())
}

/// Causal GQA attention of every new row over its sequence's cache (the new keys already appended):
/// per sequence, `cpu::attention::attention_fwd` with tq = its new rows and tk = past + tq.
/// out, q: [n_rows, nh, hd]   k_cache, v_cache: [slots, cap, nkv, hd]
pub fn attention_prefill<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut DViewMut<T>,
    q: &DView<T>,
    k_cache: &DView<T>,
    v_cache: &DView<T>,
    seqs: &SeqTable,
    heads: Heads,
) -> Result<()> {
    const OP: &str = "attention_prefill";
    let Some([nh32, nkv32, hd32, cap32]) = cache_sizes(OP, out.len(), q.len(), k_cache.len(), v_cache.len(), seqs, heads)? else {
        return Ok(());
    };
    let name = T::pick("attention_prefill_f32", "attention_prefill_bf16");
    let scale = (1.0 / (heads.hd as f64).sqrt()) as f32;
    let grid = grid_dims(OP, [(blocks(seqs.max_tq, fwd_rows::<T>()), "query tiles"), (heads.nh, "heads"), (seqs.n_seqs, "sequences")])?;
    let mut l = gpu.launch(&ATTENTION, name, LaunchCfg::new(grid, PREFILL_WARPS as u32 * 32));
    l.arg_mut(out).arg(q).arg(k_cache).arg(v_cache).arg(&seqs.slot.as_view()).arg(&seqs.seq_start.as_view()).arg(&seqs.past.as_view());
    l.i32(nh32).i32(nkv32).i32(hd32).i32(cap32).f32(scale);
    // SAFETY: order and types match attention_prefill_<T>; the block is the kernel's compile-time
    // ATT_PREFILL_WARPS·32 threads; the SeqTable keeps every key index < cap
    // and every row < n_rows; heads checked (hd ≤ 128 fits the shared tiles).
    unsafe { l.run() }
}

/// [`attention_prefill`] for a decoding step: exactly one new row per sequence (row s of q and out).
/// Flash-decoding: a block per ([`DECODE_SPLIT_KEYS`]-key split, kv head, sequence) serves every query
/// head of the kv head's group (K and V read once per group), its warps 32 keys each; sequences
/// longer than one split leave per-split softmax states in the device's workspace
/// (n_seqs · nh · splits · (hd + 2) f32) and a second kernel merges them in split order.
pub fn attention_decode<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut DViewMut<T>,
    q: &DView<T>,
    k_cache: &DView<T>,
    v_cache: &DView<T>,
    seqs: &SeqTable,
    heads: Heads,
) -> Result<()> {
    const OP: &str = "attention_decode";
    let Some([nh32, nkv32, hd32, cap32]) = decode_sizes(OP, out.len(), q.len(), k_cache.len(), v_cache.len(), seqs, heads)? else {
        return Ok(());
    };
    let Heads { nh, nkv, hd } = heads;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let splits = blocks(seqs.max_keys, DECODE_SPLIT_KEYS);
    let head_blocks = nkv * blocks(nh / nkv, DECODE_GROUP_MAX);
    let grid = grid_dims(OP, [(splits, "key splits"), (head_blocks, "kv heads × head chunks"), (seqs.n_seqs, "sequences")])?;
    let combine_grid = grid_dims(OP, [(nh, "heads"), (seqs.n_seqs, "sequences"), (1, "")])?;
    let splits32 = as_i32(OP, "splits", splits)?;
    // one split needs no workspace (the kernel writes out itself); an element keeps the view non-empty
    let part_len = if splits > 1 { seqs.n_seqs * nh * splits * (hd + 2) } else { 1 };
    gpu.with_workspace(part_len, |part| {
        let mut l = gpu.launch(&ATTENTION, T::pick("attention_decode_f32", "attention_decode_bf16"), LaunchCfg::new(grid, DECODE_WARPS as u32 * 32));
        l.arg_mut(out).arg_mut(part).arg(q).arg(k_cache).arg(v_cache).arg(&seqs.slot.as_view()).arg(&seqs.past.as_view());
        l.i32(nh32).i32(nkv32).i32(hd32).i32(cap32).i32(splits32).f32(scale);
        // SAFETY: order and types match attention_decode_<T>; the block is ATT_DECODE_WARPS·32 threads;
        // one row per sequence checked above; keys 0..=past[s] < cap by the SeqTable; part holds
        // [n_seqs, nh, splits, hd + 2] whenever a sequence has more than one split (past + 1 ≤ max_keys).
        unsafe { l.run() }?;
        if splits > 1 {
            let name = T::pick("attention_decode_combine_f32", "attention_decode_combine_bf16");
            let mut l = gpu.launch(&ATTENTION, name, LaunchCfg::new(combine_grid, MAX_HEAD_DIM as u32));
            l.arg_mut(out).arg(&part.as_view()).arg(&seqs.past.as_view()).i32(nh32).i32(hd32).i32(splits32);
            // SAFETY: order and types match attention_decode_combine_<T>; a thread per dim (hd ≤ 128);
            // part written by the launch before (same stream), sized as above.
            unsafe { l.run() }?;
        }
        Ok(())
    })
}

/// [`cache_sizes`] of a decoding step, which takes exactly one row per sequence.
fn decode_sizes(op: &'static str, out: usize, q: usize, k_cache: usize, v_cache: usize, seqs: &SeqTable, heads: Heads) -> Result<Option<[i32; 4]>> {
    if seqs.n_rows != seqs.n_seqs || seqs.max_tq > 1 {
        return Err(Error::input(format!("{op}: {} rows for {} sequences; decoding takes one row each", seqs.n_rows, seqs.n_seqs)));
    }
    cache_sizes(op, out, q, k_cache, v_cache, seqs, heads)
}

/// The checks of attention over a KV cache (heads; lengths of out, q [n_rows, nh, hd] and the caches
/// [slots, cap, nkv, hd]); its sizes as kernel arguments (nh, nkv, hd, cap), or None when there are no rows.
fn cache_sizes(op: &'static str, out: usize, q: usize, k_cache: usize, v_cache: usize, seqs: &SeqTable, heads: Heads) -> Result<Option<[i32; 4]>> {
    check_heads(op, heads)?;
    let Heads { nh, nkv, hd } = heads;
    check_len(op, "out", out, seqs.n_rows * nh * hd)?;
    check_len(op, "q", q, seqs.n_rows * nh * hd)?;
    check_len(op, "k_cache", k_cache, seqs.slots * seqs.cap * nkv * hd)?;
    check_len(op, "v_cache", v_cache, seqs.slots * seqs.cap * nkv * hd)?;
    if seqs.n_rows == 0 {
        return Ok(None);
    }
    Ok(Some([as_i32(op, "nh", nh)?, as_i32(op, "nkv", nkv)?, as_i32(op, "hd", hd)?, as_i32(op, "cap", seqs.cap)?]))
}

/// The previous decode kernel, v2 (a block per query head and sequence over all of its keys, so each
/// K/V row is read once per query head of its group and a long sequence is one block per head), kept as
/// [`attention_decode`]'s bench baseline until a GPU has measured both. The same contract.
pub fn attention_decode_v2<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut DViewMut<T>,
    q: &DView<T>,
    k_cache: &DView<T>,
    v_cache: &DView<T>,
    seqs: &SeqTable,
    heads: Heads,
) -> Result<()> {
    const OP: &str = "attention_decode_v2";
    let Some([nh32, nkv32, hd32, cap32]) = decode_sizes(OP, out.len(), q.len(), k_cache.len(), v_cache.len(), seqs, heads)? else {
        return Ok(());
    };
    let scale = (1.0 / (heads.hd as f64).sqrt()) as f32;
    let grid = grid_dims(OP, [(heads.nh, "heads"), (seqs.n_seqs, "sequences"), (1, "")])?;
    let mut l = gpu.launch(&ATTENTION, T::pick("attention_decode_v2_f32", "attention_decode_v2_bf16"), LaunchCfg::new(grid, DECODE_WARPS as u32 * 32));
    l.arg_mut(out).arg(q).arg(k_cache).arg(v_cache).arg(&seqs.slot.as_view()).arg(&seqs.past.as_view());
    l.i32(nh32).i32(nkv32).i32(hd32).i32(cap32).f32(scale);
    // SAFETY: order and types match attention_decode_v2_<T>; one row per sequence checked above; keys
    // 0..=past[s] < cap by the SeqTable.
    unsafe { l.run() }
}

/// The sequences of a packed training batch (no KV cache): sequence s owns rows
/// `seq_start[s] .. seq_start[s + 1]` of q, k, v, out, lse, and its row i sees its rows 0 ..= i.
#[derive(Debug)]
pub struct PackedSeqs {
    pub n_seqs: usize,
    pub n_rows: usize,
    pub max_len: usize,
    pub seq_start: DeviceBuffer<i32>,
}

impl PackedSeqs {
    /// The sequences' lengths, in row order (a length may be 0: its sequence has no rows).
    pub fn new(gpu: &Gpu, lengths: &[usize]) -> Result<PackedSeqs> {
        let mut seq_start = Vec::with_capacity(lengths.len() + 1);
        let mut rows = 0usize;
        seq_start.push(0);
        for &t in lengths {
            rows = rows.checked_add(t).ok_or_else(|| Error::input("PackedSeqs: the row count overflows"))?;
            seq_start.push(as_i32("PackedSeqs", "rows", rows)?);
        }
        let max_len = lengths.iter().copied().max().unwrap_or(0);
        Ok(PackedSeqs { n_seqs: lengths.len(), n_rows: rows, max_len, seq_start: gpu.htod(&seq_start)? })
    }
}

fn packed_sizes(op: &'static str, heads: Heads, seqs: &PackedSeqs) -> Result<(i32, i32, i32, f32)> {
    check_heads(op, heads)?;
    let Heads { nh, nkv, hd } = heads;
    // kernels index rows · nh · hd in 64 bits but take the counts as i32
    as_i32(op, "rows", seqs.n_rows)?;
    Ok((as_i32(op, "nh", nh)?, as_i32(op, "nkv", nkv)?, as_i32(op, "hd", hd)?, (1.0 / (hd as f64).sqrt()) as f32))
}

/// Training forward: causal GQA attention of every packed sequence over its own rows, per sequence
/// `cpu::attention::attention_fwd` (tq = tk = its length), and the log-sum-exp of each row's scaled
/// scores (`cpu::attention::attention_lse`), which the backward recomputes the probabilities from.
/// out, q: [n_rows, nh, hd]   k, v: [n_rows, nkv, hd]   lse: [n_rows, nh] (f32)
#[allow(clippy::too_many_arguments)]
pub fn attention_fwd<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut DViewMut<T>,
    lse: &mut DViewMut<f32>,
    q: &DView<T>,
    k: &DView<T>,
    v: &DView<T>,
    seqs: &PackedSeqs,
    heads: Heads,
) -> Result<()> {
    const OP: &str = "attention_fwd";
    let (nh32, nkv32, hd32, scale) = packed_sizes(OP, heads, seqs)?;
    let Heads { nh, nkv, hd } = heads;
    let n = seqs.n_rows;
    check_len(OP, "out", out.len(), n * nh * hd)?;
    check_len(OP, "lse", lse.len(), n * nh)?;
    check_len(OP, "q", q.len(), n * nh * hd)?;
    check_len(OP, "k", k.len(), n * nkv * hd)?;
    check_len(OP, "v", v.len(), n * nkv * hd)?;
    if n == 0 {
        return Ok(());
    }
    let grid = grid_dims(OP, [(blocks(seqs.max_len, fwd_rows::<T>()), "query tiles"), (nh, "heads"), (seqs.n_seqs, "sequences")])?;
    let mut l = gpu.launch(&ATTENTION, T::pick("attention_fwd_f32", "attention_fwd_bf16"), LaunchCfg::new(grid, PREFILL_WARPS as u32 * 32));
    l.arg_mut(out).arg_mut(lse).arg(q).arg(k).arg(v).arg(&seqs.seq_start.as_view());
    l.i32(nh32).i32(nkv32).i32(hd32).f32(scale);
    // SAFETY: order and types match attention_fwd_<T>; the block is ATT_PREFILL_WARPS·32 threads;
    // seq_start is ascending from 0 to n_rows (PackedSeqs::new), so every row read or written is
    // < n_rows, whose lengths are checked above; heads checked (hd ≤ 128 fits the shared tiles).
    unsafe { l.run() }
}

/// Backward of [`attention_fwd`], with `cpu::attention::attention_bwd`'s contract per sequence:
/// dq, dk, dv accumulate (`+=`, each element rounded once to T). Two launches: dq (which also writes
/// `delta` = rowsum(dout ∘ out), [n_rows, nh] f32 scratch), then dk and dv, each kv head summing its
/// group's query heads in ascending order. No atomics: bit-identical from run to run.
/// dq, dout, q, out: [n_rows, nh, hd]   dk, dv, k, v: [n_rows, nkv, hd]   lse, delta: [n_rows, nh]
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<T: GpuFloat>(
    gpu: &Gpu,
    dq: &mut DViewMut<T>,
    dk: &mut DViewMut<T>,
    dv: &mut DViewMut<T>,
    delta: &mut DViewMut<f32>,
    dout: &DView<T>,
    q: &DView<T>,
    k: &DView<T>,
    v: &DView<T>,
    out: &DView<T>,
    lse: &DView<f32>,
    seqs: &PackedSeqs,
    heads: Heads,
) -> Result<()> {
    const OP: &str = "attention_bwd";
    let (nh32, nkv32, hd32, scale) = packed_sizes(OP, heads, seqs)?;
    let Heads { nh, nkv, hd } = heads;
    let n = seqs.n_rows;
    for (arg, len, want) in [("dq", dq.len(), nh), ("dout", dout.len(), nh), ("q", q.len(), nh), ("out", out.len(), nh)]
        .into_iter()
        .chain([("dk", dk.len(), nkv), ("dv", dv.len(), nkv), ("k", k.len(), nkv), ("v", v.len(), nkv)])
    {
        check_len(OP, arg, len, n * want * hd)?;
    }
    check_len(OP, "delta", delta.len(), n * nh)?;
    check_len(OP, "lse", lse.len(), n * nh)?;
    if n == 0 {
        return Ok(());
    }
    let seq_start = seqs.seq_start.as_view();
    let block = BWD_WARPS as u32 * 32;
    // (query rows, keys) per block: CUDA cores (f32) or tensor cores (bf16)
    let (rows, keys) = if T::NAME == "bf16" { (TC_ROWS, TC_ROWS) } else { (BWD_ROWS, BWD_KEYS) };
    let grid = grid_dims(OP, [(blocks(seqs.max_len, rows), "query tiles"), (nh, "heads"), (seqs.n_seqs, "sequences")])?;
    let mut l = gpu.launch(&ATTENTION, T::pick("attention_bwd_dq_f32", "attention_bwd_dq_bf16"), LaunchCfg::new(grid, block));
    l.arg_mut(dq).arg_mut(delta).arg(dout).arg(q).arg(k).arg(v).arg(out).arg(lse).arg(&seq_start);
    l.i32(nh32).i32(nkv32).i32(hd32).f32(scale);
    // SAFETY: order and types match attention_bwd_dq_<T>; the block is ATB_WARPS·32 threads; rows
    // stay below n_rows (PackedSeqs::new), lengths checked above; heads checked (hd ≤ 128).
    unsafe { l.run() }?;
    let delta = delta.as_view();
    let grid = grid_dims(OP, [(blocks(seqs.max_len, keys), "key tiles"), (nkv, "kv heads"), (seqs.n_seqs, "sequences")])?;
    let mut l = gpu.launch(&ATTENTION, T::pick("attention_bwd_dkdv_f32", "attention_bwd_dkdv_bf16"), LaunchCfg::new(grid, block));
    l.arg_mut(dk).arg_mut(dv).arg(dout).arg(q).arg(k).arg(v).arg(lse).arg(&delta).arg(&seq_start);
    l.i32(nh32).i32(nkv32).i32(hd32).f32(scale);
    // SAFETY: as above, for attention_bwd_dkdv_<T>; it reads the delta the launch before wrote (same stream).
    unsafe { l.run() }
}
