//! Launcher of `cuda/rmsnorm.cu`.

use super::{as_i32, grid_dims, Gpu, GpuFloat};
use crate::error::{check_len, Result};
use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

/// Same contract as `cpu::rmsnorm::rmsnorm_fwd`.  x, out: [n, c]   w: [c]   rstd: [n] (f32)
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_fwd<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut CudaViewMut<T>,
    rstd: &mut CudaViewMut<f32>,
    x: &CudaView<T>,
    w: &CudaView<T>,
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
    let f = gpu.function("rmsnorm", name)?;
    let c32 = as_i32(OP, "c", c)?;
    let grid_dim = grid_dims(OP, [(n, "rows"), (1, ""), (1, "")])?;
    let cfg = LaunchConfig { grid_dim, block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut args = gpu.stream.launch_builder(&f);
    args.arg(out).arg(rstd).arg(x).arg(w).arg(&c32).arg(&eps);
    // SAFETY: order and types match rmsnorm_fwd_<T> in cuda/rmsnorm.cu; lengths checked above.
    unsafe { gpu.launch(name, cfg, &mut args) }
}
