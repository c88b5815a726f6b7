//! Kernel bodies, generic over [`Lanes`]: each is written once and instantiated per dispatch level, so
//! the order of every floating-point operation is the same at every level (see `super` for the
//! canonical orders they implement). Everything here is `#[inline(always)]`: the code must be inlined
//! into the `#[target_feature]` entry points of `super::dispatch` to become vector instructions.
//!
//! Raw pointers appear only inside the tile functions, whose callers check every length first.

// The register tiles index several arrays by the same loop variable on purpose (they unroll).
#![allow(clippy::needless_range_loop)]

use super::lanes::Lanes;

/// Canonical dot product: N lane-partial FMA sums over N-element chunks (the last chunk zero-padded),
/// combined by [`Lanes::sum`]'s tree.
#[inline(always)]
pub fn dot<V: Lanes>(a: &[V::E], b: &[V::E]) -> V::E
where
    V::E: Real,
{
    assert_eq!(a.len(), b.len(), "dot: lengths differ");
    // SAFETY: both slices hold a.len() elements
    unsafe { V::dot_tile::<1, 1>([a.as_ptr()], [b.as_ptr()], a.len())[0][0] }
}

/// MR × NR canonical dot products of x rows with w rows, all of length k, accumulated in registers.
/// # Safety
/// every pointer is valid for k reads
#[inline(always)]
pub unsafe fn dot_tile<V: Lanes, const MR: usize, const NR: usize>(x: [*const V::E; MR], w: [*const V::E; NR], k: usize) -> [[V::E; NR]; MR]
where
    V::E: Real,
{
    let mut acc = [[V::zero(); MR]; NR];
    let chunks = k / V::N;
    for c in 0..chunks {
        let i = c * V::N;
        let mut xv = [V::zero(); MR];
        for r in 0..MR {
            xv[r] = V::load(x[r].add(i));
        }
        for (j, accj) in acc.iter_mut().enumerate() {
            let wv = V::load(w[j].add(i));
            for (a, xr) in accj.iter_mut().zip(&xv) {
                *a = xr.fma(wv, *a);
            }
        }
    }
    let i = chunks * V::N;
    if i < k {
        let mut xv = [V::zero(); MR];
        for r in 0..MR {
            xv[r] = V::load_part(x[r].add(i), k - i);
        }
        for (j, accj) in acc.iter_mut().enumerate() {
            let wv = V::load_part(w[j].add(i), k - i);
            for (a, xr) in accj.iter_mut().zip(&xv) {
                *a = xr.fma(wv, *a);
            }
        }
    }
    // no closure may capture `acc`: its address would keep the array in memory (a store per FMA)
    let mut out = [[V::E::ZERO; NR]; MR];
    for j in 0..NR {
        for r in 0..MR {
            out[r][j] = acc[j][r].sum();
        }
    }
    out
}

/// out[j] = canonical dot(a, b[j·ldb ..][..a.len()]).
#[inline(always)]
pub fn dots<V: Lanes>(out: &mut [V::E], a: &[V::E], b: &[V::E], ldb: usize)
where
    V::E: Real,
{
    let k = a.len();
    if let Some(last) = out.len().checked_sub(1) {
        assert!(last * ldb + k <= b.len(), "dots: b too short");
    }
    for (j, o) in out.iter_mut().enumerate() {
        // SAFETY: row j of b has k elements (asserted above)
        *o = unsafe { V::dot_tile::<1, 1>([a.as_ptr()], [b.as_ptr().add(j * ldb)], k)[0][0] };
    }
}

