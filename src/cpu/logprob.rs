//! Log-softmax over the vocabulary and gather at the taken token, with a sampling temperature:
//! logp[r] = log softmax(logits[r, :] / temp)[target[r]]  (SPEC §1: the policy is softmax(logits/0.6)).

use super::{simd, Float};
use rayon::prelude::*;

/// Log-sum-exp of one row, max-shifted so it never overflows (canonical max, exp and sum).
pub fn logsumexp<T: Float>(row: &[T]) -> T {
    scaled_logsumexp(row, T::ONE)
}

/// log Σ_j exp(row[j]·s) for s > 0, with m = max_j row[j]·s: m + ln Σ_j exp(row[j]·s − m).
fn scaled_logsumexp<T: Float>(row: &[T], s: T) -> T {
    let (m, sum) = simd::scaled_exp_sum(row, s);
    if m == T::NEG_INFINITY {
        return m;
    }
    m + sum.ln()
}

/// logp[r] = z[r, target[r]] − logsumexp(z[r, :]),  z = logits / temp;  lse[r] kept for the backward.
/// logits: [n, v]   targets, logp, lse: [n]
pub fn logprob_fwd<T: Float>(logp: &mut [T], lse: &mut [T], logits: &[T], targets: &[u32], v: usize, temp: f64) {
    let n = targets.len();
    assert!(logp.len() == n && lse.len() == n && logits.len() == n * v, "logprob_fwd: bad lengths");
    if v == 0 {
        return;
    }
    let inv_t = T::from_f64(1.0 / temp);
    // rows in parallel, each computed by one thread in a fixed order (thread-count independent)
    (logp, lse, logits.par_chunks(v), targets).into_par_iter().for_each(|(logp, lse, row, &target)| {
        *lse = scaled_logsumexp(row, inv_t);
        *logp = row[target as usize] * inv_t - *lse;
    });
}

/// Backward of [`logprob_fwd`]; dlogits accumulates (`+=`):
/// dlogits[r, j] += dlogp[r] · (1[j = target[r]] − softmax(z[r])_j) / temp
/// (the softmax term as one FMA per entry: dl = fma(−g, exp(z − lse), dl), g = dlogp / temp)
pub fn logprob_bwd<T: Float>(dlogits: &mut [T], dlogp: &[T], logits: &[T], lse: &[T], targets: &[u32], v: usize, temp: f64) {
    let n = targets.len();
    assert!(dlogits.len() == n * v && dlogp.len() == n && lse.len() == n && logits.len() == n * v);
    if v == 0 {
        return;
    }
    let inv_t = T::from_f64(1.0 / temp);
    (dlogits.par_chunks_mut(v), dlogp, logits.par_chunks(v), lse, targets).into_par_iter().for_each(|(dl, &dlp, l, &lse, &target)| {
        let g = dlp * inv_t;
        if g == T::ZERO {
            return;
        }
        simd::sub_scaled_softmax(dl, l, g, inv_t, lse);
        dl[target as usize] += g;
    });
}
