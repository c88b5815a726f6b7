//! The end-to-end toy study (`drpo demo`): SFT a tiny model into an accurate but verbose base, RL it
//! with DRPO (a few λ), DisCO (λ = ∞) and GRPO with a length penalty (a few α), evaluate, and write a
//! report with tables and plots.

use crate::engine::{Device, Engine};
use crate::error::{read_json, write_atomic, Error, Result};
use crate::eval::{eval_env, EvalOptions, EvalReport};
use crate::model::Model;
use crate::plot::{line_chart, scatter, Series};
use crate::rl::env::ToyEnv;
use crate::rl::objectives::Hyper;
use crate::rl::trainer::{read_metrics, ObjectiveKind, StepMetrics, TrainConfig, Trainer};
use crate::sampling::SamplingParams;
use crate::sft::{run_sft, SftConfig};
use crate::task::{generate_split, trace_tokens, Split};
use crate::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The RL settings of the toy study: SPEC §5.6's structure (G = 8, chunks of 4 questions, λ, τ, β, δ,
/// KL budget) at the toy's scale (a 100k-parameter model learns at a larger rate; C = the toy's budget).
pub fn toy_train_config(objective: ObjectiveKind, max_new_tokens: usize) -> TrainConfig {
    TrainConfig {
        objective,
        hyper: Hyper::default(),
        steps: 60,
        questions_per_step: 16,
        group_size: 8,
        // two optimizer steps per RL step: the second is off-policy, so the KL penalty acts
        mini_batch_questions: 8,
        chunk_questions: 4,
        inner_epochs: 1,
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens,
        max_prompt_tokens: 1024,
        lr: 3e-4,
        warmup_steps: 0,
        lr_decay: crate::rl::trainer::LrDecayKind::Constant,
        min_lr: 0.0,
        weight_decay: 0.0,
        grad_clip: 1.0,
        seed: 0,
        save_every: 0,
        source: crate::rl::trainer::RunSource::default(),
    }
}

/// A short stable hash of a configuration (FNV-1a of its JSON, 32 bits in hex): folder names that
/// differ whenever a setting does, so a changed configuration never reuses or clobbers a folder.
pub fn config_hash<T: Serialize>(cfg: &T) -> String {
    let text = serde_json::to_string(cfg).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in text.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:08x}", (h ^ (h >> 32)) as u32)
}

/// One method of the study: an objective with its knob.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Method {
    pub name: String,
    pub objective: ObjectiveKind,
    pub lambda: f64,
    pub alpha: f64,
}

/// Everything `drpo demo` runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StudyConfig {
    pub sft: SftConfig,
    pub methods: Vec<Method>,
    pub seeds: Vec<u64>,
    pub rl_steps: usize,
    pub eval_questions: usize,
    pub eval_samples: usize,
    pub eval_temperature: f64,
}

fn method(objective: ObjectiveKind, lambda: f64, alpha: f64) -> Method {
    let name = match objective {
        ObjectiveKind::Drpo => format!("DRPO λ={lambda}"),
        ObjectiveKind::Disco => "DisCO (λ=∞)".into(),
        ObjectiveKind::GrpoLp => format!("GRPO-LP α={alpha}"),
        other => format!("{other:?}"),
    };
    Method { name, objective, lambda, alpha }
}

impl StudyConfig {
    /// The default study (≈ 15 minutes on 2 cores) or the `--quick` one (≈ 2-3 minutes).
    pub fn new(quick: bool) -> Self {
        let d = ObjectiveKind::Drpo;
        if quick {
            StudyConfig {
                sft: SftConfig { max_level: 3, steps: 700, n_train: 2000, ..SftConfig::default() },
                methods: vec![method(d, 0.1, 0.0), method(ObjectiveKind::Disco, 0.0, 0.0), method(ObjectiveKind::GrpoLp, 0.0, 0.5)],
                seeds: vec![1],
                rl_steps: 12,
                eval_questions: 60,
                eval_samples: 2,
                eval_temperature: 0.6,
            }
        } else {
            StudyConfig {
                sft: SftConfig { max_level: 6, steps: 1300, ..SftConfig::default() },
                methods: vec![
                    method(d, 0.1, 0.0),
                    method(d, 0.5, 0.0),
                    method(ObjectiveKind::Disco, 0.0, 0.0),
                    method(ObjectiveKind::GrpoLp, 0.0, 0.2),
                    method(ObjectiveKind::GrpoLp, 0.0, 0.5),
                ],
                seeds: vec![1, 2, 3],
                rl_steps: 60,
                eval_questions: 180,
                eval_samples: 4,
                eval_temperature: 0.6,
            }
        }
    }
}

