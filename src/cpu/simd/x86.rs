//! [`Lanes`] on x86-64: one zmm register (AVX-512F) or two ymm registers (AVX2 + FMA), and the
//! `#[target_feature]` functions that every kernel is entered through.
//!
//! The methods are `#[inline(always)]` wrappers of intrinsics; they only become real instructions
//! once inlined into a function compiled with the features ([`with_avx512`], [`with_avx2`]), which
//! the dispatch in `super` guarantees by calling them only after the CPU was checked.
//! Sums follow the tree of [`Lanes::sum`]: the high half is added to the low half, then again, so
//! zmm → ymm → xmm → 2 lanes → 1 lane gives the portable tree's bits.

use super::kernels::{self, Real};
use super::lanes::Lanes;
use std::arch::x86_64::*;

/// Runs `f` in a function compiled for AVX-512F and VL (+ AVX2, FMA): `f`'s inlined body may use them.
/// VL matters: without it the 256/128-bit steps of a reduction are VEX-encoded, which confines every
/// zmm they touch to zmm0-15 (accumulators then spilled: 24 of them do not fit in 16).
/// # Safety
/// The CPU must support avx512f, avx512vl, avx2 and fma (checked once by `super::level`).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` in a function compiled for AVX2 + FMA.
/// # Safety
/// The CPU must support avx2 and fma.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The register tiles as functions of their own (see [`Lanes::dot_tile`]), one per level.
macro_rules! tiles {
    ($dot:ident, $rank:ident, $features:literal) => {
        /// # Safety
        /// as [`kernels::dot_tile`], on a CPU with the features
        #[target_feature(enable = $features)]
        #[inline(never)]
        pub unsafe fn $dot<V: Lanes, const MR: usize, const NR: usize>(x: [*const V::E; MR], w: [*const V::E; NR], k: usize) -> [[V::E; NR]; MR]
        where
            V::E: Real,
        {
            kernels::dot_tile::<V, MR, NR>(x, w, k)
        }

        /// # Safety
        /// as [`kernels::rank_tile`], on a CPU with the features
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        #[inline(never)]
        pub unsafe fn $rank<V: Lanes, const MR: usize, const NV: usize>(
            c: [*mut V::E; MR],
            a: *const V::E,
            a_sm: usize,
            a_sk: usize,
            b: *const V::E,
            ldb: usize,
            k: usize,
            lanes: usize,
        ) {
            kernels::rank_tile::<V, MR, NV>(c, a, a_sm, a_sk, b, ldb, k, lanes)
        }
    };
}
tiles!(dot_tile_avx512, rank_tile_avx512, "avx512f,avx512vl,avx2,fma");
tiles!(dot_tile_avx2, rank_tile_avx2, "avx2,fma");

/// The overrides of [`Lanes::dot_tile`] and [`Lanes::rank_tile`] inside an impl.
macro_rules! tile_methods {
    ($dot:ident, $rank:ident) => {
        #[inline(always)]
        unsafe fn dot_tile<const MR: usize, const NR: usize>(x: [*const Self::E; MR], w: [*const Self::E; NR], k: usize) -> [[Self::E; NR]; MR] {
            $dot::<Self, MR, NR>(x, w, k)
        }
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
            $rank::<Self, MR, NV>(c, a, a_sm, a_sk, b, ldb, k, lanes)
        }
    };
}

/// 16 f32 lanes in one zmm register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct F32x16(__m512);
/// 8 f64 lanes in one zmm register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct F64x8(__m512d);
/// 16 f32 lanes in two ymm registers: lanes 0..8, 8..16.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct F32x8x2(__m256, __m256);
/// 8 f64 lanes in two ymm registers: lanes 0..4, 4..8.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct F64x4x2(__m256d, __m256d);

