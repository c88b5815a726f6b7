//! report.md, results.json and the figures of the study, written from [`StudyResults`] alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::stats::{aes, Difference, Summary, AES_GAIN_WEIGHT, AES_LOSS_WEIGHT};
use super::verdict::{answer, matched_comparisons, Answer, CurvePoint, MatchedComparison, Outcome};
use super::{knob_text, run_config, Family, RunResult, Setting, ShapeClass, ShapeStats, StudyResults};
use crate::error::{write_atomic, Result};
use crate::plot::{error_bar_chart, line_chart, Curve, ErrorPoint, Series};
use crate::rl::trainer::StepMetrics;

/// `+0.123 [+0.045, +0.201]`, `+0.123 (no interval)` or `no data`.
pub fn difference_text(d: Option<&Difference>, decimals: usize) -> String {
    match d {
        None => "no data".into(),
        Some(d) => match d.ci95 {
            Some((lo, hi)) => format!("{:+.decimals$} [{lo:+.decimals$}, {hi:+.decimals$}]", d.delta),
            None => format!("{:+.decimals$} (no interval)", d.delta),
        },
    }
}

/// `0.812 ± 0.021` or `0.812 ± –` with one seed.
fn mean_sd(s: &Summary, decimals: usize) -> String {
    match s.sd {
        Some(sd) => format!("{:.decimals$} ± {sd:.decimals$}", s.mean),
        None => format!("{:.decimals$} ± –", s.mean),
    }
}

fn ci_text(s: &Summary, decimals: usize) -> String {
    s.ci95().map_or("–".into(), |(lo, hi)| format!("[{lo:.decimals$}, {hi:.decimals$}]"))
}

/// One setting's runs and their summaries over seeds.
struct Row<'a> {
    setting: Setting,
    runs: Vec<&'a RunResult>,
    accuracy: Summary,
    length: Summary,
    /// mean over seeds of the shape statistics' fields
    shapes: ShapeStats,
    length_correct: Option<f64>,
}

impl<'a> Row<'a> {
    fn of(r: &'a StudyResults, setting: &Setting) -> Option<Row<'a>> {
        let name = setting.run_name();
        let runs: Vec<&RunResult> = r.runs.iter().filter(|x| x.run == name && r.study.seeds.contains(&x.seed)).collect();
        if runs.is_empty() {
            return None;
        }
        let pick = |f: &dyn Fn(&RunResult) -> f64| Summary::of(&runs.iter().map(|x| f(x)).collect::<Vec<_>>());
        let avg = |f: &dyn Fn(&ShapeStats) -> f64| pick(&|x| f(&x.evaluation.shapes.overall)).mean;
        let shapes = ShapeStats {
            responses: runs.iter().map(|x| x.evaluation.shapes.overall.responses).sum(),
            correct: runs.iter().map(|x| x.evaluation.shapes.overall.correct).sum(),
            accuracy: avg(&|s| s.accuracy),
            mean_length: avg(&|s| s.mean_length),
            mean_useful_steps: avg(&|s| s.mean_useful_steps),
            mean_useless_steps: avg(&|s| s.mean_useless_steps),
            mean_wrong_steps: avg(&|s| s.mean_wrong_steps),
            guess_share: avg(&|s| s.guess_share),
            shortcut_share: avg(&|s| s.shortcut_share),
            full_share: avg(&|s| s.full_share),
            padded_share: avg(&|s| s.padded_share),
        };
        let correct_lengths: Vec<f64> = runs.iter().filter_map(|x| x.evaluation.eval.overall.mean_length_correct).collect();
        Some(Row {
            setting: *setting,
            accuracy: pick(&|x| x.evaluation.eval.overall.accuracy),
            length: pick(&|x| x.evaluation.eval.overall.mean_length),
            shapes,
            length_correct: (!correct_lengths.is_empty()).then(|| correct_lengths.iter().sum::<f64>() / correct_lengths.len() as f64),
            runs,
        })
    }

    fn point(&self) -> CurvePoint {
        CurvePoint { label: self.setting.label(), accuracy: self.accuracy, length: self.length }
    }
}

/// The rows of one family, in the study's setting order.
fn family_rows<'a>(r: &'a StudyResults, family: Family) -> Vec<Row<'a>> {
    r.study.settings.iter().filter(|s| s.family == family).filter_map(|s| Row::of(r, s)).collect()
}

