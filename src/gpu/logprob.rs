//! Launcher of `cuda/logprob.cu`: the fused lm head (GEMM + log-softmax + gather, no logits tensor).

use super::{as_i32, blocks, grid_dims, DView, DViewMut, DeviceBuffer, Gpu, GpuFloat, LaunchCfg, LOGPROB};
use super::matmul::{matmul_bwd_dw, matmul_bwd_dx, MatmulTile};
use crate::error::{check_len, Error, Result};

/// Rows per launch pair: bounds the partials scratch to ROW_CHUNK · ceil(v / 64) · 8 bytes
/// (≈ 78 MB at v = 151,936), whatever the number of scored tokens.
pub const ROW_CHUNK: usize = 4096;

/// (kernel, rows per block, vocabulary columns per block) of the partial kernel for T.
fn tiles<T: GpuFloat>() -> (&'static str, usize, usize) {
    if T::NAME == "f32" {
        ("head_partial_f32", 64, 64)
    } else {
        ("head_partial_bf16", 128, 128)
    }
}

/// The device side of one scoring call: the targets (checked < v on the host, uploaded once) and the
/// per-chunk partials. Built once, it can serve any number of [`head_logprob_with`] calls with these
/// targets (a benchmark times the kernels only; a caller scoring many batches of one shape reuses it).
pub struct HeadScratch {
    targets: DeviceBuffer<u32>,
    part_m: DeviceBuffer<f32>,
    part_s: DeviceBuffer<f32>,
    z_target: DeviceBuffer<f32>,
    n: usize,
    v: usize,
    /// the partial kernel the buffers are sized for
    partial: &'static str,
}

impl HeadScratch {
    /// Scratch for `targets.len()` rows over a vocabulary of `v`, for storage type T.
    pub fn new<T: GpuFloat>(gpu: &Gpu, targets: &[u32], v: usize) -> Result<HeadScratch> {
        check_targets("head_logprob", targets, v)?;
        let (partial, _, bn) = tiles::<T>();
        let n = targets.len();
        let chunk = ROW_CHUNK.min(n).max(1);
        let nb = blocks(v, bn).max(1);
        Ok(HeadScratch {
            targets: gpu.htod(targets)?,
            part_m: gpu.alloc_zeros::<f32>(chunk * nb)?,
            part_s: gpu.alloc_zeros::<f32>(chunk * nb)?,
            z_target: gpu.alloc_zeros::<f32>(chunk)?,
            n,
            v,
            partial,
        })
    }
}

/// logp[r] = log softmax(h[r]·Wᵀ / temp)[targets[r]] and lse[r] = logsumexp(h[r]·Wᵀ / temp), i.e.
/// `cpu::logprob::logprob_fwd` of the logits `cpu::matmul::matmul_fwd(h, w)`, without ever
/// materialising the [n, v] logits.   h: [n, c]   w: [v, c]   targets: [n] (host, each < v)   logp, lse: [n]
#[allow(clippy::too_many_arguments)]
pub fn head_logprob<T: GpuFloat>(
    gpu: &Gpu,
    logp: &mut DViewMut<f32>,
    lse: &mut DViewMut<f32>,
    h: &DView<T>,
    w: &DView<T>,
    targets: &[u32],
    n: usize,
    c: usize,
    v: usize,
    temp: f64,
) -> Result<()> {
    check_len("head_logprob", "targets", targets.len(), n)?;
    let mut scratch = HeadScratch::new::<T>(gpu, targets, v)?;
    head_logprob_with(gpu, &mut scratch, logp, lse, h, w, n, c, v, temp)
}

