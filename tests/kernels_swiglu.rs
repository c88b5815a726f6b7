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
