//! The command line end to end: `drpo eval` on a GSM8K slice and on the toy task, `drpo grade`,
//! `drpo objective` against the oracle fixture, `drpo gradcheck`, and bad inputs failing with a
//! message that names the file (never a panic).

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Checks one EvalStats block: `questions` questions × `n` samples, lengths within the budget.
/// Truncated responses are exactly `max_new` tokens long and the others at least 1, so
/// mean_length ≥ max_new·t + (1 − t) for truncation rate t.
fn check_stats(st: &Value, questions: usize, n: usize, max_new: usize) {
    assert_eq!(st["questions"], questions, "{st}");
    assert_eq!(st["responses"], questions * n, "{st}");
    let (acc, len, trunc) = (f(&st["accuracy"]), f(&st["mean_length"]), f(&st["truncation_rate"]));
    assert!((0.0..=1.0).contains(&acc), "accuracy {acc}");
    assert!((0.0..=1.0).contains(&trunc), "truncation rate {trunc}");
    assert!(len > 0.0 && len <= max_new as f64, "mean length {len} not in (0, {max_new}]");
    assert!(len >= max_new as f64 * trunc + (1.0 - trunc) - 1e-12, "mean length {len} < the truncated responses' share ({trunc})");
    // shares of a finite number of responses
    let responses = (questions * n) as f64;
    for x in [acc, trunc] {
        assert!((x * responses - (x * responses).round()).abs() < 1e-9, "{x} is not a multiple of 1/{responses}");
    }
    let (correct, wrong) = (&st["mean_length_correct"], &st["mean_length_wrong"]);
    if acc == 0.0 {
        assert!(correct.is_null() && (f(wrong) - len).abs() < 1e-12, "no correct answer, so the wrong ones' length is the mean: {st}");
    } else if acc == 1.0 {
        assert!(wrong.is_null() && (f(correct) - len).abs() < 1e-12, "{st}");
    } else {
        assert!((acc * f(correct) + (1.0 - acc) * f(wrong) - len).abs() < 1e-9, "length split {correct} / {wrong} does not average to {len}");
    }
}

