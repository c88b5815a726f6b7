//! Launcher of `cuda/residual.cu`.

use super::{blocks, grid_dims, DView, DViewMut, Gpu, GpuFloat, LaunchCfg, RESIDUAL};
use crate::error::{check_len, Result};

/// x[k] += y[k] (the residual connections of the decoder layer).   x, y: [len]
pub fn residual_add<T: GpuFloat>(gpu: &Gpu, x: &mut DViewMut<T>, y: &DView<T>) -> Result<()> {
    check_len("residual_add", "y", y.len(), x.len())?;
    let len = x.len();
    if len == 0 {
        return Ok(());
    }
    let name = T::pick("residual_add_f32", "residual_add_bf16");
    let grid = grid_dims("residual_add", [(blocks(len, 256), "len / 256"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&RESIDUAL, name, LaunchCfg::new(grid, 256));
    l.arg_mut(x).arg(y).u64(len as u64);
    // SAFETY: order and types match residual_add_<T> in cuda/residual.cu; lengths checked above.
    unsafe { l.run() }
}
