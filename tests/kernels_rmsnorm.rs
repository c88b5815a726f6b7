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

/// dx, dw of a GPU RMSNorm backward against cpu::rmsnorm::rmsnorm_bwd in f64 on the stored values,
/// both outputs prefilled with random values (the kernels accumulate, `+=`).
fn check_bwd<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    // odd sizes; 17 and 40 rows span several 16-row dw partials; the Qwen2-0.5B widths; |x| ~ 1e4
    for (n, c, scale) in [(1, 1, 4.0), (3, 33, 4.0), (17, 300, 4.0), (40, 896, 4.0), (5, 4864, 4.0), (9, 896, 1e4)] {
        let (x, w, dout) = (uniform::<T>(rng, n * c, scale), uniform::<T>(rng, c, 1.0), uniform::<T>(rng, n * c, 1.0));
        let (dx0, dw0) = (uniform::<T>(rng, n * c, 1.0), uniform::<f32>(rng, c, 1.0));
        // rstd as the forward stores it: f32 (the reference reads the same rounded values)
        let (mut y, mut rstd64) = (vec![0.0; n * c], vec![0.0; n]);
        drpo::cpu::rmsnorm::rmsnorm_fwd(&mut y, &mut rstd64, &widen(&x), &widen(&w), c, 1e-6);
        let rstd: Vec<f32> = rstd64.iter().map(|&s| s as f32).collect();
        let (mut want_dx, mut want_dw) = (widen(&dx0), widen(&dw0));
        drpo::cpu::rmsnorm::rmsnorm_bwd(&mut want_dx, &mut want_dw, &widen(&dout), &widen(&x), &widen(&w), &widen(&rstd), c);
        let (mut dx, mut dw) = (gpu.htod(&dx0)?, gpu.htod(&dw0)?);
        let mut part = gpu.htod(&vec![f32::NAN; gpu::rmsnorm::bwd_scratch_len(n, c)])?;
        let (dd, xd, wd, rd) = (gpu.htod(&dout)?, gpu.htod(&x)?, gpu.htod(&w)?, gpu.htod(&rstd)?);
        gpu::rmsnorm::rmsnorm_bwd(gpu, &mut dx.as_view_mut(), &mut dw.as_view_mut(), &mut part.as_view_mut(), &dd.as_view(), &xd.as_view(), &wd.as_view(), &rd.as_view(), n, c)?;
        let what = format!("rmsnorm_bwd {} n={n} c={c} |x|≤{scale}", T::NAME);
        // Both outputs are sums that can cancel (dx0 + rstd·g − k·x; dw0 + Σ_r dout·x·rstd), and with few
        // terms (n = c = 1) the sum can come out far smaller than its terms: the f32 error scales with
        // Σ|terms|, not with the result, so both are held to the magnitude of their terms.
        let (xw, ww, dw64, rw) = (widen(&x), widen(&w), widen(&dout), widen(&rstd));
        let mut dx_terms: Vec<f64> = widen(&dx0).iter().map(|v| v.abs()).collect();
        let mut dw_terms: Vec<f64> = widen(&dw0).iter().map(|v| v.abs()).collect();
        for r in 0..n {
            let (xr, dr, s) = (&xw[r * c..(r + 1) * c], &dw64[r * c..(r + 1) * c], rw[r]);
            let gx_abs: f64 = (0..c).map(|i| (ww[i] * dr[i] * xr[i]).abs()).sum();
            for i in 0..c {
                dx_terms[r * c + i] += (s * ww[i] * dr[i]).abs() + (s * s * s / c as f64 * xr[i]).abs() * gx_abs;
                dw_terms[i] += (dr[i] * xr[i] * s).abs();
            }
        }
        // f32: products and fixed-order sums, a few roundings of the terms. bf16: dx's one rounding to
        // bf16 (≤ 2^-8 of |dx| ≤ its terms) dominates, the single-rounding preset.
        assert_close_terms(&format!("{what} dx"), &widen(&gpu.dtoh(&dx)?), &want_dx, &dx_terms, once::<T>());
        // dw is f32 on both storage types
        assert_close_terms(&format!("{what} dw"), &widen(&gpu.dtoh(&dw)?), &want_dw, &dw_terms, F32);
    }
    Ok(())
}

#[test]
fn rmsnorm_bwd_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("rmsnorm_bwd");
    for gpu in devices("rmsnorm_bwd") {
        check_bwd::<f32>(&gpu, &mut rng)?;
        check_bwd::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}
