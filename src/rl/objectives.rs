//! RL objectives on per-token log-probs, in f64: DRPO, DisCO (log-L), GRPO / RLOO with the PPO
//! clipped surrogate, and the length-penalty baselines (GRPO-LP, RLOO-LP, ALP, HAPO, ShorterBetter,
//! Kimi). This is the reference the trainer and the CUDA DRPO kernel are checked against
//! (SPEC.md §2–§7; test vectors §10; fixture `tests/fixtures/*/objectives.json`).
//!
//! # Inputs
//!
//! A batch of `n` responses ([`Batch`], flat, response-major):
//!
//! ```text
//! group[n]     any usize; a group = all responses with the same id (members need not be adjacent,
//!              sizes may differ). Q = number of distinct ids, invalid groups included.
//! correct[n]   c_i ∈ {0,1} from the grader
//! finished[n]  the response stopped on EOS (only RLOO-LP reads it: a truncated answer counts as wrong)
//! len[n]       L_i = valid tokens, EOS included, 1 ≤ L_i ≤ C
//! max_len      C = the generation budget (padded response width), the same for the whole batch
//! logp[T]      ℓ_{i,t} = log π_θ(o_{i,t} | …), concatenated: response i is logp[off_i .. off_i + L_i],
//!              off_i = Σ_{k<i} L_k,  T = Σ_i L_i
//! old_logp[T]  ℓ^old_{i,t} under the behaviour policy, same layout
//! ```
//!
//! Groups are visited in ascending id order ([`groups_of`]; the fixture's order), so sums over groups
//! and per-group diagnostics follow it. Every gradient is returned in the same flat `[T]` layout:
//! `dlogp[off_i + t] = ∂loss/∂ℓ_{i,t}`.
//! All of `correct`, `len`, `max_len`, `old_logp`, rewards, weights and advantages are constants.
//!
//! # DisCO / DRPO ([`drpo`], [`disco`]) — SPEC §2–§4
//!
//! ```text
//! score          s_i  = (1/L_i) Σ_t ℓ_{i,t}
//! valid group    P = {i ∈ g : c_i = 1} ≠ ∅  and  N = {i ∈ g : c_i = 0} ≠ ∅ ; others give J_g = 0
//! length reward  r_i  = 1 − L_i / C                                         (every response)
//! weights        ŵ_i  = exp((r_i − max_P r)/λ) / Σ_{k∈P} exp((r_k − max_P r)/λ)      i ∈ P
//!                       (max-shifted softmax of r/λ; λ = +∞ gives ŵ_i = 1/|P|, which is DisCO)
//! negatives      LME  = τ · log( (1/|N|) Σ_{j∈N} exp(s_j/τ) )
//!                     = m + τ · log1p( (1/|N|) Σ_{j∈N} expm1((s_j − m)/τ) ),   m = max_N s
//! group term     J_g  = Σ_{i∈P} ŵ_i s_i − LME
//! objective      J    = (1/Q) Σ_{valid g} J_g
//! KL (k1)        K    = (1/T) Σ_i Σ_t (ℓ^old_{i,t} − ℓ_{i,t})       (all tokens, every group)
//! penalty        Pen  = (β/2) · [K − δ]_+²
//! loss           loss = −J + Pen
//! gradient       ∂J_g/∂s_i = ŵ_i (i ∈ P),   ∂J_g/∂s_j = −exp((s_j − m)/τ) / Σ_{k∈N} exp((s_k − m)/τ) (j ∈ N)
//!                ∂loss/∂ℓ_{i,t} = −(1/Q) · (∂J_g/∂s_i) / L_i  −  β[K − δ]_+ / T
//! ```
//!
//! `J` is the true objective, not the value of the authors' detach-trick surrogate (SPEC §3.3);
//! the gradient is the same. The chunk scale of SPEC §5.1 (1/8) is the trainer's business.
//!
//! # Policy-gradient baselines ([`baseline_advantages`], [`clipped_surrogate`], [`policy_gradient`])
//!
//! Rewards from correctness and length, per group (SPEC §6–§7; `h` = HAPO history, K = group size):
//!
//! ```text
//! GRPO           r_i = c_i
//! GRPO-LP        r_i = c_i · (1 − α L_i / C)                                       α = grpo_alpha
//! RLOO-LP        S = {i : c_i ∧ finished_i},  μ = mean_S L,  σ = population-std_S L
//!                r_i = 1 − α · sigmoid((L_i − μ)/(σ + 1e-7)) for i ∈ S, else 0     α = rloo_alpha
//! ALP            r_i = c_i − β · max(p, 1/K) · L_i,   p = (1/K) Σ_k c_k             β = alp_beta
//! HAPO           x = cos((L_i/h)·π/2) if L_i < 2h else −1;  f = 0 if h unknown,
//!                f = max(−0.7, x) if c_i else min(0, x);   r_i = c_i + w·f          w = hapo_w
//!                afterwards h ← min(h, min length of this batch's correct responses of the problem)
//!                (h is keyed by group id, or by a separate problem key: [`baseline_advantages_keyed`])
//! ShorterBetter  SOL = min_{c=1} L (no correct: mean L);  r_i = α c_i − β |L_i − SOL|
//! Kimi           λ_i = 0.5 − (L_i − Lmin)/(Lmax − Lmin) (0 if Lmax = Lmin);
//!                r_i = c_i + weight · (λ_i if c_i else min(0, λ_i))
//! ```
//!
//! Advantages (constants), per group g of size K:
//!
//! ```text
//! GRPO   A_i = (r_i − mean_g r) / (std_g r + ε)     std: sample (÷(K−1), verl) or population (÷K);
//!        a group of one has mean 0, std 1 (verl);  std + ε = 0 (all equal, ε = 0) gives A = 0
//! RLOO   A_i = r_i − (Σ_{j∈g} r_j − r_i)/(K − 1);   a group of one has A = 0
//! ```
//!
//! Clipped surrogate (sequence mean, then batch mean; SPEC §6.2), optional clipping:
//!
//! ```text
//! ρ_{i,t} = exp(ℓ_{i,t} − ℓ^old_{i,t})
//! J       = (1/n) Σ_i (1/L_i) Σ_t min(ρ_{i,t} A_i, clip(ρ_{i,t}, 1−ε, 1+ε) A_i)     (no clip: ρ A_i)
//! loss    = −J                      (no KL term; `kl` = K above is reported as a diagnostic)
//! ∂loss/∂ℓ_{i,t} = −(1/n)(1/L_i) A_i ρ_{i,t}   unless clipped (A_i > 0 ∧ ρ > 1+ε, or A_i < 0 ∧ ρ < 1−ε): 0
//! ```
//!
//! The fixture's `grpo` is GRPO-LP + GRPO advantages (sample std) + surrogate without clipping.
//!
//! # Edge cases (decisions)
//!
//! * A response of length 0, a length above `max_len`, `max_len = 0`, an empty batch, or a
//!   non-finite log-prob is an error ([`Error::Input`]), never a silent NaN: with EOS counted every
//!   generated response has L ≥ 1, so L = 0 is a caller bug.
//! * A zero advantage contributes exactly 0 to J and to the gradient, even if ρ overflows.
//! * NaN or ±inf never comes out of finite input: where finite inputs overflow (log-probs near
//!   ±f64::MAX in a score, the KL or the loss; a log-ratio ℓ − ℓ^old above ~709 making ρ infinite in
//!   the surrogate), the result is an [`Error::Input`] instead.