/// y[i] = fma(a, x[i], y[i]): the fused `axpy`, one rounding per element.
#[inline(always)]
pub fn axpy<V: Lanes>(y: &mut [V::E], a: V::E, x: &[V::E]) {
    assert_eq!(y.len(), x.len(), "axpy: lengths differ");
    let (n, av) = (y.len(), V::splat(a));
    let (yp, xp) = (y.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    // SAFETY: i + N ≤ n in the loop, n − i < N after it
    unsafe {
        while i + V::N <= n {
            av.fma(V::load(xp.add(i)), V::load(yp.add(i))).store(yp.add(i));
            i += V::N;
        }
        if i < n {
            av.fma(V::load_part(xp.add(i), n - i), V::load_part(yp.add(i), n - i)).store_part(yp.add(i), n - i);
        }
    }
}

/// One task of the matmul forward: out_rows[j][m] = dot(x[r0 + j, :], w[o0 + m, :]) + b[o0 + m]
/// (+ 0 without a bias), for every piece j of `out_rows` (all the same width).
/// x: [≥ r0 + rows, d_in]   w: [≥ o0 + width, d_in]
#[inline(always)]
pub fn matmul_fwd_task<V: Lanes>(out_rows: &mut [&mut [V::E]], x: &[V::E], w: &[V::E], b: Option<&[V::E]>, r0: usize, o0: usize, d_in: usize)
where
    V::E: Real,
{
    match V::FWD_TILE {
        (4, 6) => fwd_task::<V, 4, 6>(out_rows, x, w, b, r0, o0, d_in),
        (4, 4) => fwd_task::<V, 4, 4>(out_rows, x, w, b, r0, o0, d_in),
        (3, 8) => fwd_task::<V, 3, 8>(out_rows, x, w, b, r0, o0, d_in),
        _ => fwd_task::<V, 2, 2>(out_rows, x, w, b, r0, o0, d_in),
    }
}

#[inline(always)]
fn fwd_task<V: Lanes, const MR: usize, const NR: usize>(out_rows: &mut [&mut [V::E]], x: &[V::E], w: &[V::E], b: Option<&[V::E]>, r0: usize, o0: usize, d_in: usize)
where
    V::E: Real,
{
    let (m, width) = (out_rows.len(), out_rows.first().map_or(0, |r| r.len()));
    assert!(out_rows.iter().all(|r| r.len() == width) && x.len() >= (r0 + m) * d_in && w.len() >= (o0 + width) * d_in, "matmul_fwd: bad tile");
    let bias = |o: usize| b.map_or(V::E::ZERO, |b| b[o]);
    let xrow = |j: usize| x[(r0 + j) * d_in..].as_ptr();
    let wrow = |o: usize| w[(o0 + o) * d_in..].as_ptr();
    // W rows in groups of NR (the group stays in cache while every x row of the task meets it)
    let mut o = 0;
    while o < width {
        let nr = NR.min(width - o);
        let mut j = 0;
        while j < m {
            let mr = MR.min(m - j);
            // SAFETY: rows j..j + mr of x and o..o + nr of w exist (asserted above), each d_in long
            unsafe {
                if mr == MR && nr == NR {
                    let s = V::dot_tile::<MR, NR>(std::array::from_fn(|r| xrow(j + r)), std::array::from_fn(|c| wrow(o + c)), d_in);
                    for r in 0..MR {
                        for c in 0..NR {
                            out_rows[j + r][o + c] = s[r][c] + bias(o0 + o + c);
                        }
                    }
                } else if nr == NR {
                    for r in j..j + mr {
                        let s = V::dot_tile::<1, NR>([xrow(r)], std::array::from_fn(|c| wrow(o + c)), d_in);
                        for c in 0..NR {
                            out_rows[r][o + c] = s[0][c] + bias(o0 + o + c);
                        }
                    }
                } else {
                    for r in j..j + mr {
                        for c in o..o + nr {
                            out_rows[r][c] = V::dot_tile::<1, 1>([xrow(r)], [wrow(c)], d_in)[0][0] + bias(o0 + c);
                        }
                    }
                }
            }
            j += mr;
        }
        o += nr;
    }
}

/// A rank-k update of a block of rows, each output element a chain of FMAs in ascending k:
///   c_rows[m][i] = fma(a(m, κ), b(κ)[i], c_rows[m][i])   for κ = 0, 1, …, k − 1
/// with a(m, κ) = a[m·a_sm + κ·a_sk] and b(κ) = b[κ·ldb ..][..width], width = c_rows[m].len().
/// dx (a = dout, b = W rows) and dw (a = doutᵀ, b = x rows) are both this.
#[inline(always)]
pub fn rank_update<V: Lanes>(c_rows: &mut [&mut [V::E]], a: &[V::E], a_sm: usize, a_sk: usize, b: &[V::E], ldb: usize, k: usize) {
    match V::RANK_TILE {
        (6, 4) => rank_task::<V, 6, 4>(c_rows, a, a_sm, a_sk, b, ldb, k),
        (4, 1) => rank_task::<V, 4, 1>(c_rows, a, a_sm, a_sk, b, ldb, k),
        _ => rank_task::<V, 2, 1>(c_rows, a, a_sm, a_sk, b, ldb, k),
    }
}

#[inline(always)]
fn rank_task<V: Lanes, const MR: usize, const NV: usize>(c_rows: &mut [&mut [V::E]], a: &[V::E], a_sm: usize, a_sk: usize, b: &[V::E], ldb: usize, k: usize) {
    let (m, width) = (c_rows.len(), c_rows.first().map_or(0, |r| r.len()));
    if m == 0 || k == 0 || width == 0 {
        return;
    }
    assert!(c_rows.iter().all(|r| r.len() == width), "rank_update: rows of different widths");
    assert!((m - 1) * a_sm + (k - 1) * a_sk < a.len() && (k - 1) * ldb + width <= b.len(), "rank_update: a or b too short");
    let panel = NV * V::N;
    // columns in panels of NV vectors: b's panel (k × panel) stays in L1 while every row group meets it
    let mut i = 0;
    while i < width {
        let pw = panel.min(width - i);
        let mut j = 0;
        while j < m {
            let mr = MR.min(m - j);
            // SAFETY: rows j..j + mr exist with ≥ i + pw columns; a and b bounds asserted above
            unsafe {
                let ap = a.as_ptr().add(j * a_sm);
                let bp = b.as_ptr().add(i);
                if mr == MR {
                    let c: [*mut V::E; MR] = std::array::from_fn(|r| c_rows[j + r].as_mut_ptr().add(i));
                    rank_panel::<V, MR, NV>(c, ap, a_sm, a_sk, bp, ldb, k, pw);
                } else {
                    for r in 0..mr {
                        let c = [c_rows[j + r].as_mut_ptr().add(i)];
                        rank_panel::<V, 1, NV>(c, ap.add(r * a_sm), a_sm, a_sk, bp, ldb, k, pw);
                    }
                }
            }
            j += mr;
        }
        i += pw;
    }
}

/// One panel (≤ NV vectors wide) of [`rank_update`] for MR rows: full vectors in registers, then
/// single vectors, then a zero-padded partial one.
/// # Safety
/// c[r] valid for pw reads and writes; a valid at r·a_sm + κ·a_sk, b at κ·ldb + [0, pw), r < MR, κ < k
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn rank_panel<V: Lanes, const MR: usize, const NV: usize>(
    c: [*mut V::E; MR],
    a: *const V::E,
    a_sm: usize,
    a_sk: usize,
    b: *const V::E,
    ldb: usize,
    k: usize,
    pw: usize,
) {
    if pw == NV * V::N {
        V::rank_tile::<MR, NV>(c, a, a_sm, a_sk, b, ldb, k, V::N);
        return;
    }
    let mut i = 0;
    while i < pw {
        let lanes = V::N.min(pw - i);
        V::rank_tile::<MR, 1>(c.map(|p| p.add(i)), a, a_sm, a_sk, b.add(i), ldb, k, lanes);
        i += lanes;
    }
}

/// MR rows × NV vectors of accumulators, loaded from c, updated over κ = 0..k in order, stored back.
/// `lanes` < N only with NV = 1 (a partial last vector).
/// # Safety
/// c[r] valid for NV vectors (or `lanes` elements); a at r·a_sm + κ·a_sk; b at κ·ldb + [0, NV·N)
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn rank_tile<V: Lanes, const MR: usize, const NV: usize>(
    c: [*mut V::E; MR],
    a: *const V::E,
    a_sm: usize,
    a_sk: usize,
    b: *const V::E,
    ldb: usize,
    k: usize,
    lanes: usize,
) {
    let partial = lanes < V::N;
    let load = |p: *const V::E| if partial { V::load_part(p, lanes) } else { V::load(p) };
    let mut acc = [[V::zero(); NV]; MR];
    for r in 0..MR {
        for v in 0..NV {
            acc[r][v] = load(c[r].add(v * V::N));
        }
    }
    for kk in 0..k {
        let bk = b.add(kk * ldb);
        let mut bv = [V::zero(); NV];
        for v in 0..NV {
            bv[v] = load(bk.add(v * V::N));
        }
        for r in 0..MR {
            let av = V::splat(*a.add(r * a_sm + kk * a_sk));
            for v in 0..NV {
                acc[r][v] = av.fma(bv[v], acc[r][v]);
            }
        }
    }
    for r in 0..MR {
        for v in 0..NV {
            if partial {
                acc[r][v].store_part(c[r].add(v * V::N), lanes);
            } else {
                acc[r][v].store(c[r].add(v * V::N));
            }
        }
    }
}

/// What the kernels need of a float type (f32, f64): constants, and those of the canonical exp.
pub trait Real: Copy + Send + Sync + 'static + PartialOrd + Default + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
    const ZERO: Self;
    const ONE: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
    /// below: exp = 0 (the true value is under ~2^-125 relative to 1, f32; 2^-1020, f64)
    const LO: Self;
    /// at or above: +inf
    const HI: Self;
    const LOG2E: Self;
    /// −ln 2 = NEG_LN2_HI + NEG_LN2_LO, the first with trailing zero bits (Cody-Waite)
    const NEG_LN2_HI: Self;
    const NEG_LN2_LO: Self;
    /// Taylor coefficients 1/j!, highest degree first, down to 1/1! (the constant 1 is added last)
    const POLY: &'static [Self];
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    const INFINITY: f32 = f32::INFINITY;
    const NEG_INFINITY: f32 = f32::NEG_INFINITY;
    const LO: f32 = -86.5;
    const HI: f32 = 88.72;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const NEG_LN2_HI: f32 = -355.0 / 512.0;
    const NEG_LN2_LO: f32 = 2.121_944_4e-4;
    const POLY: &'static [f32] = &[1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0];
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    const INFINITY: f64 = f64::INFINITY;
    const NEG_INFINITY: f64 = f64::NEG_INFINITY;
    const LO: f64 = -707.0;
    const HI: f64 = 709.78;
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // fdlibm's ln2_hi (low 32 bits zero) and ln2_lo, negated
    const NEG_LN2_HI: f64 = -f64::from_bits(0x3fe6_2e42_fee0_0000);
    const NEG_LN2_LO: f64 = -f64::from_bits(0x3dea_39ef_3579_3c76);
    const POLY: &'static [f64] = &[
        1.0 / 6_227_020_800.0,
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
    ];
}

