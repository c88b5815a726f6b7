//! CPU reference of every op, generic over f32 and f64 (one code path, two float types).
//!
//! One file per kernel family, mirroring `cuda/`. Argument order everywhere: outputs, inputs, sizes,
//! scalars. Shapes use `n` rows (tokens), `c` hidden, `nh`/`nkv` query/kv heads, `hd` head dim,
//! `ff` MLP width, `v` vocab. These functions are the definitions the GPU kernels are tested against.

pub mod attention;
pub mod embedding;
pub mod logprob;
pub mod matmul;
pub mod rmsnorm;
pub mod rope;
pub mod simd;
pub mod swiglu;

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// The float types the reference runs in: f64 (the definition, checked to ~1e-12 against PyTorch)
/// and f32 (what training on the CPU uses). A small hand-written trait keeps the dependency list short.
/// Its constants (ZERO, ONE, NEG_INFINITY, …) come from [`simd::Real`].
pub trait Float:
    simd::Element
    + Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + Debug
    + Display
    + Sum
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
{
    const NAME: &'static str;
    fn from_f64(x: f64) -> Self;
    fn from_f32(x: f32) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn is_finite(self) -> bool;
    fn max(self, other: Self) -> Self;
    fn from_usize(x: usize) -> Self {
        Self::from_f64(x as f64)
    }
}

macro_rules! impl_float {
    ($t:ty, $name:expr) => {
        impl Float for $t {
            const NAME: &'static str = $name;
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn from_f32(x: f32) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline(always)]
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
        }
    };
}
impl_float!(f32, "f32");
impl_float!(f64, "f64");

/// The canonical dot product (`simd`'s module doc): 16 (f32) or 8 (f64) lane-partial FMA sums and a
/// fixed tree, the same bits at every SIMD level, thread count and batch composition.
#[inline]
pub fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    simd::dot(a, b)
}

/// `y += a * x`, one FMA per element (the backward matmuls' and attention's accumulation step).
#[inline]
pub fn axpy<T: Float>(y: &mut [T], a: T, x: &[T]) {
    simd::axpy(y, a, x)
}
