//! GPU linear layer (f32 CUDA cores; bf16 tensor cores, both tiles, 16-byte and scalar loads; whole-k
//! and split-k) against cpu::matmul::matmul_fwd in f64 on the exact stored values; the decoding
//! step's GEMMs at the Qwen2 shapes through the launcher's own plan; bits independent of the device
//! and of the other rows of a launch.

mod gpu_common;
use drpo::gpu::matmul::{MatmulPlan, MatmulTile};
use drpo::gpu::{self, bf16, Gpu, GpuFloat};
use gpu_common::*;

/// (n, d_in, d_out): degenerate, odd (no size a multiple of a tile), k % 8 == 0, the Qwen2-0.5B widths
/// (the last two: on the simulator under DRPO_SIM_FULL=1 only)
const SIZES: [(usize, usize, usize); 7] = [(1, 1, 1), (3, 33, 17), (130, 72, 200), (5, 300, 7), (64, 896, 1000), (200, 896, 4864), (17, 4864, 896)];

fn reference(x: &[f64], w: &[f64], b: Option<&[f64]>, n: usize, d_in: usize, d_out: usize) -> Vec<f64> {
    let mut want = vec![0.0; n * d_out];
    drpo::cpu::matmul::matmul_fwd(&mut want, x, w, b, n, d_in, d_out);
    want
}

fn check<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng, plan: MatmulPlan) -> drpo::Result<()> {
    let sizes = if full_size(gpu) { &SIZES[..] } else { &SIZES[..5] };
    for (i, &(n, d_in, d_out)) in sizes.iter().enumerate() {
        let with_bias = i % 2 == 0;
        // one spare element in front: the view at offset 1 is only 2-byte aligned -> scalar loads
        let misalign = i % 3 == 1;
        let off = misalign as usize;
        let x = uniform::<T>(rng, n * d_in + off, 1.0);
        let w = uniform::<T>(rng, d_out * d_in + off, 0.1);
        let b = uniform::<T>(rng, d_out, 0.5);
        let want = reference(&widen(&x[off..]), &widen(&w[off..]), with_bias.then(|| widen(&b)).as_deref(), n, d_in, d_out);
        let (xd, wd, bd) = (gpu.htod(&x)?, gpu.htod(&w)?, gpu.htod(&b)?);
        let mut out = gpu.htod(&nan::<T>(n * d_out))?;
        let bv = bd.as_view();
        gpu::matmul::matmul_fwd_with(gpu, plan, &mut out.as_view_mut(), &xd.slice(off..), &wd.slice(off..), with_bias.then_some(&bv), n, d_in, d_out)?;
        let got = widen(&gpu.dtoh(&out)?);
        let what = format!("matmul {} {plan:?} ({} k ranges) n={n} d_in={d_in} d_out={d_out} bias={with_bias} misaligned={misalign}", T::NAME, plan.splits(d_in));
        // Bound derived, not yet measured on a GPU. f32 (CUDA cores): one thread sums k ≤ 4864 FMAs in
        // order, a relative error ~u·sqrt(k/6) ≈ 1.7e-6 of the output scale (an f32 emulation on these
        // inputs: rel_l2 1.3e-6, worst 4.5e-6 at floor rms(want)); the terms' signs cancel, so the
        // floor is rms(want): the 1e-5 and 5σ of it. bf16: the mma accumulation (RZ alignment,
        // tc_sim-style model: ≤ 9e-7) then one rounding to bf16, which dominates (emulated 2.1e-3, 2.8e-3).
        // Split-k adds the same products in ranges, then the ranges' sums: no more roundings than that.
        // Held to Σ|terms| (the reference on |x|, |w|, |b|): with few terms ((1, 1, 1): x·w + b) the sum
        // can cancel far below its terms, and rms(want) is then no scale for the error.
        let terms = reference(&abs(&widen(&x[off..])), &abs(&widen(&w[off..])), with_bias.then(|| abs(&widen(&b))).as_deref(), n, d_in, d_out);
        let bound = if T::NAME == "f32" { chain(1e-5) } else { BF16_CHAIN };
        assert_close_terms(&what, &got, &want, &terms, bound);
        if T::NAME == "bf16" {
            // f32 output of the same product (the logits path) with the same plan: only f32
            // rounding, so the f32 bound
            let mut out32 = gpu.htod(&vec![f32::NAN; n * d_out])?;
            gpu::matmul::matmul_fwd_f32out_with(gpu, plan, &mut out32.as_view_mut(), &xd.slice(off..), &wd.slice(off..), with_bias.then_some(&bv), n, d_in, d_out)?;
            let got = widen(&gpu.dtoh(&out32)?);
            // no output rounding: the mma accumulation alone (emulated 8.6e-7, worst 2.1e-6 at floor rms)
            assert_close_terms(&format!("{what} f32-out"), &got, &want, &terms, chain(1e-5));
        }
    }
    Ok(())
}