/// One trained (or base) model's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub method: String,
    pub seed: Option<u64>,
    pub eval: EvalReport,
    pub metrics: Vec<StepMetrics>,
}

fn eval_model(model: &Model<f32>, tok: &Tokenizer, study: &StudyConfig, budget: usize, engine: &Engine) -> Result<EvalReport> {
    let env = ToyEnv::new(generate_split(&study.sft.task(), Split::Eval, study.eval_questions)?, tok)?;
    let opts = EvalOptions {
        n_samples: study.eval_samples,
        max_new_tokens: budget,
        sampling: SamplingParams { temperature: study.eval_temperature, top_k: 0, top_p: 0.95 },
        seed: 12345,
        batch_size: 256,
    };
    Ok(eval_env(engine, model, &env, tok, &opts, &mut |_, _, _| Ok(()))?.0)
}

/// The RL configuration of one run of the study.
pub fn run_config(study: &StudyConfig, m: &Method, seed: u64, budget: usize, base_dir: &Path) -> TrainConfig {
    let mut cfg = toy_train_config(m.objective, budget);
    cfg.steps = study.rl_steps;
    cfg.seed = seed;
    if m.objective == ObjectiveKind::Drpo {
        cfg.hyper.lambda = m.lambda;
    }
    cfg.hyper.grpo_alpha = m.alpha;
    let base = std::fs::canonicalize(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    cfg.source.model = Some(base.display().to_string());
    cfg
}

/// Runs the whole study into `out` and writes `out/report.md`; `log` gets one line per phase.
/// Folders are named by a hash of their settings (`base-<hash>`, `runs/<method>-seed<s>-<hash>`):
/// the SFT base and finished RL runs found there are reused, and a study with other settings in the
/// same `out` never overwrites them.
pub fn run_study(study: &StudyConfig, out: &Path, device: Device, log: &mut dyn FnMut(String)) -> Result<Vec<RunResult>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let base_dir = out.join(format!("base-{}", config_hash(&study.sft)));
    let cached = base_dir.join("sft_config.json").exists()
        && base_dir.join("model.safetensors").exists()
        && serde_json::from_value::<SftConfig>(read_json(base_dir.join("sft_config.json"))?).ok().as_ref() == Some(&study.sft);
    let t0 = std::time::Instant::now();
    let base = if cached {
        log(format!("base model: reusing {}", base_dir.display()));
        Model::<f32>::load(&base_dir)?
    } else {
        log(format!("base model: SFT for {} steps into {}", study.sft.steps, base_dir.display()));
        run_sft(&study.sft, &base_dir, &mut |_| {})?
    };
    let tok = Tokenizer::from_dir(&base_dir)?;
    let budget = trace_tokens(study.sft.max_level, 3 * study.sft.max_level + 8);
    let engine = Engine::new(device, &base, &mut |n| log(n))?;
    let mut results = vec![RunResult { method: "base (SFT)".into(), seed: None, eval: eval_model(&base, &tok, study, budget, &engine)?, metrics: vec![] }];
    log(format!("base model: pass@1 {:.3}, length {:.1} ({:.0} s)", results[0].eval.overall.accuracy, results[0].eval.overall.mean_length, t0.elapsed().as_secs_f64()));
    drop(engine);
    let train_env = ToyEnv::new(generate_split(&study.sft.task(), Split::Train, study.sft.n_train)?, &tok)?;
    for m in &study.methods {
        for &seed in &study.seeds {
            let cfg = run_config(study, m, seed, budget, &base_dir);
            let slug: String = m.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
            let run_dir = out.join("runs").join(format!("{slug}-seed{seed}-{}", config_hash(&cfg)));
            let t = std::time::Instant::now();
            let mut trainer = Trainer::new(cfg, base.clone(), &train_env, &tok, &run_dir, &base_dir, Engine::new(device, &base, &mut |_| {})?)?;
            for line in &trainer.notices {
                log(format!("note: {line}"));
            }
            trainer.run(&mut |_| {})?;
            // the trainer's engine holds the trained weights (a GPU engine generates from its own copy,
            // synced after every step); an engine built from the base would evaluate the base again
            let eval = eval_model(&trainer.model, &tok, study, budget, &trainer.engine)?;
            log(format!(
                "{} seed {seed}: pass@1 {:.3}, length {:.1} ({:.0} s)",
                m.name,
                eval.overall.accuracy,
                eval.overall.mean_length,
                t.elapsed().as_secs_f64()
            ));
            let metrics = read_metrics(&run_dir.join("metrics.jsonl"))?;
            results.push(RunResult { method: m.name.clone(), seed: Some(seed), eval, metrics });
        }
    }
    write_report(study, out, &results)?;
    Ok(results)
}

