//! Launcher of `cuda/residual.cu`.

use super::{blocks, grid_dims, Gpu, GpuFloat};
use crate::error::{check_len, Result};
use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

/// x[k] += y[k] (the residual connections of the decoder layer).   x, y: [len]
pub fn residual_add<T: GpuFloat>(gpu: &Gpu, x: &mut CudaViewMut<T>, y: &CudaView<T>) -> Result<()> {
    check_len("residual_add", "y", y.len(), x.len())?;
    let len = x.len();
    if len == 0 {
        return Ok(());
    }
    let name = T::pick("residual_add_f32", "residual_add_bf16");
    let f = gpu.function("residual", name)?;
    let len64 = len as u64;
    let grid_dim = grid_dims("residual_add", [(blocks(len, 256), "len / 256"), (1, ""), (1, "")])?;
    let cfg = LaunchConfig { grid_dim, block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut args = gpu.stream.launch_builder(&f);
    args.arg(x).arg(y).arg(&len64);
    // SAFETY: order and types match residual_add_<T> in cuda/residual.cu; lengths checked above.
    unsafe { gpu.launch(name, cfg, &mut args) }
}
