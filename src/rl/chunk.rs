//! One chunk's objective (SPEC §5.1): what the trainer asks of a policy for each chunk of a
//! mini-batch ([`crate::policy::Policy::chunk_objective`]), and its host implementation.
//!
//! ```text
//! in:   the chunk's scored responses (log-probs ℓ where the policy keeps them), its Outcomes, ℓ^old,
//!       the loss (DRPO / DisCO with their hyper-parameters, or the clipped surrogate on the step's
//!       advantages) and the scale 1/chunks of the mini-batch mean
//! out:  ChunkResult (scalars and per-response numbers for the metrics) on the host, and
//!       scale · ∂loss/∂ℓ of every response token where the policy backpropagates it from
//! ```
//!
//! The host implementation ([`host_objective`]) is the CPU model's: `rl::objectives` in f64. A device
//! policy computes the same with `gpu::objective` and keeps the token gradient on the device.

use crate::error::{check_len, Error, Result};
use crate::rl::objectives::{self, groups_of, Batch, Hyper, Outcomes};

/// One chunk's numbers, as the trainer's metrics read them.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkResult {
    pub loss: f64,
    pub objective: f64,
    pub kl: f64,
    pub penalty: f64,
    /// DRPO/DisCO: ŵ of the positives of each valid group (each list sums to 1); empty for baselines
    pub positive_weights: Vec<Vec<f64>>,
    /// `[rows]` the objective's push on each response, the sign of its gradient step on the
    /// response's log-likelihood: > 0 up, < 0 down, 0 none. DRPO/DisCO: −∂loss/∂s_i of the
    /// discriminative part (the KL penalty's uniform pull towards π_old left out); baselines (no KL
    /// term): −Σ_t ∂loss/∂ℓ_{i,t} = (1/n) A_i · mean over unclipped tokens of ρ.
    pub push: Vec<f64>,
}

/// Which loss a chunk is scored with.
#[derive(Clone, Copy, Debug)]
pub enum ChunkLoss<'a> {
    /// DRPO with these hyper-parameters (DisCO: `lambda` = +∞, [`crate::rl::trainer::TrainConfig::effective_hyper`])
    Discriminative(&'a Hyper),
    /// The policy-gradient baselines: the clipped ratio surrogate on `advantages` (`[n]`, computed
    /// once per step on the host); `clip_eps: None` = the plain ratio.
    Surrogate { advantages: &'a [f64], clip_eps: Option<f64> },
}

/// What a chunk's objective reads besides its current log-probs.
#[derive(Clone, Copy, Debug)]
pub struct ChunkObjective<'a> {
    /// groups, correctness, lengths (response i's log-probs are `len[i]` long) and C
    pub outcomes: Outcomes<'a>,
    /// `[T]` ℓ^old, concatenated per response (the layout of [`Batch::old_logp`])
    pub old_logp: &'a [f64],
    pub loss: ChunkLoss<'a>,
    /// the factor on the token gradient: 1/(chunks of the mini-batch), SPEC §5.1's chunk mean
    pub scale: f64,
}

impl ChunkObjective<'_> {
    /// Checks what the objectives do not: the scale (finite and > 0, the push of a baseline is
    /// read back through it on a device) and that `logp` has the outcomes' shape.
    pub fn check(&self, logp: &[Vec<f64>]) -> Result<()> {
        const OP: &str = "chunk objective";
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::input(format!("{OP}: gradient scale {} must be finite and > 0", self.scale)));
        }
        check_len(OP, "responses", logp.len(), self.outcomes.n())?;
        for (i, (lp, &l)) in logp.iter().zip(self.outcomes.len).enumerate() {
            if lp.len() != l {
                return Err(Error::input(format!("{OP}: response {i} has {} log-probs but length {l}", lp.len())));
            }
        }
        Ok(())
    }
}

/// ŵ of the positives of each valid group (a correct and a wrong member), groups in ascending id,
/// members in batch order: `weights` is `[n]` ([`objectives::DiscoOutput::weights`]).
pub fn positive_weights(o: &Outcomes, weights: &[f64]) -> Vec<Vec<f64>> {
    groups_of(o.group)
        .iter()
        .filter(|g| g.members.iter().any(|&i| o.correct[i]) && g.members.iter().any(|&i| !o.correct[i]))
        .map(|g| g.members.iter().filter(|&&i| o.correct[i]).map(|&i| weights[i]).collect())
        .collect()
}

/// The chunk's objective on the host in f64 (`rl::objectives`): its numbers, and scale · ∂loss/∂ℓ
/// per response (`[n][L_i]`, the rows of [`crate::policy::Policy::backward_responses`]).
/// logp: `[n][L_i]` the current log-probs.
pub fn host_objective(logp: &[Vec<f64>], obj: &ChunkObjective) -> Result<(ChunkResult, Vec<Vec<f64>>)> {
    obj.check(logp)?;
    let flat: Vec<f64> = logp.concat();
    let batch = Batch { outcomes: obj.outcomes, logp: &flat, old_logp: obj.old_logp };
    let len = obj.outcomes.len;
    let (dlogp, result) = match obj.loss {
        ChunkLoss::Discriminative(hyper) => {
            let out = objectives::drpo(&batch, hyper)?;
            let positive_weights = positive_weights(&obj.outcomes, &out.weights);
            let push = out.dloss_ds.iter().map(|d| -d).collect();
            let r = ChunkResult { loss: out.loss, objective: out.j, kl: out.kl, penalty: out.penalty, positive_weights, push };
            (out.dlogp, r)
        }
        ChunkLoss::Surrogate { advantages, clip_eps } => {
            let out = objectives::clipped_surrogate(&batch, advantages, clip_eps)?;
            let mut at = 0;
            let push = len
                .iter()
                .map(|&l| {
                    at += l;
                    -out.dlogp[at - l..at].iter().sum::<f64>()
                })
                .collect();
            let r = ChunkResult { loss: out.loss, objective: out.j, kl: out.kl, penalty: out.penalty, positive_weights: Vec::new(), push };
            (out.dlogp, r)
        }
    };
    // flat [T] → per response, scaled by 1/chunks (the chunk mean of SPEC §5.1)
    let mut rows = Vec::with_capacity(len.len());
    let mut at = 0;
    for &l in len {
        rows.push(dlogp[at..at + l].iter().map(|d| d * obj.scale).collect::<Vec<f64>>());
        at += l;
    }
    Ok((result, rows))
}
