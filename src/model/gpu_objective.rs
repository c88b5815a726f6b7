//! The GPU model's chunk objective ([`crate::policy::Policy::chunk_objective`]): `gpu::objective`
//! on the chunk's f32 log-probs (f64 arithmetic inside), the token gradient left on the device for
//! [`GpuModel::backward_from_device`].
//!
//! What crosses the bus per chunk of n responses, q groups, T response tokens (NOTES.md, "The
//! objective on the device inside the trainer"):
//! ```text
//! up     ℓ^old as f32 (4T bytes); the group bookkeeping of DeviceGroups (8(n+1) + 12n + 4(q+1));
//!        the baselines' advantages (8n)
//! down   six scalars and the per-response non-finite counts (48 + 4n); DRPO/DisCO: ŵ and ∂loss/∂s
//!        (16n); baselines: Σ_t ∂loss/∂ℓ per response (8n), their push
//! stays  ℓ (4T, the record's: gathered from the forward's rows), d loss / d logp (4T), the scores,
//!        weights and group statistics
//! ```
//! ℓ is the record's device copy ([`GpuRecord::logp`]): the values whose f64 copy the host holds, so
//! the objective reads the bits it read when ℓ went down and came back up. ℓ^old was scored by the
//! same model at rollout time: f32 values held in f64, they go back to f32 exactly.

use super::gpu::GpuModel;
use super::gpu_train::GpuRecord;
use crate::error::{check_len, Result};
use crate::gpu::objective::{self as dev, DeviceGroups, ObjectiveWork, TokenLogProbs};
use crate::gpu::{DeviceBuffer, GpuFloat};
use crate::policy::ScoredResponses;
use crate::rl::chunk::{positive_weights, ChunkLoss, ChunkObjective, ChunkResult};

impl<T: GpuFloat> GpuModel<T> {
    /// One chunk's objective on a batch scored with `record`: the chunk's numbers, and scale ·
    /// d loss / d logp `[T]` (response tokens in batch order) on the device.
    pub fn chunk_objective_on_device(&self, scored: &ScoredResponses<GpuRecord<T>>, obj: &ChunkObjective) -> Result<(ChunkResult, DeviceBuffer<f32>)> {
        const OP: &str = "chunk objective";
        obj.check(&scored.logp)?;
        let record = scored.recorded()?; // a token gradient is for a backward, which needs the record
        let gpu = &*self.gpu;
        let o = &obj.outcomes;
        let groups = DeviceGroups::upload(gpu, o)?;
        check_len(OP, "old_logp", obj.old_logp.len(), groups.tokens)?;
        check_len(OP, "logp (the record's)", record.logp().len(), groups.tokens)?;
        let old_logp: Vec<f32> = obj.old_logp.iter().map(|&x| x as f32).collect();
        let old_logp = gpu.htod(&old_logp)?;
        let lp = TokenLogProbs { logp: record.logp(), old_logp: old_logp.as_view() };
        let mut work = ObjectiveWork::new(gpu, &groups)?;
        let mut dlogp = gpu.alloc_zeros::<f32>(groups.tokens)?;
        let result = match obj.loss {
            ChunkLoss::Discriminative(hyper) => {
                let v = dev::drpo(gpu, &mut dlogp.as_view_mut(), &mut work, &groups, &lp, hyper, obj.scale)?;
                let weights = gpu.dtoh(&work.weights)?;
                let push = gpu.dtoh(&work.dloss_ds)?.iter().map(|d| -d).collect();
                ChunkResult { loss: v.loss, objective: v.j, kl: v.kl, penalty: v.penalty, positive_weights: positive_weights(o, &weights), push }
            }
            ChunkLoss::Surrogate { advantages, clip_eps } => {
                check_len(OP, "advantages", advantages.len(), groups.n)?;
                let adv = gpu.htod(advantages)?;
                let v = dev::clipped_surrogate(gpu, &mut dlogp.as_view_mut(), &mut work, &groups, &lp, &adv.as_view(), clip_eps, obj.scale)?;
                // push = −Σ_t ∂loss/∂ℓ: the scaled gradient's sums, unscaled (ChunkObjective::check: scale > 0)
                let sums = dev::response_sums(gpu, &mut work, &groups, &dlogp.as_view())?;
                let push = sums.iter().map(|s| -s / obj.scale).collect();
                ChunkResult { loss: v.loss, objective: v.j, kl: v.kl, penalty: v.penalty, positive_weights: Vec::new(), push }
            }
        };
        Ok((result, dlogp))
    }
}