/// The canonical exp, lane by lane: k = round(x·log2 e), r = x − k·ln 2 (two FMAs), exp(r) by a Taylor
/// polynomial in Horner form with FMAs (degree 7 for f32, 13 for f64: truncation < 0.1 ulp), scaled by
/// 2^k as (p + p)·2^(k−1) so that every k of the range has a normal 2^(k−1). x < LO gives 0,
/// x ≥ HI gives +inf, NaN stays NaN. Error ≤ ~2 ulp (checked against f64 libm in tests/simd.rs).
#[inline(always)]
pub fn exp<V: Lanes>(x: V) -> V
where
    V::E: Real,
{
    let t = x.mul(V::splat(V::E::LOG2E)).add(V::splat(V::MAGIC));
    let k = t.sub(V::splat(V::MAGIC));
    let r = k.fma(V::splat(V::E::NEG_LN2_HI), x);
    let r = k.fma(V::splat(V::E::NEG_LN2_LO), r);
    let mut p = V::splat(V::E::POLY[0]);
    for &c in &V::E::POLY[1..] {
        p = p.fma(r, V::splat(c));
    }
    let p = p.fma(r, V::splat(V::E::ONE));
    let y = p.add(p).mul(t.pow2_minus1());
    // out of range: 0 below LO; at or above HI (and NaN) x · inf = +inf (NaN)
    let y = x.lt_select(V::splat(V::E::HI), y, x.mul(V::splat(V::E::INFINITY)));
    x.lt_select(V::splat(V::E::LO), V::zero(), y)
}

