//! Launchers of `cuda/objective.cu`: DRPO / DisCO and the policy-gradient surrogate on the device,
//! with the contracts of `rl::objectives` (same formulas, same skipping rules, same gradient layout).
//!
//! The host keeps only the group bookkeeping ([`DeviceGroups`], built once per batch from its
//! [`Outcomes`]) and the baselines' shaped rewards; the token log-probs, the per-response and per-group
//! statistics, the loss and the per-token gradient stay on the device. The arithmetic is f64 (module
//! header of the `.cu`); the log-probs and the gradient are f32 (the model's) or f64.
//! A call reads back the handful of scalars ([`ObjectiveValues`]) and the per-response count of
//! non-finite gradient values, and turns a non-finite result into [`crate::Error::Input`] as the CPU does.

use super::{as_i32, blocks, grid_dims, DView, DViewMut, DeviceBuffer, DeviceCopy, Gpu, LaunchCfg, OBJECTIVE};
use crate::error::{check_len, Error, Result};
use crate::rl::objectives::{groups_of, Estimator, Hyper, Outcomes, StdKind};

/// Storage type of the log-probs and of the gradient: f32 (the GPU model's) or f64.
pub trait LogProbFloat: DeviceCopy {
    /// The entry point for this type among an (f32, f64) pair of names.
    fn pick(f32_name: &'static str, f64_name: &'static str) -> &'static str;
}
impl LogProbFloat for f32 {
    fn pick(f32_name: &'static str, _: &'static str) -> &'static str {
        f32_name
    }
}
impl LogProbFloat for f64 {
    fn pick(_: &'static str, f64_name: &'static str) -> &'static str {
        f64_name
    }
}

/// The group bookkeeping of a batch on the device (the layout of `rl::objectives::Batch`).
pub struct DeviceGroups {
    /// responses n, groups q (distinct ids, invalid ones included), tokens T = Σ L_i
    pub n: usize,
    pub q: usize,
    pub tokens: usize,
    pub max_len: usize,
    /// `[n + 1]` start of each response in the token arrays
    offsets: DeviceBuffer<i64>,
    len: DeviceBuffer<i32>,
    correct: DeviceBuffer<i32>,
    /// `[q + 1]`: group g's members are `members[group_start[g] .. group_start[g + 1]]`
    group_start: DeviceBuffer<i32>,
    /// `[n]` response indices, grouped in ascending id order, batch order inside a group
    members: DeviceBuffer<i32>,
}

impl DeviceGroups {
    /// Validates `o` as the CPU does (lengths 1..=C, a non-empty batch) and uploads its groups.
    pub fn upload(gpu: &Gpu, o: &Outcomes) -> Result<DeviceGroups> {
        const OP: &str = "objective";
        o.validate()?;
        let n = o.n();
        as_i32(OP, "responses", n)?;
        as_i32(OP, "max_len", o.max_len)?;
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0i64);
        for &l in o.len {
            offsets.push(offsets[offsets.len() - 1] + l as i64);
        }
        let groups = groups_of(o.group);
        let mut group_start = Vec::with_capacity(groups.len() + 1);
        let mut members = Vec::with_capacity(n);
        for g in &groups {
            group_start.push(members.len() as i32);
            members.extend(g.members.iter().map(|&i| i as i32));
        }
        group_start.push(n as i32);
        let len: Vec<i32> = o.len.iter().map(|&l| l as i32).collect();
        let correct: Vec<i32> = o.correct.iter().map(|&c| c as i32).collect();
        Ok(DeviceGroups {
            n,
            q: groups.len(),
            tokens: offsets[n] as usize,
            max_len: o.max_len,
            offsets: gpu.htod(&offsets)?,
            len: gpu.htod(&len)?,
            correct: gpu.htod(&correct)?,
            group_start: gpu.htod(&group_start)?,
            members: gpu.htod(&members)?,
        })
    }
}

/// Device results of the last objective call on a batch, per response and per group (allocated once
/// per batch shape by [`ObjectiveWork::new`], reused across calls).
pub struct ObjectiveWork {
    /// `[n]` s_i = Σ_t ℓ_{i,t} / L_i (discriminative objectives)
    pub scores: DeviceBuffer<f64>,
    /// `[n]` ŵ_i for the positives of valid groups, 0 elsewhere
    pub weights: DeviceBuffer<f64>,
    /// `[n]` ∂loss/∂s_i of the discriminative part (`DiscoOutput::dloss_ds`)
    pub dloss_ds: DeviceBuffer<f64>,
    /// `[q]` J_g per group, ascending id (0 for skipped groups)
    pub group_j: DeviceBuffer<f64>,
    logp_sum: DeviceBuffer<f64>,
    kl_sum: DeviceBuffer<f64>,
    seq_sum: DeviceBuffer<f64>,
    clipped: DeviceBuffer<i32>,
    nonfinite: DeviceBuffer<i32>,
    scalars: DeviceBuffer<f64>,
}

