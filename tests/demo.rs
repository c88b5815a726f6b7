//! `drpo demo --quick` end to end: SFT base, RL runs, evaluation, report with tables and figures.

use std::path::Path;
use std::process::Command;

#[test]
fn demo_quick_writes_a_sane_report() {
    let out = std::env::temp_dir().join(format!("drpo-demo-quick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_drpo")).args(["demo", "--quick", "--device", "cpu", "--out"]).arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stderr}");
    assert!(run.status.success(), "demo failed: {stderr}");

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
            assert!(m.loss.is_finite() && m.mean_length > 0.0 && (0.0..=1.0).contains(&m.accuracy), "{m:?}");
        }
        assert!(d.join("checkpoint/model.safetensors").exists());
    }
    // the report has the table rows and its figures exist as SVG
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for m in study["methods"].as_array().unwrap() {
        assert!(report.contains(&format!("| {} |", m["name"].as_str().unwrap())), "row for {m}");
    }
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
    let _ = std::fs::remove_dir_all(Path::new(&out));
}
