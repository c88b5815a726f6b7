//! The Qwen2 model as a listing of ops: the same order and names on the CPU ([`cpu`]) and the GPU.

pub mod cpu;

pub use cpu::{Activations, KvCache, Model};
