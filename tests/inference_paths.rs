//! The model's several paths to the same numbers, on random Qwen2 configs (GQA 3:1, head_dim unrelated
//! to hidden/heads, untied and tied heads), with batches long enough to cross the matmul row tiles
//! (64 rows) and the scoring head's row blocks (64 rows):
//! - incremental (KV cache, random chunks) vs one full forward;
//! - a batch vs each sequence alone (bitwise, f32);
//! - the recording attention (training: keeps probabilities) vs the inference one, and 1 vs 3 threads
//!   (bitwise); attention ops against a naive f64 reference;
//! - blocked scoring (log-probs, gradient) vs full [tokens × vocab] logits;
//! - `KvCache::with_capacity` never reallocates.

mod common;
use common::*;
use drpo::config::ModelConfig;
use drpo::cpu::attention::{attention_fwd, attention_fwd_infer, AttnShape};
use drpo::gradcheck::{random_config, random_params};
use drpo::model::{Activations, KvCache, Model};
use rand::{rngs::StdRng, Rng};

/// A random config with 3 query heads per kv head, head_dim ≠ hidden / heads, vocab ≥ 30.
fn gqa_config(seed: u64, tied: bool) -> ModelConfig {
    let mut cfg = random_config(seed);
    let mut rng: StdRng = rand::SeedableRng::seed_from_u64(seed);
    cfg.num_key_value_heads = rng.random_range(1..=2);
    cfg.num_attention_heads = 3 * cfg.num_key_value_heads;
    cfg.hidden_size = rng.random_range(5..=24);
    cfg.head_dim = 2 * rng.random_range(1..=6);
    if cfg.head_dim * cfg.num_attention_heads == cfg.hidden_size {
        cfg.head_dim += 2;
    }
    cfg.vocab_size = rng.random_range(30..=60);
    cfg.eos_token_ids = vec![cfg.vocab_size as u32 - 1];
    cfg.max_position_embeddings = 256;
    cfg.tie_word_embeddings = tied;
    cfg
}

fn model(seed: u64, tied: bool) -> Model<f64> {
    let cfg = gqa_config(seed, tied);
    println!("seed {seed}: {cfg:?}");
    let params = random_params(&cfg, seed);
    Model::from_params(cfg, params)
}

fn tokens(rng: &mut StdRng, v: usize, len: usize) -> Vec<u32> {
    (0..len).map(|_| rng.random_range(0..v as u32)).collect()
}

fn bits<T: Copy + Into<f64>>(xs: &[T]) -> Vec<u64> {
    xs.iter().map(|&x| Into::<f64>::into(x).to_bits()).collect()
}

#[test]
fn incremental_equals_full_on_random_configs() {
    let mut rng = rng("incremental_equals_full_on_random_configs");
    for k in 0..4 {
        let m = model(rng.random(), k % 2 == 0);
        let v = m.cfg.vocab_size;
        // two sequences decoded side by side in chunks of different random sizes
        let seqs = [tokens(&mut rng, v, 90), tokens(&mut rng, v, 71)];
        let full = m.logits(&[&seqs[0], &seqs[1]]).unwrap();
        let mut cache = KvCache::new(&m.cfg, 2);
        let (mut inc, mut at) = ([Vec::new(), Vec::new()], [0usize, 0]);
        while at[0] < seqs[0].len() || at[1] < seqs[1].len() {
            let mut chunks: [&[u32]; 2] = [&[], &[]];
            for s in 0..2 {
                let n = rng.random_range(0..=9).min(seqs[s].len() - at[s]);
                chunks[s] = &seqs[s][at[s]..at[s] + n];
            }
            let out = m.forward(&mut cache, &chunks, None).unwrap();
            inc[0].extend_from_slice(&out[..chunks[0].len() * v]);
            inc[1].extend_from_slice(&out[chunks[0].len() * v..]);
            for s in 0..2 {
                at[s] += chunks[s].len();
            }
        }
        let inc: Vec<f64> = inc.concat();
        assert_rel(&format!("random config {k}: incremental vs full"), &inc, &full, 1e-12);
        println!("  bitwise equal: {}", bits(&inc) == bits(&full));
    }
}