#[test]
fn matmul_fwd_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("matmul_fwd");
    for gpu in devices("matmul_fwd") {
        check::<f32>(&gpu, &mut rng, MatmulTile::Large.into())?;
        check::<bf16>(&gpu, &mut rng, MatmulTile::Large.into())?;
        check::<bf16>(&gpu, &mut rng, MatmulTile::Small.into())?;
        // split-k forced onto every size: one k-tile per range (the most ranges), and ranges of three
        // k-tiles (300 = 3 · 96 + 12: a short last range, k not a multiple of 8)
        for k_chunk in [32, 96] {
            check::<f32>(&gpu, &mut rng, MatmulPlan::SplitK { k_chunk })?;
            check::<bf16>(&gpu, &mut rng, MatmulPlan::SplitK { k_chunk })?;
        }
    }
    Ok(())
}

/// (d_in, d_out) of the GEMMs of one decoding step: q (= o), k (= v), gate|up, down of Qwen2-0.5B and,
/// on the simulator under DRPO_SIM_FULL=1 only, of Qwen2-1.5B.
const DECODE_SHAPES: [(usize, usize); 8] = [(896, 896), (896, 128), (896, 9728), (4864, 896), (1536, 1536), (1536, 256), (1536, 17920), (8960, 1536)];

#[test]
fn matmul_decode_step_shapes_match_cpu() -> drpo::Result<()> {
    // the launcher's own plan at decode sizes (rows = sequences): split-k where the shape asks for it
    let mut rng = rng("matmul_decode");
    for gpu in devices("matmul_decode") {
        let (shapes, rows) = if full_size(&gpu) { (&DECODE_SHAPES[..], &[1, 7, 64][..]) } else { (&DECODE_SHAPES[..4], &[1, 64][..]) };
        for &(d_in, d_out) in shapes {
            for &n in rows {
                let plan = MatmulPlan::forward(&gpu, n, d_in, d_out);
                let (x, w, b) = (uniform::<bf16>(&mut rng, n * d_in, 1.0), uniform::<bf16>(&mut rng, d_out * d_in, 0.05), uniform::<bf16>(&mut rng, d_out, 0.5));
                let want = reference(&widen(&x), &widen(&w), Some(&widen(&b)), n, d_in, d_out);
                let (xd, wd, bd) = (gpu.htod(&x)?, gpu.htod(&w)?, gpu.htod(&b)?);
                let mut out = gpu.htod(&nan::<bf16>(n * d_out))?;
                gpu::matmul::matmul_fwd(&gpu, &mut out.as_view_mut(), &xd.as_view(), &wd.as_view(), Some(&bd.as_view()), n, d_in, d_out)?;
                let what = format!("decode matmul bf16 {plan:?} ({} k ranges) n={n} d_in={d_in} d_out={d_out}", plan.splits(d_in));
                assert_close(&what, &widen(&gpu.dtoh(&out)?), &want, BF16_CHAIN);
            }
        }
    }
    Ok(())
}

