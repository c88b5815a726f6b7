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

    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let study = &results["study"];
    let runs = results["results"].as_array().unwrap();
    let n_methods = study["methods"].as_array().unwrap().len();
    let n_seeds = study["seeds"].as_array().unwrap().len();
    assert_eq!(runs.len(), 1 + n_methods * n_seeds, "base + one run per method and seed");

    // the base model learned the task: answers are digits, so chance is 0.1
    let base = &runs[0]["eval"]["overall"];
    let acc = base["accuracy"].as_f64().unwrap();
    assert!(acc > 0.2, "base pass@1 {acc} is not above chance");
    for r in runs {
        let o = &r["eval"]["overall"];
        let (a, l) = (o["accuracy"].as_f64().unwrap(), o["mean_length"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&a) && l > 0.0 && l.is_finite(), "{r}");
    }
    // every RL run wrote one metrics line per step, all finite
    let steps = study["rl_steps"].as_u64().unwrap() as usize;
    let run_dirs: Vec<_> = std::fs::read_dir(out.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(run_dirs.len(), n_methods * n_seeds);
    for d in &run_dirs {
        let metrics = drpo::rl::trainer::read_metrics(&d.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.len(), steps, "{}", d.display());
        for m in &metrics {
            assert!(m.loss.is_some_and(f64::is_finite) && m.grad_norm_mean.is_some() && m.mean_length > 0.0 && (0.0..=1.0).contains(&m.accuracy), "{m:?}");
        }
        assert!(d.join("checkpoint/model.safetensors").exists());
    }
    // folders are named by their settings' hash: another configuration never lands in them
    let base_dirs: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("base-"))
        .collect();
    assert_eq!(base_dirs.len(), 1, "{base_dirs:?}");
    for d in &run_dirs {
        let cfg: drpo::rl::trainer::TrainConfig = serde_json::from_str(&std::fs::read_to_string(d.join("train_config.json")).unwrap()).unwrap();
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(&format!("-{}", drpo::study::config_hash(&cfg))), "{name}");
        // the demo's RL settings are the toy defaults: two optimizer steps per RL step
        assert_eq!((cfg.questions_per_step, cfg.mini_batch_questions), (16, 8));
    }
    // the report has the table rows and its figures exist as SVG
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for m in study["methods"].as_array().unwrap() {
        assert!(report.contains(&format!("| {} |", m["name"].as_str().unwrap())), "row for {m}");
    }
    // one seed: no spread to show; the header says what the Δ columns are and the RL batch
    assert!(!report.contains("± 0.000") && report.contains("± –"), "{report}");
    assert!(report.contains("relative changes") && report.contains("16 questions × 8 rollouts"), "{report}");
    for fig in ["train_accuracy.svg", "train_length.svg", "tradeoff.svg"] {
        assert!(report.contains(fig));
        let svg = std::fs::read_to_string(out.join(fig)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{fig}");
        assert!(svg.contains("<polyline") || svg.contains("<circle"), "{fig} has no data");
    }

    // a second run reuses the cached base model and the finished runs' settings
    let again = Command::new(env!("CARGO_BIN_EXE_drpo")).args(["demo", "--quick", "--device", "cpu", "--out"]).arg(&out).output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("reusing"));
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
}

/// A stopped SFT never leaves new weights next to an old sft_config.json (the study reuses a base
/// folder by that file): it is removed first and written last.
#[test]
fn sft_config_marks_a_finished_base_only() {
    let dir = std::env::temp_dir().join(format!("drpo-sft-marker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = drpo::sft::SftConfig { steps: 3, batch_size: 2, n_train: 20, hidden_size: 16, num_heads: 2, num_kv_heads: 1, intermediate_size: 24, ..Default::default() };
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
