//! KV-cache decoding, greedy generation against the Hugging Face reference, batching and sampling.

mod common;
use common::*;
use drpo::generate::{generate, GenerateOptions};
use drpo::model::{KvCache, Model};
use drpo::sampling::{sample, sampling_probs, SamplingParams};
use rand::Rng;
use serde_json::Value;

fn greedy_fixture(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name).join("greedy.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in FIXTURES {
        let g = greedy_fixture(name);
        let prompt = ids(&g["prompt_ids"]);
        let want = ids(&g["generated_ids"]);
        for_both(name, |m64, m32| {
            let opts = GenerateOptions {
                max_new_tokens: want.len(),
                sampling: SamplingParams::greedy(),
                seed: 0,
                eos_ids: vec![], // the reference disabled eos stopping
                stream_offset: 0,
            };
            assert_eq!(generate(m64, std::slice::from_ref(&prompt), &opts).unwrap()[0].tokens, want, "{name} f64");
            assert_eq!(generate(m32, std::slice::from_ref(&prompt), &opts).unwrap()[0].tokens, want, "{name} f32");
        });
    }
}

fn for_both(name: &str, f: impl Fn(&Model<f64>, &Model<f32>)) {
    let m64 = Model::<f64>::load(&fixture(name)).unwrap();
    let m32 = Model::<f32>::load(&fixture(name)).unwrap();
    f(&m64, &m32)
}

/// Every decoding step's top-5 logits against the reference (tests the KV cache at each position).
#[test]
fn kv_cache_steps_match_reference_logits() {
    for name in FIXTURES {
        let g = greedy_fixture(name);
        let prompt = ids(&g["prompt_ids"]);
        let gen = ids(&g["generated_ids"]);
        let m = Model::<f64>::load(&fixture(name)).unwrap();
        let v = m.cfg.vocab_size;
        let mut cache = KvCache::new(&m.cfg, 1);
        let logits = m.forward(&mut cache, &[&prompt], None).unwrap();
        let mut last = logits[logits.len() - v..].to_vec();
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for (k, step) in g["steps"].as_array().unwrap().iter().enumerate() {
            let top_ids = ids(&step["top5_ids"]);
            for (i, &id) in top_ids.iter().enumerate() {
                got.push(last[id as usize]);
                want.push(step["top5_logits"][i].as_f64().unwrap());
            }
            assert_eq!(drpo::sampling::argmax(&last) as u32, top_ids[0], "{name} step {k}");
            last = m.forward(&mut cache, &[&gen[k..k + 1]], None).unwrap();
        }
        assert_rel(&format!("{name} per-step top-5 logits"), &got, &want, 1e-10);
    }
}

/// Incremental decoding in chunks of random sizes equals one full forward.
#[test]
fn kv_cache_decode_equals_full_forward() {
    let mut rng = rng("kv_cache_decode_equals_full_forward");
    for name in FIXTURES {
        let m = Model::<f64>::load(&fixture(name)).unwrap();
        let seq: Vec<u32> = (0..40).map(|_| rng.random_range(0..m.cfg.vocab_size as u32)).collect();
        let full = m.logits(&[&seq]).unwrap();
        let mut cache = KvCache::new(&m.cfg, 1);
        let mut inc = Vec::new();
        let mut at = 0;
        while at < seq.len() {
            let k = rng.random_range(1..=7).min(seq.len() - at);
            inc.extend(m.forward(&mut cache, &[&seq[at..at + k]], None).unwrap());
            at += k;
        }
        assert_rel(&format!("{name} incremental vs full"), &inc, &full, 1e-12);
    }
}

/// Sequences batched together give exactly (bitwise) the logits they give alone.
#[test]
fn batched_equals_singles() {
    let mut rng = rng("batched_equals_singles");
    let m = Model::<f32>::load(&fixture("qwen2-tiny")).unwrap();
    let seqs: Vec<Vec<u32>> =
        [1usize, 9, 23, 4].iter().map(|&l| (0..l).map(|_| rng.random_range(0..m.cfg.vocab_size as u32)).collect()).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let batched = m.logits(&refs).unwrap();
    let singles: Vec<f32> = seqs.iter().flat_map(|s| m.logits(&[s]).unwrap()).collect();
    assert_eq!(batched, singles);
}

/// A batch of prompts of different lengths generates what each prompt generates alone.
#[test]
fn batched_generation_equals_single_generation() {
    let mut rng = rng("batched_generation_equals_single_generation");
    let m = Model::<f32>::load(&fixture("qwen2-tiny-mqa")).unwrap();
    let prompts: Vec<Vec<u32>> = [3usize, 11, 6].iter().map(|&l| (0..l).map(|_| rng.random_range(0..381)).collect()).collect();
    let opts = GenerateOptions {
        max_new_tokens: 12,
        sampling: SamplingParams { temperature: 1.0, top_k: 50, top_p: 0.95 },
        seed: rng.random(),
        eos_ids: vec![383, 381],
        stream_offset: 0,
    };
    let batched = generate(&m, &prompts, &opts).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate(&m, std::slice::from_ref(p), &GenerateOptions { stream_offset: i as u64, ..opts.clone() }).unwrap();
        assert_eq!(batched[i], alone[0], "prompt {i}");
    }
    // same seed → same tokens; the eos, when hit, is the last token
    assert_eq!(generate(&m, &prompts, &opts).unwrap(), batched);
    for g in &batched {
        assert_eq!(g.stopped_on_eos, g.tokens.last().is_some_and(|t| opts.eos_ids.contains(t)));
        assert!(g.tokens.len() <= 12);
    }
}

