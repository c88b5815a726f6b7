//! The device objectives (cuda/objective.cu) against the f64 CPU objectives of `rl::objectives`:
//! DRPO, DisCO, and every policy-gradient baseline (group advantages from the shaped rewards, then the
//! clipped surrogate with and without the clip), on every case of the fixtures' objectives.json (the
//! log-probs as given, f64) and on random batches (f32 log-probs: λ down to 1e-4, τ 0.05–100, groups
//! of 1–16 responses with uneven sizes, shuffled ids and interleaved members, all-correct / all-wrong
//! groups, the KL hinge on and off).
//!
//! Tolerance (derived; NOTES.md numerics log). Both sides evaluate the same f64 formulas on the same
//! inputs; they differ in the order of the sums over a response's tokens and over the batch's
//! responses (a tree on the device, sequential on the CPU: ≤ m·u of the terms' absolute sum, m ≤ T ≤
//! 2^16 here, u = 2^-53, so ≤ 7.3e-12), in exp/expm1/log1p (≤ 2 ulp on CUDA, glibc's = the CPU's on
//! the simulator; arguments ≤ 745 in magnitude make that ≤ 3.3e-13 relative) and, on a GPU, in FMA
//! contraction (one rounding less). Hence TOL = 1e-11 relative to the value plus the magnitude of the
//! terms it was computed from (`floor`, per quantity below), times cond = 1 + 2·max|s|/τ where a
//! softmax over s/τ amplifies the scores' errors. An f32 gradient adds its one rounding, 2^-24 of
//! the value.

mod gpu_common;
use drpo::gpu::objective::{self as dev, DeviceGroups, LogProbFloat, ObjectiveWork, TokenLogProbs};
use drpo::gpu::Gpu;
use drpo::rl::objectives::{self, Baseline, Case, Estimator, HapoHistory, Hyper, Outcomes};
use gpu_common::*;
use rand::{rngs::StdRng, seq::SliceRandom, Rng};
use serde_json::Value;

const TOL: f64 = 1e-11;
const F32_ROUNDING: f64 = 5.960464477539063e-8; // 2^-24

/// What the bounds are scaled by, per case (the case type is the library's, `rl::objectives::Case`).
trait Floors {
    fn tokens(&self) -> usize;
    /// mean |ℓ| of each response: the magnitude its score is summed from
    fn score_floors(&self) -> Vec<f64>;
    /// mean |ℓ^old − ℓ|: the magnitude K is summed from
    fn kl_floor(&self) -> f64;
}

impl Floors for Case {
    fn tokens(&self) -> usize {
        self.logp.len()
    }
    fn score_floors(&self) -> Vec<f64> {
        let off = self.batch().offsets();
        (0..self.len.len()).map(|i| self.logp[off[i]..off[i + 1]].iter().map(|x| x.abs()).sum::<f64>() / self.len[i] as f64).collect()
    }
    fn kl_floor(&self) -> f64 {
        self.old_logp.iter().zip(&self.logp).map(|(o, l)| (o - l).abs()).sum::<f64>() / self.tokens() as f64
    }
}

fn fixture_cases() -> Vec<Case> {
    let mut out = Vec::new();
    for model in ["qwen2-tiny", "qwen2-tiny-mqa"] {
        let path = fixture(model).join("objectives.json");
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for c in json["cases"].as_array().unwrap() {
            // the library's reader: a fixture without clip_eps is the plain ratio surrogate
            let mut case = objectives::parse_case(c).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            case.name = format!("{model}/{}", case.name);
            out.push(case);
        }
    }
    assert_eq!(out.len(), 14, "both fixtures' objectives.json have 7 cases");
    out
}