/// N lanes from p: all of them, or the first `lanes` with the rest 0.
/// # Safety
/// p valid for `lanes` ≤ N reads
#[inline(always)]
unsafe fn ld<V: Lanes>(p: *const V::E, lanes: usize) -> V {
    if lanes == V::N {
        V::load(p)
    } else {
        V::load_part(p, lanes)
    }
}

/// # Safety
/// p valid for `lanes` ≤ N writes
#[inline(always)]
unsafe fn st<V: Lanes>(v: V, p: *mut V::E, lanes: usize) {
    if lanes == V::N {
        v.store(p)
    } else {
        v.store_part(p, lanes)
    }
}

/// v with the lanes from `lanes` on set to 0 (a computed partial chunk, before it enters a sum).
/// Every [`Lanes`] type is `repr(transparent)`/`repr(C)` over its N elements.
#[inline(always)]
fn zero_tail<V: Lanes>(v: V, lanes: usize) -> V {
    if lanes == V::N {
        return v;
    }
    let mut buf = [v; 1];
    // SAFETY: buf holds one vector of N ≥ lanes elements
    unsafe { V::load_part(buf.as_mut_ptr() as *const V::E, lanes) }
}

/// Canonical sum: N lane-partial additions over zero-padded chunks, then the tree.
#[inline(always)]
pub fn sum<V: Lanes>(x: &[V::E]) -> V::E {
    let mut acc = V::zero();
    let mut i = 0;
    while i < x.len() {
        let lanes = V::N.min(x.len() - i);
        // SAFETY: lanes elements from i exist
        acc = acc.add(unsafe { ld::<V>(x.as_ptr().add(i), lanes) });
        i += lanes;
    }
    acc.sum()
}

