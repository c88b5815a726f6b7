//! Next-token sampling from logits: greedy, temperature, top-k and top-p, given one uniform per row.
//!
//! The distribution is defined so a GPU kernel can reproduce it exactly:
//! 1. temperature 0 → the arg-max (the lowest id among ties); otherwise p = softmax(logits / T);
//! 2. rank tokens by (p descending, id ascending); top-k keeps the first k (k = 0: all);
//! 3. top-p keeps the shortest prefix of that ranking whose mass, renormalised over the top-k set,
//!    reaches `top_p` (at least one token; Hugging Face's order: top-k, then top-p);
//! 4. the kept probabilities are renormalised and the token is the first id, in **id order**, whose
//!    cumulative kept mass exceeds u · total (inverse CDF; id order needs no sort on the GPU).

use crate::cpu::Float;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    /// 0 = greedy
    pub temperature: f64,
    /// 0 = off
    pub top_k: usize,
    /// 1 = off
    pub top_p: f64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::input(format!("temperature must be ≥ 0, got {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::input(format!("top-p must be in (0, 1], got {}", self.top_p)));
        }
        Ok(())
    }
}

/// Index of the largest value (the lowest index among ties; NaN never wins).
pub fn argmax<T: Float>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] || (row[best].to_f64().is_nan() && !x.to_f64().is_nan()) {
            best = i;
        }
    }
    best
}

/// The final sampling distribution over the vocabulary (steps 1-3 above; zeros outside the kept set).
pub fn sampling_probs<T: Float>(logits: &[T], params: &SamplingParams) -> Vec<f64> {
    let v = logits.len();
    let mut probs = vec![0.0; v];
    if v == 0 {
        return probs;
    }
    if params.temperature == 0.0 {
        probs[argmax(logits)] = 1.0;
        return probs;
    }
    let inv_t = 1.0 / params.temperature;
    let m = logits.iter().fold(f64::NEG_INFINITY, |m, x| m.max(x.to_f64() * inv_t));
    let mut total = 0.0;
    for (p, x) in probs.iter_mut().zip(logits) {
        *p = (x.to_f64() * inv_t - m).exp();
        total += *p;
    }
    for p in probs.iter_mut() {
        *p /= total;
    }
    if params.top_k == 0 && params.top_p >= 1.0 {
        return probs;
    }
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let k = if params.top_k == 0 { v } else { params.top_k.min(v) };
    let topk_mass: f64 = order[..k].iter().map(|&i| probs[i]).sum();
    let mut kept = 0;
    let mut mass = 0.0;
    while kept < k {
        mass += probs[order[kept]];
        kept += 1;
        if params.top_p < 1.0 && mass / topk_mass >= params.top_p {
            break;
        }
    }
    let mut out = vec![0.0; v];
    for &i in &order[..kept] {
        out[i] = probs[i] / mass;
    }
    out
}

/// Draws a token from [`sampling_probs`] with the uniform `u` ∈ [0, 1) (inverse CDF in id order).
pub fn sample<T: Float>(logits: &[T], params: &SamplingParams, u: f64) -> u32 {
    if params.temperature == 0.0 {
        return argmax(logits) as u32;
    }
    let probs = sampling_probs(logits, params);
    let total: f64 = probs.iter().sum();
    let target = u * total;
    let mut cum = 0.0;
    let mut last_kept = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            cum += p;
            last_kept = i;
            if cum > target {
                return i as u32;
            }
        }
    }
    last_kept as u32 // rounding left u·total at the very top: the last kept token
}
