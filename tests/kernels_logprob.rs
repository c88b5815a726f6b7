//! GPU fused head (h·Wᵀ → log-softmax / temp → gather) against cpu::matmul::matmul_fwd followed by
//! cpu::logprob::logprob_fwd, in f64 on the exact stored values. The GPU never forms the logits.

mod gpu_common;
use drpo::gpu::{self, bf16, Gpu, GpuFloat};
use gpu_common::*;
use rand::Rng;

fn check<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng, bound: Bound) -> drpo::Result<()> {
    // (n, c, v, temp, |h|): degenerate, odd, Qwen2 widths with the full vocabulary (on the simulator
    // under DRPO_SIM_FULL=1 only), more rows than one launch chunk (4096), and logits of magnitude
    // ~1e3 (a naive exp would overflow)
    let cases = [
        (1, 1, 1, 1.0, 1.0),
        (3, 33, 70, 0.6, 1.0),
        (130, 64, 1000, 1.0, 2.0),
        (5, 896, 151_936, 0.6, 1.0),
        (4100, 16, 300, 1.0, 1.0),
        (7, 64, 500, 0.6, 300.0),
    ];
    for (n, c, v, temp, hs) in cases {
        if v == 151_936 && !full_size(gpu) {
            continue;
        }
        let h = uniform::<T>(rng, n * c, hs);
        let w = uniform::<T>(rng, v * c, 1.0);
        let targets: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
        let mut logits = vec![0.0; n * v];
        drpo::cpu::matmul::matmul_fwd(&mut logits, &widen(&h), &widen(&w), None, n, c, v);
        let (mut want, mut want_lse) = (vec![0.0; n], vec![0.0; n]);
        drpo::cpu::logprob::logprob_fwd(&mut want, &mut want_lse, &logits, &targets, v, temp);
        let (hd, wd) = (gpu.htod(&h)?, gpu.htod(&w)?);
        let mut logp = gpu.htod(&vec![f32::NAN; n])?;
        let mut lse = gpu.htod(&vec![f32::NAN; n])?;
        gpu::logprob::head_logprob(gpu, &mut logp.as_view_mut(), &mut lse.as_view_mut(), &hd.as_view(), &wd.as_view(), &targets, n, c, v, temp)?;
        let what = format!("head_logprob {} n={n} c={c} v={v} temp={temp} |h|≤{hs}", T::NAME);
        let (got_logp, got_lse) = (gpu.dtoh(&logp)?, gpu.dtoh(&lse)?);
        assert_close(&format!("{what} logp"), &widen(&got_logp), &want, bound);
        assert_close(&format!("{what} lse"), &widen(&got_lse), &want_lse, bound);
        // a prepared scratch, used twice: the same bits as the one-shot call
        let mut scratch = gpu::logprob::HeadScratch::new::<T>(gpu, &targets, v)?;
        for _ in 0..2 {
            let mut logp2 = gpu.htod(&vec![f32::NAN; n])?;
            let mut lse2 = gpu.htod(&vec![f32::NAN; n])?;
            gpu::logprob::head_logprob_with(gpu, &mut scratch, &mut logp2.as_view_mut(), &mut lse2.as_view_mut(), &hd.as_view(), &wd.as_view(), n, c, v, temp)?;
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            assert_eq!(bits(&gpu.dtoh(&logp2)?), bits(&got_logp), "{what}: logp with a reused scratch");
            assert_eq!(bits(&gpu.dtoh(&lse2)?), bits(&got_lse), "{what}: lse with a reused scratch");
        }
    }
    Ok(())
}

#[test]
fn head_logprob_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("head_logprob");
    for gpu in devices("head_logprob") {
        // Bound derived, not yet measured on a GPU: logits as f32 dot products over c ≤ 896, expf/logf, the
        // (max, sum) combination; logp = z − lse cancels, so the floor is rms(want) and 5σ of the rel_l2
        // bound (an f32 emulation on these inputs: rel_l2 ≤ 2.6e-7, worst 2e-7).
        check::<f32>(&gpu, &mut rng, chain(1e-5))?;
        // bf16 operands are exact in f32 and the result is f32: only the tensor cores' f32 accumulation
        // differs from the f32 path (its additions are not IEEE round-to-nearest), hence 1e-4, not 1e-5
        check::<bf16>(&gpu, &mut rng, chain(1e-4))?;
    }
    Ok(())
}

