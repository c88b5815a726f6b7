//! Shared test helpers: fixture paths, seeded randomness, reading f64 reference tensors, comparisons.
#![allow(dead_code)]

use rand::{rngs::StdRng, SeedableRng};
use drpo::rl::env::{Environment, ToyEnv, Verdict};
use drpo::tokenizer::Tokenizer;
use std::path::PathBuf;

/// Folder of the vendored fixtures: `$DRPO_TEST_DATA` or `tests/fixtures`.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("DRPO_TEST_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

pub fn fixture(name: &str) -> PathBuf {
    data_dir().join(name)
}

/// The vendored fixtures (tests/fixtures/*/README.md). `qwen2-odd` (made by tests/hf/make_fixture.py) differs
/// from the two tiny ones on every config axis: transformers-4 config layout, 3 layers, GQA 3:1, explicit head_dim,
/// widths not powers of two, rope theta 1e6, eps 1e-5, untied, bf16, sharded, vocab larger than the tokenizer.
pub const FIXTURES: [&str; 3] = ["qwen2-tiny", "qwen2-tiny-mqa", "qwen2-odd"];

/// A seeded RNG; the seed is printed and `TEST_SEED=<n>` replays it.
pub fn rng(test: &str) -> StdRng {
    let seed = match std::env::var("TEST_SEED") {
        Ok(s) => s.parse().expect("TEST_SEED must be an integer"),
        Err(_) => rand::random::<u64>(),
    };
    println!("{test}: TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// A reference tensor (F64 or I64) of a safetensors file, as f64 values and its shape.
pub fn read_tensor(path: &std::path::Path, name: &str) -> (Vec<f64>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap_or_else(|_| panic!("{name} missing in {}", path.display()));
    let vals = match t.dtype() {
        safetensors::Dtype::F64 => t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
        safetensors::Dtype::I64 => t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        safetensors::Dtype::F32 => t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        d => panic!("unexpected dtype {d:?}"),
    };
    (vals, t.shape().to_vec())
}

/// Asserts max|got − want| / max|want| ≤ tol, printing the error and the worst element.
pub fn assert_rel(what: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = drpo::check::max_rel(got, want);
    let (i, we, g, w) = drpo::check::worst(got, want, 1e-12);
    println!("{what}: max_rel = {e:.3e} (worst #{i}: got {g:.12e}, want {w:.12e}, rel {we:.2e})");
    assert!(e <= tol, "{what}: max_rel {e:.3e} > {tol:.1e}");
}

/// A fresh, empty folder under the system temp dir, unique to this process and `name`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drpo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The vendored GSM8K test set (`data/math-eval/gsm8k.json`).
pub fn gsm8k_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/math-eval/gsm8k.json")
}

/// Writes the first `n` GSM8K records (in file order) whose chat-templated prompt, tokenized with the
/// tokenizer of `model_dir`, leaves room for `max_new_tokens` within the model's
/// max_position_embeddings, as a JSON array file at `out`. Returns the indices taken.
/// (The tiny fixture has 256 positions; several of GSM8K's first problems alone are longer.)
pub fn write_gsm8k_slice(model_dir: &std::path::Path, n: usize, max_new_tokens: usize, out: &std::path::Path) -> Vec<usize> {
    let tok = drpo::tokenizer::Tokenizer::from_dir(model_dir).unwrap();
    let max_pos = drpo::config::ModelConfig::from_dir(model_dir).unwrap().max_position_embeddings;
    let records: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(gsm8k_path()).unwrap()).unwrap();
    let mut taken = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let problem = r["problem"].as_str().unwrap();
        let chat = tok
            .apply_chat_template(&[drpo::tokenizer::Message::user(drpo::rl::grader::math_prompt(problem))], true)
            .unwrap();
        if tok.encode(&chat).unwrap().len() + max_new_tokens <= max_pos {
            taken.push(i);
            if taken.len() == n {
                break;
            }
        }
    }
    assert_eq!(taken.len(), n, "GSM8K has fewer than {n} problems short enough for {}", model_dir.display());
    let slice: Vec<&serde_json::Value> = taken.iter().map(|&i| &records[i]).collect();
    std::fs::write(out, serde_json::to_string(&slice).unwrap()).unwrap();
    taken
}