use std::collections::BTreeMap;

use crate::error::check_len;
use crate::{Error, Result};

mod cases;
mod discriminative;
mod policy_gradient;
mod rewards;

pub use cases::{evaluate_cases, parse_case, run_objective_file, Case};
pub use discriminative::{disco, drpo, length_weights, log_mean_exp, DiscoOutput, GroupStats};
pub use policy_gradient::{
    baseline_advantages, baseline_advantages_keyed, clipped_surrogate, grpo, grpo_advantages, policy_gradient,
    rloo_advantages, PgOutput,
};
pub use rewards::{
    alp_rewards, grpo_lp_rewards, hapo_rewards, hapo_rewards_keyed, kimi_length_rewards, rloo_lp_rewards,
    shorter_better_rewards, HapoHistory,
};

/// What the grader and the length shaping see of `n` responses (no log-probs).
#[derive(Clone, Copy, Debug)]
pub struct Outcomes<'a> {
    /// `[n]` group (question) id; HAPO also uses it as the problem key of its history unless the
    /// caller gives other keys ([`baseline_advantages_keyed`]).
    pub group: &'a [usize],
    /// `[n]` the grader's verdict.
    pub correct: &'a [bool],
    /// `[n]` stopped on EOS (false = truncated at `max_len`). Only RLOO-LP reads it.
    pub finished: &'a [bool],
    /// `[n]` valid tokens, EOS included, in 1..=max_len.
    pub len: &'a [usize],
    /// C, the generation budget.
    pub max_len: usize,
}

