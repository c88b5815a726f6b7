//! GPU SwiGLU (on the fused gate|up rows) and residual add against the CPU definitions.

mod gpu_common;
use drpo::gpu::{self, bf16, Gpu, GpuFloat};
use gpu_common::*;

fn check<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    for (n, ff) in [(1, 1), (3, 37), (64, 4864), (2, 176)] {
        let gu = uniform::<T>(rng, n * 2 * ff, 6.0);
        let wide = widen(&gu);
        let (mut gate, mut up) = (Vec::new(), Vec::new());
        for r in 0..n {
            gate.extend_from_slice(&wide[r * 2 * ff..r * 2 * ff + ff]);
            up.extend_from_slice(&wide[r * 2 * ff + ff..(r + 1) * 2 * ff]);
        }
        let mut want = vec![0.0; n * ff];
        drpo::cpu::swiglu::swiglu_fwd(&mut want, &gate, &up);
        let mut out = gpu.htod(&nan::<T>(n * ff))?;
        let gud = gpu.htod(&gu)?;
        gpu::swiglu::swiglu_fwd(gpu, &mut out.as_view_mut(), &gud.as_view(), n, ff)?;
        let got = widen(&gpu.dtoh(&out)?);
        // silu(g)·u: products and one quotient in f32 (expf ≤ 2 ulp), rounded once to T
        assert_close(&format!("swiglu {} n={n} ff={ff}", T::NAME), &got, &want, once::<T>());
    }
    for len in [1, 1000, 64 * 896 + 3] {
        let (x, y) = (uniform::<T>(rng, len, 10.0), uniform::<T>(rng, len, 10.0));
        // one f32 addition rounded once to T: bit for bit what the host computes
        let bits = |v: &[T]| v.iter().map(|v| v.to_f32().to_bits()).collect::<Vec<u32>>();
        let want: Vec<T> = x.iter().zip(&y).map(|(a, b)| T::from_f32(a.to_f32() + b.to_f32())).collect();
        let (mut xd, yd) = (gpu.htod(&x)?, gpu.htod(&y)?);
        gpu::residual::residual_add(gpu, &mut xd.as_view_mut(), &yd.as_view())?;
        let got = gpu.dtoh(&xd)?;
        assert_eq!(bits(&got), bits(&want), "residual_add {} len={len}: not bit for bit", T::NAME);
    }
    Ok(())
}

#[test]
fn swiglu_and_residual_gpu_match_cpu() -> drpo::Result<()> {
    let mut rng = rng("swiglu_fwd");
    for gpu in devices("swiglu_fwd") {
        check::<f32>(&gpu, &mut rng)?;
        check::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}

/// dgu of the GPU SwiGLU backward against cpu::swiglu::swiglu_bwd in f64 on the stored values; dgu is
/// prefilled with random values (the kernel accumulates).
fn check_bwd<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    for (n, ff) in [(1, 1), (3, 37), (64, 4864), (2, 176)] {
        let (gu, dout, dgu0) = (uniform::<T>(rng, n * 2 * ff, 6.0), uniform::<T>(rng, n * ff, 2.0), uniform::<T>(rng, n * 2 * ff, 1.0));
        // the reference's separate gate / up (and dgate / dup) are the two halves of each fused row
        let halves = |v: &[f64]| -> (Vec<f64>, Vec<f64>) {
            let rows = v.chunks_exact(2 * ff);
            (rows.clone().flat_map(|r| r[..ff].to_vec()).collect(), rows.flat_map(|r| r[ff..].to_vec()).collect())
        };
        let ((gate, up), (mut dgate, mut dup)) = (halves(&widen(&gu)), halves(&widen(&dgu0)));
        drpo::cpu::swiglu::swiglu_bwd(&mut dgate, &mut dup, &widen(&dout), &gate, &up);
        let want: Vec<f64> = dgate.chunks_exact(ff).zip(dup.chunks_exact(ff)).flat_map(|(g, u)| g.iter().chain(u).copied()).collect();
        let mut dgu = gpu.htod(&dgu0)?;
        let (dd, gud) = (gpu.htod(&dout)?, gpu.htod(&gu)?);
        gpu::swiglu::swiglu_bwd(gpu, &mut dgu.as_view_mut(), &dd.as_view(), &gud.as_view(), n, ff)?;
        // f32 products and expf (≤ 2 ulp), the sum with the prefill rounded once to T. The prefill and
        // the one product term added to it can cancel, so the error scales with the terms: each output
        // is held to |prefill| + |want − prefill| (that product's magnitude).
        let prefill = widen(&dgu0);
        let terms: Vec<f64> = want.iter().zip(&prefill).map(|(w, p)| p.abs() + (w - p).abs()).collect();
        let bound = if T::NAME == "f32" { F32.floor(Floor::Rms) } else { BF16_ONCE };
        assert_close_terms(&format!("swiglu_bwd {} n={n} ff={ff}", T::NAME), &widen(&gpu.dtoh(&dgu)?), &want, &terms, bound);
    }
    Ok(())
}

#[test]
fn swiglu_bwd_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("swiglu_bwd");
    for gpu in devices("swiglu_bwd") {
        check_bwd::<f32>(&gpu, &mut rng)?;
        check_bwd::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}