/// A random batch: 1–16 groups of 1–16 responses (uneven), ids shuffled and members interleaved,
/// some all-correct / all-wrong groups, log-probs rounded to f32 (the device model's type).
fn random_case(rng: &mut StdRng, k: usize) -> Case {
    let lambda = [1e-4, 1e-3, 0.01, 0.1, 1.0, f64::INFINITY][k % 6];
    let tau = [0.05, 1.0, 10.0, 100.0][k % 4];
    let max_len = [1, 7, 64, 200][rng.random_range(0..4)];
    let groups = rng.random_range(1..=16);
    let mut ids: Vec<usize> = (0..groups).map(|g| 1000 - 7 * g).collect();
    ids.shuffle(rng);
    let mut rows = Vec::new(); // (group id, correct)
    for &id in &ids {
        let size = if rng.random_range(0..8) == 0 { 1 } else { rng.random_range(2..=16) };
        let p_correct = [0.0, 1.0, 0.5, 0.2, 0.8][rng.random_range(0..5)];
        rows.extend((0..size).map(|_| (id, rng.random_bool(p_correct))));
    }
    rows.shuffle(rng);
    // the KL hinge on (old log-probs below the new ones by ~0.05) or off (within ±1e-6)
    let drift = if k.is_multiple_of(2) { 0.05 } else { 1e-6 };
    let mut case = Case {
        name: format!("random #{k} (λ = {lambda}, τ = {tau}, C = {max_len}, {groups} groups, {} responses)", rows.len()),
        hyper: Hyper { lambda, tau, clip_eps: Some(0.2), grpo_alpha: 0.5, ..Hyper::default() },
        group: vec![],
        correct: vec![],
        finished: vec![],
        len: vec![],
        max_len,
        logp: vec![],
        old_logp: vec![],
    };
    for (id, correct) in rows {
        let l = rng.random_range(1..=max_len);
        case.group.push(id);
        case.correct.push(correct);
        case.finished.push(rng.random_range(0..5) != 0);
        case.len.push(l);
        for _ in 0..l {
            let lp = rng.random_range(-5.0f32..0.0);
            let old = lp - rng.random_range(-drift..drift * 3.0) as f32;
            case.logp.push(lp as f64);
            case.old_logp.push(old as f64);
        }
    }
    case
}

/// |got − want| ≤ rel·(|want| + floor_i) for every element; prints the worst ratio.
fn within(what: &str, got: &[f64], want: &[f64], floor: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0.0, 0);
    for i in 0..got.len() {
        assert!(got[i].is_finite(), "{what}: #{i} = {} is not finite (want {})", got[i], want[i]);
        let r = (got[i] - want[i]).abs() / (rel * (want[i].abs() + floor[i]) + f64::MIN_POSITIVE);
        if r > worst.0 {
            worst = (r, i);
        }
    }
    let i = worst.1;
    if std::env::var_os("DRPO_OBJECTIVE_VERBOSE").is_some() || worst.0 > 1.0 {
        let e = (got[i] - want[i]).abs() / (want[i].abs() + floor[i]);
        println!("{what}: worst #{i} at {:.2e} of the bound ({e:.1e} of |want| + floor): got {:.17e} want {:.17e} floor {:.1e}", worst.0, got[i], want[i], floor[i]);
    }
    assert!(worst.0 <= 1.0, "{what}: #{i} got {:.17e} want {:.17e} beyond {rel:.1e}·(|want| + {:.1e})", got[i], want[i], floor[i]);
}

fn scalar(what: &str, got: f64, want: f64, floor: f64, rel: f64) {
    within(what, &[got], &[want], &[floor], rel);
}

/// Storage types of the log-probs: the exact inputs and how the gradient is rounded.
trait Lp: LogProbFloat {
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// relative error of one rounding of the output
    const ROUNDING: f64;
}
impl Lp for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    const ROUNDING: f64 = F32_ROUNDING;
}
impl Lp for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    const ROUNDING: f64 = 0.0;
}

/// The magnitude each advantage is computed from: GRPO (r − mean)/(std + ε) rounds its sums relative
/// to max |r| of the group and divides by std + ε (population std: the smaller, so the larger floor);
/// RLOO's r − (Σr − r)/(K − 1) rounds relative to max |r|.
fn advantage_floors(case: &Case, rewards: &[f64], rloo: bool) -> Vec<f64> {
    let n = rewards.len();
    (0..n)
        .map(|i| {
            let r: Vec<f64> = (0..n).filter(|&k| case.group[k] == case.group[i]).map(|k| rewards[k]).collect();
            let r_max = r.iter().map(|x| x.abs()).fold(0.0, f64::max);
            if rloo || r.len() < 2 {
                return r_max + 1.0;
            }
            let mean = r.iter().sum::<f64>() / r.len() as f64;
            let sd = (r.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / r.len() as f64).sqrt();
            r_max / (sd + case.hyper.grpo_eps).max(1e-300)
        })
        .collect()
}

