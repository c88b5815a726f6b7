//! Tests of `drpo::rl::objectives` against independent references:
//! - the oracle fixtures `qwen2-tiny*/objectives.json` (torch autograd, f64): 1e-9 relative;
//! - SPEC.md §10 test vectors TV1, TV2, TV3, TV-S, TV-B and the §6.3 Figure-1 table, printed there
//!   with 6 significant digits: each value must lie within half a unit of its 6th digit;
//! - central finite differences (5-point stencil) of the loss, f64, on random batches;
//! - hand-derived identities (λ = ∞ is DisCO, skipped groups count in Q, clipping, errors).

use std::path::PathBuf;

use drpo::rl::objectives::{
    alp_rewards, baseline_advantages, baseline_advantages_keyed, clipped_surrogate, disco, drpo, evaluate_cases,
    grpo_advantages, hapo_rewards, hapo_rewards_keyed, kimi_length_rewards, length_weights, policy_gradient, rloo_advantages, rloo_lp_rewards, run_objective_file,
    shorter_better_rewards, Baseline, Batch, DiscoOutput, HapoHistory, Hyper, Outcomes, StdKind,
};
use drpo::Error;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// helpers

fn fixture_dir() -> PathBuf {
    match std::env::var_os("DRPO_TEST_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures"),
    }
}

fn rng(test: &str) -> StdRng {
    let seed = match std::env::var("TEST_SEED") {
        Ok(s) => s.parse().expect("TEST_SEED must be an integer"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    };
    println!("{test}: TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// An owned batch; `batch()` lends it as the library's view.
#[derive(Clone, Debug)]
struct Owned {
    group: Vec<usize>,
    correct: Vec<bool>,
    finished: Vec<bool>,
    len: Vec<usize>,
    max_len: usize,
    logp: Vec<f64>,
    old_logp: Vec<f64>,
}

impl Owned {
    /// Every token of response i has log-prob `scores[i]` (so s_i = scores[i]) and old = new (K = 0).
    fn with_scores(group: &[usize], correct: &[u8], len: &[usize], max_len: usize, scores: &[f64]) -> Owned {
        let logp: Vec<f64> = len.iter().zip(scores).flat_map(|(&l, &s)| std::iter::repeat_n(s, l)).collect();
        Owned {
            group: group.to_vec(),
            correct: correct.iter().map(|&c| c == 1).collect(),
            finished: vec![true; len.len()],
            len: len.to_vec(),
            max_len,
            old_logp: logp.clone(),
            logp,
        }
    }
    fn outcomes(&self) -> Outcomes<'_> {
        Outcomes {
            group: &self.group,
            correct: &self.correct,
            finished: &self.finished,
            len: &self.len,
            max_len: self.max_len,
        }
    }
    fn batch(&self) -> Batch<'_> {
        Batch { outcomes: self.outcomes(), logp: &self.logp, old_logp: &self.old_logp }
    }
    fn offsets(&self) -> Vec<usize> {
        self.batch().offsets()
    }
}

/// A value printed with 6 significant digits (SPEC §10) must be within half a unit of its last digit.
#[track_caller]
fn assert_sig6(name: &str, got: f64, want: f64) {
    let bound = if want == 0.0 { 1e-15 } else { 0.5 * 10f64.powf(want.abs().log10().floor() - 5.0) * (1.0 + 1e-9) };
    assert!(
        (got - want).abs() <= bound,
        "{name}: got {got:.9e}, SPEC {want:e} (|diff| {:.3e} > {bound:.1e})",
        (got - want).abs()
    );
}

#[track_caller]
fn assert_sig6_all(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert_sig6(&format!("{name}[{k}]"), g, w);
    }
}

/// max_k |got_k − want_k| / max_k |want_k| (0/0 = 0; x/0 = inf).
fn max_rel(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diff = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    let scale = want.iter().map(|w| w.abs()).fold(0.0, f64::max);
    if diff == 0.0 {
        0.0
    } else {
        diff / scale
    }
}

/// max_k |got_k − want_k| / max(|want_k|, floor)
fn worst_elementwise(got: &[f64], want: &[f64], floor: f64) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            let d = (g - w).abs();
            if d == 0.0 {
                0.0
            } else {
                d / w.abs().max(floor)
            }
        })
        .fold(0.0, f64::max)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn flat_nested(v: &Value) -> (Vec<usize>, Vec<f64>) {
    let rows = v.as_array().unwrap();
    (rows.iter().map(|r| r.as_array().unwrap().len()).collect(), rows.iter().flat_map(floats).collect())
}

// ---------------------------------------------------------------------------------------------
// fixtures

/// Tolerance for the fixtures: scalars |got − want| ≤ 1e-9 |want| (want = 0 must be exact);
/// per-response vectors (weights, rewards, advantages, scores) element-wise the same;
/// gradients max|diff| / max|ref| ≤ 1e-9 over the whole case.
const FIXTURE_TOL: f64 = 1e-9;

#[test]
fn fixture_cases_match_oracle() {
    for model in ["qwen2-tiny", "qwen2-tiny-mqa"] {
        let path = fixture_dir().join(model).join("objectives.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let fixture: Value = serde_json::from_str(&text).unwrap();
        let got = evaluate_cases(&fixture).unwrap();
        let want_cases = fixture["cases"].as_array().unwrap();
        let got_cases = got["cases"].as_array().unwrap();
        assert_eq!(got_cases.len(), want_cases.len());
        let mut worst: f64 = 0.0;
        for (want, got) in want_cases.iter().zip(got_cases) {
            let case = format!("{model}/{}", want["name"].as_str().unwrap());
            assert_eq!(got["name"], want["name"]);
            assert_eq!(got["num_groups_Q"], want["num_groups_Q"], "{case}: Q");
            assert_eq!(got["num_tokens"], want["num_tokens"], "{case}: T");
            let check_scalar = |what: &str, g: &Value, w: &Value| -> f64 {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                let rel = if g == w { 0.0 } else { (g - w).abs() / w.abs() };
                assert!(rel <= FIXTURE_TOL, "{case}: {what}: got {g:e}, want {w:e}, rel {rel:.2e}");
                rel
            };
            // intermediate
            let (gi, wi) = (&got["intermediate"], &want["intermediate"]);
            let e = worst_elementwise(&floats(&gi["scores"]), &floats(&wi["scores"]), 0.0);
            assert!(e <= FIXTURE_TOL, "{case}: scores rel {e:.2e}");
            let (gg, wg) = (gi["groups"].as_array().unwrap(), wi["groups"].as_array().unwrap());
            assert_eq!(gg.len(), wg.len(), "{case}: groups");
            for (g, w) in gg.iter().zip(wg) {
                for key in ["group", "members", "n_pos", "n_neg", "valid"] {
                    assert_eq!(g[key], w[key], "{case}: group {}: {key}", w["group"]);
                }
                if w["log_mean_exp_neg"].is_null() {
                    assert!(g["log_mean_exp_neg"].is_null(), "{case}: LME of an invalid group");
                } else {
                    worst = worst.max(check_scalar("log_mean_exp_neg", &g["log_mean_exp_neg"], &w["log_mean_exp_neg"]));
                }
                worst = worst.max(check_scalar("disco_J_g", &g["disco_J_g"], &w["disco_J_g"]));
                worst = worst.max(check_scalar("drpo_J_g", &g["drpo_J_g"], &w["drpo_J_g"]));
            }
            // methods: same keys, scalars, per-response vectors, gradients
            for method in ["disco", "drpo", "grpo"] {
                let (g, w) = (&got[method], &want[method]);
                let mut gk: Vec<_> = g.as_object().unwrap().keys().collect();
                let mut wk: Vec<_> = w.as_object().unwrap().keys().collect();
                gk.sort();
                wk.sort();
                assert_eq!(gk, wk, "{case}: {method}: keys");
                for key in ["J", "kl", "penalty", "loss"] {
                    if w.get(key).is_some() {
                        worst = worst.max(check_scalar(&format!("{method}.{key}"), &g[key], &w[key]));
                    }
                }
                for key in ["length_rewards", "weights", "rewards", "advantages"] {
                    if w.get(key).is_some() {
                        let e = worst_elementwise(&floats(&g[key]), &floats(&w[key]), 0.0);
                        assert!(e <= FIXTURE_TOL, "{case}: {method}.{key}: worst element rel {e:.2e}");
                        worst = worst.max(e);
                    }
                }
                let (g_shape, g_flat) = flat_nested(&g["grad_logp"]);
                let (w_shape, w_flat) = flat_nested(&w["grad_logp"]);
                assert_eq!(g_shape, w_shape, "{case}: {method}.grad_logp shape");
                let e = max_rel(&g_flat, &w_flat);
                let e_elem = worst_elementwise(&g_flat, &w_flat, 1e-12);
                println!("{case:48} {method:5} grad max_rel {e:.2e}  worst element (floor 1e-12) {e_elem:.2e}");
                assert!(e <= FIXTURE_TOL, "{case}: {method}.grad_logp max_rel {e:.2e}");
                worst = worst.max(e);
            }
        }
        println!("{model}: worst relative difference over all checks {worst:.2e}");
    }
}

#[test]
fn run_objective_file_round_trips() {
    let input = fixture_dir().join("qwen2-tiny").join("objectives.json");
    let out = std::env::temp_dir().join(format!("drpo-objectives-{}.json", std::process::id()));
    run_objective_file(&input, &out).unwrap();
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    std::fs::remove_file(&out).unwrap();
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&input).unwrap()).unwrap();
    // serde_json without its `float_roundtrip` feature may parse a written float 1 ulp off
    let worst = json_max_rel(&written, &evaluate_cases(&fixture).unwrap());
    println!("file round trip: worst relative difference {worst:.2e}");
    assert!(worst <= 4.0 * f64::EPSILON, "{worst:e}");
}

