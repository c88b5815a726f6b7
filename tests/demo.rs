//! `drpo demo --quick` end to end: SFT base, RL runs, evaluation, report with tables and figures.

use std::path::Path;
use std::process::Command;

#[test]
fn demo_quick_writes_a_sane_report() {
    // no --out: --quick writes to runs/demo-quick (of the working folder), never over runs/demo
    let cwd = std::env::temp_dir().join(format!("drpo-demo-quick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cwd);
    std::fs::create_dir_all(&cwd).unwrap();
    let out = cwd.join("runs/demo-quick");
    let run = Command::new(env!("CARGO_BIN_EXE_drpo")).args(["demo", "--quick", "--device", "cpu"]).current_dir(&cwd).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stderr}");
    assert!(run.status.success(), "demo failed: {stderr}");
    assert!(!cwd.join("runs/demo").exists());

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let results = &json["results"];
    let study: drpo::study::StudyConfig = serde_json::from_value(results["study"].clone()).unwrap();
    assert_eq!(study, drpo::study::StudyConfig::preset(drpo::study::Preset::Quick));
    let runs = results["runs"].as_array().unwrap();
    // one run per distinct configuration and seed
    assert_eq!(runs.len(), study.runs().len());
    assert_eq!(study.runs().len(), study.settings.len() * study.seeds.len());

    // the base model learned the task (answers are digits, chance is 0.1), and length buys it accuracy
    let base = &results["base"]["eval"]["overall"];
    let acc = base["accuracy"].as_f64().unwrap();
    assert!(acc > 0.2, "base pass@1 {acc} is not above chance");
    let fitness: drpo::study::Fitness = serde_json::from_value(results["fitness"].clone()).unwrap();
    assert!(fitness.fit, "the quick base shows no accuracy-for-length trade-off: {fitness:?}");
    let d = fitness.length_buys_accuracy.unwrap();
    assert!(d.delta.is_finite() && d.ci95.unwrap().0 > 0.0, "{d:?}");
    for r in runs {
        let o = &r["evaluation"]["eval"]["overall"];
        let (a, l) = (o["accuracy"].as_f64().unwrap(), o["mean_length"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&a) && l > 0.0 && l.is_finite(), "{r}");
        let shapes = &r["evaluation"]["shapes"]["overall"];
        let shares: f64 = ["guess_share", "shortcut_share", "full_share"].iter().map(|k| shapes[k].as_f64().unwrap()).sum();
        assert!((shares - 1.0).abs() < 1e-9 || shapes["responses"].as_u64() == Some(0), "shape shares {shapes}");
    }
    // every RL run wrote one metrics line per step, all finite, with the mechanism's numbers
    let run_dirs: Vec<_> = std::fs::read_dir(out.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(run_dirs.len(), runs.len());
    for d in &run_dirs {
        let metrics = drpo::rl::trainer::read_metrics(&d.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.len(), study.rl_steps, "{}", d.display());
        let cfg: drpo::rl::trainer::TrainConfig = serde_json::from_str(&std::fs::read_to_string(d.join("train_config.json")).unwrap()).unwrap();
        let discriminative = cfg.objective.baseline().is_none();
        for m in &metrics {
            assert!(m.loss.is_some_and(f64::is_finite) && m.grad_norm_mean.is_some() && m.mean_length > 0.0 && (0.0..=1.0).contains(&m.accuracy), "{m:?}");
            assert!((0.0..=1.0).contains(&m.valid_group_share));
            if m.accuracy > 0.0 {
                let down = m.correct_pushed_down_share.unwrap();
                assert!((0.0..=1.0).contains(&down) && (0.0..=1.0).contains(&m.correct_unpushed_share.unwrap()), "{m:?}");
                // DRPO and DisCO never push a correct answer down: measured, not assumed
                if discriminative {
                    assert_eq!(down, 0.0, "{}: {m:?}", d.display());
                }
            }
        }
        assert!(d.join("checkpoint/model.safetensors").exists());
        // folders are named by their settings' hash: another configuration never lands in them
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(&format!("-{}", drpo::study::config_hash(&cfg))), "{name}");
        // the demo's RL settings are the toy defaults: two optimizer steps per RL step
        assert_eq!((cfg.questions_per_step, cfg.mini_batch_questions), (16, 8));
    }
    // GRPO-LP at α = 0.5 pushes some correct answers down during the run (the mechanism exists here)
    let lp = run_dirs.iter().find(|d| d.file_name().unwrap().to_string_lossy().starts_with("grpo-lp-0.5")).unwrap();
    let m = drpo::rl::trainer::read_metrics(&lp.join("metrics.jsonl")).unwrap();
    assert!(m.iter().any(|m| m.correct_pushed_down_share.unwrap_or(0.0) > 0.0), "GRPO-LP never pushed a correct answer down");
    let base_dirs: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("base-"))
        .collect();
    assert_eq!(base_dirs.len(), 1, "{base_dirs:?}");

    // the report: the answer first, then every section, a row per setting with AES, finite numbers
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let answer_at = report.find("## Answer").unwrap();
    assert!(answer_at < report.find("## Setup").unwrap());
    // one seed: no interval, so the answer cannot be yes or no
    assert!(report.contains("**Not distinguishable at 1 seed."), "{report}");
    for section in ["## 1. Does length buy accuracy", "## 2. Pareto sweeps", "## 3. DRPO against the baselines", "## 4. The mechanism", "## 5. Per level", "## 6. Training curves"] {
        assert!(report.contains(section), "{section} missing");
    }
    assert!(report.contains("| AES |") && report.contains("| ref |"), "AES column");
    for st in &study.settings {
        assert!(report.contains(&format!("| {} | {} |", st.family.name(), st.label())), "row for {}", st.label());
    }
    for word in ["NaN", "inf |", "± 0.000 "] {
        assert!(!report.contains(word), "{word} in the report:\n{report}");
    }
    assert!(report.contains("16 questions × 8 rollouts"), "{report}");
    for fig in ["base_tradeoff.svg", "pareto.svg", "mechanism.svg", "mixed_groups.svg", "train_accuracy.svg", "train_length.svg"] {
        assert!(report.contains(fig), "{fig} not in the report");
        let svg = std::fs::read_to_string(out.join(fig)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{fig}");
        assert!(svg.contains("<polyline") || svg.contains("<circle"), "{fig} has no data");
        assert!(!svg.contains("NaN"), "{fig}");
    }

    // a second run reuses the cached base model and the finished runs' settings
    let again = Command::new(env!("CARGO_BIN_EXE_drpo")).args(["demo", "--quick", "--device", "cpu", "--out"]).arg(&out).output().unwrap();
    assert!(again.status.success());
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(log.contains("reusing"), "{log}");
    assert!(stderr.contains("full-granularity phase over after"), "{stderr}");
    assert_eq!(log.matches("found finished").count(), runs.len(), "{log}");
    // and its report says that its wall time is not the study's
    let first_said = "This demo call took";
    assert!(report.contains(first_said) && !report.contains("reused the SFT base"), "{report}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let said = format!("reused the SFT base of an earlier call and found {n} of its {n} runs already trained in its folder ({n} finished", n = runs.len());
    assert!(report.contains(&said), "{said}:\n{report}");
    let _ = std::fs::remove_dir_all(Path::new(&cwd));
}

/// Axis ticks are 1, 2 or 5 × 10^k apart and printed exactly (the old ones read −0.550, 2.475, 11.6).
#[test]
fn plot_ticks_are_nice_numbers() {
    use drpo::plot::nice_ticks;
    for (lo, hi, want_step) in [(-0.55, 11.6, 2.0), (0.0, 1.0, 0.2), (24.6, 33.9, 2.0), (0.9412, 0.9977, 0.01), (0.0, 59.0, 10.0), (3.0, 3.0, 0.2)] {
        let (ticks, decimals) = nice_ticks(lo, hi, 5);
        let step = ticks[1] - ticks[0];
        println!("[{lo}, {hi}]: {ticks:?} ({decimals} decimals)");
        assert!((step - want_step).abs() < 1e-12 * want_step, "[{lo}, {hi}]: step {step}");
        assert!(ticks[0] <= lo && *ticks.last().unwrap() >= hi, "ticks cover the data");
        for t in &ticks {
            let k = t / step;
            assert!((k - k.round()).abs() < 1e-9, "{t} is not a multiple of {step}");
            // the label is exact: printing with `decimals` and parsing gives the tick back
            let label = format!("{t:.decimals$}");
            assert!((label.parse::<f64>().unwrap() - t).abs() < 1e-9 * step, "{label} for {t}");
        }
        assert!((3..=8).contains(&ticks.len()), "{ticks:?}");
    }
    // and the SVG shows those labels
    let svg = drpo::plot::line_chart("t", "x", "y", &[drpo::plot::Series { name: "a".into(), points: vec![(0.0, -0.55), (59.0, 11.6)] }]);
    for label in [">-2<", ">0<", ">12<", ">60<"] {
        assert!(svg.contains(label), "{label} missing");
    }
    assert!(!svg.contains("2.475") && !svg.contains("-0.550"));

    // error bars: the axes cover every bar's ends (0.5 ± 0.3 reaches down to 0.2) and the marks, a bar per
    // non-zero error, a label per point, a diamond per mark
    use drpo::plot::{error_bar_chart, Curve, ErrorPoint};
    let p = |x: f64, y: f64, xe: f64, ye: f64, label: &str| ErrorPoint { x, y, x_err: xe, y_err: ye, label: label.into() };
    let curves = [Curve { name: "A".into(), points: vec![p(10.0, 0.5, 2.0, 0.3, "k=1"), p(30.0, 0.6, 0.0, 0.0, "k=2")] }];
    let svg = error_bar_chart("t", "x", "y", &curves, &[("base".into(), 40.0, 0.9)]);
    assert!(svg.contains(">0.2<") && svg.contains(">0.9<"), "{svg}");
    assert_eq!(svg.matches("stroke-width=\"1\"").count(), 2, "one bar per axis of the first point only");
    assert!(svg.contains(">k=1<") && svg.contains(">k=2<") && svg.contains(">base<") && svg.contains("<path d=\"M"));
}

/// A stopped SFT never leaves new weights next to an old sft_config.json (the study reuses a base
/// folder by that file): it is removed first and written last.
#[test]
fn sft_config_marks_a_finished_base_only() {
    let dir = std::env::temp_dir().join(format!("drpo-sft-marker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = drpo::sft::SftConfig { steps: 3, full_only_steps: 0, batch_size: 2, n_train: 20, hidden_size: 16, num_heads: 2, num_kv_heads: 1, intermediate_size: 24, ..Default::default() };
    drpo::sft::run_sft(&cfg, &dir, &mut |_| {}).unwrap();
    assert!(dir.join("sft_config.json").exists());
    // a second SFT with other settings is stopped after its first step (a panic in the callback)
    let other = drpo::sft::SftConfig { seed: 9, ..cfg.clone() };
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drpo::sft::run_sft(&other, &dir, &mut |_| panic!("stopped")).unwrap();
    }));
    assert!(stopped.is_err());
    assert!(!dir.join("sft_config.json").exists(), "the old config still claims the folder");
    std::fs::remove_dir_all(&dir).unwrap();
}