#[test]
fn head_logprob_rejects_bad_targets_and_temperatures() {
    for gpu in devices("head_logprob_errors") {
        let (n, c, v) = (2, 8, 10);
        let h = gpu.htod(&vec![0.5f32; n * c]).unwrap();
        let w = gpu.htod(&vec![0.25f32; v * c]).unwrap();
        let mut logp = gpu.htod(&vec![0.0f32; n]).unwrap();
        let mut lse = gpu.htod(&vec![0.0f32; n]).unwrap();
        let mut call = |targets: &[u32], temp: f64| {
            gpu::logprob::head_logprob(&gpu, &mut logp.as_view_mut(), &mut lse.as_view_mut(), &h.as_view(), &w.as_view(), targets, n, c, v, temp)
        };
        assert!(call(&[0, 10], 1.0).is_err(), "target = v");
        assert!(call(&[0, 1], 0.0).is_err(), "temperature 0");
        assert!(call(&[0, 1], 1.0).is_ok());
    }
}

/// dh, dW of the GPU head backward against cpu::logprob::logprob_bwd then cpu::matmul::matmul_bwd, in
/// f64 on the stored values (lse: the f32 values the kernel reads); both outputs prefilled.
fn check_bwd<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    // (n, c, v, temp, row chunk, vocabulary chunk): degenerate (v = 1: every dlogit is 0), odd, 16-byte
    // loads, chunks that do not divide the rows or the vocabulary (so dh and dW accumulate over several
    // launches), the Qwen2 width with the full vocabulary in the default chunks (DRPO_SIM_FULL=1 only)
    let cases = [
        (1, 1, 1, 1.0, 4096, 8192),
        (3, 33, 70, 0.6, 4096, 8192),
        (67, 96, 1000, 1.0, 4096, 8192),
        (130, 40, 300, 0.6, 50, 128),
        (9, 896, 151_936, 0.6, 4096, 8192),
    ];
    for (n, c, v, temp, row_chunk, vocab_chunk) in cases {
        if v == 151_936 && !full_size(gpu) {
            continue;
        }
        let (h, w) = (uniform::<T>(rng, n * c, 1.0), uniform::<T>(rng, v * c, 1.0));
        let targets: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
        let dlogp = uniform::<f32>(rng, n, 2.0);
        let (dh0, dw0) = (uniform::<T>(rng, n * c, 1.0), uniform::<f32>(rng, v * c, 0.1));
        let (hw, ww) = (widen(&h), widen(&w));
        let mut logits = vec![0.0; n * v];
        drpo::cpu::matmul::matmul_fwd(&mut logits, &hw, &ww, None, n, c, v);
        let (mut logp, mut lse64) = (vec![0.0; n], vec![0.0; n]);
        drpo::cpu::logprob::logprob_fwd(&mut logp, &mut lse64, &logits, &targets, v, temp);
        let lse: Vec<f32> = lse64.iter().map(|&x| x as f32).collect();
        let mut dlogits = vec![0.0; n * v];
        drpo::cpu::logprob::logprob_bwd(&mut dlogits, &widen(&dlogp), &logits, &widen(&lse), &targets, v, temp);
        let (mut want_dh, mut want_dw) = (widen(&dh0), widen(&dw0));
        drpo::cpu::matmul::matmul_bwd(&mut want_dh, &mut want_dw, None, &dlogits, &hw, &ww, n, c, v);

        let (hd, wd, gd, ld) = (gpu.htod(&h)?, gpu.htod(&w)?, gpu.htod(&dlogp)?, gpu.htod(&lse)?);
        let (mut dh, mut dw) = (gpu.htod(&dh0)?, gpu.htod(&dw0)?);
        let mut scratch = gpu::logprob::HeadGradScratch::<T>::with_chunks(gpu, &targets, v, row_chunk, vocab_chunk)?;
        gpu::logprob::head_bwd_with(gpu, &mut scratch, &mut dh.as_view_mut(), &mut dw.as_view_mut(), &gd.as_view(), &ld.as_view(), &hd.as_view(), &wd.as_view(), n, c, v, temp)?;
        let what = format!("head_bwd {} n={n} c={c} v={v} temp={temp} chunks {row_chunk}x{vocab_chunk}", T::NAME);
        // Every dh, dW element is a sum of few large terms (a row's target and its likeliest ids; a
        // vocabulary row's few rows) that cancel (Σ_j dlogits[r, j] = 0), so its error does not scale
        // with rms(want): each element is held to the rounding bound of its sum. Per term:
        //   the logits' absolute f32 error δz becomes a relative error of the softmax part g·p of the
        //   dlogit (δp/p = δz): c roundings at the scale of the largest logit, δz ≈ 2^-24·√c·max|z|
        //   (1.3e-4 at c = 896 and the full vocabulary's max|z| ≈ 75), at least 1e-5 for the GEMM's f32
        //   chains (the forward's bound); bf16: the dlogit rounded to bf16, ≤ 2^-8 of |dlogit|;
        // then the accumulation over chunks: each chunk's partial is added to a running f32 sum (f32 dh:
        // onto the prefill, one addition per vocabulary chunk; dW: onto the prefill, one per row chunk;
        // bf16 dh: into a zeroed f32 accumulator per vocabulary chunk), each addition rounding by ≤ 2^-24
        // of the running sum, which is ≤ |prefill| + Σ|terms| (the prefill only where it is the start);
        // then bf16 dh's one rounding to bf16 on the flush: 2^-8 of |dh|.
        // bf16 also: rel_l2 of dh ≤ √2·4e-3 ≈ 6e-3 (two roundings), of dW ≤ 4e-3 (one).
        let z_max = logits.iter().fold(0.0f64, |m, z| m.max(z.abs())) / temp;
        let dz = (2f64.powi(-24) * (c as f64).sqrt() * z_max).max(1e-5);
        let (got_dh, got_dw) = (widen(&gpu.dtoh(&dh)?), widen(&gpu.dtoh(&dw)?));
        // |g·p| of every dlogit: dlogits without its one-hot part
        let mut softmax_part = dlogits.clone();
        for (r, &t) in targets.iter().enumerate() {
            softmax_part[r * v + t as usize] -= dlogp[r] as f64 / temp;
        }
        let (mut sum_dl_dh, mut sum_dl_dw, mut sum_p_dh, mut sum_p_dw) = (vec![0.0; n * c], vec![0.0; v * c], vec![0.0; n * c], vec![0.0; v * c]);
        drpo::cpu::matmul::matmul_bwd(&mut sum_dl_dh, &mut sum_dl_dw, None, &abs(&dlogits), &abs(&hw), &abs(&ww), n, c, v);
        drpo::cpu::matmul::matmul_bwd(&mut sum_p_dh, &mut sum_p_dw, None, &abs(&softmax_part), &abs(&hw), &abs(&ww), n, c, v);
        let (rounding, dh_out) = if T::NAME == "f32" { (0.0, 0.0) } else { (2f64.powi(-8), 2f64.powi(-8)) };
        let (vocab_chunks, row_chunks) = (v.div_ceil(vocab_chunk.min(v)), n.div_ceil(row_chunk.min(n)));
        let u = 2f64.powi(-24);
        // (prefill, Σ|terms|, Σ|softmax terms|, additions) → the element's term bound
        let bound_of = |pre: &[f64], dl: &[f64], p: &[f64], adds: usize| {
            pre.iter().zip(dl).zip(p).map(|((pre, a), b)| (rounding + dz) * a + dz * b + adds as f64 * u * (pre.abs() + a)).collect::<Vec<f64>>()
        };
        let dh_pre = if T::NAME == "f32" { widen(&dh0) } else { vec![0.0; n * c] };
        assert_within_sum_bound(&format!("{what} dh"), &got_dh, &want_dh, &bound_of(&dh_pre, &sum_dl_dh, &sum_p_dh, vocab_chunks), dh_out);
        assert_within_sum_bound(&format!("{what} dw"), &got_dw, &want_dw, &bound_of(&widen(&dw0), &sum_dl_dw, &sum_p_dw, row_chunks), 0.0);
        if T::NAME == "bf16" {
            let unbounded = Bound { rel_l2: 0.0, worst: f64::INFINITY, floor: Floor::Rms };
            assert_close(&format!("{what} dh"), &got_dh, &want_dh, Bound { rel_l2: 6e-3, ..unbounded });
            assert_close(&format!("{what} dw"), &got_dw, &want_dw, Bound { rel_l2: 4e-3, ..unbounded });
        }
    }
    // a target past the vocabulary is an input error naming its row
    let e = gpu::logprob::HeadGradScratch::<T>::new(gpu, &[2, 0, 5], 5).err().expect("target 5 ≥ v = 5 must be refused");
    assert!(e.to_string().contains("target 5 of row 2"), "{e}");
    Ok(())
}

