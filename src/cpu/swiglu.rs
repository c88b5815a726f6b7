//! SwiGLU activation of the Qwen2 MLP: h = silu(gate) ⊙ up, silu(g) = g·σ(g).

use super::Float;

#[inline]
fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

/// out[k] = silu(gate[k]) · up[k].   out, gate, up: [n, ff]
pub fn swiglu_fwd<T: Float>(out: &mut [T], gate: &[T], up: &[T]) {
    assert!(out.len() == gate.len() && gate.len() == up.len(), "swiglu_fwd: bad lengths");
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g * sigmoid(g) * u;
    }
}

/// Backward of [`swiglu_fwd`]; outputs accumulate (`+=`).
/// dgate += dout · up · σ(g)(1 + g(1 − σ(g))),   dup += dout · silu(g)
pub fn swiglu_bwd<T: Float>(dgate: &mut [T], dup: &mut [T], dout: &[T], gate: &[T], up: &[T]) {
    let n = dout.len();
    assert!(dgate.len() == n && dup.len() == n && gate.len() == n && up.len() == n, "swiglu_bwd: bad lengths");
    for k in 0..n {
        let (g, s) = (gate[k], sigmoid(gate[k]));
        dgate[k] += dout[k] * up[k] * s * (T::ONE + g * (T::ONE - s));
        dup[k] += dout[k] * g * s;
    }
}
