//! The toy study (`drpo demo`): does DRPO reach a given response length with less accuracy loss than
//! the best length-penalty baseline? (The paper's question, SPEC §9.1.)
//!
//! 1. SFT a tiny model into a base whose reasoning is partly useful, partly padding
//!    ([`crate::sft`], [`crate::task`]).
//! 2. Measure, before any RL, whether length buys accuracy for that base: its pass@1 per response
//!    shape and level ([`Fitness`]). If it does not, the study stops there and says so.
//! 3. Pareto sweeps (SPEC §9.1): each [`Family`] over its knob ([`Setting`]), several seeds each:
//!    DRPO λ (DisCO = λ = ∞), GRPO-LP α, RLOO-LP α, ALP β, HAPO w; the knob at 0 (∞) is the family's
//!    unpenalised reference for AES (SPEC §9.2).
//! 4. A report ([`report`]): the answer first (decided by intervals, [`verdict`]), the base's
//!    trade-off, the sweep table with AES, pass@1 vs length with error bars, the mechanism (correct
//!    rollouts pushed down per RL step), per-level tables and training curves.
//!
//! Every folder is named by a hash of its settings (`base-<hash>`, `runs/<run>-seed<s>-<hash>`):
//! finished runs are reused and an interrupted run resumes from its last checkpoint, so an
//! interrupted `demo` continues where it stopped, and a study with other settings in the same
//! folder never overwrites them.

mod report;
pub mod shapes;
pub mod stats;
pub mod verdict;

pub use report::write_report;
pub use shapes::{Response, ShapeClass, ShapeReport, ShapeStats};

use crate::engine::{Device, Engine, Trainee};
use crate::error::{read_json, Error, Result};
use crate::eval::{eval_env, EvalOptions, EvalReport};
use crate::model::Model;
use crate::policy::{Generator, Policy};
use crate::rl::env::ToyEnv;
use crate::rl::objectives::Hyper;
use crate::rl::trainer::{read_metrics, ObjectiveKind, StepMetrics, TrainConfig, Trainer};
use crate::sampling::SamplingParams;
use crate::sft::{run_sft, SftConfig, SftPhase};
use crate::task::{generate_split, trace_tokens, Split};
use crate::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use stats::Difference;
use std::path::Path;
use std::time::Instant;

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

/// A family of methods: one objective and the knob its Pareto sweep turns (SPEC §7, §9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// λ of the length weights; λ = ∞ is DisCO
    Drpo,
    /// GRPO with the reward c·(1 − α L/C)
    GrpoLp,
    /// RLOO with Arora & Zanette's length penalty α
    RlooLp,
    /// GRPO with the adaptive length penalty β
    Alp,
    /// GRPO with HAPO's history-aware length reward, weight w
    Hapo,
}

impl Family {
    pub const ALL: [Family; 5] = [Family::Drpo, Family::GrpoLp, Family::RlooLp, Family::Alp, Family::Hapo];

    pub fn name(self) -> &'static str {
        match self {
            Family::Drpo => "DRPO",
            Family::GrpoLp => "GRPO-LP",
            Family::RlooLp => "RLOO-LP",
            Family::Alp => "ALP",
            Family::Hapo => "HAPO",
        }
    }

    pub fn knob_name(self) -> &'static str {
        match self {
            Family::Drpo => "λ",
            Family::GrpoLp | Family::RlooLp => "α",
            Family::Alp => "β",
            Family::Hapo => "w",
        }
    }

    /// The knob's value without length penalty: the AES reference (SPEC §9.2).
    pub fn reference_knob(self) -> f64 {
        match self {
            Family::Drpo => f64::INFINITY,
            _ => 0.0,
        }
    }

    /// The objective and hyper-parameters a knob value trains with. At the reference value the
    /// method is its unpenalised self: DisCO, plain RLOO, or plain GRPO, which GRPO-LP (α = 0), ALP
    /// (β = 0) and HAPO (w = 0) all are: the three share one configuration, hence one set of runs.
    pub fn objective(self, knob: f64) -> (ObjectiveKind, Hyper) {
        let mut h = Hyper::default();
        let reference = knob == self.reference_knob();
        let objective = match self {
            Family::Drpo if reference => ObjectiveKind::Disco,
            Family::Drpo => {
                h.lambda = knob;
                ObjectiveKind::Drpo
            }
            Family::RlooLp => {
                h.rloo_alpha = knob;
                ObjectiveKind::RlooLp
            }
            Family::GrpoLp | Family::Alp | Family::Hapo if reference => ObjectiveKind::Grpo,
            Family::GrpoLp => {
                h.grpo_alpha = knob;
                ObjectiveKind::GrpoLp
            }
            Family::Alp => {
                h.alp_beta = knob;
                ObjectiveKind::Alp
            }
            Family::Hapo => {
                h.hapo_w = knob;
                ObjectiveKind::Hapo
            }
        };
        (objective, h)
    }
}

