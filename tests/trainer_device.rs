//! The trainer's mini-batch gradient with the objective on the device (`Policy::chunk_objective` of
//! the GPU model: `gpu::objective` on the f32 log-probs, the token gradient backpropagated from the
//! device) against the CPU trainer's `minibatch_gradient` on the f64 model, on each device: DRPO,
//! DisCO and the GRPO surrogate with and without the clip, on the fixtures (f32 GPU model).
//!
//! Bounds (derived; NOTES.md numerics log). Both sides run the same formulas on log-probs ℓ that
//! differ by the f32 model's scoring error, e = max_t |ℓ_dev − ℓ_cpu| (measured here; bounded by
//! tests/gpu_model_grad.rs), plus f64 rounding inside (≤ 1e-12, kernels_objective.rs) and one f32
//! rounding of the stored token gradient (2^-24). Through the formulas (s = mean ℓ, |Δs| ≤ e;
//! K = mean(ℓ^old − ℓ), |ΔK| ≤ e):
//!   J (DRPO/DisCO)   Σ_P ŵ s − τ log mean_N exp(s/τ) is 1-Lipschitz in each of its two parts: ≤ 2e
//!   penalty          (β/2)[K − δ]_+²: ≤ β[K − δ]_+ e + β e²/2;   loss = −J + penalty: the sum
//!   push             positives ŵ/Q (lengths only: exact up to f64); negatives (1/Q) softmax_N(s/τ):
//!                    relative ≤ exp(2e/τ) − 1
//!   token gradient   scale·(∂loss/∂s_i / L_i − β[K − δ]_+/T): each part as above, the hinge ≤ β e / T
//!   surrogate        ρ = exp(ℓ − ℓ^old): every term of J, of the push and of the token gradient moves by
//!                    ≤ exp(e) − 1 relative; J ≤ that times Σ|terms|; K ≤ e
//! The whole-model gradient: g_dev − g_cpu = [B32(c_dev) − B64(c_dev)] + B64(c_dev − c_cpu), where B is
//! the backward of token coefficients c. The first is the f32 backward's own error, ≤ 1e-4 of the
//! tensor (F32_GRAD of gpu_model_grad.rs); the second is linear in the coefficients' difference,
//! computed here in f64 from the device's coefficients after they are checked against the bound
//! above. So per tensor rel_l2 ≤ 1e-4 + (1 + 1e-4)·‖B64(Δc)‖ / ‖g_cpu‖.

mod gpu_common;
use drpo::gpu::Gpu;
use drpo::model::gpu::GpuModel;
use drpo::model::Model;
use drpo::policy::{Policy, ScoreBatch};
use drpo::rl::chunk::{host_objective, ChunkLoss, ChunkObjective, ChunkResult};
use drpo::rl::objectives::{Hyper, Outcomes};
use drpo::rl::trainer::{minibatch_gradient, ObjectiveKind, Rollout, TrainConfig};
use gpu_common::*;
use rand::rngs::StdRng;
use rand::Rng;
use std::ops::Range;
use std::sync::Arc;

const G: usize = 3;
const Q_MB: usize = 4;
const CHUNK_Q: usize = 2;
const C: usize = 8;
const TEMP: f64 = 0.7;
/// correctness per question: question 1 is all-correct (skipped by DRPO) and shares chunk 0 with a mixed one
const CORRECT: [[bool; G]; Q_MB] = [[true, false, true], [true, true, true], [false, true, false], [false, false, true]];
/// f64 arithmetic inside the objective (kernels_objective.rs: ≤ 1e-11 with its conditioning)
const F64_ARITH: f64 = 1e-11;
const F32_ROUNDING: f64 = 5.960464477539063e-8; // 2^-24
/// the f32 backward's own error per tensor (tests/gpu_model_grad.rs, F32_GRAD)
const F32_BACKWARD: f64 = 1e-4;

struct Case {
    prompts: Vec<Vec<u32>>,
    rollouts: Vec<Rollout>,
    /// `[rows]` the baselines' advantages, uniform in ±[0.1, 1.5]
    adv: Vec<f64>,
}

