//! Helpers of the GPU tests: the devices a test body runs on, random inputs in a storage type,
//! comparisons.
//!
//! Every GPU test runs its body on each device of [`devices`]: the simulated device (the kernels of
//! `cuda/` on the CPU, every launch checked for races and out-of-bounds accesses; needs a C++
//! compiler) and the real GPU when one is usable. Without a CUDA driver / NVRTC / device the GPU
//! part prints `SKIP <test> on the GPU: <reason>`; with DRPO_REQUIRE_GPU=1 that fails the test.
//! Without a C++ compiler the simulated part prints a SKIP line; DRPO_REQUIRE_SIM=1 (set by
//! `.ci/run`) fails instead. The few largest cases run on the simulator only under DRPO_SIM_FULL=1
//! ([`full_size`]).
#![allow(dead_code)]

use drpo::gpu::{Gpu, GpuFloat};
use rand::{rngs::StdRng, Rng};

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Whether a test runs its largest cases on `gpu`: always on a GPU; on the simulated device only
/// with DRPO_SIM_FULL=1. There those cases take minutes (a Qwen-width GEMM through emulated tensor
/// cores, 10^5 sampler rows), so the CI runs every other case, and NOTES.md records full runs.
pub fn full_size(gpu: &Gpu) -> bool {
    !gpu.is_simulated() || required("DRPO_SIM_FULL")
}

/// The devices to run `test` on: the simulated device, then the GPU, each when available (a SKIP
/// line for each one that is not).
pub fn devices(test: &str) -> Vec<Gpu> {
    let mut out = Vec::new();
    for (kind, open, require) in [("simulated device", Gpu::sim as fn() -> drpo::Result<Gpu>, "DRPO_REQUIRE_SIM"), ("GPU", || Gpu::new(0), "DRPO_REQUIRE_GPU")] {
        match open() {
            Ok(g) => {
                println!("{test}: on {g:?}");
                out.push(g);
            }
            Err(drpo::Error::NoDevice { why }) => {
                assert!(!required(require), "{test}: {require}=1 but no {kind}: {why}");
                println!("SKIP {test} on the {kind}: {why}");
            }
            Err(e) => panic!("{test}: {kind} start-up failed: {e}"),
        }
    }
    out
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

/// Where the per-element check's floor comes from.
#[derive(Clone, Copy, Debug)]
pub enum Floor {
    /// a fixed absolute floor (STYLE §5's presets)
    Abs(f64),
    /// the RMS of `want`: for results whose rounding error scales with the typical magnitude of the
    /// output (sums with cancellation: a GEMM, attention, the head), not with the element itself
    Rms,
}

/// What a comparison must meet: rel_l2(got, want) ≤ `rel_l2` and, for every element,
/// |got − want| / (|want| + floor) ≤ `worst`.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub rel_l2: f64,
    pub worst: f64,
    pub floor: Floor,
}

impl Bound {
    pub const fn floor(self, floor: Floor) -> Bound {
        Bound { floor, ..self }
    }
}

/// Bit-for-bit (copies, gathers).
pub const EXACT: Bound = Bound { rel_l2: 0.0, worst: 0.0, floor: Floor::Abs(1.0) };
/// f32 with fixed-order reductions (STYLE §5): seen ~1e-7.
pub const F32: Bound = Bound { rel_l2: 1e-6, worst: 1e-5, floor: Floor::Abs(1e-6) };
/// bf16 rounded once from an f32 result (STYLE §5): one rounding ≤ 2^-8 relative (bf16 keeps 8 bits, round
/// to nearest: half a unit of 2^-7); seen 1.7e-3 rms, 3.9e-3 worst; a single element can reach 3.9e-3 in rel_l2 too.
pub const BF16_ONCE: Bound = Bound { rel_l2: 4e-3, worst: 8e-3, floor: Floor::Abs(1e-3) };

/// The single-rounding preset of storage type T.
pub fn once<T: GpuFloat>() -> Bound {
    if T::NAME == "f32" {
        F32
    } else {
        BF16_ONCE
    }
}

/// An f32 chain (a GEMM's or attention's long sums) rounded once to bf16 at the end: the rounding
/// (≤ 2^-8 relative) dominates the chain's ~1e-6 of the output scale, so the single-rounding bounds,
/// with the floor at rms(want) because the chain's absolute error scales with the output's magnitude.
pub const BF16_CHAIN: Bound = Bound { rel_l2: 4e-3, worst: 8e-3, floor: Floor::Rms };

/// A chain of f32 roundings whose per-element errors are noise-like (long sums): rel_l2 ≤ `rel_l2`,
/// every element within 5σ of it, σ = rel_l2 · rms(want) (floor: the RMS of want).
pub const fn chain(rel_l2: f64) -> Bound {
    Bound { rel_l2, worst: 5.0 * rel_l2, floor: Floor::Rms }
}

/// Asserts every value is finite, rel_l2(got, want) ≤ bound.rel_l2 and the worst element
/// |got − want| / (|want| + floor) ≤ bound.worst; prints both (`--nocapture`). The terms-free case
/// of [`assert_close_terms`]: the error measured against the result itself.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], bound: Bound) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    assert_close_terms(what, got, want, &abs(want), bound);
}

