//! GPU RMSNorm against cpu::rmsnorm::rmsnorm_fwd (f64, fed the exact stored values).

mod gpu_common;
use drpo::gpu::{self, bf16, Gpu, GpuFloat};
use gpu_common::*;

fn check<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    // odd sizes, the Qwen2-0.5B widths, and one large-magnitude case
    for (n, c, scale) in [(1, 1, 4.0), (3, 33, 4.0), (5, 300, 4.0), (64, 896, 4.0), (7, 4864, 4.0), (9, 896, 1e4)] {
        let (x, w) = (uniform::<T>(rng, n * c, scale), uniform::<T>(rng, c, 1.0));
        let (mut want, mut want_rstd) = (vec![0.0; n * c], vec![0.0; n]);
        drpo::cpu::rmsnorm::rmsnorm_fwd(&mut want, &mut want_rstd, &widen(&x), &widen(&w), c, 1e-6);
        let mut out = gpu.htod(&nan::<T>(n * c))?;
        let mut rstd = gpu.htod(&vec![f32::NAN; n])?;
        let (xd, wd) = (gpu.htod(&x)?, gpu.htod(&w)?);
        gpu::rmsnorm::rmsnorm_fwd(gpu, &mut out.as_view_mut(), &mut rstd.as_view_mut(), &xd.as_view(), &wd.as_view(), n, c, 1e-6)?;
        let what = format!("rmsnorm {} n={n} c={c} |x|≤{scale}", T::NAME);
        // out: one rounding to T of an f32 product; rstd: an f32 tree sum and rsqrtf (f32 either way)
        assert_close(&format!("{what} out"), &widen(&gpu.dtoh(&out)?), &want, once::<T>());
        assert_close(&format!("{what} rstd"), &widen(&gpu.dtoh(&rstd)?), &want_rstd, F32);
    }
    Ok(())
}

#[test]
fn rmsnorm_fwd_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("rmsnorm_fwd");
    for gpu in devices("rmsnorm_fwd") {
        check::<f32>(&gpu, &mut rng)?;
        check::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}