/// [`head_logprob`] with the targets and buffers of a prepared [`HeadScratch`] (same n, v and T).
#[allow(clippy::too_many_arguments)]
pub fn head_logprob_with<T: GpuFloat>(
    gpu: &Gpu,
    scratch: &mut HeadScratch,
    logp: &mut DViewMut<f32>,
    lse: &mut DViewMut<f32>,
    h: &DView<T>,
    w: &DView<T>,
    n: usize,
    c: usize,
    v: usize,
    temp: f64,
) -> Result<()> {
    const OP: &str = "head_logprob";
    let (partial, bm, bn) = tiles::<T>();
    check_len(OP, "logp", logp.len(), n)?;
    check_len(OP, "lse", lse.len(), n)?;
    check_len(OP, "h", h.len(), n * c)?;
    check_len(OP, "w", w.len(), v * c)?;
    check_len(OP, "scratch rows", scratch.n, n)?;
    check_len(OP, "scratch vocabulary", scratch.v, v)?;
    if scratch.partial != partial {
        return Err(Error::input(format!("{OP}: scratch sized for {}, called for {partial}", scratch.partial)));
    }
    if !(temp > 0.0 && temp.is_finite()) {
        return Err(Error::input(format!("{OP}: temperature must be positive, got {temp}")));
    }
    if n == 0 {
        return Ok(());
    }
    let f32_path = T::NAME == "f32";
    let nb = blocks(v, bn);
    let chunk = ROW_CHUNK.min(n);
    let (c32, v32, nb32) = (as_i32(OP, "c", c)?, as_i32(OP, "v", v)?, as_i32(OP, "nb", nb)?);
    let inv_temp = (1.0 / temp) as f32;
    let vec = (c.is_multiple_of(8) && h.addr().is_multiple_of(16) && w.addr().is_multiple_of(16)) as i32;
    for r0 in (0..n).step_by(chunk) {
        let rows = chunk.min(n - r0);
        let rows32 = rows as i32;
        let hv = h.slice(r0 * c..(r0 + rows) * c);
        let tv = scratch.targets.slice(r0..r0 + rows);
        // row blocks on x (fastest): co-resident blocks share W's vocabulary tiles in L2
        let grid = grid_dims(OP, [(blocks(rows, bm), "row tiles"), (nb, "vocabulary tiles"), (1, "")])?;
        let mut l = gpu.launch(&LOGPROB, partial, LaunchCfg::new(grid, 256));
        let (mut pm, mut ps, mut zt) = (scratch.part_m.as_view_mut(), scratch.part_s.as_view_mut(), scratch.z_target.as_view_mut());
        l.arg_mut(&mut pm).arg_mut(&mut ps).arg_mut(&mut zt).arg(&hv).arg(w).arg(&tv);
        l.i32(rows32).i32(c32).i32(v32).f32(inv_temp);
        if !f32_path {
            l.i32(vec);
        }
        // SAFETY: order and types match head_partial_<T> in cuda/logprob.cu (only bf16 takes `vec`);
        // partials hold chunk·nb entries (rows ≤ chunk, grid.y = nb), targets < v checked by HeadScratch::new.
        unsafe { l.run() }?;

        let mut lv = logp.slice_mut(r0..r0 + rows);
        let mut sv = lse.slice_mut(r0..r0 + rows);
        let grid = grid_dims(OP, [(rows, "rows"), (1, ""), (1, "")])?;
        let mut l = gpu.launch(&LOGPROB, "head_finish", LaunchCfg::new(grid, 256));
        let (pm, ps, zt) = (scratch.part_m.as_view(), scratch.part_s.as_view(), scratch.z_target.as_view());
        l.arg_mut(&mut lv).arg_mut(&mut sv).arg(&pm).arg(&ps).arg(&zt).i32(nb32);
        // SAFETY: order and types match head_finish; one block per row of this chunk, nb partials each.
        unsafe { l.run() }?;
    }
    Ok(())
}

/// Every target below the vocabulary size, else an input error naming the first bad row.
fn check_targets(op: &str, targets: &[u32], v: usize) -> Result<()> {
    match targets.iter().enumerate().find(|(_, &t)| t as usize >= v) {
        Some((r, t)) => Err(Error::input(format!("{op}: target {t} of row {r} is not below the vocabulary size {v}"))),
        None => Ok(()),
    }
}

/// Rows and vocabulary ids per chunk of [`head_bwd`]: its dlogits scratch holds at most
/// 4096 × 8192 values (64 MiB in bf16) whatever the batch and the vocabulary.
pub const BWD_ROW_CHUNK: usize = 4096;
pub const BWD_VOCAB_CHUNK: usize = 8192;

/// The device side of one head backward: the targets (checked < v on the host, uploaded once) and the
/// dlogits scratch of one (rows, vocabulary) chunk. Reusable for any number of [`head_bwd_with`] calls
/// with these targets.
pub struct HeadGradScratch<T: GpuFloat> {
    targets: DeviceBuffer<u32>,
    dlogits: DeviceBuffer<T>,
    /// bf16: dh of one row chunk summed over the vocabulary chunks in f32 (zero between calls),
    /// allocated on first use (its width c comes with the call)
    dh_acc: Option<DeviceBuffer<f32>>,
    n: usize,
    v: usize,
    rows: usize,
    vocab: usize,
}