/// |v| elementwise: a linear reference run on the absolute values of its inputs gives Σ|terms| of
/// each output, the scale of [`assert_close_terms`].
pub fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// Like [`assert_close`] for sums with cancellation, measured against the magnitude of the terms:
/// `terms[i]` is Σ|term| of element i (the textbook summation bound: a floating-point sum's error is
/// ≤ γ·Σ|terms|, however small the sum itself comes out). Asserts every value is finite,
/// ‖got − want‖ ≤ bound.rel_l2 · ‖terms‖, and for every element |got − want| / (terms[i] + floor) ≤
/// bound.worst (floor: the bound's absolute floor; `Floor::Rms` takes rms(terms)).
pub fn assert_close_terms(what: &str, got: &[f64], want: &[f64], terms: &[f64], bound: Bound) {
    assert!(got.len() == want.len() && want.len() == terms.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().position(|g| !g.is_finite()) {
        panic!("{what}: non-finite value {} at #{i} (want {})", got[i], want[i]);
    }
    if got.is_empty() {
        return;
    }
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let floor = match bound.floor {
        Floor::Abs(f) => f,
        Floor::Rms => (norm(terms) / (terms.len().max(1) as f64).sqrt()).max(f64::MIN_POSITIVE),
    };
    let diff: Vec<f64> = got.iter().zip(want).map(|(g, w)| g - w).collect();
    // as check::rel_l2: the absolute error where the scale is zero
    // (a NaN in want fails: an infinite error)
    let e = match norm(&diff) {
        d if d.is_nan() => f64::INFINITY,
        d if norm(terms) == 0.0 => d,
        d => d / norm(terms),
    };
    let (mut i, mut we) = (0, 0.0);
    for (k, (d, t)) in diff.iter().zip(terms).enumerate() {
        let r = if d.is_nan() { f64::INFINITY } else { d.abs() / (t + floor) };
        if r > we {
            (i, we) = (k, r);
        }
    }
    println!(
        "{what}: rel_l2 = {e:.3e} of Σ|terms| (bound {:.0e}); worst #{i}: got {:.9e} want {:.9e} terms {:.3e} ({we:.2e}, bound {:.0e}, floor {floor:.1e})",
        bound.rel_l2, got[i], want[i], terms[i], bound.worst
    );
    assert!(e <= bound.rel_l2, "{what}: rel_l2 {e:.3e} of Σ|terms| > {:.0e}", bound.rel_l2);
    assert!(we <= bound.worst, "{what}: worst element #{i} got {:.9e} want {:.9e} (terms {:.3e}): {we:.2e} > {:.0e}", got[i], want[i], terms[i], bound.worst);
}

/// The bound of the bf16 GPU model (every activation stored in bf16): log-probs and logits against
/// the CPU f64 model on the same bf16-rounded weights, rel_l2 3e-2 and every element within 5σ of it
/// (floor rms(want)). Set a priori: ~14 roundings of ≤ 2^-8 per layer, ~10× the expected few 1e-3.
pub const BF16_MODEL: f64 = 3e-2;

/// The f64 CPU model on `cpu`'s weights rounded to bf16: what the bf16 GPU model computes, exactly.
pub fn on_bf16_weights(cpu: &drpo::model::Model<f32>) -> drpo::model::Model<f64> {
    let rounded: Vec<f64> = cpu.params.iter().map(|&p| drpo::gpu::bf16::from_f32(p).to_f64()).collect();
    drpo::model::Model::<f64>::from_params(cpu.cfg.clone(), rounded)
}

/// Along a greedy generation `tokens` after `prompt`, the f64 model `reference` picks the same token
/// wherever its top-1/top-2 margin exceeds twice the error bound of a logit (5σ of `bound` relative
/// to the row's rms: each of the two logits can move by that much); asserts those, returns
/// (decisive, within the error).
pub fn decisive_greedy_tokens(reference: &drpo::model::Model<f64>, prompt: &[u32], tokens: &[u32], bound: f64, what: &str) -> drpo::Result<(usize, usize)> {
    let seq: Vec<u32> = prompt.iter().chain(tokens).copied().collect();
    let logits = reference.logits(&[&seq])?;
    let v = reference.cfg.vocab_size;
    let (mut decisive, mut close) = (0, 0);
    for (t, &token) in tokens.iter().enumerate() {
        let row = &logits[(prompt.len() - 1 + t) * v..(prompt.len() + t) * v];
        let rms = (row.iter().map(|x| x * x).sum::<f64>() / v as f64).sqrt();
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let (margin, error) = (row[order[0]] - row[order[1]], 5.0 * bound * rms);
        if margin > 2.0 * error {
            decisive += 1;
            assert_eq!(token as usize, order[0], "{what} step {t}: CPU margin {margin:.3} > 2 × {error:.3}");
        } else {
            close += 1;
        }
    }
    Ok((decisive, close))
}

/// Asserts two f32 slices equal bit for bit, naming the first differing element and the count.
pub fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        let differing = (0..got.len()).filter(|&i| got[i].to_bits() != want[i].to_bits()).count();
        panic!("{what}: {differing} of {} elements differ; first #{i}: got {:e} want {:e}", got.len(), got[i], want[i]);
    }
}

/// Gradients of mixed magnitudes: most ~`scale`, some tiny, some exactly zero, a few large (the
/// optimizer tests' inputs).
pub fn mixed_gradients(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.random_range(0..100) {
            0 => 0.0,
            1 => rng.random_range(-1e-30f32..1e-30),
            2 => rng.random_range(-100.0f32..100.0) * scale,
            _ => rng.random_range(-1.0f32..1.0) * scale,
        })
        .collect()
}
