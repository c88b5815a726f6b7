//! Launchers of `cuda/matmul.cu`: y = x·Wᵀ + b with W stored [out, in].

use super::{as_i32, blocks, grid_dims, DView, DViewMut, Gpu, GpuFloat, LaunchCfg, MATMUL};
use crate::error::{check_len, Result};

/// Block tile of the bf16 tensor-core kernels. Both tiles add the same mma k-steps in the same order,
/// so the choice never changes a bit (tests/kernels_matmul.rs checks it): it may follow the device.
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

/// Rows at or below which the forward splits k: one 64-row tile, the GEMMs of a decoding step.
pub const SPLIT_ROWS: usize = 64;
/// Blocks a split GEMM aims for: about 4 per SM of a 132-SM H100, each with one k-tile of the weight
/// in flight (the performance log's arithmetic). A constant, never the device's SM count: the k
/// ranges, and so the bits, are the same on every device.
pub const SPLIT_BLOCKS: usize = 512;
/// Fewest k-tiles (of 32) per split: each block streams ≥ 16 KB of a 64-column weight tile, and the
/// f32 partials it writes (≤ 64 rows × 64 columns) stay at most the size of what it read.
pub const SPLIT_MIN_KTILES: usize = 4;

/// How a GEMM's work is cut into blocks (the launchers' plan; tests and benches force one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulPlan {
    /// one block per output tile walks all of k (bf16: this tile; f32 always runs 64×64)
    Whole(MatmulTile),
    /// 64×64 output tiles (bf16 small / f32), k cut into ranges of `k_chunk` (a multiple of 32), one
    /// block per (tile, range) writing f32 partial sums to the device's workspace, then a second
    /// kernel adding them in range order (+ bias), rounded once. One range is exactly `Whole`'s bits.
    SplitK { k_chunk: usize },
}

impl From<MatmulTile> for MatmulPlan {
    fn from(tile: MatmulTile) -> Self {
        MatmulPlan::Whole(tile)
    }
}

impl MatmulPlan {
    /// The forward's plan for `n` rows: at most [`SPLIT_ROWS`], k split by [`MatmulPlan::split_k`] from
    /// the weight's shape alone, so a row's bits depend neither on the device nor on how many other
    /// rows (≤ 64) share the launch; above, the whole-k kernel with [`MatmulTile::choose`]'s tile.
    pub fn forward(gpu: &Gpu, n: usize, d_in: usize, d_out: usize) -> Self {
        if n <= SPLIT_ROWS {
            MatmulPlan::split_k(d_out.div_ceil(64), d_in)
        } else {
            MatmulTile::choose(gpu, n, d_out).into()
        }
    }

    /// The weight gradient's plan, dW [d_out, d_in] += dYᵀ·X over `n` tokens: split k (the tokens)
    /// by [`MatmulPlan::split_k`] from the shape alone when the weight has fewer than
    /// [`SPLIT_BLOCKS`] 64×64 tiles (Qwen2-0.5B's q, k, v, o), else the whole-k kernel with
    /// [`MatmulTile::choose`]'s tile (either tile: the same bits).
    pub fn dw(gpu: &Gpu, n: usize, d_in: usize, d_out: usize) -> Self {
        match MatmulPlan::split_k(d_out.div_ceil(64) * d_in.div_ceil(64), n) {
            MatmulPlan::Whole(_) => MatmulTile::choose(gpu, d_out, d_in).into(),
            split => split,
        }
    }

    /// Split k of a GEMM with `tiles` 64×64 output tiles: enough ranges for [`SPLIT_BLOCKS`] blocks,
    /// none shorter than [`SPLIT_MIN_KTILES`] k-tiles, equal lengths but the last; `Whole(Small)`
    /// when that leaves one range (the same bits).
    pub fn split_k(tiles: usize, k: usize) -> Self {
        let k_tiles = k.div_ceil(32);
        let splits = SPLIT_BLOCKS.div_ceil(tiles.max(1)).min(k_tiles / SPLIT_MIN_KTILES);
        if splits < 2 {
            return MatmulPlan::Whole(MatmulTile::Small);
        }
        MatmulPlan::SplitK { k_chunk: k_tiles.div_ceil(splits) * 32 }
    }

    /// The bf16 block tile the plan runs (split-k runs the small one).
    fn tile(self) -> MatmulTile {
        match self {
            MatmulPlan::Whole(tile) => tile,
            MatmulPlan::SplitK { .. } => MatmulTile::Small,
        }
    }