/// The name a run is shown under in the curves: the label of its setting, or "GRPO (no length
/// penalty)" for the run GRPO-LP α = 0, ALP β = 0 and HAPO w = 0 share.
fn run_label(r: &StudyResults, run: &str) -> String {
    let settings: Vec<&Setting> = r.study.settings.iter().filter(|s| s.run_name() == run).collect();
    match settings.as_slice() {
        [one] => one.label(),
        [first, ..] if first.family.objective(first.knob).0 == crate::rl::trainer::ObjectiveKind::Grpo => "GRPO (no length penalty)".into(),
        [first, ..] => first.label(),
        [] => run.to_string(),
    }
}

/// One row per distinct run (settings sharing runs appear once), in setting order, with its label.
fn distinct_rows(r: &StudyResults) -> Vec<(String, Row<'_>)> {
    let mut seen = std::collections::HashSet::new();
    r.study
        .settings
        .iter()
        .filter(|st| seen.insert(st.run_name()))
        .filter_map(|st| Some((run_label(r, &st.run_name()), Row::of(r, st)?)))
        .collect()
}

/// The DRPO-vs-baselines comparisons (DRPO's length-penalised settings against each baseline family).
fn comparisons(r: &StudyResults) -> Vec<MatchedComparison> {
    let drpo: Vec<CurvePoint> = family_rows(r, Family::Drpo).iter().filter(|x| !x.setting.is_reference()).map(Row::point).collect();
    let baselines: Vec<(String, Vec<CurvePoint>)> = Family::ALL[1..]
        .iter()
        .map(|&f| (f.name().to_string(), family_rows(r, f).iter().map(Row::point).collect::<Vec<_>>()))
        .filter(|(_, points)| !points.is_empty())
        .collect();
    matched_comparisons(&drpo, &baselines)
}

/// The answer paragraph: the first thing the report says.
fn answer_paragraph(r: &StudyResults, cs: &[MatchedComparison]) -> String {
    let seeds = r.study.seeds.len();
    if !r.fitness.fit {
        return format!(
            "**The task is not fit for the question; no comparison was run.** On this base model, responses that write every \
             partial result are not measurably more accurate than shorter ones (pass@1 difference {}, levels ≥ 2, 95% interval), \
             so cutting reasoning cannot cost accuracy here and the question has nothing to measure. See section 1.\n",
            difference_text(r.fitness.length_buys_accuracy.as_ref(), 3)
        );
    }
    let list = |o: Outcome| cs.iter().filter(|c| c.outcome == o).map(|c| format!("{} (length {:.1})", c.setting, c.length)).collect::<Vec<_>>().join(", ");
    let lead = match answer(cs) {
        Answer::Yes => format!("**Yes, at {seeds} seeds.** At its own mean length, DRPO has a higher held-out pass@1 than every length-penalty baseline whose sweep reaches that length, with 95% intervals excluding zero, for {}; it is worse for none.", list(Outcome::Better)),
        Answer::No => format!("**No, at {seeds} seeds.** At its own mean length, DRPO has a lower held-out pass@1 than some length-penalty baseline, with a 95% interval excluding zero, for {}; it is better than all of them for none.", list(Outcome::Worse)),
        Answer::Mixed => format!("**Mixed, at {seeds} seeds.** DRPO is better than every baseline at its length for {}, and worse than some baseline for {} (95% intervals).", list(Outcome::Better), list(Outcome::Worse)),
        Answer::NotDistinguishable => format!(
            "**Not distinguishable at {seeds} seed{}.** At the mean length of each DRPO setting, the 95% interval of the pass@1 difference to some length-penalty baseline contains zero{}.",
            if seeds == 1 { "" } else { "s" },
            if seeds == 1 { " (one seed gives no interval at all)" } else { "" }
        ),
        Answer::NotComparable => "**Not comparable.** No baseline's sweep spans the mean length of any DRPO setting, so no pass@1 can be read off at a matched length.".into(),
    };
    let mut s = lead + "\n\n";
    for c in cs {
        let against: Vec<String> = c.baselines.iter().map(|b| format!("{} {:.3} (Δ {})", b.family, b.accuracy, difference_text(Some(&b.difference), 3))).collect();
        let _ = writeln!(
            s,
            "- {}: length {:.1}, pass@1 {:.3}; baselines at that length: {}.",
            c.setting,
            c.length,
            c.accuracy,
            if against.is_empty() { "none reaches it".into() } else { against.join("; ") }
        );
    }
    s + "\nThe rule was fixed before the numbers (src/study/verdict.rs): a baseline's pass@1 at a length is interpolated \
           linearly between its two neighbouring settings; Δ = DRPO − baseline with a Welch 95% interval over seeds; DRPO is \
           better at a setting when every Δ's interval lies above 0, worse when one lies below 0. Lengths are taken as exact \
           and the comparisons are not corrected for their number.\n"
}

