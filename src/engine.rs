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

/// Where a training run goes, opened and checked ([`Trainee::open`]); [`Trainee::place`] puts the
/// model there.
pub struct Placement(Option<Arc<Gpu>>);

impl Trainee {
    /// [`Trainee::open`] then [`Trainee::place`].
    pub fn new(device: Device, model: Model<f32>, needs: &TrainingNeeds, notice: &mut dyn FnMut(String)) -> Result<Trainee> {
        let at = Trainee::open(device, &model.cfg, needs, notice)?;
        Trainee::place(at, model)
    }

    /// Opens `device` and checks that a run of `needs` for a model of `cfg` fits where it will go,
    /// before anything is uploaded or written: the host estimate on the CPU and on the simulated
    /// device (whose memory is the host's), the device step plan on a GPU. `notice` receives the one
    /// line saying why `auto` fell back to the CPU.
    pub fn open(device: Device, cfg: &crate::config::ModelConfig, needs: &TrainingNeeds, notice: &mut dyn FnMut(String)) -> Result<Placement> {
        let gpu = open_device(device, notice)?;
        match &gpu {
            None => crate::memory::ensure_fits(&format!("{} on the CPU ({})", needs.what, needs.holds), &needs.host)?,
            Some(g) if g.is_simulated() => {
                let what = format!("{} on the simulated device, in host memory ({}; the CPU's estimate)", needs.what, needs.holds);
                crate::memory::ensure_fits(&what, &needs.host)?
            }
            Some(g) => needs.check_gpu(cfg, g.free_bytes()?)?,
        }
        Ok(Placement(gpu))
    }

    /// The model where `at` says: itself on the CPU, uploaded to train on a device.
    pub fn place(at: Placement, model: Model<f32>) -> Result<Trainee> {
        match at.0 {
            None => Ok(Trainee::Cpu(model)),
            Some(gpu) => Ok(Trainee::Gpu(GpuModel::for_training(gpu, &model)?)),
        }
    }
}

/// What a training run needs in memory, checked by [`Trainee::new`] where the run goes: one check
/// for `train`, `sft` and the study's runs, whatever `--device` resolves to.
#[derive(Clone, Debug)]
pub struct TrainingNeeds {
    /// the run, for the error ("training", "SFT")
    pub what: &'static str,
    /// what the host estimate counts, for the error
    pub holds: &'static str,
    /// the host's estimate of the f32 model's run ([`crate::memory`])
    pub host: crate::memory::MemoryEstimate,
    /// tokens per sequence (prompt + response): a GPU plans a step of them ([`crate::gpu::memory::StepPlan`])
    pub seq_len: u64,
}

impl TrainingNeeds {
    /// A DRPO run (`drpo train`, the study): one chunk's activations (`chunk_questions` × G
    /// sequences) and the step's rollout KV cache (Q × G sequences) next to the weights and AdamW.
    pub fn rl(cfg: &crate::config::ModelConfig, train: &crate::rl::trainer::TrainConfig, max_prompt: u64) -> Self {
        let seq = max_prompt.saturating_add(train.max_new_tokens as u64);
        let rows = ((train.chunk_questions * train.group_size) as u64).saturating_mul(seq);
        let mut host = crate::memory::training(cfg, 4, rows, seq);
        let rollouts = (train.questions_per_step as u64).saturating_mul(train.group_size as u64);
        host.kv_cache = crate::memory::generation(cfg, 4, rollouts, max_prompt, seq).kv_cache;
        TrainingNeeds { what: "training", holds: "weights, optimizer, one chunk's activations, rollout KV cache", host, seq_len: seq }
    }

    /// The device plan on a GPU with `free` bytes free: the resident state (bf16 compute copy, f32
    /// master, moments, gradient), then the larger of a whole sequence's training chunk and one
    /// generating sequence; rollouts beyond one sequence run in rounds, chunks beyond one sequence
    /// in more chunks.
    pub fn check_gpu(&self, cfg: &crate::config::ModelConfig, free: u64) -> Result<()> {
        let plan = crate::gpu::memory::StepPlan::new(cfg, 2, self.seq_len, free);
        if plan.fits() {
            return Ok(());
        }
        let m = &plan.memory;
        let phase = m.training_per_token().saturating_mul(self.seq_len).max(m.generation_sequence(self.seq_len).saturating_add(m.decode_gemm_workspace));
        Err(Error::OutOfMemory {
            what: format!("{} on the GPU (resident state, then one {}-token sequence's training or generation)", self.what, self.seq_len),
            needed_bytes: m.resident().saturating_add(phase),
            available_bytes: free,
        })
    }
}
