//! Shared test helpers: fixture paths, seeded randomness, reading f64 reference tensors, comparisons.
#![allow(dead_code)]

use rand::{rngs::StdRng, SeedableRng};
use std::path::PathBuf;

/// Folder of the vendored fixtures: `$DRPO_TEST_DATA` or `tests/fixtures`.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("DRPO_TEST_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

pub fn fixture(name: &str) -> PathBuf {
    data_dir().join(name)
}

pub const FIXTURES: [&str; 2] = ["qwen2-tiny", "qwen2-tiny-mqa"];

/// A seeded RNG; the seed is printed and `TEST_SEED=<n>` replays it.
pub fn rng(test: &str) -> StdRng {
    let seed = match std::env::var("TEST_SEED") {
        Ok(s) => s.parse().expect("TEST_SEED must be an integer"),
        Err(_) => rand::random::<u64>(),
    };
    println!("{test}: TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// A reference tensor (F64 or I64) of a safetensors file, as f64 values and its shape.
pub fn read_tensor(path: &std::path::Path, name: &str) -> (Vec<f64>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap_or_else(|_| panic!("{name} missing in {}", path.display()));
    let vals = match t.dtype() {
        safetensors::Dtype::F64 => t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
        safetensors::Dtype::I64 => t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        safetensors::Dtype::F32 => t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        d => panic!("unexpected dtype {d:?}"),
    };
    (vals, t.shape().to_vec())
}

/// Asserts max|got − want| / max|want| ≤ tol, printing the error and the worst element.
pub fn assert_rel(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = drpo::check::max_rel(got, want);
    let (i, we, g, w) = drpo::check::worst(got, want, 1e-12);
    println!("{what}: max_rel = {e:.3e} (worst #{i}: got {g:.12e}, want {w:.12e}, rel {we:.2e})");
    assert!(e <= tol, "{what}: max_rel {e:.3e} > {tol:.1e}");
}
