//! The Qwen2 model as a listing of ops: the same order and names on the CPU ([`cpu`]) and the GPU ([`gpu`]).

pub mod cpu;
pub mod gpu;
pub mod gpu_objective;
pub mod gpu_state;
pub mod gpu_train;

pub use cpu::{Activations, KvCache, Model, Scored};
