//! Launcher of `cuda/embedding.cu`.

use super::{as_i32, grid_dims, DView, DViewMut, Gpu, GpuFloat, LaunchCfg, EMBEDDING};
use crate::error::{check_len, Result};

/// Same contract as `cpu::embedding::embedding_fwd`.  out: [n, c]   ids: [n]   table: [v, c]
/// Ids must be < v (the model validates them); an id ≥ v yields a NaN row, never an out-of-bounds read.
pub fn embedding_fwd<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut DViewMut<T>,
    ids: &DView<u32>,
    table: &DView<T>,
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
    let (c32, v32) = (as_i32(OP, "c", c)?, as_i32(OP, "v", v)?);
    let grid = grid_dims(OP, [(n, "rows"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&EMBEDDING, name, LaunchCfg::new(grid, 256));
    l.arg_mut(out).arg(ids).arg(table).i32(c32).i32(v32);
    // SAFETY: order and types match embedding_fwd_<T> in cuda/embedding.cu; lengths checked above.
    unsafe { l.run() }
}