const SCALARS: usize = 6;

impl ObjectiveWork {
    pub fn new(gpu: &Gpu, groups: &DeviceGroups) -> Result<ObjectiveWork> {
        let (n, q) = (groups.n, groups.q);
        Ok(ObjectiveWork {
            scores: gpu.alloc_zeros(n)?,
            weights: gpu.alloc_zeros(n)?,
            dloss_ds: gpu.alloc_zeros(n)?,
            group_j: gpu.alloc_zeros(q)?,
            logp_sum: gpu.alloc_zeros(n)?,
            kl_sum: gpu.alloc_zeros(n)?,
            seq_sum: gpu.alloc_zeros(n)?,
            clipped: gpu.alloc_zeros(n)?,
            nonfinite: gpu.alloc_zeros(n)?,
            scalars: gpu.alloc_zeros(SCALARS)?,
        })
    }

    fn check(&self, groups: &DeviceGroups) -> Result<()> {
        check_len("objective", "work (responses)", self.scores.len(), groups.n)?;
        check_len("objective", "work (groups)", self.group_j.len(), groups.q)
    }
}

/// The scalars of one objective call (the fields of `DiscoOutput` / `PgOutput` that are not arrays).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ObjectiveValues {
    /// J, to be maximised
    pub j: f64,
    /// the k1 KL estimate over every token
    pub kl: f64,
    /// (β/2)[K − δ]_+² (0 for the surrogate)
    pub penalty: f64,
    /// −J + penalty
    pub loss: f64,
    /// β[K − δ]_+ (0 for the surrogate)
    pub kl_coef: f64,
    /// tokens whose gradient the PPO clip removed (0 for DRPO / DisCO)
    pub clipped_tokens: usize,
}

/// The token log-probs of a batch: `[T]` each, response i at `offsets[i]..offsets[i + 1]`.
#[derive(Clone, Copy)]
pub struct TokenLogProbs<'a, T> {
    pub logp: DView<'a, T>,
    pub old_logp: DView<'a, T>,
}

/// One block of 128 threads per response: its tokens are strided over the block.
fn per_response(op: &'static str, n: usize) -> Result<LaunchCfg> {
    Ok(LaunchCfg::new(grid_dims(op, [(n, "responses"), (1, ""), (1, "")])?, 128))
}

/// One thread per group, 64 per block.
fn per_group(op: &'static str, q: usize) -> Result<LaunchCfg> {
    Ok(LaunchCfg::new(grid_dims(op, [(blocks(q, 64), "groups / 64"), (1, ""), (1, "")])?, 64))
}

fn check_tokens<T>(op: &'static str, groups: &DeviceGroups, lp: &TokenLogProbs<T>, dlogp: &DViewMut<T>) -> Result<()> {
    check_len(op, "logp", lp.logp.len(), groups.tokens)?;
    check_len(op, "old_logp", lp.old_logp.len(), groups.tokens)?;
    check_len(op, "dlogp", dlogp.len(), groups.tokens)
}

fn check_scale(op: &str, scale: f64) -> Result<()> {
    if scale.is_finite() {
        Ok(())
    } else {
        Err(Error::input(format!("{op}: gradient scale {scale} is not finite")))
    }
}

/// Σ_t ℓ and Σ_t (ℓ^old − ℓ) of every response into `work`.
fn sums<T: LogProbFloat>(gpu: &Gpu, work: &mut ObjectiveWork, groups: &DeviceGroups, lp: &TokenLogProbs<T>) -> Result<()> {
    const OP: &str = "objective_sums";
    let mut l = gpu.launch(&OBJECTIVE, T::pick("objective_sums_f32", "objective_sums_f64"), per_response(OP, groups.n)?);
    l.arg_mut(&mut work.logp_sum.as_view_mut()).arg_mut(&mut work.kl_sum.as_view_mut());
    l.arg(&lp.logp).arg(&lp.old_logp).arg(&groups.offsets.as_view());
    // SAFETY: order and types match objective_sums_<t>; offsets has n + 1 entries ending at T, and the
    // token arrays hold T values (checked by the caller).
    unsafe { l.run() }
}

