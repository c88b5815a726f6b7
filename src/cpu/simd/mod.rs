//! Explicit SIMD for the CPU path, with one canonical arithmetic per kernel, so that AVX-512,
//! AVX2 + FMA and the portable code give the same bits on every x86-64 CPU (and elsewhere).
//!
//! **The canonical orders** (what every level computes, operation for operation):
//! - *dot product* of length k (matmul forward, attention scores, RMSNorm's Σx²): N lane-partial
//!   sums (N = 16 for f32, 8 for f64: one 64-byte vector), acc[l] = fma(a[i], b[i], acc[l]) over
//!   i ≡ l mod N in ascending chunks, the last chunk zero-padded; then the tree
//!   acc[l] += acc[l + N/2], then + N/4, …, to one value ([`lanes::Lanes::sum`]).
//! - *rank update* (matmul dx and dw, attention's p·V, embedding backward): each output element is
//!   one chain of FMAs in ascending order of the summed index, starting from its current value
//!   (the ops accumulate with `+=`): y = fma(a_κ, b_κ, y).
//! - *sum* (softmax denominators): N lane-partial additions, zero-padded, the same tree.
//! - *max*: lane-wise `a > b ? a : b` over full chunks, the tree, then the tail in order.
//! - *exp*: [`kernels::exp`], our own (range reduction + Taylor polynomial with FMAs), so no libm
//!   `exp` (whose glibc version is chosen per CPU) decides a bit.
//!
//! Element-wise code with no reduction and no fused operation (RMSNorm's scaling, residual adds,
//! AdamW) is IEEE-exact per element, so plain Rust gives the same bits at any vector width; AdamW
//! is still compiled per level ([`run`]) so that it vectorises as wide as the CPU allows.
//!
//! **Dispatch**: the level is chosen once (CPU features via `is_x86_feature_detected!`, or
//! `DRPO_CPU_SIMD=avx512|avx2|scalar`) and cached; [`force_level`] changes it for tests and benches.
//! Because every level computes the same bits, switching levels while kernels run in other threads
//! cannot change a result, only its speed.

pub mod kernels;
pub mod lanes;
#[cfg(target_arch = "x86_64")]
pub mod x86;

use crate::error::{Error, Result};
pub use kernels::Real;
use lanes::{Lanes, Portable};
use std::sync::atomic::{AtomicU8, Ordering};

/// A dispatch level: which instruction set runs the kernels (never what they compute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// plain Rust on arrays of lanes (`mul_add` per lane); every target
    Scalar = 1,
    /// x86-64 AVX2 + FMA: each 64-byte vector in two ymm registers
    Avx2 = 2,
    /// x86-64 AVX-512F + VL: each 64-byte vector in one zmm register
    Avx512 = 3,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512];

    /// The name `DRPO_CPU_SIMD` takes.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the level.
    pub fn supported(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => Level::Avx2.supported() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    #[inline(always)]
    fn from_u8(v: u8) -> Level {
        match v {
            3 => Level::Avx512,
            2 => Level::Avx2,
            _ => Level::Scalar,
        }
    }
}

/// 0 until the first kernel call decides.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The best level this CPU supports.
pub fn detect() -> Level {
    Level::ALL.into_iter().rev().find(|l| l.supported()).unwrap_or(Level::Scalar)
}

/// The level `DRPO_CPU_SIMD` asks for (None when unset); an unknown name or a level this CPU lacks
/// is an error naming the variable. `main` checks it at start, so a typo never passes silently.
pub fn level_from_env() -> Result<Option<Level>> {
    let Ok(value) = std::env::var("DRPO_CPU_SIMD") else { return Ok(None) };
    let level = Level::ALL
        .into_iter()
        .find(|l| l.name() == value.trim())
        .ok_or_else(|| Error::input(format!("DRPO_CPU_SIMD={value}: expected avx512, avx2 or scalar")))?;
    if !level.supported() {
        return Err(Error::input(format!("DRPO_CPU_SIMD={value}: this CPU does not support {} (best: {})", level.name(), detect().name())));
    }
    Ok(Some(level))
}

/// The level the kernels run at: decided on first use (`DRPO_CPU_SIMD` if valid, else [`detect`]).
#[inline(always)]
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        0 => decide_level(),
        v => Level::from_u8(v),
    }
}

#[cold]
#[inline(never)]
fn decide_level() -> Level {
    let chosen = level_from_env().ok().flatten().unwrap_or_else(detect);
    LEVEL.store(chosen as u8, Ordering::Relaxed);
    chosen
}

/// Runs the kernels at `level` from now on (tests and benches compare levels this way). Every
/// level gives the same bits, so calls already running elsewhere are unaffected in their results.
pub fn force_level(level: Level) -> Result<()> {
    if !level.supported() {
        return Err(Error::input(format!("SIMD level {} is not supported by this CPU (best: {})", level.name(), detect().name())));
    }
    LEVEL.store(level as u8, Ordering::Relaxed);
    Ok(())
}

/// The float types with kernels: their vector type at each level.
pub trait Element: kernels::Real {
    type Avx512: Lanes<E = Self>;
    type Avx2: Lanes<E = Self>;
    type Scalar: Lanes<E = Self>;
}