/// Random prompts and responses; ℓ^old = ℓ_cpu + δ rounded to f32 (the device reads f32 old log-probs,
/// so both sides get the same values), δ of either sign (3:1 positive, so K > δ and the hinge is on)
/// with |δ| ≤ 0.1 or in [0.3, 0.5]: far from the clip's edges log(1 ± 0.2) ∈ {0.18, −0.22}, so no
/// token changes side by e. The first token of each response has δ = −0.4·sign(A): the clip holds
/// at least one token of every response.
fn case(model: &Model<f64>, rng: &mut StdRng) -> Case {
    let v = model.cfg.vocab_size as u32;
    let (mut prompts, mut resps) = (Vec::new(), Vec::new());
    for _ in 0..Q_MB {
        let prompt: Vec<u32> = (0..rng.random_range(2..=5)).map(|_| rng.random_range(0..v)).collect();
        for _ in 0..G {
            prompts.push(prompt.clone());
            resps.push((0..rng.random_range(1..=C)).map(|_| rng.random_range(0..v)).collect::<Vec<u32>>());
        }
    }
    let (p, r): (Vec<&[u32]>, Vec<&[u32]>) = prompts.iter().zip(&resps).map(|(p, r)| (p.as_slice(), r.as_slice())).unzip();
    let logp = model.score_responses(&ScoreBatch::responses(&model.cfg, &p, &r, TEMP).unwrap(), false).unwrap().logp;
    let adv: Vec<f64> = (0..resps.len()).map(|_| rng.random_range(0.1..1.5) * if rng.random_bool(0.5) { 1.0 } else { -1.0 }).collect();
    let rollouts = resps
        .into_iter()
        .zip(logp)
        .enumerate()
        .map(|(k, (tokens, lp))| {
            let old_logp = lp
                .iter()
                .enumerate()
                .map(|(t, &l)| {
                    if t == 0 {
                        return (l - 0.4 * adv[k].signum()) as f32 as f64;
                    }
                    let mag = if rng.random_bool(0.5) { rng.random_range(0.0..0.1) } else { rng.random_range(0.3..0.5) };
                    let sign = if rng.random_bool(0.75) { 1.0 } else { -1.0 };
                    (l + sign * mag) as f32 as f64
                })
                .collect();
            Rollout {
                problem: k / G,
                group: k / G,
                finished: tokens.len() < C,
                correct: CORRECT[k / G][k % G],
                steps: None,
                undecodable: 0,
                tokens,
                old_logp,
            }
        })
        .collect();
    Case { prompts, rollouts, adv }
}

fn config(objective: ObjectiveKind, hyper: Hyper) -> TrainConfig {
    TrainConfig {
        objective,
        hyper,
        questions_per_step: Q_MB,
        group_size: G,
        mini_batch_questions: Q_MB,
        chunk_questions: CHUNK_Q,
        temperature: TEMP,
        max_new_tokens: C,
        ..TrainConfig::default()
    }
}

/// |got − want| ≤ bound, printed.
fn within(what: &str, got: f64, want: f64, bound: f64) {
    let err = (got - want).abs();
    println!("{what}: got {got:.9e} want {want:.9e} |Δ| {err:.2e} bound {bound:.2e}");
    assert!(got.is_finite() && err <= bound, "{what}: |{got} − {want}| = {err:.3e} > {bound:.3e}");
}

/// One chunk on both sides, as minibatch_gradient runs it: the chunk's numbers and token gradients
/// (device and host), the measured e, and the host's record for the f64 backward of Δc.
struct ChunkPair {
    dev: ChunkResult,
    cpu: ChunkResult,
    dev_coef: Vec<Vec<f64>>,
    cpu_coef: Vec<Vec<f64>>,
    logp: Vec<Vec<f64>>,
    e: f64,
}

