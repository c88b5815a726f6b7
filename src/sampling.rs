//! Next-token sampling from logits: greedy, temperature, top-k and top-p, given one uniform per row.
//!
//! The distribution is defined so a GPU kernel reproduces it token for token:
//! 1. temperature 0 → the arg-max of the logits (the lowest id among ties; NaN never wins);
//! 2. otherwise p = softmax(logits / T) in f64, and each p becomes a **fixed-point mass**
//!    f = ⌊p · 2^62⌋ (a u64; NaN → 0) — see [`fixed_point`];
//! 3. rank tokens by (f descending, id ascending); top-k keeps the first k (k = 0: all);
//! 4. top-p keeps the shortest prefix of that ranking whose mass M reaches `top_p` of the top-k mass
//!    M_k, decided exactly as M · 2^32 ≥ ⌈top_p · 2^32⌉ · M_k (at least one token; top_p = 1: off;
//!    Hugging Face's order: top-k, then top-p) — see [`reaches`];
//! 5. with F = Σ kept f and the uniform's 53 bits u53 (u = u53 · 2^-53), the token is the first kept id
//!    in **id order** whose cumulative kept mass exceeds ⌊u53 · F / 2^53⌋ (inverse CDF; id order needs
//!    no sort on the GPU). F = 0 happens only when the logits hold NaN or +inf: then the arg-max.
//!
//! Why fixed point: every sum after the softmax is a sum of integers, which does not depend on its
//! order, so the GPU's tree sums equal these sequential ones bit for bit, tokens of equal probability
//! have identical masses (a tie group of j tokens has exactly j times the mass of one), and every
//! comparison above is exact. In f64 the CPU decided `S16/S20 ≥ 0.8` with sequential sums and the GPU
//! with `16t/(20t)` of a `t` that differed by ulps, so rows of tied logits kept different nuclei.
//! What it costs: a probability below 2^-62 (≈ 2e-19) has zero mass and is never drawn; probabilities
//! closer than 2^-62 rank as ties (in id order; possible only below p ≈ 2^-10); the top-p threshold is
//! rounded up to a multiple of 2^-32 (≤ 2.3e-10 above `top_p`); token i is drawn with probability
//! f_i / F up to the 2^-53 granularity of u. The CPU and GPU softmax may still differ by an ulp in p
//! (exp, and the order of the sum Σe), which moves f by about one unit: a token can differ only where
//! a comparison is within a few units of 2^-62 of its boundary.

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