/// Runs the `drpo` binary; returns (exit success, stdout, stderr), and asserts it did not panic.
pub fn run_drpo(args: &[&str]) -> (bool, String, String) {
    let (code, stdout, stderr) = drpo_exit(args);
    (code == 0, stdout, stderr)
}

/// Runs the `drpo` binary; returns (exit code, stdout, stderr). Asserts that it neither panicked nor
/// died of a signal (an abort): every failure must be an exit code with a message.
pub fn drpo_exit(args: &[&str]) -> (i32, String, String) {
    drpo_exit_within(args, std::time::Duration::from_secs(600))
}

/// [`drpo_exit`], failing the test (and killing the process) when it runs longer than `limit`: a
/// hang is a bug like a panic.
pub fn drpo_exit_within(args: &[&str], limit: std::time::Duration) -> (i32, String, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_drpo")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // drain both pipes while waiting, so a chatty child never blocks on a full pipe
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let (out, err) = (drain(Box::new(child.stdout.take().unwrap())), drain(Box::new(child.stderr.take().unwrap())));
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("drpo {} ran for more than {limit:?}: a hang (killed)", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    println!("$ drpo {}\n-> {status:?}\n{stdout}\n{stderr}", args.join(" "));
    assert!(!stderr.contains("panicked"), "drpo {} panicked:\n{stderr}", args.join(" "));
    let code = status.code().unwrap_or_else(|| panic!("drpo {} was killed by a signal ({status:?}):\n{stderr}", args.join(" ")));
    (code, stdout, stderr)
}

/// One tensor of a safetensors file: (name, dtype, shape, bytes).
pub type RawTensor = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// All tensors of a safetensors file, sorted by name.
pub fn read_tensors(path: &std::path::Path) -> Vec<RawTensor> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes `ts` as a safetensors file (no metadata).
pub fn write_tensors(path: &std::path::Path, ts: &[RawTensor]) {
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        ts.iter().map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None::<std::collections::HashMap<String, String>>).unwrap()).unwrap();
}

/// A fresh toy model folder: the task tokenizer and a random model of the default SFT config's shape
/// (init std 0.02), saved in f32.
pub fn toy_model_dir(name: &str, seed: u64) -> PathBuf {
    let dir = scratch_dir(name);
    drpo::task::write_task_tokenizer(&dir).unwrap();
    let tok = drpo::tokenizer::Tokenizer::from_dir(&dir).unwrap();
    let model = drpo::model::Model::<f32>::random(drpo::sft::SftConfig::default().model_config(&tok), seed, 0.02);
    drpo::weights::save_params(&dir, &model.cfg, &model.layout, &model.params, drpo::weights::SaveDtype::F32).unwrap();
    dir
}

/// The first `n` problems of the toy task's training split, tokenized.
pub fn toy_env(tok: &Tokenizer, n: usize) -> ToyEnv {
    let task = drpo::sft::SftConfig::default().task();
    ToyEnv::new(drpo::task::generate_split(&task, drpo::task::Split::Train, n).unwrap(), tok).unwrap()
}

/// The toy prompts with a verifier that calls a response correct on a hash of its text: a random
/// model gets mixed groups, so the objectives have gradients and the weights move (a random model
/// never solves the real toy task, which would leave every group invalid and the weights still).
pub struct CoinFlipEnv(pub ToyEnv);

impl Environment for CoinFlipEnv {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn prompt(&self, i: usize) -> &[u32] {
        self.0.prompt(i)
    }
    fn level(&self, i: usize) -> Option<String> {
        self.0.level(i)
    }
    fn grade(&self, i: usize, response: &str) -> Verdict {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ i as u64;
        for &b in response.as_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Verdict { correct: (h >> 17).is_multiple_of(2), steps: None }
    }
}
