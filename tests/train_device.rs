//! The issue-12 end-to-end check of the device training step: five `Trainer` steps of the f32 GPU
//! model (rollouts, old log-probs, objective, backward, clip, AdamW where the policy lives) on each
//! device of `gpu_common::devices` against the CPU trainer from the same fixture and seed, and two runs
//! on one device bitwise identical.

mod gpu_common;
use gpu_common::*;
use drpo::model::gpu::GpuModel;
use drpo::model::Model;
use drpo::policy::{HostState, Policy};
use drpo::rl::trainer::{read_metrics, ObjectiveKind, StepMetrics, TrainConfig, Trainer};
use drpo::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;

const STEPS: usize = 5;
/// Steps of the second run on a device, checked bit for bit against the first run's.
const REPEAT_STEPS: usize = 2;

/// The whole-model f32 gradient's bound against the exact one (tests/gpu_model_grad.rs `F32_GRAD`,
/// derived there: ≤ 1e-4 relative per tensor; measured ≤ 1.8e-6) and the f32 log-probs' (same
/// constant in tests/gpu_model.rs).
const F32_MODEL: f64 = 1e-4;
/// Two f32 implementations, each within F32_MODEL of the exact value, differ by ≤ 2·F32_MODEL: the
/// budget of one computation at the same parameters (log-probs, objective, gradient, its norm).
const ONE_STEP: f64 = 2.0 * F32_MODEL;

/// Toy-task settings at a small size: 4 questions × 4 rollouts of ≤ 12 tokens per step, two
/// optimizer steps per step (the second off-policy, so the KL term acts), one question per chunk.
fn config(objective: ObjectiveKind) -> TrainConfig {
    TrainConfig {
        steps: STEPS,
        questions_per_step: 4,
        group_size: 4,
        mini_batch_questions: 2,
        chunk_questions: 1,
        save_every: 0,
        ..drpo::study::toy_train_config(objective, 12)
    }
}

/// A run's metrics and final state, and its state and metrics after `REPEAT_STEPS`.
struct Run {
    metrics: Vec<StepMetrics>,
    state: HostState,
    early: HostState,
}

/// Runs `cfg` (or its first `stop` steps) from `model` in a fresh folder `name`.
fn train<P: Policy>(name: &str, cfg: &TrainConfig, model: P, model_dir: &Path, stop: usize) -> Run {
    let run_dir = scratch_dir(name);
    let tok = Tokenizer::from_dir(model_dir).unwrap();
    let env = CoinFlipEnv(toy_env(&tok, 16));
    let mut trainer = Trainer::new(cfg.clone(), model, &env, &tok, &run_dir, model_dir).unwrap();
    trainer.run_until(REPEAT_STEPS, &mut |_| {}).unwrap();
    let early = trainer.model.export_state(&trainer.opt).unwrap();
    trainer.run_until(stop, &mut |_| {}).unwrap();
    let state = trainer.model.export_state(&trainer.opt).unwrap();
    let metrics = read_metrics(&run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), stop, "{name}: one metrics line per step");
    drop(trainer);
    std::fs::remove_dir_all(&run_dir).unwrap();
    Run { metrics, state, early }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// |got − want| ≤ bound · scale, both finite (`None` = not finite in metrics.jsonl: both must be).
fn close(what: &str, got: Option<f64>, want: Option<f64>, scale: f64, bound: f64) {
    match (got, want) {
        (Some(g), Some(w)) => {
            let err = (g - w).abs() / scale;
            println!("  {what}: {g} vs {w}: {err:.2e} of {scale:.3} (bound {bound:.1e})");
            assert!(err <= bound, "{what}: device {g} vs cpu {w}: error {err:e} of the scale {scale} exceeds {bound:e}");
        }
        (g, w) => assert_eq!(g.is_some(), w.is_some(), "{what}: device {g:?} vs cpu {w:?}"),
    }
}

/// What a step's metrics say about its rollouts: equal only if the rollouts are (to the tokens the
/// grader reads and their lengths).
fn rollout_facts(m: &StepMetrics) -> String {
    format!(
        "accuracy {} length {} correct length {:?} truncated {} valid groups {} undecodable {}",
        m.accuracy, m.mean_length, m.mean_length_correct, m.truncation_rate, m.valid_group_share, m.undecodable_responses
    )
}

