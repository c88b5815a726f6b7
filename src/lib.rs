//! # drpo — DRPO (Decoupled Reward Policy Optimization) from scratch
//!
//! A five-minute tour:
//! - [`config`], [`layout`], [`weights`], [`tokenizer`]: a Hugging Face Qwen2 checkpoint
//!   (config.json, safetensors, tokenizer.json) loaded into one flat parameter buffer.
//! - [`cpu`]: the f64/f32 reference of every op, forward and backward, one file per kernel family.
//! - [`model`]: the Qwen2 forward (and backward) as a listing of those ops; KV-cache decoding.
//! - [`sampling`], [`generate`]: greedy / temperature / top-k / top-p from counter-based uniforms.
//! - [`rl`]: the objectives (DRPO, DisCO, GRPO and the length-penalty baselines), the math grader.
//! - [`gpu`] and `cuda/`: the hand-written CUDA kernels and their launchers.
//!
//! The library never prints; errors are [`Error`] values that `main` prints.

pub mod check;
pub mod config;
pub mod cpu;
pub mod data;
pub mod engine;
pub mod error;
pub mod eval;
pub mod generate;
pub mod gpu;
pub mod gradcheck;
pub mod layout;
pub mod memory;
pub mod model;
pub mod optim;
pub mod output;
pub mod plot;
pub mod policy;
pub mod checkpoint;
pub mod rl;
pub mod rng;
pub mod runlock;
pub mod sampling;
pub mod settings;
pub mod sft;
pub mod study;
pub mod task;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
