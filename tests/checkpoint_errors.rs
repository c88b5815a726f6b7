//! Every way a checkpoint or an input can be wrong gives its own error, naming the file / tensor /
//! field; and the loader's other formats (sharded, F16, BF16 round trip) give the same model.

mod common;
use common::*;
use drpo::model::Model;
use drpo::weights::{save_params, SaveDtype};
use drpo::Error;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A fresh folder under the system temp dir holding a copy of a fixture.
fn scratch(test: &str, from: &str) -> PathBuf {
    let dir = scratch_dir(test);
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(fixture(from).join(f), dir.join(f)).unwrap();
    }
    dir
}

fn tensors(path: &Path) -> Vec<RawTensor> {
    read_tensors(path)
}

fn load_err(dir: &Path) -> Error {
    match Model::<f32>::load(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => {
            println!("error as shown: {e}");
            e
        }
    }
}

#[test]
fn missing_files() {
    let dir = scratch("missing", "qwen2-tiny");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert!(matches!(load_err(&dir), Error::Weights { .. }));
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = load_err(&dir);
    assert!(matches!(&e, Error::Io { path, .. } if path.ends_with("config.json")), "{e:?}");
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let dir = scratch("truncated", "qwen2-tiny");
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&dir);
    assert!(matches!(&e, Error::Weights { path, .. } if path == &file), "{e:?}");
    std::fs::write(&file, b"this is not a safetensors file").unwrap();
    assert!(matches!(load_err(&dir), Error::Weights { .. }));
}

