//! Launchers of `cuda/optim.cu`: the global gradient norm, clipping and the AdamW update on the flat
//! f32 buffers, each bit-identical to its CPU counterpart in `crate::optim`.

use super::{blocks, bf16, grid_dims, DView, DViewMut, Gpu, LaunchCfg, OPTIM};
use crate::error::{check_len, Result};
use crate::optim::{AdamWScalars, CHUNK};

/// Blocks of an element-wise grid-stride launch: enough to fill the device, never more than needed.
fn elementwise_grid(gpu: &Gpu, n: usize) -> usize {
    blocks(n, 256).clamp(1, 16 * gpu.sm_count.max(1))
}

/// Chunk sums the norm needs: `[ceil(n / optim::CHUNK)]` f64 (at least one).
pub fn grad_norm_scratch_len(n: usize) -> usize {
    n.div_ceil(CHUNK).max(1)
}

/// `optim::global_grad_norm` of `g`, bit for bit, written to `norm[0]` (f64) on the device.
/// g: `[n]`   partial: `[grad_norm_scratch_len(n)]` scratch   norm: `[1]`
pub fn grad_norm(gpu: &Gpu, norm: &mut DViewMut<f64>, partial: &mut DViewMut<f64>, g: &DView<f32>) -> Result<()> {
    const OP: &str = "grad_norm";
    let n = g.len();
    let chunks = n.div_ceil(CHUNK);
    check_len(OP, "norm", norm.len(), 1)?;
    check_len(OP, "partial", partial.len(), grad_norm_scratch_len(n))?;
    let chunks32 = super::as_i32(OP, "chunks", chunks)?;
    if chunks > 0 {
        let grid = grid_dims(OP, [(blocks(chunks, 256), "chunks / 256"), (1, ""), (1, "")])?;
        let mut l = gpu.launch(&OPTIM, "grad_norm_partial_f32", LaunchCfg::new(grid, 256));
        l.arg_mut(partial).arg(g).i64(n as i64);
        // SAFETY: order and types match grad_norm_partial_f32 in cuda/optim.cu; lengths checked above.
        unsafe { l.run() }?;
    }
    let mut l = gpu.launch(&OPTIM, "grad_norm_finish", LaunchCfg::new((1, 1, 1), 256));
    l.arg_mut(norm).arg(&partial.as_view()).i32(chunks32);
    // SAFETY: order and types match grad_norm_finish; it reads `chunks` ≤ partial.len() values.
    unsafe { l.run() }
}

/// `optim::clip_grad_norm`'s scaling, given the norm on the device (from [`grad_norm`]): g ← g·c with
/// c = (f32)(max_norm / (norm + 1e-6)) when c < 1 and the norm is finite.  g: `[n]`   norm: `[1]`
pub fn clip_grad(gpu: &Gpu, g: &mut DViewMut<f32>, norm: &DView<f64>, max_norm: f64) -> Result<()> {
    check_len("clip_grad", "norm", norm.len(), 1)?;
    if g.is_empty() {
        return Ok(());
    }
    let grid = (elementwise_grid(gpu, g.len()) as u32, 1, 1);
    let n = g.len() as i64;
    let mut l = gpu.launch(&OPTIM, "clip_grad_f32", LaunchCfg::new(grid, 256));
    l.arg_mut(g).arg(norm).i64(n).f64(max_norm);
    // SAFETY: order and types match clip_grad_f32 in cuda/optim.cu; grid-stride over g's n values.
    unsafe { l.run() }
}

/// The moments and parameters one AdamW step updates, and the optional bf16 copy it writes.
/// All `[n]`, flat in `ParamLayout` order.
pub struct AdamWBuffers<'a, 'b> {
    pub params: &'a mut DViewMut<'b, f32>,
    pub m: &'a mut DViewMut<'b, f32>,
    pub v: &'a mut DViewMut<'b, f32>,
    /// the bf16 compute copy of the updated parameters, when the model keeps one
    pub params_bf16: Option<&'a mut DViewMut<'b, bf16>>,
}

/// One `AdamWState::step` on the device, bit for bit: `k` = `AdamWScalars::new(cfg, lr, t)` of the
/// step (t counted after incrementing, as the CPU does). With `clip = Some((norm, max_norm))` the
/// gradient is scaled first exactly as [`clip_grad`] would (fused: `g` is not rewritten).
/// g: `[n]`   norm: `[1]`
pub fn adamw_step(
    gpu: &Gpu,
    bufs: AdamWBuffers,
    g: &DView<f32>,
    clip: Option<(&DView<f64>, f64)>,
    k: &AdamWScalars<f32>,
) -> Result<()> {
    const OP: &str = "adamw_step";
    let n = bufs.params.len();
    check_len(OP, "g", g.len(), n)?;
    check_len(OP, "m", bufs.m.len(), n)?;
    check_len(OP, "v", bufs.v.len(), n)?;
    if let Some(b) = &bufs.params_bf16 {
        check_len(OP, "params_bf16", b.len(), n)?;
    }
    if let Some((norm, _)) = clip {
        check_len(OP, "grad_norm", norm.len(), 1)?;
    }
    if n == 0 {
        return Ok(());
    }
    let grid = (elementwise_grid(gpu, n) as u32, 1, 1);
    let mut l = gpu.launch(&OPTIM, "adamw_step_f32", LaunchCfg::new(grid, 256));
    l.arg_mut(bufs.params).arg_mut(bufs.m).arg_mut(bufs.v);
    match bufs.params_bf16 {
        Some(b) => l.arg_mut(b),
        None => l.arg_opt::<bf16>(None),
    };
    l.arg(g).arg_opt(clip.map(|c| c.0)).i64(n as i64).f64(clip.map_or(0.0, |c| c.1));
    l.f32(k.decay).f32(k.step_size).f32(k.one_minus_b1).f32(k.b2).f32(k.one_minus_b2);
    l.i32(k.lerp_low as i32).f32(k.one_minus_w).f32(k.bc2_sqrt).f32(k.eps);
    // SAFETY: order and types match adamw_step_f32 in cuda/optim.cu; lengths checked above (the
    // optional pointers are null or views of n values / one norm); grid-stride over n.
    unsafe { l.run() }
}
