//! GPU sampler against sampling::sample with the same Philox uniform (src/rng.rs), and the device
//! Philox against rng::uniform bit for bit. After the softmax both sides compute in exact 2^-62 fixed
//! point, so a token may differ only at a boundary the softmax's last-ulp differences can cross
//! ([`fragile`]); such rows are counted by kind and printed, any other difference fails.

mod gpu_common;
use drpo::gpu::{self, Gpu};
use drpo::rng::uniform;
use drpo::sampling::{fixed_point_probs, kept_masses, sample, sampled_logp, sampling_probs, top_p_threshold, SamplingParams};
use gpu_common::*;
use rand::Rng;

#[test]
fn philox_uniforms_are_bit_identical_to_the_cpu() -> drpo::Result<()> {
    let mut rng = rng("philox_uniform");
    for gpu in devices("philox_uniform") {
        for _ in 0..4 {
            let seed: u64 = rng.random();
            let n = 10_000;
            let streams: Vec<u64> = (0..n).map(|i| if i % 2 == 0 { i as u64 } else { rng.random() }).collect();
            let steps: Vec<u64> = (0..n).map(|i| if i % 3 == 0 { (i / 3) as u64 } else { rng.random() }).collect();
            let (sd, td) = (gpu.htod(&streams)?, gpu.htod(&steps)?);
            let mut out = gpu.htod(&vec![f64::NAN; n])?;
            gpu::sampling::philox_uniform(&gpu, &mut out.as_view_mut(), seed, &sd.as_view(), &td.as_view())?;
            let got = gpu.dtoh(&out)?;
            for i in 0..n {
                let want = uniform(seed, streams[i], steps[i]);
                assert_eq!(got[i].to_bits(), want.to_bits(), "seed {seed} stream {} step {}: {} vs {want}", streams[i], steps[i], got[i]);
            }
        }
    }
    Ok(())
}

/// The boundaries a row's draw sits close to, by kind. The CPU and GPU softmax may differ by an ulp
/// in p (exp, the order of Σe), which moves a fixed-point mass f by ~1e-15 relative + 1 unit and a sum
/// of v masses by ~1e-15 relative + v units; everything after the softmax is exact integer arithmetic
/// (src/sampling.rs). So a token may differ only where a comparison is within that of its boundary;
/// the slack used here is 1000× wider (1e-12 relative + 4 units per summed mass).
///   "rank":  at the top-k or top-p cut, two tokens of different logits whose masses are that close
///            (their order, and so which one is kept, can flip; two zero masses rank by id on both sides)
///   "top-p": a prefix mass M with M·2^32 that close to ⌈top_p·2^32⌉·M_k (unless the top-k set is one
///            tied logit: then both sides compare exactly j·2^32 with ⌈top_p·2^32⌉·k)
///   "cdf":   the target ⌊u53·F / 2^53⌋ that close to a cumulative kept mass
fn fragile(logits: &[f32], params: &SamplingParams, u: f64) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    if params.temperature == 0.0 || logits.is_empty() {
        return kinds; // the arg-max of the f32 logits: exact on both sides
    }
    let v = logits.len();
    let near = |a: u128, b: u128, summed: usize| a.abs_diff(b) as f64 <= 1e-12 * a.max(b) as f64 + 4.0 * summed as f64;
    let f = fixed_point_probs(logits, params.temperature);
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by(|&a, &b| f[b].cmp(&f[a]).then(a.cmp(&b)));
    let k = if params.top_k == 0 { v } else { params.top_k.min(v) };
    let kept = kept_masses(logits, params);
    let n_kept = order.iter().take_while(|&&i| kept[i] > 0).count().max(1);
    let close_pair = |cut: usize| cut > 0 && cut < v && {
        let (a, b) = (order[cut - 1], order[cut]);
        logits[a] != logits[b] && f[a] > 0 && near(f[a] as u128, f[b] as u128, 1) // two zeros rank by id on both sides
    };
    if close_pair(k) || (params.top_p < 1.0 && close_pair(n_kept)) {
        kinds.push("rank");
    }
    // a top-k set of one tied logit has prefix ratios of exactly j/k on both sides, whatever the mass
    // of one token: no ulp can move that decision
    let one_tie_group = order[..k].iter().all(|&i| logits[i] == logits[order[0]]);
    let topk: u64 = order[..k].iter().map(|&i| f[i]).sum();
    if params.top_p < 1.0 && topk > 0 && !one_tie_group {
        let tp32 = top_p_threshold(params.top_p) as u128;
        let mut mass = 0u64;
        let threshold = tp32 * topk as u128;
        if order[..k].iter().any(|&i| {
            mass += f[i];
            near((mass as u128) << 32, threshold, v << 32)
        }) {
            kinds.push("top-p");
        }
    }
    let total: u64 = kept.iter().sum();
    let u53 = (u * 9_007_199_254_740_992.0) as u64;
    let target = ((u53 as u128 * total as u128) >> 53) as u64;
    let mut cum = 0u64;
    if kept.iter().any(|&m| {
        cum += m;
        m > 0 && near(cum as u128, target as u128, v)
    }) {
        kinds.push("cdf");
    }
    kinds
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