/// Canonical max: lane-wise over full chunks (from −inf), the tree, then the tail in order; all with
/// `a > b ? a : b`. −inf for an empty slice.
#[inline(always)]
pub fn max<V: Lanes>(x: &[V::E]) -> V::E
where
    V::E: Real,
{
    let full = x.len() - x.len() % V::N;
    let mut acc = V::splat(V::E::NEG_INFINITY);
    let mut i = 0;
    while i < full {
        // SAFETY: a full chunk from i exists
        acc = acc.max(unsafe { V::load(x.as_ptr().add(i)) });
        i += V::N;
    }
    let mut m = acc.hmax();
    for &t in &x[full..] {
        m = if m > t { m } else { t };
    }
    m
}

/// out[i] = exp(x[i]).
#[inline(always)]
pub fn exp_slice<V: Lanes>(out: &mut [V::E], x: &[V::E])
where
    V::E: Real,
{
    assert_eq!(out.len(), x.len(), "exp: lengths differ");
    let mut i = 0;
    while i < x.len() {
        let lanes = V::N.min(x.len() - i);
        // SAFETY: lanes elements from i exist in both
        unsafe { st(exp(ld::<V>(x.as_ptr().add(i), lanes)), out.as_mut_ptr().add(i), lanes) };
        i += lanes;
    }
}

/// p[j] = exp(p[j] − m); returns the canonical sum of the new values.
#[inline(always)]
pub fn exp_shifted_sum<V: Lanes>(p: &mut [V::E], m: V::E) -> V::E
where
    V::E: Real,
{
    let (mv, mut acc) = (V::splat(m), V::zero());
    let mut i = 0;
    while i < p.len() {
        let lanes = V::N.min(p.len() - i);
        // SAFETY: lanes elements from i exist
        let e = zero_tail(exp(unsafe { ld::<V>(p.as_ptr().add(i), lanes) }.sub(mv)), lanes);
        unsafe { st(e, p.as_mut_ptr().add(i), lanes) };
        acc = acc.add(e);
        i += lanes;
    }
    acc.sum()
}

