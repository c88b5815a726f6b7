//! SwiGLU activation of the Qwen2 MLP: h = silu(gate) ⊙ up, silu(g) = g·σ(g).

use super::{simd, Float};

/// out[k] = silu(gate[k]) · up[k] = (g·σ(g))·u,  σ(g) = 1 / (1 + exp(0 − g)) with the canonical exp.
/// out, gate, up: [n, ff]
pub fn swiglu_fwd<T: Float>(out: &mut [T], gate: &[T], up: &[T]) {
    assert!(out.len() == gate.len() && gate.len() == up.len(), "swiglu_fwd: bad lengths");
    simd::swiglu_fwd(out, gate, up);
}

/// Backward of [`swiglu_fwd`]; outputs accumulate (`+=`).
/// dgate += dout · up · σ(g)(1 + g(1 − σ(g))),   dup += dout · silu(g)
pub fn swiglu_bwd<T: Float>(dgate: &mut [T], dup: &mut [T], dout: &[T], gate: &[T], up: &[T]) {
    let n = dout.len();
    assert!(dgate.len() == n && dup.len() == n && gate.len() == n && up.len() == n, "swiglu_bwd: bad lengths");
    simd::swiglu_bwd(dgate, dup, dout, gate, up);
}