/// The lowest id of a NaN or ±inf in each row ([`gpu::sampling::NO_NONFINITE`] when none): what the
/// sampler's flags must say.
fn first_non_finite(logits: &[f32], rows: usize, v: usize) -> Vec<u32> {
    (0..rows).map(|r| logits[r * v..(r + 1) * v].iter().position(|x| !x.is_finite()).map_or(gpu::sampling::NO_NONFINITE, |i| i as u32)).collect()
}

/// The kernel's log-probability of each drawn token against `sampling::sampled_logp` of that token
/// (rows with a non-finite logit are refused by the caller and skipped). Both compute m, Σe and ln Σe
/// in f64 from the same f32 logits; they differ in the order of Σe (a tree against left to right) and
/// in exp (the device's against the canonical one, each within an ulp or two), so |Δ| ≤ a few ulps
/// of |x/T| + |m| + |ln Σe|: bound 1e-12 · (1 + |want| + |m|), far below any mismatch the trainer reports.
fn check_sampled_logp(kind: &str, logits: &[f32], tokens: &[u32], flags: &[u32], got: &[f64], v: usize, temperature: f64) {
    let mut worst = 0.0f64;
    for r in (0..tokens.len()).filter(|&r| flags[r] == gpu::sampling::NO_NONFINITE) {
        let row = &logits[r * v..(r + 1) * v];
        let want = sampled_logp(row, temperature, tokens[r]);
        let m = if temperature == 0.0 { 0.0 } else { row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64 / temperature)) };
        let err = (got[r] - want).abs();
        assert!(want.is_finite() && want <= 0.0, "{kind} row {r}: reference logp {want}");
        assert!(err <= 1e-12 * (1.0 + want.abs() + m.abs()), "{kind} row {r} token {}: logp {} against {want}", tokens[r], got[r]);
        worst = worst.max(err);
    }
    println!("{kind}: sampled logp worst |Δ| {worst:.1e}");
}