impl Outcomes<'_> {
    /// Number of responses.
    pub fn n(&self) -> usize {
        self.len.len()
    }

    /// Checks slice lengths and 1 ≤ L_i ≤ C; the error names the response.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "objectives";
        let n = self.n();
        check_len(OP, "group", self.group.len(), n)?;
        check_len(OP, "correct", self.correct.len(), n)?;
        check_len(OP, "finished", self.finished.len(), n)?;
        if n == 0 {
            return Err(Error::input("objectives: empty batch (no responses)"));
        }
        if self.max_len == 0 {
            return Err(Error::input("objectives: max_len is 0"));
        }
        for (i, &l) in self.len.iter().enumerate() {
            if l == 0 {
                return Err(Error::input(format!("objectives: response {i}: length is 0 (EOS counts, so L ≥ 1)")));
            }
            if l > self.max_len {
                return Err(Error::input(format!(
                    "objectives: response {i}: length {l} exceeds max_len {}",
                    self.max_len
                )));
            }
        }
        Ok(())
    }

    /// DRPO length reward r_i = 1 − L_i / C.
    pub fn length_reward(&self, i: usize) -> f64 {
        1.0 - self.len[i] as f64 / self.max_len as f64
    }
}

/// A batch of responses with their token log-probs (see the module doc for the layout).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub outcomes: Outcomes<'a>,
    /// `[T]` current-policy log-probs ℓ, concatenated per response, T = Σ L_i.
    pub logp: &'a [f64],
    /// `[T]` behaviour-policy log-probs ℓ^old, same layout.
    pub old_logp: &'a [f64],
}

