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
    (d_in % 8 == 0 && x.addr() % 16 == 0 && w.addr() % 16 == 0) as i32
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

/// Same contract as `cpu::matmul::matmul_bwd`, every output accumulating (`+=`), dw and db in f32:
///   dx[r, i] += Σ_o dout[r, o]·w[o, i]    dw[o, i] += Σ_r dout[r, o]·x[r, i]    db[o] += Σ_r dout[r, o]
/// dx, x: [n, d_in]   dout: [n, d_out]   w: [d_out, d_in]   dw: [d_out, d_in] (f32)   db: [d_out] (f32)
/// f32 runs on the CUDA cores; bf16 on the tensor cores, each product with the tile
/// [`MatmulTile::choose`] picks for its own output shape (dx: n × d_in, dw: d_out × d_in).
#[allow(clippy::too_many_arguments)]
pub fn matmul_bwd<T: GpuFloat>(
    gpu: &Gpu,
    dx: &mut DViewMut<T>,
    dw: &mut DViewMut<f32>,
    db: Option<&mut DViewMut<f32>>,
    dout: &DView<T>,
    x: &DView<T>,
    w: &DView<T>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    let tiles = (MatmulTile::choose(gpu, n, d_in), MatmulTile::choose(gpu, d_out, d_in));
    matmul_bwd_with(gpu, tiles, dx, dw, db, dout, x, w, n, d_in, d_out)
}

/// [`matmul_bwd`] with the bf16 tiles (dx, dw) chosen by the caller (tests and benches cover all).
#[allow(clippy::too_many_arguments)]
pub fn matmul_bwd_with<T: GpuFloat>(
    gpu: &Gpu,
    (dx_tile, dw_tile): (MatmulTile, MatmulTile),
    dx: &mut DViewMut<T>,
    dw: &mut DViewMut<f32>,
    db: Option<&mut DViewMut<f32>>,
    dout: &DView<T>,
    x: &DView<T>,
    w: &DView<T>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    const OP: &str = "matmul_bwd";
    check_len(OP, "dx", dx.len(), n * d_in)?;
    check_len(OP, "dw", dw.len(), d_out * d_in)?;
    check_len(OP, "dout", dout.len(), n * d_out)?;
    check_len(OP, "x", x.len(), n * d_in)?;
    check_len(OP, "w", w.len(), d_out * d_in)?;
    if let Some(db) = &db {
        check_len(OP, "db", db.len(), d_out)?;
    }
    if n == 0 || d_in == 0 || d_out == 0 {
        return Ok(());
    }
    let (n32, in32, out32) = (as_i32(OP, "n", n)?, as_i32(OP, "d_in", d_in)?, as_i32(OP, "d_out", d_out)?);
    let f32_in = T::NAME == "f32";
    // every operand's contiguous dimension (d_out for dout, d_in for w and x) must take whole 16-byte chunks
    let vec = (d_in % 8 == 0 && d_out % 8 == 0 && [dout.addr(), x.addr(), w.addr()].iter().all(|a| a % 16 == 0)) as i32;
    // (kernel, tile edge, threads) of one product
    let pick = |f32_name: &'static str, large: &'static str, small: &'static str, tile: MatmulTile| match (f32_in, tile) {
        (true, _) => (f32_name, 64, 256),
        (false, MatmulTile::Large) => (large, tile.size(), tile.threads()),
        (false, MatmulTile::Small) => (small, tile.size(), tile.threads()),
    };

    // dX = dY·W: m = n rows, k = d_out, n = d_in
    let (name, edge, threads) = pick("matmul_bwd_dx_f32", "matmul_bwd_dx_bf16_large", "matmul_bwd_dx_bf16_small", dx_tile);
    let grid = grid_dims(OP, [(blocks(d_in, edge), "d_in / tile"), (blocks(n, edge), "rows / tile"), (1, "")])?;
    let mut l = gpu.launch(&MATMUL, name, LaunchCfg::new(grid, threads));
    l.arg_mut(dx).arg(dout).arg(w).i32(n32).i32(out32).i32(in32);
    if !f32_in {
        l.i32(vec);
    }
    // SAFETY: order and types match the chosen matmul_bwd_dx kernel in cuda/matmul.cu (the f32 one has
    // no `vec`); lengths checked above; `vec` is set only when every 16-byte load is in bounds and aligned.
    unsafe { l.run() }?;

    // dW = dYᵀ·X: m = d_out, k = n rows, n = d_in
    let (name, edge, threads) = pick("matmul_bwd_dw_f32", "matmul_bwd_dw_bf16_large", "matmul_bwd_dw_bf16_small", dw_tile);
    let grid = grid_dims(OP, [(blocks(d_in, edge), "d_in / tile"), (blocks(d_out, edge), "d_out / tile"), (1, "")])?;
    let mut l = gpu.launch(&MATMUL, name, LaunchCfg::new(grid, threads));
    l.arg_mut(dw).arg(dout).arg(x).i32(out32).i32(n32).i32(in32);
    if !f32_in {
        l.i32(vec);
    }
    // SAFETY: as for dX, with the dW kernel's operands (dY read [n, d_out], X read [n, d_in]).
    unsafe { l.run() }?;

    if let Some(db) = db {
        let grid = grid_dims(OP, [(blocks(d_out, 32), "d_out / 32"), (1, ""), (1, "")])?;
        let mut l = gpu.launch(&MATMUL, T::pick("matmul_bwd_db_f32", "matmul_bwd_db_bf16"), LaunchCfg::new(grid, 256));
        l.arg_mut(db).arg(dout).i32(n32).i32(out32);
        // SAFETY: order and types match matmul_bwd_db_<T>; db: [d_out], dout: [n, d_out], checked above.
        unsafe { l.run() }?;
    }
    Ok(())
}
