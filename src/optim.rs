//! AdamW with decoupled weight decay, global gradient-norm clipping and the learning-rate schedule,
//! on the flat parameter buffer of [`crate::layout::ParamLayout`] (one loop over everything).
//!
//! One optimizer step (PyTorch `torch.optim.AdamW`, t = the step count after incrementing it):
//! ```text
//! p ← p · (1 − lr·wd)                                    decoupled decay, before the moments
//! m ← m + (1 − β1)(g − m)                                 = β1·m + (1 − β1)·g  (torch's lerp_; for
//!                                                          β1 ≤ 0.5 its other form g − (g − m)·β1)
//! v ← β2·v + (1 − β2)·(g·g)                               (mul_, then addcmul_)
//! p ← p − (lr / (1 − β1ᵗ)) · (m / (sqrt(v) / sqrt(1 − β2ᵗ) + eps))      (addcdiv_)
//! ```
//! The element-wise rounding order is torch's on CUDA, where verl trains (`_single_tensor_adamw` and
//! the default `_foreach` path): `addcmul_(t1, t2, value)` computes self + value·(t1·t2) and
//! `addcdiv_` self + value·(t1/t2) (ATen's CUDA kernels; its CPU kernels multiply value·t1 first,
//! which can differ in the last bit).
//! Weight decay applies to every parameter (norm weights and biases included), as verl passes all
//! of the actor's parameters to one AdamW group. Scalars (bias corrections, step size) are computed in
//! f64 and rounded once to the buffer's float type; the element-wise arithmetic runs in that type.
//! Every element is independent, so the parallel loop gives the same bits as a serial one.

use crate::cpu::Float;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Elements per parallel work item: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 15;

/// AdamW hyper-parameters other than the learning rate (which comes from [`LrSchedule`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// SPEC §5.6: betas (0.9, 0.999), eps 1e-8, weight_decay 0.01.
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// What AdamW carries from step to step.  m, v: [total] in layout order, like the parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWState<T> {
    /// first moment (torch `exp_avg`)
    pub m: Vec<T>,
    /// second moment (torch `exp_avg_sq`)
    pub v: Vec<T>,
    /// optimizer steps taken so far (the bias corrections use step + 1 for the next one)
    pub step: u64,
}

impl<T: Float> AdamWState<T> {
    /// Zero moments for `n` parameters, no step taken.
    pub fn new(n: usize) -> Self {
        AdamWState { m: vec![T::ZERO; n], v: vec![T::ZERO; n], step: 0 }
    }

    /// One AdamW step at learning rate `lr`: updates `params` in place and the moments.
    /// params, grads: [total], the same length as the state.
    pub fn step(&mut self, params: &mut [T], grads: &[T], cfg: &AdamWConfig, lr: f64) {
        assert!(
            params.len() == self.m.len() && grads.len() == self.m.len() && self.v.len() == self.m.len(),
            "AdamW step: params, grads and moments must have the same length"
        );
        self.step += 1;
        let t = self.step as f64;
        let bias_correction1 = 1.0 - cfg.beta1.powf(t);
        let bias_correction2_sqrt = (1.0 - cfg.beta2.powf(t)).sqrt();
        let decay = T::from_f64(1.0 - lr * cfg.weight_decay);
        let step_size = T::from_f64(lr / bias_correction1);
        let (one_minus_b1, b2, one_minus_b2) = (T::from_f64(1.0 - cfg.beta1), T::from_f64(cfg.beta2), T::from_f64(1.0 - cfg.beta2));
        // torch's lerp_(end, w): self + w·(end − self) for |w| < 0.5, else end − (end − self)·(1 − w)
        let (lerp_low, one_minus_w) = ((1.0 - cfg.beta1).abs() < 0.5, T::ONE - one_minus_b1);
        let (bc2_sqrt, eps) = (T::from_f64(bias_correction2_sqrt), T::from_f64(cfg.eps));
        let k = AdamWScalars { decay, step_size, one_minus_b1, b2, one_minus_b2, lerp_low, one_minus_w, bc2_sqrt, eps };
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK))
            .zip(self.v.par_chunks_mut(CHUNK))
            // compiled per SIMD level: element-wise IEEE operations, the same bits at any vector width
            .for_each(|(((p, g), m), v)| crate::cpu::simd::run(#[inline(always)] || adamw_chunk(p, g, m, v, &k)));
    }
}