#[test]
fn eval_gsm8k_slice() {
    let dir = scratch_dir("eval-gsm8k");
    let model = fixture("qwen2-tiny");
    let data = dir.join("gsm8k-20.json");
    write_gsm8k_slice(&model, 20, 8, &data);
    let run = |out: &Path| {
        std::fs::create_dir_all(out).unwrap();
        let (ok, stdout, stderr) = run_drpo(&[
            "eval", "--model", &s(&model), "--data", &s(&data), "--n", "2", "--max-new-tokens", "8", "--out", &s(out), "--device", "cpu",
        ]);
        assert!(ok, "drpo eval failed:\n{stderr}");
        stdout
    };
    let out = dir.join("a");
    let stdout = run(&out);
    let report = read_json(&out.join("eval.json"));
    check_stats(&report["overall"], 20, 2, 8);
    // a random model does not solve GSM8K
    assert_eq!(f(&report["overall"]["accuracy"]), 0.0);
    assert_eq!(report["per_level"], json!([]), "GSM8K records have no level");
    assert_eq!(report["device"], "cpu");
    assert_eq!(report["options"]["n_samples"], 2);
    assert_eq!(report["options"]["max_new_tokens"], 8);
    let md = std::fs::read_to_string(out.join("eval.md")).unwrap();
    let all_row = md.lines().find(|l| l.starts_with("| all |")).unwrap_or_else(|| panic!("no `all` row in eval.md:\n{md}"));
    assert!(all_row.starts_with(&format!("| all | 20 | {:.4} | {:.1} |", f(&report["overall"]["accuracy"]), f(&report["overall"]["mean_length"]))), "{all_row}");
    assert!(stdout.contains(all_row), "the table printed differs from eval.md");
    // responses.jsonl: every (problem, sample) once, in order, agreeing with the totals
    let lines: Vec<Value> =
        std::fs::read_to_string(out.join("responses.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 40);
    for (r, line) in lines.iter().enumerate() {
        assert_eq!((line["problem"].as_u64(), line["sample"].as_u64()), (Some(r as u64 / 2), Some(r as u64 % 2)), "{line}");
        assert!(line["text"].is_string() && line["length"].as_u64().is_some_and(|l| (1..=8).contains(&l)), "{line}");
    }
    let mean_len = lines.iter().map(|l| l["length"].as_f64().unwrap()).sum::<f64>() / 40.0;
    assert!((mean_len - f(&report["overall"]["mean_length"])).abs() < 1e-12);
    let truncated = lines.iter().filter(|l| l["truncated"] == true).count() as f64 / 40.0;
    assert!((truncated - f(&report["overall"]["truncation_rate"])).abs() < 1e-12);
    assert!(!std::fs::read_dir(&out).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")), "no temp file left");

    // same seed, same samples
    let again = dir.join("b");
    run(&again);
    assert_eq!(read_json(&again.join("eval.json"))["overall"], report["overall"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `eval --out DIR` holds DIR's run lock while it runs: a second eval into a held folder is refused
/// before any work, naming the folder and the holder, and writes nothing; the lock is released (its
/// file gone) when an eval ends, so the next one runs.
#[test]
fn eval_out_is_locked_while_an_eval_runs() {
    let model = toy_model_dir("eval-lock-model", 5);
    let out = scratch_dir("eval-lock-out");
    let args = ["eval", "--model", &s(&model), "--limit", "2", "--n", "1", "--max-new-tokens", "4", "--out", &s(&out), "--device", "cpu"];
    let (held, _) = drpo::runlock::RunLock::acquire(&out, "drpo eval").unwrap();
    let (ok, _, stderr) = run_drpo(&args);
    assert!(!ok, "an eval into a locked folder must fail");
    let pid = format!("pid {}", std::process::id());
    for needle in [s(&out).as_str(), "in use by another process", pid.as_str(), drpo::runlock::LOCK_FILE] {
        assert!(stderr.contains(needle), "the refusal should name `{needle}`:\n{stderr}");
    }
    assert!(!out.join("eval.json").exists() && !out.join("responses.jsonl").exists(), "a refused eval writes nothing");
    drop(held);
    let (ok, _, stderr) = run_drpo(&args);
    assert!(ok, "eval after the lock was released:\n{stderr}");
    assert!(out.join("eval.json").exists(), "the report");
    assert!(!out.join(drpo::runlock::LOCK_FILE).exists(), "eval releases its lock when it ends");
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_dir_all(&model).unwrap();
}

#[test]
fn eval_toy_task_on_a_random_model() {
    let model = toy_model_dir("eval-toy-model", 3);
    let out = scratch_dir("eval-toy-out");
    let (ok, _, stderr) = run_drpo(&["eval", "--model", &s(&model), "--limit", "8", "--n", "2", "--out", &s(&out), "--device", "cpu"]);
    assert!(ok, "toy eval failed:\n{stderr}");
    let report = read_json(&out.join("eval.json"));
    // without --max-new-tokens the toy budget applies: the longest trace of the SFT config's levels
    let sft = drpo::sft::SftConfig::default();
    let budget = drpo::task::trace_tokens(sft.max_level, 3 * sft.max_level + 8);
    assert_eq!(report["options"]["max_new_tokens"], budget);
    check_stats(&report["overall"], 8, 2, budget);
    assert!(report["overall"]["mean_necessary_steps"].is_number(), "the toy verifier counts steps");
    // levels are dealt round-robin: 8 questions of levels 1..=4 are 2 of each
    let levels: Vec<&str> = report["per_level"].as_array().unwrap().iter().map(|l| l["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["1", "2", "3", "4"]);
    for l in report["per_level"].as_array().unwrap() {
        check_stats(l, 2, 2, budget);
    }
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_dir_all(&model).unwrap();
}

#[test]
fn grade_cli() {
    let dir = scratch_dir("grade-cli");
    let input = dir.join("cases.json");
    // verdicts by SPEC §8.2: the answer is the last \boxed{} after `</think>` (required unless --no-think)
    let cases = json!({"cases": [
        {"response": "Let me add. </think> The answer is \\boxed{18}.", "answer": "18"},
        {"response": "</think> \\boxed{17}", "answer": "18"},
        {"response": "no think block \\boxed{18}", "answer": 18},
        {"response": "</think> \\boxed{\\frac{1}{2}}", "answer": ["0.5", "1/2"]},
        {"response": "</think> nothing boxed, 18", "answer": "18"},
    ]});
    std::fs::write(&input, cases.to_string()).unwrap();
    let out = dir.join("verdicts.json");
    let (ok, _, stderr) = run_drpo(&["grade", "--input", &s(&input), "--out", &s(&out)]);
    assert!(ok, "{stderr}");
    assert_eq!(read_json(&out), json!({"verdicts": [true, false, false, true, false]}));
    let (ok, _, stderr) = run_drpo(&["grade", "--input", &s(&input), "--out", &s(&out), "--no-think"]);
    assert!(ok, "{stderr}");
    assert_eq!(read_json(&out), json!({"verdicts": [true, false, true, true, false]}));

    // a case without `response` fails, naming the file and the record
    let bad = dir.join("bad-cases.json");
    std::fs::write(&bad, json!({"cases": [{"response": "x", "answer": "1"}, {"answer": "1"}]}).to_string()).unwrap();
    let (ok, _, stderr) = run_drpo(&["grade", "--input", &s(&bad), "--out", &s(&dir.join("x.json"))]);
    assert!(!ok);
    assert!(stderr.contains(&s(&bad)) && stderr.contains("record 1") && stderr.contains("response"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// max|got − want| / max|want| over every number of two JSON values of the same shape.
fn max_rel_json(got: &Value, want: &Value) -> f64 {
    fn flatten(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Number(n) => out.push(n.as_f64().unwrap()),
            Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
            other => panic!("unexpected {other}"),
        }
    }
    let (mut g, mut w) = (Vec::new(), Vec::new());
    flatten(got, &mut g);
    flatten(want, &mut w);
    assert_eq!(g.len(), w.len(), "shapes differ: {got} vs {want}");
    let scale = w.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let diff = g.iter().zip(&w).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

#[test]
fn objective_cli_matches_the_oracle_fixture() {
    let dir = scratch_dir("objective-cli");
    let input = fixture("qwen2-tiny").join("objectives.json");
    let out = dir.join("out.json");
    let (ok, _, stderr) = run_drpo(&["objective", "--input", &s(&input), "--out", &s(&out)]);
    assert!(ok, "{stderr}");
    let (want, got) = (read_json(&input), read_json(&out));
    let (want, got) = (want["cases"].as_array().unwrap(), got["cases"].as_array().unwrap());
    assert_eq!(got.len(), want.len());
    // the oracle is torch autograd in f64 (tests/objectives.rs uses the same 1e-9 relative bound)
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["name"], w["name"]);
        assert_eq!(g["num_groups_Q"], w["num_groups_Q"]);
        assert_eq!(g["num_tokens"], w["num_tokens"]);
        assert!(max_rel_json(&g["intermediate"]["scores"], &w["intermediate"]["scores"]) <= 1e-9);
        for method in ["disco", "drpo", "grpo"] {
            for (key, wv) in w[method].as_object().unwrap() {
                let e = max_rel_json(&g[method][key], wv);
                println!("{:40} {method:5} {key:15} max_rel {e:.2e}", w["name"].as_str().unwrap());
                assert!(e <= 1e-9, "{} {method}.{key}: max_rel {e:.3e}", w["name"]);
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gradcheck_cli_without_a_model() {
    let (ok, stdout, stderr) = run_drpo(&["gradcheck"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("pass"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

/// A command that must fail: non-zero exit, a one-line `error:` naming `path`, no panic.
fn fails_naming(args: &[&str], path: &Path, words: &[&str]) {
    let (ok, _, stderr) = run_drpo(args);
    assert!(!ok, "drpo {} should have failed", args.join(" "));
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(stderr.contains(&s(path)), "the message should name {}:\n{stderr}", path.display());
    for w in words {
        assert!(stderr.contains(w), "the message should say `{w}`:\n{stderr}");
    }
}

#[test]
fn bad_inputs_fail_with_a_message() {
    let dir = scratch_dir("bad-inputs");
    let model = s(&fixture("qwen2-tiny"));
    let out = s(&dir.join("out"));
    let missing = dir.join("no-such-file.json");
    fails_naming(&["eval", "--model", &model, "--data", &s(&missing), "--device", "cpu", "--out", &out], &missing, &[]);
    fails_naming(&["train", "--model", &model, "--data", &s(&missing), "--device", "cpu", "--out", &out], &missing, &[]);

    // record 1 lacks its answer
    let malformed = dir.join("malformed.json");
    std::fs::write(&malformed, r#"[{"problem": "1 + 1?", "answer": "2"}, {"problem": "2 + 2?"}]"#).unwrap();
    for cmd in ["eval", "train"] {
        fails_naming(&[cmd, "--model", &model, "--data", &s(&malformed), "--device", "cpu", "--out", &out], &malformed, &["record 1", "answer"]);
    }
    // not JSON at all
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "[{\"problem\": ").unwrap();
    fails_naming(&["eval", "--model", &model, "--data", &s(&garbage), "--device", "cpu"], &garbage, &[]);

    // a model folder that does not exist
    let no_model = dir.join("no-model");
    fails_naming(&["eval", "--model", &s(&no_model), "--device", "cpu"], &no_model, &[]);
    // objective cases with a bad record
    let cases = dir.join("cases.json");
    std::fs::write(&cases, r#"{"cases": [{"name": "x", "responses": []}]}"#).unwrap();
    fails_naming(&["objective", "--input", &s(&cases), "--out", &out], &cases, &["record 0"]);
    fails_naming(&["objective", "--input", &s(&missing), "--out", &out], &missing, &[]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Batches never exceed --batch-size, even with more samples per problem than the batch holds, and
/// the samples do not depend on the batch size (row r draws from stream r).
#[test]
fn eval_batches_respect_the_batch_size() {
    let model_dir = toy_model_dir("eval-batches-model", 12);
    let tok = drpo::tokenizer::Tokenizer::from_dir(&model_dir).unwrap();
    let model = drpo::model::Model::<f32>::load(&model_dir).unwrap();
    let task = drpo::sft::SftConfig::default().task();
    let env = drpo::rl::env::ToyEnv::new(drpo::task::generate_split(&task, drpo::task::Split::Eval, 5).unwrap(), &tok).unwrap();
    let run = |batch_size: usize| {
        let opts = drpo::eval::EvalOptions {
            n_samples: 5,
            max_new_tokens: 16,
            sampling: drpo::sampling::SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0 },
            seed: 4,
            batch_size,
        };
        let mut steps = Vec::new();
        let mut last = 0;
        let mut rows = Vec::new();
        let (report, graded) = drpo::eval::eval_env(&model, &env, &tok, &opts, &mut |records, done, total| {
            assert_eq!(total, 25);
            assert_eq!(records.len(), done - last, "one record per response of the batch");
            steps.push(done - last);
            last = done;
            rows.extend(records.iter().map(|r| (r.problem, r.sample, r.correct, r.length, r.truncated)));
            Ok(())
        })
        .unwrap();
        // records come in row order (problem-major), agreeing with the graded list
        let want: Vec<_> = graded.iter().enumerate().map(|(r, g)| (r / 5, r % 5, g.correct, g.length, g.truncated)).collect();
        assert_eq!(rows, want);
        (report, graded, steps)
    };
    let (whole, graded_whole, steps_whole) = run(64);
    assert_eq!(steps_whole, [25]);
    for batch_size in [2, 3, 7] {
        let (report, graded, steps) = run(batch_size);
        println!("batch {batch_size}: {steps:?}");
        // n = 5 > batch size: the old code generated 5 sequences per batch whatever --batch-size said
        assert!(steps.iter().all(|&s| s <= batch_size), "batch {batch_size}: {steps:?}");
        assert_eq!(steps.iter().sum::<usize>(), 25);
        let key = |g: &[drpo::eval::Graded]| g.iter().map(|x| (x.length, x.correct, x.truncated, x.steps)).collect::<Vec<_>>();
        assert_eq!(key(&graded), key(&graded_whole), "batch {batch_size}: samples changed");
        assert_eq!(report.overall, whole.overall);
    }
    std::fs::remove_dir_all(&model_dir).unwrap();
}

#[test]
fn eval_limit_zero_is_an_error() {
    let model = fixture("qwen2-tiny");
    let (ok, _, stderr) = run_drpo(&["eval", "--model", &s(&model), "--data", &s(&gsm8k_path()), "--limit", "0", "--device", "cpu"]);
    // the rule of every count option (NOTES: Guarantees)
    assert!(!ok && stderr.contains("'--limit <LIMIT>'") && stderr.contains("must be a positive integer (1 or more), got 0"), "{stderr}");
}

/// `drpo logprobs`: the CPU by default (exact numbers), f64 refused on the GPU, out-of-range ids
/// named with the file and the sequence.
#[test]
fn logprobs_cli_checks() {
    let dir = scratch_dir("logprobs-cli");
    let model = fixture("qwen2-tiny");
    let input = dir.join("in.json");
    let out = dir.join("out.json");
    std::fs::write(&input, r#"{"sequences": [[1, 2, 3], [4, 5]]}"#).unwrap();
    let (ok, _, stderr) = run_drpo(&["logprobs", "--model", &s(&model), "--input", &s(&input), "--out", &s(&out), "--dtype", "f64"]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("note: running on the CPU"), "the default device is the CPU, no fallback notice: {stderr}");
    // f64 numbers equal the library's f64 CPU scoring bit for bit
    let m = drpo::model::Model::<f64>::load(&model).unwrap();
    let want = m.score(&[&[1, 2, 3], &[4, 5]], 1.0, false).unwrap().logp;
    let got: Vec<Vec<f64>> = serde_json::from_value(read_json(&out)["logprobs"].clone()).unwrap();
    assert_eq!(got, want);
    let (ok, _, stderr) = run_drpo(&["logprobs", "--model", &s(&model), "--input", &s(&input), "--out", &s(&out), "--dtype", "f64", "--device", "gpu"]);
    assert!(!ok && stderr.contains("f64 runs on the CPU only"), "{stderr}");
    let vocab = drpo::config::ModelConfig::from_dir(&model).unwrap().vocab_size;
    std::fs::write(&input, format!(r#"{{"sequences": [[1, 2], [3, {vocab}, 4]]}}"#)).unwrap();
    let (ok, _, stderr) = run_drpo(&["logprobs", "--model", &s(&model), "--input", &s(&input), "--out", &s(&out)]);
    assert!(!ok && stderr.contains("in.json") && stderr.contains("record 1") && stderr.contains(&format!("token id {vocab} at position 1")), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `drpo inspect` reports the memory of a given batch and lengths, capped by the context by default,
/// the eos ids of every source, and the device memory of a DRPO step.
#[test]
fn inspect_reports_a_commands_memory() {
    let model = fixture("qwen2-tiny");
    let (ok, stdout, stderr) = run_drpo(&["inspect", "--model", &s(&model)]);
    assert!(ok, "{stderr}");
    let ctx = drpo::config::ModelConfig::from_dir(&model).unwrap().max_position_embeddings;
    // defaults: prompt min(1024, ctx/2), new tokens the rest of the context
    let (p, n) = (1024.min(ctx / 2), 8192.min(ctx - 1024.min(ctx / 2)));
    assert!(stdout.contains(&format!("8 sequences of {p} + {n} tokens")), "{stdout}");
    assert!(!stdout.contains("exceed the context"), "{stdout}");
    for source in ["generation_config", "tokenizer_config", "config", "→ used"] {
        assert!(stdout.contains(source), "{source}: {stdout}");
    }
    // the device memory of a DRPO step, planned for --device-gib (tests/memory.rs checks the numbers)
    for line in ["a DRPO step on a 80 GiB GPU", "resident", "recorded forward", "KV cache", "training chunk of", "fits", "rounds of"] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    let (ok, small, _) = run_drpo(&["inspect", "--model", &s(&model), "--device-gib", "1"]);
    assert!(ok && small.contains("a DRPO step on a 1 GiB GPU"), "{small}");
    let (ok, stdout, _) = run_drpo(&["inspect", "--model", &s(&model), "--batch", "3", "--prompt-tokens", "100", "--new-tokens", "1000"]);
    assert!(ok);
    assert!(stdout.contains("3 sequences of 100 + 1000 tokens") && stdout.contains("exceed the context"), "{stdout}");
    // the estimate grows with the batch
    let gib = |out: &str, what: &str| -> f64 {
        let line = out.lines().find(|l| l.contains(what)).unwrap();
        line.split(": ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()
    };
    let (_, one, _) = run_drpo(&["inspect", "--model", &s(&model), "--batch", "1", "--prompt-tokens", "10", "--new-tokens", "10"]);
    let (_, many, _) = run_drpo(&["inspect", "--model", &s(&model), "--batch", "64", "--prompt-tokens", "10", "--new-tokens", "10"]);
    assert!(gib(&many, "generate / eval") > gib(&one, "generate / eval"), "{one}\n{many}");
}
