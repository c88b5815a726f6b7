//! Nothing wrong ever exits 0: one test per class of bad input, each built here in a scratch folder and
//! fed to the `drpo` binary. Every failure must be an exit code (no panic, no abort: `drpo_exit`
//! asserts both) with a message that names the file, tensor, field or record, and nothing that should
//! not be written is written. NOTES.md ("Guarantees") lists what each test holds the code to.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A scratch copy of a fixture folder (every file).
fn copy_fixture(name: &str, test: &str) -> PathBuf {
    let dir = scratch_dir(test);
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

/// Runs drpo, expects exit code `code` and every word of `words` in stderr; returns stderr.
fn fails(args: &[&str], code: i32, words: &[&str]) -> String {
    let (got, _, stderr) = drpo_exit(args);
    assert_eq!(got, code, "drpo {}: exit {got}, expected {code}\n{stderr}", args.join(" "));
    for w in words {
        assert!(stderr.contains(w), "drpo {}: stderr lacks {w:?}:\n{stderr}", args.join(" "));
    }
    stderr
}

fn remove(dirs: &[&Path]) {
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Rewrites one tensor's raw little-endian element `index` of a safetensors file.
fn poke(file: &Path, tensor: &str, index: usize, bytes: &[u8]) {
    let mut ts = read_tensors(file);
    let t = ts.iter_mut().find(|t| t.0 == tensor).unwrap_or_else(|| panic!("{tensor} not in {}", file.display()));
    let w = bytes.len();
    t.3[index * w..(index + 1) * w].copy_from_slice(bytes);
    write_tensors(file, &ts);
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn sequences_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("sequences.json");
    std::fs::write(&p, text).unwrap();
    p
}

/// A toy base model made by `drpo sft --full-only-steps 0 --steps 0` (the task tokenizer, an untrained model).
fn toy_base(test: &str) -> PathBuf {
    let dir = scratch_dir(test);
    let (code, _, stderr) = drpo_exit(&["sft", "--out", s(&dir), "--full-only-steps", "0", "--steps", "0"]);
    assert_eq!(code, 0, "{stderr}");
    dir
}

/// NaN or ±inf in any tensor, F32 or BF16, sharded or not, is refused at load: the error names the
/// file, the tensor and the element; nothing is written. (`inspect` reads headers only: not here.)
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let dir = copy_fixture("qwen2-tiny", "nonfinite-f32");
    let name = "model.layers.0.self_attn.k_proj.weight"; // [32, 64]
    poke(&dir.join("model.safetensors"), name, 2 * 64 + 5, &f32::NAN.to_le_bytes());
    let input = sequences_file(&dir, r#"{"sequences": [[1, 2, 3]]}"#);
    let out = dir.join("out.json");
    let words = ["model.safetensors", name, "element [2, 5]", "NaN"];
    fails(&["logprobs", "--model", s(&dir), "--input", s(&input), "--out", s(&out)], 1, &words);
    fails(&["logprobs", "--model", s(&dir), "--input", s(&input), "--out", s(&out), "--dtype", "f64"], 1, &words);
    fails(&["generate", "--model", s(&dir), "--prompt-ids", "1,2", "--device", "cpu"], 1, &words);
    fails(&["gradcheck", "--model", s(&dir)], 1, &words);
    assert!(!out.exists());
    remove(&[&dir]);

    // bf16, sharded: +inf in the second shard
    let dir = copy_fixture("qwen2-odd", "nonfinite-bf16");
    let shard = dir.join("model-00002-of-00002.safetensors");
    let (tensor, dtype) = read_tensors(&shard).into_iter().map(|t| (t.0, t.1)).find(|t| t.0.ends_with("up_proj.weight")).unwrap();
    assert_eq!(dtype, safetensors::Dtype::BF16);
    poke(&shard, &tensor, 7, &half::bf16::INFINITY.to_bits().to_le_bytes());
    let input = sequences_file(&dir, r#"{"sequences": [[1, 2, 3]]}"#);
    fails(&["logprobs", "--model", s(&dir), "--input", s(&input), "--out", s(&out)], 1, &["model-00002-of-00002.safetensors", &tensor, "inf"]);
    remove(&[&dir]);

    // an F64 tensor beyond f32's range: finite in the file, infinite once converted
    let dir = copy_fixture("qwen2-tiny", "nonfinite-f64");
    let file = dir.join("model.safetensors");
    let mut ts = read_tensors(&file);
    let t = ts.iter_mut().find(|t| t.0 == "model.norm.weight").unwrap();
    let mut values: Vec<f64> = t.3.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect();
    values[3] = 1e300;
    (t.1, t.3) = (safetensors::Dtype::F64, values.iter().flat_map(|v| v.to_le_bytes()).collect());
    write_tensors(&file, &ts);
    let input = sequences_file(&dir, r#"{"sequences": [[1, 2, 3]]}"#);
    fails(&["logprobs", "--model", s(&dir), "--input", s(&input), "--out", s(&out)], 1, &["model.norm.weight", "element [3]", "overflows f32"]);
    remove(&[&dir]);
}

/// Finite weights whose numbers overflow: no command writes or prints the NaN that results.
#[test]
fn overflowing_results_are_never_written() {
    let dir = copy_fixture("qwen2-tiny", "overflow");
    let file = dir.join("model.safetensors");
    for i in 0..64 {
        poke(&file, "model.norm.weight", i, &3e38f32.to_le_bytes());
    }
    let input = sequences_file(&dir, r#"{"sequences": [[1, 2, 3], [4, 5]]}"#);
    let out = dir.join("out.json");
    fails(&["logprobs", "--model", s(&dir), "--input", s(&input), "--out", s(&out)], 1, &["out.json", "NaN at `logprobs[0][0]`"]);
    assert!(!out.exists(), "nothing is written");
    let stderr = fails(&["generate", "--model", s(&dir), "--prompt-ids", "1,2", "--json", "--device", "cpu"], 1, &["logits", "NaN"]);
    assert!(!stderr.contains("generated_ids"));
    remove(&[&dir]);
}

/// One rule per option, whatever the command: every count refuses 0 with the same words; temperature
/// and top-p the same way; `generate --chat` with `--prompt-ids` is a conflict, not ignored.
#[test]
fn options_have_one_rule_across_commands() {
    let counts: [(&[&str], &str); 18] = [
        (&["inspect", "--model", "m"], "--batch"),
        (&["inspect", "--model", "m"], "--device-gib"),
        (&["inspect", "--model", "m"], "--prompt-tokens"),
        (&["inspect", "--model", "m"], "--new-tokens"),
        (&["generate", "--model", "m", "--prompt-ids", "1"], "--max-new-tokens"),
        (&["gradcheck"], "--samples"),
        (&["eval", "--model", "m"], "--n"),
        (&["eval", "--model", "m"], "--batch-size"),
        (&["eval", "--model", "m"], "--max-new-tokens"),
        (&["eval", "--model", "m"], "--limit"),
        (&["train", "--model", "m", "--out", "o"], "--max-new-tokens"),
        (&["train", "--model", "m", "--out", "o"], "--limit"),
        (&["train", "--model", "m", "--out", "o"], "--questions-per-step"),
        (&["train", "--model", "m", "--out", "o"], "--group-size"),
        (&["train", "--model", "m", "--out", "o"], "--mini-batch-questions"),
        (&["train", "--model", "m", "--out", "o"], "--chunk-questions"),
        (&["train", "--model", "m", "--out", "o"], "--inner-epochs"),
        (&["train", "--model", "m", "--out", "o"], "--max-prompt-tokens"),
    ];
    // `--opt=value`: clap would read a bare `-3` as a flag
    let with = |cmd: &[&str], opt: &str, value: &str| -> Vec<String> {
        cmd.iter().map(|a| a.to_string()).chain([format!("{opt}={value}")]).collect()
    };
    for (cmd, opt) in counts {
        for (value, words) in [("0", "got 0"), ("-3", "got `-3`"), ("x", "got `x`")] {
            let args = with(cmd, opt, value);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            fails(&args, 2, &[&format!("for '{opt} <"), "must be a positive integer (1 or more)", words]);
        }
    }
    let sampling: [&[&str]; 3] = [&["generate", "--model", "m", "--prompt-ids", "1"], &["eval", "--model", "m"], &["train", "--model", "m", "--out", "o"]];
    for cmd in sampling {
        for (opt, value, words) in [
            ("--temperature", "nan", "must be a finite number ≥ 0"),
            ("--temperature", "-1", "must be a finite number ≥ 0"),
            ("--top-p", "0", "must be in (0, 1]"),
            ("--top-p", "1.5", "must be in (0, 1]"),
        ] {
            let args = with(cmd, opt, value);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            fails(&args, 2, &[words]);
        }
    }
    fails(&["generate", "--model", "m", "--prompt-ids", "1,2", "--chat"], 2, &["--prompt-ids", "cannot be used with", "--chat"]);
    // temperature 0 is greedy where a command samples, but training divides by it: named by train's check
    let base = toy_base("options-base");
    let out = scratch_dir("options-run");
    fails(&["train", "--model", s(&base), "--out", s(&out), "--temperature", "0", "--device", "cpu"], 1, &["temperature"]);
    remove(&[&base, &out]);
}

/// A missing tokenizer.json is reported as missing (generate still prints the ids, `"text": null`), a
/// corrupt one is an error everywhere, inspect included, before anything is printed.
#[test]
fn tokenizer_missing_is_not_corrupt() {
    let dir = copy_fixture("qwen2-tiny", "tokenizer-missing");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let (code, stdout, stderr) = drpo_exit(&["generate", "--model", s(&dir), "--prompt-ids", "1,2", "--max-new-tokens", "3", "--json", "--device", "cpu"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["text"].is_null() && v["generated_ids"].as_array().unwrap().len() == 3, "{stdout}");
    assert!(stderr.contains("no tokenizer.json"), "{stderr}");
    let (code, stdout, _) = drpo_exit(&["inspect", "--model", s(&dir)]);
    assert!(code == 0 && stdout.contains("(no tokenizer.json)"), "{stdout}");
    fails(&["generate", "--model", s(&dir), "--prompt", "hi", "--device", "cpu"], 1, &["no tokenizer.json", "--prompt-ids"]);

    std::fs::write(dir.join("tokenizer.json"), "{\"model\": ").unwrap();
    let words = ["tokenizer.json", "cannot load"];
    fails(&["generate", "--model", s(&dir), "--prompt-ids", "1,2", "--json", "--device", "cpu"], 1, &words);
    let (code, stdout, stderr) = drpo_exit(&["inspect", "--model", s(&dir)]);
    assert!(code == 1 && stdout.is_empty() && words.iter().all(|w| stderr.contains(w)), "{stdout}\n{stderr}");
    remove(&[&dir]);
}

/// `sft` and `train` take and refuse the same settings with the same words; a bad size or an absurd
/// count is an error naming the setting before anything is written; a wrongly typed field in a
/// settings file is named by its path; a loss that goes non-finite stops SFT with no model saved.
#[test]
fn sft_and_train_share_one_validation() {
    let base = toy_base("settings-base");
    assert!(drpo::model::Model::<f32>::load(&base).is_ok(), "sft --steps 0 writes a loadable model");
    let dir = scratch_dir("settings");
    let config = |name: &str, v: serde_json::Value| {
        let p = dir.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (serde_json::json!({"lr": -1.0}), "lr: -1 must be finite and ≥ 0"),
        (serde_json::json!({"hidden_size": 0}), "hidden_size: must be positive"),
        (serde_json::json!({"num_layers": 0}), "num_layers: must be positive"),
        (serde_json::json!({"batch_size": 0}), "batch_size: must be positive"),
        (serde_json::json!({"n_train": 1_000_000_000_000u64}), "n_train"),
        (serde_json::json!({"batch_size": 1_000_000_000u64}), "batch_size"),
        (serde_json::json!({"num_heads": 3}), "num_heads"),
        (serde_json::json!({"hidden_size": 1u64 << 30}), "hidden_size"),
        (serde_json::json!({"lr": "fast"}), "field `lr`"),
        (serde_json::json!({"steps": -2}), "field `steps`"),
    ];
    for (k, (v, words)) in cases.into_iter().enumerate() {
        let file = config(&format!("sft{k}.json"), v.clone());
        let out = dir.join(format!("sft-out{k}"));
        let stderr = fails(&["sft", "--out", s(&out), "--config", s(&file), "--steps", "1"], 1, &[words]);
        assert!(!out.join("model.safetensors").exists() && !out.join("sft_config.json").exists(), "{v}: wrote a model\n{stderr}");
    }
    // the same lr rule, the same words, in train
    let file = config("train-lr.json", serde_json::json!({"lr": -1.0}));
    fails(&["train", "--model", s(&base), "--out", s(&dir.join("run-lr")), "--config", s(&file), "--device", "cpu"], 1, &["lr: -1 must be finite and ≥ 0"]);
    let file = config("train-tau.json", serde_json::json!({"hyper": {"tau": "x"}}));
    fails(&["train", "--model", s(&base), "--out", s(&dir.join("run-tau")), "--config", s(&file), "--device", "cpu"], 1, &["train-tau.json", "field `hyper.tau`"]);
    // a step that diverges: stopped before the update, nothing saved
    let file = config("diverge.json", serde_json::json!({"lr": 1e38, "warmup_steps": 0}));
    let out = dir.join("sft-diverge");
    fails(&["sft", "--out", s(&out), "--config", s(&file), "--steps", "4"], 1, &["NaN at `loss`", "no model was saved"]);
    assert!(!out.join("model.safetensors").exists() && !out.join("sft_config.json").exists());
    assert!(!out.join(drpo::runlock::LOCK_FILE).exists(), "the lock is released on error");
    remove(&[&base, &dir]);
}

fn train_args<'a>(base: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train", "--model", base, "--out", out, "--steps", steps, "--save-every", "1", "--questions-per-step", "4",
        "--mini-batch-questions", "4", "--chunk-questions", "2", "--group-size", "2", "--device", "cpu",
    ]
}

/// Two trainers on one folder: the second is refused naming the first's pid; a lock left by a killed
/// process is taken over with a note.
#[test]
fn run_folder_is_locked() {
    let base = toy_base("lock-base");
    let out = scratch_dir("lock-run");
    // no checkpoint before it is killed, however far a loaded machine lets it get
    let mut args = train_args(s(&base), s(&out), "1000000");
    let save_every = args.iter().position(|a| *a == "--save-every").unwrap() + 1;
    args[save_every] = "1000000";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_drpo"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join(drpo::runlock::LOCK_FILE);
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("command")) {
        assert!(t0.elapsed().as_secs() < 120, "the first trainer never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fails(&args, 1, &["in use by another process", &format!("pid {}", child.id()), "drpo.lock"]);
    child.kill().unwrap(); // SIGKILL: the lock file stays behind with the dead pid
    child.wait().unwrap();
    assert!(lock.exists());
    // start over in the folder (the killed run never saved a checkpoint)
    for f in ["train_config.json", "metrics.jsonl"] {
        let _ = std::fs::remove_file(out.join(f));
    }
    let (code, _, stderr) = drpo_exit(&train_args(s(&base), s(&out), "0"));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("took over the lock") && stderr.contains(&format!("pid {}", child.id())), "{stderr}");
    assert!(!lock.exists(), "released at exit");
    remove(&[&base, &out]);
}

/// A run folder that is neither fresh nor complete, or whose files disagree, is refused with what is
/// missing and a hint; the saved weights and metrics are left as they were.
#[test]
fn resume_refuses_incomplete_or_inconsistent_folders() {
    let base = toy_base("resume-base");
    let done = scratch_dir("resume-done");
    let (code, _, stderr) = drpo_exit(&train_args(s(&base), s(&done), "2"));
    assert_eq!(code, 0, "{stderr}");
    type Break = Box<dyn Fn(&Path)>;
    let state = |f: fn(&mut serde_json::Value)| -> Break { Box::new(move |d: &Path| edit_json(&d.join("checkpoint/trainer_state.json"), f)) };
    let cases: Vec<(&str, Break, &[&str])> = vec![
        ("no-state", Box::new(|d: &Path| std::fs::remove_file(d.join("checkpoint/trainer_state.json")).unwrap()), &["checkpoint/", "no trainer_state.json", "hint"]),
        ("no-config", Box::new(|d: &Path| std::fs::remove_file(d.join("train_config.json")).unwrap()), &["no train_config.json", "hint"]),
        ("short-metrics", Box::new(|d: &Path| {
            let m = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
            std::fs::write(d.join("metrics.jsonl"), format!("{}\n", m.lines().next().unwrap())).unwrap();
        }), &["metrics.jsonl", "steps 1..2 are missing"]),
        ("swapped-metrics", Box::new(|d: &Path| {
            let m = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
            let l: Vec<&str> = m.lines().collect();
            std::fs::write(d.join("metrics.jsonl"), format!("{}\n{}\n", l[1], l[0])).unwrap();
        }), &["metrics.jsonl", "holds step 1 where step 0 belongs"]),
        ("step-past", state(|v| v["trainer"]["step"] = 9.into()), &["trainer_state.json", "step 9", "past the run's steps = 2"]),
        ("optimizer-steps", state(|v| v["trainer"]["optimizer_steps"] = 1.into()), &["trainer_state.json", "disagrees with optimizer.step = 2"]),
    ];
    for (name, break_it, words) in cases {
        let dir = scratch_dir(&format!("resume-{name}"));
        for f in ["train_config.json", "metrics.jsonl"] {
            std::fs::copy(done.join(f), dir.join(f)).unwrap();
        }
        std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
        for e in std::fs::read_dir(done.join("checkpoint")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join("checkpoint").join(e.file_name())).unwrap();
        }
        break_it(&dir);
        let before: Vec<Option<Vec<u8>>> = ["checkpoint/model.safetensors", "metrics.jsonl"].iter().map(|f| std::fs::read(dir.join(f)).ok()).collect();
        fails(&train_args(s(&base), s(&dir), "2"), 1, words);
        let after: Vec<Option<Vec<u8>>> = ["checkpoint/model.safetensors", "metrics.jsonl"].iter().map(|f| std::fs::read(dir.join(f)).ok()).collect();
        assert!(before == after, "{name}: the refused resume changed the saved weights or metrics");
        remove(&[&dir]);
    }
    // the intact run resumes (nothing left to do)
    let (code, _, stderr) = drpo_exit(&train_args(s(&base), s(&done), "2"));
    assert_eq!(code, 0, "{stderr}");
    remove(&[&base, &done]);
}

/// A config that cannot match its file fails from the headers, naming the tensor, before anything is
/// allocated (vocab 2^31 on a tiny checkpoint aborted logprobs and gradcheck); counts are capped.
#[test]
fn absurd_sizes_fail_before_allocating() {
    let dir = copy_fixture("qwen2-tiny", "absurd-vocab");
    edit_json(&dir.join("config.json"), |v| v["vocab_size"] = (1u64 << 31).into());
    let input = sequences_file(&dir, r#"{"sequences": [[1, 2, 3]]}"#);
    let words = ["model.embed_tokens.weight", "[384, 64]", "[2147483648, 64]"];
    fails(&["inspect", "--model", s(&dir)], 1, &words);
    fails(&["logprobs", "--model", s(&dir), "--input", s(&input), "--out", s(&dir.join("o.json"))], 1, &words);
    fails(&["gradcheck", "--model", s(&dir)], 1, &words);
    fails(&["generate", "--model", s(&dir), "--prompt-ids", "1", "--device", "cpu"], 1, &words);
    fails(&["gradcheck", "--samples", "10001"], 1, &["--samples 10001", "1..=10000"]);
    let base = toy_base("absurd-base");
    fails(&["eval", "--model", s(&base), "--limit", "2000000", "--device", "cpu"], 1, &["at most 1048576"]);
    remove(&[&dir, &base]);
}

/// `inspect` is the checkpoint doctor: on a bad checkpoint it fails with the very error loading gives.
#[test]
fn inspect_fails_exactly_as_loading() {
    type Edit = Box<dyn Fn(&Path)>;
    let drop_tensor = |name: &'static str| -> Edit {
        Box::new(move |d: &Path| {
            let f = d.join("model.safetensors");
            let ts: Vec<RawTensor> = read_tensors(&f).into_iter().filter(|t| t.0 != name).collect();
            write_tensors(&f, &ts);
        })
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("missing", drop_tensor("model.layers.1.mlp.up_proj.weight"), "model.layers.1.mlp.up_proj.weight"),
        ("misshaped", Box::new(|d: &Path| {
            let f = d.join("model.safetensors");
            let mut ts = read_tensors(&f);
            let t = ts.iter_mut().find(|t| t.0 == "model.norm.weight").unwrap();
            (t.2, t.3) = (vec![32], t.3[..128].to_vec());
            write_tensors(&f, &ts);
        }), "model.norm.weight"),
        ("surplus", Box::new(|d: &Path| edit_json(&d.join("config.json"), |v| v["num_hidden_layers"] = 1.into())), "model.layers.1."),
        ("vocab", Box::new(|d: &Path| edit_json(&d.join("config.json"), |v| v["vocab_size"] = 400.into())), "model.embed_tokens.weight"),
    ];
    for (name, edit, tensor) in cases {
        let dir = copy_fixture("qwen2-tiny", &format!("doctor-{name}"));
        edit(&dir);
        let stderr = fails(&["inspect", "--model", s(&dir)], 1, &[tensor]);
        let load = drpo::model::Model::<f32>::load(&dir).expect_err(name);
        assert_eq!(stderr.trim(), format!("error: {load}"), "{name}: inspect and loading disagree");
        remove(&[&dir]);
    }
}

/// Errors name the record; a missing NVRTC or GPU gets a true hint, and `--device gpu` fails before any work.
#[test]
fn messages_name_the_culprit() {
    let dir = scratch_dir("messages");
    let input = sequences_file(&dir, r#"{"sequences": [[1, 2], 7]}"#);
    let stderr = fails(&["logprobs", "--model", s(&fixture("qwen2-tiny")), "--input", s(&input), "--out", s(&dir.join("o.json"))], 1, &["record 1", "list of token ids"]);
    assert!(!stderr.contains("{i}"), "{stderr}");
    // an empty reference answer: drpo grade and a dataset name the record
    let cases = dir.join("cases.json");
    std::fs::write(&cases, r#"{"cases": [{"response": "</think> \\boxed{1}", "answer": "1"}, {"response": "</think> \\boxed{}", "answer": ""}]}"#).unwrap();
    fails(&["grade", "--input", s(&cases), "--out", s(&dir.join("v.json"))], 1, &["cases.json", "record 1", "empty answer"]);
    let data = dir.join("data.json");
    std::fs::write(&data, r#"[{"problem": "1+1?", "answer": "2"}, {"problem": "?", "answer": " "}]"#).unwrap();
    fails(&["eval", "--model", s(&fixture("qwen2-tiny")), "--data", s(&data), "--device", "cpu"], 1, &["data.json", "record 1", "empty answer"]);

    // without NVRTC on the library path, `drpo kernels` says what it needs (not a --device it lacks)
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drpo")).arg("kernels").env_remove("LD_LIBRARY_PATH").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    if !out.status.success() {
        assert!(stderr.contains("NVRTC") && !stderr.contains("--device"), "{stderr}");
    }
    // --device gpu on a machine without one: refused before any folder is made
    if drpo::gpu::Gpu::new(0).is_err() {
        let demo = dir.join("demo");
        fails(&["demo", "--quick", "--device", "gpu", "--out", s(&demo)], 1, &["no usable device"]);
        assert!(!demo.exists(), "demo worked before failing");
        let run = dir.join("run");
        fails(&["train", "--model", s(&fixture("qwen2-tiny")), "--out", s(&run), "--device", "gpu"], 1, &["no usable device"]);
        assert!(!run.exists());
    } else {
        println!("SKIP the --device gpu refusal: a GPU is present");
    }
    remove(&[&dir]);
}