/// J, K, the hinge and the loss into `work.scalars`: J = Σ_g J_g / count (`per_group_j`), else
/// Σ_i seq_sum_i / L_i / count (the surrogate).
fn finish(gpu: &Gpu, work: &mut ObjectiveWork, groups: &DeviceGroups, per_group_j: bool, count: f64, beta: f64, delta: f64) -> Result<()> {
    let (part, parts, clipped) = if per_group_j {
        (work.group_j.as_view(), groups.q, None)
    } else {
        (work.seq_sum.as_view(), groups.n, Some(work.clipped.as_view()))
    };
    let mut l = gpu.launch(&OBJECTIVE, "objective_finish", LaunchCfg::new((1, 1, 1), 32));
    l.arg_mut(&mut work.scalars.as_view_mut()).arg(&part).arg(&groups.len.as_view()).arg(&work.kl_sum.as_view());
    l.arg_opt(clipped.as_ref()).i32(parts as i32).i32(!per_group_j as i32).i32(groups.n as i32);
    l.i64(groups.tokens as i64).f64(count).f64(beta).f64(delta);
    // SAFETY: order and types match objective_finish; part holds `parts` values, len / kl_sum /
    // clipped n values, scalars SCALARS.
    unsafe { l.run() }
}

/// Reads the scalars and the non-finite counts back; a non-finite result is an input error.
fn values(gpu: &Gpu, work: &ObjectiveWork, op: &str) -> Result<ObjectiveValues> {
    let s = gpu.dtoh(&work.scalars)?;
    let bad: i64 = gpu.dtoh(&work.nonfinite)?.iter().map(|&b| b as i64).sum();
    let v = ObjectiveValues { j: s[0], kl: s[1], penalty: s[2], loss: s[3], kl_coef: s[4], clipped_tokens: s[5] as usize };
    if bad > 0 || !(v.j.is_finite() && v.kl.is_finite() && v.loss.is_finite() && v.kl_coef.is_finite()) {
        return Err(Error::input(format!(
            "{op} (device): the loss or its gradient is not finite (J = {}, K = {}, β[K − δ]_+ = {}, {bad} gradient values): \
             a log-prob is not finite, or the log-probs or log-ratios are too large in magnitude",
            v.j, v.kl, v.kl_coef
        )));
    }
    Ok(v)
}

/// Σ_t x_{i,t} of every response of a `[T]` token array (a baseline's push from its gradient):
/// `objective_sums` with `x` as both ℓ and ℓ^old (its KL slot gets Σ (x − x) = 0). Overwrites the
/// per-response sums of the last objective call in `work` (its scalars, weights and ∂loss/∂s stay).
pub fn response_sums<T: LogProbFloat>(gpu: &Gpu, work: &mut ObjectiveWork, groups: &DeviceGroups, x: &DView<T>) -> Result<Vec<f64>> {
    check_len("response_sums", "x", x.len(), groups.tokens)?;
    work.check(groups)?;
    sums(gpu, work, groups, &TokenLogProbs { logp: *x, old_logp: *x })?;
    gpu.dtoh(&work.logp_sum)
}

/// `rl::objectives::drpo` and `disco` on the device (DisCO: `lambda` = +∞): writes ∂loss/∂ℓ·`scale` into
/// `dlogp` (`[T]`) and the per-response / per-group results into `work`; returns the scalars.
#[allow(clippy::too_many_arguments)]
pub fn discriminative<T: LogProbFloat>(
    gpu: &Gpu,
    dlogp: &mut DViewMut<T>,
    work: &mut ObjectiveWork,
    groups: &DeviceGroups,
    lp: &TokenLogProbs<T>,
    hyper: &Hyper,
    lambda: f64,
    scale: f64,
) -> Result<ObjectiveValues> {
    const OP: &str = "drpo";
    hyper.validate()?;
    if lambda.is_nan() || lambda <= 0.0 {
        return Err(Error::input(format!("{OP}: lambda = {lambda} must be > 0 (+inf = DisCO)")));
    }
    check_scale(OP, scale)?;
    check_tokens(OP, groups, lp, dlogp)?;
    work.check(groups)?;
    sums(gpu, work, groups, lp)?;

    let mut l = gpu.launch(&OBJECTIVE, "drpo_groups", per_group(OP, groups.q)?);
    l.arg_mut(&mut work.scores.as_view_mut()).arg_mut(&mut work.weights.as_view_mut());
    l.arg_mut(&mut work.dloss_ds.as_view_mut()).arg_mut(&mut work.group_j.as_view_mut());
    l.arg(&work.logp_sum.as_view()).arg(&groups.len.as_view()).arg(&groups.correct.as_view());
    l.arg(&groups.group_start.as_view()).arg(&groups.members.as_view());
    l.i32(groups.q as i32).i32(groups.max_len as i32).f64(lambda).f64(hyper.tau);
    // SAFETY: order and types match drpo_groups; group_start (q + 1) and members (n) index n-long
    // arrays (built by DeviceGroups::upload), one thread per group.
    unsafe { l.run() }?;

    finish(gpu, work, groups, true, groups.q as f64, hyper.beta, hyper.delta)?;

    let mut l = gpu.launch(&OBJECTIVE, T::pick("objective_dlogp_f32", "objective_dlogp_f64"), per_response(OP, groups.n)?);
    l.arg_mut(dlogp).arg_mut(&mut work.nonfinite.as_view_mut()).arg(&work.dloss_ds.as_view());
    l.arg(&work.scalars.as_view()).arg(&groups.offsets.as_view()).i64(groups.tokens as i64).f64(scale);
    // SAFETY: order and types match objective_dlogp_<t>; dlogp holds T values (checked), the other
    // arrays n (or n + 1, SCALARS).
    unsafe { l.run() }?;
    values(gpu, work, OP)
}

