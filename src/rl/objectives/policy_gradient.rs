//! GRPO / RLOO advantages and the PPO clipped ratio surrogate (SPEC §6.1, §6.2, §7).

use super::rewards::{
    alp_rewards, grpo_lp_rewards, hapo_rewards_keyed, kimi_length_rewards, mean_and_std, rloo_lp_rewards,
    shorter_better_rewards, HapoHistory,
};
use super::{groups_of, Baseline, Batch, Estimator, Hyper, Outcomes, StdKind};
use crate::cpu::math;
use crate::error::check_len;
use crate::{Error, Result};

/// Result of a policy-gradient surrogate on one batch (`n` responses, `T` tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct PgOutput {
    /// Surrogate objective J = (1/n) Σ_i (1/L_i) Σ_t min(ρA, clip(ρ)A) (to be maximised).
    pub j: f64,
    /// k1 KL estimate over every token (diagnostic; not in the loss).
    pub kl: f64,
    /// Always 0: these baselines carry no KL term here.
    pub penalty: f64,
    /// −J.
    pub loss: f64,
    /// `[T]` ∂loss/∂ℓ_{i,t}, flat like `Batch::logp`.
    pub dlogp: Vec<f64>,
    /// `[n]` shaped rewards (empty when the caller passed advantages directly).
    pub rewards: Vec<f64>,
    /// `[n]` advantages A_i.
    pub advantages: Vec<f64>,
    /// Tokens whose gradient the clip removed.
    pub clipped_tokens: usize,
}

/// GRPO advantages A_i = (r_i − mean_g r)/(std_g r + eps), per group.  group, rewards: `[n]`
/// A group of one uses mean 0, std 1 (verl); std + eps = 0 (equal rewards, eps = 0) gives A = 0.
pub fn grpo_advantages(group: &[usize], rewards: &[f64], eps: f64, std: StdKind) -> Result<Vec<f64>> {
    check_advantage_input(group, rewards)?;
    let mut adv = vec![0.0; rewards.len()];
    for g in groups_of(group) {
        let r: Vec<f64> = g.members.iter().map(|&i| rewards[i]).collect();
        let (mean, sd) = if r.len() == 1 { (0.0, 1.0) } else { mean_and_std(&r, std == StdKind::Sample) };
        let denom = sd + eps;
        for (&i, &ri) in g.members.iter().zip(&r) {
            adv[i] = if denom > 0.0 { (ri - mean) / denom } else { 0.0 };
        }
    }
    Ok(adv)
}

/// RLOO advantages A_i = r_i − (Σ_{j∈g} r_j − r_i)/(K − 1), per group; a group of one gets 0.  `[n]`
pub fn rloo_advantages(group: &[usize], rewards: &[f64]) -> Result<Vec<f64>> {
    check_advantage_input(group, rewards)?;
    let mut adv = vec![0.0; rewards.len()];
    for g in groups_of(group) {
        let k = g.members.len();
        if k < 2 {
            continue;
        }
        let total: f64 = g.members.iter().map(|&i| rewards[i]).sum();
        for &i in &g.members {
            adv[i] = rewards[i] - (total - rewards[i]) / (k - 1) as f64;
        }
    }
    Ok(adv)
}

fn check_advantage_input(group: &[usize], rewards: &[f64]) -> Result<()> {
    check_len("advantages", "rewards", rewards.len(), group.len())?;
    if let Some(i) = rewards.iter().position(|r| !r.is_finite()) {
        return Err(Error::input(format!("advantages: reward {i} = {} is not finite", rewards[i])));
    }
    Ok(())
}

/// Shaped rewards and advantages of a baseline over a whole step's outcomes (compute once per
/// rollout batch, then slice the advantages per chunk for [`clipped_surrogate`]).
/// HAPO reads `history` and updates it in place; the other baselines leave it untouched.
/// Returns (rewards `[n]`, advantages `[n]`).
pub fn baseline_advantages(
    baseline: Baseline,
    o: &Outcomes,
    hyper: &Hyper,
    history: &mut HapoHistory,
) -> Result<(Vec<f64>, Vec<f64>)> {
    baseline_advantages_keyed(baseline, o, o.group, hyper, history)
}

/// [`baseline_advantages`] with HAPO's history keyed by `keys[i]` (the problem of response i) rather
/// than by group id (see [`super::hapo_rewards_keyed`]).  keys: `[n]`
pub fn baseline_advantages_keyed(
    baseline: Baseline,
    o: &Outcomes,
    keys: &[usize],
    hyper: &Hyper,
    history: &mut HapoHistory,
) -> Result<(Vec<f64>, Vec<f64>)> {
    hyper.validate()?;
    let rewards = match baseline {
        Baseline::Grpo => {
            o.validate()?;
            o.correct.iter().map(|&c| if c { 1.0 } else { 0.0 }).collect()
        }
        Baseline::GrpoLp => grpo_lp_rewards(o, hyper.grpo_alpha)?,
        Baseline::RlooLp => rloo_lp_rewards(o, hyper.rloo_alpha)?,
        Baseline::Alp => alp_rewards(o, hyper.alp_beta)?,
        Baseline::Hapo => {
            let (r, updated) = hapo_rewards_keyed(o, keys, hyper.hapo_w, history)?;
            *history = updated;
            r
        }
        Baseline::ShorterBetter => shorter_better_rewards(o, hyper.sb_alpha, hyper.sb_beta)?,
        Baseline::Kimi => {
            let len_reward = kimi_length_rewards(o)?;
            o.correct
                .iter()
                .zip(&len_reward)
                .map(|(&c, lr)| if c { 1.0 } else { 0.0 } + hyper.kimi_weight * lr)
                .collect()
        }
    };
    let advantages = match baseline.estimator() {
        Estimator::Grpo => grpo_advantages(o.group, &rewards, hyper.grpo_eps, hyper.grpo_std)?,
        Estimator::Rloo => rloo_advantages(o.group, &rewards)?,
    };
    Ok((rewards, advantages))
}