/// For s > 0: m = max_j(l[j])·s (= max_j l[j]·s) and the canonical Σ_j exp(l[j]·s − m); returns (m, Σ).
/// m = −inf (an empty or all −inf row) returns (−inf, 0).
#[inline(always)]
pub fn scaled_exp_sum<V: Lanes>(l: &[V::E], s: V::E) -> (V::E, V::E)
where
    V::E: Real,
{
    let m = max::<V>(l) * s;
    // m is −inf or NaN: nothing to sum
    if m.partial_cmp(&V::E::NEG_INFINITY) != Some(std::cmp::Ordering::Greater) {
        return (m, V::E::ZERO);
    }
    let (sv, mv, mut acc) = (V::splat(s), V::splat(m), V::zero());
    let mut i = 0;
    while i < l.len() {
        let lanes = V::N.min(l.len() - i);
        // SAFETY: lanes elements from i exist
        let z = unsafe { ld::<V>(l.as_ptr().add(i), lanes) }.mul(sv);
        acc = acc.add(zero_tail(exp(z.sub(mv)), lanes));
        i += lanes;
    }
    (m, acc.sum())
}

/// dl[j] = fma(−g, exp(l[j]·s − lse), dl[j]).
#[inline(always)]
pub fn sub_scaled_softmax<V: Lanes>(dl: &mut [V::E], l: &[V::E], g: V::E, s: V::E, lse: V::E)
where
    V::E: Real,
{
    assert_eq!(dl.len(), l.len(), "logprob_bwd: row lengths differ");
    let (neg_g, sv, lv) = (V::zero().sub(V::splat(g)), V::splat(s), V::splat(lse));
    let mut i = 0;
    while i < l.len() {
        let lanes = V::N.min(l.len() - i);
        // SAFETY: lanes elements from i exist in both
        unsafe {
            let e = exp(ld::<V>(l.as_ptr().add(i), lanes).mul(sv).sub(lv));
            st(neg_g.fma(e, ld::<V>(dl.as_ptr().add(i), lanes)), dl.as_mut_ptr().add(i), lanes);
        }
        i += lanes;
    }
}

/// σ(g) = 1 / (1 + exp(0 − g))
#[inline(always)]
fn sigmoid<V: Lanes>(g: V) -> V
where
    V::E: Real,
{
    let one = V::splat(V::E::ONE);
    one.div(one.add(exp(V::zero().sub(g))))
}

/// out = (g·σ(g))·u
#[inline(always)]
pub fn swiglu_fwd<V: Lanes>(out: &mut [V::E], gate: &[V::E], up: &[V::E])
where
    V::E: Real,
{
    assert!(out.len() == gate.len() && gate.len() == up.len(), "swiglu_fwd: bad lengths");
    let mut i = 0;
    while i < out.len() {
        let lanes = V::N.min(out.len() - i);
        // SAFETY: lanes elements from i exist in all three
        unsafe {
            let g = ld::<V>(gate.as_ptr().add(i), lanes);
            let u = ld::<V>(up.as_ptr().add(i), lanes);
            st(g.mul(sigmoid(g)).mul(u), out.as_mut_ptr().add(i), lanes);
        }
        i += lanes;
    }
}

/// dgate += ((dout·up)·s)·(1 + g·(1 − s)),  dup += (dout·g)·s,  s = σ(g)
#[inline(always)]
pub fn swiglu_bwd<V: Lanes>(dgate: &mut [V::E], dup: &mut [V::E], dout: &[V::E], gate: &[V::E], up: &[V::E])
where
    V::E: Real,
{
    let n = dout.len();
    assert!(dgate.len() == n && dup.len() == n && gate.len() == n && up.len() == n, "swiglu_bwd: bad lengths");
    let one = V::splat(V::E::ONE);
    let mut i = 0;
    while i < n {
        let lanes = V::N.min(n - i);
        // SAFETY: lanes elements from i exist in all five
        unsafe {
            let (d, g, u) = (ld::<V>(dout.as_ptr().add(i), lanes), ld::<V>(gate.as_ptr().add(i), lanes), ld::<V>(up.as_ptr().add(i), lanes));
            let s = sigmoid(g);
            let dg = ld::<V>(dgate.as_ptr().add(i), lanes).add(d.mul(u).mul(s).mul(one.add(g.mul(one.sub(s)))));
            st(dg, dgate.as_mut_ptr().add(i), lanes);
            let du = ld::<V>(dup.as_ptr().add(i), lanes).add(d.mul(g).mul(s));
            st(du, dup.as_mut_ptr().add(i), lanes);
        }
        i += lanes;
    }
}