/// The error of a sampler fed a NaN or ±inf logit, on every device ([`crate::policy::Policy::sample`]):
/// `step` is the new token being drawn, (`row`, `id`) the first non-finite logit of the batch.
pub fn non_finite_logits(step: u64, row: usize, id: usize, value: f64) -> Error {
    Error::NonFinite {
        what: format!("generation: the model's logits before new token {step} (the weights or the activations overflow)"),
        at: format!("batch row {row}, id {id}"),
        value,
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

/// 2^62: the unit of the fixed-point masses.
pub const FIXED_ONE: f64 = 4_611_686_018_427_387_904.0;

/// A probability as a fixed-point mass ⌊p · 2^62⌋ (exact scaling, then truncation; NaN and p ≤ 0 → 0).
/// p ≤ 1, so a mass is ≤ 2^62 and a sum over any vocabulary stays far below 2^64.
pub fn fixed_point(p: f64) -> u64 {
    if p > 0.0 {
        (p * FIXED_ONE) as u64
    } else {
        0
    }
}

/// ⌈top_p · 2^32⌉: the top-p threshold in units of 2^-32 (exact: the product only shifts the exponent).
pub fn top_p_threshold(top_p: f64) -> u64 {
    (top_p * 4_294_967_296.0).ceil() as u64
}

/// Does a prefix of mass `mass` reach the fraction tp32 · 2^-32 of the top-k mass `topk`?
/// mass · 2^32 ≥ tp32 · topk, in 128-bit integers (both sides < 2^96): no rounding anywhere.
pub fn reaches(mass: u64, tp32: u64, topk: u64) -> bool {
    ((mass as u128) << 32) >= tp32 as u128 * topk as u128
}

/// p = softmax(logits / T) in f64 (m = max, e = exp(x/T − m) with the canonical exp (`cpu::simd`,
/// never libm's), p = e / Σe summed left to right), as fixed-point masses (step 2 above).  T > 0.
pub fn fixed_point_probs<T: Float>(logits: &[T], temperature: f64) -> Vec<u64> {
    let (_, e, total) = shifted_exps(logits, temperature);
    masses(&e, total)
}

/// The fixed-point masses of the shifted exponentials `e` summing to `total`.
fn masses(e: &[f64], total: f64) -> Vec<u64> {
    e.iter().map(|&e| fixed_point(e / total)).collect()
}

/// log softmax(x / T) of a logit x, given the row's (m, Σe) of [`shifted_exps`].
fn log_softmax_at(x: f64, temperature: f64, m: f64, total: f64) -> f64 {
    x * (1.0 / temperature) - m - total.ln()
}

/// (m, e, Σe) of softmax(logits / T) in f64: m = max x/T, e = exp(x/T − m) (canonical exp), Σe left to
/// right. The sampling kernel computes the same three from the same f32 logits (its sums in a tree).
fn shifted_exps<T: Float>(logits: &[T], temperature: f64) -> (f64, Vec<f64>, f64) {
    let inv_t = 1.0 / temperature;
    let m = logits.iter().fold(f64::NEG_INFINITY, |m, x| m.max(x.to_f64() * inv_t));
    let mut e: Vec<f64> = logits.iter().map(|x| x.to_f64() * inv_t - m).collect();
    crate::cpu::simd::exp_in_place(&mut e);
    let total = e.iter().sum();
    (m, e, total)
}

/// The sampler's log-probability of `token`: log softmax(logits / T)[token] in f64, of the distribution
/// before top-k and top-p (the quantity a scorer computes at temperature T, SPEC §5.1), so that the
/// trainer can compare the policy that sampled with the one that scores (`sampler_logp_mismatch`).
/// Greedy (T = 0) gives 0: the arg-max is drawn with certainty. The sampling kernel writes the same
/// number from its own (m, Σe) (`cuda/sampling.cu`).
pub fn sampled_logp<T: Float>(logits: &[T], temperature: f64, token: u32) -> f64 {
    if temperature == 0.0 {
        return 0.0;
    }
    let (m, _, total) = shifted_exps(logits, temperature);
    log_softmax_at(logits[token as usize].to_f64(), temperature, m, total)
}

/// The masses of the kept tokens (steps 2-4 above; 0 outside the kept set).  T > 0.
///
/// Only the part of the ranking that matters is ordered: selection (O(v)) finds the top-k set, and the
/// top-p walk sorts the ranking's first `c` entries, `c` = 256, 2048, … until their mass reaches the
/// threshold. The ranking is a total order, so that prefix is exactly a full sort's (a full sort of
/// 151,936 masses per row per step cost ~20 ms; a peaked distribution needs a few entries).
pub fn kept_masses<T: Float>(logits: &[T], params: &SamplingParams) -> Vec<u64> {
    kept_of(fixed_point_probs(logits, params.temperature), params)
}

/// [`kept_masses`] of the fixed-point masses `f`.
fn kept_of(f: Vec<u64>, params: &SamplingParams) -> Vec<u64> {
    let v = f.len();
    let k = if params.top_k == 0 { v } else { params.top_k.min(v) };
    if v == 0 || (k == v && params.top_p >= 1.0) {
        return f; // both filters off: every token is kept
    }
    let rank = |a: &usize, b: &usize| f[*b].cmp(&f[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..v).collect();
    if k < v {
        order.select_nth_unstable_by(k - 1, rank); // order[..k]: the top-k set, in no order
    }
    let topk: u64 = order[..k].iter().map(|&i| f[i]).sum();
    let mut kept = k;
    if params.top_p < 1.0 {
        let tp32 = top_p_threshold(params.top_p);
        let mut c = k.min(256);
        kept = loop {
            if c < k {
                order[..k].select_nth_unstable_by(c - 1, rank);
            }
            order[..c].sort_unstable_by(rank);
            let mut mass = 0;
            let reached = order[..c].iter().position(|&i| {
                mass += f[i];
                reaches(mass, tp32, topk)
            });
            match reached {
                Some(j) => break j + 1,
                None if c == k => break k, // unreachable: the whole top-k set reaches any top_p ≤ 1
                None => c = k.min(c.saturating_mul(8)),
            }
        };
    }
    let mut out = vec![0; v];
    for &i in &order[..kept] {
        out[i] = f[i];
    }
    out
}

/// [`kept_masses`] written the plain way: the whole vocabulary sorted by the ranking, then the top-k
/// cut and the top-p walk. The readable definition (and the bench's baseline); `kept_masses` must
/// keep exactly the same tokens (tests/generation.rs).
pub fn kept_masses_sorted<T: Float>(logits: &[T], params: &SamplingParams) -> Vec<u64> {
    let f = fixed_point_probs(logits, params.temperature);
    let v = f.len();
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by(|&a, &b| f[b].cmp(&f[a]).then(a.cmp(&b)));
    let k = if params.top_k == 0 { v } else { params.top_k.min(v) };
    let topk: u64 = order[..k].iter().map(|&i| f[i]).sum();
    let (tp32, mut mass, mut kept) = (top_p_threshold(params.top_p), 0u64, 0);
    while kept < k {
        mass += f[order[kept]];
        kept += 1;
        if params.top_p < 1.0 && reaches(mass, tp32, topk) {
            break;
        }
    }
    let mut out = vec![0; v];
    for &i in &order[..kept] {
        out[i] = f[i];
    }
    out
}

/// The final sampling distribution over the vocabulary: f_i / F on the kept set, 0 elsewhere (a
/// one-hot arg-max at temperature 0, or when F = 0).
pub fn sampling_probs<T: Float>(logits: &[T], params: &SamplingParams) -> Vec<f64> {
    let v = logits.len();
    let mut probs = vec![0.0; v];
    if v == 0 {
        return probs;
    }
    let kept = if params.temperature == 0.0 { Vec::new() } else { kept_masses(logits, params) };
    let total: u64 = kept.iter().sum();
    if total == 0 {
        probs[argmax(logits)] = 1.0;
        return probs;
    }
    for (p, &f) in probs.iter_mut().zip(&kept) {
        *p = f as f64 / total as f64;
    }
    probs
}

/// Draws a token from [`sampling_probs`] with the uniform `u` ∈ [0, 1), read as its 53 bits
/// u53 = ⌊u · 2^53⌋ (exact for `rng::uniform`): the first kept id, in id order, whose cumulative mass
/// exceeds ⌊u53 · F / 2^53⌋ < F.
pub fn sample<T: Float>(logits: &[T], params: &SamplingParams, u: f64) -> u32 {
    sample_with_logp(logits, params, u).0
}

/// [`sample`] and the drawn token's [`sampled_logp`], from one softmax of the row.
pub fn sample_with_logp<T: Float>(logits: &[T], params: &SamplingParams, u: f64) -> (u32, f64) {
    if params.temperature == 0.0 || logits.is_empty() {
        return (argmax(logits) as u32, 0.0);
    }
    let (m, e, sum) = shifted_exps(logits, params.temperature);
    let kept = kept_of(masses(&e, sum), params);
    let logp = |i: usize| log_softmax_at(logits[i].to_f64(), params.temperature, m, sum);
    let total: u64 = kept.iter().sum();
    if total == 0 {
        let i = argmax(logits); // NaN or +inf logits: no token has mass
        return (i as u32, logp(i));
    }
    let u53 = ((u * 9_007_199_254_740_992.0) as u64).min((1 << 53) - 1); // 2^53; u < 1
    let target = ((u53 as u128 * total as u128) >> 53) as u64;
    let mut cum = 0;
    for (i, &f) in kept.iter().enumerate() {
        cum += f;
        if cum > target {
            return (i as u32, logp(i));
        }
    }
    unreachable!("sample: target {target} ≥ kept mass {total}")
}
