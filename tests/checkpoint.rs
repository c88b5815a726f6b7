//! Training checkpoints: the saved folder is a model folder, the state round-trips bit for bit,
//! resuming continues exactly, and broken checkpoints give clear errors.

mod common;
use common::*;
use drpo::checkpoint::{load_checkpoint, save_checkpoint, OPTIMIZER_FILE, TOKENIZER_FILES, TRAINER_STATE_FILE};
use drpo::model::Model;
use drpo::optim::{clip_grad_norm, AdamWConfig, AdamWState, LrDecay, LrSchedule};
use drpo::weights::SaveDtype;
use drpo::Error;
use serde_json::json;
use std::path::{Path, PathBuf};

/// A fresh scratch folder under Cargo's per-test temp dir.
fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("checkpoint-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bits(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

/// The batch of step `step`: a pure function of (seed, step), as a trainer's data order would be.
fn batch(seed: u64, step: u64, vocab: usize) -> Vec<Vec<u32>> {
    let u = |stream: u64, k: u64| drpo::rng::uniform(seed, stream, step * 1000 + k);
    (0..3u64)
        .map(|s| {
            let len = 3 + (u(s, 999) * 6.0) as u64;
            (0..len).map(|k| (u(s, k) * vocab as f64) as u32).collect()
        })
        .collect()
}

/// One training step with a fixed loss: L = Σ w[s][t] · logp[s][t] at temperature 0.6, w from the step.
fn train_step(model: &mut Model<f32>, optim: &mut AdamWState<f32>, sched: &LrSchedule, seed: u64) {
    let seqs = batch(seed, optim.step, model.cfg.vocab_size);
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let scored = model.score(&refs, 0.6, true).unwrap();
    let dlogp: Vec<Vec<f32>> = scored
        .logp
        .iter()
        .enumerate()
        .map(|(s, row)| (0..row.len()).map(|t| drpo::rng::uniform(seed ^ 0xabc, s as u64, optim.step * 100 + t as u64) as f32 - 0.5).collect())
        .collect();
    let mut grads = model.score_backward(&scored, &dlogp);
    clip_grad_norm(&mut grads, 1.0);
    let lr = sched.lr_at(optim.step);
    optim.step(&mut model.params, &grads, &AdamWConfig::default(), lr);
}

const SCHED: LrSchedule = LrSchedule { lr: 1e-2, warmup_steps: 2, decay: LrDecay::Cosine { min_lr: 1e-3, total_steps: 6 } };

#[test]
fn saved_folder_is_a_model_folder_and_state_round_trips() {
    for name in FIXTURES {
        let src = fixture(name);
        let mut model = Model::<f32>::load(&src).unwrap();
        let mut optim = AdamWState::new(model.layout.total);
        for _ in 0..2 {
            train_step(&mut model, &mut optim, &SCHED, 7);
        }
        let dir = scratch(&format!("roundtrip-{name}")).join("step_2");
        let trainer = json!({"step": 2, "seed": 7, "metrics": {"loss": [0.5, 0.25]}});
        save_checkpoint(&dir, &model, &optim, &trainer, Some(&src), SaveDtype::F32).unwrap();

        // a plain model folder: Model::load gives the same bits, the config round-trips
        let loaded = Model::<f32>::load(&dir).unwrap();
        assert_eq!(bits(&loaded.params), bits(&model.params), "{name}: weights");
        let mut want_cfg = model.cfg.clone();
        want_cfg.torch_dtype = Some("float32".into());
        assert_eq!(loaded.cfg, want_cfg, "{name}: config");
        for f in TOKENIZER_FILES {
            if src.join(f).is_file() {
                assert_eq!(std::fs::read(dir.join(f)).unwrap(), std::fs::read(src.join(f)).unwrap(), "{name}: {f}");
            }
        }
        assert!(dir.join("tokenizer.json").is_file() && dir.join("generation_config.json").is_file());

        let ck = load_checkpoint::<f32>(&dir).unwrap();
        assert_eq!(bits(&ck.model.params), bits(&model.params));
        assert_eq!(ck.optim.step, 2);
        assert_eq!(bits(&ck.optim.m), bits(&optim.m), "{name}: m");
        assert_eq!(bits(&ck.optim.v), bits(&optim.v), "{name}: v");
        assert_eq!(ck.trainer, trainer);
        // the moments are not trivially zero (the round trip checked something)
        assert!(optim.v.iter().filter(|&&x| x > 0.0).count() > optim.v.len() / 10);

        // f64 state round-trips too
        let m64 = model.cast::<f64>();
        let mut st64 = AdamWState::<f64>::new(m64.layout.total);
        st64.m.iter_mut().enumerate().for_each(|(i, x)| *x = 1.0 / (i as f64 + 3.0));
        st64.step = 11;
        let dir64 = dir.with_file_name("f64");
        save_checkpoint(&dir64, &m64, &st64, &json!(null), None, SaveDtype::F32).unwrap();
        let ck64 = load_checkpoint::<f64>(&dir64).unwrap();
        assert_eq!(ck64.optim, st64);
        assert!(!dir64.join("tokenizer.json").exists());
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }
}

/// N steps straight against k steps, save, load, N − k steps: identical parameter bits.
#[test]
fn resume_is_bit_identical() {
    let (n, k) = (5u64, 2u64);
    for name in FIXTURES {
        let src = fixture(name);
        let start = Model::<f32>::load(&src).unwrap();

        let mut straight = start.clone();
        let mut opt_straight = AdamWState::new(straight.layout.total);
        for _ in 0..n {
            train_step(&mut straight, &mut opt_straight, &SCHED, 42);
        }

        let mut first = start.clone();
        let mut opt_first = AdamWState::new(first.layout.total);
        for _ in 0..k {
            train_step(&mut first, &mut opt_first, &SCHED, 42);
        }
        let dir = scratch(&format!("resume-{name}")).join("ckpt");
        save_checkpoint(&dir, &first, &opt_first, &json!({"seed": 42}), Some(&src), SaveDtype::F32).unwrap();
        drop((first, opt_first));
        let ck = load_checkpoint::<f32>(&dir).unwrap();
        let seed = ck.trainer["seed"].as_u64().unwrap();
        let (mut resumed, mut opt_resumed) = (ck.model, ck.optim);
        for _ in k..n {
            train_step(&mut resumed, &mut opt_resumed, &SCHED, seed);
        }

        assert_eq!(opt_resumed.step, n);
        assert_eq!(bits(&resumed.params), bits(&straight.params), "{name}: parameters after resume");
        assert_eq!(bits(&opt_resumed.m), bits(&opt_straight.m), "{name}: m after resume");
        assert_eq!(bits(&opt_resumed.v), bits(&opt_straight.v), "{name}: v after resume");
        // training moved the weights (lr 1e-2 on ~0.02-sized weights)
        let moved = straight.params.iter().zip(&start.params).filter(|(a, b)| a != b).count();
        assert!(moved > straight.params.len() / 2, "{name}: only {moved} parameters changed");
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }
}

#[test]
fn saving_again_replaces_atomically() {
    let src = fixture("qwen2-tiny");
    let mut model = Model::<f32>::load(&src).unwrap();
    let optim = AdamWState::new(model.layout.total);
    let root = scratch("replace");
    let dir = root.join("latest");
    save_checkpoint(&dir, &model, &optim, &json!({"n": 1}), Some(&src), SaveDtype::F32).unwrap();
    model.params[0] += 1.0;
    // a stale temp folder from an interrupted save is cleared, not mixed in
    std::fs::create_dir_all(root.join("latest.tmp")).unwrap();
    std::fs::write(root.join("latest.tmp/junk"), b"x").unwrap();
    save_checkpoint(&dir, &model, &optim, &json!({"n": 2}), None, SaveDtype::F32).unwrap();
    let ck = load_checkpoint::<f32>(&dir).unwrap();
    assert_eq!(ck.trainer, json!({"n": 2}));
    assert_eq!(ck.model.params[0].to_bits(), model.params[0].to_bits());
    let mut names: Vec<String> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["latest"], "only the checkpoint folder remains");
    assert!(!dir.join("junk").exists() && !dir.join("tokenizer.json").exists(), "the old folder's files are gone");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn bf16_save_is_a_loadable_export() {
    let src = fixture("qwen2-tiny");
    let model = Model::<f32>::load(&src).unwrap();
    let dir = scratch("bf16").join("export");
    save_checkpoint(&dir, &model, &AdamWState::new(model.layout.total), &json!({}), Some(&src), SaveDtype::BF16).unwrap();
    let ck = load_checkpoint::<f32>(&dir).unwrap();
    assert_eq!(ck.model.cfg.torch_dtype.as_deref(), Some("bfloat16"));
    for (a, b) in ck.model.params.iter().zip(&model.params) {
        assert_eq!(a.to_bits(), half::bf16::from_f32(*b).to_f32().to_bits());
    }
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// A saved checkpoint to break; returns its folder.
fn saved(name: &str) -> PathBuf {
    let src = fixture("qwen2-tiny");
    let model = Model::<f32>::load(&src).unwrap();
    let mut optim = AdamWState::new(model.layout.total);
    optim.step = 3;
    let dir = scratch(name).join("ckpt");
    save_checkpoint(&dir, &model, &optim, &json!({"seed": 1}), Some(&src), SaveDtype::F32).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    let e = load_checkpoint::<f32>(dir).unwrap_err();
    let text = e.to_string();
    println!("{text}");
    text
}

#[test]
fn broken_checkpoints_give_clear_errors() {
    // a model folder without training state
    let e = load_checkpoint::<f32>(&fixture("qwen2-tiny")).unwrap_err();
    assert!(matches!(e, Error::Input { .. }) && e.to_string().contains(TRAINER_STATE_FILE), "{e}");

    // truncated optimizer file
    let dir = saved("truncated");
    let bytes = std::fs::read(dir.join(OPTIMIZER_FILE)).unwrap();
    std::fs::write(dir.join(OPTIMIZER_FILE), &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(load_checkpoint::<f32>(&dir), Err(Error::Weights { .. })));
    assert!(load_err(&dir).contains("truncated or corrupt"));

    // missing optimizer file
    std::fs::remove_file(dir.join(OPTIMIZER_FILE)).unwrap();
    assert!(matches!(load_checkpoint::<f32>(&dir), Err(Error::Io { .. })));
    assert!(load_err(&dir).contains(OPTIMIZER_FILE));

    // garbage state JSON
    let dir = saved("garbage");
    std::fs::write(dir.join(TRAINER_STATE_FILE), b"{\"format\": \"drpo-che").unwrap();
    assert!(matches!(load_checkpoint::<f32>(&dir), Err(Error::Json { .. })));

    // another format version
    let dir = saved("version");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(TRAINER_STATE_FILE)).unwrap()).unwrap();
    v["version"] = json!(99);
    std::fs::write(dir.join(TRAINER_STATE_FILE), v.to_string()).unwrap();
    assert!(matches!(load_checkpoint::<f32>(&dir), Err(Error::Config { .. })));
    assert!(load_err(&dir).contains("version"));

    // state files from different saves (step mismatch)
    v["version"] = json!(1);
    v["optimizer"]["step"] = json!(4);
    std::fs::write(dir.join(TRAINER_STATE_FILE), v.to_string()).unwrap();
    assert!(load_err(&dir).contains("disagrees"));

    // the optimizer state of another model (MQA: other k/v shapes, an lm_head)
    let dir = saved("other-model");
    let other_src = fixture("qwen2-tiny-mqa");
    let other = Model::<f32>::load(&other_src).unwrap();
    let mut st = AdamWState::new(other.layout.total);
    st.step = 3;
    let other_dir = dir.with_file_name("other");
    save_checkpoint(&other_dir, &other, &st, &json!({}), None, SaveDtype::F32).unwrap();
    std::fs::copy(other_dir.join(OPTIMIZER_FILE), dir.join(OPTIMIZER_FILE)).unwrap();
    assert!(matches!(load_checkpoint::<f32>(&dir), Err(Error::Weights { .. })));
    assert!(load_err(&dir).contains("shape"));

    // an interrupted swap: the folder is gone, the hint names the survivors
    let dir = saved("interrupted");
    std::fs::rename(&dir, dir.with_file_name("ckpt.old")).unwrap();
    std::fs::create_dir_all(dir.with_file_name("ckpt.tmp")).unwrap(); // a half-written new one
    let text = load_err(&dir);
    assert!(text.contains("ckpt.old") && !text.contains("ckpt.tmp"), "{text}");
    // the survivor is itself a loadable checkpoint
    assert_eq!(load_checkpoint::<f32>(&dir.with_file_name("ckpt.old")).unwrap().optim.step, 3);

    // a mis-sized optimizer state is refused at save time
    let model = Model::<f32>::load(&fixture("qwen2-tiny")).unwrap();
    let bad = AdamWState::<f32>::new(model.layout.total - 1);
    let e = save_checkpoint(&scratch("bad-state").join("x"), &model, &bad, &json!({}), None, SaveDtype::F32).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");

    for name in ["truncated", "garbage", "version", "other-model", "interrupted", "bad-state"] {
        let _ = std::fs::remove_dir_all(scratch(name).parent().unwrap().join(format!("checkpoint-{name}-{}", std::process::id())));
    }
}