#[test]
fn batched_equals_singles_on_random_configs() {
    let mut rng = rng("batched_equals_singles_on_random_configs");
    for k in 0..4 {
        let m = model(rng.random(), k % 2 == 1).cast::<f32>();
        let v = m.cfg.vocab_size;
        let seqs: Vec<Vec<u32>> = [1usize, 70, 23, 4, 0, 9].iter().map(|&l| tokens(&mut rng, v, l)).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let batched = m.logits(&refs).unwrap();
        let singles: Vec<f32> = seqs.iter().flat_map(|s| m.logits(&[s]).unwrap()).collect();
        assert_eq!(bits(&batched), bits(&singles), "random config {k}");
        // the scoring path too (log-probs by row blocks of the head)
        let batched = m.score(&refs, 0.8, false).unwrap().logp;
        let singles: Vec<Vec<f32>> = seqs.iter().map(|s| m.score(&[s.as_slice()], 0.8, false).unwrap().logp.remove(0)).collect();
        assert_eq!(batched, singles, "random config {k}: score");
    }
}

/// Training's attention (probabilities kept) and inference's (one row at a time) are the same
/// arithmetic; and no result depends on the number of threads.
#[test]
fn recording_and_inference_paths_agree_bitwise() {
    let mut rng = rng("recording_and_inference_paths_agree_bitwise");
    for k in 0..3 {
        let m = model(rng.random(), k == 1);
        let v = m.cfg.vocab_size;
        let seqs: Vec<Vec<u32>> = [67usize, 5, 30].iter().map(|&l| tokens(&mut rng, v, l)).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let mut acts = Activations::default();
        let recorded = m.forward(&mut KvCache::new(&m.cfg, 3), &refs, Some(&mut acts)).unwrap();
        let inferred = m.logits(&refs).unwrap();
        assert_eq!(bits(&recorded), bits(&inferred), "random config {k}");
        let in_pool = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let scored = m.score(&refs, 0.6, true).unwrap();
                let dlogp: Vec<Vec<f64>> = scored.logp.iter().map(|r| r.iter().map(|x| x.sin()).collect()).collect();
                (m.logits(&refs).unwrap(), scored.logp.concat(), m.score_backward(&scored, &dlogp))
            })
        };
        let (one, three) = (in_pool(1), in_pool(3));
        assert_eq!(bits(&one.0), bits(&three.0), "random config {k}: logits, 1 vs 3 threads");
        assert_eq!(bits(&one.1), bits(&three.1), "random config {k}: log-probs, 1 vs 3 threads");
        assert_eq!(bits(&one.2), bits(&three.2), "random config {k}: gradient, 1 vs 3 threads");
        assert_eq!(bits(&one.0), bits(&inferred));
    }
}

/// Both attention ops against a naive f64 computation (softmax of masked scores, then the weighted
/// sum of values), with a cached prefix, GQA and odd sizes.
#[test]
fn attention_ops_match_naive_reference() {
    let mut rng = rng("attention_ops_match_naive_reference");
    for &(tq, past, nkv, g, hd) in &[(1usize, 0usize, 1usize, 1usize, 2usize), (7, 0, 2, 3, 6), (5, 11, 1, 3, 10), (1, 40, 3, 2, 4), (33, 2, 2, 1, 8)] {
        let (tk, nh) = (tq + past, nkv * g);
        let s = AttnShape { tq, tk, nh, nkv, hd };
        let q: Vec<f64> = (0..tq * nh * hd).map(|_| rng.random_range(-2.0..2.0)).collect();
        let k: Vec<f64> = (0..tk * nkv * hd).map(|_| rng.random_range(-2.0..2.0)).collect();
        let v: Vec<f64> = (0..tk * nkv * hd).map(|_| rng.random_range(-2.0..2.0)).collect();
        let mut want = vec![0.0; tq * nh * hd];
        for h in 0..nh {
            let kvh = h / g;
            for i in 0..tq {
                let scores: Vec<f64> = (0..=past + i)
                    .map(|j| (0..hd).map(|d| q[(i * nh + h) * hd + d] * k[(j * nkv + kvh) * hd + d]).sum::<f64>() / (hd as f64).sqrt())
                    .collect();
                let z: f64 = scores.iter().map(|s| s.exp()).sum();
                for (j, sc) in scores.iter().enumerate() {
                    for d in 0..hd {
                        want[(i * nh + h) * hd + d] += sc.exp() / z * v[(j * nkv + kvh) * hd + d];
                    }
                }
            }
        }
        let (mut out, mut probs, mut out2) = (vec![f64::NAN; want.len()], vec![f64::NAN; nh * tq * tk], vec![f64::NAN; want.len()]);
        attention_fwd(&mut out, &mut probs, &q, &k, &v, s);
        attention_fwd_infer(&mut out2, &q, &k, &v, s);
        assert_rel(&format!("attention_fwd {s:?}"), &out, &want, 1e-13);
        assert_eq!(bits(&out), bits(&out2), "{s:?}: infer differs from the recording op");
    }
}