impl<T: GpuFloat> HeadGradScratch<T> {
    /// Scratch for `targets.len()` rows over a vocabulary of `v`, with the default chunks.
    pub fn new(gpu: &Gpu, targets: &[u32], v: usize) -> Result<Self> {
        Self::with_chunks(gpu, targets, v, BWD_ROW_CHUNK, BWD_VOCAB_CHUNK)
    }

    /// Scratch with chunks of `rows` × `vocab` (tests use small ones to cross chunk boundaries).
    pub fn with_chunks(gpu: &Gpu, targets: &[u32], v: usize, rows: usize, vocab: usize) -> Result<Self> {
        assert!(rows > 0 && vocab > 0, "head_bwd: empty chunks");
        check_targets("head_bwd", targets, v)?;
        let (rows, vocab) = (rows.min(targets.len()).max(1), vocab.min(v).max(1));
        let targets_d = gpu.htod(if targets.is_empty() { &[0] } else { targets })?;
        Ok(HeadGradScratch { targets: targets_d, dlogits: gpu.alloc_zeros::<T>(rows * vocab)?, dh_acc: None, n: targets.len(), v, rows, vocab })
    }

    /// Rows of the scratch's row chunk (≤ the rows it was made for).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Reuses the scratch and its chunks for other `targets` (checked < v; the targets' buffer grows
    /// when they are more): [`head_bwd_with`] then gives the bits of a fresh scratch for them
    /// whenever their row chunks are the same, i.e. min(targets.len(), the fresh row chunk) ≤ [`Self::rows`].
    pub fn set_targets(&mut self, gpu: &Gpu, targets: &[u32]) -> Result<()> {
        check_targets("head_bwd", targets, self.v)?;
        if targets.len() > self.targets.len() {
            self.targets = gpu.alloc_zeros::<u32>(targets.len())?;
        }
        gpu.memcpy_htod(targets, &mut self.targets.slice_mut(0..targets.len()))?;
        self.n = targets.len();
        Ok(())
    }
}

/// Backward of [`head_logprob`]: with dlogits[r, j] = dlogp[r]·(1[j = targets[r]] − softmax(z[r])_j) / temp,
/// z = h·Wᵀ / temp (`cpu::logprob::logprob_bwd` of the logits `cpu::matmul::matmul_fwd(h, w)`),
///   dh[r, :] += Σ_j dlogits[r, j]·w[j, :]     dw[j, :] += Σ_r dlogits[r, j]·h[r, :]
/// without the [n, v] logits: the logits are recomputed chunk by chunk of the vocabulary.
/// dh, h: [n, c]   w: [v, c]   dw: [v, c] (f32; for tied embeddings, the embedding's gradient table)
/// dlogp: [n] (the gradient of each token's log-prob)   lse: [n] (from [`head_logprob`], the same temp)
#[allow(clippy::too_many_arguments)]
pub fn head_bwd<T: GpuFloat>(
    gpu: &Gpu,
    dh: &mut DViewMut<T>,
    dw: &mut DViewMut<f32>,
    dlogp: &DView<f32>,
    lse: &DView<f32>,
    h: &DView<T>,
    w: &DView<T>,
    targets: &[u32],
    n: usize,
    c: usize,
    v: usize,
    temp: f64,
) -> Result<()> {
    check_len("head_bwd", "targets", targets.len(), n)?;
    let mut scratch = HeadGradScratch::<T>::new(gpu, targets, v)?;
    head_bwd_with(gpu, &mut scratch, dh, dw, dlogp, lse, h, w, n, c, v, temp)
}

