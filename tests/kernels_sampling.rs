//! GPU sampler against sampling::sample with the same Philox uniform (src/rng.rs), and the device
//! Philox against rng::uniform bit for bit. A token may differ only where u·total lies within 1e-6
//! (relative) of a CDF boundary or the top-p mass within 1e-9 of top_p; such rows are counted.

mod gpu_common;
use drpo::gpu::{self, Gpu};
use drpo::rng::uniform;
use drpo::sampling::{sample, sampling_probs, SamplingParams};
use gpu_common::*;
use rand::Rng;

#[test]
fn philox_uniforms_are_bit_identical_to_the_cpu() -> drpo::Result<()> {
    let Some(gpu) = gpu_or_skip("philox_uniform") else { return Ok(()) };
    let mut rng = rng("philox_uniform");
    for _ in 0..4 {
        let seed: u64 = rng.random();
        let n = 10_000;
        let streams: Vec<u64> = (0..n).map(|i| if i % 2 == 0 { i as u64 } else { rng.random() }).collect();
        let steps: Vec<u64> = (0..n).map(|i| if i % 3 == 0 { (i / 3) as u64 } else { rng.random() }).collect();
        let (sd, td) = (gpu.stream.clone_htod(&streams)?, gpu.stream.clone_htod(&steps)?);
        let mut out = gpu.stream.clone_htod(&vec![f64::NAN; n])?;
        gpu::sampling::philox_uniform(&gpu, &mut out.as_view_mut(), seed, &sd.as_view(), &td.as_view())?;
        let got = gpu.stream.clone_dtoh(&out)?;
        for i in 0..n {
            let want = uniform(seed, streams[i], steps[i]);
            assert_eq!(got[i].to_bits(), want.to_bits(), "seed {seed} stream {} step {}: {} vs {want}", streams[i], steps[i], got[i]);
        }
    }
    Ok(())
}

/// Is this row's decision numerically fragile? (u·total near a cumulative boundary, or a top-p
/// prefix mass near top_p)
fn near_boundary(logits: &[f32], params: &SamplingParams, u: f64) -> bool {
    if params.temperature == 0.0 {
        return false;
    }
    let probs = sampling_probs(logits, params);
    let total: f64 = probs.iter().sum();
    let mut cum = 0.0;
    for &p in &probs {
        if p > 0.0 {
            cum += p;
            if (cum - u * total).abs() <= 1e-6 * total {
                return true;
            }
        }
    }
    if params.top_p < 1.0 {
        let full = sampling_probs(logits, &SamplingParams { top_k: 0, top_p: 1.0, ..*params });
        let mut sorted: Vec<f64> = full.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let k = if params.top_k == 0 { sorted.len() } else { params.top_k.min(sorted.len()) };
        let topk_mass: f64 = sorted[..k].iter().sum();
        let mut mass = 0.0;
        for &p in &sorted[..k] {
            mass += p;
            if (mass / topk_mass - params.top_p).abs() <= 1e-9 {
                return true;
            }
        }
    }
    false
}

/// Rows of logits of one kind.
fn logits_rows(rng: &mut rand::rngs::StdRng, kind: &str, rows: usize, v: usize) -> Vec<f32> {
    (0..rows * v)
        .map(|i| match kind {
            "normal" => rng.random_range(-4.0f32..4.0),
            // integers: many exact ties in p, ranked by id
            "ties" => rng.random_range(-3i32..=3) as f32,
            // a third of the vocabulary masked out
            "masked" => if i % 3 == 0 { f32::NEG_INFINITY } else { rng.random_range(-4.0f32..4.0) },
            // large magnitude: softmax must subtract the max
            "large" => rng.random_range(-1e4f32..1e4),
            // a peaked row: one token holds almost all mass
            _ => if i % v == 7 % v { 20.0 } else { rng.random_range(-1.0f32..1.0) },
        })
        .collect()
}