/// Every objective of one case on `gpu`; the case's log-probs must be exact in T.
fn check_case<T: Lp>(gpu: &Gpu, case: &Case) -> drpo::Result<()> {
    let b = case.batch();
    let (n, t, name) = (case.len.len(), case.tokens(), &case.name);
    let cast = |v: &[f64]| -> Vec<T> { v.iter().map(|&x| T::from_f64(x)).collect() };
    assert!(case.logp.iter().chain(&case.old_logp).all(|&x| T::from_f64(x).to_f64() == x), "{name}: inputs not exact in T");
    assert!(t <= 1 << 16, "{name}: the tolerance assumes T ≤ 2^16 tokens");
    let groups = DeviceGroups::upload(gpu, &case.outcomes())?;
    let mut work = ObjectiveWork::new(gpu, &groups)?;
    let (logp, old) = (gpu.htod(&cast(&case.logp))?, gpu.htod(&cast(&case.old_logp))?);
    let lp = TokenLogProbs { logp: logp.as_view(), old_logp: old.as_view() };
    let mut dlogp = gpu.htod(&vec![T::from_f64(f64::NAN); t])?;
    let off = b.offsets();
    let score_floor = case.score_floors();
    let s_max = score_floor.iter().copied().fold(0.0, f64::max);
    let kl_floor = case.kl_floor();

    // DRPO and DisCO; the trainer's 1/chunks scale on every other call
    for (k, lambda) in [case.hyper.lambda, f64::INFINITY].into_iter().enumerate() {
        let h = Hyper { lambda, ..case.hyper };
        let want = objectives::drpo(&b, &h)?;
        let scale = if k == 0 { 1.0 } else { 0.125 };
        let got = dev::discriminative(gpu, &mut dlogp.as_view_mut(), &mut work, &groups, &lp, &h, lambda, scale)?;
        let what = format!("{name} {} {}", if k == 0 { "drpo" } else { "disco" }, std::any::type_name::<T>());
        let cond = 1.0 + 2.0 * s_max / h.tau;
        let rel = TOL * cond;
        let coef_floor = h.beta * (kl_floor + h.delta.abs());
        let excess = (want.kl - h.delta).max(0.0);
        scalar(&format!("{what} J"), got.j, want.j, s_max, rel);
        scalar(&format!("{what} K"), got.kl, want.kl, kl_floor, rel);
        scalar(&format!("{what} β[K−δ]+"), got.kl_coef, want.kl_coef, coef_floor, rel);
        scalar(&format!("{what} penalty"), got.penalty, want.penalty, excess * coef_floor, rel);
        scalar(&format!("{what} loss"), got.loss, want.loss, s_max + excess * coef_floor, rel);
        assert_eq!(got.clipped_tokens, 0);
        within(&format!("{what} scores"), &gpu.dtoh(&work.scores)?, &want.scores, &score_floor, rel);
        // weights depend on lengths only; the floor admits subnormal weights (λ = 1e-4: exp(−745…))
        within(&format!("{what} weights"), &gpu.dtoh(&work.weights)?, &want.weights, &vec![1e-300; n], rel);
        within(&format!("{what} dloss/ds"), &gpu.dtoh(&work.dloss_ds)?, &want.dloss_ds, &vec![1e-300; n], rel);
        let want_j: Vec<f64> = want.groups.iter().map(|g| g.j).collect();
        within(&format!("{what} J_g"), &gpu.dtoh(&work.group_j)?, &want_j, &vec![s_max; want_j.len()], rel);
        let want_d: Vec<f64> = want.dlogp.iter().map(|d| d * scale).collect();
        let mut floor = Vec::with_capacity(t);
        for i in 0..n {
            let f = scale * (want.dloss_ds[i].abs() / case.len[i] as f64 + coef_floor / t as f64);
            floor.extend(std::iter::repeat_n(f, off[i + 1] - off[i]));
        }
        let got_d: Vec<f64> = gpu.dtoh(&dlogp)?.iter().map(|&d| d.to_f64()).collect();
        within(&format!("{what} dloss/dlogp"), &got_d, &want_d, &floor, rel + T::ROUNDING);
    }

    // the policy-gradient baselines: shaped rewards from the host, advantages and surrogate on the device
    let mut history = HapoHistory::default();
    objectives::baseline_advantages(Baseline::Hapo, &case.outcomes(), &case.hyper, &mut history)?; // h known from here on
    let baselines = [Baseline::Grpo, Baseline::GrpoLp, Baseline::RlooLp, Baseline::Alp, Baseline::Hapo, Baseline::ShorterBetter, Baseline::Kimi];
    for baseline in baselines {
        let (rewards, want_adv) = objectives::baseline_advantages(baseline, &case.outcomes(), &case.hyper, &mut history.clone())?;
        let rd = gpu.htod(&rewards)?;
        let mut adv_dev = gpu.htod(&vec![f64::NAN; n])?;
        dev::advantages(gpu, &mut adv_dev.as_view_mut(), &rd.as_view(), &groups, baseline.estimator(), case.hyper.grpo_eps, case.hyper.grpo_std)?;
        let got_adv = gpu.dtoh(&adv_dev)?;
        let adv_floor = advantage_floors(case, &rewards, baseline.estimator() == Estimator::Rloo);
        let what = format!("{name} {baseline:?} {}", std::any::type_name::<T>());
        within(&format!("{what} advantages"), &got_adv, &want_adv, &adv_floor, TOL);
        // the surrogate is checked on the CPU's advantages: its bound then does not inherit the
        // advantages' conditioning (ALP's rewards differ by ~1e-5, so the GRPO quotient amplifies
        // their rounding ~1e5-fold); the advantages were checked just above
        let adv = gpu.htod(&want_adv)?;
        for clip in [None, Some(0.2)] {
            let scale = 0.5;
            let want = objectives::clipped_surrogate(&b, &want_adv, clip)?;
            let got = dev::clipped_surrogate(gpu, &mut dlogp.as_view_mut(), &mut work, &groups, &lp, &adv.as_view(), clip, scale)?;
            let what = format!("{what} clip {clip:?}");
            let a_max = want_adv.iter().map(|a| a.abs()).fold(0.0, f64::max);
            let rho_max = case.logp.iter().zip(&case.old_logp).map(|(l, o)| (l - o).exp()).fold(1.0 + clip.unwrap_or(0.0), f64::max);
            let rel = TOL;
            scalar(&format!("{what} J"), got.j, want.j, a_max * rho_max, rel);
            scalar(&format!("{what} loss"), got.loss, want.loss, a_max * rho_max, rel);
            scalar(&format!("{what} K"), got.kl, want.kl, kl_floor, TOL);
            assert_eq!(got.clipped_tokens, want.clipped_tokens, "{what}: clipped tokens");
            let want_d: Vec<f64> = want.dlogp.iter().map(|d| d * scale).collect();
            let floor: Vec<f64> = (0..n).flat_map(|i| std::iter::repeat_n(scale * a_max * rho_max / (n * case.len[i]) as f64, case.len[i])).collect();
            let got_d: Vec<f64> = gpu.dtoh(&dlogp)?.iter().map(|&d| d.to_f64()).collect();
            within(&format!("{what} dloss/dlogp"), &got_d, &want_d, &floor, rel + T::ROUNDING);
        }
    }
    Ok(())
}