/// Five steps of the f32 device model against the CPU trainer, then a second device run of
/// REPEAT_STEPS checked bit for bit against the first.
///
/// The bound. Rollouts are sampled by the same Philox uniforms from logits that differ by ~1e-6, so
/// the tokens are the same unless a uniform lands within that of a cumulative-probability boundary
/// (≈ 1e-6 per token; 5 × 16 × 12 tokens here): the rollouts are asserted equal, step by step.
/// With equal rollouts, a step's numbers are functions of the parameters it starts from, computed
/// once by each device within ONE_STEP (relative; the objective's and the entropy's scale is the
/// per-token log-prob, whose magnitude is the entropy, since they are sums of log-probs of both
/// signs). The parameters at step k differ by the updates of the 2k optimizer steps before it: each
/// is AdamW's m̂/(√v̂ + ε) of a clipped gradient that differs by ≤ 2·ONE_STEP (the gradient and the
/// clip coefficient 1/‖g‖), and that ratio is homogeneous of degree 0 in the gradient, so its
/// relative change is that of the gradient to first order. Linear accumulation, to first order:
/// step k's numbers within (1 + 2·2k)·ONE_STEP, the final update θ − θ₀ within 2·S·ONE_STEP
/// (relative L2, S optimizer steps). Measured on the simulator: ≤ 8.7e-6 for the step metrics (the
/// mean gradient norm of step 2, bound 1.8e-3; every other ≤ 2.7e-6), 5.9e-6 for the update (bound
/// 4e-3); ŵ (a function of the lengths only) bit-identical.
#[test]
fn five_device_steps_match_the_cpu_trainer_and_repeat_bit_for_bit() {
    let model_dir = toy_model_dir("train-device-model", 3);
    let cpu = Model::<f32>::load(&model_dir).unwrap();
    let cfg = config(ObjectiveKind::Drpo);
    let want = train("train-device-cpu", &cfg, cpu.clone(), &model_dir, STEPS);
    let opt_steps = cfg.optimizer_steps_per_step() as usize * STEPS;
    for gpu in devices("five_device_steps_match_the_cpu_trainer") {
        let gpu = Arc::new(gpu);
        let on = |name: &str| format!("train-device-{}-{name}", if gpu.is_simulated() { "sim" } else { "gpu" });
        let got = train(&on("a"), &cfg, GpuModel::<f32>::for_training(gpu.clone(), &cpu).unwrap(), &model_dir, STEPS);
        for (k, (g, w)) in got.metrics.iter().zip(&want.metrics).enumerate() {
            println!("step {k}: {}", rollout_facts(w));
            assert_eq!(rollout_facts(g), rollout_facts(w), "step {k}: the device sampled other rollouts");
            assert_eq!((g.skipped_optimizer_steps, g.lr_mean, g.lr_max), (w.skipped_optimizer_steps, w.lr_mean, w.lr_max));
            assert!(w.valid_group_share > 0.0 && w.grad_norm_mean.is_some_and(|n| n > 0.0), "step {k}: no gradient, a vacuous check");
            let bound = (1 + 4 * k) as f64 * ONE_STEP;
            let logp_scale = w.entropy;
            close("entropy", Some(g.entropy), Some(w.entropy), logp_scale, bound);
            close("loss", g.loss, w.loss, logp_scale, bound);
            close("objective", g.objective, w.objective, logp_scale, bound);
            close("kl_last", g.kl_last, w.kl_last, logp_scale, bound);
            close("penalty", g.penalty, w.penalty, logp_scale, bound);
            for (what, gv, wv) in [
                ("grad_norm_mean", g.grad_norm_mean, w.grad_norm_mean),
                ("grad_norm_max", g.grad_norm_max, w.grad_norm_max),
                ("omega_max", g.omega_max, w.omega_max),
                ("omega_min", g.omega_min, w.omega_min),
                ("weight_ess", g.weight_ess, w.weight_ess),
            ] {
                close(what, gv, wv, wv.map_or(1.0, f64::abs), bound);
            }
        }
        let theta0 = &cpu.params;
        let update = |s: &HostState| -> Vec<f64> { s.params.iter().zip(theta0).map(|(&p, &t)| p as f64 - t as f64).collect() };
        let (gu, wu) = (update(&got.state), update(&want.state));
        let err = gu.iter().zip(&wu).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        let size = wu.iter().map(|b| b * b).sum::<f64>().sqrt();
        let bound = 2.0 * opt_steps as f64 * ONE_STEP;
        println!("update θ − θ₀: rel_l2 {:.2e} of ‖Δθ‖ = {size:.3e} (bound {bound:.1e})", err / size);
        assert!(size > 0.0 && err / size <= bound, "the device's parameter update differs from the CPU's by {:e} relative (bound {bound:e})", err / size);
        assert_eq!(got.state.optim.step, want.state.optim.step, "optimizer steps taken");

        // the same device again: the same bits (rollouts, objective, reductions, AdamW)
        let again = train(&on("b"), &cfg, GpuModel::<f32>::for_training(gpu.clone(), &cpu).unwrap(), &model_dir, REPEAT_STEPS);
        let strip = |m: &[StepMetrics]| -> Vec<StepMetrics> { m.iter().map(|m| StepMetrics { step_seconds: 0.0, ..m.clone() }).collect() };
        assert_eq!(strip(&again.metrics), strip(&got.metrics[..REPEAT_STEPS]), "a second device run's metrics differ");
        assert_eq!(bits(&again.state.params), bits(&got.early.params), "a second device run's parameters differ");
        assert_eq!(bits(&again.state.optim.m), bits(&got.early.optim.m), "a second device run's AdamW m differs");
        assert_eq!(bits(&again.state.optim.v), bits(&got.early.optim.v), "a second device run's AdamW v differs");
    }
}
