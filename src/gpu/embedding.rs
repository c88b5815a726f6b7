//! Launcher of `cuda/embedding.cu`.

use super::{as_i32, grid_dims, Gpu, GpuFloat};
use crate::error::{check_len, Result};
use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

/// Same contract as `cpu::embedding::embedding_fwd`.  out: [n, c]   ids: [n]   table: [v, c]
/// Ids must be < v (the model validates them); an id ≥ v yields a NaN row, never an out-of-bounds read.
pub fn embedding_fwd<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut CudaViewMut<T>,
    ids: &CudaView<u32>,
    table: &CudaView<T>,
    n: usize,
    c: usize,
    v: usize,
) -> Result<()> {
    const OP: &str = "embedding_fwd";
    check_len(OP, "out", out.len(), n * c)?;
    check_len(OP, "ids", ids.len(), n)?;
    check_len(OP, "table", table.len(), v * c)?;
    if n == 0 || c == 0 {
        return Ok(());
    }
    let name = T::pick("embedding_fwd_f32", "embedding_fwd_bf16");
    let f = gpu.function("embedding", name)?;
    let (c32, v32) = (as_i32(OP, "c", c)?, as_i32(OP, "v", v)?);
    let grid_dim = grid_dims(OP, [(n, "rows"), (1, ""), (1, "")])?;
    let cfg = LaunchConfig { grid_dim, block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut args = gpu.stream.launch_builder(&f);
    args.arg(out).arg(ids).arg(table).arg(&c32).arg(&v32);
    // SAFETY: order and types match embedding_fwd_<T> in cuda/embedding.cu; lengths checked above.
    unsafe { gpu.launch(name, cfg, &mut args) }
}