impl Batch<'_> {
    /// Total valid tokens T = Σ L_i.
    pub fn num_tokens(&self) -> usize {
        self.outcomes.len.iter().sum()
    }

    /// `[n+1]` start of each response in the flat token arrays; the last entry is T.
    pub fn offsets(&self) -> Vec<usize> {
        let mut off = Vec::with_capacity(self.outcomes.n() + 1);
        off.push(0);
        for &l in self.outcomes.len {
            off.push(off[off.len() - 1] + l);
        }
        off
    }

    /// Checks the outcomes, the token array lengths and that every log-prob is finite.
    pub fn validate(&self) -> Result<()> {
        self.outcomes.validate()?;
        let t = self.num_tokens();
        check_len("objectives", "logp", self.logp.len(), t)?;
        check_len("objectives", "old_logp", self.old_logp.len(), t)?;
        let off = self.offsets();
        for (name, values) in [("logp", self.logp), ("old_logp", self.old_logp)] {
            if let Some(k) = values.iter().position(|v| !v.is_finite()) {
                let i = off.partition_point(|&o| o <= k) - 1;
                return Err(Error::input(format!(
                    "objectives: response {i}: {name}[{}] = {} is not finite",
                    k - off[i],
                    values[k]
                )));
            }
        }
        Ok(())
    }

    /// `[n]` log-L scores s_i = (1/L_i) Σ_t ℓ_{i,t}. Finite log-probs can still overflow the sum
    /// (|ℓ| near f64::MAX): that is an error naming the response, never a silent ±inf.
    pub fn scores(&self) -> Result<Vec<f64>> {
        let off = self.offsets();
        (0..self.outcomes.n())
            .map(|i| {
                let s = self.logp[off[i]..off[i + 1]].iter().sum::<f64>() / self.outcomes.len[i] as f64;
                if s.is_finite() {
                    Ok(s)
                } else {
                    Err(Error::input(format!("objectives: response {i}: the mean log-prob overflows ({s}); log-probs are too large in magnitude")))
                }
            })
            .collect()
    }

    /// k1 estimate of KL(π_old ‖ π_θ): K = (1/T) Σ (ℓ^old − ℓ) over every token of the batch;
    /// an error when the sum overflows.
    pub fn k1_kl(&self) -> Result<f64> {
        let diff: f64 = self.old_logp.iter().zip(self.logp).map(|(o, l)| o - l).sum();
        let k = diff / self.num_tokens() as f64;
        if k.is_finite() {
            Ok(k)
        } else {
            Err(Error::input(format!("objectives: the KL estimate overflows ({k}); log-probs are too large in magnitude")))
        }
    }
}

/// Standard deviation used by the GRPO advantage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum StdKind {
    /// Divide by K − 1 (torch default, the verl implementation).
    #[default]
    Sample,
    /// Divide by K.
    Population,
}

/// Which reward shaping and advantage estimator a policy-gradient baseline uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Baseline {
    /// GRPO on the accuracy reward r = c (ALP with β = 0, HAPO with w = 0).
    Grpo,
    /// GRPO with r = c·(1 − α L/C), α = `grpo_alpha` (the fixture's `grpo`).
    GrpoLp,
    /// RLOO-LP (Arora & Zanette) with the RLOO advantage; α = `rloo_alpha` (0 = plain RLOO).
    RlooLp,
    /// ALP (adaptive length penalty), GRPO advantage; β = `alp_beta`.
    Alp,
    /// HAPO (history-aware, cosine / min mode), GRPO advantage; w = `hapo_w`.
    Hapo,
    /// ShorterBetter, GRPO advantage; `sb_alpha`, `sb_beta`.
    ShorterBetter,
    /// Accuracy + `kimi_weight` × Kimi-k1.5 length reward, GRPO advantage.
    Kimi,
}

/// Advantage estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Estimator {
    Grpo,
    Rloo,
}

impl Baseline {
    pub fn estimator(self) -> Estimator {
        match self {
            Baseline::RlooLp => Estimator::Rloo,
            _ => Estimator::Grpo,
        }
    }
}

/// Every hyper-parameter of the objectives; `Default` = SPEC values. In JSON a missing field takes its
/// default, and λ = +∞ is written as the string `"inf"` (JSON has no infinity; a number is read too).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Hyper {
    /// DRPO length temperature λ (SPEC §5.6: 0.1). `f64::INFINITY` = DisCO (uniform weights).
    #[serde(with = "lambda_json")]
    pub lambda: f64,
    /// Log-sum-exp temperature τ over the negatives (10).
    pub tau: f64,
    /// KL penalty coefficient β (1000): gradient β[K−δ]_+ ∇K.
    pub beta: f64,
    /// KL budget δ (1e-4).
    pub delta: f64,
    /// PPO clip ε (0.2); `None` = plain ratio surrogate (the fixture's `grpo`).
    pub clip_eps: Option<f64>,
    /// GRPO advantage ε added to the std (1e-6, verl).
    pub grpo_eps: f64,
    /// GRPO std convention (sample, verl).
    pub grpo_std: StdKind,
    /// GRPO-LP α in r = c(1 − α L/C) (0.5, the fixture's value).
    pub grpo_alpha: f64,
    /// RLOO-LP α (0.1, the default of Arora & Zanette's script; the DRPO sweep is 0.1/0.2/0.4).
    pub rloo_alpha: f64,
    /// ALP β (1e-8, the middle of the DRPO sweep 1e-9/1e-8/1e-7).
    pub alp_beta: f64,
    /// HAPO w (1.0, HAPO's own script; the DRPO sweep is 0.01/0.1/1).
    pub hapo_w: f64,
    /// ShorterBetter α (1.0).
    pub sb_alpha: f64,
    /// ShorterBetter β (0.001).
    pub sb_beta: f64,
    /// Weight of the Kimi length reward added to the accuracy reward (1.0).
    pub kimi_weight: f64,
}

