//! Rotary position embedding, Hugging Face's rotate-half convention (NOT interleaved pairs):
//! element i < hd/2 is paired with i + hd/2 and rotated by angle pos · theta^(-2i/hd).

use super::{math, Float};

/// cos and sin of every (position, frequency) angle.  cos, sin: [n, hd/2]
/// angle = pos · θ^(−2i/hd), computed in f64 whatever T is (only the final cos/sin is rounded to T),
/// with the project's own [`math::pow_ratio`] and [`math::sin_cos`] (not libm: the same bits on every
/// CPU; ≤ 1.03 and ≤ 0.72 ulp, the range reduction exact for any angle). Each distinct position is
/// computed once (a packed batch repeats 0..t in every sequence) and copied to its rows.
/// HF's f32 models build the tables in f32 (inv_freq, then position × inv_freq), so their angle error
/// grows with the position: measured against f64, ~4e-5 rad at position 1000, ~3e-4 rad at 8000 and
/// ~1.4e-3 rad at 32000 (θ = 1e6, hd = 128); cos/sin differ by about as much. An f32 model here is
/// therefore closer to the f64 definition than HF's f32 model is, not equal to it, on long contexts.
pub fn rope_tables<T: Float>(positions: &[usize], hd: usize, theta: f64) -> (Vec<T>, Vec<T>) {
    let half = hd / 2;
    if half == 0 {
        return (Vec::new(), Vec::new());
    }
    let inv_freq: Vec<f64> = (0..half).map(|i| math::pow_ratio(theta, -2 * i as i64, hd as u64)).collect();
    let row = |p: usize, cos: &mut [T], sin: &mut [T]| {
        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(&inv_freq) {
            let (sa, ca) = math::sin_cos(p as f64 * f);
            (*c, *s) = (T::from_f64(ca), T::from_f64(sa));
        }
    };
    let (mut cos, mut sin) = (vec![T::ZERO; positions.len() * half], vec![T::ZERO; positions.len() * half]);
    let (lo, hi) = (positions.iter().copied().min().unwrap_or(0), positions.iter().copied().max().unwrap_or(0));
    if hi - lo >= positions.len() {
        for ((&p, c), s) in positions.iter().zip(cos.chunks_mut(half)).zip(sin.chunks_mut(half)) {
            row(p, c, s);
        }
        return (cos, sin);
    }
    let (mut cos_at, mut sin_at) = (vec![T::ZERO; (hi - lo + 1) * half], vec![T::ZERO; (hi - lo + 1) * half]);
    for ((p, c), s) in (lo..=hi).zip(cos_at.chunks_mut(half)).zip(sin_at.chunks_mut(half)) {
        row(p, c, s);
    }
    for ((&p, c), s) in positions.iter().zip(cos.chunks_mut(half)).zip(sin.chunks_mut(half)) {
        c.copy_from_slice(&cos_at[(p - lo) * half..(p - lo + 1) * half]);
        s.copy_from_slice(&sin_at[(p - lo) * half..(p - lo + 1) * half]);
    }
    (cos, sin)
}

/// In place: x'[i] = x[i]·cos − x[i+h]·sin,  x'[i+h] = x[i+h]·cos + x[i]·sin   (h = hd/2)
/// x: [n, heads, hd]   cos, sin: [n, hd/2] from [`rope_tables`]
pub fn rope_fwd<T: Float>(x: &mut [T], cos: &[T], sin: &[T], heads: usize, hd: usize) {
    rotate(x, cos, sin, heads, hd, false);
}

/// In place, the transpose of [`rope_fwd`] (a rotation by −angle): dx = Rᵀ dy.
pub fn rope_bwd<T: Float>(dx: &mut [T], cos: &[T], sin: &[T], heads: usize, hd: usize) {
    rotate(dx, cos, sin, heads, hd, true);
}

fn rotate<T: Float>(x: &mut [T], cos: &[T], sin: &[T], heads: usize, hd: usize, inverse: bool) {
    let half = hd / 2;
    let n = cos.len() / half;
    assert!(hd.is_multiple_of(2) && x.len() == n * heads * hd && sin.len() == cos.len(), "rope: bad lengths");
    for r in 0..n {
        let (cr, sr) = (&cos[r * half..(r + 1) * half], &sin[r * half..(r + 1) * half]);
        for h in 0..heads {
            let v = &mut x[(r * heads + h) * hd..(r * heads + h + 1) * hd];
            for i in 0..half {
                let (a, b) = (v[i], v[i + half]);
                let s = if inverse { -sr[i] } else { sr[i] };
                v[i] = a * cr[i] - b * s;
                v[i + half] = b * cr[i] + a * s;
            }
        }
    }
}