/// A knob value as the report prints it: `∞`, `1e-6` below 1e-3, else the shortest decimal.
pub fn knob_text(x: f64) -> String {
    if x.is_infinite() {
        "∞".into()
    } else if x != 0.0 && x.abs() < 1e-3 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// One point of a family's sweep.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub family: Family,
    /// λ, α, β or w; `"inf"` in JSON for DisCO
    #[serde(with = "crate::rl::objectives::lambda_json")]
    pub knob: f64,
}

impl Setting {
    pub fn new(family: Family, knob: f64) -> Setting {
        Setting { family, knob }
    }

    /// The family's unpenalised reference point.
    pub fn is_reference(&self) -> bool {
        self.knob == self.family.reference_knob()
    }

    /// `DRPO λ=0.1`, `DisCO (λ=∞)`, `GRPO (α=0)`, `RLOO (α=0)`, `ALP β=1e-6`, …
    pub fn label(&self) -> String {
        let (f, k, v) = (self.family, self.family.knob_name(), knob_text(self.knob));
        match (f, self.is_reference()) {
            (Family::Drpo, true) => format!("DisCO ({k}={v})"),
            (Family::RlooLp, true) => format!("RLOO ({k}={v})"),
            (_, true) => format!("GRPO ({k}={v})"),
            _ => format!("{} {k}={v}", f.name()),
        }
    }

    /// The name of the runs this setting trains; settings with one configuration share it
    /// (`grpo` for GRPO-LP α = 0, ALP β = 0 and HAPO w = 0).
    pub fn run_name(&self) -> String {
        let (objective, _) = self.family.objective(self.knob);
        let stem = serde_json::to_value(objective).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        match objective {
            ObjectiveKind::Disco | ObjectiveKind::Grpo => stem,
            _ => format!("{stem}-{}", knob_text(self.knob)),
        }
    }
}

/// Which study `drpo demo` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// a smoke test of every stage (≈ 2 minutes on 2 cores; tests/demo.rs runs it)
    Quick,
    /// the reduced sweep that fits ≈ 15 minutes on 2 cores
    Default,
    /// the complete sweep of SPEC §9.1
    Full,
}

/// Everything `drpo demo` runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StudyConfig {
    pub sft: SftConfig,
    pub settings: Vec<Setting>,
    pub seeds: Vec<u64>,
    pub rl_steps: usize,
    /// training questions of the RL runs (the first of the SFT's training split): 320 = 20 steps
    /// per epoch, 3 epochs in 60 steps, as the paper's ≈ 3.2; HAPO's history needs problems that recur
    pub rl_train_questions: usize,
    /// held-out questions × samples per question, for the base and every RL run
    pub eval_questions: usize,
    pub eval_samples: usize,
    pub eval_temperature: f64,
    /// the base model's trade-off measurement, larger: some shapes are rare at T = 0.6
    pub base_questions: usize,
    pub base_samples: usize,
}

