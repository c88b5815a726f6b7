//! CPU reference of every op, generic over f32 and f64 (one code path, two float types).
//!
//! One file per kernel family, mirroring `cuda/`. Argument order everywhere: outputs, inputs, sizes,
//! scalars. Shapes use `n` rows (tokens), `c` hidden, `nh`/`nkv` query/kv heads, `hd` head dim,
//! `ff` MLP width, `v` vocab. These functions are the definitions the GPU kernels are tested against.

pub mod attention;
pub mod embedding;
pub mod logprob;
pub mod math;
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
    /// [`math::ln`] (f32: of the f64 value, rounded once), never libm's
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
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
            fn ln(self) -> Self {
                math::ln(self as f64) as $t
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
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

/// Keeps freed memory in the process instead of returning it to the kernel (glibc's `mallopt`:
/// blocks below 32 MiB come from the heap, and up to 1 GiB of free heap is kept). The CPU path
/// allocates its activations per call, tens of MB per toy training step; with glibc's defaults each
/// step mapped them afresh and page-faulted them in, ~20% of the step's CPU time (NOTES.md,
/// performance log). Process-wide, so the binaries call it once at start (`main`, the benches);
/// a no-op without glibc. Changes speed and resident memory only, never a result.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only sets two malloc parameters; called before the work starts
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}

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
