//! Launchers of `cuda/sampling.cu`: the sampler and the Philox uniforms.

use super::{as_i32, blocks, grid_dims, DView, DViewMut, Gpu, LaunchCfg, SAMPLING};
use crate::error::{check_len, Result};
use crate::sampling::SamplingParams;

/// The `nonfinite` entry of a row whose logits are all finite.
pub const NO_NONFINITE: u32 = u32::MAX;

/// tokens[r] = `sampling::sample(logits[r], params, rng::uniform(seed, streams[r], step))`, and
/// nonfinite[r] = the lowest id of a NaN or ±inf in logits[r] ([`NO_NONFINITE`] when none): the
/// caller refuses such a row (its token is still the CPU's, but means nothing), and
/// logp[r] = `sampling::sampled_logp(logits[r], params.temperature, tokens[r])`.
/// logits: [rows, v] (f32)   streams: [rows]   tokens, nonfinite, logp: [rows]   scratch: [rows, v] (u64:
/// the fixed-point masses of `sampling::fixed_point_probs`, overwritten)
#[allow(clippy::too_many_arguments)]
pub fn sample(
    gpu: &Gpu,
    tokens: &mut DViewMut<u32>,
    nonfinite: &mut DViewMut<u32>,
    logp: &mut DViewMut<f64>,
    scratch: &mut DViewMut<u64>,
    logits: &DView<f32>,
    streams: &DView<u64>,
    rows: usize,
    v: usize,
    params: &SamplingParams,
    seed: u64,
    step: u64,
) -> Result<()> {
    const OP: &str = "sample";
    params.validate()?;
    check_len(OP, "tokens", tokens.len(), rows)?;
    check_len(OP, "nonfinite", nonfinite.len(), rows)?;
    check_len(OP, "logp", logp.len(), rows)?;
    check_len(OP, "logits", logits.len(), rows * v)?;
    check_len(OP, "streams", streams.len(), rows)?;
    check_len(OP, "scratch", scratch.len(), rows * v)?;
    if rows == 0 || v == 0 {
        return Ok(());
    }
    let name = "sampling_fwd_f32";
    let v32 = as_i32(OP, "v", v)?;
    // top-k ≥ v keeps everything, exactly like 0
    let top_k = if params.top_k >= v { 0 } else { params.top_k as i32 };
    let grid = grid_dims(OP, [(rows, "rows"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&SAMPLING, name, LaunchCfg::new(grid, 512));
    l.arg_mut(tokens).arg_mut(nonfinite).arg_mut(logp).arg_mut(scratch).arg(logits).arg(streams).i32(v32);
    l.f64(params.temperature).i32(top_k).f64(params.top_p).u64(seed).u64(step);
    // SAFETY: order and types match sampling_fwd_f32 (block 512 = SAMPLE_THREADS); lengths checked above.
    unsafe { l.run() }
}

/// out[i] = `rng::uniform(seed, streams[i], steps[i])`, computed on the device (the sampler's own
/// Philox), so tests can compare the bits with the CPU.   out, streams, steps: [n]
pub fn philox_uniform(gpu: &Gpu, out: &mut DViewMut<f64>, seed: u64, streams: &DView<u64>, steps: &DView<u64>) -> Result<()> {
    const OP: &str = "philox_uniform";
    let n = out.len();
    check_len(OP, "streams", streams.len(), n)?;
    check_len(OP, "steps", steps.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let name = "philox_uniform_f64";
    let n32 = as_i32(OP, "n", n)?;
    let grid = grid_dims(OP, [(blocks(n, 256), "n / 256"), (1, ""), (1, "")])?;
    let mut l = gpu.launch(&SAMPLING, name, LaunchCfg::new(grid, 256));
    l.arg_mut(out).u64(seed).arg(streams).arg(steps).i32(n32);
    // SAFETY: order and types match philox_uniform_f64; lengths checked above.
    unsafe { l.run() }
}
