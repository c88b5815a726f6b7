//! Launcher of `cuda/logprob.cu`: the fused lm head (GEMM + log-softmax + gather, no logits tensor).

use super::{as_i32, blocks, grid_dims, DView, DViewMut, DeviceBuffer, Gpu, GpuFloat, LaunchCfg, LOGPROB};
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
        const OP: &str = "head_logprob";
        if let Some((r, &t)) = targets.iter().enumerate().find(|(_, &t)| t as usize >= v) {
            return Err(Error::input(format!("{OP}: target {t} of row {r} is not below the vocabulary size {v}")));
        }
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
