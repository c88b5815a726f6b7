//! The 64-byte vector every kernel is written against: 16 f32 or 8 f64 lanes, whatever the hardware.
//!
//! A kernel body is generic over [`Lanes`] and instantiated three times: AVX-512 (one zmm register),
//! AVX2 + FMA (two ymm registers) and portable code (an array of lanes, `mul_add` per lane). Every
//! method is one IEEE operation per lane (or a fixed tree of them), so the three instantiations compute
//! the same numbers bit for bit: only the speed differs. The lane count is part of the arithmetic's
//! definition (a dot product keeps [`Lanes::N`] partial sums), so it is the same at every level.

use super::kernels::{self, Real};

/// One 64-byte group of lanes of element type `E`.
///
/// # Safety (for implementors)
/// `load`/`store` read or write exactly `N` elements at `p`; `load_part`/`store_part` exactly `n < N`.
pub trait Lanes: Copy {
    type E: Copy;
    /// lanes per vector: 16 for f32, 8 for f64
    const N: usize;
    /// register tile of the matmul forward: x rows × W rows (accumulators of one vector each)
    const FWD_TILE: (usize, usize);
    /// register tile of the rank updates (dx, dw): output rows × vectors along the row
    const RANK_TILE: (usize, usize);

    /// # Safety
    /// `p` points to `N` readable elements.
    unsafe fn load(p: *const Self::E) -> Self;
    /// The first `n` lanes from `p`, the others 0.0.
    /// # Safety
    /// `p` points to `n < N` readable elements.
    unsafe fn load_part(p: *const Self::E, n: usize) -> Self;
    /// # Safety
    /// `p` points to `N` writable elements.
    unsafe fn store(self, p: *mut Self::E);
    /// Writes the first `n` lanes only.
    /// # Safety
    /// `p` points to `n < N` writable elements.
    unsafe fn store_part(self, p: *mut Self::E, n: usize);