fn setup_paragraph(r: &StudyResults) -> String {
    let st = &r.study;
    let sft = &st.sft;
    let rl = run_config(st, &st.settings[0], st.seeds[0], Path::new("."));
    let rl_text = format!(
        "{} questions × {} rollouts at T = {}, {} optimizer steps per RL step, lr {}, τ = {}, β = {}, δ = {}",
        rl.questions_per_step,
        rl.group_size,
        rl.temperature,
        rl.optimizer_steps_per_step(),
        rl.lr,
        rl.hyper.tau,
        rl.hyper.beta,
        rl.hyper.delta
    );
    format!(
        "Task: arithmetic chains mod 10 of levels {}..={} (src/task.rs). Base model: a {}-layer, {}-wide Qwen2 model, SFT on \
         full-granularity traces until greedy decoding solves {:.0}% of {} training questions (at most {} steps), then {} steps \
         on correct traces of mixed shapes: {:.0}% guesses (the answer alone), {:.0}% of the rest with shortcut steps (two operations \
         folded into one written step), the others one operation per step; {:.0}% of the non-guesses padded with 1..=k+{} checks \
         (restating the partial just written). RL: {} steps of {}, on {} training questions ({:.1} epochs), budget C = {} tokens. Evaluation: {} held-out questions × {} \
         samples at T = {}, top-p 0.95; the base's trade-off (section 1) on {} questions × {} samples. Seeds {:?}; mean ± sample sd \
         over seeds, 95% intervals from Student's t. {}\n",
        sft.min_level,
        sft.max_level,
        sft.num_layers,
        sft.hidden_size,
        100.0 * crate::sft::PROBE_ACCURACY,
        crate::sft::PROBE_QUESTIONS,
        sft.full_only_steps,
        sft.steps,
        100.0 * sft.guess_share,
        100.0 * sft.shortcut_share,
        100.0 * (1.0 - sft.concise_share),
        sft.extra_checks,
        st.rl_steps,
        rl_text,
        st.rl_train_questions,
        (st.rl_steps * rl.questions_per_step) as f64 / st.rl_train_questions as f64,
        st.budget(),
        st.eval_questions,
        st.eval_samples,
        st.eval_temperature,
        st.base_questions,
        st.base_samples,
        st.seeds,
        wall_time_text(r)
    )
}

/// The wall time of the `demo` call that wrote the report, and how much of the work it found done.
fn wall_time_text(r: &StudyResults) -> String {
    let found = r.runs.iter().filter(|x| x.found_at_step > 0).count();
    let mut s = format!("This demo call took {:.1} min of wall time", r.seconds / 60.0);
    if r.base_found {
        s += if found > 0 { ", reused the SFT base of an earlier call" } else { " and reused the SFT base of an earlier call" };
    }
    if found > 0 {
        let finished = r.runs.iter().filter(|x| x.found_at_step >= r.study.rl_steps).count();
        let _ = write!(
            s,
            " and found {found} of its {} runs already trained in its folder ({finished} finished: only evaluated), so it does not \
             time the whole study",
            r.runs.len()
        );
    }
    s + "."
}