#[inline(always)]
unsafe fn sum_m256(v: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
}
#[inline(always)]
unsafe fn max_m256(v: __m256) -> f32 {
    let s4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s2 = _mm_max_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_max_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
}
#[inline(always)]
unsafe fn sum_m256d(v: __m256d) -> f64 {
    let s2 = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)))
}
#[inline(always)]
unsafe fn max_m256d(v: __m256d) -> f64 {
    let s2 = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    _mm_cvtsd_f64(_mm_max_sd(s2, _mm_unpackhi_pd(s2, s2)))
}
/// 2^(k − 1) from lanes holding k + MAGIC: the exponent field is bits − (bits(MAGIC) − 126)
#[inline(always)]
unsafe fn pow2_m256(v: __m256, base: __m256i) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_sub_epi32(_mm256_castps_si256(v), base)))
}
#[inline(always)]
unsafe fn pow2_m256d(v: __m256d, base: __m256i) -> __m256d {
    _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_sub_epi64(_mm256_castpd_si256(v), base)))
}
/// AVX2 mask of the first n of 8 (f32) lanes
#[inline(always)]
unsafe fn mask8(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}
/// AVX2 mask of the first n of 4 (f64) lanes
#[inline(always)]
unsafe fn mask4(n: usize) -> __m256i {
    _mm256_cmpgt_epi64(_mm256_set1_epi64x(n as i64), _mm256_setr_epi64x(0, 1, 2, 3))
}

impl Lanes for F32x16 {
    tile_methods!(dot_tile_avx512, rank_tile_avx512);
    type E = f32;
    const N: usize = 16;
    const FWD_TILE: (usize, usize) = (4, 6);
    const RANK_TILE: (usize, usize) = (6, 4);
    const MAGIC: f32 = 12_582_912.0;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        F32x16(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> Self {
        F32x16(_mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn store_part(self, p: *mut f32, n: usize) {
        _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, self.0)
    }
    #[inline(always)]
    fn zero() -> Self {
        unsafe { F32x16(_mm512_setzero_ps()) }
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        unsafe { F32x16(_mm512_set1_ps(x)) }
    }
    #[inline(always)]
    fn fma(self, b: Self, c: Self) -> Self {
        unsafe { F32x16(_mm512_fmadd_ps(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_add_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_sub_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_mul_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn div(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_div_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn max(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_max_ps(self.0, b.0)) }
    }
    #[inline(always)]
    fn lt_select(self, b: Self, yes: Self, no: Self) -> Self {
        unsafe { F32x16(_mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, b.0), no.0, yes.0)) }
    }
    #[inline(always)]
    fn pow2_minus1(self) -> Self {
        unsafe {
            let base = _mm512_set1_epi32((Self::MAGIC.to_bits() - 126) as i32);
            F32x16(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_sub_epi32(_mm512_castps_si512(self.0), base))))
        }
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        unsafe {
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)));
            sum_m256(_mm256_add_ps(_mm512_castps512_ps256(self.0), hi))
        }
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        unsafe {
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)));
            max_m256(_mm256_max_ps(_mm512_castps512_ps256(self.0), hi))
        }
    }
}

