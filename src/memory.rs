//! Memory estimates for the CPU paths, so a command can refuse a run that cannot fit, up front and
//! with the numbers, instead of dying mid-way. Estimates count the big buffers only (they dominate for
//! any real model); they are upper-bound-ish, not byte exact. Sizes come from user flags, so all the
//! arithmetic saturates: an absurd request gives an absurd (u64::MAX) estimate, never a wrapped one.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::cpu::HEAD_ROWS;
use std::path::Path;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub activations: u64,
    pub optimizer: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights.saturating_add(self.kv_cache).saturating_add(self.activations).saturating_add(self.optimizer)
    }
}

/// Saturating product.
fn mul(xs: &[u64]) -> u64 {
    xs.iter().fold(1u64, |acc, &x| acc.saturating_mul(x))
}

/// Saturating sum.
fn add(xs: &[u64]) -> u64 {
    xs.iter().fold(0u64, |acc, &x| acc.saturating_add(x))
}

fn params(cfg: &ModelConfig) -> u64 {
    crate::layout::ParamLayout::checked_total(cfg, Path::new("config")).map_or(u64::MAX, |p| p as u64)
}

/// Generating `batch` sequences of up to `max_len` tokens (prompt + new) with elements of `elem` bytes.
pub fn generation(cfg: &ModelConfig, elem: u64, batch: u64, max_prompt: u64, max_len: u64) -> MemoryEstimate {
    let (c, ff, v) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.vocab_size as u64);
    let kv = mul(&[2, cfg.num_hidden_layers as u64, cfg.kv_dim() as u64]);
    // prefill: one layer's activations for every prompt row (attention keeps one [tk] row of
    // probabilities per (sequence, head) task, not [nh, t, t]), then the last rows' logits
    let rows = mul(&[batch, max_prompt]);
    let prefill = mul(&[rows, add(&[mul(&[6, c]), mul(&[3, ff])])]);
    MemoryEstimate {
        weights: mul(&[params(cfg), elem]),
        kv_cache: mul(&[batch, max_len, kv, elem]),
        activations: mul(&[add(&[prefill, mul(&[batch, v])]), elem]),
        optimizer: 0,
    }
}

/// Scoring `rows` tokens without a backward pass (`drpo logprobs`): one layer's activations for
/// every row at a time (nothing is kept across layers but the residual stream) and one block of
/// [`HEAD_ROWS`] rows of logits.
pub fn scoring(cfg: &ModelConfig, elem: u64, rows: u64) -> MemoryEstimate {
    let (c, ff, v) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.vocab_size as u64);
    let per_row = add(&[mul(&[6, c]), mul(&[3, ff]), 2]);
    let acts = add(&[mul(&[rows, per_row]), mul(&[HEAD_ROWS as u64, v])]);
    MemoryEstimate { weights: mul(&[params(cfg), elem]), kv_cache: 0, activations: mul(&[acts, elem]), optimizer: 0 }
}

/// One training chunk of `rows` tokens in sequences of up to `seq_len` tokens: every layer's
/// activations are kept for the backward pass (attention probabilities included), plus the head's
/// logits and their gradient for one block of [`HEAD_ROWS`] rows, plus gradients and the two AdamW
/// moments (f32) next to the weights.
pub fn training(cfg: &ModelConfig, elem: u64, rows: u64, seq_len: u64) -> MemoryEstimate {
    let (c, ff, v) = (cfg.hidden_size as u64, cfg.intermediate_size as u64, cfg.vocab_size as u64);
    let (qd, kvd, nh) = (cfg.q_dim() as u64, cfg.kv_dim() as u64, cfg.num_attention_heads as u64);
    let per_row_layer = add(&[mul(&[4, c]), mul(&[2, qd]), mul(&[2, kvd]), mul(&[3, ff]), mul(&[nh, seq_len]), 2]);
    let head = mul(&[2, HEAD_ROWS as u64, v]);
    let acts = add(&[mul(&[rows, add(&[mul(&[cfg.num_hidden_layers as u64, per_row_layer]), mul(&[4, c]), 2])]), head]);
    let p = params(cfg);
    MemoryEstimate { weights: mul(&[p, elem]), kv_cache: 0, activations: mul(&[acts, elem]), optimizer: mul(&[p, add(&[elem, 8])]) }
}

/// The memory this process may still use: MemAvailable from /proc/meminfo, lowered to what the
/// process's cgroup (a container's limit) leaves, where one is set. None where neither can be read:
/// then nothing is refused.
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| mem_available(&t));
    let cgroup =
        std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|t| cgroup_available(Path::new("/sys/fs/cgroup"), &t));
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// MemAvailable of a /proc/meminfo text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// What the memory cgroups of this process leave: the minimum of limit − usage over the process's
/// cgroup and its ancestors (a parent's limit binds its children too). `root` is where the cgroup file
/// systems are mounted (`/sys/fs/cgroup`), `proc_self_cgroup` the text of /proc/self/cgroup.
/// cgroup v2 (`0::/path`): `root/path/memory.max` ("max" = no limit) and `memory.current`;
/// v1 (`N:…memory…:/path`): `root/memory/path/memory.limit_in_bytes` and `memory.usage_in_bytes`.
/// None when no limit is found.
pub fn cgroup_available(root: &Path, proc_self_cgroup: &str) -> Option<u64> {
    let mut best: Option<u64> = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (base, limit_file, usage_file) = if id == "0" && controllers.is_empty() {
            (root.to_path_buf(), "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes", "memory.usage_in_bytes")
        } else {
            continue;
        };
        // from the process's own cgroup up to the root of the hierarchy (inside a container the
        // path may not exist under the mount: then only the levels that do are read)
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
            if let (Some(limit), Some(usage)) = (read(limit_file), read(usage_file)) {
                if let (Ok(limit), Ok(usage)) = (limit.trim().parse::<u64>(), usage.trim().parse::<u64>()) {
                    let left = limit.saturating_sub(usage);
                    best = Some(best.map_or(left, |b| b.min(left)));
                }
            }
            if dir == base || !dir.pop() || !dir.starts_with(&base) {
                break;
            }
        }
    }
    best
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