#[test]
fn head_bwd_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("head_bwd");
    for gpu in devices("head_bwd") {
        check_bwd::<f32>(&gpu, &mut rng)?;
        check_bwd::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}

/// Every element within term_bound + `rel_out`·|want| of want: the error bound of a sum whose terms'
/// errors add up to at most term_bound[i], rounded once more (relative error ≤ rel_out).
fn assert_within_sum_bound(what: &str, got: &[f64], want: &[f64], term_bound: &[f64], rel_out: f64) {
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, ((g, w), t)) in got.iter().zip(want).zip(term_bound).enumerate() {
        assert!(g.is_finite(), "{what}: non-finite value {g} at #{i} (want {w})");
        let bound = t + rel_out * w.abs();
        let ratio = if bound > 0.0 { (g - w).abs() / bound } else if g == w { 0.0 } else { f64::INFINITY };
        if ratio > worst {
            (worst, at) = (ratio, i);
        }
    }
    println!("{what}: worst error / sum bound = {worst:.3} at #{at} (got {:.9e} want {:.9e} bound {:.3e})", got[at], want[at], term_bound[at] + rel_out * want[at].abs());
    assert!(worst <= 1.0, "{what}: element #{at} got {:.9e} want {:.9e}: beyond the sum's rounding bound (×{worst:.2})", got[at], want[at]);
}