#[allow(clippy::too_many_arguments)]
fn chunk_pair(
    gpu: &Gpu,
    dev: &GpuModel<f32>,
    cpu: &Model<f64>,
    cfg: &TrainConfig,
    case: &Case,
    rows: Range<usize>,
    adv: Option<&[f64]>,
    scale: f64,
) -> drpo::Result<ChunkPair> {
    let chunk = &case.rollouts[rows.clone()];
    let prompts: Vec<&[u32]> = case.prompts[rows.clone()].iter().map(Vec::as_slice).collect();
    let resps: Vec<&[u32]> = chunk.iter().map(|r| r.tokens.as_slice()).collect();
    let batch = ScoreBatch::responses(&cpu.cfg, &prompts, &resps, TEMP)?;
    let (group, correct, finished, len): (Vec<usize>, Vec<bool>, Vec<bool>, Vec<usize>) = (
        chunk.iter().map(|r| r.group).collect(),
        chunk.iter().map(|r| r.correct).collect(),
        chunk.iter().map(|r| r.finished).collect(),
        chunk.iter().map(|r| r.tokens.len()).collect(),
    );
    let old: Vec<f64> = chunk.iter().flat_map(|r| r.old_logp.iter().copied()).collect();
    let hyper = cfg.effective_hyper();
    let loss = match adv {
        None => ChunkLoss::Discriminative(&hyper),
        Some(a) => ChunkLoss::Surrogate { advantages: &a[rows], clip_eps: hyper.clip_eps },
    };
    let outcomes = Outcomes { group: &group, correct: &correct, finished: &finished, len: &len, max_len: C };
    let obj = ChunkObjective { outcomes, old_logp: &old, loss, scale };
    let dev_scored = dev.score_responses(&batch, true)?;
    let (dev_result, dev_grad) = dev.chunk_objective(&dev_scored, &obj)?;
    let flat = gpu.dtoh(&dev_grad)?;
    let mut at = 0;
    let dev_coef = len
        .iter()
        .map(|&l| {
            at += l;
            flat[at - l..at].iter().map(|&x| x as f64).collect()
        })
        .collect();
    let logp = cpu.score_responses(&batch, false)?.logp;
    let (cpu_result, cpu_coef) = host_objective(&logp, &obj)?;
    let e = dev_scored.logp.concat().iter().zip(logp.concat()).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    Ok(ChunkPair { dev: dev_result, cpu: cpu_result, dev_coef, cpu_coef, logp, e })
}