/// Same structure and equal non-numbers; returns the worst relative difference of the numbers.
fn json_max_rel(a: &Value, b: &Value) -> f64 {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if x == y {
                0.0
            } else {
                (x - y).abs() / x.abs().max(y.abs())
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(x, y)| json_max_rel(x, y)).fold(0.0, f64::max)
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
            x.iter().map(|(k, v)| json_max_rel(v, &y[k])).fold(0.0, f64::max)
        }
        _ => {
            assert_eq!(a, b);
            0.0
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SPEC §10 test vectors

/// TV1: Figure-1 group, τ = 10, Q = 1. r_l = 1 − L/C with C = 100, L = 27, 40, 80.
#[test]
fn tv1_figure1_group() {
    let b = Owned::with_scores(
        &[0; 6],
        &[1, 1, 1, 0, 0, 0],
        &[27, 40, 80, 5, 9, 13],
        100,
        &[-0.35, -0.50, -0.42, -0.61, -0.28, -0.95],
    );
    let hyper = Hyper { lambda: 0.1, tau: 10.0, ..Hyper::default() };
    let out = drpo(&b.batch(), &hyper).unwrap();
    assert_sig6_all("TV1 λ=0.1 ŵ", &out.weights[..3], &[0.782765, 0.213328, 0.00390724]);
    let lme = out.groups[0].log_mean_exp_neg.unwrap();
    assert_sig6("TV1 negative term", lme, -0.609593);
    assert_sig6("TV1 positive term", out.groups[0].j + lme, -0.382273);
    assert_sig6("TV1 J", out.j, 0.227320);
    assert_sig6("TV1 loss", out.loss, -0.227320);
    let dj_ds: Vec<f64> = out.dloss_ds.iter().map(|d| -d).collect(); // Q = 1
    assert_sig6_all("TV1 dJ/ds", &dj_ds, &[0.782765, 0.213328, 0.00390724, -0.333320, -0.344503, -0.322177]);
    // the code-logged detach-trick value −(Σŵs − τ) is not what we report as loss
    assert_sig6("TV1 code-logged pg_loss", -((out.groups[0].j + lme) - hyper.tau), 10.3823);

    let out = drpo(&b.batch(), &Hyper { lambda: 1.0, ..hyper }).unwrap();
    assert_sig6_all("TV1 λ=1 ŵ", &out.weights[..3], &[0.405400, 0.355980, 0.238620]);
    assert_sig6("TV1 λ=1 Σŵs", out.groups[0].j + out.groups[0].log_mean_exp_neg.unwrap(), -0.420100);
    assert_sig6("TV1 λ=1 J", out.j, 0.189493);
    let dj_ds: Vec<f64> = out.dloss_ds.iter().map(|d| -d).collect();
    assert_sig6_all("TV1 λ=1 dJ/ds", &dj_ds, &[0.405400, 0.355980, 0.238620, -0.333320, -0.344503, -0.322177]);
}

fn tv2_batch() -> Owned {
    Owned::with_scores(
        &[0; 8],
        &[1, 1, 1, 0, 1, 0, 0, 0],
        &[1200, 3000, 8192, 5000, 800, 8192, 2500, 6000],
        8192,
        &[-0.20, -0.35, -0.60, -0.45, -0.15, -0.80, -0.30, -0.55],
    )
}

#[test]
fn tv2_code_faithful_group() {
    let b = tv2_batch();
    let hyper = Hyper { lambda: 0.1, tau: 10.0, ..Hyper::default() };
    let out = drpo(&b.batch(), &hyper).unwrap();
    assert_sig6_all(
        "TV2 r_l",
        &out.length_rewards,
        &[0.853516, 0.633789, 0.0, 0.389648, 0.902344, 0.0, 0.694824, 0.267578],
    );
    let pos = [0, 1, 2, 4];
    let w: Vec<f64> = pos.iter().map(|&i| out.weights[i]).collect();
    assert_sig6_all("TV2 ŵ", &w, &[0.364855, 0.0405378, 7.16719e-05, 0.594536]);
    let omega: Vec<f64> = w.iter().map(|x| 4.0 * x).collect();
    assert_sig6_all("TV2 ω", &omega, &[1.45942, 0.162151, 0.000286688, 2.37814]);
    let lme = out.groups[0].log_mean_exp_neg.unwrap();
    assert_sig6("TV2 Σŵs", out.j + lme, -0.176383);
    assert_sig6("TV2 neg term", lme, -0.523348);
    assert_sig6("TV2 J", out.j, 0.346965);
    let dj_ds: Vec<f64> = out.dloss_ds.iter().map(|d| -d).collect();
    assert_sig6_all(
        "TV2 dJ/ds",
        &dj_ds,
        &[0.364855, 0.0405378, 7.16719e-05, -0.251840, 0.594536, -0.243178, -0.255647, -0.249335],
    );
    // every token of response i carries dJ/ds_i / L_i (no penalty: old = new)
    let off = b.offsets();
    let per_token =
        [3.04046e-04, 1.35126e-05, 8.74901e-09, -5.03681e-05, 7.43170e-04, -2.96849e-05, -1.02259e-04, -4.15558e-05];
    for (i, &want) in per_token.iter().enumerate() {
        for k in off[i]..off[i + 1] {
            assert_sig6(&format!("TV2 dJ/dℓ[{i}]"), -out.dlogp[k], want);
        }
    }

    // λ sweep
    for (lambda, want_w, want_j) in [
        (0.05, [0.272654, 0.00336582, 1.05213e-08, 0.723981], 0.359042),
        (0.2, [0.381117, 0.127036, 0.00534162, 0.486505], 0.326481),
        (0.5, [0.341486, 0.220050, 0.0619468, 0.376517], 0.284387),
        (f64::INFINITY, [0.25, 0.25, 0.25, 0.25], 0.198348),
    ] {
        let out = drpo(&b.batch(), &Hyper { lambda, ..hyper }).unwrap();
        let w: Vec<f64> = pos.iter().map(|&i| out.weights[i]).collect();
        assert_sig6_all(&format!("TV2 λ={lambda} ŵ"), &w, &want_w);
        assert_sig6(&format!("TV2 λ={lambda} J"), out.j, want_j);
    }
    assert_sig6("TV2 DisCO J", disco(&b.batch(), &hyper).unwrap().j, 0.198348);

    // τ sweep (λ = 0.1)
    let neg = [3, 5, 6, 7];
    for (tau, want_g, want_j) in [
        (1.0, [-0.265156, -0.186853, -0.308068, -0.239923], 0.332476),
        (100.0, [-0.250187, -0.249313, -0.250563, -0.249937], 0.348452),
    ] {
        let out = drpo(&b.batch(), &Hyper { tau, ..hyper }).unwrap();
        let g: Vec<f64> = neg.iter().map(|&j| -out.dloss_ds[j]).collect();
        assert_sig6_all(&format!("TV2 τ={tau} negative grads"), &g, &want_g);
        assert_sig6(&format!("TV2 τ={tau} J"), out.j, want_j);
    }
}

/// TV3: three questions (A mixed, B all correct, C mixed), C = 8, KL above δ.
#[test]
fn tv3_end_to_end_chunk() {
    let responses: [(usize, u8, Vec<f64>, Vec<f64>); 12] = [
        (0, 1, vec![-0.10, -0.20, -0.30], vec![-0.12, -0.18, -0.33]),
        (0, 1, vec![-0.50, -0.40, -0.30, -0.20, -0.10, -0.60], vec![-0.45, -0.42, -0.31, -0.25, -0.10, -0.55]),
        (0, 0, vec![-1.00, -0.80, -0.60, -0.40], vec![-0.90, -0.85, -0.62, -0.41]),
        (0, 0, vec![-0.30; 8], vec![-0.29; 8]),
        (1, 1, vec![-0.20, -0.20], vec![-0.21, -0.19]),
        (1, 1, vec![-0.10, -0.30], vec![-0.10, -0.30]),
        (1, 1, vec![-0.40, -0.20], vec![-0.38, -0.20]),
        (1, 1, vec![-0.15, -0.25], vec![-0.15, -0.27]),
        (2, 1, vec![-0.30; 5], vec![-0.31; 5]),
        (2, 0, vec![-0.05, -0.05], vec![-0.05, -0.06]),
        (2, 0, vec![-0.70; 7], vec![-0.69; 7]),
        (2, 0, vec![-0.90, -0.10, -0.20], vec![-0.88, -0.12, -0.20]),
    ];
    let b = Owned {
        group: responses.iter().map(|r| r.0).collect(),
        correct: responses.iter().map(|r| r.1 == 1).collect(),
        finished: vec![true; 12],
        len: responses.iter().map(|r| r.2.len()).collect(),
        max_len: 8,
        logp: responses.iter().flat_map(|r| r.2.clone()).collect(),
        old_logp: responses.iter().flat_map(|r| r.3.clone()).collect(),
    };
    let out =
        drpo(&b.batch(), &Hyper { lambda: 0.1, tau: 10.0, beta: 1000.0, delta: 1e-4, ..Hyper::default() }).unwrap();
    assert_eq!(out.num_tokens, 46);
    assert_eq!(out.num_groups, 3);
    assert_sig6("TV3 K", out.kl, 0.00217391);
    assert_sig6("TV3 coef", out.kl_coef, 2.07391);
    assert_sig6("TV3 Pen", out.penalty, 0.00215056);
    assert_sig6_all("TV3 s_A", &out.scores[..4], &[-0.2, -0.35, -0.7, -0.3]);
    assert_sig6_all("TV3 r_l A", &out.length_rewards[..4], &[0.625, 0.25, 0.5, 0.0]);
    assert_sig6_all("TV3 ŵ_A", &out.weights[..2], &[0.977023, 0.0229774]);
    assert_sig6("TV3 J_A", out.groups[0].j, 0.294554);
    assert!(!out.groups[1].valid && out.groups[1].j == 0.0, "B is skipped");
    assert_sig6_all("TV3 s_C", &out.scores[8..], &[-0.3, -0.05, -0.7, -0.4]);
    assert_eq!(out.weights[8], 1.0);
    assert_sig6("TV3 J_C", out.groups[2].j, 0.0798029);
    let dj_ds: Vec<f64> = out.dloss_ds.iter().map(|d| -3.0 * d).collect();
    assert_sig6_all("TV3 dJ/ds A", &dj_ds[..4], &[0.977023, 0.0229774, -0.490001, -0.509999]);
    assert_sig6_all("TV3 dJ/ds C", &dj_ds[8..], &[1.0, -0.344510, -0.322829, -0.332661]);
    assert_sig6("TV3 loss", out.loss, -0.122635);
    assert_sig6("TV3 −ΣJ/Q", -out.j, -0.124785);
    let table: [(f64, f64); 12] = [
        (-0.325674, -0.153643),
        (-0.00765912, -0.0463616),
        (0.163334, -0.00425162),
        (0.170000, -0.0238351),
        (0.0, -0.0450851),
        (0.0, -0.0450851),
        (0.0, -0.0450851),
        (0.0, -0.0450851),
        (-0.333333, -0.111752),
        (0.114837, 0.0123333),
        (0.107610, -0.0297122),
        (0.110887, -0.00812276),
    ];
    let off = b.offsets();
    for (i, &(dloss_ds, dloss_dl)) in table.iter().enumerate() {
        assert_sig6(&format!("TV3 dLoss/ds[{i}]"), out.dloss_ds[i], dloss_ds);
        for k in off[i]..off[i + 1] {
            assert_sig6(&format!("TV3 dLoss/dℓ[{i}]"), out.dlogp[k], dloss_dl);
        }
    }
}

/// TV-S: λ = 1e-3 overflows a naive exp(r/λ); the max-shifted softmax does not.
#[test]
fn tv_s_tiny_lambda_is_stable() {
    let want = [1.0, 1.92875e-22, 7.12458e-218];
    assert_sig6_all("TV-S ŵ", &length_weights(&[0.90, 0.85, 0.40], 1e-3), &want);
    // the same through the objective: C = 100, L = 10, 15, 60 → r_l = 0.90, 0.85, 0.40
    let b = Owned::with_scores(&[0; 4], &[1, 1, 1, 0], &[10, 15, 60, 7], 100, &[-0.3, -0.2, -0.9, -0.4]);
    let out = drpo(&b.batch(), &Hyper { lambda: 1e-3, ..Hyper::default() }).unwrap();
    assert_sig6_all("TV-S ŵ via drpo", &out.weights[..3], &want);
    assert!(out.dlogp.iter().chain([&out.j, &out.loss]).all(|v| v.is_finite()));
}

/// TV-B: the baselines' rewards and advantages on one group of 8 (C = 8192).
#[test]
fn tv_b_baseline_rewards() {
    let b = Owned::with_scores(
        &[0; 8],
        &[1, 1, 1, 0, 1, 0, 0, 0],
        &[1200, 3000, 6500, 5000, 800, 7000, 2500, 6000],
        8192,
        &[-0.5; 8],
    );
    let o = b.outcomes();
    let sample = |r: &[f64]| grpo_advantages(o.group, r, 1e-6, StdKind::Sample).unwrap();

    // plain GRPO
    let acc: Vec<f64> = o.correct.iter().map(|&c| if c { 1.0 } else { 0.0 }).collect();
    let a = sample(&acc);
    for (i, &c) in o.correct.iter().enumerate() {
        assert_sig6(&format!("GRPO A[{i}]"), a[i], if c { 0.935413 } else { -0.935413 });
    }
    let (r, a2) = baseline_advantages(Baseline::Grpo, &o, &Hyper::default(), &mut HapoHistory::default()).unwrap();
    assert_eq!((r, a2), (acc, a));

    // RLOO-LP α = 0.2
    let r = rloo_lp_rewards(&o, 0.2).unwrap();
    assert_sig6_all("RLOO-LP r", &r, &[0.935579, 0.897224, 0.833306, 0.0, 0.943083, 0.0, 0.0, 0.0]);
    let a = rloo_advantages(o.group, &r).unwrap();
    assert_sig6_all(
        "RLOO-LP A",
        &a,
        &[0.553635, 0.509800, 0.436751, -0.515599, 0.562210, -0.515599, -0.515599, -0.515599],
    );
    let hyper = Hyper { rloo_alpha: 0.2, ..Hyper::default() };
    let (r2, a2) = baseline_advantages(Baseline::RlooLp, &o, &hyper, &mut HapoHistory::default()).unwrap();
    assert_eq!((r2, a2), (r, a));

    // ALP β = 1e-8
    let r = alp_rewards(&o, 1e-8).unwrap();
    assert_sig6_all("ALP r", &r, &[0.999994, 0.999985, 0.999968, -2.5e-05, 0.999996, -3.5e-05, -1.25e-05, -3e-05]);
    assert_sig6_all(
        "ALP A",
        &sample(&r),
        &[0.935428, 0.935411, 0.935379, -0.935411, 0.935432, -0.935430, -0.935388, -0.935421],
    );

    // HAPO h = 3000, w = 0.1
    let history = HapoHistory { shortest_correct: [(0, 3000)].into_iter().collect() };
    let (r, updated) = hapo_rewards(&o, 0.1, &history).unwrap();
    assert_sig6_all("HAPO r", &r, &[1.08090, 1.0, 0.930000, -0.0866025, 1.09135, -0.1, 0.0, -0.1]);
    assert_sig6_all(
        "HAPO A",
        &sample(&r),
        &[1.02464, 0.887387, 0.768626, -0.956125, 1.04238, -0.978855, -0.809197, -0.978855],
    );
    assert_eq!(updated.shortest_correct[&0], 800, "h ← min(3000, shortest correct 800)");

    // Kimi length reward
    assert_sig6_all(
        "Kimi",
        &kimi_length_rewards(&o).unwrap(),
        &[0.435484, 0.145161, -0.419355, -0.177419, 0.5, -0.5, 0.0, -0.338710],
    );

    // ShorterBetter α = 1, β = 0.001 (SOL = 800)
    let r = shorter_better_rewards(&o, 1.0, 0.001).unwrap();
    assert_sig6_all("SB r", &r, &[0.6, -1.2, -4.7, -4.2, 1.0, -6.2, -1.7, -5.2]);
    let a = sample(&r);
    assert_sig6_all("SB A", &a, &[1.20407, 0.547306, -0.729741, -0.547306, 1.35002, -1.27705, 0.364870, -0.912176]);
    assert!(a[2] < 0.0 && a[6] > 0.0, "SB: long correct answer pushed down, short wrong one up");

    // DRPO λ = 0.1: all positive
    let out = drpo(&b.batch(), &Hyper::default()).unwrap();
    assert_sig6_all(
        "DRPO r_l(P)",
        &[0, 1, 2, 4].map(|i| out.length_rewards[i]),
        &[0.853516, 0.633789, 0.206543, 0.902344],
    );
    let w = [0, 1, 2, 4].map(|i| out.weights[i]);
    assert_sig6_all("DRPO ŵ", &w, &[0.364675, 0.0405178, 0.000565118, 0.594242]);
    assert!(w.iter().all(|&x| x > 0.0));
}

/// The Kimi baseline adds weight × length reward to the accuracy reward, then GRPO.
#[test]
fn kimi_baseline_is_accuracy_plus_weighted_length_reward() {
    let b = Owned::with_scores(&[3, 3, 3, 3], &[1, 0, 1, 0], &[10, 20, 30, 40], 64, &[-1.0; 4]);
    let o = b.outcomes();
    let hyper = Hyper { kimi_weight: 0.5, ..Hyper::default() };
    let (r, a) = baseline_advantages(Baseline::Kimi, &o, &hyper, &mut HapoHistory::default()).unwrap();
    // Lmin 10, Lmax 40: λ = 0.5, 1/6, −1/6, −0.5; wrong ones keep min(0, λ)
    let want = [1.0 + 0.25, 0.0, 1.0 - 0.5 / 6.0, -0.25];
    for k in 0..4 {
        assert!((r[k] - want[k]).abs() < 1e-15, "r[{k}] = {}, want {}", r[k], want[k]);
    }
    assert_eq!(a, grpo_advantages(o.group, &r, 1e-6, StdKind::Sample).unwrap());
}

/// SPEC §6.3: GRPO on the length-penalised rewards flips the sign of a correct answer; DRPO never.
#[test]
fn figure1_grpo_sign_flip_and_drpo_weights() {
    let group = [0; 6];
    let penalised = [0.73, 0.6, 0.2, 0.0, 0.0, 0.0];
    // the SPEC table mixes conventions: the sample-std penalised row has the verl ε = 1e-6,
    // the other rows none (checked: with ε the population row would read 1.57931)
    let a = grpo_advantages(&group, &penalised, 1e-6, StdKind::Sample).unwrap();
    assert_sig6_all("Fig1 sample+ε", &a, &[1.44171, 1.04714, -0.166935, -0.773970, -0.773970, -0.773970]);
    let a = grpo_advantages(&group, &penalised, 0.0, StdKind::Population).unwrap();
    assert_sig6_all("Fig1 population", &a, &[1.57932, 1.14708, -0.182868, -0.847844, -0.847844, -0.847844]);
    let acc = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
    let a = grpo_advantages(&group, &acc, 0.0, StdKind::Population).unwrap();
    assert_sig6_all("Fig1 acc population", &a, &[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]);
    let a = grpo_advantages(&group, &acc, 0.0, StdKind::Sample).unwrap();
    assert_sig6_all("Fig1 acc sample", &a, &[0.912871, 0.912871, 0.912871, -0.912871, -0.912871, -0.912871]);

    // DRPO on r_l = 0.73, 0.6, 0.2 (C = 100, L = 27, 40, 80)
    let b = Owned::with_scores(&group, &[1, 1, 1, 0, 0, 0], &[27, 40, 80, 5, 9, 13], 100, &[-0.4; 6]);
    for (lambda, w_want, omega_want) in [
        (0.05, [0.930840, 0.0691368, 2.31928e-05], [2.79252, 0.207410, 6.95785e-05]),
        (0.1, [0.782765, 0.213328, 0.00390724], [2.34829, 0.639985, 0.0117217]),
        (0.2, [0.627866, 0.327775, 0.0443595], [1.88360, 0.983324, 0.133078]),
        (0.5, [0.472253, 0.364132, 0.163615], [1.41676, 1.09240, 0.490845]),
        (1.0, [0.405400, 0.355980, 0.238620], [1.21620, 1.06794, 0.715861]),
        (f64::INFINITY, [1.0 / 3.0; 3], [1.0; 3]),
    ] {
        let out = drpo(&b.batch(), &Hyper { lambda, ..Hyper::default() }).unwrap();
        let w = &out.weights[..3];
        assert!(w.iter().all(|&x| x > 0.0), "λ = {lambda}: a correct answer got weight ≤ 0");
        assert!(out.dloss_ds[..3].iter().all(|&d| d < 0.0), "λ = {lambda}: loss must push every positive up");
        assert_sig6_all(&format!("Fig1 ŵ λ={lambda}"), w, &w_want);
        let omega: Vec<f64> = w.iter().map(|x| 3.0 * x).collect();
        assert_sig6_all(&format!("Fig1 ω λ={lambda}"), &omega, &omega_want);
        // equal negative scores: −1/3 each
        for j in 3..6 {
            assert!((out.dloss_ds[j] - 1.0 / 3.0).abs() < 1e-15);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// identities

#[test]
fn lambda_to_infinity_is_disco() {
    let mut rng = rng("lambda_to_infinity_is_disco");
    // need a mixed group whose positives differ in length, or λ has nothing to act on
    let b = loop {
        let b = random_batch(&mut rng, KlRegime::Above, 128);
        let informative = disco(&b.batch(), &Hyper::default()).unwrap().groups.iter().any(|g| {
            let lens: Vec<usize> = g.members.iter().filter(|&&i| b.correct[i]).map(|&i| b.len[i]).collect();
            g.valid && lens.iter().any(|&l| l != lens[0])
        });
        if informative {
            break b;
        }
    };
    let hyper = Hyper::default();
    let reference = disco(&b.batch(), &hyper).unwrap();
    // λ = ∞ is the same code path with uniform weights: identical to the last bit
    assert_eq!(drpo(&b.batch(), &Hyper { lambda: f64::INFINITY, ..hyper }).unwrap(), reference);
    // DisCO weights are 1/|P| on the positives of valid groups
    for g in reference.groups.iter().filter(|g| g.valid) {
        for &i in g.members.iter().filter(|&&i| b.correct[i]) {
            assert_eq!(reference.weights[i], 1.0 / g.n_pos as f64);
        }
    }
    // finite λ: ŵ_i − 1/|P| ≈ (r_i − mean r)/(|P| λ), so the gap shrinks like 1/λ
    let mut last = f64::INFINITY;
    for lambda in [1e2, 1e4, 1e6, 1e8] {
        let out = drpo(&b.batch(), &Hyper { lambda, ..hyper }).unwrap();
        let gap = (out.j - reference.j).abs() + max_rel(&out.dlogp, &reference.dlogp);
        println!("λ = {lambda:e}: gap {gap:.3e}, gap·λ {:.3}", gap * lambda);
        assert!(gap * lambda <= 1e3, "λ = {lambda}: gap {gap:e}");
        assert!(gap < last);
        last = gap;
    }
    assert!(last < 1e-5);
}

#[test]
fn skipped_groups_count_in_q_and_get_no_signal() {
    // one mixed group alone, K = 0
    let mixed = Owned::with_scores(&[7, 7, 7, 7], &[1, 0, 1, 0], &[3, 5, 9, 2], 16, &[-0.4, -0.9, -0.6, -0.2]);
    let alone = drpo(&mixed.batch(), &Hyper::default()).unwrap();
    assert_eq!(alone.num_groups, 1);
    // the same plus an all-correct group (different lengths) and an all-wrong group, interleaved
    let b = Owned::with_scores(
        &[7, 1, 7, 2, 7, 1, 2, 7, 1],
        &[1, 1, 0, 0, 1, 1, 0, 0, 1],
        &[3, 2, 5, 4, 9, 12, 6, 2, 7],
        16,
        &[-0.4, -0.1, -0.9, -0.3, -0.6, -0.8, -0.5, -0.2, -0.7],
    );
    for hyper in [Hyper::default(), Hyper { lambda: f64::INFINITY, ..Hyper::default() }] {
        let out = drpo(&b.batch(), &hyper).unwrap();
        let alone = drpo(&mixed.batch(), &hyper).unwrap();
        assert_eq!(out.num_groups, 3);
        assert!((out.j - alone.j / 3.0).abs() <= 1e-15 * alone.j.abs());
        let mixed_members = [0, 2, 4, 7];
        for (k, &i) in mixed_members.iter().enumerate() {
            assert!((out.dloss_ds[i] - alone.dloss_ds[k] / 3.0).abs() <= 1e-15);
        }
        let off = b.offsets();
        for i in [1, 5, 8, 3, 6] {
            // all-correct (1, 5, 8) get no weight and no length signal; all-wrong (3, 6) no push
            assert_eq!(out.weights[i], 0.0);
            assert_eq!(out.dloss_ds[i], 0.0);
            assert!(out.dlogp[off[i]..off[i + 1]].iter().all(|&d| d == 0.0));
        }
        // groups come in ascending id order: 1 (all correct), 2 (all wrong), 7 (mixed)
        let ids: Vec<(usize, bool)> = out.groups.iter().map(|g| (g.id, g.valid)).collect();
        assert_eq!(ids, vec![(1, false), (2, false), (7, true)]);
    }
}

#[test]
fn kl_penalty_shifts_every_token_including_skipped_groups() {
    // one mixed group and one all-correct group; old − new = 0.01 on every token → K = 0.01
    let mut b = Owned::with_scores(&[0, 0, 1, 1], &[1, 0, 1, 1], &[4, 6, 3, 5], 8, &[-0.5, -0.7, -0.2, -0.3]);
    b.old_logp.iter_mut().for_each(|x| *x += 0.01);
    let out = drpo(&b.batch(), &Hyper::default()).unwrap();
    assert!((out.kl - 0.01).abs() < 1e-15);
    let coef = 1000.0 * (0.01 - 1e-4);
    // old − new = (x + 0.01) − x carries ~1e-17 of rounding per token, times β = 1000
    assert!((out.kl_coef - coef).abs() < 1e-12 * coef);
    assert!((out.penalty - 0.5 * 1000.0 * (0.01f64 - 1e-4).powi(2)).abs() < 1e-12 * out.penalty);
    let off = b.offsets();
    for i in 2..4 {
        for k in off[i]..off[i + 1] {
            assert!((out.dlogp[k] + coef / 18.0).abs() < 1e-12 * coef, "skipped group token gets −coef/T");
        }
    }
}

#[test]
fn clipping_follows_the_min_of_the_two_branches() {
    // one response per group (A = r/(1+ε), std 1), 3 tokens with ratios e^{0.3}, 1, e^{−0.3}
    let lp = [0.3, 0.0, -0.3];
    let b = Owned {
        group: vec![0, 1],
        correct: vec![true, true],
        finished: vec![true, true],
        len: vec![3, 3],
        max_len: 4,
        logp: lp.iter().chain(&lp).map(|x| x - 1.0).collect(),
        old_logp: vec![-1.0; 6],
    };
    let adv = [2.0, -2.0];
    let out = clipped_surrogate(&b.batch(), &adv, Some(0.2)).unwrap();
    let (hi, lo) = (0.3f64.exp(), (-0.3f64).exp());
    // A > 0: the token with ρ > 1.2 is clipped (value 1.2A, no gradient); A < 0: ρ < 0.8 is clipped
    let j0 = (1.2 * 2.0 + 2.0 + lo * 2.0) / 3.0;
    let j1 = (hi * -2.0 - 2.0 + 0.8 * -2.0) / 3.0;
    assert!((out.j - (j0 + j1) / 2.0).abs() < 1e-15);
    assert_eq!(out.clipped_tokens, 2);
    let scale = 1.0 / (2.0 * 3.0);
    let want = [0.0, -2.0 * scale, -lo * 2.0 * scale, hi * 2.0 * scale, 2.0 * scale, 0.0];
    for (k, (got, want)) in out.dlogp.iter().zip(want).enumerate() {
        assert!((got - want).abs() < 1e-15, "dlogp[{k}] = {got}, want {want}");
    }
    // no clipping: plain ρA everywhere
    let out = clipped_surrogate(&b.batch(), &adv, None).unwrap();
    assert_eq!(out.clipped_tokens, 0);
    assert!((out.j - ((hi + 1.0 + lo) * 2.0 - (hi + 1.0 + lo) * 2.0) / 6.0).abs() < 1e-15);
    // group of one: verl convention mean 0, std 1
    assert_eq!(grpo_advantages(&[0, 1], &[1.0, 0.0], 1e-6, StdKind::Sample).unwrap(), vec![1.0 / (1.0 + 1e-6), 0.0]);
    assert_eq!(rloo_advantages(&[0, 1], &[1.0, 0.0]).unwrap(), vec![0.0, 0.0]);
}

#[test]
fn hapo_history_is_read_before_update() {
    let b = Owned::with_scores(&[5, 5, 5, 9, 9], &[1, 1, 0, 0, 0], &[40, 20, 10, 30, 50], 64, &[-1.0; 5]);
    let o = b.outcomes();
    // no history: f = 0, r = c; the history learns problem 5's shortest correct length only
    let (r, h1) = hapo_rewards(&o, 1.0, &HapoHistory::default()).unwrap();
    assert_eq!(r, vec![1.0, 1.0, 0.0, 0.0, 0.0]);
    assert_eq!(h1.shortest_correct.len(), 1);
    assert_eq!(h1.shortest_correct[&5], 20);
    // second step, h = 20: L = 40 = 2h → x = −1 → max(−0.7, −1) = −0.7; L = 20 → cos(π/2) ≈ 0;
    // the wrong L = 10 → cos(π/4) > 0 → min(0, ·) = 0
    let (r, h2) = hapo_rewards(&o, 1.0, &h1).unwrap();
    assert!((r[0] - 0.3).abs() < 1e-15 && (r[1] - 1.0).abs() < 1e-15 && r[2] == 0.0);
    assert_eq!(h2, h1);
    // through the dispatcher the history is updated in place
    let mut history = HapoHistory::default();
    baseline_advantages(Baseline::Hapo, &o, &Hyper::default(), &mut history).unwrap();
    assert_eq!(history, h1);
}

/// A trainer's group ids are slots of a step; HAPO's history must follow the problem: keyed by
/// `keys`, problem 7 seen in slot 0 of one step is found again in slot 3 of the next.
#[test]
fn hapo_history_keyed_by_problem() {
    let step1 = Owned::with_scores(&[0, 0, 1, 1], &[1, 0, 1, 1], &[30, 10, 12, 16], 64, &[-1.0; 4]);
    let keys1 = [7, 7, 2, 2];
    let (_, h1) = hapo_rewards_keyed(&step1.outcomes(), &keys1, 1.0, &HapoHistory::default()).unwrap();
    assert_eq!(h1.shortest_correct, [(7, 30), (2, 12)].into_iter().collect(), "keyed by problem, not slot");
    // next step: problem 7 now in slot 3 (with L = 30 = h: x = cos(π/2) ≈ 0), slot 0 a new problem
    let step2 = Owned::with_scores(&[3, 3, 0, 0], &[1, 0, 1, 0], &[30, 60, 30, 60], 64, &[-1.0; 4]);
    let keys2 = [7, 7, 5, 5];
    let (r, h2) = hapo_rewards_keyed(&step2.outcomes(), &keys2, 1.0, &h1).unwrap();
    // problem 7: h = 30 → correct L = 30: cos(π/2) ≈ 6e-17; wrong L = 60 = 2h: x = −1 → min(0, −1) = −1
    assert!((r[0] - 1.0).abs() < 1e-15 && r[1] == -1.0, "{r:?}");
    // problem 5 has no history: plain correctness
    assert_eq!((r[2], r[3]), (1.0, 0.0));
    assert_eq!(h2.shortest_correct[&5], 30);
    // by group id (the old keying) slot 0 would have read problem 7's history for problem 5
    let (by_slot, _) = hapo_rewards(&step2.outcomes(), 1.0, &HapoHistory { shortest_correct: [(0, 30)].into_iter().collect() }).unwrap();
    assert_ne!(by_slot[3], r[3]);
    // the dispatcher passes the keys through
    let mut h = h1.clone();
    baseline_advantages_keyed(Baseline::Hapo, &step2.outcomes(), &keys2, &Hyper::default(), &mut h).unwrap();
    assert_eq!(h, h2);
    // a group whose members have different keys is a caller bug
    let e = hapo_rewards_keyed(&step2.outcomes(), &[7, 8, 5, 5], 1.0, &h1).unwrap_err();
    assert!(e.to_string().contains("mixes problem keys"), "{e}");
}

/// RLOO-LP reads `finished`: a correct but truncated answer is treated as wrong (reward 0) and left
/// out of the length statistics of the correct ones. Reference by hand from SPEC §7.1.
#[test]
fn rloo_lp_treats_unfinished_correct_answers_as_wrong() {
    let mut b = Owned::with_scores(&[0, 0, 0, 0, 1, 1], &[1, 1, 1, 0, 1, 1], &[10, 8, 20, 5, 7, 9], 32, &[-1.0; 6]);
    b.finished = vec![true, false, true, true, false, false];
    let alpha = 0.2;
    let r = rloo_lp_rewards(&b.outcomes(), alpha).unwrap();
    // group 0: S = {0, 2}, μ = 15, σ = 5 (population), so z = ∓1/(1 + 2e-8)
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let z = 5.0 / (5.0 + 1e-7);
    let want = [1.0 - alpha * sig(-z), 0.0, 1.0 - alpha * sig(z), 0.0, 0.0, 0.0];
    for (k, (g, w)) in r.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-15, "r[{k}] = {g}, want {w}");
    }
    // all truncated in group 1: nobody solved it
    let hyper = Hyper { rloo_alpha: alpha, ..Hyper::default() };
    let (r2, adv) = baseline_advantages(Baseline::RlooLp, &b.outcomes(), &hyper, &mut HapoHistory::default()).unwrap();
    assert_eq!(r2, r);
    let total: f64 = want[..4].iter().sum();
    for k in 0..4 {
        assert!((adv[k] - (want[k] - (total - want[k]) / 3.0)).abs() < 1e-15, "A[{k}]");
    }
    assert_eq!((adv[4], adv[5]), (0.0, 0.0));
    // with every answer finished, the truncated one would count as correct
    b.finished = vec![true; 6];
    assert!(rloo_lp_rewards(&b.outcomes(), alpha).unwrap()[1] > 0.0);
}

/// Finite log-probs whose sums overflow (|ℓ| near f64::MAX) give an input error, never NaN or ±inf:
/// the score s = Σℓ/L, the KL, and the surrogate's ratio.
#[test]
fn overflowing_finite_input_is_an_error_not_nan() {
    let mut b = Owned::with_scores(&[0, 0], &[1, 0], &[2, 1], 8, &[-0.5, -0.5]);
    b.logp = vec![-1.5e308, -1.5e308, -0.5];
    b.old_logp = b.logp.clone();
    for out in [drpo(&b.batch(), &Hyper::default()), disco(&b.batch(), &Hyper::default())] {
        match out {
            Err(Error::Input { what }) => assert!(what.contains("response 0") && what.contains("overflows"), "{what}"),
            other => panic!("expected an input error, got {other:?}"),
        }
    }
    // the scores are fine but the KL sum overflows
    let mut b = Owned::with_scores(&[0, 0], &[1, 0], &[2, 1], 8, &[-0.5, -0.5]);
    b.old_logp = vec![1.5e308, 1.5e308, -0.5];
    b.logp = vec![-1.0e308, -1.0e308, -0.5];
    match drpo(&b.batch(), &Hyper::default()) {
        Err(Error::Input { what }) => assert!(what.contains("overflows"), "{what}"),
        other => panic!("expected an input error, got {other:?}"),
    }
    // the surrogate: ℓ − ℓ^old = 800 makes ρ = +inf
    let mut b = Owned::with_scores(&[0, 0], &[1, 0], &[1, 1], 8, &[-0.5, -0.5]);
    b.logp[0] = 799.5;
    match clipped_surrogate(&b.batch(), &[1.0, -1.0], None) {
        Err(Error::Input { what }) => assert!(what.contains("overflows"), "{what}"),
        other => panic!("expected an input error, got {other:?}"),
    }
    // a zero advantage still contributes exactly 0, whatever ρ
    assert!(clipped_surrogate(&b.batch(), &[0.0, -1.0], None).unwrap().j.is_finite());
}

// ---------------------------------------------------------------------------------------------
// errors and edge cases

#[test]
fn zero_length_and_malformed_input_are_errors() {
    let mut b = Owned::with_scores(&[0, 0], &[1, 0], &[2, 3], 8, &[-0.1, -0.2]);
    b.len[1] = 0;
    b.logp.truncate(2);
    b.old_logp.truncate(2);
    match drpo(&b.batch(), &Hyper::default()) {
        Err(Error::Input { what }) => assert!(what.contains("response 1") && what.contains("length is 0"), "{what}"),
        other => panic!("expected an input error, got {other:?}"),
    }
    assert!(matches!(grpo_advantages(&[0], &[f64::NAN], 1e-6, StdKind::Sample), Err(Error::Input { .. })));
    let mut b = Owned::with_scores(&[0, 0], &[1, 0], &[2, 3], 8, &[-0.1, -0.2]);
    b.logp[3] = f64::NEG_INFINITY;
    match drpo(&b.batch(), &Hyper::default()) {
        Err(Error::Input { what }) => assert!(what.contains("response 1") && what.contains("logp[1]"), "{what}"),
        other => panic!("expected an input error, got {other:?}"),
    }
    assert!(matches!(drpo(&b.batch(), &Hyper { lambda: 0.0, ..Hyper::default() }), Err(Error::Input { .. })));

    let good = json!({"name": "c", "hyper": {"tau": 10.0, "lambda": 0.1}, "responses": [
        {"group": 0, "reward": 1, "length": 2, "max_len": 8, "logp": [-0.1, -0.2], "old_logp": [-0.1, -0.2]},
        {"group": 0, "reward": 0, "length": 1, "max_len": 8, "logp": [-0.3], "old_logp": [-0.3]}]});
    assert!(evaluate_cases(&json!({"cases": [good.clone()]})).is_ok());
    type Edit = dyn Fn(&mut Value);
    let broken: [(&str, &Edit, &str); 8] = [
        ("length 0", &|c| c["responses"][1]["length"] = json!(0), "response 1: field `length`"),
        ("logp too short", &|c| c["responses"][0]["logp"] = json!([-0.1]), "response 0: field `logp`"),
        ("old_logp not a number", &|c| c["responses"][1]["old_logp"] = json!(["x"]), "response 1: field `old_logp`"),
        ("reward 2", &|c| c["responses"][0]["reward"] = json!(2), "response 0: field `reward`"),
        ("no group", &|c| c["responses"][1].as_object_mut().unwrap().clear(), "response 1: field `group`"),
        ("max_len differs", &|c| c["responses"][1]["max_len"] = json!(9), "response 1: field `max_len`"),
        ("unknown hyper", &|c| c["hyper"]["lamda"] = json!(0.1), "hyper.lamda"),
        ("bad tau", &|c| c["hyper"]["tau"] = json!(-1.0), "tau"),
    ];
    for (what, edit, needle) in broken {
        let mut case = good.clone();
        edit(&mut case);
        match evaluate_cases(&json!({"cases": [good.clone(), case]})) {
            Err(Error::Data { record, what: msg, .. }) => {
                assert_eq!(record, 1, "{what}");
                assert!(msg.contains(needle), "{what}: message `{msg}` lacks `{needle}`");
            }
            other => panic!("{what}: expected Error::Data, got {other:?}"),
        }
    }
    assert!(matches!(evaluate_cases(&json!({"nope": 1})), Err(Error::Json { .. })));
}

#[test]
fn extreme_lambda_tau_and_scores_stay_finite() {
    let mut rng = rng("extreme_lambda_tau_and_scores_stay_finite");
    for (lambda, tau, scale) in [(1e-4, 1e-3, 1e4), (1e-300, 1e-300, 1e6), (1e300, 1e6, 1e-3), (1e-4, 100.0, 1e4)] {
        let mut b = random_batch(&mut rng, KlRegime::Above, 64);
        b.logp.iter_mut().for_each(|x| *x *= scale);
        b.old_logp.iter_mut().for_each(|x| *x *= scale);
        let hyper = Hyper { lambda, tau, ..Hyper::default() };
        for out in [drpo(&b.batch(), &hyper).unwrap(), disco(&b.batch(), &hyper).unwrap()] {
            assert!(out.dlogp.iter().chain(&out.weights).chain([&out.j, &out.loss]).all(|v| v.is_finite()));
            for g in out.groups.iter().filter(|g| g.valid) {
                let sum: f64 = g.members.iter().map(|&i| out.weights[i]).sum();
                assert!((sum - 1.0).abs() < 1e-12, "weights of a valid group sum to 1");
                // LME lies between the mean and the max of the negatives' scores
                let neg: Vec<f64> = g.members.iter().filter(|&&i| !b.correct[i]).map(|&i| out.scores[i]).collect();
                let (mean, max) =
                    (neg.iter().sum::<f64>() / neg.len() as f64, neg.iter().copied().fold(f64::MIN, f64::max));
                let lme = g.log_mean_exp_neg.unwrap();
                assert!(lme >= mean - 1e-9 * mean.abs() && lme <= max + 1e-9 * max.abs(), "{mean} ≤ {lme} ≤ {max}");
            }
        }
        if scale <= 1.0 {
            // the surrogate overflows only when a log-ratio exceeds ~709 (documented); here it is < 1
            let pg = policy_gradient(&b.batch(), Baseline::Grpo, &hyper, &mut HapoHistory::default()).unwrap();
            assert!(pg.dlogp.iter().chain([&pg.j, &pg.loss]).all(|v| v.is_finite()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// finite differences

#[derive(Clone, Copy, Debug)]
enum KlRegime {
    Negative,
    BelowDelta,
    Above,
}

/// Random groups of 2..=16 responses, shuffled (members not adjacent), mixed / all-correct /
/// all-wrong groups, lengths 1..=C, old log-probs offset to put K in the requested regime.
fn random_batch(rng: &mut StdRng, regime: KlRegime, max_len: usize) -> Owned {
    let num_groups = rng.random_range(2..=5);
    let mut rows: Vec<(usize, bool, usize)> = Vec::new();
    for g in 0..num_groups {
        let id = rng.random_range(0..1000) * 10 + g; // distinct, arbitrary ids
        let size = rng.random_range(2..=16);
        let kind = rng.random_range(0..5); // 0: all correct, 1: all wrong, else mixed
        for k in 0..size {
            let correct = match kind {
                0 => true,
                1 => false,
                _ => {
                    if k == 0 {
                        true
                    } else if k == 1 {
                        false
                    } else {
                        rng.random_bool(0.5)
                    }
                }
            };
            rows.push((id, correct, rng.random_range(1..=max_len)));
        }
    }
    rows.shuffle(rng);
    let t: usize = rows.iter().map(|r| r.2).sum();
    let logp: Vec<f64> = (0..t).map(|_| -rng.random_range(0.01..5.0)).collect();
    let mean_shift = match regime {
        KlRegime::Negative => -2e-3,
        KlRegime::BelowDelta => 5e-5,
        KlRegime::Above => 2e-3,
    };
    let noise: Vec<f64> = (0..t).map(|_| rng.random_range(-1e-3..1e-3)).collect();
    let noise_mean = noise.iter().sum::<f64>() / t as f64;
    let old_logp = logp.iter().zip(&noise).map(|(l, n)| l + mean_shift + n - noise_mean).collect();
    Owned {
        group: rows.iter().map(|r| r.0).collect(),
        correct: rows.iter().map(|r| r.1).collect(),
        finished: vec![true; rows.len()],
        len: rows.iter().map(|r| r.2).collect(),
        max_len,
        logp,
        old_logp,
    }
}

/// Fourth-order central differences (5-point stencil) of `loss` in every coordinate of logp,
/// h = 1e-5·max(1, |ℓ|), against `dlogp`. Returns (max|fd − an| / max|an|, worst element
/// |fd − an| / max(|an|, 1e-4)).
/// Error budget of fd: roundoff ≈ ε·(magnitude of the loss's partial sums, ~1)/h ≈ 1e-11…1e-10
/// absolute, hence the element floor 1e-4 (1e-6 of it is 1e-10). Why 5 points: at τ = 0.05 the
/// LSE's third derivative (~0.1/τ² per unit score) makes the 2-point truncation error h²·f‴/6
/// reach ~4e-9; the stencil's O(h⁴) term is ~1e-15.
fn gradcheck(b: &Owned, dlogp: &[f64], loss: &dyn Fn(&Owned) -> f64) -> (f64, f64) {
    let mut fd = vec![0.0; b.logp.len()];
    let mut p = b.clone();
    for (k, fd_k) in fd.iter_mut().enumerate() {
        let x = b.logp[k];
        let h = 1e-5 * x.abs().max(1.0);
        let mut at = |dx: f64| {
            p.logp[k] = x + dx;
            loss(&p)
        };
        *fd_k = (8.0 * (at(h) - at(-h)) - (at(2.0 * h) - at(-2.0 * h))) / (12.0 * h);
        p.logp[k] = x;
    }
    (max_rel(&fd, dlogp), worst_elementwise(&fd, dlogp, 1e-4))
}

#[test]
fn drpo_and_disco_gradients_match_finite_differences() {
    let mut rng = rng("drpo_and_disco_gradients_match_finite_differences");
    let mut worst: (f64, f64) = (0.0, 0.0);
    for (lambda, tau) in [(1e-4, 10.0), (0.1, 100.0), (0.1, 10.0), (1.0, 0.05), (f64::INFINITY, 1.0)] {
        for regime in [KlRegime::Negative, KlRegime::BelowDelta, KlRegime::Above] {
            let b = random_batch(&mut rng, regime, 40);
            let hyper = Hyper { lambda, tau, ..Hyper::default() };
            let out = drpo(&b.batch(), &hyper).unwrap();
            // FD must not straddle the kink of [K − δ]_+: a step 2h ≤ 1e-4 moves K by ≤ 1e-4/T
            let margin = (out.kl - hyper.delta).abs() * out.num_tokens as f64;
            assert!(margin > 1e-4, "K too close to δ for a clean central difference");
            match regime {
                KlRegime::Negative => assert!(out.kl < 0.0 && out.penalty == 0.0),
                KlRegime::BelowDelta => assert!(out.kl > 0.0 && out.kl < hyper.delta && out.penalty == 0.0),
                KlRegime::Above => assert!(out.kl > hyper.delta && out.penalty > 0.0),
            }
            for (name, f) in [("drpo", drpo as fn(&Batch, &Hyper) -> drpo::Result<DiscoOutput>), ("disco", disco)] {
                let out = f(&b.batch(), &hyper).unwrap();
                let (rel, elem) = gradcheck(&b, &out.dlogp, &|p: &Owned| f(&p.batch(), &hyper).unwrap().loss);
                println!(
                    "{name:5} λ={lambda:e} τ={tau} {regime:?} n={} T={}: max_rel {rel:.2e}, worst {elem:.2e}",
                    b.len.len(),
                    out.num_tokens
                );
                assert!(rel <= 1e-6 && elem <= 1e-6, "{name} λ={lambda} τ={tau} {regime:?}: {rel:e} {elem:e}");
                worst = (worst.0.max(rel), worst.1.max(elem));
            }
        }
    }
    println!("worst over all: max_rel {:.2e}, element {:.2e}", worst.0, worst.1);
}

#[test]
fn surrogate_gradients_match_finite_differences() {
    let mut rng = rng("surrogate_gradients_match_finite_differences");
    for baseline in [Baseline::GrpoLp, Baseline::RlooLp, Baseline::Alp, Baseline::ShorterBetter, Baseline::Kimi] {
        for clip in [None, Some(0.2)] {
            let hyper = Hyper { clip_eps: clip, ..Hyper::default() };
            let no_history = &mut HapoHistory::default();
            // a batch of only all-wrong groups has A = 0 everywhere: nothing to check
            let (mut b, adv) = loop {
                let b = random_batch(&mut rng, KlRegime::Above, 30);
                let (_, adv) = baseline_advantages(baseline, &b.outcomes(), &hyper, no_history).unwrap();
                if adv.iter().filter(|&&a| a != 0.0).count() >= 2 {
                    break (b, adv);
                }
            };
            // ratios up to e^{±0.4}, so some tokens clip; keep clear of the kinks at 1 ± ε
            for k in 0..b.logp.len() {
                let mut d: f64 = rng.random_range(-0.4..0.4);
                while [0.8f64, 1.2].iter().any(|&edge| (d.exp() - edge).abs() < 1e-3) {
                    d = rng.random_range(-0.4..0.4);
                }
                b.old_logp[k] = b.logp[k] - d;
            }
            let out = clipped_surrogate(&b.batch(), &adv, clip).unwrap();
            assert!(clip.is_none() || out.clipped_tokens > 0);
            let (rel, elem) =
                gradcheck(&b, &out.dlogp, &|p: &Owned| clipped_surrogate(&p.batch(), &adv, clip).unwrap().loss);
            println!(
                "{baseline:?} clip={clip:?}: clipped {} of {}, max_rel {rel:.2e}, worst {elem:.2e}",
                out.clipped_tokens,
                b.logp.len()
            );
            assert!(rel <= 1e-6 && elem <= 1e-6, "{baseline:?} clip={clip:?}: {rel:e} {elem:e}");
        }
    }
}