#[test]
fn objective_fixture_cases_gpu_match_cpu() -> drpo::Result<()> {
    let cases = fixture_cases();
    for gpu in devices("objective_fixtures") {
        for case in &cases {
            check_case::<f64>(&gpu, case)?;
        }
        println!("objective_fixtures: {} cases, DRPO / DisCO / 7 baselines × 2 clip settings", cases.len());
    }
    Ok(())
}

#[test]
fn objective_random_cases_gpu_match_cpu() -> drpo::Result<()> {
    let mut rng = rng("objective_random");
    for gpu in devices("objective_random") {
        // 12 cases: every λ twice, every τ three times, the hinge on in half; f64 inputs for two
        for k in 0..12 {
            let case = random_case(&mut rng, k);
            check_case::<f32>(&gpu, &case)?;
            if k % 6 == 0 {
                check_case::<f64>(&gpu, &case)?;
            }
        }
    }
    Ok(())
}

/// Non-finite results are errors, as on the CPU: a NaN log-prob, and a log-ratio whose ρ·A does not fit
/// the f32 gradient (ℓ − ℓ^old = 100: ρ = e^100 ≈ 2.7e43 > f32::MAX).
#[test]
fn objective_non_finite_results_are_input_errors() -> drpo::Result<()> {
    for gpu in devices("objective_errors") {
        let (group, correct, finished, len) = (vec![0, 0, 1, 1], vec![true, false, true, false], vec![true; 4], vec![2, 1, 1, 3]);
        let o = Outcomes { group: &group, correct: &correct, finished: &finished, len: &len, max_len: 4 };
        let groups = DeviceGroups::upload(&gpu, &o)?;
        let mut work = ObjectiveWork::new(&gpu, &groups)?;
        let mut dlogp = gpu.alloc_zeros::<f32>(7)?;
        let old = gpu.htod(&[-1.0f32; 7])?;
        let nan = gpu.htod(&[-1.0, f32::NAN, -1.0, -1.0, -1.0, -1.0, -1.0])?;
        let lp = TokenLogProbs { logp: nan.as_view(), old_logp: old.as_view() };
        let e = dev::drpo(&gpu, &mut dlogp.as_view_mut(), &mut work, &groups, &lp, &Hyper::default(), 1.0).unwrap_err();
        assert!(matches!(e, drpo::Error::Input { .. }) && e.to_string().contains("not finite"), "{e}");

        let big = gpu.htod(&[99.0f32; 7])?;
        let lp = TokenLogProbs { logp: big.as_view(), old_logp: old.as_view() };
        let adv = gpu.htod(&[1.0, -1.0, 1.0, -1.0])?;
        let e = dev::clipped_surrogate(&gpu, &mut dlogp.as_view_mut(), &mut work, &groups, &lp, &adv.as_view(), None, 1.0).unwrap_err();
        assert!(matches!(e, drpo::Error::Input { .. }), "{e}");
        // with positive advantages only, the clip removes every ρ (ρ > 1 + ε): finite, every token clipped
        let adv = gpu.htod(&[1.0, 0.5, 1.0, 2.0])?;
        let got = dev::clipped_surrogate(&gpu, &mut dlogp.as_view_mut(), &mut work, &groups, &lp, &adv.as_view(), Some(0.2), 1.0)?;
        assert_eq!(got.clipped_tokens, 7);
        assert!(gpu.dtoh(&dlogp)?.iter().all(|&d| d == 0.0));
    }
    Ok(())
}

