//! The GPU model's training state, on the device, flat in [`crate::layout::ParamLayout`] order:
//!
//! ```text
//! GpuModel::params    [n] T      the compute copy: what sampling, scoring and the backward read
//! GpuModel::master    [n] f32    the master weights AdamW updates (bf16 models only: an f32 model's
//!                                params are its master weights, updated in place)
//! GpuGrads::g         [n] f32    the gradient, accumulated by the backward passes of a mini-batch
//! GpuAdamW::{m, v}    [n] f32    the AdamW moments, and the step count on the host
//! ```
//!
//! One optimizer step is two launches over the flat buffers and one f64 read back: the global norm
//! (`gpu::optim::grad_norm`, optim.rs's chunked order) and the clip (`clip_grad`), the norm copied to
//! the host for the metrics and the skip decision, then `adamw_step`, which updates master, m and v and
//! writes the bf16 compute copy in the same pass (no host round trip). The arithmetic is optim.rs's,
//! bit for bit (tests/kernels_optim.rs for the kernels, tests/gpu_training_state.rs through the
//! policy): an f32 model trained on the device keeps the CPU's parameters exactly for the same
//! gradients, and a bf16 model's compute copy is bf16(master) exactly.
//!
//! The host format ([`HostState`]) is the CPU's: f32 parameters (the master weights) and AdamW state,
//! so a checkpoint saved from a device run resumes on the CPU and the other way round.

use super::gpu::GpuModel;
use super::Model;
use crate::cpu::Float;
use crate::error::{check_len, Error, Result};
use crate::gpu::optim::{adamw_step, clip_grad, grad_norm, grad_norm_scratch_len, AdamWBuffers};
use crate::gpu::{DeviceBuffer, Gpu, GpuFloat};
use crate::optim::{AdamWConfig, AdamWScalars, AdamWState};
use crate::policy::HostState;
use std::sync::Arc;

/// A parameter gradient on the device, and the scratch of its norm.
pub struct GpuGrads {
    /// [n] f32 in layout order: the backward passes add into it (`zero_grads` clears it)
    pub g: DeviceBuffer<f32>,
    /// [1] the norm of the last clip
    norm: DeviceBuffer<f64>,
    /// [grad_norm_scratch_len(n)] chunk sums of the norm
    partial: DeviceBuffer<f64>,
}

/// AdamW's state on the device: the moments (f32, layout order) and the steps taken.
pub struct GpuAdamW {
    pub m: DeviceBuffer<f32>,
    pub v: DeviceBuffer<f32>,
    /// optimizer steps taken so far ([`AdamWState::step`])
    pub step: u64,
}

impl<T: GpuFloat> GpuModel<T> {
    /// A model to train: the compute copy of `model`'s parameters as T and, when T is not f32, the
    /// f32 master weights next to it (the values of `model` through f32, as a checkpoint holds them).
    /// `from_cpu` makes a model for generation and scoring only: a bf16 one has no master weights.
    pub fn for_training<U: Float>(gpu: Arc<Gpu>, model: &Model<U>) -> Result<Self> {
        let mut m = GpuModel::from_cpu(gpu, model)?;
        if !is_f32::<T>() {
            let master: Vec<f32> = model.params.iter().map(|p| p.to_f64() as f32).collect();
            m.master = Some(m.gpu.htod(&master)?);
        }
        Ok(m)
    }

    /// The refusal of a training call on a model without master weights.
    fn no_master(&self, op: &str) -> Error {
        Error::input(format!(
            "{op}: this {} GPU model holds no f32 master weights (GpuModel::from_cpu makes one for generation and scoring; \
             GpuModel::for_training makes one to train)",
            T::NAME
        ))
    }

    fn check_trainable(&self, op: &str) -> Result<()> {
        if self.master.is_none() && !is_f32::<T>() {
            return Err(self.no_master(op));
        }
        Ok(())
    }
}

/// T is f32: the compute copy is the master weights.
fn is_f32<T: GpuFloat>() -> bool {
    T::NAME == <f32 as GpuFloat>::NAME
}

pub(super) fn new_grads<T: GpuFloat>(m: &GpuModel<T>) -> Result<GpuGrads> {
    let n = m.layout.total;
    Ok(GpuGrads { g: m.gpu.alloc_zeros(n)?, norm: m.gpu.alloc_zeros(1)?, partial: m.gpu.alloc_zeros(grad_norm_scratch_len(n))? })
}

pub(super) fn zero_grads<T: GpuFloat>(m: &GpuModel<T>, grads: &mut GpuGrads) -> Result<()> {
    check_len("zero_grads", "grads", grads.g.len(), m.layout.total)?;
    m.gpu.memset_zero(&mut grads.g.as_view_mut())
}

