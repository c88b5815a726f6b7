//! Where a command runs: `--device auto|cpu|gpu|sim`. The CPU engine is the f32 reference model; the
//! GPU engine holds the same weights in bf16 on a device and runs the hand-written kernels — on a CUDA
//! GPU, or on the simulated device (`sim`: the same kernels run on the CPU with race and bounds
//! checks; slow, for checking, not for speed). Both answer one contract, [`crate::policy::Policy`]:
//! [`Engine::generator`] hands out the policy that generates and scores, [`Trainee`] the one a
//! training command updates (on a device: the bf16 compute copy with its f32 master weights, AdamW
//! state and gradients on the device; the host model is not kept).

use crate::cpu::Float;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::gpu::GpuModel;
use crate::model::Model;
use crate::policy::Generator;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Device {
    /// the GPU when one is usable, else the CPU (with a one-line notice)
    Auto,
    Cpu,
    Gpu,
    /// the simulated device: the CUDA kernels on the CPU, every launch checked (needs a C++ compiler)
    Sim,
}

#[allow(clippy::large_enum_variant)] // one engine per process; boxing buys nothing
pub enum Engine {
    /// the host model the caller holds is the policy
    Cpu,
    Gpu(GpuModel<half::bf16>),
}

/// The device `device` names, opened; None for the CPU (asked for, or `auto` without a usable GPU:
/// `notice` then receives the one line saying why).
fn open_device(device: Device, notice: &mut dyn FnMut(String)) -> Result<Option<Arc<Gpu>>> {
    let gpu = match device {
        Device::Cpu => return Ok(None),
        Device::Sim => Gpu::sim(),
        Device::Gpu | Device::Auto => Gpu::new(0),
    };
    match gpu {
        Ok(g) => Ok(Some(Arc::new(g))),
        Err(e) if device == Device::Auto && matches!(e, Error::NoDevice { .. }) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            notice(format!("note: running on the CPU ({first})"));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Engine {
    /// Picks the engine for `model`. `notice` receives the one line saying why `auto` fell back.
    pub fn new<T: Float>(device: Device, model: &Model<T>, notice: &mut dyn FnMut(String)) -> Result<Engine> {
        match open_device(device, notice)? {
            None => Ok(Engine::Cpu),
            Some(gpu) => Ok(Engine::Gpu(GpuModel::from_cpu(gpu, model)?)),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Engine::Cpu => "cpu",
            Engine::Gpu(m) if m.gpu.is_simulated() => "sim",
            Engine::Gpu(_) => "gpu",
        }
    }

    /// The policy that generates and scores: `host` itself on the CPU; on a device, the device's
    /// copy (`host` is not read).
    pub fn generator<'a, T: Float>(&'a self, host: &'a Model<T>) -> &'a dyn Generator {
        match self {
            Engine::Cpu => host,
            Engine::Gpu(g) => g,
        }
    }
}

/// The model a training command (`train`, `sft`) updates, where `--device` puts it: the host f32
/// model itself, or the GPU model made to train ([`GpuModel::for_training`]: the bf16 compute copy
/// and the f32 master weights on the device; the host model is dropped after the upload). Callers
/// match on it and run one generic function over [`crate::policy::Policy`].
#[allow(clippy::large_enum_variant)] // one per training run; boxing buys nothing
pub enum Trainee {
    Cpu(Model<f32>),
    Gpu(GpuModel<half::bf16>),
}

impl Trainee {
    /// `notice` receives the one line saying why `auto` fell back to the CPU.
    pub fn new(device: Device, model: Model<f32>, notice: &mut dyn FnMut(String)) -> Result<Trainee> {
        match open_device(device, notice)? {
            None => Ok(Trainee::Cpu(model)),
            Some(gpu) => Ok(Trainee::Gpu(GpuModel::for_training(gpu, &model)?)),
        }
    }
}
