//! RMSNorm over the last axis (Qwen2's `input_layernorm`, `post_attention_layernorm`, `norm`).

use super::Float;

/// out[r,i] = w[i] * x[r,i] * rstd[r],   rstd[r] = 1 / sqrt(mean_i x[r,i]^2 + eps)
/// x, out: [n, c]   w: [c]   rstd: [n] (kept for the backward pass)
pub fn rmsnorm_fwd<T: Float>(out: &mut [T], rstd: &mut [T], x: &[T], w: &[T], c: usize, eps: f64) {
    let n = rstd.len();
    assert!(x.len() == n * c && out.len() == n * c && w.len() == c, "rmsnorm_fwd: bad lengths");
    for r in 0..n {
        let row = &x[r * c..(r + 1) * c];
        let mean_sq = super::dot(row, row) / T::from_usize(c);
        let s = T::ONE / (mean_sq + T::from_f64(eps)).sqrt();
        rstd[r] = s;
        for i in 0..c {
            out[r * c + i] = w[i] * (row[i] * s);
        }
    }
}

/// Backward of [`rmsnorm_fwd`]; both outputs accumulate (`+=`).
/// With g = w ⊙ dout:  dx = rstd·g − rstd³/c · x · (g·x),   dw[i] += Σ_r dout[r,i]·x[r,i]·rstd[r]
/// dx, dout, x: [n, c]   dw, w: [c]   rstd: [n]
pub fn rmsnorm_bwd<T: Float>(dx: &mut [T], dw: &mut [T], dout: &[T], x: &[T], w: &[T], rstd: &[T], c: usize) {
    let n = rstd.len();
    assert!(dx.len() == n * c && dout.len() == n * c && x.len() == n * c && dw.len() == c && w.len() == c);
    let mut g = vec![T::ZERO; c];
    for r in 0..n {
        let (xr, dr, s) = (&x[r * c..(r + 1) * c], &dout[r * c..(r + 1) * c], rstd[r]);
        for i in 0..c {
            g[i] = w[i] * dr[i];
            dw[i] += dr[i] * xr[i] * s;
        }
        let gx = super::dot(&g, xr);
        let k = s * s * s * gx / T::from_usize(c);
        for i in 0..c {
            dx[r * c + i] += s * g[i] - k * xr[i];
        }
    }
}