/// recover_interrupted_save at both interruption points of the swap, and the cases it leaves alone.
#[test]
fn interrupted_swaps_are_repaired() {
    use drpo::checkpoint::recover_interrupted_save;
    let step_of = |dir: &Path| load_checkpoint::<f32>(dir).unwrap().optim.step;
    // two saves: old = step 3, new = step 4
    let dir = saved("recover-a");
    let new_one = dir.with_file_name("new");
    {
        let src = fixture("qwen2-tiny");
        let model = Model::<f32>::load(&src).unwrap();
        let mut optim = AdamWState::new(model.layout.total);
        optim.step = 4;
        save_checkpoint(&new_one, &model, &optim, &json!({"seed": 1}), Some(&src), SaveDtype::F32).unwrap();
    }
    let (tmp, old) = (dir.with_file_name("ckpt.tmp"), dir.with_file_name("ckpt.old"));

    // nothing to do for a complete folder
    assert_eq!(recover_interrupted_save(&dir).unwrap(), None);

    // (1) after DIR → DIR.old, before DIR.tmp → DIR: the complete new one becomes DIR
    std::fs::rename(&dir, &old).unwrap();
    copy_dir(&new_one, &tmp);
    let note = recover_interrupted_save(&dir).unwrap().expect("a repair");
    println!("{note}");
    assert!(note.contains("ckpt.tmp"), "{note}");
    assert_eq!(step_of(&dir), 4);
    assert!(!tmp.exists() && old.exists(), "DIR.old is left for the next save to clear");

    // (2) while DIR.tmp was being written (no trainer_state.json yet), DIR already renamed away:
    //     the previous checkpoint comes back
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&new_one, &tmp);
    std::fs::remove_file(tmp.join(TRAINER_STATE_FILE)).unwrap();
    let note = recover_interrupted_save(&dir).unwrap().expect("a repair");
    assert!(note.contains("ckpt.old"), "{note}");
    assert_eq!(step_of(&dir), 3);

    // an incomplete DIR with a complete DIR.tmp: DIR is moved aside, never deleted
    std::fs::remove_dir_all(&tmp).unwrap();
    copy_dir(&new_one, &tmp);
    std::fs::remove_file(dir.join(TRAINER_STATE_FILE)).unwrap();
    let note = recover_interrupted_save(&dir).unwrap().expect("a repair");
    assert!(note.contains("ckpt.incomplete"), "{note}");
    assert_eq!(step_of(&dir), 4);
    assert!(dir.with_file_name("ckpt.incomplete").join(OPTIMIZER_FILE).exists());

    // no survivor at all: nothing to do, and loading says what is missing
    let lone = scratch("recover-none").join("ckpt");
    assert_eq!(recover_interrupted_save(&lone).unwrap(), None);
    assert!(load_err(&lone).contains(TRAINER_STATE_FILE));
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    let _ = std::fs::remove_dir_all(lone.parent().unwrap());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The chat template and the other tokenizer files travel with a checkpoint (transformers ≥ 4.43
/// writes the template to chat_template.jinja, not tokenizer_config.json).
#[test]
fn checkpoints_copy_the_chat_template() {
    let src = scratch("template-src");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(fixture("qwen2-tiny").join(f), src.join(f)).unwrap();
    }
    // the template only in chat_template.jinja
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("tokenizer_config.json")).unwrap()).unwrap();
    let template = cfg.as_object_mut().unwrap().remove("chat_template").map(|t| t.as_str().unwrap().to_string());
    let template = template.unwrap_or_else(|| "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}".into());
    std::fs::write(src.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    std::fs::write(src.join("chat_template.jinja"), &template).unwrap();
    std::fs::write(src.join("added_tokens.json"), "{}").unwrap();
    std::fs::write(src.join("chat_template.json"), json!({"chat_template": template}).to_string()).unwrap();
    for f in ["chat_template.jinja", "chat_template.json", "added_tokens.json", "special_tokens_map.json"] {
        assert!(TOKENIZER_FILES.contains(&f), "{f}");
    }
    let model = Model::<f32>::load(&src).unwrap();
    let dir = scratch("template-ckpt").join("ckpt");
    save_checkpoint(&dir, &model, &AdamWState::new(model.layout.total), &json!({}), Some(&src), SaveDtype::F32).unwrap();
    for f in ["chat_template.jinja", "chat_template.json", "added_tokens.json"] {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), std::fs::read(src.join(f)).unwrap(), "{f}");
    }
    let (a, b) = (drpo::tokenizer::Tokenizer::from_dir(&src).unwrap(), drpo::tokenizer::Tokenizer::from_dir(&dir).unwrap());
    assert_eq!(a.chat_template(), b.chat_template());
    assert_eq!(b.chat_template(), Some(template.as_str()));
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}