/// Section 1: the base model's pass@1 per shape and level.
fn base_section(r: &StudyResults) -> (String, Vec<Curve>) {
    let b = &r.base_tradeoff;
    let mut md = String::from(
        "## 1. Does length buy accuracy for the base model?\n\n\
         Before any RL: the base model's held-out responses grouped by the shape they chose (src/study/shapes.rs). Useful steps \
         advance the solution (a correct partial result not written before); useless steps are checks and repeats; a guess writes \
         no step.\n\n\
         | level | shape | share | pass@1 | mean length | useful steps | useless steps |\n|---|---|---|---|---|---|---|\n",
    );
    for (level, all) in &b.per_level {
        for (_, class, s) in b.per_level_shape.iter().filter(|(l, _, _)| l == level) {
            let _ = writeln!(
                md,
                "| {level} | {} | {:.3} | {:.3} | {:.1} | {:.2} | {:.2} |",
                class.label(),
                s.responses as f64 / all.responses.max(1) as f64,
                s.accuracy,
                s.mean_length,
                s.mean_useful_steps,
                s.mean_useless_steps
            );
        }
        let _ = writeln!(
            md,
            "| {level} | all ({} responses) | 1 | {:.3} | {:.1} | {:.2} | {:.2} |",
            all.responses, all.accuracy, all.mean_length, all.mean_useful_steps, all.mean_useless_steps
        );
    }
    let f = &r.fitness;
    let _ = write!(
        md,
        "\nPass@1 of full-granularity responses minus that of shorter shapes (guesses, shortcut steps), per level ≥ 2 and combined \
         over levels (Cochran–Mantel–Haenszel weights, Wald 95% interval): **{}**. Pass@1 of full-granularity responses with checks \
         minus without: {} (a check follows its step, so this is an association, not an effect of the check). The criterion, fixed \
         in advance: the task is fit when the first interval lies above 0. **{}**\n\n\
         ![base model: pass@1 vs response length per shape](base_tradeoff.svg)\n\n\
         One curve per shape through the levels (L1..L6, cells of at least 10 responses), error bars ± 1 binomial sd: length buys \
         accuracy when the curves of the shorter shapes lie below those of full granularity.\n",
        difference_text(f.length_buys_accuracy.as_ref(), 3),
        difference_text(f.padding_effect.as_ref(), 3),
        if f.fit { "Fit: written steps buy accuracy on this base." } else { "Not fit: the comparison is skipped." }
    );
    // one curve per shape through the levels: where each shape sits in (length, pass@1)
    let curves = ShapeClass::ALL
        .iter()
        .map(|&class| Curve {
            name: class.label().into(),
            points: b
                .per_level_shape
                .iter()
                .filter(|(_, c, s)| *c == class && s.responses >= 10)
                .map(|(l, _, s)| ErrorPoint {
                    x: s.mean_length,
                    y: s.accuracy,
                    x_err: 0.0,
                    y_err: (s.accuracy * (1.0 - s.accuracy) / s.responses as f64).sqrt(),
                    label: format!("L{l}"),
                })
                .collect(),
        })
        .filter(|c| !c.points.is_empty())
        .collect();
    (md, curves)
}