fn run(gpu: &Gpu, rng: &mut rand::rngs::StdRng, kind: &str, rows: usize, v: usize, params: SamplingParams) -> drpo::Result<usize> {
    let logits = logits_rows(rng, kind, rows, v);
    let (seed, step): (u64, u64) = (rng.random(), rng.random_range(0..1000));
    let streams: Vec<u64> = (0..rows as u64).map(|r| r * 7 + 3).collect();
    let (ld, sd) = (gpu.stream.clone_htod(&logits)?, gpu.stream.clone_htod(&streams)?);
    let mut tokens = gpu.stream.clone_htod(&vec![u32::MAX; rows])?;
    let mut scratch = gpu.stream.alloc_zeros::<f64>(rows * v)?;
    gpu::sampling::sample(gpu, &mut tokens.as_view_mut(), &mut scratch.as_view_mut(), &ld.as_view(), &sd.as_view(), rows, v, &params, seed, step)?;
    let got = gpu.stream.clone_dtoh(&tokens)?;
    let mut fragile = 0;
    for r in 0..rows {
        let row = &logits[r * v..(r + 1) * v];
        let u = uniform(seed, streams[r], step);
        let want = sample(row, &params, u);
        if got[r] != want {
            assert!(near_boundary(row, &params, u), "{kind} v={v} {params:?} row {r}: GPU token {} vs CPU {want} (u = {u})", got[r]);
            fragile += 1;
        }
    }
    println!("sample {kind:<7} v={v:<6} rows={rows:<4} {params:?}: {} rows agree, {fragile} differ at a boundary", rows - fragile);
    Ok(fragile)
}

#[test]
fn sampler_draws_the_cpu_token_for_the_same_uniform() -> drpo::Result<()> {
    let Some(gpu) = gpu_or_skip("sample") else { return Ok(()) };
    let mut rng = rng("sample");
    let p = |temperature: f64, top_k: usize, top_p: f64| SamplingParams { temperature, top_k, top_p };
    let params = [p(0.0, 0, 1.0), p(1.0, 0, 1.0), p(0.6, 0, 0.9), p(1.0, 1, 1.0), p(1.0, 5, 1.0), p(0.7, 50, 1.0), p(1.0, 20, 0.8), p(1.3, 3, 0.5), p(1.0, 0, 0.05)];
    let mut fragile = 0;
    let mut total = 0;
    for kind in ["normal", "ties", "masked", "large", "peaked"] {
        for (v, rows) in [(1, 3), (7, 50), (1000, 64), (151_936, 2)] {
            for params in params {
                fragile += run(&gpu, &mut rng, kind, rows, v, params)?;
                total += rows;
            }
        }
    }
    println!("{fragile} of {total} rows differ, all at a boundary");
    assert!(fragile * 1000 <= total, "too many boundary cases ({fragile} of {total}): the kernel is not computing the same sums");
    Ok(())
}

#[test]
fn sampler_frequencies_follow_the_distribution() -> drpo::Result<()> {
    // one row, many independent draws (distinct streams): a chi-square test of the GPU tokens against
    // sampling_probs, independent of the CPU sampler
    let Some(gpu) = gpu_or_skip("sample_frequencies") else { return Ok(()) };
    let mut rng = rng("sample_frequencies");
    let v = 50;
    let row: Vec<f32> = (0..v).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    for params in [SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 }, SamplingParams { temperature: 0.8, top_k: 10, top_p: 0.9 }] {
        let draws = 100_000;
        let logits: Vec<f32> = (0..draws).flat_map(|_| row.iter().copied()).collect();
        let streams: Vec<u64> = (0..draws as u64).collect();
        let (ld, sd) = (gpu.stream.clone_htod(&logits)?, gpu.stream.clone_htod(&streams)?);
        let mut tokens = gpu.stream.clone_htod(&vec![u32::MAX; draws])?;
        let mut scratch = gpu.stream.alloc_zeros::<f64>(draws * v)?;
        let seed: u64 = rng.random();
        gpu::sampling::sample(&gpu, &mut tokens.as_view_mut(), &mut scratch.as_view_mut(), &ld.as_view(), &sd.as_view(), draws, v, &params, seed, 0)?;
        let got = gpu.stream.clone_dtoh(&tokens)?;
        let probs = sampling_probs(&row, &params);
        let mut counts = vec![0usize; v];
        for &t in &got {
            counts[t as usize] += 1;
        }
        let mut chi2 = 0.0;
        let mut dof = 0;
        for i in 0..v {
            let expected = probs[i] * draws as f64;
            if probs[i] == 0.0 {
                assert_eq!(counts[i], 0, "{params:?}: token {i} has probability 0 but was drawn {} times", counts[i]);
            } else {
                chi2 += (counts[i] as f64 - expected).powi(2) / expected;
                dof += 1;
            }
        }
        dof -= 1;
        // mean dof, sd sqrt(2 dof): 6 sd above the mean fails only for a wrong distribution
        let limit = dof as f64 + 6.0 * (2.0 * dof as f64).sqrt();
        println!("{params:?}: chi2 = {chi2:.1} with {dof} dof (limit {limit:.1})");
        assert!(chi2 <= limit, "{params:?}: chi2 {chi2:.1} > {limit:.1}");
    }
    Ok(())
}