/// PPO clipped ratio surrogate (sequence mean, then mean over the n responses; SPEC §6.2).
/// advantages: `[n]` constants.  clip_eps: `None` = the plain ratio ρA (no clipping).
///   ρ = exp(ℓ − ℓ^old);  J = (1/n) Σ_i (1/L_i) Σ_t min(ρA_i, clip(ρ, 1−ε, 1+ε)A_i);  loss = −J
///   ∂loss/∂ℓ_{i,t} = −ρ A_i/(n L_i), or 0 where the clipped branch is the strict minimum.
/// A zero advantage contributes exactly 0 (no inf·0 when ρ overflows).
pub fn clipped_surrogate(batch: &Batch, advantages: &[f64], clip_eps: Option<f64>) -> Result<PgOutput> {
    batch.validate()?;
    let o = &batch.outcomes;
    let n = o.n();
    check_len("clipped_surrogate", "advantages", advantages.len(), n)?;
    if let Some(i) = advantages.iter().position(|a| !a.is_finite()) {
        return Err(Error::input(format!("clipped_surrogate: advantage {i} = {} is not finite", advantages[i])));
    }
    if let Some(eps) = clip_eps {
        if !(eps > 0.0 && eps < 1.0) {
            return Err(Error::input(format!("clipped_surrogate: clip_eps = {eps} must be in (0, 1)")));
        }
    }
    let off = batch.offsets();
    let mut dlogp = vec![0.0; batch.num_tokens()];
    let mut j = 0.0;
    let mut clipped_tokens = 0;
    for i in 0..n {
        let a = advantages[i];
        if a == 0.0 {
            continue; // dlogp stays 0
        }
        let scale = 1.0 / (n as f64 * o.len[i] as f64);
        let mut seq_sum = 0.0;
        let tokens = off[i]..off[i + 1];
        let (logp, old_logp) = (&batch.logp[tokens.clone()], &batch.old_logp[tokens.clone()]);
        for ((d, &lp), &old) in dlogp[tokens].iter_mut().zip(logp).zip(old_logp) {
            let ratio = math::exp(lp - old);
            // min(ρA, clip(ρ)A) picks the clipped branch only outside [1−ε, 1+ε] on the side of A's sign
            let clip_bound = match clip_eps {
                Some(eps) if a > 0.0 && ratio > 1.0 + eps => Some(1.0 + eps),
                Some(eps) if a < 0.0 && ratio < 1.0 - eps => Some(1.0 - eps),
                _ => None,
            };
            match clip_bound {
                Some(bound) => {
                    seq_sum += bound * a;
                    clipped_tokens += 1;
                }
                None => {
                    seq_sum += ratio * a;
                    *d = -ratio * a * scale;
                }
            }
        }
        j += seq_sum / o.len[i] as f64;
    }
    j /= n as f64;
    if !(j.is_finite() && dlogp.iter().all(|d| d.is_finite())) {
        return Err(Error::input(format!(
            "clipped_surrogate: the surrogate or its gradient overflows (J = {j}): a log-ratio ℓ − ℓ^old is too large"
        )));
    }
    Ok(PgOutput {
        j,
        kl: batch.k1_kl()?,
        penalty: 0.0,
        loss: -j,
        dlogp,
        rewards: Vec::new(),
        advantages: advantages.to_vec(),
        clipped_tokens,
    })
}

/// One batch end to end: shaped rewards, advantages, clipped surrogate (clip = `hyper.clip_eps`).
pub fn policy_gradient(
    batch: &Batch,
    baseline: Baseline,
    hyper: &Hyper,
    history: &mut HapoHistory,
) -> Result<PgOutput> {
    let (rewards, advantages) = baseline_advantages(baseline, &batch.outcomes, hyper, history)?;
    let mut out = clipped_surrogate(batch, &advantages, hyper.clip_eps)?;
    out.rewards = rewards;
    Ok(out)
}

/// GRPO-LP with GRPO advantages and the surrogate (clip = `hyper.clip_eps`): with `clip_eps: None`
/// this is the fixture's `grpo` method.
pub fn grpo(batch: &Batch, hyper: &Hyper) -> Result<PgOutput> {
    policy_gradient(batch, Baseline::GrpoLp, hyper, &mut HapoHistory::default())
}
