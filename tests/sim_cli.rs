//! `--device sim` through the command line, against the CPU path within the bf16 GPU model's bounds
//! (`drpo logprobs`, `drpo generate`), the plain error without a C++ compiler, and the CUDA driver
//! floor: a driver older than CUDA 13.0 is "no device" naming its version (a fake libcuda built here
//! stands in for an old driver), never a panic.

mod gpu_common;
use gpu_common::*;
use std::path::Path;
use std::process::Command;

fn drpo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_drpo"))
}

/// (exit success, stdout, stderr)
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("the drpo binary runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn fixture_sequences(dir: &Path) -> Vec<Vec<u32>> {
    let (ids, shape) = read_tensor(&dir.join("reference.safetensors"), "input_ids");
    let (lens, _) = read_tensor(&dir.join("reference.safetensors"), "lengths");
    (0..shape[0]).map(|b| ids[b * shape[1]..b * shape[1] + lens[b] as usize].iter().map(|&x| x as u32).collect()).collect()
}

#[test]
fn logprobs_on_the_simulated_device_match_the_cpu() -> drpo::Result<()> {
    if devices("cli_logprobs_sim").iter().all(|g| !g.is_simulated()) {
        return Ok(());
    }
    let dir = scratch_dir("cli-logprobs-sim");
    for name in ["qwen2-tiny", "qwen2-odd"] {
        let model = fixture(name);
        let seqs = fixture_sequences(&model);
        let input = dir.join(format!("{name}-in.json"));
        std::fs::write(&input, serde_json::json!({ "sequences": seqs }).to_string()).unwrap();
        let out = dir.join(format!("{name}-out.json"));
        let (ok, _, err) = run(drpo().args(["logprobs", "--device", "sim", "--model"]).arg(&model).arg("--input").arg(&input).arg("--out").arg(&out));
        assert!(ok, "{name}: {err}");
        let got: Vec<f64> = drpo::error::read_json(&out)?["logprobs"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect();
        // the engine's bf16 model against the f64 CPU model on the same bf16 weights: the model bound
        let cpu = drpo::model::Model::<f32>::load(&model)?;
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let want: Vec<f64> = on_bf16_weights(&cpu).score(&refs, 1.0, false)?.logp.concat();
        assert_close(&format!("{name}: drpo logprobs --device sim"), &got, &want, chain(BF16_MODEL));
        // and the default CPU path (f32 on the checkpoint's weights) agrees within the same bound
        let (ok, _, err) = run(drpo().args(["logprobs", "--model"]).arg(&model).arg("--input").arg(&input).arg("--out").arg(&out));
        assert!(ok, "{name}: {err}");
        let cpu_out: Vec<f64> = drpo::error::read_json(&out)?["logprobs"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect();
        assert_close(&format!("{name}: --device sim vs --device cpu"), &got, &cpu_out, chain(BF16_MODEL));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `drpo gradcheck --device sim`: the table of the device's f32 gradient against the CPU's f64 one,
/// every tensor passing; `--device auto` is refused (the two checks answer different questions).
#[test]
fn gradcheck_on_the_simulated_device() {
    if devices("cli_gradcheck_sim").iter().all(|g| !g.is_simulated()) {
        return;
    }
    let (ok, out, err) = run(drpo().args(["gradcheck", "--device", "sim", "--seed", "3"]));
    println!("{out}");
    assert!(ok, "{err}");
    let n = drpo::layout::ParamLayout::new(&drpo::gradcheck::random_config(3)).entries.len();
    assert!(out.contains(&format!("all {n} tensors pass")), "{out}");
    assert_eq!(out.lines().filter(|l| l.ends_with("pass")).count(), n, "{out}");
    let (ok, _, err) = run(drpo().args(["gradcheck", "--device", "auto"]));
    assert!(!ok && err.contains("cpu, gpu or sim"), "{err}");
}

#[test]
fn greedy_generation_on_the_simulated_device_follows_the_cpu() -> drpo::Result<()> {
    if devices("cli_generate_sim").iter().all(|g| !g.is_simulated()) {
        return Ok(());
    }
    for name in ["qwen2-tiny", "qwen2-tiny-mqa"] {
        let model = fixture(name);
        let g = drpo::error::read_json(model.join("greedy.json"))?;
        let prompt: Vec<u32> = g["prompt_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let ids = prompt.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
        let generate = |device: &str| {
            let (ok, out, err) = run(drpo().args(["generate", "--json", "--max-new-tokens", "16", "--device", device, "--prompt-ids", &ids, "--model"]).arg(&model));
            assert!(ok, "{name} --device {device}: {err}");
            let v: serde_json::Value = serde_json::from_str(out.trim()).expect("--json prints one JSON object");
            v["generated_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<u32>>()
        };
        let sim = generate("sim");
        let cpu = generate("cpu");
        assert!(!sim.is_empty());
        // each token the simulated bf16 model chose is the f64 CPU model's choice (bf16 weights) wherever
        // that choice is decisive; where the f32 CPU path agrees step by step, the sequences are equal
        let (decisive, close) = decisive_greedy_tokens(&on_bf16_weights(&drpo::model::Model::<f32>::load(&model)?), &prompt, &sim, BF16_MODEL, name)?;
        let same = sim.iter().zip(&cpu).take_while(|(a, b)| a == b).count();
        println!("{name}: sim {sim:?}\n{name}: cpu {cpu:?}\n{name}: {decisive} decisive, {close} within the bf16 error; the first {same} equal");
        assert!(decisive > 0, "{name}: the comparison must not be vacuous");
    }
    Ok(())
}

#[test]
fn no_cpp_compiler_is_a_plain_error() {
    let model = fixture("qwen2-tiny");
    let (ok, _, err) = run(drpo().env("CXX", "/nonexistent/c++").args(["generate", "--prompt-ids", "1,2,3", "--max-new-tokens", "1", "--device", "sim", "--model"]).arg(&model));
    println!("{err}");
    assert!(!ok, "--device sim without a compiler must fail");
    assert!(err.contains("C++ compiler") && err.contains("/nonexistent/c++") && !err.contains("panicked"), "{err}");
}

/// Builds a stand-in libcuda.so.1 whose cuDriverGetVersion answers `version` (None without a C++
/// compiler); the folder goes on LD_LIBRARY_PATH of a child process.
fn fake_driver(version: i32, dir: &Path) -> Option<()> {
    let cxx = std::env::var("CXX").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "g++".into());
    let src = dir.join("fake_cuda.cpp");
    std::fs::write(&src, format!("extern \"C\" int cuDriverGetVersion(int* v) {{ *v = {version}; return 0; }}\n")).unwrap();
    let status = Command::new(&cxx).args(["-shared", "-fPIC", "-o"]).arg(dir.join("libcuda.so.1")).arg(&src).status().ok()?;
    status.success().then_some(())
}

#[test]
fn a_cuda_driver_older_than_13_is_no_device_not_a_panic() {
    let dir = scratch_dir("fake-driver");
    if fake_driver(12040, &dir).is_none() {
        println!("SKIP a_cuda_driver_older_than_13_is_no_device_not_a_panic: no C++ compiler to build the stand-in driver");
        return;
    }
    let model = fixture("qwen2-tiny");
    let with_old_driver = |device: &str| {
        run(drpo().env("LD_LIBRARY_PATH", &dir).args(["generate", "--prompt-ids", "1,2,3", "--max-new-tokens", "2", "--device", device, "--model"]).arg(&model))
    };
    let (ok, _, err) = with_old_driver("gpu");
    println!("--device gpu: {err}");
    assert!(!ok && err.contains("12.4") && err.contains("13.0") && !err.contains("panicked"), "{err}");
    // auto falls back to the CPU, saying why
    let (ok, out, err) = with_old_driver("auto");
    println!("--device auto: {err}");
    assert!(ok && err.contains("12.4") && !out.is_empty(), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