    fn zero() -> Self;
    fn splat(x: Self::E) -> Self;
    /// self · b + c, rounded once
    fn fma(self, b: Self, c: Self) -> Self;
    fn add(self, b: Self) -> Self;
    fn sub(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
    fn div(self, b: Self) -> Self;
    /// Per lane `if self > b { self } else { b }` (x86's max: a NaN in either gives b).
    fn max(self, b: Self) -> Self;
    /// Per lane `if self < b { yes } else { no }`.
    fn lt_select(self, b: Self, yes: Self, no: Self) -> Self;
    /// 2^(k − 1) for lanes holding `k + MAGIC` (see [`Lanes::MAGIC`]), k integral in the
    /// normal-exponent range: exp's scale factor, built from the exponent bits.
    fn pow2_minus1(self) -> Self;
    /// 1.5 · 2^(mantissa bits): adding it rounds a float of magnitude < 2^(mantissa bits − 1) to the
    /// nearest integer (ties to even) and leaves that integer in the low mantissa bits.
    const MAGIC: Self::E;

    /// Σ lanes by the fixed tree: lane l + lane l + N/2, then l + N/4, …, then lanes 0 + 1.
    fn sum(self) -> Self::E;
    /// max over lanes by the same tree (with [`Lanes::max`]).
    fn hmax(self) -> Self::E;

    /// [`kernels::dot_tile`]. The x86 types run it as a function of its own, compiled for their
    /// level: inlined into a large kernel, the register allocator spilled accumulators.
    /// # Safety
    /// as [`kernels::dot_tile`]
    #[inline(always)]
    unsafe fn dot_tile<const MR: usize, const NR: usize>(x: [*const Self::E; MR], w: [*const Self::E; NR], k: usize) -> [[Self::E; NR]; MR]
    where
        Self::E: Real,
    {
        kernels::dot_tile::<Self, MR, NR>(x, w, k)
    }

    /// [`kernels::rank_tile`], a function of its own like [`Lanes::dot_tile`].
    /// # Safety
    /// as [`kernels::rank_tile`]
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn rank_tile<const MR: usize, const NV: usize>(
        c: [*mut Self::E; MR],
        a: *const Self::E,
        a_sm: usize,
        a_sk: usize,
        b: *const Self::E,
        ldb: usize,
        k: usize,
        lanes: usize,
    ) {
        kernels::rank_tile::<Self, MR, NV>(c, a, a_sm, a_sk, b, ldb, k, lanes)
    }
}

/// The portable instantiation: an array of lanes, one scalar operation (or `mul_add`) per lane.
/// On x86-64 without FMA hardware `mul_add` is a libm call (slow, but exact: the same bits).
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub struct Portable<E, const N: usize>(pub [E; N]);

macro_rules! portable_impl {
    ($e:ty, $n:expr, $mant:expr, $bias:expr, $magic:expr) => {
        impl Lanes for Portable<$e, $n> {
            type E = $e;
            const N: usize = $n;
            const FWD_TILE: (usize, usize) = (2, 2);
            const RANK_TILE: (usize, usize) = (2, 1);
            const MAGIC: $e = $magic;

            #[inline(always)]
            unsafe fn load(p: *const $e) -> Self {
                Portable(std::ptr::read_unaligned(p as *const [$e; $n]))
            }
            #[inline(always)]
            unsafe fn load_part(p: *const $e, n: usize) -> Self {
                let mut v = [0.0; $n];
                std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n);
                Portable(v)
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut $e) {
                std::ptr::write_unaligned(p as *mut [$e; $n], self.0)
            }
            #[inline(always)]
            unsafe fn store_part(self, p: *mut $e, n: usize) {
                std::ptr::copy_nonoverlapping(self.0.as_ptr(), p, n);
            }
            #[inline(always)]
            fn zero() -> Self {
                Portable([0.0; $n])
            }
            #[inline(always)]
            fn splat(x: $e) -> Self {
                Portable([x; $n])
            }
            #[inline(always)]
            fn fma(self, b: Self, c: Self) -> Self {
                Portable(std::array::from_fn(|l| self.0[l].mul_add(b.0[l], c.0[l])))
            }
            #[inline(always)]
            fn add(self, b: Self) -> Self {
                Portable(std::array::from_fn(|l| self.0[l] + b.0[l]))
            }
            #[inline(always)]
            fn sub(self, b: Self) -> Self {
                Portable(std::array::from_fn(|l| self.0[l] - b.0[l]))
            }
            #[inline(always)]
            fn mul(self, b: Self) -> Self {
                Portable(std::array::from_fn(|l| self.0[l] * b.0[l]))
            }
            #[inline(always)]
            fn div(self, b: Self) -> Self {
                Portable(std::array::from_fn(|l| self.0[l] / b.0[l]))
            }
            #[inline(always)]
            fn max(self, b: Self) -> Self {
                Portable(std::array::from_fn(|l| if self.0[l] > b.0[l] { self.0[l] } else { b.0[l] }))
            }
            #[inline(always)]
            fn lt_select(self, b: Self, yes: Self, no: Self) -> Self {
                Portable(std::array::from_fn(|l| if self.0[l] < b.0[l] { yes.0[l] } else { no.0[l] }))
            }
            #[inline(always)]
            fn pow2_minus1(self) -> Self {
                // k + MAGIC holds k in its low mantissa bits: (bits − bits(MAGIC) + bias − 1) << mant = 2^(k−1)
                let base = <$e>::to_bits($magic).wrapping_sub($bias - 1);
                Portable(std::array::from_fn(|l| <$e>::from_bits(self.0[l].to_bits().wrapping_sub(base) << $mant)))
            }
            #[inline(always)]
            fn sum(self) -> $e {
                let mut v = self.0;
                let mut half = $n / 2;
                while half > 0 {
                    for l in 0..half {
                        v[l] += v[l + half];
                    }
                    half /= 2;
                }
                v[0]
            }
            #[inline(always)]
            fn hmax(self) -> $e {
                let mut v = self.0;
                let mut half = $n / 2;
                while half > 0 {
                    for l in 0..half {
                        v[l] = if v[l] > v[l + half] { v[l] } else { v[l + half] };
                    }
                    half /= 2;
                }
                v[0]
            }
        }
    };
}
portable_impl!(f32, 16, 23, 127u32, 12_582_912.0);
portable_impl!(f64, 8, 52, 1023u64, 6_755_399_441_055_744.0);