#[test]
fn missing_misshaped_and_unsupported_tensors() {
    let dir = scratch("tensors", "qwen2-tiny");
    let file = dir.join("model.safetensors");
    let orig = tensors(&file);
    let name = "model.layers.1.mlp.up_proj.weight";

    let without: Vec<_> = orig.iter().filter(|t| t.0 != name).cloned().collect();
    write_tensors(&file, &without);
    let e = load_err(&dir);
    assert!(matches!(&e, Error::Weights { tensor, what, .. } if tensor == name && what.contains("missing")), "{e:?}");

    let mut reshaped = orig.clone();
    let t = reshaped.iter_mut().find(|t| t.0 == name).unwrap();
    t.2 = vec![t.2[1], t.2[0]];
    write_tensors(&file, &reshaped);
    let e = load_err(&dir);
    assert!(matches!(&e, Error::Weights { tensor, what, .. } if tensor == name && what.contains("shape")), "{e:?}");

    let mut ints = orig.clone();
    ints.iter_mut().find(|t| t.0 == name).unwrap().1 = Dtype::I32;
    write_tensors(&file, &ints);
    let e = load_err(&dir);
    assert!(matches!(&e, Error::Weights { tensor, what, .. } if tensor == name && what.contains("I32")), "{e:?}");
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn config_errors() {
    // config disagrees with the weights: the error names the tensor and the expected shape
    let dir = scratch("config", "qwen2-tiny");
    edit_config(&dir, |v| v["vocab_size"] = 400.into());
    let e = load_err(&dir);
    assert!(matches!(&e, Error::Weights { tensor, .. } if tensor == "model.embed_tokens.weight"), "{e:?}");

    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("sliding window", Box::new(|v| v["use_sliding_window"] = true.into())),
        ("rope scaling", Box::new(|v| v["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 4.0}))),
        ("activation", Box::new(|v| v["hidden_act"] = "gelu".into())),
        ("model type", Box::new(|v| v["model_type"] = "llama".into())),
    ];
    for (what, f) in cases {
        let dir = scratch("unsupported", "qwen2-tiny");
        edit_config(&dir, f);
        let e = load_err(&dir);
        assert!(matches!(e, Error::Unsupported { .. }), "{what}: {e:?}");
    }
    let dir = scratch("fields", "qwen2-tiny");
    edit_config(&dir, |v| v["num_key_value_heads"] = 3.into());
    assert!(matches!(load_err(&dir), Error::Config { field, .. } if field == "num_key_value_heads"));
    edit_config(&dir, |v| {
        v["num_key_value_heads"] = 2.into();
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    assert!(matches!(load_err(&dir), Error::Config { field, .. } if field == "hidden_size"));
    edit_config(&dir, |v| v["hidden_size"] = "sixty-four".into());
    assert!(matches!(load_err(&dir), Error::Config { field, .. } if field == "hidden_size"));
}

#[test]
fn bad_token_ids_and_too_long_prompts() {
    let m = Model::<f32>::load(&fixture("qwen2-tiny")).unwrap();
    let e = m.logits(&[&[1, 2, 384]]).unwrap_err();
    assert!(matches!(&e, Error::Input { what } if what.contains("384") && what.contains("vocab_size")), "{e:?}");
    let long = vec![5u32; m.cfg.max_position_embeddings + 1];
    let e = m.logits(&[&long]).unwrap_err();
    assert!(matches!(&e, Error::Input { what } if what.contains("max_position_embeddings")), "{e:?}");
    let opts = drpo::generate::GenerateOptions {
        max_new_tokens: 10,
        sampling: drpo::sampling::SamplingParams::greedy(),
        seed: 0,
        eos_ids: vec![],
        stream_offset: 0,
    };
    let e = drpo::generate::generate(&m, &[vec![5; m.cfg.max_position_embeddings - 5]], &opts).unwrap_err();
    assert!(matches!(e, Error::Input { .. }));
}

/// A sharded checkpoint (index + two files) and an F16 copy load to the expected values.
#[test]
fn sharded_f16_and_bf16_round_trip() {
    let reference = Model::<f32>::load(&fixture("qwen2-tiny")).unwrap();
    let dir = scratch("sharded", "qwen2-tiny");
    let all = tensors(&dir.join("model.safetensors"));
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let (a, b) = all.split_at(all.len() / 2);
    write_tensors(&dir.join("model-00001-of-00002.safetensors"), a);
    write_tensors(&dir.join("model-00002-of-00002.safetensors"), b);
    let map: serde_json::Map<String, serde_json::Value> = a
        .iter()
        .map(|t| (t.0.clone(), "model-00001-of-00002.safetensors".into()))
        .chain(b.iter().map(|t| (t.0.clone(), "model-00002-of-00002.safetensors".into())))
        .collect();
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": map})).unwrap())
        .unwrap();
    assert_eq!(Model::<f32>::load(&dir).unwrap().params, reference.params);

    // F16 weights: each value rounded to f16 once
    let dir = scratch("f16", "qwen2-tiny");
    let as_f16: Vec<_> = all
        .iter()
        .map(|(n, _, s, b)| {
            let h: Vec<u8> = b
                .chunks_exact(4)
                .flat_map(|x| half::f16::from_f32(f32::from_le_bytes(x.try_into().unwrap())).to_bits().to_le_bytes())
                .collect();
            (n.clone(), Dtype::F16, s.clone(), h)
        })
        .collect();
    write_tensors(&dir.join("model.safetensors"), &as_f16);
    let want: Vec<f32> = reference.params.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    assert_eq!(Model::<f32>::load(&dir).unwrap().params, want);

    // BF16 save and load: each value rounded to bf16 once; the untied lm_head is saved and read back
    let mqa = Model::<f32>::load(&fixture("qwen2-tiny-mqa")).unwrap();
    let out = std::env::temp_dir().join(format!("drpo-bf16-save-{}", std::process::id()));
    save_params(&out, &mqa.cfg, &mqa.layout, &mqa.params, SaveDtype::BF16).unwrap();
    let back = Model::<f32>::load(&out).unwrap();
    assert_eq!(back.params, mqa.params, "bf16 weights survive a bf16 save exactly");
    let (mut a, mut b) = (back.cfg.clone(), mqa.cfg.clone());
    (a.torch_dtype, b.torch_dtype) = (None, None);
    assert_eq!(a, b, "config.json round trip");
    assert!(tensors(&out.join("model.safetensors")).iter().any(|t| t.0 == "lm_head.weight"));
}

/// A config with fewer layers than the checkpoint used to load a truncated model silently; an untied
/// config on a tied checkpoint's extra tensor likewise. Surplus tensors are an error naming them; a
/// tied checkpoint's `lm_head.weight` and rotary `inv_freq` buffers are allowed.
#[test]
fn surplus_tensors() {
    let dir = scratch("surplus", "qwen2-tiny");
    edit_config(&dir, |v| v["num_hidden_layers"] = 1.into());
    let e = load_err(&dir);
    let file = dir.join("model.safetensors");
    match &e {
        Error::Weights { path, what, .. } => {
            assert_eq!(path, &file);
            assert!(what.contains("model.layers.1.input_layernorm.weight") && what.contains("num_hidden_layers"), "{what}");
            // 12 tensors per layer: 5 named, the rest counted
            assert!(what.starts_with("12 tensor(s)") && what.contains("and 7 more"), "{what}");
        }
        _ => panic!("{e:?}"),
    }

    // allowed extras: rotary inv_freq buffers (older checkpoints), lm_head.weight on a tied model
    let dir = scratch("surplus-allowed", "qwen2-tiny");
    let file = dir.join("model.safetensors");
    let tied = Model::<f32>::load(&dir).unwrap();
    assert!(tied.cfg.tie_word_embeddings);
    let mut ts = tensors(&file);
    let embed = ts.iter().find(|t| t.0 == "model.embed_tokens.weight").unwrap().clone();
    ts.push(("lm_head.weight".into(), embed.1, embed.2.clone(), embed.3.iter().map(|b| b ^ 0x55).collect()));
    ts.push(("model.layers.0.self_attn.rotary_emb.inv_freq".into(), Dtype::F32, vec![2], vec![0; 8]));
    write_tensors(&file, &ts);
    assert_eq!(Model::<f32>::load(&dir).unwrap().params, tied.params, "the extras are ignored");
    // anything else is not
    ts.push(("model.layers.0.self_attn.q_norm.weight".into(), Dtype::F32, vec![2], vec![0; 8]));
    write_tensors(&file, &ts);
    let e = load_err(&dir);
    assert!(matches!(&e, Error::Weights { what, .. } if what.starts_with("1 tensor(s)") && what.contains("`model.layers.0.self_attn.q_norm.weight`")), "{e:?}");
}

/// A missing tensor names the file that lists the tensors: the single safetensors file, or the index
/// of a sharded checkpoint (an empty `weight_map` named nothing: "error: : tensor …").
#[test]
fn missing_tensor_names_the_file() {
    let dir = scratch("missing-tensor", "qwen2-tiny");
    let all = tensors(&dir.join("model.safetensors"));
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let index = dir.join("model.safetensors.index.json");
    std::fs::write(&index, serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": {}})).unwrap()).unwrap();
    let e = load_err(&dir);
    assert!(matches!(&e, Error::Weights { path, tensor, what } if path == &index && tensor == "model.embed_tokens.weight" && what.contains("missing")), "{e:?}");
    assert!(e.to_string().starts_with(&index.display().to_string()), "{e}");

    // two shards, a tensor of the second missing from the index: the index is named, not shard 1
    let (a, b) = all.split_at(all.len() / 2);
    write_tensors(&dir.join("model-00001-of-00002.safetensors"), a);
    write_tensors(&dir.join("model-00002-of-00002.safetensors"), b);
    let dropped = &b[0].0;
    let map: serde_json::Map<String, serde_json::Value> = a
        .iter()
        .map(|t| (t.0.clone(), "model-00001-of-00002.safetensors".into()))
        .chain(b[1..].iter().map(|t| (t.0.clone(), "model-00002-of-00002.safetensors".into())))
        .collect();
    std::fs::write(&index, serde_json::to_vec(&serde_json::json!({"weight_map": map})).unwrap()).unwrap();
    let e = load_err(&dir);
    assert!(matches!(&e, Error::Weights { path, tensor, .. } if path == &index && tensor == dropped), "{e:?}");

    // single file
    let dir = scratch("missing-tensor-single", "qwen2-tiny");
    let file = dir.join("model.safetensors");
    write_tensors(&file, &all[1..]);
    let e = load_err(&dir);
    assert!(matches!(&e, Error::Weights { path, tensor, .. } if path == &file && tensor == &all[0].0), "{e:?}");
}

/// Absurd sizes are config errors naming the field, not an abort (a 1e12-layer Vec, a wrapped
/// parameter count); token ids past u32 are errors, not truncated to another id.
#[test]
fn absurd_config_sizes() {
    let dir = scratch("absurd", "qwen2-tiny");
    let orig: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let cases: [(&str, serde_json::Value); 9] = [
        ("num_hidden_layers", 1_000_000_000_000u64.into()),
        ("vocab_size", (1u64 << 62).into()),
        ("hidden_size", u64::MAX.into()),
        ("intermediate_size", (1u64 << 40).into()),
        ("num_attention_heads", (1u64 << 40).into()),
        ("head_dim", (1u64 << 40).into()),
        ("max_position_embeddings", u64::MAX.into()),
        ("eos_token_id", ((1u64 << 32) + 5).into()),
        ("bos_token_id", (1u64 << 32).into()),
    ];
    for (field, value) in cases {
        edit_config(&dir, |v| {
            *v = orig.clone();
            v[field] = value.clone();
        });
        let e = load_err(&dir);
        assert!(matches!(&e, Error::Config { field: f, .. } if f == field), "{field}: {e:?}");
        // and before any weight is read: `inspect` reads the config the same way
        let e = drpo::config::ModelConfig::from_dir(&dir).unwrap_err();
        assert!(matches!(&e, Error::Config { field: f, .. } if f == field), "{field}: {e:?}");
    }
    edit_config(&dir, |v| {
        *v = orig.clone();
        v["eos_token_id"] = serde_json::json!([5, (1u64 << 32) + 5]);
    });
    assert!(matches!(load_err(&dir), Error::Config { field, what, .. } if field == "eos_token_id" && what.contains("4294967301")));

    // the largest accepted sizes still give an exact parameter count (no wrap): 2^31 × 2^20 embedding
    let mut big = drpo::config::ModelConfig::from_json(&orig, Path::new("x")).unwrap();
    (big.vocab_size, big.hidden_size, big.tie_word_embeddings) = (1 << 31, 1 << 20, false);
    let total = drpo::layout::ParamLayout::checked_total(&big, Path::new("x")).unwrap() as u128;
    let (c, l, ff, qd, kvd) = (1u128 << 20, big.num_hidden_layers as u128, big.intermediate_size as u128, big.q_dim() as u128, big.kv_dim() as u128);
    let want = 2 * (1u128 << 51) + c + l * (2 * c + qd * (c + 1) + 2 * kvd * (c + 1) + c * qd + 3 * c * ff);
    assert_eq!(total, want);
    // a hand-built config past usize: an error from try_new, not a wrap
    big.num_hidden_layers = usize::MAX / 2;
    let e = drpo::layout::ParamLayout::try_new(&big).unwrap_err();
    assert!(matches!(&e, Error::Config { field, .. } if field == "num_hidden_layers"), "{e:?}");
}

/// The streaming save writes byte for byte what `safetensors::serialize` makes of whole-file buffers
/// (the old way, the independent reference here), in F32 and BF16, and leaves no temp file behind.
#[test]
fn streaming_save_matches_serialize() {
    for name in FIXTURES {
        let m = Model::<f64>::load(&fixture(name)).unwrap();
        for dtype in [SaveDtype::F32, SaveDtype::BF16] {
            let dir = scratch_dir(&format!("stream-save-{name}-{dtype:?}"));
            save_params(&dir, &m.cfg, &m.layout, &m.params, dtype).unwrap();
            let blobs: Vec<(String, Vec<usize>, Vec<u8>)> = m
                .layout
                .entries
                .iter()
                .map(|e| {
                    let vals = &m.params[e.range()];
                    let bytes: Vec<u8> = match dtype {
                        SaveDtype::F32 => vals.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
                        SaveDtype::BF16 => vals.iter().flat_map(|&v| half::bf16::from_f32(v as f32).to_bits().to_le_bytes()).collect(),
                    };
                    (e.name.clone(), e.shape.clone(), bytes)
                })
                .collect();
            let st = if dtype == SaveDtype::F32 { Dtype::F32 } else { Dtype::BF16 };
            let views: Vec<(String, TensorView)> =
                blobs.iter().map(|(n, s, b)| (n.clone(), TensorView::new(st, s.clone(), b).unwrap())).collect();
            let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
            let want = safetensors::tensor::serialize(views, Some(meta)).unwrap();
            assert!(std::fs::read(dir.join("model.safetensors")).unwrap() == want, "{name} {dtype:?}: file differs");
            let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            assert_eq!(names, ["config.json", "model.safetensors"], "{name} {dtype:?}");
        }
    }
}
