//! GPU rotary embedding against cpu::rope::rope_fwd with f64 tables at the same positions.

mod gpu_common;
use drpo::gpu::{self, bf16, Gpu, GpuFloat};
use gpu_common::*;
use rand::Rng;

fn check<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    for (n, heads, hd, max_pos) in [(1, 1, 2, 1), (3, 3, 16, 40), (37, 14, 64, 4096), (5, 2, 128, 32_768)] {
        let theta = 1e6;
        let x = uniform::<T>(rng, n * heads * hd, 3.0);
        let pos: Vec<usize> = (0..n).map(|_| rng.random_range(0..max_pos)).collect();
        let (cos64, sin64) = drpo::cpu::rope::rope_tables::<f64>(&pos, hd, theta);
        let mut want = widen(&x);
        drpo::cpu::rope::rope_fwd(&mut want, &cos64, &sin64, heads, hd);
        let (cos, sin) = gpu::rope::rope_table(max_pos, hd, theta);
        let (cd, sd) = (gpu.htod(&cos)?, gpu.htod(&sin)?);
        let pd = gpu.htod(&pos.iter().map(|&p| p as i32).collect::<Vec<_>>())?;
        let mut xd = gpu.htod(&x)?;
        gpu::rope::rope_fwd(gpu, &mut xd.as_view_mut(), &pd.as_view(), &cd.as_view(), &sd.as_view(), n, heads, hd)?;
        let got = widen(&gpu.dtoh(&xd)?);
        // f32: x·cos − y·sin cancels, so its rounding error (≲ 4·2^-24·3 absolute, f32 tables included)
        // scales with the inputs (|x| ≤ 3), not with the result: the f32 preset with the floor at the
        // input scale (emulated: rel_l2 5e-8, worst 1.2e-7; at floor 1e-6 a cancelled element reads 2e-2).
        // bf16: rounded once; the f32 error adds ≤ 7e-4 to the worst at floor 1e-3 (emulated 3.9e-3).
        let bound = if T::NAME == "f32" { F32.floor(Floor::Abs(3.0)) } else { BF16_ONCE };
        assert_close(&format!("rope {} n={n} heads={heads} hd={hd}", T::NAME), &got, &want, bound);
    }
    // a position past the table (or negative) is a NaN row, not a read out of bounds; other rows are untouched
    let (heads, hd, max_pos) = (2, 8, 5);
    let x = uniform::<T>(rng, 4 * heads * hd, 1.0);
    let pos = [1i32, 5, 4, -1];
    let (cos, sin) = gpu::rope::rope_table(max_pos, hd, 1e4);
    let (cd, sd, pd) = (gpu.htod(&cos)?, gpu.htod(&sin)?, gpu.htod(&pos)?);
    let mut xd = gpu.htod(&x)?;
    gpu::rope::rope_fwd(gpu, &mut xd.as_view_mut(), &pd.as_view(), &cd.as_view(), &sd.as_view(), 4, heads, hd)?;
    let got = widen(&gpu.dtoh(&xd)?);
    let row = heads * hd;
    assert!(got[row..2 * row].iter().chain(&got[3 * row..]).all(|v| v.is_nan()), "rows at positions 5 ≥ max_pos and -1 must be NaN");
    assert!(got[..row].iter().chain(&got[2 * row..3 * row]).all(|v| v.is_finite()), "rows at valid positions");
    Ok(())
}

#[test]
fn rope_fwd_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("rope_fwd");
    for gpu in devices("rope_fwd") {
        check::<f32>(&gpu, &mut rng)?;
        check::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}

/// The GPU rotary backward (rotation by −angle, in place) against cpu::rope::rope_bwd: in f64 with f64
/// tables (the bounds of the forward), and bit for bit against the CPU f32 path on the same f32 tables
/// (the kernel rounds each product and the sum as the CPU does).
fn check_bwd<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    for (n, heads, hd, max_pos) in [(1, 1, 2, 1), (3, 3, 16, 40), (37, 14, 64, 4096), (5, 2, 128, 32_768)] {
        let theta = 1e6;
        let dy = uniform::<T>(rng, n * heads * hd, 3.0);
        let pos: Vec<usize> = (0..n).map(|_| rng.random_range(0..max_pos)).collect();
        let (cos64, sin64) = drpo::cpu::rope::rope_tables::<f64>(&pos, hd, theta);
        let mut want = widen(&dy);
        drpo::cpu::rope::rope_bwd(&mut want, &cos64, &sin64, heads, hd);
        let (cos, sin) = gpu::rope::rope_table(max_pos, hd, theta);
        let (cd, sd) = (gpu.htod(&cos)?, gpu.htod(&sin)?);
        let pd = gpu.htod(&pos.iter().map(|&p| p as i32).collect::<Vec<_>>())?;
        let mut dxd = gpu.htod(&dy)?;
        gpu::rope::rope_bwd(gpu, &mut dxd.as_view_mut(), &pd.as_view(), &cd.as_view(), &sd.as_view(), n, heads, hd)?;
        let got = gpu.dtoh(&dxd)?;
        // the forward's bounds: the same products, the opposite signs
        let bound = if T::NAME == "f32" { F32.floor(Floor::Abs(3.0)) } else { BF16_ONCE };
        let what = format!("rope_bwd {} n={n} heads={heads} hd={hd}", T::NAME);
        assert_close(&what, &widen(&got), &want, bound);
        // bit for bit: the CPU f32 path on the f32 tables at these positions, rounded to T once
        let (cos32, sin32) = drpo::cpu::rope::rope_tables::<f32>(&pos, hd, theta);
        let mut want32: Vec<f32> = dy.iter().map(|v| v.to_f32()).collect();
        drpo::cpu::rope::rope_bwd(&mut want32, &cos32, &sin32, heads, hd);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        let want_t: Vec<f32> = want32.iter().map(|&v| T::from_f32(v).to_f32()).collect();
        assert_eq!(bits(&got.iter().map(|v| v.to_f32()).collect::<Vec<_>>()), bits(&want_t), "{what}: not bit for bit with the CPU f32 path");
    }
    Ok(())
}

#[test]
fn rope_bwd_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("rope_bwd");
    for gpu in devices("rope_bwd") {
        check_bwd::<f32>(&gpu, &mut rng)?;
        check_bwd::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}