/// Mean and sample standard deviation (None for fewer than two values).
fn mean_sd(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let sd = (xs.len() > 1).then(|| (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt());
    (m, sd)
}

/// `value ± sd` with `decimals`, or `value ± –` when there is a single seed.
fn with_sd(value: f64, sd: Option<f64>, decimals: usize) -> String {
    match sd {
        Some(sd) => format!("{value:.decimals$} ± {sd:.decimals$}"),
        None => format!("{value:.decimals$} ± –"),
    }
}

/// report.md, results.json and the two SVG figures.
pub fn write_report(study: &StudyConfig, out: &Path, results: &[RunResult]) -> Result<()> {
    crate::output::ensure_finite("the study's results", results)?;
    let base = &results[0].eval;
    let (acc0, len0) = (base.overall.accuracy, base.overall.mean_length);
    let mut md = String::from("# DRPO toy study\n\n");
    let rl = toy_train_config(ObjectiveKind::Drpo, 0);
    md += &format!(
        "Base model: SFT of a {}-layer, {}-wide Qwen2 model on arithmetic chains of levels {}..={} with padded traces. \
         RL: {} steps of {} questions × {} rollouts at T = {} ({} optimizer steps per RL step); evaluation: {} held-out questions × {} samples at T = {}. \
         Mean ± sample sd over seeds {:?} (– with one seed). \
         The Δ columns are relative changes vs the base model, in percent of the base's value.\n\n",
        study.sft.num_layers, study.sft.hidden_size, study.sft.min_level, study.sft.max_level, study.rl_steps, rl.questions_per_step,
        rl.group_size, rl.temperature, rl.optimizer_steps_per_step(), study.eval_questions, study.eval_samples, study.eval_temperature, study.seeds
    );
    md += "| method | pass@1 | Δ pass@1 vs base | length (tokens) | Δ length vs base | length of correct | redundant steps | necessary steps |\n|---|---|---|---|---|---|---|---|\n";
    md += &format!(
        "| base (SFT) | {acc0:.3} | – | {len0:.1} | – | {} | {} | {} |\n",
        base.overall.mean_length_correct.map_or("–".into(), |v| format!("{v:.1}")),
        base.overall.mean_redundant_steps.map_or("–".into(), |v| format!("{v:.2}")),
        base.overall.mean_necessary_steps.map_or("–".into(), |v| format!("{v:.2}"))
    );
    let mut names: Vec<&str> = results[1..].iter().map(|r| r.method.as_str()).collect();
    names.dedup();
    let mut tradeoff = Vec::new();
    let mut acc_curves = Vec::new();
    let mut len_curves = Vec::new();
    for name in &names {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.method == *name).collect();
        let pick = |f: &dyn Fn(&RunResult) -> f64| mean_sd(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
        let (a, asd) = pick(&|r| r.eval.overall.accuracy);
        let (l, lsd) = pick(&|r| r.eval.overall.mean_length);
        let (lc, _) = pick(&|r| r.eval.overall.mean_length_correct.unwrap_or(f64::NAN));
        let (red, _) = pick(&|r| r.eval.overall.mean_redundant_steps.unwrap_or(f64::NAN));
        let (nec, _) = pick(&|r| r.eval.overall.mean_necessary_steps.unwrap_or(f64::NAN));
        md += &format!(
            "| {name} | {} | {:+.1}% | {} | {:+.1}% | {lc:.1} | {red:.2} | {nec:.2} |\n",
            with_sd(a, asd, 3),
            100.0 * (a - acc0) / acc0.max(1e-9),
            with_sd(l, lsd, 1),
            100.0 * (l - len0) / len0.max(1e-9)
        );
        tradeoff.push(Series { name: name.to_string(), points: runs.iter().map(|r| (r.eval.overall.mean_length, r.eval.overall.accuracy)).collect() });
        let steps = runs.iter().map(|r| r.metrics.len()).min().unwrap_or(0);
        let curve = |f: &dyn Fn(&StepMetrics) -> f64| -> Vec<(f64, f64)> {
            (0..steps).map(|s| (s as f64, runs.iter().map(|r| f(&r.metrics[s])).sum::<f64>() / runs.len() as f64)).collect()
        };
        acc_curves.push(Series { name: name.to_string(), points: curve(&|m| m.accuracy) });
        len_curves.push(Series { name: name.to_string(), points: curve(&|m| m.mean_length) });
    }
    tradeoff.push(Series { name: "base (SFT)".into(), points: vec![(len0, acc0)] });
    md += "\n## Per difficulty level (mean over seeds)\n\n| method | level | pass@1 | length | redundant steps |\n|---|---|---|---|---|\n";
    for name in std::iter::once("base (SFT)").chain(names.iter().copied()) {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.method == name).collect();
        for (li, lvl) in runs[0].eval.per_level.iter().enumerate() {
            let avg = |f: &dyn Fn(&crate::eval::EvalStats) -> f64| runs.iter().map(|r| f(&r.eval.per_level[li])).sum::<f64>() / runs.len() as f64;
            md += &format!(
                "| {name} | {} | {:.3} | {:.1} | {:.2} |\n",
                lvl.level.as_deref().unwrap_or("?"),
                avg(&|s| s.accuracy),
                avg(&|s| s.mean_length),
                avg(&|s| s.mean_redundant_steps.unwrap_or(f64::NAN))
            );
        }
    }
    md += "\n## Figures\n\n![training curves: accuracy](train_accuracy.svg)\n![training curves: length](train_length.svg)\n![accuracy vs length](tradeoff.svg)\n";
    md += "\nTraining curves are the rollouts' accuracy and mean length per RL step (mean over seeds), like the paper's Figure 2; \
           the trade-off plot shows each run's held-out pass@1 against its mean response length, like Figure 3.\n";
    write_atomic(out.join("train_accuracy.svg"), line_chart("rollout accuracy per RL step", "step", "accuracy", &acc_curves).as_bytes())?;
    write_atomic(out.join("train_length.svg"), line_chart("rollout length per RL step", "step", "mean length (tokens)", &len_curves).as_bytes())?;
    write_atomic(out.join("tradeoff.svg"), scatter("held-out pass@1 vs length", "mean response length (tokens)", "pass@1", &tradeoff).as_bytes())?;
    let json = serde_json::to_string_pretty(&serde_json::json!({ "study": study, "results": results })).map_err(|e| Error::json(out, e))?;
    write_atomic(out.join("results.json"), json.as_bytes())?;
    write_atomic(out.join("report.md"), md.as_bytes())
}
