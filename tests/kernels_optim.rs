//! The device optimizer against `drpo::optim`, bit for bit: the global gradient norm (the CPU's
//! chunked f64 order), clipping (separate and fused into the update), and AdamW over many steps in
//! torch's CUDA rounding order, with the bf16 compute copy of the weights.

mod gpu_common;
use drpo::gpu::{self, bf16, optim::AdamWBuffers, Gpu};
use drpo::optim::{clip_grad_norm, global_grad_norm, AdamWConfig, AdamWScalars, AdamWState, LrDecay, LrSchedule, CHUNK};
use gpu_common::*;
use rand::{rngs::StdRng, Rng};

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Sizes: one element, odd, one chunk ±1, several chunks with a partial one, more chunks than a warp
/// owns (32), and more than a block of either kernel handles at once (256; 8.4M elements, ~2 s on the
/// simulator).
const SIZES: [usize; 8] = [1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17, 40 * CHUNK + 5, 257 * CHUNK + 3];

fn check_norm_and_clip(gpu: &Gpu, rng: &mut StdRng) -> drpo::Result<()> {
    for n in SIZES {
        for scale in [1e-3f32, 1.0, 1e4] {
            let g = mixed_gradients(rng, n, scale);
            let mut want_g = g.clone();
            let want_norm = clip_grad_norm(&mut want_g, 1.0);
            assert_eq!(want_norm.to_bits(), global_grad_norm(&g).to_bits());
            let mut gd = gpu.htod(&g)?;
            let mut norm = gpu.htod(&[f64::NAN])?;
            let mut partial = gpu.htod(&vec![f64::NAN; gpu::optim::grad_norm_scratch_len(n)])?;
            gpu::optim::grad_norm(gpu, &mut norm.as_view_mut(), &mut partial.as_view_mut(), &gd.as_view())?;
            let got_norm = gpu.dtoh(&norm)?[0];
            println!("grad_norm n={n} scale={scale}: {got_norm:e} (cpu {want_norm:e})");
            assert_eq!(got_norm.to_bits(), want_norm.to_bits(), "grad_norm n={n}: got {got_norm:e} want {want_norm:e}");
            gpu::optim::clip_grad(gpu, &mut gd.as_view_mut(), &norm.as_view(), 1.0)?;
            assert_bits(&format!("clip_grad n={n} scale={scale}"), &gpu.dtoh(&gd)?, &want_g);
        }
    }
    // non-finite norms leave the gradient alone, as on the CPU
    for bad in [f32::INFINITY, f32::NAN] {
        let mut g = mixed_gradients(rng, 3 * CHUNK + 1, 1.0);
        g[2 * CHUNK + 7] = bad;
        let want_norm = global_grad_norm(&g);
        let mut gd = gpu.htod(&g)?;
        let mut norm = gpu.htod(&[0.0f64])?;
        let mut partial = gpu.alloc_zeros::<f64>(gpu::optim::grad_norm_scratch_len(g.len()))?;
        gpu::optim::grad_norm(gpu, &mut norm.as_view_mut(), &mut partial.as_view_mut(), &gd.as_view())?;
        let got_norm = gpu.dtoh(&norm)?[0];
        assert!(got_norm.to_bits() == want_norm.to_bits() || (got_norm.is_nan() && want_norm.is_nan()), "{got_norm} vs {want_norm}");
        gpu::optim::clip_grad(gpu, &mut gd.as_view_mut(), &norm.as_view(), 1.0)?;
        assert_eq!(bits(&gpu.dtoh(&gd)?), bits(&g), "a non-finite norm must leave the gradient unchanged");
    }
    Ok(())
}

