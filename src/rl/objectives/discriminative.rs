//! DisCO (log-L score, LSE over negatives) and DRPO (length-weighted positives): one code path,
//! DisCO being DRPO with λ = +∞. Formulas: the parent module doc and SPEC §4.4–§4.7.

use super::{groups_of, Batch, Hyper};
use crate::cpu::math;
use crate::Result;

/// Per-group diagnostics of the discriminative objectives.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupStats {
    pub id: usize,
    /// Indices of the members in the batch.
    pub members: Vec<usize>,
    pub n_pos: usize,
    pub n_neg: usize,
    /// |P| ≥ 1 and |N| ≥ 1; invalid groups give J_g = 0 but count in Q.
    pub valid: bool,
    /// LME = τ log mean_N exp(s/τ); `None` for an invalid group.
    pub log_mean_exp_neg: Option<f64>,
    /// J_g = Σ_P ŵ s − LME (0 for an invalid group).
    pub j: f64,
}

/// Result of [`drpo`] / [`disco`] on one batch (`n` responses, `T` tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoOutput {
    /// True objective J = (1/Q) Σ_valid J_g (to be maximised).
    pub j: f64,
    /// k1 KL estimate K over every token of the batch.
    pub kl: f64,
    /// (β/2)[K − δ]_+².
    pub penalty: f64,
    /// −J + penalty.
    pub loss: f64,
    /// `[T]` ∂loss/∂ℓ_{i,t}, flat like `Batch::logp`.
    pub dlogp: Vec<f64>,
    /// `[n]` scores s_i.
    pub scores: Vec<f64>,
    /// `[n]` length rewards r_i = 1 − L_i/C (every response; only positives use them).
    pub length_rewards: Vec<f64>,
    /// `[n]` ŵ_i for positives of valid groups, 0 elsewhere (each valid group's sum is 1).
    pub weights: Vec<f64>,
    /// `[n]` ∂loss/∂s_i of the discriminative part = −(1/Q) ∂J_g/∂s_i (0 outside valid groups).
    pub dloss_ds: Vec<f64>,
    /// β[K − δ]_+: the penalty adds −kl_coef / T to every token's gradient.
    pub kl_coef: f64,
    /// Q = number of distinct groups (invalid ones included).
    pub num_groups: usize,
    /// T = Σ L_i.
    pub num_tokens: usize,
    /// One entry per group, in ascending id order.
    pub groups: Vec<GroupStats>,
}

/// DRPO objective (SPEC §4.4): positives weighted by the max-shifted softmax of r/λ.
pub fn drpo(batch: &Batch, hyper: &Hyper) -> Result<DiscoOutput> {
    discriminative(batch, hyper, hyper.lambda)
}

/// DisCO log-L objective (SPEC §3.1): plain mean over the positives, i.e. DRPO with λ = +∞.
pub fn disco(batch: &Batch, hyper: &Hyper) -> Result<DiscoOutput> {
    discriminative(batch, hyper, f64::INFINITY)
}

/// Self-normalised DRPO weights over the positives of one group.  r: `[|P|]` length rewards.
///   ŵ_i = exp((r_i − max r)/λ) / Σ_k exp((r_k − max r)/λ)
/// Shifting by the max keeps every exponent ≤ 0 (no overflow for any λ > 0, SPEC §4.7, TV-S);
/// λ = +∞ gives exactly 1/|P|. Empty input gives an empty vector.
pub fn length_weights(r: &[f64], lambda: f64) -> Vec<f64> {
    let r_max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = r.iter().map(|&ri| math::exp((ri - r_max) / lambda)).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|ei| ei / sum).collect()
}

