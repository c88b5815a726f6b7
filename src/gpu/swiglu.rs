//! Launcher of `cuda/swiglu.cu`.

use super::{as_i32, blocks, grid_dims, Gpu, GpuFloat};
use crate::error::{check_len, Result};
use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

/// `cpu::swiglu::swiglu_fwd` on the fused gate|up projection:
/// out[r, k] = silu(gu[r, k]) · gu[r, ff + k].   out: [n, ff]   gu: [n, 2·ff]
pub fn swiglu_fwd<T: GpuFloat>(gpu: &Gpu, out: &mut CudaViewMut<T>, gu: &CudaView<T>, n: usize, ff: usize) -> Result<()> {
    const OP: &str = "swiglu_fwd";
    check_len(OP, "out", out.len(), n * ff)?;
    check_len(OP, "gu", gu.len(), n * 2 * ff)?;
    if n * ff == 0 {
        return Ok(());
    }
    let name = T::pick("swiglu_fwd_f32", "swiglu_fwd_bf16");
    let f = gpu.function("swiglu", name)?;
    let (n32, ff32) = (as_i32(OP, "n", n)?, as_i32(OP, "ff", ff)?);
    let grid_dim = grid_dims(OP, [(blocks(n * ff, 256), "n·ff / 256"), (1, ""), (1, "")])?;
    let cfg = LaunchConfig { grid_dim, block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut args = gpu.stream.launch_builder(&f);
    args.arg(out).arg(gu).arg(&n32).arg(&ff32);
    // SAFETY: order and types match swiglu_fwd_<T> in cuda/swiglu.cu; lengths checked above.
    unsafe { gpu.launch(name, cfg, &mut args) }
}
