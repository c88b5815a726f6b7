//! Memory estimates for the CPU paths, so a command can refuse a run that cannot fit, up front and
//! with the numbers, instead of dying mid-way. Estimates count the big buffers only (they dominate for
//! any real model); they are upper-bound-ish, not byte exact.

use crate::config::ModelConfig;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub activations: u64,
    pub optimizer: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.activations + self.optimizer
    }
}

fn params(cfg: &ModelConfig) -> u64 {
    crate::layout::ParamLayout::new(cfg).total as u64
}

/// Generating `batch` sequences of up to `max_len` tokens (prompt + new) with elements of `elem` bytes.
pub fn generation(cfg: &ModelConfig, elem: u64, batch: u64, max_prompt: u64, max_len: u64) -> MemoryEstimate {
    let (c, ff, v) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.vocab_size as u64);
    let kv = 2 * cfg.num_hidden_layers as u64 * cfg.kv_dim() as u64;
    // prefill: one layer's activations for every prompt row, attention probabilities of one sequence
    let rows = batch * max_prompt;
    let prefill = rows * (6 * c + 3 * ff) + cfg.num_attention_heads as u64 * max_prompt * max_prompt;
    MemoryEstimate {
        weights: params(cfg) * elem,
        kv_cache: batch * max_len * kv * elem,
        activations: (prefill + batch * v) * elem,
        optimizer: 0,
    }
}

/// One training chunk of `rows` tokens in sequences of up to `seq_len` tokens: every layer's
/// activations are kept for the backward pass, plus logits and their gradient, plus gradients and the
/// two AdamW moments (f32) next to the weights.
pub fn training(cfg: &ModelConfig, elem: u64, rows: u64, seq_len: u64) -> MemoryEstimate {
    let (c, ff, v) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.vocab_size as u64);
    let (qd, kvd, nh) = (cfg.q_dim() as u64, cfg.kv_dim() as u64, cfg.num_attention_heads as u64);
    let per_row_layer = 4 * c + 2 * qd + 2 * kvd + 3 * ff + nh * seq_len + 2;
    let acts = rows * (cfg.num_hidden_layers as u64 * per_row_layer + 3 * c + 2 * v);
    let p = params(cfg);
    MemoryEstimate { weights: p * elem, kv_cache: 0, activations: acts * elem, optimizer: p * (elem + 8) }
}

/// MemAvailable from /proc/meminfo (None where it cannot be read: then nothing is refused).
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a run whose estimate exceeds the available memory.
pub fn ensure_fits(what: &str, est: &MemoryEstimate) -> Result<()> {
    match available_bytes() {
        Some(avail) if est.total() > avail => {
            Err(Error::OutOfMemory { what: what.to_string(), needed_bytes: est.total(), available_bytes: avail })
        }
        _ => Ok(()),
    }
}