/// Checks a chunk's numbers and token gradient against the bounds of the module doc.
fn check_chunk(what: &str, p: &ChunkPair, hyper: &Hyper, adv: Option<&[f64]>, old: &[f64], scale: f64) {
    let e = p.e;
    let (d, c) = (&p.dev, &p.cpu);
    let arith = |x: f64| F64_ARITH * (1.0 + x.abs());
    println!("{what}: e = max |Δℓ| = {e:.2e}");
    assert!(e > 0.0 && e < 1e-4, "{what}: the f32 model's log-prob error {e:.2e} (premise of the bounds)");
    within(&format!("{what} K"), d.kl, c.kl, e + arith(c.kl));
    let flat = p.logp.concat();
    let k = old.iter().zip(&flat).map(|(o, l)| o - l).sum::<f64>() / flat.len() as f64;
    let hinge = hyper.beta * (k - hyper.delta).max(0.0);
    match adv {
        None => {
            let rho = (2.0 * e / hyper.tau).exp_m1();
            within(&format!("{what} J"), d.objective, c.objective, 2.0 * e + arith(c.objective));
            let dpen = hinge * e + hyper.beta * e * e / 2.0;
            within(&format!("{what} penalty"), d.penalty, c.penalty, dpen + arith(c.penalty));
            within(&format!("{what} loss"), d.loss, c.loss, 2.0 * e + dpen + arith(c.loss));
            assert_eq!(d.positive_weights.len(), c.positive_weights.len(), "{what}: valid groups");
            for (dw, cw) in d.positive_weights.iter().zip(&c.positive_weights) {
                assert_eq!(dw.len(), cw.len(), "{what}: positives");
                for (x, y) in dw.iter().zip(cw) {
                    within(&format!("{what} ŵ"), *x, *y, arith(*y));
                }
            }
            for (i, (x, y)) in d.push.iter().zip(&c.push).enumerate() {
                within(&format!("{what} push[{i}]"), *x, *y, rho * y.abs() + arith(*y));
            }
            let t = flat.len() as f64;
            for (i, (dr, cr)) in p.dev_coef.iter().zip(&p.cpu_coef).enumerate() {
                let l = dr.len() as f64;
                let bound = scale * ((c.push[i] / l).abs() * rho + hyper.beta * e / t);
                for (x, y) in dr.iter().zip(cr) {
                    within(&format!("{what} dlogp[{i}]"), *x, *y, bound + F32_ROUNDING * 1.01 * x.abs() + F64_ARITH * y.abs());
                }
            }
        }
        Some(_) => {
            let rho = e.exp_m1();
            // Σ|terms| of J: (1/n) Σ_i (1/L_i) Σ_t |A_i| ρ ≤ the push's magnitudes plus the clipped terms,
            // bounded by (1 + ε) |A_i| / n per response
            let n = d.push.len() as f64;
            let adv = adv.unwrap();
            let terms: f64 = adv.iter().map(|a| a.abs() * 2.0 / n).sum();
            within(&format!("{what} J"), d.objective, c.objective, rho * terms + arith(c.objective));
            within(&format!("{what} loss"), d.loss, c.loss, rho * terms + arith(c.loss));
            assert_eq!((d.penalty, c.penalty), (0.0, 0.0), "{what}: no penalty");
            assert!(d.positive_weights.is_empty());
            for (i, (x, y)) in d.push.iter().zip(&c.push).enumerate() {
                within(&format!("{what} push[{i}]"), *x, *y, (rho + 2.0 * F32_ROUNDING + F64_ARITH) * y.abs());
            }
            let mut clipped = 0;
            for (i, (dr, cr)) in p.dev_coef.iter().zip(&p.cpu_coef).enumerate() {
                for (x, y) in dr.iter().zip(cr) {
                    within(&format!("{what} dlogp[{i}]"), *x, *y, (rho + F64_ARITH) * y.abs() + F32_ROUNDING * 1.01 * x.abs());
                    // a clipped token has no gradient on either side (no token is near the clip's edge)
                    assert_eq!(*x == 0.0, *y == 0.0, "{what}: dlogp[{i}] clipped on one side only");
                    clipped += (*y == 0.0) as usize;
                }
            }
            println!("{what}: {clipped} clipped tokens");
            assert_eq!(clipped > 0, hyper.clip_eps.is_some(), "{what}: clipped tokens exist exactly when the clip is on");
        }
    }
}

