//! Launchers of `cuda/matmul.cu`: y = x·Wᵀ + b with W stored [out, in].

use super::{as_i32, blocks, grid_dims, DView, DViewMut, Gpu, GpuFloat, LaunchCfg, MATMUL};
use crate::error::{check_len, Result};

/// Block tile of the bf16 tensor-core kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulTile {
    /// 128×128, 256 threads: enough blocks only when m·n is large (prefill, scoring)
    Large,
    /// 64×64, 128 threads: 4× the blocks for small m (decoding)
    Small,
}

impl MatmulTile {
    fn size(self) -> usize {
        match self {
            MatmulTile::Large => 128,
            MatmulTile::Small => 64,
        }
    }
    fn threads(self) -> u32 {
        match self {
            MatmulTile::Large => 256,
            MatmulTile::Small => 128,
        }
    }
    /// Large tiles when they alone give at least one block per SM, else small ones.
    pub fn choose(gpu: &Gpu, n: usize, d_out: usize) -> Self {
        if n.div_ceil(128) * d_out.div_ceil(128) >= gpu.sm_count {
            MatmulTile::Large
        } else {
            MatmulTile::Small
        }
    }
}

/// 16-byte loads need k % 8 == 0 and 16-byte aligned operands (views into the flat parameter
/// buffer start at any element).
fn vec_ok<T: GpuFloat>(d_in: usize, x: &DView<T>, w: &DView<T>) -> i32 {
    (d_in.is_multiple_of(8) && x.addr().is_multiple_of(16) && w.addr().is_multiple_of(16)) as i32
}

#[allow(clippy::too_many_arguments)]
fn check(op: &'static str, out: usize, x: usize, w: usize, b: Option<usize>, n: usize, d_in: usize, d_out: usize) -> Result<()> {
    check_len(op, "out", out, n * d_out)?;
    check_len(op, "x", x, n * d_in)?;
    check_len(op, "w", w, d_out * d_in)?;
    if let Some(b) = b {
        check_len(op, "b", b, d_out)?;
    }
    Ok(())
}

/// Same contract as `cpu::matmul::matmul_fwd`:  out[r, o] = Σ_i x[r, i]·w[o, i] + b[o]
/// out: [n, d_out]   x: [n, d_in]   w: [d_out, d_in]   b: [d_out]
/// f32 runs on the CUDA cores; bf16 on the tensor cores with the tile of [`MatmulTile::choose`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_fwd<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut DViewMut<T>,
    x: &DView<T>,
    w: &DView<T>,
    b: Option<&DView<T>>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    let tile = MatmulTile::choose(gpu, n, d_out);
    launch::<T, T>(gpu, tile, out, x, w, b, n, d_in, d_out)
}

/// [`matmul_fwd`] with the bf16 tile chosen by the caller (tests and benches cover both).
#[allow(clippy::too_many_arguments)]
pub fn matmul_fwd_with<T: GpuFloat>(
    gpu: &Gpu,
    tile: MatmulTile,
    out: &mut DViewMut<T>,
    x: &DView<T>,
    w: &DView<T>,
    b: Option<&DView<T>>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    launch::<T, T>(gpu, tile, out, x, w, b, n, d_in, d_out)
}

/// [`matmul_fwd`] with an f32 output whatever T is (the lm-head logits that feed the sampler).
#[allow(clippy::too_many_arguments)]
pub fn matmul_fwd_f32out<T: GpuFloat>(
    gpu: &Gpu,
    out: &mut DViewMut<f32>,
    x: &DView<T>,
    w: &DView<T>,
    b: Option<&DView<T>>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    let tile = MatmulTile::choose(gpu, n, d_out);
    launch::<T, f32>(gpu, tile, out, x, w, b, n, d_in, d_out)
}

/// [`matmul_fwd_f32out`] with the bf16 tile chosen by the caller (tests and benches cover both).
#[allow(clippy::too_many_arguments)]
pub fn matmul_fwd_f32out_with<T: GpuFloat>(
    gpu: &Gpu,
    tile: MatmulTile,
    out: &mut DViewMut<f32>,
    x: &DView<T>,
    w: &DView<T>,
    b: Option<&DView<T>>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    launch::<T, f32>(gpu, tile, out, x, w, b, n, d_in, d_out)
}

#[allow(clippy::too_many_arguments)]
fn launch<T: GpuFloat, O: GpuFloat>(
    gpu: &Gpu,
    tile: MatmulTile,
    out: &mut DViewMut<O>,
    x: &DView<T>,
    w: &DView<T>,
    b: Option<&DView<T>>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    const OP: &str = "matmul_fwd";
    check(OP, out.len(), x.len(), w.len(), b.map(|b| b.len()), n, d_in, d_out)?;
    if n == 0 || d_out == 0 {
        return Ok(());
    }
    let (m32, k32, n32) = (as_i32(OP, "n", n)?, as_i32(OP, "d_in", d_in)?, as_i32(OP, "d_out", d_out)?);
    let f32_in = T::NAME == "f32";
    assert!(!f32_in || O::NAME == "f32", "matmul: an f32 input has an f32 output");
    let name = match (f32_in, O::NAME == "f32", tile) {
        (true, _, _) => "matmul_fwd_f32",
        (false, false, MatmulTile::Large) => "matmul_fwd_bf16_large",
        (false, false, MatmulTile::Small) => "matmul_fwd_bf16_small",
        (false, true, MatmulTile::Large) => "matmul_fwd_bf16f32_large",
        (false, true, MatmulTile::Small) => "matmul_fwd_bf16f32_small",
    };
    let (bm, threads) = if f32_in { (64, 256) } else { (tile.size(), tile.threads()) };
    // rows on grid.y (≤ 65,535 tiles: n ≤ 4.19M rows with 64-row tiles), columns on x
    let grid = grid_dims(OP, [(blocks(d_out, bm), "d_out / tile"), (blocks(n, bm), "rows / tile"), (1, "")])?;
    let mut l = gpu.launch(&MATMUL, name, LaunchCfg::new(grid, threads));
    l.arg_mut(out).arg(x).arg(w).arg_opt(b).i32(m32).i32(k32).i32(n32);
    if !f32_in {
        l.i32(vec_ok(d_in, x, w));
    }
    // SAFETY: order and types match the chosen kernel in cuda/matmul.cu (the f32 kernel has no `vec`);
    // lengths checked above; `vec` is set only when every 16-byte load is in bounds and aligned.
    unsafe { l.run() }
}
