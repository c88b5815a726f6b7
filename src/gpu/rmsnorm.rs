//! Launcher of `cuda/rmsnorm.cu`.

use super::{as_i32, grid_dims, DView, DViewMut, Gpu, GpuFloat, LaunchCfg, RMSNORM};
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