/// The norm on the device, the clip on the device, the norm (8 bytes) to the host.
pub(super) fn clip_grad_norm<T: GpuFloat>(m: &GpuModel<T>, grads: &mut GpuGrads, max_norm: f64) -> Result<f64> {
    check_len("clip_grad_norm", "grads", grads.g.len(), m.layout.total)?;
    let gpu = &*m.gpu;
    grad_norm(gpu, &mut grads.norm.as_view_mut(), &mut grads.partial.as_view_mut(), &grads.g.as_view())?;
    clip_grad(gpu, &mut grads.g.as_view_mut(), &grads.norm.as_view(), max_norm)?;
    Ok(gpu.dtoh(&grads.norm)?[0])
}

pub(super) fn grads_to_host<T: GpuFloat>(m: &GpuModel<T>, grads: &GpuGrads) -> Result<Vec<f64>> {
    check_len("grads_to_host", "grads", grads.g.len(), m.layout.total)?;
    Ok(m.gpu.dtoh(&grads.g)?.into_iter().map(f64::from).collect())
}

pub(super) fn new_optimizer<T: GpuFloat>(m: &GpuModel<T>) -> Result<GpuAdamW> {
    m.check_trainable("new_optimizer")?;
    let n = m.layout.total;
    Ok(GpuAdamW { m: m.gpu.alloc_zeros(n)?, v: m.gpu.alloc_zeros(n)?, step: 0 })
}

/// `AdamWState::step` on the device: the scalars of step t = step + 1 from the CPU's
/// `AdamWScalars::new`, the element-wise update by `adamw_step` on the master weights (the f32
/// params themselves for an f32 model), the bf16 compute copy written by the same launch.
pub(super) fn apply_update<T: GpuFloat>(m: &mut GpuModel<T>, opt: &mut GpuAdamW, grads: &GpuGrads, cfg: &AdamWConfig, lr: f64) -> Result<()> {
    const OP: &str = "apply_update";
    let n = m.layout.total;
    check_len(OP, "grads", grads.g.len(), n)?;
    check_len(OP, "optimizer m", opt.m.len(), n)?;
    check_len(OP, "optimizer v", opt.v.len(), n)?;
    m.check_trainable(OP)?;
    let t = opt.step + 1;
    let k = AdamWScalars::<f32>::new(cfg, lr, t);
    let (mut params, mut copy) = match &mut m.master {
        None => (T::as_f32_mut(m.params.as_view_mut()).ok_or_else(|| Error::input(format!("{OP}: no master weights")))?, None),
        Some(master) => {
            let copy = T::as_bf16_mut(m.params.as_view_mut())
                .ok_or_else(|| Error::input(format!("{OP}: master weights next to {} storage (only bf16 keeps a separate copy)", T::NAME)))?;
            (master.as_view_mut(), Some(copy))
        }
    };
    let (mut mv, mut vv) = (opt.m.as_view_mut(), opt.v.as_view_mut());
    let bufs = AdamWBuffers { params: &mut params, m: &mut mv, v: &mut vv, params_bf16: copy.as_mut() };
    adamw_step(&m.gpu, bufs, &grads.g.as_view(), None, &k)?;
    opt.step = t;
    Ok(())
}

pub(super) fn export_state<T: GpuFloat>(m: &GpuModel<T>, opt: &GpuAdamW) -> Result<HostState> {
    check_len("export_state", "optimizer m", opt.m.len(), m.layout.total)?;
    check_len("export_state", "optimizer v", opt.v.len(), m.layout.total)?;
    m.check_trainable("export_state")?;
    let gpu = &*m.gpu;
    let params = match &m.master {
        Some(master) => gpu.dtoh(master)?,
        None => gpu.dtoh(&m.params)?.into_iter().map(T::to_f32).collect(),
    };
    Ok(HostState { params, optim: AdamWState { m: gpu.dtoh(&opt.m)?, v: gpu.dtoh(&opt.v)?, step: opt.step } })
}

/// The master weights take `state.params`, the compute copy their rounding to T (the kernel's
/// rounding: round to nearest even, = half::bf16::from_f32).
pub(super) fn import_state<T: GpuFloat>(m: &mut GpuModel<T>, opt: &mut GpuAdamW, state: &HostState) -> Result<()> {
    let n = m.layout.total;
    state.check("import_state", n)?;
    check_len("import_state", "optimizer m (device)", opt.m.len(), n)?;
    check_len("import_state", "optimizer v (device)", opt.v.len(), n)?;
    m.check_trainable("import_state")?;
    let gpu = &*m.gpu;
    if let Some(master) = &mut m.master {
        gpu.memcpy_htod(&state.params, &mut master.as_view_mut())?;
    }
    let copy: Vec<T> = state.params.iter().map(|&p| T::from_f32(p)).collect();
    gpu.memcpy_htod(&copy, &mut m.params.as_view_mut())?;
    gpu.memcpy_htod(&state.optim.m, &mut opt.m.as_view_mut())?;
    gpu.memcpy_htod(&state.optim.v, &mut opt.v.as_view_mut())?;
    opt.step = state.optim.step;
    Ok(())
}