/// Log-probs by blocks of 64 head rows against a naive log-softmax of the full logits; the gradient
/// against `backward` of a naive d logits; and bitwise against `backward` of `logprob_bwd`'s d logits
/// over all rows (the unblocked path this replaced).
#[test]
fn blocked_scoring_matches_full_logits() {
    let mut rng = rng("blocked_scoring_matches_full_logits");
    for k in 0..4 {
        let m = model(rng.random(), k % 2 == 0);
        let v = m.cfg.vocab_size;
        let temp = [1.0, 0.6, 1.7, 0.9][k];
        let seqs: Vec<Vec<u32>> = [70usize, 1, 64, 33].iter().map(|&l| tokens(&mut rng, v, l)).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let scored = m.score(&refs, temp, true).unwrap();
        let logits = m.logits(&refs).unwrap();
        let n = logits.len() / v;
        assert!(n > 2 * drpo::model::cpu::HEAD_ROWS);
        // naive: log softmax in f64, row by row
        let (mut want, mut dlogits, mut dlogp) = (Vec::new(), vec![0.0; n * v], Vec::new());
        let mut row = 0;
        for s in &seqs {
            // sequence 0's gradient is zero on its first 66 positions: a whole head block is skipped
            let g: Vec<f64> = (0..s.len().saturating_sub(1)).map(|t| if k % 2 == 0 && row < 66 && t < 66 { 0.0 } else { rng.random_range(-1.0..1.0) }).collect();
            for t in 0..s.len() {
                let l = &logits[(row + t) * v..(row + t + 1) * v];
                let z: f64 = l.iter().map(|x| (x / temp).exp()).sum();
                if t + 1 < s.len() {
                    let target = s[t + 1] as usize;
                    want.push(l[target] / temp - z.ln());
                    for j in 0..v {
                        dlogits[(row + t) * v + j] = g[t] / temp * ((j == target) as u8 as f64 - (l[j] / temp).exp() / z);
                    }
                }
            }
            dlogp.push(g);
            row += s.len();
        }
        assert_rel(&format!("random config {k}: blocked log-probs"), &scored.logp.concat(), &want, 1e-12);
        let grads = m.score_backward(&scored, &dlogp);
        let naive = m.backward(&scored.acts, &dlogits);
        assert_rel(&format!("random config {k}: blocked gradient vs naive d logits"), &grads, &naive, 1e-10);
        // the unblocked path: logprob_bwd over every row at once, then backward
        let mut rows = Vec::new();
        for g in &dlogp {
            rows.extend_from_slice(g);
            rows.push(0.0);
        }
        let mut dl_full = vec![0.0; n * v];
        drpo::cpu::logprob::logprob_bwd(&mut dl_full, &rows, &logits, &scored.lse, &scored.targets, v, temp);
        assert_eq!(bits(&grads), bits(&m.backward(&scored.acts, &dl_full)), "random config {k}: blocked vs unblocked gradient");
    }
}

#[test]
fn kv_cache_with_capacity_never_reallocates() {
    let mut rng = rng("kv_cache_with_capacity_never_reallocates");
    let m = model(rng.random(), false);
    let (v, kvd) = (m.cfg.vocab_size, m.cfg.kv_dim());
    let seqs = [tokens(&mut rng, v, 40), tokens(&mut rng, v, 25)];
    let mut cache = KvCache::with_capacity(&m.cfg, 2, 40);
    let mut grown = KvCache::new(&m.cfg, 2);
    let ptrs: Vec<*const f64> = cache.k.iter().chain(&cache.v).flatten().map(|b| b.as_ptr()).collect();
    for at in (0..40).step_by(8) {
        let chunks: Vec<&[u32]> = seqs.iter().map(|s| &s[at.min(s.len())..(at + 8).min(s.len())]).collect();
        let a = m.forward(&mut cache, &chunks, None).unwrap();
        let b = m.forward(&mut grown, &chunks, None).unwrap();
        assert_eq!(bits(&a), bits(&b));
    }
    assert_eq!(cache.lens, [40, 25]);
    for buf in cache.k.iter().chain(&cache.v).flatten() {
        assert_eq!(buf.capacity(), 40 * kvd);
    }
    let after: Vec<*const f64> = cache.k.iter().chain(&cache.v).flatten().map(|b| b.as_ptr()).collect();
    assert_eq!(ptrs, after, "a buffer moved: the cache reallocated");
}
