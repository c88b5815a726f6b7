//! Helpers of the GPU tests: a device or a SKIP line, random inputs in a storage type, comparisons.
//! Without a CUDA driver / NVRTC / device every GPU test prints `SKIP <test>: <reason>` and passes;
//! with DRPO_REQUIRE_GPU=1 the same condition fails the test.
#![allow(dead_code)]

use drpo::gpu::{Gpu, GpuFloat};
use rand::{rngs::StdRng, Rng};

/// The device, or None after printing why the test is skipped.
pub fn gpu_or_skip(test: &str) -> Option<Gpu> {
    let require = std::env::var("DRPO_REQUIRE_GPU").is_ok_and(|v| v == "1");
    match Gpu::new(0) {
        Ok(g) => {
            println!("{test}: on {g:?}");
            Some(g)
        }
        Err(drpo::Error::NoDevice { why }) => {
            assert!(!require, "{test}: DRPO_REQUIRE_GPU=1 but {why}");
            println!("SKIP {test}: {why}");
            None
        }
        Err(e) => panic!("{test}: GPU start-up failed: {e}"),
    }
}

#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)] // not every GPU test draws random inputs
pub use common::*;

/// n values uniform in [−scale, scale], rounded to T (the reference is fed these exact values).
pub fn uniform<T: GpuFloat>(rng: &mut StdRng, n: usize, scale: f32) -> Vec<T> {
    (0..n).map(|_| T::from_f32(rng.random_range(-scale..=scale))).collect()
}

pub fn widen<T: GpuFloat>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.to_f32() as f64).collect()
}

pub fn nan<T: GpuFloat>(n: usize) -> Vec<T> {
    vec![T::from_f32(f32::NAN); n]
}

/// Bounds: the rel-L2 bounds, f32 ≤ 1e-5 and bf16 ≤ 1e-2.
pub fn tol<T: GpuFloat>() -> f64 {
    if T::NAME == "f32" {
        1e-5
    } else {
        1e-2
    }
}

/// Asserts every value is finite and rel_l2(got, want) ≤ bound; prints rel_l2 and the worst element.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], bound: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().position(|g| !g.is_finite()) {
        panic!("{what}: non-finite value {} at #{i} (want {})", got[i], want[i]);
    }
    let e = drpo::check::rel_l2(got, want);
    let (i, we, g, w) = drpo::check::worst(got, want, 1e-6);
    println!("{what}: rel_l2 = {e:.3e} (bound {bound:.0e}); worst #{i}: got {g:.9e} want {w:.9e} ({we:.2e})");
    assert!(e <= bound, "{what}: rel_l2 {e:.3e} > {bound:.0e}");
}