/// out = x·Wᵀ (+ b) through the launcher's plan, as bits: (T out, f32 out) for bf16, T out for f32.
fn forward_bits<T: GpuFloat>(gpu: &Gpu, x: &[T], w: &[T], b: &[T], n: usize, d_in: usize, d_out: usize) -> drpo::Result<Vec<u32>> {
    let (xd, wd, bd) = (gpu.htod(x)?, gpu.htod(w)?, gpu.htod(b)?);
    let mut out = gpu.htod(&nan::<T>(n * d_out))?;
    gpu::matmul::matmul_fwd(gpu, &mut out.as_view_mut(), &xd.as_view(), &wd.as_view(), Some(&bd.as_view()), n, d_in, d_out)?;
    let mut bits: Vec<u32> = gpu.dtoh(&out)?.iter().map(|v| v.to_f32().to_bits()).collect();
    if T::NAME == "bf16" {
        let mut out32 = gpu.htod(&vec![f32::NAN; n * d_out])?;
        gpu::matmul::matmul_fwd_f32out(gpu, &mut out32.as_view_mut(), &xd.as_view(), &wd.as_view(), Some(&bd.as_view()), n, d_in, d_out)?;
        bits.extend(gpu.dtoh(&out32)?.iter().map(|v| v.to_bits()));
    }
    Ok(bits)
}

fn same_bits_on_any_device<T: GpuFloat>(gpu: &mut Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    let real_sm_count = gpu.sm_count;
    // (d_in, d_out): split-k at ≤ 64 rows, and a tile choice that flips with the SM count above
    for (d_in, d_out) in [(300, 200), (896, 136)] {
        let rows = 200;
        let (x, w, b) = (uniform::<T>(rng, rows * d_in, 1.0), uniform::<T>(rng, d_out * d_in, 0.1), uniform::<T>(rng, d_out, 0.5));
        for n in [1, 5, 64, 65, rows] {
            // the plan (and for bf16 the tile) as an A100 (108 SMs), an H100 (132) and two extremes choose it
            let mut runs = Vec::new();
            for sm_count in [108, 132, 1, 1 << 20] {
                gpu.sm_count = sm_count;
                runs.push(forward_bits(gpu, &x[..n * d_in], &w, &b, n, d_in, d_out)?);
            }
            gpu.sm_count = real_sm_count;
            let plan = MatmulPlan::forward(gpu, n, d_in, d_out);
            println!("{} n={n} d_in={d_in} d_out={d_out}: {plan:?}, identical for 4 SM counts", T::NAME);
            assert!(runs.windows(2).all(|r| r[0] == r[1]), "{} n={n} d_in={d_in} d_out={d_out}: bits depend on the SM count", T::NAME);
            // a row's bits do not depend on the other rows of its launch while the plan stays the same:
            // the first rows of n against those rows alone (n ≤ 64: split-k both; above: whole k both)
            let alone = if n <= 64 { 1 } else { 65 };
            let first = forward_bits(gpu, &x[..alone * d_in], &w, &b, alone, d_in, d_out)?;
            let (per_row, got) = (alone * d_out, &runs[0]);
            assert_eq!(&got[..per_row], &first[..per_row], "{} n={n}: the first {alone} rows differ from a launch of their own", T::NAME);
            if T::NAME == "bf16" {
                let (f, g) = (n * d_out, alone * d_out);
                assert_eq!(&got[f..f + per_row], &first[g..g + per_row], "{} n={n}: f32-out rows differ from a launch of their own", T::NAME);
            }
        }
    }
    Ok(())
}

#[test]
fn matmul_bits_do_not_depend_on_the_device_or_the_batch() -> drpo::Result<()> {
    let mut rng = rng("matmul_same_bits");
    for mut gpu in devices("matmul_same_bits") {
        same_bits_on_any_device::<bf16>(&mut gpu, &mut rng)?;
        same_bits_on_any_device::<f32>(&mut gpu, &mut rng)?;
    }
    Ok(())
}