fn run(gpu: &Gpu, rng: &mut rand::rngs::StdRng, kind: &str, rows: usize, v: usize, params: SamplingParams) -> drpo::Result<usize> {
    let logits = logits_rows(rng, kind, rows, v);
    let (seed, step): (u64, u64) = (rng.random(), rng.random_range(0..1000));
    let streams: Vec<u64> = (0..rows as u64).map(|r| r * 7 + 3).collect();
    let (ld, sd) = (gpu.htod(&logits)?, gpu.htod(&streams)?);
    let mut tokens = gpu.htod(&vec![u32::MAX; rows])?;
    let mut flags = gpu.htod(&vec![0u32; rows])?; // poisoned: 0 is a flag of id 0
    let mut logp = gpu.htod(&vec![f64::NAN; rows])?;
    let mut scratch = gpu.alloc_zeros::<u64>(rows * v)?;
    gpu::sampling::sample(gpu, &mut tokens.as_view_mut(), &mut flags.as_view_mut(), &mut logp.as_view_mut(), &mut scratch.as_view_mut(), &ld.as_view(), &sd.as_view(), rows, v, &params, seed, step)?;
    let got = gpu.dtoh(&tokens)?;
    let flags = gpu.dtoh(&flags)?;
    assert_eq!(flags, first_non_finite(&logits, rows, v), "{kind}: the non-finite flags");
    check_sampled_logp(kind, &logits, &got, &flags, &gpu.dtoh(&logp)?, v, params.temperature);
    let (mut differ, mut by_kind) = (0, std::collections::BTreeMap::<&str, usize>::new());
    for r in 0..rows {
        let row = &logits[r * v..(r + 1) * v];
        let u = uniform(seed, streams[r], step);
        let want = sample(row, &params, u);
        let kinds = fragile(row, &params, u);
        for &k in &kinds {
            *by_kind.entry(k).or_default() += 1;
        }
        if !kinds.is_empty() {
            println!("  fragile row {r} ({}): GPU {} CPU {want}", kinds.join(", "), got[r]);
        }
        if got[r] != want {
            assert!(!kinds.is_empty(), "{kind} v={v} {params:?} row {r}: GPU token {} vs CPU {want} (u = {u}), not near any boundary", got[r]);
            differ += 1;
        }
    }
    println!("sample {kind:<7} v={v:<6} rows={rows:<4} {params:?}: {} rows agree, {differ} differ at a boundary; fragile rows {by_kind:?}", rows - differ);
    Ok(differ)
}

#[test]
fn sampler_draws_the_cpu_token_for_the_same_uniform() -> drpo::Result<()> {
    let mut rng = rng("sample");
    for gpu in devices("sample") {
        let p = |temperature: f64, top_k: usize, top_p: f64| SamplingParams { temperature, top_k, top_p };
        let params = [p(0.0, 0, 1.0), p(1.0, 0, 1.0), p(0.6, 0, 0.9), p(1.0, 1, 1.0), p(1.0, 5, 1.0), p(0.7, 50, 1.0), p(1.0, 20, 0.8), p(1.0, 20, 0.5), p(1.3, 3, 0.5), p(1.0, 0, 0.05)];
        // (k = 20, top_p 0.8 / 0.5 on the "ties" rows: a nucleus of tied tokens whose mass ratio is exactly
        // 16/20 against the threshold ⌈0.8·2^32⌉/2^32, or exactly the threshold 10/20 = 2^31/2^32)
        let mut differ = 0;
        let mut total = 0;
        // on the simulator (without DRPO_SIM_FULL=1) every kind, size and setting but the full
        // vocabulary, with at most 4 rows each: a top-p row takes ~50 ms there
        let full = full_size(&gpu);
        for kind in ["normal", "ties", "masked", "large", "peaked"] {
            for (v, rows) in [(1, 3), (7, 50), (1000, 64), (151_936, 2)] {
                if v == 151_936 && !full {
                    continue;
                }
                let rows = if full { rows } else { rows.min(4) };
                for params in params {
                    differ += run(&gpu, &mut rng, kind, rows, v, params)?;
                    total += rows;
                }
            }
        }
        println!("{differ} of {total} rows differ, all at a boundary");
        assert!(differ * 1000 <= total, "too many boundary cases ({differ} of {total}): the kernel is not computing the same masses");
    }
    Ok(())
}

