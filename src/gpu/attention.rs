//! Launchers of `cuda/attention.cu`: KV-cache append, prefill (flash) attention, decode attention.

use super::{as_i32, blocks, grid_dims, DView, DViewMut, DeviceBuffer, Gpu, GpuFloat, LaunchCfg, ATTENTION};
use crate::error::{check_len, Error, Result};

/// Largest head dim the kernels hold in registers / shared memory (Qwen2: 64 or 128).
pub const MAX_HEAD_DIM: usize = 128;

/// Query rows per prefill block: `ATT_BQ` in cuda/attention.cu.
pub const PREFILL_ROWS: usize = 16;
/// Warps per prefill block: `ATT_PREFILL_WARPS` in cuda/attention.cu, a compile-time constant there
/// (the kernel's row-to-warp split and its loop strides assume exactly this many);
/// tests/kernels_compile.rs checks the two agree.
pub const PREFILL_WARPS: usize = 4;
/// Warps per decode block: `ATT_DECODE_WARPS` in cuda/attention.cu (its shared tiles are sized by it).
pub const DECODE_WARPS: usize = 8;

/// Where the packed rows of a batch come from, validated on the host and uploaded once per forward.
/// Entry s: `tq[s]` new rows (rows `seq_start[s] ..`), appended after `past[s]` cached positions of
/// cache slot `slot[s]`. Every row's slot and position are kept for the KV append and the rotary.
#[derive(Debug)]
pub struct SeqTable {
    pub n_seqs: usize,
    pub n_rows: usize,
    pub max_tq: usize,
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
        let mut max_tq = 0;
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
        }
        let up = |v: &[i32]| -> Result<DeviceBuffer<i32>> { gpu.htod(v) };
        Ok(SeqTable {
            n_seqs: entries.len(),
            n_rows: row_slot.len(),
            max_tq,
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
    check_heads(OP, heads)?;
    let Heads { nh, nkv, hd } = heads;
    check_len(OP, "out", out.len(), seqs.n_rows * nh * hd)?;
    check_len(OP, "q", q.len(), seqs.n_rows * nh * hd)?;
    check_len(OP, "k_cache", k_cache.len(), seqs.slots * seqs.cap * nkv * hd)?;
    check_len(OP, "v_cache", v_cache.len(), seqs.slots * seqs.cap * nkv * hd)?;
    if seqs.n_rows == 0 {
        return Ok(());
    }
    let name = T::pick("attention_prefill_f32", "attention_prefill_bf16");
    let (nh32, nkv32, hd32, cap32) = (as_i32(OP, "nh", nh)?, as_i32(OP, "nkv", nkv)?, as_i32(OP, "hd", hd)?, as_i32(OP, "cap", seqs.cap)?);
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let grid = grid_dims(OP, [(blocks(seqs.max_tq, PREFILL_ROWS), "query tiles"), (nh, "heads"), (seqs.n_seqs, "sequences")])?;
    let mut l = gpu.launch(&ATTENTION, name, LaunchCfg::new(grid, PREFILL_WARPS as u32 * 32));
    l.arg_mut(out).arg(q).arg(k_cache).arg(v_cache).arg(&seqs.slot.as_view()).arg(&seqs.seq_start.as_view()).arg(&seqs.past.as_view());
    l.i32(nh32).i32(nkv32).i32(hd32).i32(cap32).f32(scale);
    // SAFETY: order and types match attention_prefill_<T>; the block is the kernel's compile-time
    // ATT_PREFILL_WARPS·32 threads; the SeqTable keeps every key index < cap
    // and every row < n_rows; heads checked (hd ≤ 128 fits the shared tiles).
    unsafe { l.run() }
}

/// [`attention_prefill`] for a decoding step: exactly one new row per sequence (row s of q and out),
/// keys split across [`DECODE_WARPS`] warps per (head, sequence).
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
    check_heads(OP, heads)?;
    if seqs.n_rows != seqs.n_seqs || seqs.max_tq > 1 {
        return Err(Error::input(format!("{OP}: {} rows for {} sequences; decoding takes one row each", seqs.n_rows, seqs.n_seqs)));
    }
    let Heads { nh, nkv, hd } = heads;
    check_len(OP, "out", out.len(), seqs.n_rows * nh * hd)?;
    check_len(OP, "q", q.len(), seqs.n_rows * nh * hd)?;
    check_len(OP, "k_cache", k_cache.len(), seqs.slots * seqs.cap * nkv * hd)?;
    check_len(OP, "v_cache", v_cache.len(), seqs.slots * seqs.cap * nkv * hd)?;
    if seqs.n_rows == 0 {
        return Ok(());
    }
    let name = T::pick("attention_decode_f32", "attention_decode_bf16");
    let (nh32, nkv32, hd32, cap32) = (as_i32(OP, "nh", nh)?, as_i32(OP, "nkv", nkv)?, as_i32(OP, "hd", hd)?, as_i32(OP, "cap", seqs.cap)?);
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let grid = grid_dims(OP, [(nh, "heads"), (seqs.n_seqs, "sequences"), (1, "")])?;
    let mut l = gpu.launch(&ATTENTION, name, LaunchCfg::new(grid, DECODE_WARPS as u32 * 32));
    l.arg_mut(out).arg(q).arg(k_cache).arg(v_cache).arg(&seqs.slot.as_view()).arg(&seqs.past.as_view());
    l.i32(nh32).i32(nkv32).i32(hd32).i32(cap32).f32(scale);
    // SAFETY: order and types match attention_decode_<T>; one row per sequence checked above; keys
    // 0..=past[s] < cap by the SeqTable.
    unsafe { l.run() }
}