#[test]
fn matmul_is_deterministic() -> drpo::Result<()> {
    let mut rng = rng("matmul_deterministic");
    for gpu in devices("matmul_deterministic") {
        // whole k (300 rows) and split k (37 rows: 7 ranges of 128)
        for n in [300, 37] {
            let (d_in, d_out) = (896, 1000);
            let (x, w) = (uniform::<bf16>(&mut rng, n * d_in, 1.0), uniform::<bf16>(&mut rng, d_out * d_in, 0.1));
            let (xd, wd) = (gpu.htod(&x)?, gpu.htod(&w)?);
            let mut runs = Vec::new();
            for _ in 0..3 {
                let mut out = gpu.htod(&nan::<bf16>(n * d_out))?;
                gpu::matmul::matmul_fwd(&gpu, &mut out.as_view_mut(), &xd.as_view(), &wd.as_view(), None, n, d_in, d_out)?;
                runs.push(gpu.dtoh(&out)?.iter().map(|v| v.to_bits()).collect::<Vec<u16>>());
            }
            assert!(runs.windows(2).all(|r| r[0] == r[1]), "matmul results differ between runs (n = {n})");
        }
    }
    Ok(())
}

#[test]
fn matmul_refuses_a_grid_over_the_cuda_limit() -> drpo::Result<()> {
    // rows go on grid.y (≤ 65,535 blocks): one row more than 65,535 tiles of 64 is an input error
    // naming the op, not a launch failure
    for gpu in devices("matmul_grid_limit") {
        let n = 65_535 * 64 + 1;
        let (x, w) = (gpu.htod(&vec![bf16::from_f32(1.0); n])?, gpu.htod(&[bf16::from_f32(1.0)])?);
        let mut out = gpu.alloc_zeros::<bf16>(n)?;
        let e = gpu::matmul::matmul_fwd_with(&gpu, MatmulTile::Small, &mut out.as_view_mut(), &x.as_view(), &w.as_view(), None, n, 1, 1).unwrap_err();
        println!("{e}");
        assert!(matches!(e, drpo::Error::Input { .. }) && e.to_string().contains("matmul_fwd") && e.to_string().contains("65535"), "{e}");
        // 128-row tiles fit (32,768 blocks: on the simulator under DRPO_SIM_FULL=1 only)
        if full_size(&gpu) {
            gpu::matmul::matmul_fwd_with(&gpu, MatmulTile::Large, &mut out.as_view_mut(), &x.as_view(), &w.as_view(), None, n, 1, 1)?;
            assert!(gpu.dtoh(&out.slice(n - 3..))?.iter().all(|v| v.to_f32() == 1.0), "the last rows were computed");
        }
        let (x32, w32) = (gpu.htod(&vec![1.0f32; n])?, gpu.htod(&[1.0f32])?);
        let mut out32 = gpu.alloc_zeros::<f32>(n)?;
        assert!(gpu::matmul::matmul_fwd(&gpu, &mut out32.as_view_mut(), &x32.as_view(), &w32.as_view(), None, n, 1, 1).is_err());
    }
    Ok(())
}

/// (n, d_in, d_out) of the backward: degenerate, odd (no size a multiple of a tile or of 8), every
/// contiguous size % 8 == 0 (16-byte loads), more than one tile and k-tile in every dimension; then
/// the Qwen2-0.5B widths (on the simulator under DRPO_SIM_FULL=1 only).
const BWD_SIZES: [(usize, usize, usize); 7] = [(1, 1, 1), (3, 33, 17), (130, 72, 200), (5, 300, 7), (67, 136, 96), (64, 896, 1000), (200, 896, 4864)];