/// Section 2: one row per setting with AES against the family's reference.
fn sweep_section(r: &StudyResults) -> String {
    let mut md = format!(
        "## 2. Pareto sweeps\n\n\
         Each family over its knob (SPEC §9.1); the knob at 0 (∞ for DRPO) is the family's run without length penalty, the \
         reference of AES (SPEC §9.2: ΔL = (L_ref − L)/L_ref, ΔA = (A − A_ref)/A_ref, AES = ΔL − {AES_LOSS_WEIGHT}·|ΔA| if ΔA < 0, \
         else ΔL + {AES_GAIN_WEIGHT}·ΔA; the gain weight is assumed, SPEC leaves it open). GRPO-LP α = 0, ALP β = 0 and HAPO w = 0 \
         are all plain GRPO: one set of runs, shown in each family. ALP's β is the paper's × 100 (our responses are ~100× shorter, \
         so β·L keeps the paper's scale). Shares are of the held-out responses.\n\n\
         | family | setting | pass@1 (mean ± sd) | 95% interval | length (mean ± sd) | length of correct | useful steps | useless steps | guesses | shortcuts | AES |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    let base = &r.base.eval.overall;
    let bs = &r.base.shapes.overall;
    let _ = writeln!(
        md,
        "| base | SFT | {:.3} | – | {:.1} | {} | {:.2} | {:.2} | {:.3} | {:.3} | – |",
        base.accuracy,
        base.mean_length,
        base.mean_length_correct.map_or("–".into(), |v| format!("{v:.1}")),
        bs.mean_useful_steps,
        bs.mean_useless_steps,
        bs.guess_share,
        bs.shortcut_share
    );
    for family in Family::ALL {
        let rows = family_rows(r, family);
        let reference = rows.iter().find(|x| x.setting.is_reference());
        for x in &rows {
            let aes_text = match reference {
                _ if x.setting.is_reference() => "ref".to_string(),
                Some(rf) => aes(x.accuracy.mean, x.length.mean, rf.accuracy.mean, rf.length.mean)
                    .map_or("– (reference pass@1 or length 0)".into(), |v| format!("{v:+.3}")),
                None => "– (no reference run)".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.3} | {:.3} | {aes_text} |",
                family.name(),
                x.setting.label(),
                mean_sd(&x.accuracy, 3),
                ci_text(&x.accuracy, 3),
                mean_sd(&x.length, 1),
                x.length_correct.map_or("–".into(), |v| format!("{v:.1}")),
                x.shapes.mean_useful_steps,
                x.shapes.mean_useless_steps,
                x.shapes.guess_share,
                x.shapes.shortcut_share
            );
        }
    }
    md + "\n![held-out pass@1 vs mean length](pareto.svg)\n\nOne curve per family through its settings (labelled by the knob), \
          ordered by length; error bars ± 1 sd over seeds on both axes; the black diamond is the base model.\n"
}

fn pareto_curves(r: &StudyResults) -> Vec<Curve> {
    Family::ALL
        .iter()
        .filter_map(|&f| {
            let mut rows = family_rows(r, f);
            rows.sort_by(|a, b| a.length.mean.total_cmp(&b.length.mean));
            let points: Vec<ErrorPoint> = rows
                .iter()
                .map(|x| ErrorPoint {
                    x: x.length.mean,
                    y: x.accuracy.mean,
                    x_err: x.length.sd.unwrap_or(0.0),
                    y_err: x.accuracy.sd.unwrap_or(0.0),
                    label: format!("{}={}", f.knob_name(), knob_text(x.setting.knob)),
                })
                .collect();
            (!points.is_empty()).then(|| Curve { name: f.name().into(), points })
        })
        .collect()
}

/// The mean over runs of a per-step metric, step by step (up to the shortest run).
fn mean_curve(runs: &[&RunResult], f: &dyn Fn(&StepMetrics) -> Option<f64>) -> Vec<(f64, f64)> {
    let steps = runs.iter().map(|x| x.metrics.len()).min().unwrap_or(0);
    (0..steps)
        .filter_map(|s| {
            let v: Vec<f64> = runs.iter().filter_map(|x| f(&x.metrics[s])).collect();
            (!v.is_empty()).then(|| (s as f64, v.iter().sum::<f64>() / v.len() as f64))
        })
        .collect()
}

