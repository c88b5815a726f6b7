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