/// dx, dw, db of the GPU linear backward against cpu::matmul::matmul_bwd in f64 on the stored values;
/// every output prefilled with random values (the kernels accumulate).
fn check_bwd<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng, tiles: (MatmulTile, MatmulPlan)) -> drpo::Result<()> {
    let sizes = if full_size(gpu) { &BWD_SIZES[..] } else { &BWD_SIZES[..5] };
    for (i, &(n, d_in, d_out)) in sizes.iter().enumerate() {
        let with_bias = i % 2 == 0;
        // one spare element in front: views at offset 1 are only 2-byte aligned -> scalar loads
        let misalign = i % 3 == 1;
        let off = misalign as usize;
        let x = uniform::<T>(rng, n * d_in + off, 1.0);
        let w = uniform::<T>(rng, d_out * d_in + off, 0.1);
        let dout = uniform::<T>(rng, n * d_out + off, 1.0);
        let (dx0, dw0, db0) = (uniform::<T>(rng, n * d_in, 1.0), uniform::<f32>(rng, d_out * d_in, 1.0), uniform::<f32>(rng, d_out, 1.0));
        let (mut want_dx, mut want_dw, mut want_db) = (widen(&dx0), widen(&dw0), widen(&db0));
        let db_want = with_bias.then_some(&mut want_db[..]);
        drpo::cpu::matmul::matmul_bwd(&mut want_dx, &mut want_dw, db_want, &widen(&dout[off..]), &widen(&x[off..]), &widen(&w[off..]), n, d_in, d_out);
        let (xd, wd, dd) = (gpu.htod(&x)?, gpu.htod(&w)?, gpu.htod(&dout)?);
        let (mut dx, mut dw, mut db) = (gpu.htod(&dx0)?, gpu.htod(&dw0)?, gpu.htod(&db0)?);
        let mut dbv = db.as_view_mut();
        gpu::matmul::matmul_bwd_with(
            gpu,
            tiles,
            &mut dx.as_view_mut(),
            &mut dw.as_view_mut(),
            with_bias.then_some(&mut dbv),
            &dd.slice(off..),
            &xd.slice(off..),
            &wd.slice(off..),
            n,
            d_in,
            d_out,
        )?;
        let what = format!("matmul_bwd {} {tiles:?} ({} dW ranges) n={n} d_in={d_in} d_out={d_out} bias={with_bias} misaligned={misalign}", T::NAME, tiles.1.splits(n));
        // Bounds of the forward (the same main loops, sums of k ≤ 4864 terms): f32 chains with
        // cancellation, floor rms(want), the 1e-5 and 5σ of it; bf16 dx rounded once to bf16
        // (which dominates); dw is f32 whatever the operands (mma accumulation only: the f32-out bound).
        // Every output is held to Σ|terms| (the reference on absolute values, prefills included): with
        // few terms ((1, 1, 1): dx0 + dout·w) a sum can cancel far below its terms.
        let (mut dx_terms, mut dw_terms, mut db_terms) = (abs(&widen(&dx0)), abs(&widen(&dw0)), abs(&widen(&db0)));
        let db_terms_arg = with_bias.then_some(&mut db_terms[..]);
        drpo::cpu::matmul::matmul_bwd(&mut dx_terms, &mut dw_terms, db_terms_arg, &abs(&widen(&dout[off..])), &abs(&widen(&x[off..])), &abs(&widen(&w[off..])), n, d_in, d_out);
        let dx_bound = if T::NAME == "f32" { chain(1e-5) } else { BF16_CHAIN };
        assert_close_terms(&format!("{what} dx"), &widen(&gpu.dtoh(&dx)?), &want_dx, &dx_terms, dx_bound);
        assert_close_terms(&format!("{what} dw"), &widen(&gpu.dtoh(&dw)?), &want_dw, &dw_terms, chain(1e-5));
        // db: 8 strided f32 sums of ≤ n/8 terms, then their sum, plus the prefill: f32 with cancellation
        let got_db = widen(&gpu.dtoh(&db)?);
        if with_bias {
            assert_close_terms(&format!("{what} db"), &got_db, &want_db, &db_terms, F32.floor(Floor::Rms));
        } else {
            assert_eq!(got_db, widen(&db0), "{what}: db written without a bias");
        }
    }
    Ok(())
}

#[test]
fn matmul_bwd_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("matmul_bwd");
    for gpu in devices("matmul_bwd") {
        check_bwd::<f32>(&gpu, &mut rng, (MatmulTile::Large, MatmulTile::Large.into()))?;
        check_bwd::<bf16>(&gpu, &mut rng, (MatmulTile::Large, MatmulTile::Large.into()))?;
        check_bwd::<bf16>(&gpu, &mut rng, (MatmulTile::Small, MatmulTile::Small.into()))?;
        // dW with its k (the tokens) split: one k-tile per range, and ranges of two (67 = 64 + 3 tokens)
        for k_chunk in [32, 64] {
            check_bwd::<f32>(&gpu, &mut rng, (MatmulTile::Small, MatmulPlan::SplitK { k_chunk }))?;
            check_bwd::<bf16>(&gpu, &mut rng, (MatmulTile::Small, MatmulPlan::SplitK { k_chunk }))?;
        }
    }
    Ok(())
}