/// Section 4: the share of correct rollouts pushed down, and of mixed groups, per family.
fn mechanism_section(r: &StudyResults) -> (String, Vec<Series>, Vec<Series>) {
    let mut md = String::from(
        "## 4. The mechanism: correct answers pushed down\n\n\
         Per RL step, the share of correct rollouts whose objective pushes their likelihood down (a negative per-response \
         gradient coefficient: the advantage for the baselines, −∂loss/∂s for DRPO/DisCO; read from the objectives' output, \
         metrics.jsonl `correct_pushed_down_share`), the share left alone (`correct_unpushed_share`: DRPO gets no signal from \
         an all-correct group) and the share of mixed groups (`valid_group_share`: at least one correct and one wrong \
         rollout), averaged over the steps and seeds of each setting.\n\n\
         | setting | correct pushed down | correct left alone | mixed groups |\n|---|---|---|---|\n",
    );
    for (name, row) in distinct_rows(r) {
        let avg = |f: &dyn Fn(&StepMetrics) -> Option<f64>| {
            let v: Vec<f64> = row.runs.iter().flat_map(|x| x.metrics.iter().filter_map(f)).collect();
            if v.is_empty() {
                "–".to_string()
            } else {
                format!("{:.3}", v.iter().sum::<f64>() / v.len() as f64)
            }
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} |",
            avg(&|m| m.correct_pushed_down_share),
            avg(&|m| m.correct_unpushed_share),
            avg(&|m| Some(m.valid_group_share))
        );
    }
    // figures: per family, its length-penalised settings pooled
    let mut pushed = Vec::new();
    let mut mixed = Vec::new();
    for family in Family::ALL {
        let rows = family_rows(r, family);
        let runs: Vec<&RunResult> = rows.iter().filter(|x| !x.setting.is_reference()).flat_map(|x| x.runs.iter().copied()).collect();
        if runs.is_empty() {
            continue;
        }
        pushed.push(Series { name: family.name().into(), points: mean_curve(&runs, &|m| m.correct_pushed_down_share) });
        mixed.push(Series { name: family.name().into(), points: mean_curve(&runs, &|m| Some(m.valid_group_share)) });
    }
    md += "\n![share of correct rollouts pushed down per RL step](mechanism.svg)\n![share of mixed groups per RL step](mixed_groups.svg)\n\n\
           Each line pools a family's length-penalised settings (mean over settings and seeds).\n";
    (md, pushed, mixed)
}

/// Section 5: per level, per setting.
fn level_section(r: &StudyResults) -> String {
    let mut md = String::from(
        "## 5. Per level\n\nMean over seeds. The base model on the same evaluation first.\n\n\
         | setting | level | pass@1 | length | useful steps | useless steps | guesses | shortcuts |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut line = |name: &str, level: usize, s: &ShapeStats| {
        let _ = writeln!(
            md,
            "| {name} | {level} | {:.3} | {:.1} | {:.2} | {:.2} | {:.3} | {:.3} |",
            s.accuracy, s.mean_length, s.mean_useful_steps, s.mean_useless_steps, s.guess_share, s.shortcut_share
        );
    };
    for (level, s) in &r.base.shapes.per_level {
        line("base (SFT)", *level, s);
    }
    for (name, row) in distinct_rows(r) {
        let mut by_level: BTreeMap<usize, Vec<&ShapeStats>> = BTreeMap::new();
        for x in &row.runs {
            for (l, s) in &x.evaluation.shapes.per_level {
                by_level.entry(*l).or_default().push(s);
            }
        }
        for (level, ss) in by_level {
            let n = ss.len() as f64;
            let avg = |f: &dyn Fn(&ShapeStats) -> f64| ss.iter().map(|s| f(s)).sum::<f64>() / n;
            let mean = ShapeStats {
                accuracy: avg(&|s| s.accuracy),
                mean_length: avg(&|s| s.mean_length),
                mean_useful_steps: avg(&|s| s.mean_useful_steps),
                mean_useless_steps: avg(&|s| s.mean_useless_steps),
                guess_share: avg(&|s| s.guess_share),
                shortcut_share: avg(&|s| s.shortcut_share),
                ..ShapeStats::default()
            };
            line(&name, level, &mean);
        }
    }
    md
}