/// τ-log-mean-exp over the negatives' scores and its gradient.  s: `[|N|]`, |N| ≥ 1.
///   LME = τ log((1/|N|) Σ_j exp(s_j/τ)) = m + τ · log1p((1/|N|) Σ_j expm1(d_j)),
///   d_j = (s_j − m)/τ ≤ 0,  m = max s
///   ∂LME/∂s_j = exp(d_j) / Σ_k exp(d_k)        (sums to 1)
/// Shifting the scores (not s/τ) keeps every exponent ≤ 0 and finite for any τ > 0; log1p/expm1
/// keep full precision when τ ≫ the spread of the scores (d_j ≈ 0, where log Σ exp − log|N| cancels).
pub fn log_mean_exp(s: &[f64], tau: f64) -> (f64, Vec<f64>) {
    assert!(!s.is_empty(), "log_mean_exp: no negatives");
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let d: Vec<f64> = s.iter().map(|&sj| (sj - m) / tau).collect();
    let mean_expm1 = d.iter().map(|&dj| math::exp_m1(dj)).sum::<f64>() / s.len() as f64; // in (−1, 0]
    let lme = m + tau * math::ln_1p(mean_expm1);
    let e: Vec<f64> = d.iter().map(|&dj| math::exp(dj)).collect();
    let sum: f64 = e.iter().sum(); // ≥ 1: the max term is exp(0)
    (lme, e.iter().map(|ej| ej / sum).collect())
}

fn discriminative(batch: &Batch, hyper: &Hyper, lambda: f64) -> Result<DiscoOutput> {
    hyper.validate()?;
    batch.validate()?;
    let o = &batch.outcomes;
    let n = o.n();
    let scores = batch.scores()?;
    let length_rewards: Vec<f64> = (0..n).map(|i| o.length_reward(i)).collect();

    let mut weights = vec![0.0; n];
    let mut dj_ds = vec![0.0; n]; // ∂J_g/∂s_i, before the 1/Q
    let mut stats = Vec::new();
    for g in groups_of(o.group) {
        let (pos, neg): (Vec<usize>, Vec<usize>) = g.members.iter().partition(|&&i| o.correct[i]);
        let valid = !pos.is_empty() && !neg.is_empty();
        let (mut log_mean_exp_neg, mut j_g) = (None, 0.0);
        if valid {
            let r_pos: Vec<f64> = pos.iter().map(|&i| length_rewards[i]).collect();
            let s_neg: Vec<f64> = neg.iter().map(|&j| scores[j]).collect();
            let w = length_weights(&r_pos, lambda);
            let (lme, soft) = log_mean_exp(&s_neg, hyper.tau);
            let positive_term: f64 = pos.iter().zip(&w).map(|(&i, wi)| wi * scores[i]).sum();
            for (&i, &wi) in pos.iter().zip(&w) {
                weights[i] = wi;
                dj_ds[i] = wi;
            }
            for (&j, &pj) in neg.iter().zip(&soft) {
                dj_ds[j] = -pj;
            }
            log_mean_exp_neg = Some(lme);
            j_g = positive_term - lme;
        }
        stats.push(GroupStats {
            id: g.id,
            members: g.members,
            n_pos: pos.len(),
            n_neg: neg.len(),
            valid,
            log_mean_exp_neg,
            j: j_g,
        });
    }

    let q = stats.len() as f64;
    let j = stats.iter().map(|g| g.j).sum::<f64>() / q;
    let num_tokens = batch.num_tokens();
    let kl = batch.k1_kl()?;
    let excess = (kl - hyper.delta).max(0.0);
    let penalty = 0.5 * hyper.beta * excess * excess;
    let kl_coef = hyper.beta * excess;

    // ∂K/∂ℓ_{i,t} = −1/T for every token, so the penalty shifts every token's gradient equally.
    let dloss_ds: Vec<f64> = dj_ds.iter().map(|d| -d / q).collect();
    let penalty_grad = -kl_coef / num_tokens as f64;
    let mut dlogp = Vec::with_capacity(num_tokens);
    for (i, &l) in o.len.iter().enumerate() {
        let per_token = dloss_ds[i] / l as f64 + penalty_grad;
        dlogp.extend(std::iter::repeat_n(per_token, l));
    }

    let loss = -j + penalty;
    if !(loss.is_finite() && kl_coef.is_finite() && dlogp.iter().all(|d| d.is_finite())) {
        return Err(crate::Error::input(format!(
            "objectives: the loss or its gradient overflows (J = {j}, penalty = {penalty}, β[K − δ]_+ = {kl_coef}) for finite inputs"
        )));
    }
    Ok(DiscoOutput {
        j,
        kl,
        penalty,
        loss,
        dlogp,
        scores,
        length_rewards,
        weights,
        dloss_ds,
        kl_coef,
        num_groups: stats.len(),
        num_tokens,
        groups: stats,
    })
}