    /// The k ranges this plan cuts an inner size `k` into (1 for `Whole`).
    pub fn splits(self, k: usize) -> usize {
        match self {
            MatmulPlan::Whole(_) => 1,
            MatmulPlan::SplitK { k_chunk } => k.div_ceil(k_chunk).max(1),
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
/// f32 runs on the CUDA cores; bf16 on the tensor cores; cut as [`MatmulPlan::forward`] says.
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
    launch::<T, T>(gpu, MatmulPlan::forward(gpu, n, d_in, d_out), out, x, w, b, n, d_in, d_out)
}

/// [`matmul_fwd`] with the plan (or just the bf16 tile) chosen by the caller (tests and benches cover each).
#[allow(clippy::too_many_arguments)]
pub fn matmul_fwd_with<T: GpuFloat>(
    gpu: &Gpu,
    plan: impl Into<MatmulPlan>,
    out: &mut DViewMut<T>,
    x: &DView<T>,
    w: &DView<T>,
    b: Option<&DView<T>>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    launch::<T, T>(gpu, plan.into(), out, x, w, b, n, d_in, d_out)
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
    launch::<T, f32>(gpu, MatmulPlan::forward(gpu, n, d_in, d_out), out, x, w, b, n, d_in, d_out)
}

/// [`matmul_fwd_f32out`] with the plan (or just the bf16 tile) chosen by the caller (tests and benches cover each).
#[allow(clippy::too_many_arguments)]
pub fn matmul_fwd_f32out_with<T: GpuFloat>(
    gpu: &Gpu,
    plan: impl Into<MatmulPlan>,
    out: &mut DViewMut<f32>,
    x: &DView<T>,
    w: &DView<T>,
    b: Option<&DView<T>>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    launch::<T, f32>(gpu, plan.into(), out, x, w, b, n, d_in, d_out)
}

#[allow(clippy::too_many_arguments)]
fn launch<T: GpuFloat, O: GpuFloat>(
    gpu: &Gpu,
    plan: MatmulPlan,
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
    let vec = (!f32_in).then(|| vec_ok(d_in, x, w));
    let (splits, tile) = (plan.splits(d_in), plan.tile());
    let (bm, threads) = if f32_in { (64, 256) } else { (tile.size(), tile.threads()) };
    // rows on grid.y (≤ 65,535 tiles: n ≤ 4.19M rows with 64-row tiles), columns on x, k ranges on z
    let grid = grid_dims(OP, [(blocks(d_out, bm), "d_out / tile"), (blocks(n, bm), "rows / tile"), (splits, "k ranges")])?;
    if splits == 1 {
        let name = match (f32_in, O::NAME == "f32", tile) {
            (true, _, _) => "matmul_fwd_f32",
            (false, false, MatmulTile::Large) => "matmul_fwd_bf16_large",
            (false, false, MatmulTile::Small) => "matmul_fwd_bf16_small",
            (false, true, MatmulTile::Large) => "matmul_fwd_bf16f32_large",
            (false, true, MatmulTile::Small) => "matmul_fwd_bf16f32_small",
        };
        let mut l = gpu.launch(&MATMUL, name, LaunchCfg::new(grid, threads));
        l.arg_mut(out).arg(x).arg(w).arg_opt(b).i32(m32).i32(k32).i32(n32);
        if let Some(vec) = vec {
            l.i32(vec);
        }
        // SAFETY: order and types match the chosen kernel in cuda/matmul.cu (the f32 kernel has no `vec`);
        // lengths checked above; `vec` is set only when every 16-byte load is in bounds and aligned.
        return unsafe { l.run() };
    }
    let MatmulPlan::SplitK { k_chunk } = plan else { unreachable!("a whole-k plan has one range") };
    let sum = match (f32_in, O::NAME == "f32") {
        (true, _) => "matmul_split_sum_f32",
        (false, false) => "matmul_split_sum_bf16",
        (false, true) => "matmul_split_sum_bf16f32",
    };
    let names = [T::pick("matmul_part_f32", "matmul_part_bf16_small"), sum];
    split_k_product(gpu, OP, names, k_chunk, out, x, w, Some(b), [n, d_in, d_out], (grid, threads), vec)
}

/// The two launches of a split-k product out (+)= A·B ([m, n]; k cut into `k_chunk` ranges, grid.z
/// of `launch` = the ranges): `part` writes each range's f32 sums to the device's workspace
/// ([ranges, m, n]), `sum` adds them in range order into out, with the bias (`bias = Some(b)`, the
/// forward's sum kernels) or onto out's old value (`None`, matmul_split_acc_f32). The operand
/// layouts are the part kernel's; `vec` as for the whole-k kernel (None for f32).
#[allow(clippy::too_many_arguments)]
fn split_k_product<T: GpuFloat, O: GpuFloat>(
    gpu: &Gpu,
    op: &'static str,
    [part, sum]: [&'static str; 2],
    k_chunk: usize,
    out: &mut DViewMut<O>,
    a: &DView<T>,
    b: &DView<T>,
    bias: Option<Option<&DView<T>>>,
    [m, k, n]: [usize; 3],
    (grid, threads): ((u32, u32, u32), u32),
    vec: Option<i32>,
) -> Result<()> {
    assert!(k_chunk.is_multiple_of(32), "matmul: split-k ranges are whole k-tiles of 32");
    let splits = k.div_ceil(k_chunk);
    let (m32, k32, n32, chunk32, splits32) = (as_i32(op, "m", m)?, as_i32(op, "k", k)?, as_i32(op, "n", n)?, as_i32(op, "k_chunk", k_chunk)?, as_i32(op, "splits", splits)?);
    let sum_grid = grid_dims(op, [(blocks(m * n, 256), "outputs / 256"), (1, ""), (1, "")])?;
    gpu.with_workspace(splits * m * n, |ws| {
        let mut l = gpu.launch(&MATMUL, part, LaunchCfg::new(grid, threads));
        l.arg_mut(ws).arg(a).arg(b).i32(m32).i32(k32).i32(n32).i32(chunk32);
        if let Some(vec) = vec {
            l.i32(vec);
        }
        // SAFETY: order and types match the matmul_*part* kernel named (the f32 ones have no `vec`); the
        // caller checked a and b for this product's layouts, and `vec` as for its whole-k kernel; ws
        // holds [splits, m, n] f32 and grid.z = splits = ceil(k / k_chunk).
        unsafe { l.run() }?;
        let mut l = gpu.launch(&MATMUL, sum, LaunchCfg::new(sum_grid, 256));
        l.arg_mut(out).arg(&ws.as_view());
        if let Some(bias) = bias {
            l.arg_opt(bias);
        }
        l.i32(m32).i32(n32).i32(splits32);
        // SAFETY: order and types match the matmul_split_* kernel named (the sums take the bias, the
        // accumulation does not); out: [m, n] and the bias [n] checked by the caller; ws written by the
        // launch before (same stream).
        unsafe { l.run() }
    })
}

/// Same contract as `cpu::matmul::matmul_bwd`, every output accumulating (`+=`), dw and db in f32:
///   dx[r, i] += Σ_o dout[r, o]·w[o, i]    dw[o, i] += Σ_r dout[r, o]·x[r, i]    db[o] += Σ_r dout[r, o]
/// dx, x: [n, d_in]   dout: [n, d_out]   w: [d_out, d_in]   dw: [d_out, d_in] (f32)   db: [d_out] (f32)
/// f32 runs on the CUDA cores; bf16 on the tensor cores, dx with the tile [`MatmulTile::choose`]
/// picks for its output shape (n × d_in), dw cut as [`MatmulPlan::dw`] says.
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
    let plans = (MatmulTile::choose(gpu, n, d_in), MatmulPlan::dw(gpu, n, d_in, d_out));
    matmul_bwd_with(gpu, plans, dx, dw, db, dout, x, w, n, d_in, d_out)
}

/// [`matmul_bwd`] with the bf16 dx tile and the dw plan (or tile) chosen by the caller (tests and
/// benches cover all).
#[allow(clippy::too_many_arguments)]
pub fn matmul_bwd_with<T: GpuFloat>(
    gpu: &Gpu,
    (dx_tile, dw_tile): (MatmulTile, impl Into<MatmulPlan>),
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
/// n = d_in), cut as `plan` says ([`MatmulPlan::dw`] is the launcher's own choice; a bare
/// [`MatmulTile`] walks all tokens in one block per tile).
/// dw: [d_out, d_in] (f32)   dout: [n, d_out]   x: [n, d_in]
#[allow(clippy::too_many_arguments)]
pub fn matmul_bwd_dw<T: GpuFloat>(
    gpu: &Gpu,
    plan: impl Into<MatmulPlan>,
    dw: &mut DViewMut<f32>,
    dout: &DView<T>,
    x: &DView<T>,
    n: usize,
    d_in: usize,
    d_out: usize,
) -> Result<()> {
    const OP: &str = "matmul_bwd";
    check_len(OP, "dw", dw.len(), d_out * d_in)?;
    check_len(OP, "x", x.len(), n * d_in)?;
    let vec = bwd_vec(d_in, d_out, &[dout.addr(), x.addr()]);
    let plan = plan.into();
    if plan.splits(n) == 1 {
        let names = ["matmul_bwd_dw_f32", "matmul_bwd_dw_bf16_large", "matmul_bwd_dw_bf16_small"];
        return bwd_product(gpu, plan.tile(), names, dw, dout, x, [d_out, n, d_in], "d_out / tile", vec);
    }
    let MatmulPlan::SplitK { k_chunk } = plan else { unreachable!("a whole-k plan has one range") };
    check_len(OP, "dout", dout.len(), n * d_out)?;
    if d_out == 0 || d_in == 0 {
        return Ok(());
    }
    // 64×64 output tiles either way: the f32 kernel's 256 threads, the small bf16 tile's 128
    let f32_in = T::NAME == "f32";
    let threads = if f32_in { 256 } else { MatmulTile::Small.threads() };
    let grid = grid_dims(OP, [(blocks(d_in, 64), "d_in / tile"), (blocks(d_out, 64), "d_out / tile"), (plan.splits(n), "k ranges")])?;
    let names = [T::pick("matmul_bwd_dw_part_f32", "matmul_bwd_dw_part_bf16_small"), "matmul_split_acc_f32"];
    split_k_product(gpu, OP, names, k_chunk, dw, dout, x, None, [d_out, n, d_in], (grid, threads), (!f32_in).then_some(vec))
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