#[test]
fn matmul_bwd_dw_plan_matches_cpu() -> drpo::Result<()> {
    // the launcher's dW plan at Qwen2-0.5B's attention weights (k, v: 128 × 896; q, o: 896 × 896), 520
    // tokens: split k (the tokens) from the shape; on the simulator under DRPO_SIM_FULL=1 also 4096 tokens
    let mut rng = rng("matmul_bwd_dw_plan");
    for gpu in devices("matmul_bwd_dw_plan") {
        let tokens = if full_size(&gpu) { &[520, 4096][..] } else { &[520][..] };
        for &n in tokens {
            for (d_in, d_out) in [(896, 128), (896, 896)] {
                let plan = MatmulPlan::dw(&gpu, n, d_in, d_out);
                let (x, dout, dw0) = (uniform::<bf16>(&mut rng, n * d_in, 1.0), uniform::<bf16>(&mut rng, n * d_out, 1.0), uniform::<f32>(&mut rng, d_out * d_in, 1.0));
                let (mut want_dx, mut want_dw) = (vec![0.0; n * d_in], widen(&dw0));
                drpo::cpu::matmul::matmul_bwd(&mut want_dx, &mut want_dw, None, &widen(&dout), &widen(&x), &vec![0.0; d_out * d_in], n, d_in, d_out);
                let (xd, dd, mut dw) = (gpu.htod(&x)?, gpu.htod(&dout)?, gpu.htod(&dw0)?);
                gpu::matmul::matmul_bwd_dw(&gpu, plan, &mut dw.as_view_mut(), &dd.as_view(), &xd.as_view(), n, d_in, d_out)?;
                let what = format!("matmul_bwd_dw bf16 {plan:?} ({} ranges) tokens={n} d_in={d_in} d_out={d_out}", plan.splits(n));
                assert_close(&what, &widen(&gpu.dtoh(&dw)?), &want_dw, chain(1e-5));
            }
        }
    }
    Ok(())
}

#[test]
fn matmul_bwd_is_deterministic() -> drpo::Result<()> {
    // the launcher's own tile choice, three runs from the same prefill: the same bits
    let mut rng = rng("matmul_bwd_deterministic");
    for gpu in devices("matmul_bwd_deterministic") {
        // 300 tokens: the launcher's dW plan splits them (2 ranges of 160)
        let (n, d_in, d_out) = (300, 136, 260);
        assert_eq!(MatmulPlan::dw(&gpu, n, d_in, d_out), MatmulPlan::SplitK { k_chunk: 160 });
        let (x, w, dout) = (uniform::<bf16>(&mut rng, n * d_in, 1.0), uniform::<bf16>(&mut rng, d_out * d_in, 0.1), uniform::<bf16>(&mut rng, n * d_out, 1.0));
        let (xd, wd, dd) = (gpu.htod(&x)?, gpu.htod(&w)?, gpu.htod(&dout)?);
        let mut runs = Vec::new();
        for _ in 0..3 {
            let (mut dx, mut dw, mut db) = (gpu.alloc_zeros::<bf16>(n * d_in)?, gpu.alloc_zeros::<f32>(d_out * d_in)?, gpu.alloc_zeros::<f32>(d_out)?);
            gpu::matmul::matmul_bwd(&gpu, &mut dx.as_view_mut(), &mut dw.as_view_mut(), Some(&mut db.as_view_mut()), &dd.as_view(), &xd.as_view(), &wd.as_view(), n, d_in, d_out)?;
            let bits: Vec<u32> = gpu.dtoh(&dx)?.iter().map(|v| v.to_bits() as u32).chain(gpu.dtoh(&dw)?.iter().chain(&gpu.dtoh(&db)?).map(|v| v.to_bits())).collect();
            runs.push(bits);
        }
        assert!(runs.windows(2).all(|r| r[0] == r[1]), "matmul_bwd results differ between runs");
    }
    Ok(())
}