impl StudyConfig {
    pub fn preset(preset: Preset) -> StudyConfig {
        use Family::*;
        let inf = f64::INFINITY;
        let settings = |list: &[(Family, &[f64])]| -> Vec<Setting> {
            list.iter().flat_map(|&(f, knobs)| knobs.iter().map(move |&k| Setting::new(f, k))).collect()
        };
        // every method at its reference and its strongest setting of the full sweep, DRPO at two λ
        let default = StudyConfig {
            sft: SftConfig { max_level: 6, ..SftConfig::default() },
            settings: settings(&[(Drpo, &[0.1, 0.5, inf]), (GrpoLp, &[0.0, 1.0]), (RlooLp, &[0.0, 0.4]), (Alp, &[0.0, 1e-5]), (Hapo, &[0.0, 1.0])]),
            seeds: vec![1, 2, 3],
            rl_steps: 60,
            rl_train_questions: 320,
            eval_questions: 300,
            eval_samples: 4,
            eval_temperature: 0.6,
            base_questions: 1000,
            base_samples: 8,
        };
        match preset {
            Preset::Quick => StudyConfig {
                sft: SftConfig { max_level: 3, steps: 500, full_only_steps: 1500, n_train: 2000, ..SftConfig::default() },
                settings: settings(&[(Drpo, &[0.1, inf]), (GrpoLp, &[0.5, 0.0])]),
                seeds: vec![1],
                rl_steps: 12,
                rl_train_questions: 64,
                eval_questions: 60,
                eval_samples: 2,
                base_questions: 200,
                base_samples: 4,
                ..default
            },
            Preset::Default => default,
            Preset::Full => StudyConfig {
                settings: settings(&[
                    (Drpo, &[0.1, 0.2, 0.5, inf]),
                    (GrpoLp, &[0.0, 0.2, 0.5, 1.0]),
                    (RlooLp, &[0.0, 0.1, 0.2, 0.4]),
                    (Alp, &[0.0, 1e-7, 1e-6, 1e-5]),
                    (Hapo, &[0.0, 0.01, 0.1, 1.0]),
                ]),
                ..default
            },
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.sft.validate()?;
        let bad = |w: String| Err(Error::input(format!("study: {w}")));
        if self.settings.is_empty() || self.seeds.is_empty() {
            return bad("needs at least one setting and one seed".into());
        }
        if self.rl_train_questions == 0 || self.eval_questions == 0 || self.eval_samples == 0 || self.base_questions == 0 || self.base_samples == 0 {
            return bad("evaluation sizes must be positive".into());
        }
        for st in &self.settings {
            st.family.objective(st.knob).1.validate()?;
        }
        Ok(())
    }

    /// The generation budget: C of the length rewards, above the longest trace of the SFT mixture.
    pub fn budget(&self) -> usize {
        trace_tokens(self.sft.max_level, 3 * self.sft.max_level + 8)
    }

    /// The distinct runs, in setting order: (a setting that trains them, seed). Settings that
    /// share a configuration (the GRPO references) share their runs.
    pub fn runs(&self) -> Vec<(Setting, u64)> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for st in &self.settings {
            for &seed in &self.seeds {
                if seen.insert((st.run_name(), seed)) {
                    out.push((*st, seed));
                }
            }
        }
        out
    }
}

/// The RL configuration of one run of the study.
pub fn run_config(study: &StudyConfig, setting: &Setting, seed: u64, base_dir: &Path) -> TrainConfig {
    let (objective, hyper) = setting.family.objective(setting.knob);
    let mut cfg = toy_train_config(objective, study.budget());
    cfg.hyper = hyper;
    cfg.steps = study.rl_steps;
    cfg.seed = seed;
    // an interrupted demo loses at most 20 steps of the run it was in
    cfg.save_every = 20;
    let base = std::fs::canonicalize(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    cfg.source.model = Some(base.display().to_string());
    cfg
}

/// One model's held-out evaluation: pass@1 and lengths, and the shapes of its responses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evaluation {
    pub eval: EvalReport,
    pub shapes: ShapeReport,
}

/// One RL run's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    /// [`Setting::run_name`]
    pub run: String,
    pub seed: u64,
    pub evaluation: Evaluation,
    pub metrics: Vec<StepMetrics>,
    /// wall time of the run's training and evaluation in this `demo` (a run found finished only
    /// costs its evaluation)
    pub seconds: f64,
    /// the step this `demo` found the run at (0: trained here from the start; the run's steps:
    /// found finished, only evaluated)
    #[serde(default)]
    pub found_at_step: usize,
}

/// Is the task fit for the question? Measured on the base model before any RL.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fitness {
    /// pass@1 of full-granularity responses (padded or not) minus that of the shorter shapes
    /// (guesses, shortcut steps), per level ≥ 2, combined over levels (stratified); None when no
    /// level has both
    pub length_buys_accuracy: Option<Difference>,
    /// pass@1 of full-granularity responses with checks minus without (every level, stratified)
    pub padding_effect: Option<Difference>,
    /// the pre-registered criterion: the 95% interval of `length_buys_accuracy` lies above 0
    pub fit: bool,
}