/// DRPO with `hyper.lambda` (DisCO: [`discriminative`] with λ = +∞).
pub fn drpo<T: LogProbFloat>(
    gpu: &Gpu,
    dlogp: &mut DViewMut<T>,
    work: &mut ObjectiveWork,
    groups: &DeviceGroups,
    lp: &TokenLogProbs<T>,
    hyper: &Hyper,
    scale: f64,
) -> Result<ObjectiveValues> {
    discriminative(gpu, dlogp, work, groups, lp, hyper, hyper.lambda, scale)
}

/// `rl::objectives::grpo_advantages` (Estimator::Grpo, with `eps` and `std`) or `rloo_advantages`
/// from the shaped rewards, per group.  adv, rewards: `[n]`
pub fn advantages(
    gpu: &Gpu,
    adv: &mut DViewMut<f64>,
    rewards: &DView<f64>,
    groups: &DeviceGroups,
    estimator: Estimator,
    eps: f64,
    std: StdKind,
) -> Result<()> {
    const OP: &str = "group_advantages";
    check_len(OP, "adv", adv.len(), groups.n)?;
    check_len(OP, "rewards", rewards.len(), groups.n)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::input(format!("{OP}: eps = {eps} must be finite and ≥ 0")));
    }
    let mut l = gpu.launch(&OBJECTIVE, "group_advantages", per_group(OP, groups.q)?);
    l.arg_mut(adv).arg(rewards).arg(&groups.group_start.as_view()).arg(&groups.members.as_view());
    l.i32(groups.q as i32).i32((estimator == Estimator::Rloo) as i32).i32((std == StdKind::Sample) as i32).f64(eps);
    // SAFETY: order and types match group_advantages; the bookkeeping indexes n-long arrays.
    unsafe { l.run() }
}

/// `rl::objectives::clipped_surrogate` on the device: ∂loss/∂ℓ·`scale` into `dlogp` (`[T]`);
/// advantages `[n]` (from [`advantages`] or the host); `clip_eps: None` = the plain ratio surrogate.
/// `kl` is the diagnostic K; penalty and kl_coef are 0.
#[allow(clippy::too_many_arguments)]
pub fn clipped_surrogate<T: LogProbFloat>(
    gpu: &Gpu,
    dlogp: &mut DViewMut<T>,
    work: &mut ObjectiveWork,
    groups: &DeviceGroups,
    lp: &TokenLogProbs<T>,
    advantages: &DView<f64>,
    clip_eps: Option<f64>,
    scale: f64,
) -> Result<ObjectiveValues> {
    const OP: &str = "clipped_surrogate";
    if let Some(eps) = clip_eps {
        if !(eps > 0.0 && eps < 1.0) {
            return Err(Error::input(format!("{OP}: clip_eps = {eps} must be in (0, 1)")));
        }
    }
    check_scale(OP, scale)?;
    check_tokens(OP, groups, lp, dlogp)?;
    check_len(OP, "advantages", advantages.len(), groups.n)?;
    work.check(groups)?;
    sums(gpu, work, groups, lp)?;

    let mut l = gpu.launch(&OBJECTIVE, T::pick("surrogate_f32", "surrogate_f64"), per_response(OP, groups.n)?);
    l.arg_mut(dlogp).arg_mut(&mut work.seq_sum.as_view_mut()).arg_mut(&mut work.clipped.as_view_mut());
    l.arg_mut(&mut work.nonfinite.as_view_mut()).arg(&lp.logp).arg(&lp.old_logp).arg(advantages);
    l.arg(&groups.offsets.as_view()).i32(groups.n as i32).f64(clip_eps.unwrap_or(-1.0)).f64(scale);
    // SAFETY: order and types match surrogate_<t>; token arrays hold T values, the rest n (n + 1).
    unsafe { l.run() }?;

    finish(gpu, work, groups, false, groups.n as f64, 0.0, 0.0)?;
    values(gpu, work, OP)
}