/// [`head_bwd`] with the targets and scratch of a prepared [`HeadGradScratch`] (same n and v).
#[allow(clippy::too_many_arguments)]
pub fn head_bwd_with<T: GpuFloat>(
    gpu: &Gpu,
    scratch: &mut HeadGradScratch<T>,
    dh: &mut DViewMut<T>,
    dw: &mut DViewMut<f32>,
    dlogp: &DView<f32>,
    lse: &DView<f32>,
    h: &DView<T>,
    w: &DView<T>,
    n: usize,
    c: usize,
    v: usize,
    temp: f64,
) -> Result<()> {
    const OP: &str = "head_bwd";
    check_len(OP, "dh", dh.len(), n * c)?;
    check_len(OP, "dw", dw.len(), v * c)?;
    check_len(OP, "dlogp", dlogp.len(), n)?;
    check_len(OP, "lse", lse.len(), n)?;
    check_len(OP, "h", h.len(), n * c)?;
    check_len(OP, "w", w.len(), v * c)?;
    check_len(OP, "scratch rows", scratch.n, n)?;
    check_len(OP, "scratch vocabulary", scratch.v, v)?;
    if !(temp > 0.0 && temp.is_finite()) {
        return Err(Error::input(format!("{OP}: temperature must be positive, got {temp}")));
    }
    if n == 0 || v == 0 || c == 0 {
        return Ok(());
    }
    let f32_path = T::NAME == "f32";
    let (name, bm, bn) = if f32_path { ("head_dlogits_f32", 64, 64) } else { ("head_dlogits_bf16", 128, 128) };
    let (c32, inv_temp) = (as_i32(OP, "c", c)?, (1.0 / temp) as f32);
    if !f32_path && scratch.dh_acc.as_ref().is_none_or(|a| a.len() != scratch.rows * c) {
        scratch.dh_acc = Some(gpu.alloc_zeros::<f32>(scratch.rows * c)?);
    }
    for r0 in (0..n).step_by(scratch.rows) {
        let rows = scratch.rows.min(n - r0);
        let hv = h.slice(r0 * c..(r0 + rows) * c);
        for j0 in (0..v).step_by(scratch.vocab) {
            let vc = scratch.vocab.min(v - j0);
            let wv = w.slice(j0 * c..(j0 + vc) * c);
            let vec = (c.is_multiple_of(8) && hv.addr().is_multiple_of(16) && wv.addr().is_multiple_of(16)) as i32;
            let mut dl = scratch.dlogits.slice_mut(0..rows * vc);
            let grid = grid_dims(OP, [(blocks(rows, bm), "row tiles"), (blocks(vc, bn), "vocabulary tiles"), (1, "")])?;
            let mut l = gpu.launch(&LOGPROB, name, LaunchCfg::new(grid, 256));
            let (tv, gv, lv) = (scratch.targets.slice(r0..r0 + rows), dlogp.slice(r0..r0 + rows), lse.slice(r0..r0 + rows));
            l.arg_mut(&mut dl).arg(&hv).arg(&wv).arg(&tv).arg(&gv).arg(&lv);
            l.i32(as_i32(OP, "rows", rows)?).i32(c32).i32(as_i32(OP, "vocabulary chunk", vc)?).i32(as_i32(OP, "vocabulary", j0)?).f32(inv_temp);
            if !f32_path {
                l.i32(vec);
            }
            // SAFETY: order and types match head_dlogits_<T> in cuda/logprob.cu (only bf16 takes `vec`);
            // dlogits holds rows·vc ≤ the scratch's chunk; targets < v were checked by the scratch.
            unsafe { l.run() }?;
            // the chunk's share of both products: dh[rows] += dlogits·W[chunk], dW[chunk] += dlogitsᵀ·h[rows]
            // (bf16: dh into the f32 accumulator, rounded once after the last chunk)
            let dl = scratch.dlogits.slice(0..rows * vc);
            let dx_tile = MatmulTile::choose(gpu, rows, c);
            match scratch.dh_acc.as_mut() {
                Some(acc) => matmul_bwd_dx(gpu, dx_tile, &mut acc.slice_mut(0..rows * c), &dl, &wv, rows, c, vc)?,
                None => matmul_bwd_dx(gpu, dx_tile, &mut dh.slice_mut(r0 * c..(r0 + rows) * c), &dl, &wv, rows, c, vc)?,
            }
            matmul_bwd_dw(gpu, MatmulTile::choose(gpu, vc, c), &mut dw.slice_mut(j0 * c..(j0 + vc) * c), &dl, &hv, rows, c, vc)?;
        }
        if let Some(acc) = scratch.dh_acc.as_mut() {
            let len = rows * c;
            let grid = grid_dims(OP, [(blocks(len, 256), "rows·c / 256"), (1, ""), (1, "")])?;
            let mut l = gpu.launch(&LOGPROB, "head_dh_flush_bf16", LaunchCfg::new(grid, 256));
            let mut dhv = dh.slice_mut(r0 * c..(r0 + rows) * c);
            l.arg_mut(&mut dhv).arg_mut(&mut acc.slice_mut(0..len)).i32(as_i32(OP, "rows·c", len)?);
            // SAFETY: order and types match head_dh_flush_bf16 (T is bf16 whenever dh_acc exists);
            // both views hold rows·c elements.
            unsafe { l.run() }?;
        }
    }
    Ok(())
}
