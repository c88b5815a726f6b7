//! Length-shaped rewards of the policy-gradient baselines (SPEC §6.3, §7). Each function maps the
//! outcomes of a batch to one reward per response; statistics are taken per group.

use std::collections::HashMap;
use std::f64::consts::FRAC_PI_2;

use super::{groups_of, Outcomes};
use crate::cpu::math;
use crate::error::check_len;
use crate::{Error, Result};

/// GRPO-LP: r_i = c_i · (1 − α L_i / C).  `[n]`
pub fn grpo_lp_rewards(o: &Outcomes, alpha: f64) -> Result<Vec<f64>> {
    o.validate()?;
    Ok((0..o.n()).map(|i| if o.correct[i] { 1.0 - alpha * o.len[i] as f64 / o.max_len as f64 } else { 0.0 }).collect())
}

/// RLOO-LP (SPEC §7.1): over S = {correct and finished} of each group, μ = mean L, σ = population
/// std of L;  r_i = 1 − α·sigmoid((L_i − μ)/(σ + 1e-7)) for i ∈ S, 0 otherwise.  `[n]`
pub fn rloo_lp_rewards(o: &Outcomes, alpha: f64) -> Result<Vec<f64>> {
    o.validate()?;
    let mut r = vec![0.0; o.n()];
    for g in groups_of(o.group) {
        let solved: Vec<usize> = g.members.iter().copied().filter(|&i| o.correct[i] && o.finished[i]).collect();
        if solved.is_empty() {
            continue;
        }
        let lens: Vec<f64> = solved.iter().map(|&i| o.len[i] as f64).collect();
        let (mu, sigma) = mean_and_std(&lens, false);
        for (&i, &l) in solved.iter().zip(&lens) {
            r[i] = 1.0 - alpha * sigmoid((l - mu) / (sigma + 1e-7));
        }
    }
    Ok(r)
}

/// ALP (SPEC §7.2): r_i = c_i − β · max(p, 1/K) · L_i with p the group's solve rate, K its size.  `[n]`
pub fn alp_rewards(o: &Outcomes, beta: f64) -> Result<Vec<f64>> {
    o.validate()?;
    let mut r = vec![0.0; o.n()];
    for g in groups_of(o.group) {
        let k = g.members.len() as f64;
        let solve_rate = g.members.iter().filter(|&&i| o.correct[i]).count() as f64 / k;
        let scale = beta * solve_rate.max(1.0 / k);
        for &i in &g.members {
            r[i] = indicator(o.correct[i]) - scale * o.len[i] as f64;
        }
    }
    Ok(r)
}

/// HAPO state: per problem (keyed by the caller's problem key, by default the group id), the
/// shortest correct length seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HapoHistory {
    pub shortest_correct: HashMap<usize, usize>,
}

/// HAPO (SPEC §7.3, cosine type, min mode), reading `history` before this batch updates it:
///   h known:  x = cos((L/h)·π/2) if L < 2h else −1;  f = max(−0.7, x) if correct else min(0, x)
///   h unknown: f = 0;      r_i = c_i + w·f
/// Returns the rewards `[n]` and the updated history h ← min(h, shortest correct length of the batch).
/// The history is keyed by group id; see [`hapo_rewards_keyed`] for another key.
pub fn hapo_rewards(o: &Outcomes, w: f64, history: &HapoHistory) -> Result<(Vec<f64>, HapoHistory)> {
    hapo_rewards_keyed(o, o.group, w, history)
}