/// Two calls on the same inputs give the same bits (fixed reduction orders, no atomics); on the
/// simulator every launch is also run under three thread orders and compared.
#[test]
fn objective_is_bitwise_repeatable() -> drpo::Result<()> {
    let mut rng = rng("objective_repeat");
    for gpu in devices("objective_repeat") {
        let case = random_case(&mut rng, 0);
        let groups = DeviceGroups::upload(&gpu, &case.outcomes())?;
        let mut work = ObjectiveWork::new(&gpu, &groups)?;
        let cast = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let (logp, old) = (gpu.htod(&cast(&case.logp))?, gpu.htod(&cast(&case.old_logp))?);
        let lp = TokenLogProbs { logp: logp.as_view(), old_logp: old.as_view() };
        let adv = gpu.htod(&(0..case.len.len()).map(|i| (i % 5) as f64 - 2.0).collect::<Vec<f64>>())?;
        let mut dlogp = gpu.alloc_zeros::<f32>(case.tokens())?;
        let mut runs = Vec::new();
        for _ in 0..2 {
            let d = dev::drpo(&gpu, &mut dlogp.as_view_mut(), &mut work, &groups, &lp, &case.hyper, 1.0)?;
            let d_bits: Vec<u32> = gpu.dtoh(&dlogp)?.iter().map(|x| x.to_bits()).collect();
            let s = dev::clipped_surrogate(&gpu, &mut dlogp.as_view_mut(), &mut work, &groups, &lp, &adv.as_view(), Some(0.2), 1.0)?;
            let s_bits: Vec<u32> = gpu.dtoh(&dlogp)?.iter().map(|x| x.to_bits()).collect();
            let v = [d.j, d.kl, d.loss, d.kl_coef, s.j, s.kl, s.loss].map(f64::to_bits);
            runs.push((v, d_bits, s_bits));
        }
        assert!(runs[0] == runs[1], "{}: two runs differ", case.name);
    }
    Ok(())
}