impl Default for Hyper {
    fn default() -> Self {
        Hyper {
            lambda: 0.1,
            tau: 10.0,
            beta: 1000.0,
            delta: 1e-4,
            clip_eps: Some(0.2),
            grpo_eps: 1e-6,
            grpo_std: StdKind::Sample,
            grpo_alpha: 0.5,
            rloo_alpha: 0.1,
            alp_beta: 1e-8,
            hapo_w: 1.0,
            sb_alpha: 1.0,
            sb_beta: 0.001,
            kimi_weight: 1.0,
        }
    }
}

impl Hyper {
    /// Rejects values for which the formulas are undefined (the error names the field).
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, v: f64, why: &str| Err(Error::input(format!("hyper-parameter {field} = {v}: {why}")));
        if self.lambda.is_nan() || self.lambda <= 0.0 {
            return bad("lambda", self.lambda, "must be > 0 (+inf = DisCO)");
        }
        if !(self.tau.is_finite() && self.tau > 0.0) {
            return bad("tau", self.tau, "must be finite and > 0");
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return bad("beta", self.beta, "must be finite and ≥ 0");
        }
        if !self.delta.is_finite() {
            return bad("delta", self.delta, "must be finite");
        }
        if let Some(eps) = self.clip_eps {
            if !(eps > 0.0 && eps < 1.0) {
                return bad("clip_eps", eps, "must be in (0, 1)");
            }
        }
        if !(self.grpo_eps.is_finite() && self.grpo_eps >= 0.0) {
            return bad("grpo_eps", self.grpo_eps, "must be finite and ≥ 0");
        }
        for (field, v) in [
            ("grpo_alpha", self.grpo_alpha),
            ("rloo_alpha", self.rloo_alpha),
            ("alp_beta", self.alp_beta),
            ("hapo_w", self.hapo_w),
            ("sb_alpha", self.sb_alpha),
            ("sb_beta", self.sb_beta),
            ("kimi_weight", self.kimi_weight),
        ] {
            if !v.is_finite() {
                return bad(field, v, "must be finite");
            }
        }
        Ok(())
    }
}

/// λ in JSON: a finite number as a number, ±∞ as `"inf"` / `"-inf"` (NaN as `"nan"`, which
/// validation rejects); read back from a number or one of those strings (`"infinity"`, `"+inf"` too).
pub(crate) mod lambda_json {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        match *x {
            x if x.is_finite() => s.serialize_f64(x),
            x if x.is_nan() => s.serialize_str("nan"),
            x if x > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(x) => Ok(x),
            NumberOrText::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                _ => Err(D::Error::custom(format!("lambda: expected a number or \"inf\", got \"{t}\""))),
            },
        }
    }
}

/// One group of a batch: its id and the indices of its members, in batch order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: usize,
    pub members: Vec<usize>,
}

/// Groups in ascending id order (the fixture's order; sums over groups follow it). Q = the length.
pub fn groups_of(group: &[usize]) -> Vec<Group> {
    let mut by_id: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &id) in group.iter().enumerate() {
        by_id.entry(id).or_default().push(i);
    }
    by_id.into_iter().map(|(id, members)| Group { id, members }).collect()
}
