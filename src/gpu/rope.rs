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
    rotate("rope_fwd", T::pick("rope_fwd_f32", "rope_fwd_bf16"), gpu, x, pos, cos, sin, n, heads, hd)
}

/// Same contract as `cpu::rope::rope_bwd` (the rotation by −angle, in place on the gradient), with
/// the positions and tables of [`rope_fwd`].  dx: [n, heads, hd]   pos: [n]   cos, sin: [max_pos, hd/2]
#[allow(clippy::too_many_arguments)]
pub fn rope_bwd<T: GpuFloat>(
    gpu: &Gpu,
    dx: &mut DViewMut<T>,
    pos: &DView<i32>,
    cos: &DView<f32>,
    sin: &DView<f32>,
    n: usize,
    heads: usize,
    hd: usize,
) -> Result<()> {
    rotate("rope_bwd", T::pick("rope_bwd_f32", "rope_bwd_bf16"), gpu, dx, pos, cos, sin, n, heads, hd)
}

#[allow(clippy::too_many_arguments)]
fn rotate<T: GpuFloat>(
    op: &'static str,
    kernel: &'static str,
    gpu: &Gpu,
    x: &mut DViewMut<T>,
    pos: &DView<i32>,
    cos: &DView<f32>,
    sin: &DView<f32>,
    n: usize,
    heads: usize,
    hd: usize,
) -> Result<()> {
    assert!(hd.is_multiple_of(2), "{op}: odd head dim {hd}");
    check_len(op, "x", x.len(), n * heads * hd)?;
    check_len(op, "pos", pos.len(), n)?;
    check_len(op, "sin", sin.len(), cos.len())?;
    if n == 0 || hd == 0 {
        return Ok(());
    }
    check_len(op, "cos", cos.len(), cos.len() / (hd / 2) * (hd / 2))?;
    let max_pos = as_i32(op, "max_pos", cos.len() / (hd / 2))?;
    let (h32, hd32) = (as_i32(op, "heads", heads)?, as_i32(op, "hd", hd)?);
    let grid = grid_dims(op, [(n, "rows"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&ROPE, kernel, LaunchCfg::new(grid, 128));
    l.arg_mut(x).arg(pos).arg(cos).arg(sin).i32(h32).i32(hd32).i32(max_pos);
    // SAFETY: order and types match rope_{fwd,bwd}_<T> in cuda/rope.cu; lengths checked above; the
    // kernel reads the tables only at positions in [0, max_pos) (others give NaN rows).
    unsafe { l.run() }
}
