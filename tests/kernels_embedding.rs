//! GPU embedding gather against cpu::embedding::embedding_fwd (a copy: bit-exact).

mod gpu_common;
use drpo::gpu::{self, bf16, Gpu, GpuFloat};
use gpu_common::*;
use rand::Rng;

fn check<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    for (n, c, v) in [(1, 1, 1), (3, 33, 7), (17, 300, 50), (64, 896, 1000), (5, 896, 151_936)] {
        let table = uniform::<T>(rng, v * c, 2.0);
        let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
        let mut want = vec![0.0; n * c];
        drpo::cpu::embedding::embedding_fwd(&mut want, &ids, &widen(&table), c);
        let mut out = gpu.htod(&nan::<T>(n * c))?;
        let (idd, td) = (gpu.htod(&ids)?, gpu.htod(&table)?);
        gpu::embedding::embedding_fwd(gpu, &mut out.as_view_mut(), &idd.as_view(), &td.as_view(), n, c, v)?;
        let got = widen(&gpu.dtoh(&out)?);
        assert_close(&format!("embedding {} n={n} c={c} v={v}", T::NAME), &got, &want, EXACT);
    }
    // an id past the table is a NaN row, not a read out of bounds
    let (c, v) = (40, 3);
    let table = uniform::<T>(rng, v * c, 1.0);
    let ids = [1u32, 3, 0];
    let mut out = gpu.htod(&vec![T::from_f32(0.0); 3 * c])?;
    let (idd, td) = (gpu.htod(&ids)?, gpu.htod(&table)?);
    gpu::embedding::embedding_fwd(gpu, &mut out.as_view_mut(), &idd.as_view(), &td.as_view(), 3, c, v)?;
    let got = widen(&gpu.dtoh(&out)?);
    assert!(got[c..2 * c].iter().all(|x| x.is_nan()), "row of id 3 ≥ v = 3 must be NaN");
    assert_eq!(&got[..c], &widen(&table)[c..2 * c]);
    Ok(())
}

#[test]
fn embedding_fwd_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("embedding_fwd");
    for gpu in devices("embedding_fwd") {
        check::<f32>(&gpu, &mut rng)?;
        check::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}

/// The GPU embedding backward (sorted segments, no atomics) against cpu::embedding::embedding_bwd in
/// f32 on the same values: bit for bit (each table element sums its rows in the CPU's order).
fn check_bwd<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    // many repeats of few ids, odd widths, the Qwen2-0.5B width, a wide vocabulary
    for (n, c, v) in [(1, 1, 1), (3, 33, 2), (40, 300, 5), (64, 896, 1000), (300, 64, 50_000)] {
        let dout = uniform::<T>(rng, n * c, 2.0);
        let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
        let dtable0 = uniform::<f32>(rng, v * c, 1.0);
        let mut want = dtable0.clone();
        drpo::cpu::embedding::embedding_bwd(&mut want, &dout.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), &ids, c);
        let plan = gpu::embedding::EmbeddingGradPlan::new(gpu, &ids, v)?;
        let (mut dt, dd) = (gpu.htod(&dtable0)?, gpu.htod(&dout)?);
        gpu::embedding::embedding_bwd(gpu, &mut dt.as_view_mut(), &dd.as_view(), &plan, c)?;
        let got = gpu.dtoh(&dt)?;
        let what = format!("embedding_bwd {} n={n} c={c} v={v} ({} distinct ids)", T::NAME, plan.segments());
        assert_close(&what, &widen(&got), &widen(&want), EXACT);
    }
    // an id past the table is an input error naming its row; an empty batch changes nothing
    let e = gpu::embedding::EmbeddingGradPlan::new(gpu, &[0, 4, 1], 4).err().expect("id 4 ≥ v = 4 must be refused");
    assert!(e.to_string().contains("id 4 of row 1"), "{e}");
    let plan = gpu::embedding::EmbeddingGradPlan::new(gpu, &[], 4)?;
    let mut dt = gpu.htod(&[1.0f32; 8])?;
    gpu::embedding::embedding_bwd(gpu, &mut dt.as_view_mut(), &gpu.htod(&[T::from_f32(0.0)])?.slice(0..0), &plan, 2)?;
    assert_eq!(gpu.dtoh(&dt)?, vec![1.0f32; 8]);
    Ok(())
}

#[test]
fn embedding_bwd_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("embedding_bwd");
    for gpu in devices("embedding_bwd") {
        check_bwd::<f32>(&gpu, &mut rng)?;
        check_bwd::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}