/// The scalars of one AdamW step, rounded once to T.
struct AdamWScalars<T> {
    decay: T,
    step_size: T,
    one_minus_b1: T,
    b2: T,
    one_minus_b2: T,
    lerp_low: bool,
    one_minus_w: T,
    bc2_sqrt: T,
    eps: T,
}

/// The element-wise AdamW update of one chunk (torch's CUDA rounding order, see the module doc).
#[inline(always)]
fn adamw_chunk<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], k: &AdamWScalars<T>) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        p[i] *= k.decay;
        let diff = gi - m[i];
        m[i] = if k.lerp_low { m[i] + k.one_minus_b1 * diff } else { gi - diff * k.one_minus_w };
        v[i] = k.b2 * v[i] + k.one_minus_b2 * (gi * gi);
        let denom = v[i].sqrt() / k.bc2_sqrt + k.eps;
        p[i] -= k.step_size * (m[i] / denom);
    }
}

/// ‖g‖₂ over the whole buffer, accumulated in f64 in a fixed order (chunk sums, then their sum),
/// so it is the same number whatever the thread count.
pub fn global_grad_norm<T: Float>(grads: &[T]) -> f64 {
    let partial: Vec<f64> = grads
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|g| {
            let g = g.to_f64();
            g * g
        }).sum::<f64>())
        .collect();
    partial.iter().sum::<f64>().sqrt()
}

/// Global L2-norm clipping with `torch.nn.utils.clip_grad_norm_` semantics: with
/// coef = max_norm / (‖g‖ + 1e-6), the gradient is scaled by coef when coef < 1 (so a norm equal to
/// max_norm is scaled very slightly, as in torch). Returns the norm before clipping.
/// A non-finite norm leaves the gradient untouched; the caller should skip that step.
pub fn clip_grad_norm<T: Float>(grads: &mut [T], max_norm: f64) -> f64 {
    let norm = global_grad_norm(grads);
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        let c = T::from_f64(coef);
        grads.par_chunks_mut(CHUNK).for_each(|chunk| chunk.iter_mut().for_each(|g| *g *= c));
    }
    norm
}

/// What the learning rate does after the warmup.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum LrDecay {
    /// stays at the base rate (SPEC §5.6: DRPO trains at a constant rate, warmup 0)
    Constant,
    /// half a cosine from the base rate at the end of the warmup down to `min_lr` at `total_steps`,
    /// then `min_lr`
    Cosine { min_lr: f64, total_steps: u64 },
}

/// Learning rate as a function of the optimizer step: linear warmup, then [`LrDecay`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub lr: f64,
    pub warmup_steps: u64,
    pub decay: LrDecay,
}

impl Default for LrSchedule {
    /// SPEC §5.6, 1.5B: 2e-6, constant, no warmup.
    fn default() -> Self {
        LrSchedule { lr: 2e-6, warmup_steps: 0, decay: LrDecay::Constant }
    }
}

impl LrSchedule {
    /// The rate of step `step` (0-based: the step about to be taken, i.e. [`AdamWState::step`] before it).
    /// Warmup (HF/verl `get_*_schedule_with_warmup`): lr · step / warmup for step < warmup, so step 0
    /// has rate 0. Cosine: lr_min + (lr − lr_min) · ½(1 + cos(π · progress)),
    /// progress = (step − warmup) / (total − warmup) clamped to [0, 1].
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * step as f64 / self.warmup_steps as f64;
        }
        match self.decay {
            LrDecay::Constant => self.lr,
            LrDecay::Cosine { min_lr, total_steps } => {
                let span = total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                min_lr + (self.lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}
