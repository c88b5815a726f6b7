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
    check_len(OP, "x", x.len(), n * d_in)?;
    if let Some(db) = &db {
        check_len(OP, "db", db.len(), d_out)?;
    }
    matmul_bwd_dx(gpu, dx_tile, dx, dout, w, n, d_in, d_out)?;
    matmul_bwd_dw(gpu, dw_tile, dw, dout, x, n, d_in, d_out)?;
    match db {
        Some(db) => matmul_bwd_db(gpu, db, dout, n, d_out),
        None => Ok(()),
    }
}

/// The db sum of [`matmul_bwd`] alone: db[o] += Σ_r dout[r, o] (8 row phases, then the phase sums in
/// order).   db: [d_out] (f32)   dout: [n, d_out]
pub fn matmul_bwd_db<T: GpuFloat>(gpu: &Gpu, db: &mut DViewMut<f32>, dout: &DView<T>, n: usize, d_out: usize) -> Result<()> {
    const OP: &str = "matmul_bwd";
    check_len(OP, "db", db.len(), d_out)?;
    check_len(OP, "dout", dout.len(), n * d_out)?;
    if n * d_out == 0 {
        return Ok(());
    }
    let (n32, out32) = (as_i32(OP, "n", n)?, as_i32(OP, "d_out", d_out)?);
    let grid = grid_dims(OP, [(blocks(d_out, 32), "d_out / 32"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&MATMUL, T::pick("matmul_bwd_db_f32", "matmul_bwd_db_bf16"), LaunchCfg::new(grid, 256));
    l.arg_mut(db).arg(dout).i32(n32).i32(out32);
    // SAFETY: order and types match matmul_bwd_db_<T>; db: [d_out], dout: [n, d_out], checked above.
    unsafe { l.run() }
}

/// 16-byte loads need every operand's contiguous dimension (d_out for dout, d_in for w and x) to take
/// whole chunks, and 16-byte aligned operands.
fn bwd_vec(d_in: usize, d_out: usize, addrs: &[u64]) -> i32 {
    (d_in.is_multiple_of(8) && d_out.is_multiple_of(8) && addrs.iter().all(|a| a.is_multiple_of(16))) as i32
}

/// The dX product of [`matmul_bwd`] alone: dx[r, i] += Σ_o dout[r, o]·w[o, i], into a dX of type O:
/// T, or f32 from bf16 operands (a caller summing several products into one dX in f32 rounds once at
/// the end: the head backward).   dx: [n, d_in]   dout: [n, d_out]   w: [d_out, d_in]
#[allow(clippy::too_many_arguments)]
pub fn matmul_bwd_dx<T: GpuFloat, O: GpuFloat>(
    gpu: &Gpu,
    tile: MatmulTile,
    dx: &mut DViewMut<O>,
    dout: &DView<T>,
    w: &DView<T>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    check_len("matmul_bwd", "dx", dx.len(), n * d_in)?;
    check_len("matmul_bwd", "w", w.len(), d_out * d_in)?;
    assert!(T::NAME == "bf16" || O::NAME == "f32", "matmul_bwd: an f32 input has an f32 output");
    let names = if O::NAME == "f32" {
        ["matmul_bwd_dx_f32", "matmul_bwd_dx_bf16f32_large", "matmul_bwd_dx_bf16f32_small"]
    } else {
        ["matmul_bwd_dx_f32", "matmul_bwd_dx_bf16_large", "matmul_bwd_dx_bf16_small"]
    };
    // rows of the output on grid.y: m = n rows, the product's k = d_out
    let vec = bwd_vec(d_in, d_out, &[dout.addr(), w.addr()]);
    bwd_product(gpu, tile, names, dx, dout, w, [n, d_out, d_in], "rows / tile", vec)
}

/// The dW product of [`matmul_bwd`] alone: dw[o, i] += Σ_r dout[r, o]·x[r, i] (m = d_out, k = n rows,
/// n = d_in).   dw: [d_out, d_in] (f32)   dout: [n, d_out]   x: [n, d_in]
#[allow(clippy::too_many_arguments)]
pub fn matmul_bwd_dw<T: GpuFloat>(
    gpu: &Gpu,
    tile: MatmulTile,
    dw: &mut DViewMut<f32>,
    dout: &DView<T>,
    x: &DView<T>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    check_len("matmul_bwd", "dw", dw.len(), d_out * d_in)?;
    check_len("matmul_bwd", "x", x.len(), n * d_in)?;
    let names = ["matmul_bwd_dw_f32", "matmul_bwd_dw_bf16_large", "matmul_bwd_dw_bf16_small"];
    let vec = bwd_vec(d_in, d_out, &[dout.addr(), x.addr()]);
    bwd_product(gpu, tile, names, dw, dout, x, [d_out, n, d_in], "d_out / tile", vec)
}

/// One backward product out[m, n] += A·B with A = dout (read as stored, [n rows, d_out]) and B the
/// other operand ([·, d_in] as stored); `names` = (f32, bf16 large, bf16 small) kernels; `mkn` the
/// product's (m, k, n); `vec` from [`bwd_vec`]. The caller checked `out` and `b`; dout is checked here.
#[allow(clippy::too_many_arguments)]
fn bwd_product<T: GpuFloat, O: GpuFloat>(
    gpu: &Gpu,
    tile: MatmulTile,
    [f32_name, large, small]: [&'static str; 3],
    out: &mut DViewMut<O>,
    dout: &DView<T>,
    b: &DView<T>,
    [m, k, n]: [usize; 3],
    m_tiles: &str,
    vec: i32,
) -> Result<()> {
    const OP: &str = "matmul_bwd";
    check_len(OP, "dout", dout.len(), m * k)?;
    if m == 0 || k == 0 || n == 0 {
        return Ok(());
    }
    let f32_in = T::NAME == "f32";
    let (name, edge, threads) = match (f32_in, tile) {
        (true, _) => (f32_name, 64, 256),
        (false, MatmulTile::Large) => (large, tile.size(), tile.threads()),
        (false, MatmulTile::Small) => (small, tile.size(), tile.threads()),
    };
    let (m32, k32, n32) = (as_i32(OP, "m", m)?, as_i32(OP, "k", k)?, as_i32(OP, "n", n)?);
    let grid = grid_dims(OP, [(blocks(n, edge), "d_in / tile"), (blocks(m, edge), m_tiles), (1, "")])?;
    let mut l = gpu.launch(&MATMUL, name, LaunchCfg::new(grid, threads));
    l.arg_mut(out).arg(dout).arg(b).i32(m32).i32(k32).i32(n32);
    if !f32_in {
        l.i32(vec);
    }
    // SAFETY: order and types match the chosen matmul_bwd_{dx,dw} kernel in cuda/matmul.cu (the f32 ones
    // have no `vec`); out and b checked by the caller, dout here; `vec` is set only when every 16-byte
    // load is in bounds and aligned.
    unsafe { l.run() }
}