/// `steps` AdamW steps on the device and on the CPU from the same start, fresh gradients each step
/// (some clipped, some not), compared bit for bit after every step.
fn check_adamw(gpu: &Gpu, rng: &mut StdRng, n: usize, cfg: &AdamWConfig, fused: bool, steps: u64) -> drpo::Result<()> {
    let what = format!("adamw n={n} beta1={} {}", cfg.beta1, if fused { "fused clip" } else { "clip_grad then step" });
    let sched = LrSchedule { lr: 3e-3, warmup_steps: 3, decay: LrDecay::Cosine { min_lr: 1e-4, total_steps: steps } };
    let mut params: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let mut state = AdamWState::<f32>::new(n);
    let mut pd = gpu.htod(&params)?;
    let (mut md, mut vd) = (gpu.alloc_zeros::<f32>(n)?, gpu.alloc_zeros::<f32>(n)?);
    let mut pbf = gpu.htod(&vec![bf16::NAN; n])?;
    let mut norm = gpu.alloc_zeros::<f64>(1)?;
    let mut partial = gpu.alloc_zeros::<f64>(gpu::optim::grad_norm_scratch_len(n))?;
    let mut clipped_steps = 0;
    for step in 0..steps {
        // norms from ~0.03·sqrt(n) to ~30·sqrt(n) around max_norm = 1·sqrt(n)/3
        let scale = [0.03f32, 0.3, 3.0, 30.0][step as usize % 4];
        let g = mixed_gradients(rng, n, scale);
        let max_norm = (n as f64).sqrt() / 3.0;
        let mut cpu_g = g.clone();
        let cpu_norm = clip_grad_norm(&mut cpu_g, max_norm);
        clipped_steps += (max_norm / (cpu_norm + 1e-6) < 1.0) as usize;
        let lr = sched.lr_at(state.step);
        state.step(&mut params, &cpu_g, cfg, lr);

        let mut gd = gpu.htod(&g)?;
        gpu::optim::grad_norm(gpu, &mut norm.as_view_mut(), &mut partial.as_view_mut(), &gd.as_view())?;
        let k = AdamWScalars::<f32>::new(cfg, lr, step + 1);
        let (mut p, mut m, mut v, mut b) = (pd.as_view_mut(), md.as_view_mut(), vd.as_view_mut(), pbf.as_view_mut());
        let bufs = AdamWBuffers { params: &mut p, m: &mut m, v: &mut v, params_bf16: Some(&mut b) };
        if fused {
            gpu::optim::adamw_step(gpu, bufs, &gd.as_view(), Some((&norm.as_view(), max_norm)), &k)?;
        } else {
            gpu::optim::clip_grad(gpu, &mut gd.as_view_mut(), &norm.as_view(), max_norm)?;
            gpu::optim::adamw_step(gpu, bufs, &gd.as_view(), None, &k)?;
        }
        assert_eq!(gpu.dtoh(&norm)?[0].to_bits(), cpu_norm.to_bits(), "{what} step {step}: grad norm");
        assert_bits(&format!("{what} step {step}: params"), &gpu.dtoh(&pd)?, &params);
        assert_bits(&format!("{what} step {step}: m"), &gpu.dtoh(&md)?, &state.m);
        assert_bits(&format!("{what} step {step}: v"), &gpu.dtoh(&vd)?, &state.v);
        let want_bf16: Vec<u16> = params.iter().map(|&p| bf16::from_f32(p).to_bits()).collect();
        let got_bf16: Vec<u16> = gpu.dtoh(&pbf)?.iter().map(|b| b.to_bits()).collect();
        assert!(got_bf16 == want_bf16, "{what} step {step}: bf16 copy differs from half::bf16::from_f32(params)");
    }
    println!("{what}: {steps} steps bit-identical ({clipped_steps} clipped)");
    assert!(clipped_steps > 0 && clipped_steps < steps as usize, "{what}: the test must clip some steps and not others");
    Ok(())
}

#[test]
fn grad_norm_and_clip_gpu_match_cpu_bit_for_bit() -> drpo::Result<()> {
    let mut rng = rng("grad_norm");
    for gpu in devices("grad_norm") {
        check_norm_and_clip(&gpu, &mut rng)?;
    }
    Ok(())
}

#[test]
fn adamw_gpu_matches_cpu_bit_for_bit() -> drpo::Result<()> {
    let mut rng = rng("adamw_step");
    for gpu in devices("adamw_step") {
        // torch's lerp_ has two forms: β1 = 0.9 uses m + (1 − β1)(g − m), β1 = 0.3 uses g − (g − m)·β1
        for cfg in [AdamWConfig::default(), AdamWConfig { beta1: 0.3, beta2: 0.95, eps: 1e-6, weight_decay: 0.1 }] {
            for (n, fused) in [(1, true), (1000, false), (CHUNK + 77, true), (3 * CHUNK + 5, false)] {
                check_adamw(&gpu, &mut rng, n, &cfg, fused, 24)?;
            }
        }
        // without the bf16 copy and without clipping
        let n = 4097;
        let g: Vec<f32> = mixed_gradients(&mut rng, n, 1.0);
        let mut params: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let mut pd = gpu.htod(&params)?;
        let (mut md, mut vd) = (gpu.alloc_zeros::<f32>(n)?, gpu.alloc_zeros::<f32>(n)?);
        let mut state = AdamWState::<f32>::new(n);
        let cfg = AdamWConfig::default();
        state.step(&mut params, &g, &cfg, 1e-3);
        let gd = gpu.htod(&g)?;
        let (mut p, mut m, mut v) = (pd.as_view_mut(), md.as_view_mut(), vd.as_view_mut());
        let bufs = AdamWBuffers { params: &mut p, m: &mut m, v: &mut v, params_bf16: None };
        gpu::optim::adamw_step(&gpu, bufs, &gd.as_view(), None, &AdamWScalars::new(&cfg, 1e-3, 1))?;
        assert_bits("adamw without bf16 copy or clip", &gpu.dtoh(&pd)?, &params);
    }
    Ok(())
}
