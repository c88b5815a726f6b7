//! Launcher of `cuda/swiglu.cu`.

use super::{as_i32, blocks, grid_dims, DView, DViewMut, Gpu, GpuFloat, LaunchCfg, SWIGLU};
use crate::error::{check_len, Result};

/// `cpu::swiglu::swiglu_fwd` on the fused gate|up projection:
/// out[r, k] = silu(gu[r, k]) · gu[r, ff + k].   out: [n, ff]   gu: [n, 2·ff]
pub fn swiglu_fwd<T: GpuFloat>(gpu: &Gpu, out: &mut DViewMut<T>, gu: &DView<T>, n: usize, ff: usize) -> Result<()> {
    const OP: &str = "swiglu_fwd";
    check_len(OP, "out", out.len(), n * ff)?;
    check_len(OP, "gu", gu.len(), n * 2 * ff)?;
    if n * ff == 0 {
        return Ok(());
    }
    let name = T::pick("swiglu_fwd_f32", "swiglu_fwd_bf16");
    let (n32, ff32) = (as_i32(OP, "n", n)?, as_i32(OP, "ff", ff)?);
    let grid = grid_dims(OP, [(blocks(n * ff, 256), "n·ff / 256"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&SWIGLU, name, LaunchCfg::new(grid, 256));
    l.arg_mut(out).arg(gu).i32(n32).i32(ff32);
    // SAFETY: order and types match swiglu_fwd_<T> in cuda/swiglu.cu; lengths checked above.
    unsafe { l.run() }
}

/// `cpu::swiglu::swiglu_bwd` on the fused gate|up rows (accumulates, `+=`):
/// dgu[r, k] += dout[r, k]·u·σ(g)(1 + g(1 − σ(g))),  dgu[r, ff + k] += dout[r, k]·silu(g),  g = gu[r, k], u = gu[r, ff + k]
/// dgu, gu: [n, 2·ff]   dout: [n, ff]
pub fn swiglu_bwd<T: GpuFloat>(gpu: &Gpu, dgu: &mut DViewMut<T>, dout: &DView<T>, gu: &DView<T>, n: usize, ff: usize) -> Result<()> {
    const OP: &str = "swiglu_bwd";
    check_len(OP, "dgu", dgu.len(), n * 2 * ff)?;
    check_len(OP, "dout", dout.len(), n * ff)?;
    check_len(OP, "gu", gu.len(), n * 2 * ff)?;
    if n * ff == 0 {
        return Ok(());
    }
    let name = T::pick("swiglu_bwd_f32", "swiglu_bwd_bf16");
    let (n32, ff32) = (as_i32(OP, "n", n)?, as_i32(OP, "ff", ff)?);
    let grid = grid_dims(OP, [(blocks(n * ff, 256), "n·ff / 256"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&SWIGLU, name, LaunchCfg::new(grid, 256));
    l.arg_mut(dgu).arg(dout).arg(gu).i32(n32).i32(ff32);
    // SAFETY: order and types match swiglu_bwd_<T> in cuda/swiglu.cu; lengths checked above.
    unsafe { l.run() }
}