/// The sampling distribution against an independent computation, and empirical frequencies.
#[test]
fn sampling_distribution_and_frequencies() {
    let mut rng = rng("sampling_distribution_and_frequencies");
    let logits: Vec<f64> = (0..37).map(|_| rng.random_range(-3.0..3.0)).collect();
    for (t, k, p) in [(1.0, 0, 1.0), (0.6, 0, 1.0), (1.0, 5, 1.0), (0.8, 0, 0.7), (1.3, 10, 0.5), (1.0, 1, 1.0)] {
        let params = SamplingParams { temperature: t, top_k: k, top_p: p };
        let got = sampling_probs(&logits, &params);
        // independent: sort by logit (same order as by probability), cut, renormalise
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap());
        let z: f64 = logits.iter().map(|l| (l / t).exp()).sum();
        let probs: Vec<f64> = logits.iter().map(|l| (l / t).exp() / z).collect();
        let kk = if k == 0 { logits.len() } else { k };
        let mass_k: f64 = order[..kk].iter().map(|&i| probs[i]).sum();
        let mut keep = 0;
        let mut acc = 0.0;
        for &i in &order[..kk] {
            acc += probs[i] / mass_k;
            keep += 1;
            if acc >= p {
                break;
            }
        }
        let kept_mass: f64 = order[..keep].iter().map(|&i| probs[i]).sum();
        let mut want = vec![0.0; logits.len()];
        for &i in &order[..keep] {
            want[i] = probs[i] / kept_mass;
        }
        assert_rel(&format!("sampling probs T={t} k={k} p={p}"), &got, &want, 1e-12);
        // frequencies from counter-based uniforms: |count − n·p| within 5 sd (+1) for every token
        let n = 20_000;
        let mut counts = vec![0usize; logits.len()];
        for step in 0..n {
            counts[sample(&logits, &params, drpo::rng::uniform(11, 3, step)) as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let mean = n as f64 * want[i];
            let sd = (mean * (1.0 - want[i])).sqrt();
            assert!((c as f64 - mean).abs() <= 5.0 * sd + 1.0, "token {i}: {c} draws, expected {mean:.1}");
        }
    }
    // greedy: the arg-max, lowest id on ties
    assert_eq!(sample(&[1.0, 3.0, 3.0, 2.0], &SamplingParams::greedy(), 0.99), 1);
}

/// Tied probabilities: with fixed-point masses the nucleus of a tie group is a matter of counts, the
/// same on any device (src/sampling.rs), and ties are taken in id order.
#[test]
fn sampling_ties_are_decided_exactly() {
    // 20 tokens share the top logit (ids 7, 56, …), 980 a lower one
    let mut logits = vec![-1.0f32; 1000];
    let top: Vec<usize> = (0..20).map(|i| 7 + 49 * i).collect();
    for &i in &top {
        logits[i] = 2.0;
    }
    let params = |top_k, top_p| SamplingParams { temperature: 1.0, top_k, top_p };
    let kept = |top_k, top_p| sampling_probs(&logits, &params(top_k, top_p)).iter().filter(|&&p| p > 0.0).count();
    // 16/20 = 0.8 is below the threshold ⌈0.8·2^32⌉/2^32, so 17 are kept; 10/20 = 2^31/2^32 reaches 0.5
    assert_eq!(kept(20, 0.8), 17);
    assert_eq!(kept(20, 0.5), 10);
    // top-k inside the tie group: the lowest ids, equal probabilities; the inverse CDF walks them in id order
    let probs = sampling_probs(&logits, &params(5, 1.0));
    for (i, &p) in probs.iter().enumerate() {
        let want = if top[..5].contains(&i) { 0.2 } else { 0.0 };
        assert!((p - want).abs() <= 1e-15, "token {i}: {p} vs {want}");
    }
    for (j, &id) in top[..5].iter().enumerate() {
        assert_eq!(sample(&logits, &params(5, 1.0), (j as f64 + 0.5) / 5.0) as usize, id);
    }
    // NaN logits leave no mass: the arg-max (NaN never wins)
    assert_eq!(sample(&[0.5, f32::NAN, 2.0, 1.0], &params(0, 0.9), 0.3), 2);
}