/// What results.json holds.
#[derive(serde::Serialize)]
struct Saved<'a> {
    results: &'a StudyResults,
    comparisons: &'a [MatchedComparison],
}

/// report.md, results.json and the SVG figures into `out`.
pub fn write_report(out: &Path, r: &StudyResults) -> Result<()> {
    let cs = if r.fitness.fit { comparisons(r) } else { Vec::new() };
    // the output guard, before any file is written: no NaN/inf reaches the report or results.json
    let saved = Saved { results: r, comparisons: &cs };
    crate::output::ensure_finite("the study's results", &saved)?;
    let mut md = String::from("# DRPO toy study: does DRPO cut reasoning with less accuracy loss than a length penalty?\n\n## Answer\n\n");
    md += &answer_paragraph(r, &cs);
    md += "\n## Setup\n\n";
    md += &setup_paragraph(r);
    let (base_md, base_curves) = base_section(r);
    md += "\n";
    md += &base_md;
    write_atomic(
        out.join("base_tradeoff.svg"),
        error_bar_chart("base model: pass@1 vs length, per shape", "mean response length (tokens)", "pass@1", &base_curves, &[]).as_bytes(),
    )?;
    if r.fitness.fit {
        md += "\n";
        md += &sweep_section(r);
        let base = &r.base.eval.overall;
        let marks = [("base".to_string(), base.mean_length, base.accuracy)];
        write_atomic(
            out.join("pareto.svg"),
            error_bar_chart("held-out pass@1 vs length", "mean response length (tokens)", "pass@1", &pareto_curves(r), &marks).as_bytes(),
        )?;
        md += "\n## 3. DRPO against the baselines at matched length\n\n\
               | DRPO setting | length | pass@1 | baseline | its pass@1 at that length | Δ [95% interval] | outcome |\n|---|---|---|---|---|---|---|\n";
        for c in &cs {
            if c.baselines.is_empty() {
                let _ = writeln!(md, "| {} | {:.1} | {:.3} | – | – | – | {} |", c.setting, c.length, c.accuracy, c.outcome.text());
            }
            for b in &c.baselines {
                let _ = writeln!(
                    md,
                    "| {} | {:.1} | {:.3} | {} | {:.3} | {} | {} |",
                    c.setting,
                    c.length,
                    c.accuracy,
                    b.family,
                    b.accuracy,
                    difference_text(Some(&b.difference), 3),
                    c.outcome.text()
                );
            }
        }
        let (mech_md, pushed, mixed) = mechanism_section(r);
        md += "\n";
        md += &mech_md;
        write_atomic(out.join("mechanism.svg"), line_chart("correct rollouts pushed down", "RL step", "share of correct rollouts", &pushed).as_bytes())?;
        write_atomic(out.join("mixed_groups.svg"), line_chart("mixed groups", "RL step", "share of groups", &mixed).as_bytes())?;
        md += "\n";
        md += &level_section(r);
        // training curves: one line per distinct run (mean over seeds)
        let mut acc = Vec::new();
        let mut len = Vec::new();
        for (name, row) in distinct_rows(r) {
            acc.push(Series { name: name.clone(), points: mean_curve(&row.runs, &|m| Some(m.accuracy)) });
            len.push(Series { name, points: mean_curve(&row.runs, &|m| Some(m.mean_length)) });
        }
        write_atomic(out.join("train_accuracy.svg"), line_chart("rollout accuracy per RL step", "RL step", "accuracy", &acc).as_bytes())?;
        write_atomic(out.join("train_length.svg"), line_chart("rollout length per RL step", "RL step", "mean length (tokens)", &len).as_bytes())?;
        md += "\n## 6. Training curves\n\n![training curves: accuracy](train_accuracy.svg)\n![training curves: length](train_length.svg)\n\n\
               The rollouts' accuracy and mean length per RL step at the training temperature (mean over seeds).\n";
    }
    crate::output::write_json(&out.join("results.json"), &saved, true)?;
    write_atomic(out.join("report.md"), md.as_bytes())
}