/// Rows holding NaN, +inf or -inf: the flag of each row is its lowest non-finite id (whatever the
/// sampling settings; finite rows none), and the token is still the CPU's (the host refuses the row).
#[test]
fn sampler_flags_the_first_non_finite_logit_of_each_row() -> drpo::Result<()> {
    let mut rng = rng("sample_non_finite");
    for gpu in devices("sample_non_finite") {
        for v in [7, 1000] {
            // (position, value) pairs per row; row 3 is finite
            let bad: [&[(usize, f32)]; 5] =
                [&[(5, f32::NAN)], &[(0, f32::INFINITY), (3, f32::NAN)], &[(v - 1, f32::NEG_INFINITY)], &[], &[(v - 2, f32::NAN), (v - 1, f32::INFINITY)]];
            let rows = bad.len();
            let mut logits: Vec<f32> = (0..rows * v).map(|_| rng.random_range(-3.0f32..3.0)).collect();
            for (r, row) in bad.iter().enumerate() {
                for &(i, x) in row.iter() {
                    logits[r * v + i] = x;
                }
            }
            let want_flags = first_non_finite(&logits, rows, v);
            assert_eq!(want_flags[..4], [5, 0, v as u32 - 1, gpu::sampling::NO_NONFINITE], "the reference");
            let streams: Vec<u64> = (0..rows as u64).collect();
            let (ld, sd) = (gpu.htod(&logits)?, gpu.htod(&streams)?);
            for params in [SamplingParams::greedy(), SamplingParams { temperature: 0.8, top_k: 3, top_p: 0.9 }] {
                let mut tokens = gpu.htod(&vec![u32::MAX; rows])?;
                let mut flags = gpu.htod(&vec![0u32; rows])?;
                let mut logp = gpu.alloc_zeros::<f64>(rows)?;
                let mut scratch = gpu.alloc_zeros::<u64>(rows * v)?;
                gpu::sampling::sample(&gpu, &mut tokens.as_view_mut(), &mut flags.as_view_mut(), &mut logp.as_view_mut(), &mut scratch.as_view_mut(), &ld.as_view(), &sd.as_view(), rows, v, &params, 11, 2)?;
                assert_eq!(gpu.dtoh(&flags)?, want_flags, "v {v}, {params:?}: flags");
                let want: Vec<u32> = (0..rows).map(|r| sample(&logits[r * v..(r + 1) * v], &params, uniform(11, r as u64, 2)) as u32).collect();
                assert_eq!(gpu.dtoh(&tokens)?, want, "v {v}, {params:?}: tokens");
            }
        }
    }
    Ok(())
}

#[test]
fn sampler_frequencies_follow_the_distribution() -> drpo::Result<()> {
    // one row, many independent draws (distinct streams): a chi-square test of the GPU tokens against
    // sampling_probs, independent of the CPU sampler
    let mut rng = rng("sample_frequencies");
    for gpu in devices("sample_frequencies") {
        let v = 50;
        let row: Vec<f32> = (0..v).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        for params in [SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 }, SamplingParams { temperature: 0.8, top_k: 10, top_p: 0.9 }] {
            // fewer draws on the simulator (without DRPO_SIM_FULL=1): the same test, less power
            let draws = match (full_size(&gpu), params.top_k == 0 && params.top_p == 1.0) {
                (true, _) => 100_000,
                (false, true) => 4_000,
                (false, false) => 500,
            };
            let logits: Vec<f32> = (0..draws).flat_map(|_| row.iter().copied()).collect();
            let streams: Vec<u64> = (0..draws as u64).collect();
            let (ld, sd) = (gpu.htod(&logits)?, gpu.htod(&streams)?);
            let mut tokens = gpu.htod(&vec![u32::MAX; draws])?;
            let mut flags = gpu.alloc_zeros::<u32>(draws)?;
            let mut logp = gpu.alloc_zeros::<f64>(draws)?;
            let mut scratch = gpu.alloc_zeros::<u64>(draws * v)?;
            let seed: u64 = rng.random();
            gpu::sampling::sample(&gpu, &mut tokens.as_view_mut(), &mut flags.as_view_mut(), &mut logp.as_view_mut(), &mut scratch.as_view_mut(), &ld.as_view(), &sd.as_view(), draws, v, &params, seed, 0)?;
            let got = gpu.dtoh(&tokens)?;
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
    }
    Ok(())
}