#[cfg(target_arch = "x86_64")]
impl Element for f32 {
    type Avx512 = x86::F32x16;
    type Avx2 = x86::F32x8x2;
    type Scalar = Portable<f32, 16>;
}
#[cfg(target_arch = "x86_64")]
impl Element for f64 {
    type Avx512 = x86::F64x8;
    type Avx2 = x86::F64x4x2;
    type Scalar = Portable<f64, 8>;
}
#[cfg(not(target_arch = "x86_64"))]
impl Element for f32 {
    type Avx512 = Portable<f32, 16>;
    type Avx2 = Portable<f32, 16>;
    type Scalar = Portable<f32, 16>;
}
#[cfg(not(target_arch = "x86_64"))]
impl Element for f64 {
    type Avx512 = Portable<f64, 8>;
    type Avx2 = Portable<f64, 8>;
    type Scalar = Portable<f64, 8>;
}

/// Calls the generic kernel `$k::<V>(args)` with V = `$t`'s vector type at the current level,
/// inside a function compiled for that level's instructions.
macro_rules! dispatch {
    ($t:ty, $k:path [$($arg:expr),* $(,)?]) => {{
        use $k as kernel;
        match $crate::cpu::simd::level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: level() returns Avx512 only when the CPU supports avx512f, avx512vl, avx2 and fma
            Level::Avx512 => unsafe { x86::with_avx512(#[inline(always)] || kernel::<<$t as Element>::Avx512>($($arg),*)) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: level() returns Avx2 only when the CPU supports avx2 and fma
            Level::Avx2 => unsafe { x86::with_avx2(#[inline(always)] || kernel::<<$t as Element>::Avx2>($($arg),*)) },
            _ => kernel::<<$t as Element>::Scalar>($($arg),*),
        }
    }};
}

/// Runs `f` compiled for the current level's instruction set: for element-wise loops that need no
/// explicit vectors (their bits do not depend on the width), so the compiler vectorises them as wide
/// as the CPU allows. `f` must be `#[inline(always)]`-able (a closure calling an inline function).
#[inline]
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dispatch!`
        Level::Avx512 => unsafe { x86::with_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `dispatch!`
        Level::Avx2 => unsafe { x86::with_avx2(f) },
        _ => f(),
    }
}

/// Canonical dot product (see the module doc).
#[inline]
pub fn dot<T: Element>(a: &[T], b: &[T]) -> T {
    dispatch!(T, kernels::dot[a, b])
}

/// out[j] = dot(a, b[j·ldb ..][..a.len()]) for every j of out (attention's scores).
#[inline]
pub fn dots<T: Element>(out: &mut [T], a: &[T], b: &[T], ldb: usize) {
    dispatch!(T, kernels::dots[out, a, b, ldb])
}

/// y += a·x as one FMA per element.
#[inline]
pub fn axpy<T: Element>(y: &mut [T], a: T, x: &[T]) {
    dispatch!(T, kernels::axpy[y, a, x])
}

/// Canonical sum (N lane partials, the tree).
#[inline]
pub fn sum<T: Element>(x: &[T]) -> T {
    dispatch!(T, kernels::sum[x])
}

/// Canonical max (−inf for an empty slice).
#[inline]
pub fn max<T: Element>(x: &[T]) -> T {
    dispatch!(T, kernels::max[x])
}

/// out[i] = exp(x[i]) with the canonical exp.
#[inline]
pub fn exp<T: Element>(out: &mut [T], x: &[T]) {
    dispatch!(T, kernels::exp_slice[out, x])
}

/// p[j] = exp(p[j] − m) in place; returns the canonical sum of the new p.
#[inline]
pub fn exp_shifted_sum<T: Element>(p: &mut [T], m: T) -> T {
    dispatch!(T, kernels::exp_shifted_sum[p, m])
}

/// For s > 0: (m, Σ_j exp(l[j]·s − m)) with m = max_j l[j]·s; log-sum-exp = m + ln Σ.
#[inline]
pub fn scaled_exp_sum<T: Element>(l: &[T], s: T) -> (T, T) {
    dispatch!(T, kernels::scaled_exp_sum[l, s])
}

/// dl[j] = fma(−g, exp(l[j]·s − lse), dl[j]): the softmax part of the log-softmax backward.
#[inline]
pub fn sub_scaled_softmax<T: Element>(dl: &mut [T], l: &[T], g: T, s: T, lse: T) {
    dispatch!(T, kernels::sub_scaled_softmax[dl, l, g, s, lse])
}

/// out = g·σ(g)·u, σ(g) = 1 / (1 + exp(−g)).
#[inline]
pub fn swiglu_fwd<T: Element>(out: &mut [T], gate: &[T], up: &[T]) {
    dispatch!(T, kernels::swiglu_fwd[out, gate, up])
}

/// dgate += dout·up·σ(g)·(1 + g·(1 − σ(g))),  dup += dout·g·σ(g).
#[inline]
pub fn swiglu_bwd<T: Element>(dgate: &mut [T], dup: &mut [T], dout: &[T], gate: &[T], up: &[T]) {
    dispatch!(T, kernels::swiglu_bwd[dgate, dup, dout, gate, up])
}

/// One task of the matmul forward, see [`kernels::matmul_fwd_task`].
#[inline]
pub fn matmul_fwd_task<T: Element>(out_rows: &mut [&mut [T]], x: &[T], w: &[T], b: Option<&[T]>, r0: usize, o0: usize, d_in: usize) {
    dispatch!(T, kernels::matmul_fwd_task[out_rows, x, w, b, r0, o0, d_in])
}

/// A rank-k update of rows, see [`kernels::rank_update`].
#[inline]
pub fn rank_update<T: Element>(c_rows: &mut [&mut [T]], a: &[T], a_sm: usize, a_sk: usize, b: &[T], ldb: usize, k: usize) {
    dispatch!(T, kernels::rank_update[c_rows, a, a_sm, a_sk, b, ldb, k])
}