/// [`hapo_rewards`] with the history keyed by `keys[i]` (the problem of response i) instead of its
/// group id: a trainer whose group ids are slots of a step keeps one history per problem across
/// steps. All members of a group must share a key.  keys: `[n]`
pub fn hapo_rewards_keyed(o: &Outcomes, keys: &[usize], w: f64, history: &HapoHistory) -> Result<(Vec<f64>, HapoHistory)> {
    o.validate()?;
    check_len("hapo_rewards", "keys", keys.len(), o.n())?;
    let mut r = vec![0.0; o.n()];
    let mut updated = history.clone();
    for g in groups_of(o.group) {
        let key = keys[g.members[0]];
        if let Some(&i) = g.members.iter().find(|&&i| keys[i] != key) {
            return Err(Error::input(format!(
                "hapo_rewards: group {} mixes problem keys {key} and {} (response {i})",
                g.id, keys[i]
            )));
        }
        let h = history.shortest_correct.get(&key).copied();
        for &i in &g.members {
            let f = match h {
                None => 0.0,
                Some(h) => {
                    let ratio = o.len[i] as f64 / h as f64;
                    let x = if ratio < 2.0 { math::cos(ratio * FRAC_PI_2) } else { -1.0 };
                    if o.correct[i] {
                        x.max(-0.7)
                    } else {
                        x.min(0.0)
                    }
                }
            };
            r[i] = indicator(o.correct[i]) + w * f;
        }
        if let Some(shortest) = g.members.iter().filter(|&&i| o.correct[i]).map(|&i| o.len[i]).min() {
            let entry = updated.shortest_correct.entry(key).or_insert(shortest);
            *entry = (*entry).min(shortest);
        }
    }
    Ok((r, updated))
}

/// ShorterBetter (SPEC §7.4): SOL = shortest correct length of the group (no correct answer: the
/// mean length);  r_i = α c_i − β |L_i − SOL|.  `[n]`
pub fn shorter_better_rewards(o: &Outcomes, alpha: f64, beta: f64) -> Result<Vec<f64>> {
    o.validate()?;
    let mut r = vec![0.0; o.n()];
    for g in groups_of(o.group) {
        let shortest_correct = g.members.iter().filter(|&&i| o.correct[i]).map(|&i| o.len[i]).min();
        let sol = match shortest_correct {
            Some(l) => l as f64,
            None => g.members.iter().map(|&i| o.len[i] as f64).sum::<f64>() / g.members.len() as f64,
        };
        for &i in &g.members {
            r[i] = alpha * indicator(o.correct[i]) - beta * (o.len[i] as f64 - sol).abs();
        }
    }
    Ok(r)
}

/// Kimi-k1.5 length reward alone (SPEC §7.7): λ_i = 0.5 − (L_i − Lmin)/(Lmax − Lmin) over the group
/// (all 0 when Lmax = Lmin); λ_i for a correct response, min(0, λ_i) for a wrong one.  `[n]`
/// The `Baseline::Kimi` reward is c_i + weight · this.
pub fn kimi_length_rewards(o: &Outcomes) -> Result<Vec<f64>> {
    o.validate()?;
    let mut r = vec![0.0; o.n()];
    for g in groups_of(o.group) {
        let l_min = g.members.iter().map(|&i| o.len[i]).min().unwrap_or(0);
        let l_max = g.members.iter().map(|&i| o.len[i]).max().unwrap_or(0);
        if l_max == l_min {
            continue;
        }
        for &i in &g.members {
            let lam = 0.5 - (o.len[i] - l_min) as f64 / (l_max - l_min) as f64;
            r[i] = if o.correct[i] { lam } else { lam.min(0.0) };
        }
    }
    Ok(r)
}

fn indicator(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// 1/(1 + e^{−x}) without overflow warnings: e^{−x} = +inf gives exactly 0.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + math::exp(-x))
    } else {
        let e = math::exp(x);
        e / (1.0 + e)
    }
}

/// Mean and standard deviation (sample ÷(K−1) or population ÷K) of a non-empty slice.
pub(super) fn mean_and_std(x: &[f64], sample: bool) -> (f64, f64) {
    let k = x.len() as f64;
    let mean = x.iter().sum::<f64>() / k;
    let ss: f64 = x.iter().map(|v| (v - mean) * (v - mean)).sum();
    let divisor = if sample { k - 1.0 } else { k };
    (mean, (ss / divisor).sqrt())
}