impl Fitness {
    pub fn of(base: &ShapeReport) -> Fitness {
        let cell = |level: usize, classes: &[ShapeClass]| {
            base.per_level_shape
                .iter()
                .filter(|(l, c, _)| *l == level && classes.contains(c))
                .fold((0, 0), |(k, n), (_, _, s)| (k + s.correct, n + s.responses))
        };
        let levels: Vec<usize> = base.per_level.iter().map(|(l, _)| *l).collect();
        let full = [ShapeClass::Full, ShapeClass::FullPadded];
        let shorter = [ShapeClass::Guess, ShapeClass::Shortcut];
        let useful: Vec<_> = levels.iter().filter(|&&l| l >= 2).map(|&l| (cell(l, &full), cell(l, &shorter))).collect();
        let padding: Vec<_> = levels.iter().map(|&l| (cell(l, &[ShapeClass::FullPadded]), cell(l, &[ShapeClass::Full]))).collect();
        let length_buys_accuracy = stats::stratified_difference(&useful);
        let fit = length_buys_accuracy.is_some_and(|d| d.sign() == 1);
        Fitness { length_buys_accuracy, padding_effect: stats::stratified_difference(&padding), fit }
    }
}

/// Everything the report is written from (also saved as results.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyResults {
    pub study: StudyConfig,
    /// the base on the evaluation every run gets
    pub base: Evaluation,
    /// the base on the larger trade-off evaluation
    pub base_tradeoff: ShapeReport,
    pub fitness: Fitness,
    /// one per distinct run ([`StudyConfig::runs`]); empty when the task is not fit
    pub runs: Vec<RunResult>,
    /// wall time of this `demo` call
    pub seconds: f64,
    /// the SFT base was found in the folder (made by an earlier call), not trained by this one
    #[serde(default)]
    pub base_found: bool,
}

/// Where one RL run of the study trains and is evaluated.
struct RunIn<'a> {
    env: &'a ToyEnv,
    tok: &'a Tokenizer,
    run_dir: &'a Path,
    base_dir: &'a Path,
    study: &'a StudyConfig,
}

/// Trains (or resumes, or finds finished) one run of the study with `model`, then evaluates the
/// trained policy itself. Returns the step the run was found at and the evaluation.
fn train_and_evaluate<P: Policy>(model: P, cfg: TrainConfig, at: &RunIn, log: &mut dyn FnMut(String)) -> Result<(usize, Evaluation)> {
    let mut trainer = Trainer::new(cfg, model, at.env, at.tok, at.run_dir, at.base_dir)?;
    for line in &trainer.notices {
        log(format!("note: {line}"));
    }
    let resumed = trainer.step();
    trainer.run(&mut |_| {})?;
    let evaluation = evaluate(&trainer.model, at.tok, at.study, at.study.eval_questions, at.study.eval_samples)?;
    Ok((resumed, evaluation))
}

fn evaluate(policy: &dyn Generator, tok: &Tokenizer, study: &StudyConfig, questions: usize, samples: usize) -> Result<Evaluation> {
    let env = ToyEnv::new(generate_split(&study.sft.task(), Split::Eval, questions)?, tok)?;
    let opts = EvalOptions {
        n_samples: samples,
        max_new_tokens: study.budget(),
        sampling: SamplingParams { temperature: study.eval_temperature, top_k: 0, top_p: 0.95 },
        seed: 12345,
        batch_size: 256,
    };
    let mut responses = Vec::with_capacity(questions * samples);
    let (eval, _) = eval_env(policy, &env, tok, &opts, &mut |batch, _, _| {
        responses.extend(batch.iter().map(|r| Response::new(&env.examples[r.problem], &r.text, r.length)));
        Ok(())
    })?;
    Ok(Evaluation { eval, shapes: ShapeReport::of(&responses) })
}