impl Lanes for F64x8 {
    tile_methods!(dot_tile_avx512, rank_tile_avx512);
    type E = f64;
    const N: usize = 8;
    const FWD_TILE: (usize, usize) = (4, 6);
    const RANK_TILE: (usize, usize) = (6, 4);
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    #[inline(always)]
    unsafe fn load(p: *const f64) -> Self {
        F64x8(_mm512_loadu_pd(p))
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f64, n: usize) -> Self {
        F64x8(_mm512_maskz_loadu_pd(((1u32 << n) - 1) as u8, p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f64) {
        _mm512_storeu_pd(p, self.0)
    }
    #[inline(always)]
    unsafe fn store_part(self, p: *mut f64, n: usize) {
        _mm512_mask_storeu_pd(p, ((1u32 << n) - 1) as u8, self.0)
    }
    #[inline(always)]
    fn zero() -> Self {
        unsafe { F64x8(_mm512_setzero_pd()) }
    }
    #[inline(always)]
    fn splat(x: f64) -> Self {
        unsafe { F64x8(_mm512_set1_pd(x)) }
    }
    #[inline(always)]
    fn fma(self, b: Self, c: Self) -> Self {
        unsafe { F64x8(_mm512_fmadd_pd(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F64x8(_mm512_add_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F64x8(_mm512_sub_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F64x8(_mm512_mul_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn div(self, b: Self) -> Self {
        unsafe { F64x8(_mm512_div_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn max(self, b: Self) -> Self {
        unsafe { F64x8(_mm512_max_pd(self.0, b.0)) }
    }
    #[inline(always)]
    fn lt_select(self, b: Self, yes: Self, no: Self) -> Self {
        unsafe { F64x8(_mm512_mask_blend_pd(_mm512_cmp_pd_mask::<_CMP_LT_OQ>(self.0, b.0), no.0, yes.0)) }
    }
    #[inline(always)]
    fn pow2_minus1(self) -> Self {
        unsafe {
            let base = _mm512_set1_epi64((Self::MAGIC.to_bits() - 1022) as i64);
            F64x8(_mm512_castsi512_pd(_mm512_slli_epi64::<52>(_mm512_sub_epi64(_mm512_castpd_si512(self.0), base))))
        }
    }
    #[inline(always)]
    fn sum(self) -> f64 {
        unsafe { sum_m256d(_mm256_add_pd(_mm512_castpd512_pd256(self.0), _mm512_extractf64x4_pd::<1>(self.0))) }
    }
    #[inline(always)]
    fn hmax(self) -> f64 {
        unsafe { max_m256d(_mm256_max_pd(_mm512_castpd512_pd256(self.0), _mm512_extractf64x4_pd::<1>(self.0))) }
    }
}

impl Lanes for F32x8x2 {
    tile_methods!(dot_tile_avx2, rank_tile_avx2);
    type E = f32;
    const N: usize = 16;
    const FWD_TILE: (usize, usize) = (2, 2);
    const RANK_TILE: (usize, usize) = (4, 1);
    const MAGIC: f32 = 12_582_912.0;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        F32x8x2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> Self {
        if n > 8 {
            F32x8x2(_mm256_loadu_ps(p), _mm256_maskload_ps(p.add(8), mask8(n - 8)))
        } else {
            F32x8x2(_mm256_maskload_ps(p, mask8(n)), _mm256_setzero_ps())
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0);
        _mm256_storeu_ps(p.add(8), self.1);
    }
    #[inline(always)]
    unsafe fn store_part(self, p: *mut f32, n: usize) {
        if n > 8 {
            _mm256_storeu_ps(p, self.0);
            _mm256_maskstore_ps(p.add(8), mask8(n - 8), self.1);
        } else {
            _mm256_maskstore_ps(p, mask8(n), self.0);
        }
    }
    #[inline(always)]
    fn zero() -> Self {
        unsafe { F32x8x2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        unsafe { F32x8x2(_mm256_set1_ps(x), _mm256_set1_ps(x)) }
    }
    #[inline(always)]
    fn fma(self, b: Self, c: Self) -> Self {
        unsafe { F32x8x2(_mm256_fmadd_ps(self.0, b.0, c.0), _mm256_fmadd_ps(self.1, b.1, c.1)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F32x8x2(_mm256_add_ps(self.0, b.0), _mm256_add_ps(self.1, b.1)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F32x8x2(_mm256_sub_ps(self.0, b.0), _mm256_sub_ps(self.1, b.1)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F32x8x2(_mm256_mul_ps(self.0, b.0), _mm256_mul_ps(self.1, b.1)) }
    }
    #[inline(always)]
    fn div(self, b: Self) -> Self {
        unsafe { F32x8x2(_mm256_div_ps(self.0, b.0), _mm256_div_ps(self.1, b.1)) }
    }
    #[inline(always)]
    fn max(self, b: Self) -> Self {
        unsafe { F32x8x2(_mm256_max_ps(self.0, b.0), _mm256_max_ps(self.1, b.1)) }
    }
    #[inline(always)]
    fn lt_select(self, b: Self, yes: Self, no: Self) -> Self {
        unsafe {
            let (m0, m1) = (_mm256_cmp_ps::<_CMP_LT_OQ>(self.0, b.0), _mm256_cmp_ps::<_CMP_LT_OQ>(self.1, b.1));
            F32x8x2(_mm256_blendv_ps(no.0, yes.0, m0), _mm256_blendv_ps(no.1, yes.1, m1))
        }
    }
    #[inline(always)]
    fn pow2_minus1(self) -> Self {
        unsafe {
            let base = _mm256_set1_epi32((Self::MAGIC.to_bits() - 126) as i32);
            F32x8x2(pow2_m256(self.0, base), pow2_m256(self.1, base))
        }
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        unsafe { sum_m256(_mm256_add_ps(self.0, self.1)) }
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        unsafe { max_m256(_mm256_max_ps(self.0, self.1)) }
    }
}

impl Lanes for F64x4x2 {
    tile_methods!(dot_tile_avx2, rank_tile_avx2);
    type E = f64;
    const N: usize = 8;
    const FWD_TILE: (usize, usize) = (2, 2);
    const RANK_TILE: (usize, usize) = (4, 1);
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    #[inline(always)]
    unsafe fn load(p: *const f64) -> Self {
        F64x4x2(_mm256_loadu_pd(p), _mm256_loadu_pd(p.add(4)))
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f64, n: usize) -> Self {
        if n > 4 {
            F64x4x2(_mm256_loadu_pd(p), _mm256_maskload_pd(p.add(4), mask4(n - 4)))
        } else {
            F64x4x2(_mm256_maskload_pd(p, mask4(n)), _mm256_setzero_pd())
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f64) {
        _mm256_storeu_pd(p, self.0);
        _mm256_storeu_pd(p.add(4), self.1);
    }
    #[inline(always)]
    unsafe fn store_part(self, p: *mut f64, n: usize) {
        if n > 4 {
            _mm256_storeu_pd(p, self.0);
            _mm256_maskstore_pd(p.add(4), mask4(n - 4), self.1);
        } else {
            _mm256_maskstore_pd(p, mask4(n), self.0);
        }
    }
    #[inline(always)]
    fn zero() -> Self {
        unsafe { F64x4x2(_mm256_setzero_pd(), _mm256_setzero_pd()) }
    }
    #[inline(always)]
    fn splat(x: f64) -> Self {
        unsafe { F64x4x2(_mm256_set1_pd(x), _mm256_set1_pd(x)) }
    }
    #[inline(always)]
    fn fma(self, b: Self, c: Self) -> Self {
        unsafe { F64x4x2(_mm256_fmadd_pd(self.0, b.0, c.0), _mm256_fmadd_pd(self.1, b.1, c.1)) }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        unsafe { F64x4x2(_mm256_add_pd(self.0, b.0), _mm256_add_pd(self.1, b.1)) }
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        unsafe { F64x4x2(_mm256_sub_pd(self.0, b.0), _mm256_sub_pd(self.1, b.1)) }
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        unsafe { F64x4x2(_mm256_mul_pd(self.0, b.0), _mm256_mul_pd(self.1, b.1)) }
    }
    #[inline(always)]
    fn div(self, b: Self) -> Self {
        unsafe { F64x4x2(_mm256_div_pd(self.0, b.0), _mm256_div_pd(self.1, b.1)) }
    }
    #[inline(always)]
    fn max(self, b: Self) -> Self {
        unsafe { F64x4x2(_mm256_max_pd(self.0, b.0), _mm256_max_pd(self.1, b.1)) }
    }
    #[inline(always)]
    fn lt_select(self, b: Self, yes: Self, no: Self) -> Self {
        unsafe {
            let (m0, m1) = (_mm256_cmp_pd::<_CMP_LT_OQ>(self.0, b.0), _mm256_cmp_pd::<_CMP_LT_OQ>(self.1, b.1));
            F64x4x2(_mm256_blendv_pd(no.0, yes.0, m0), _mm256_blendv_pd(no.1, yes.1, m1))
        }
    }
    #[inline(always)]
    fn pow2_minus1(self) -> Self {
        unsafe {
            let base = _mm256_set1_epi64x((Self::MAGIC.to_bits() - 1022) as i64);
            F64x4x2(pow2_m256d(self.0, base), pow2_m256d(self.1, base))
        }
    }
    #[inline(always)]
    fn sum(self) -> f64 {
        unsafe { sum_m256d(_mm256_add_pd(self.0, self.1)) }
    }
    #[inline(always)]
    fn hmax(self) -> f64 {
        unsafe { max_m256d(_mm256_max_pd(self.0, self.1)) }
    }
}
