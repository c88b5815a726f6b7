//! Launcher of `cuda/rope.cu`, and the cos/sin tables it reads.

use super::{as_i32, grid_dims, DView, DViewMut, Gpu, GpuFloat, LaunchCfg, ROPE};
use crate::error::{check_len, Result};

/// cos and sin of every (position, frequency) for positions 0..max_pos: [max_pos, hd/2] each, the
/// values of `cpu::rope::rope_tables::<f32>` (computed in f64, rounded once).
pub fn rope_table(max_pos: usize, hd: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let positions: Vec<usize> = (0..max_pos).collect();
    crate::cpu::rope::rope_tables::<f32>(&positions, hd, theta)
}

/// Same contract as `cpu::rope::rope_fwd`, in place, with the row positions looked up in the
/// tables of [`rope_table`].  x: [n, heads, hd]   pos: [n] (each < max_pos)   cos, sin: [max_pos, hd/2]
/// Positions are the caller's contract (the model validates them); a position ≥ max_pos (or < 0)
/// yields a NaN row, never a read past the tables.
#[allow(clippy::too_many_arguments)]
pub fn rope_fwd<T: GpuFloat>(
    gpu: &Gpu,
    x: &mut DViewMut<T>,
    pos: &DView<i32>,
    cos: &DView<f32>,
    sin: &DView<f32>,
    n: usize,
    heads: usize,
    hd: usize,
) -> Result<()> {
    const OP: &str = "rope_fwd";
    assert!(hd.is_multiple_of(2), "rope_fwd: odd head dim {hd}");
    check_len(OP, "x", x.len(), n * heads * hd)?;
    check_len(OP, "pos", pos.len(), n)?;
    check_len(OP, "sin", sin.len(), cos.len())?;
    if n == 0 || hd == 0 {
        return Ok(());
    }
    check_len(OP, "cos", cos.len(), cos.len() / (hd / 2) * (hd / 2))?;
    let max_pos = as_i32(OP, "max_pos", cos.len() / (hd / 2))?;
    let name = T::pick("rope_fwd_f32", "rope_fwd_bf16");
    let (h32, hd32) = (as_i32(OP, "heads", heads)?, as_i32(OP, "hd", hd)?);
    let grid = grid_dims(OP, [(n, "rows"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&ROPE, name, LaunchCfg::new(grid, 128));
    l.arg_mut(x).arg(pos).arg(cos).arg(sin).i32(h32).i32(hd32).i32(max_pos);
    // SAFETY: order and types match rope_fwd_<T> in cuda/rope.cu; lengths checked above; the kernel
    // reads the tables only at positions in [0, max_pos) (others give NaN rows).
    unsafe { l.run() }
}
