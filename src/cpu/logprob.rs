//! Log-softmax over the vocabulary and gather at the taken token, with a sampling temperature:
//! logp[r] = log softmax(logits[r, :] / temp)[target[r]]  (SPEC §1: the policy is softmax(logits/0.6)).

use super::Float;
use rayon::prelude::*;

/// Log-sum-exp of one row, max-shifted so it never overflows.
pub fn logsumexp<T: Float>(row: &[T]) -> T {
    let m = row.iter().copied().fold(T::NEG_INFINITY, T::max);
    if m == T::NEG_INFINITY {
        return m;
    }
    m + row.iter().map(|&x| (x - m).exp()).sum::<T>().ln()
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
    (logp, lse, logits.par_chunks(v), targets).into_par_iter().for_each_init(
        || vec![T::ZERO; v],
        |z, (logp, lse, row, &target)| {
            for (zi, &l) in z.iter_mut().zip(row) {
                *zi = l * inv_t;
            }
            *lse = logsumexp(z);
            *logp = z[target as usize] - *lse;
        },
    );
}

/// Backward of [`logprob_fwd`]; dlogits accumulates (`+=`):
/// dlogits[r, j] += dlogp[r] · (1[j = target[r]] − softmax(z[r])_j) / temp
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
        for j in 0..v {
            dl[j] -= g * (l[j] * inv_t - lse).exp();
        }
        dl[target as usize] += g;
    });
}