/// Runs the whole study into `out` and writes `out/report.md`; `log` gets one line per phase.
/// Folders are named by a hash of their settings (`base-<hash>`, `runs/<run>-seed<s>-<hash>`):
/// the SFT base and finished RL runs found there are reused, an unfinished run resumes from its
/// last checkpoint, and a study with other settings in the same `out` never overwrites them.
pub fn run_study(study: &StudyConfig, out: &Path, device: Device, log: &mut dyn FnMut(String)) -> Result<StudyResults> {
    study.validate()?;
    let t0 = Instant::now();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let base_dir = out.join(format!("base-{}", config_hash(&study.sft)));
    let cached = base_dir.join("sft_config.json").exists()
        && base_dir.join("model.safetensors").exists()
        && serde_json::from_value::<SftConfig>(read_json(base_dir.join("sft_config.json"))?).ok().as_ref() == Some(&study.sft);
    let base = if cached {
        log(format!("base model: reusing {}", base_dir.display()));
        Model::<f32>::load(&base_dir)?
    } else {
        log(format!(
            "base model: SFT into {} (full-granularity traces until the model solves them, at most {} steps, then {} steps of the mixture)",
            base_dir.display(),
            study.sft.full_only_steps,
            study.sft.steps
        ));
        let (mut last_probe, mut announced) = (None, false);
        run_sft(&study.sft, &base_dir, &mut |st| {
            last_probe = st.probe_accuracy.or(last_probe);
            if st.phase == SftPhase::Mixture && !announced {
                announced = true;
                let probe = last_probe.map_or("none".into(), |p: f64| format!("{p:.2}"));
                log(format!("base model: full-granularity phase over after {} steps (last greedy probe {probe}), now the mixture", st.step));
            }
        })?
    };
    let tok = Tokenizer::from_dir(&base_dir)?;
    let engine = Engine::new(device, &base, &mut |n| log(n))?;
    let base_eval = evaluate(engine.generator(&base), &tok, study, study.eval_questions, study.eval_samples)?;
    let base_tradeoff = evaluate(engine.generator(&base), &tok, study, study.base_questions, study.base_samples)?.shapes;
    drop(engine);
    let fitness = Fitness::of(&base_tradeoff);
    log(format!(
        "base model: pass@1 {:.3}, length {:.1}; pass@1 of full granularity minus shorter shapes: {} ({:.0} s)",
        base_eval.eval.overall.accuracy,
        base_eval.eval.overall.mean_length,
        report::difference_text(fitness.length_buys_accuracy.as_ref(), 3),
        t0.elapsed().as_secs_f64()
    ));
    let mut results = StudyResults { study: study.clone(), base: base_eval, base_tradeoff, fitness, runs: Vec::new(), seconds: 0.0, base_found: cached };
    if !results.fitness.fit {
        log("the base model's accuracy does not rise with the length of its reasoning: the task is not fit for the comparison, no RL run".into());
    } else {
        let train_env = ToyEnv::new(generate_split(&study.sft.task(), Split::Train, study.rl_train_questions)?, &tok)?;
        let max_prompt = {
            use crate::rl::env::Environment;
            (0..train_env.len()).map(|i| train_env.prompt(i).len()).max().unwrap_or(0) as u64
        };
        let runs = study.runs();
        for (i, (setting, seed)) in runs.iter().enumerate() {
            let cfg = run_config(study, setting, *seed, &base_dir);
            let run = setting.run_name();
            let run_dir = out.join("runs").join(format!("{run}-seed{seed}-{}", config_hash(&cfg)));
            let t = Instant::now();
            let run_in = RunIn { env: &train_env, tok: &tok, run_dir: &run_dir, base_dir: &base_dir, study };
            let needs = crate::engine::TrainingNeeds::rl(&base.cfg, &cfg, max_prompt);
            let (resumed, evaluation) = match Trainee::new(device, base.clone(), &needs, &mut |_| {})? {
                Trainee::Cpu(m) => train_and_evaluate(m, cfg, &run_in, log)?,
                Trainee::Gpu(m) => train_and_evaluate(m, cfg, &run_in, log)?,
            };
            let seconds = t.elapsed().as_secs_f64();
            log(format!(
                "[{}/{}] {} seed {seed}: pass@1 {:.3}, length {:.1}{} ({seconds:.0} s; {:.1} min so far)",
                i + 1,
                runs.len(),
                setting.label(),
                evaluation.eval.overall.accuracy,
                evaluation.eval.overall.mean_length,
                match resumed {
                    0 => String::new(),
                    s if s == study.rl_steps => ", found finished".into(),
                    s => format!(", resumed at step {s}"),
                },
                t0.elapsed().as_secs_f64() / 60.0
            ));
            let metrics = read_metrics(&run_dir.join("metrics.jsonl"))?;
            results.runs.push(RunResult { run, seed: *seed, evaluation, metrics, seconds, found_at_step: resumed });
        }
    }
    results.seconds = t0.elapsed().as_secs_f64();
    write_report(out, &results)?;
    Ok(results)
}
