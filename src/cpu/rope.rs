//! Rotary position embedding, Hugging Face's rotate-half convention (NOT interleaved pairs):
//! element i < hd/2 is paired with i + hd/2 and rotated by angle pos · theta^(-2i/hd).

use super::Float;

/// cos and sin of every (position, frequency) angle.  cos, sin: [n, hd/2]
/// Computed in f64 whatever T is (only the final cos/sin is rounded to T), as the f64 reference does.
/// HF's f32 models build the tables in f32 (inv_freq, then position × inv_freq), so their angle error
/// grows with the position: measured against f64, ~4e-5 rad at position 1000, ~3e-4 rad at 8000 and
/// ~1.4e-3 rad at 32000 (θ = 1e6, hd = 128); cos/sin differ by about as much. An f32 model here is
/// therefore closer to the f64 definition than HF's f32 model is, not equal to it, on long contexts.
pub fn rope_tables<T: Float>(positions: &[usize], hd: usize, theta: f64) -> (Vec<T>, Vec<T>) {
    let half = hd / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(positions.len() * half), Vec::with_capacity(positions.len() * half));
    for &p in positions {
        for i in 0..half {
            let inv_freq = 1.0 / theta.powf((2 * i) as f64 / hd as f64);
            let angle = p as f64 * inv_freq;
            cos.push(T::from_f64(angle.cos()));
            sin.push(T::from_f64(angle.sin()));
        }
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