/// The gradient tensors (a projection's weight and bias as one, as gpu_model_grad.rs compares them).
fn tensors(model: &Model<f64>) -> Vec<(String, Range<usize>)> {
    let entries = &model.layout.entries;
    let mut out = Vec::new();
    let mut k = 0;
    while k < entries.len() {
        let e = &entries[k];
        let bias = entries.get(k + 1).filter(|b| b.name == e.name.replace(".weight", ".bias"));
        out.push(match bias {
            Some(b) => (format!("{} and bias", e.name), e.offset..b.range().end),
            None => (e.name.clone(), e.range()),
        });
        k += 1 + bias.is_some() as usize;
    }
    out
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[test]
fn minibatch_gradient_on_the_device_matches_the_cpu_trainer() -> drpo::Result<()> {
    let mut rng = rng("trainer_device");
    for gpu in devices("trainer_device") {
        let gpu = Arc::new(gpu);
        // CI: the untied GQA fixture (qwen2-odd) and the tied one; DRPO_SIM_FULL=1: every fixture
        for name in FIXTURES.into_iter().filter(|&n| full_size(&gpu) || n != "qwen2-tiny-mqa") {
            let dir = fixture(name);
            let cpu32 = Model::<f32>::load(&dir)?;
            let cpu = Model::<f64>::load(&dir)?;
            let dev = GpuModel::<f32>::for_training(gpu.clone(), &cpu32)?;
            let case = case(&cpu, &mut rng);
            let prompts: Vec<&[u32]> = case.prompts.iter().map(Vec::as_slice).collect();
            let adv = &case.adv;
            // DRPO with β = 1: the hinge's pull (β[K − δ]_+/T ≈ 0.1/T) and the discriminative part
            // (ŵ/(Q L)) are of one size; DisCO with the paper's β = 1000, where the hinge dominates
            let default = Hyper::default();
            for (label, objective, hyper, advantages) in [
                ("drpo", ObjectiveKind::Drpo, Hyper { beta: 1.0, ..default }, None),
                ("disco", ObjectiveKind::Disco, default, None),
                ("grpo clipped", ObjectiveKind::Grpo, default, Some(adv.as_slice())),
                ("grpo plain ratio", ObjectiveKind::Grpo, Hyper { clip_eps: None, ..default }, Some(adv.as_slice())),
            ] {
                let what = format!("{name} {label}");
                let cfg = config(objective, hyper);
                let mut want = cpu.new_grads()?;
                let cpu_chunks = minibatch_gradient(&cpu, &cfg, &prompts, &case.rollouts, advantages, &mut want)?;
                let mut dev_grads = dev.new_grads()?;
                let dev_chunks = minibatch_gradient(&dev, &cfg, &prompts, &case.rollouts, advantages, &mut dev_grads)?;
                let got = dev.grads_to_host(&dev_grads)?;

                // each chunk again, by hand: the same numbers as minibatch_gradient's (bit for bit,
                // both devices are deterministic), then against the bounds
                let rows = CHUNK_Q * G;
                let scale = 1.0 / (case.rollouts.len() / rows) as f64;
                let mut delta_b = vec![0.0; cpu.layout.total];
                for ci in 0..case.rollouts.len() / rows {
                    let r = ci * rows..(ci + 1) * rows;
                    let p = chunk_pair(&gpu, &dev, &cpu, &cfg, &case, r.clone(), advantages, scale)?;
                    assert_eq!(p.dev, dev_chunks[ci], "{what}: chunk {ci} of minibatch_gradient on the device");
                    assert_eq!(p.cpu, cpu_chunks[ci], "{what}: chunk {ci} of minibatch_gradient on the CPU");
                    let old: Vec<f64> = case.rollouts[r.clone()].iter().flat_map(|x| x.old_logp.iter().copied()).collect();
                    check_chunk(&format!("{what} chunk {ci}"), &p, &cfg.effective_hyper(), advantages.map(|a| &a[r.clone()]), &old, scale);
                    // B64(c_dev − c_cpu), added over the chunks
                    let resps: Vec<&[u32]> = case.rollouts[r.clone()].iter().map(|x| x.tokens.as_slice()).collect();
                    let batch = ScoreBatch::responses(&cpu.cfg, &prompts[r], &resps, TEMP)?;
                    let scored = cpu.score_responses(&batch, true)?;
                    let dc: Vec<Vec<f64>> =
                        p.dev_coef.iter().zip(&p.cpu_coef).map(|(d, c)| d.iter().zip(c).map(|(x, y)| x - y).collect()).collect();
                    cpu.backward_responses(&scored, &dc, &mut delta_b)?;
                }
                for (tensor, range) in tensors(&cpu) {
                    let (g, w, db) = (&got[range.clone()], &want[range.clone()], &delta_b[range]);
                    let ratio = norm(db) / norm(w);
                    let rms = norm(w) / (w.len() as f64).sqrt();
                    let worst_db = db.iter().fold(0.0f64, |m, x| m.max(x.abs())) / rms;
                    let bound = Bound {
                        rel_l2: F32_BACKWARD + (1.0 + F32_BACKWARD) * ratio,
                        worst: 5.0 * F32_BACKWARD + (1.0 + F32_BACKWARD) * worst_db,
                        floor: Floor::Rms,
                    };
                    assert!(norm(w) > 0.0, "{what} {tensor}: a zero reference gradient would make the test vacuous");
                    assert_close(&format!("{what} grad {tensor} (‖B64(Δc)‖/‖g‖ = {ratio:.1e})"), g, w, bound);
                }
            }
        }
    }
    Ok(())
}

/// A chunk objective with a bad scale, a log-prob row of the wrong length, old log-probs of the wrong
/// length or not finite is an input error on both devices; the device also refuses a batch scored
/// without a record (its token gradient is for a backward).
#[test]
fn chunk_objective_refuses_bad_input() -> drpo::Result<()> {
    let mut rng = rng("trainer_device_refusals");
    let dir = fixture("qwen2-odd");
    let cpu = Model::<f64>::load(&dir)?;
    let case = case(&cpu, &mut rng);
    let rows = 0..G;
    let chunk = &case.rollouts[rows.clone()];
    let prompts: Vec<&[u32]> = case.prompts[rows].iter().map(Vec::as_slice).collect();
    let resps: Vec<&[u32]> = chunk.iter().map(|r| r.tokens.as_slice()).collect();
    let batch = ScoreBatch::responses(&cpu.cfg, &prompts, &resps, TEMP)?;
    let (group, correct, finished) = (vec![0; G], vec![true, false, true], vec![true; G]);
    let len: Vec<usize> = chunk.iter().map(|r| r.tokens.len()).collect();
    let mut short = len.clone();
    short[1] += 1;
    let old: Vec<f64> = chunk.iter().flat_map(|r| r.old_logp.iter().copied()).collect();
    let mut nan_old = old.clone();
    nan_old[0] = f64::NAN;
    let hyper = Hyper::default();
    let outcomes = |len| Outcomes { group: &group, correct: &correct, finished: &finished, len, max_len: C };
    let good = ChunkObjective { outcomes: outcomes(&len), old_logp: &old, loss: ChunkLoss::Discriminative(&hyper), scale: 0.5 };
    let bad = [
        ("scale 0", ChunkObjective { scale: 0.0, ..good }, "gradient scale"),
        ("scale NaN", ChunkObjective { scale: f64::NAN, ..good }, "gradient scale"),
        ("a row's length", ChunkObjective { outcomes: outcomes(&short), ..good }, "log-probs but length"),
        ("old_logp length", ChunkObjective { old_logp: &old[1..], ..good }, "old_logp"),
        ("old_logp NaN", ChunkObjective { old_logp: &nan_old, ..good }, "not finite"),
    ];
    fn refuses<P: Policy>(p: &P, batch: &ScoreBatch, bad: &[(&str, ChunkObjective, &str)]) -> drpo::Result<()> {
        let scored = p.score_responses(batch, true)?;
        for (what, obj, needle) in bad {
            match p.chunk_objective(&scored, obj) {
                Ok(_) => panic!("{} {what}: accepted", p.device()),
                Err(e) => assert!(e.to_string().contains(needle), "{} {what}: {e}", p.device()),
            }
        }
        Ok(())
    }
    refuses(&cpu, &batch, &bad)?;
    assert!(cpu.chunk_objective(&cpu.score_responses(&batch, true)?, &good).is_ok(), "cpu: the good objective");
    for gpu in devices("trainer_device_refusals") {
        let dev = GpuModel::<f32>::for_training(Arc::new(gpu), &Model::<f32>::load(&dir)?)?;
        refuses(&dev, &batch, &bad)?;
        assert!(dev.chunk_objective(&dev.score_responses(&batch, true)?, &good).is_ok(), "device: the good objective");
        let e = dev.chunk_objective(&dev.score_responses(&batch, false)?, &good).expect_err("an unrecorded batch is refused");
        assert!(e.to_string().contains("record"), "{e}");
    }
    Ok(())
}
