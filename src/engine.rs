//! Where a command runs: `--device auto|cpu|gpu|sim`. The CPU engine is the f32 reference model; the
//! GPU engine holds the same weights in bf16 on a device and runs the hand-written kernels — on a CUDA
//! GPU, or on the simulated device (`sim`: the same kernels run on the CPU with race and bounds
//! checks; slow, for checking, not for speed). Both answer one contract, [`crate::policy::Policy`]:
//! [`Engine::generator`] hands out the policy that generates and scores.

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

impl Engine {
    /// Picks the engine for `model`. `notice` receives the one line saying why `auto` fell back.
    pub fn new<T: Float>(device: Device, model: &Model<T>, notice: &mut dyn FnMut(String)) -> Result<Engine> {
        if device == Device::Cpu {
            return Ok(Engine::Cpu);
        }
        let gpu = if device == Device::Sim { Gpu::sim() } else { Gpu::new(0) };
        match gpu.and_then(|g| GpuModel::from_cpu(Arc::new(g), model)) {
            Ok(m) => Ok(Engine::Gpu(m)),
            Err(e) if device == Device::Auto && matches!(e, Error::NoDevice { .. }) => {
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                notice(format!("note: running on the CPU ({first})"));
                Ok(Engine::Cpu)
            }
            Err(e) => Err(e),
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

    /// Refreshes the device copy after the CPU weights changed (training): the values are converted
    /// and copied into the existing buffer; the rotary tables stay.
    pub fn sync<T: Float>(&mut self, model: &Model<T>) -> Result<()> {
        if let Engine::Gpu(g) = self {
            g.update_params(model)?;
        }
        Ok(())
    }
}
