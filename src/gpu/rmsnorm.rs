//! Launcher of `cuda/rmsnorm.cu`.

use super::{as_i32, blocks, grid_dims, DView, DViewMut, Gpu, GpuFloat, LaunchCfg, RMSNORM};
use crate::error::{check_len, Result};

/// Same contract as `cpu::rmsnorm::rmsnorm_fwd`.  x, out: [n, c]   w: [c]   rstd: [n] (f32)
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_fwd<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut DViewMut<T>,
    rstd: &mut DViewMut<f32>,
    x: &DView<T>,
    w: &DView<T>,
    n: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    const OP: &str = "rmsnorm_fwd";
    check_len(OP, "x", x.len(), n * c)?;
    check_len(OP, "w", w.len(), c)?;
    check_len(OP, "out", out.len(), n * c)?;
    check_len(OP, "rstd", rstd.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let name = T::pick("rmsnorm_fwd_f32", "rmsnorm_fwd_bf16");
    let c32 = as_i32(OP, "c", c)?;
    let grid = grid_dims(OP, [(n, "rows"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&RMSNORM, name, LaunchCfg::new(grid, 256));
    l.arg_mut(out).arg_mut(rstd).arg(x).arg(w).i32(c32).f32(eps);
    // SAFETY: order and types match rmsnorm_fwd_<T> in cuda/rmsnorm.cu; lengths checked above.
    unsafe { l.run() }
}

/// Rows per block of `rmsnorm_bwd_<T>` (`RMSNORM_BWD_ROWS` in cuda/rmsnorm.cu): one dw partial per block.
pub const BWD_ROWS: usize = 16;

/// Length of the f32 scratch [`rmsnorm_bwd`] needs for n rows of width c: one dw partial row per
/// [`BWD_ROWS`] rows.
pub fn bwd_scratch_len(n: usize, c: usize) -> usize {
    n.div_ceil(BWD_ROWS) * c
}

/// Same contract as `cpu::rmsnorm::rmsnorm_bwd` (both outputs accumulate, `+=`), with dw in f32.
/// dx, dout, x: [n, c]   w: [c]   rstd: [n] (f32, from [`rmsnorm_fwd`])   dw: [c] (f32)
/// dw_part: [`bwd_scratch_len`]`(n, c)` f32 scratch (contents on entry do not matter).
/// dw is summed without atomics: per-block partials over fixed groups of [`BWD_ROWS`] rows, then a
/// second kernel adds them in block order, so every run (and every device) gives the same bits.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_bwd<T: GpuFloat>(
    gpu: &Gpu,
    dx: &mut DViewMut<T>,
    dw: &mut DViewMut<f32>,
    dw_part: &mut DViewMut<f32>,
    dout: &DView<T>,
    x: &DView<T>,
    w: &DView<T>,
    rstd: &DView<f32>,
    n: usize,
    c: usize,
) -> Result<()> {
    const OP: &str = "rmsnorm_bwd";
    check_len(OP, "dx", dx.len(), n * c)?;
    check_len(OP, "dw", dw.len(), c)?;
    check_len(OP, "dw_part", dw_part.len(), bwd_scratch_len(n, c))?;
    check_len(OP, "dout", dout.len(), n * c)?;
    check_len(OP, "x", x.len(), n * c)?;
    check_len(OP, "w", w.len(), c)?;
    check_len(OP, "rstd", rstd.len(), n)?;
    if n == 0 || c == 0 {
        return Ok(());
    }
    let (n32, c32) = (as_i32(OP, "n", n)?, as_i32(OP, "c", c)?);
    let parts = n.div_ceil(BWD_ROWS);
    // the block's dw accumulator: c floats of dynamic shared memory (over 48 KiB the launch opts in)
    let shared_bytes = u32::try_from(c * 4).map_err(|_| crate::Error::input(format!("{OP}: c = {c} is too wide")))?;
    let mut cfg = LaunchCfg::new(grid_dims(OP, [(parts, "row groups"), (1, ""), (1, "")])?, 256);
    cfg.shared_bytes = shared_bytes;
    let mut l = gpu.launch(&RMSNORM, T::pick("rmsnorm_bwd_f32", "rmsnorm_bwd_bf16"), cfg);
    l.arg_mut(dx).arg_mut(dw_part).arg(dout).arg(x).arg(w).arg(rstd).i32(n32).i32(c32);
    // SAFETY: order and types match rmsnorm_bwd_<T> in cuda/rmsnorm.cu; lengths checked above; the
    // grid covers ceil(n / BWD_ROWS) partial rows, the scratch's length; c floats of shared memory.
    unsafe { l.run() }?;
    let parts32 = as_i32(OP, "row groups", parts)?;
    let mut l = gpu.launch(&RMSNORM, "rmsnorm_bwd_dw", LaunchCfg::new(grid_dims(OP, [(blocks(c, 256), "c / 256"), (1, ""), (1, "")])?, 256));
    l.arg_mut(dw).arg(&dw_part.as_view()).i32(parts32).i32(c32);
    // SAFETY: order and types match rmsnorm_bwd_dw; dw_part holds `parts` rows of c (checked above).
    unsafe { l.run() }
}