/// `forward_last` gives exactly the last row of each non-empty chunk of `forward`.
#[test]
fn forward_last_equals_last_rows() {
    let m = Model::<f64>::load(&fixture("qwen2-tiny")).unwrap();
    let v = m.cfg.vocab_size;
    let chunks: [&[u32]; 3] = [&[5, 6, 7], &[], &[9, 10, 11, 12, 13, 14]];
    let full = m.forward(&mut KvCache::new(&m.cfg, 3), &chunks, None).unwrap();
    let last = m.forward_last(&mut KvCache::new(&m.cfg, 3), &chunks).unwrap();
    let want: Vec<f64> = [2usize, 8].iter().flat_map(|&r| full[r * v..(r + 1) * v].to_vec()).collect();
    assert_eq!(last, want);
}

/// A huge max_new_tokens must not wrap `prompt + max_new_tokens` around (release builds do not
/// trap on overflow) and pass the context check, to fail only after generating everything.
#[test]
fn max_new_tokens_overflow_is_refused_up_front() {
    let model = Model::<f32>::load(&fixture("qwen2-tiny")).unwrap();
    let max_pos = model.cfg.max_position_embeddings;
    let prompt = vec![vec![1u32, 2, 3]];
    for max_new_tokens in [usize::MAX, usize::MAX - 1, usize::MAX - 2, max_pos - 2] {
        let opts = GenerateOptions { max_new_tokens, sampling: SamplingParams::default(), seed: 0, eos_ids: vec![], stream_offset: 0 };
        let err = drpo::generate::check_request(&prompt, &opts, max_pos).unwrap_err();
        assert!(err.to_string().contains("exceeds max_position_embeddings"), "{max_new_tokens}: {err}");
        assert!(generate(&model, &prompt, &opts).is_err());
    }
    let ok = GenerateOptions { max_new_tokens: max_pos - 3, sampling: SamplingParams::default(), seed: 0, eos_ids: vec![], stream_offset: 0 };
    drpo::generate::check_request(&prompt, &ok, max_pos).unwrap();
    // the CLI refuses it before loading anything
    let (ok, _, stderr) = run_drpo(&[
        "generate", "--model", fixture("qwen2-tiny").to_str().unwrap(), "--prompt-ids", "1,2,3", "--max-new-tokens",
        &usize::MAX.to_string(), "--device", "cpu",
    ]);
    assert!(!ok && stderr.contains("exceeds max_position_embeddings"), "{stderr}");
}

/// A response needs a prompt token before it: an empty prompt is an error, not an index underflow.
#[test]
fn scoring_a_response_after_an_empty_prompt_is_an_error() {
    let model = Model::<f32>::load(&fixture("qwen2-tiny")).unwrap();
    let err = drpo::policy::ScoreBatch::responses(&model.cfg, &[&[], &[1, 2]], &[&[3, 4], &[5]], 1.0).expect_err("an error");
    assert!(err.to_string().contains("prompt 0 is empty"), "{err}");
}

/// `kept_masses` selects and sorts only a prefix of the ranking; the plain full sort
/// (`kept_masses_sorted`) must keep exactly the same tokens (peaked, flat, tied and real-vocabulary rows).
#[test]
fn kept_masses_equal_a_full_sort() {
    use drpo::sampling::{kept_masses, kept_masses_sorted};
    let mut rng = rng("kept_masses_equal_a_full_sort");
    let mut rows = 0;
    for &v in &[1usize, 2, 7, 300, 5000, 151_936] {
        for kind in ["flat", "peaked", "ties"] {
            let logits: Vec<f64> = (0..v)
                .map(|_| match kind {
                    "flat" => rng.random_range(-0.5..0.5),
                    "peaked" => rng.random_range(-3.0..3.0f64) * 6.0,
                    _ => rng.random_range(-3..=3) as f64,
                })
                .collect();
            for _ in 0..if v > 10_000 { 2 } else { 8 } {
                let p = SamplingParams {
                    temperature: rng.random_range(0.3..1.5),
                    top_k: if rng.random_bool(0.5) { 0 } else { rng.random_range(1..=v.min(3000)) },
                    top_p: if rng.random_bool(0.2) { 1.0 } else { rng.random_range(0.05..1.0) },
                };
                assert_eq!(kept_masses(&logits, &p), kept_masses_sorted(&logits, &p), "v = {v}, {kind}, {p:?}");
                rows += 1;
            }
        }
    }
    println!("{rows} rows equal");
}

/// A temperature so small that logits / T overflow draws the arg-max (no mass is finite: the
/// documented fallback), never token 0 of a NaN row.
#[test]
fn vanishing_temperature_is_greedy() {
    let logits = [0.5f64, 2.0, -1.0, 1.999_999, 1.5];
    for t in [1e-320, 1e-300, 1e-200] {
        let p = SamplingParams { temperature: t, top_k: 0, top_p: 0.9 };
        for u in [0.0, 0.37, 0.999_999] {
            assert_eq!(sample(&logits, &p, u), 1, "T = {t:e}, u = {u}");
        }
    }
}
