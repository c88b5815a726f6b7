//! drpo's side of `bench/vs_torch.sh` (drpo against PyTorch eager on the same shapes): one JSON line
//! per case on stdout, `{"case", "ms"}` (the median of `BENCH_REPS` runs, default 5, after one
//! warm-up), plus the SIMD level. `bench/torch_eager.py` times the same cases; the script joins them.
//! Shapes and inputs are defined identically on both sides (the deterministic fill below; token ids
//! by formula); the random-weight models have the same shapes but their own random values.
//!   cargo bench --bench vs_torch [-- CASE-PREFIX]

use drpo::config::ModelConfig;
use drpo::cpu::matmul::{matmul_bwd, matmul_fwd};
use drpo::model::{KvCache, Model};
use std::time::Instant;

fn reps() -> usize {
    std::env::var("BENCH_REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(5).max(1)
}

/// Median wall time in ms of `reps()` runs after one warm-up.
fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps())
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// The fill both sides use: element i of input `seed` is ((i·2654435761 + seed) mod 2^32 >> 8) / 2^23 − 1.
fn filled(len: usize, seed: u32) -> Vec<f32> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 23) as f32 - 1.0).collect()
}

fn report(case: &str, ms: f64) {
    println!("{{\"case\": \"{case}\", \"ms\": {ms:.3}}}");
}

fn matmuls(only: &str) {
    if "matmul 2048^3".starts_with(only) || only.is_empty() {
        let (x, w) = (filled(2048 * 2048, 1), filled(2048 * 2048, 2));
        let mut out = vec![0f32; 2048 * 2048];
        report("matmul 2048^3", median_ms(|| matmul_fwd(&mut out, &x, &w, None, 2048, 2048, 2048)));
    }
    for (d_in, d_out, n) in [(896usize, 4864usize, 256usize), (1536, 8960, 256)] {
        let (x, w, dout) = (filled(n * d_in, 1), filled(d_out * d_in, 2), filled(n * d_out, 3));
        let fwd = format!("matmul fwd {d_in}->{d_out} n={n}");
        if fwd.starts_with(only) {
            let mut out = vec![0f32; n * d_out];
            report(&fwd, median_ms(|| matmul_fwd(&mut out, &x, &w, None, n, d_in, d_out)));
        }
        let bwd = format!("matmul bwd {d_in}->{d_out} n={n}");
        if bwd.starts_with(only) {
            let (mut dx, mut dw) = (vec![0f32; n * d_in], vec![0f32; d_out * d_in]);
            report(&bwd, median_ms(|| matmul_bwd(&mut dx, &mut dw, None, &dout, &x, &w, n, d_in, d_out)));
        }
    }
}

/// The toy study's model (SftConfig's defaults over the 26-token task vocabulary).
fn toy_config() -> ModelConfig {
    ModelConfig {
        vocab_size: 26,
        hidden_size: 64,
        intermediate_size: 176,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 128,
        tie_word_embeddings: true,
        bos_token_id: None,
        eos_token_ids: vec![0],
        torch_dtype: None,
    }
}

/// Qwen2.5-0.5B's shape.
fn qwen05_config() -> ModelConfig {
    ModelConfig {
        vocab_size: 151_936,
        hidden_size: 896,
        intermediate_size: 4864,
        num_hidden_layers: 24,
        num_attention_heads: 14,
        num_key_value_heads: 2,
        head_dim: 64,
        rope_theta: 1e6,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 32768,
        tie_word_embeddings: true,
        bos_token_id: None,
        eos_token_ids: vec![151_645],
        torch_dtype: None,
    }
}

/// Token t of sequence s: (s·7919 + t·104729) mod v (the same formula on both sides).
fn tokens(n_seqs: usize, len: usize, v: usize) -> Vec<Vec<u32>> {
    (0..n_seqs).map(|s| (0..len).map(|t| ((s * 7919 + t * 104_729) % v) as u32).collect()).collect()
}

/// One toy training step's model work: log-probs at T = 0.6 with the activations recorded (fwd), then
/// the parameter gradient of Σ w·logp (bwd), 128 sequences × 70 tokens.
fn toy_step() {
    let m = Model::<f32>::random(toy_config(), 1, 0.02);
    let seqs = tokens(128, 70, 26);
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let weights: Vec<Vec<f32>> = (0..128).map(|s| (0..69).map(|t| ((s + t) % 7) as f32 / 7.0 - 0.4).collect()).collect();
    let fwd = median_ms(|| {
        m.score(&refs, 0.6, true).unwrap();
    });
    let scored = m.score(&refs, 0.6, true).unwrap();
    let bwd = median_ms(|| {
        m.score_backward(&scored, &weights);
    });
    let total = median_ms(|| {
        let s = m.score(&refs, 0.6, true).unwrap();
        m.score_backward(&s, &weights);
    });
    report("toy train step fwd", fwd);
    report("toy train step bwd", bwd);
    report("toy train step total", total);
}

fn qwen05(only: &str) {
    let cfg = qwen05_config();
    let build = Instant::now();
    let m = Model::<f32>::random(cfg.clone(), 1, 0.02);
    eprintln!("random 0.5B-shape model: {:.0}M parameters in {:.1} s", m.params.len() as f64 / 1e6, build.elapsed().as_secs_f64());
    if "qwen0.5b logprobs 4x256".starts_with(only) {
        let seqs = tokens(4, 256, cfg.vocab_size);
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        report("qwen0.5b logprobs 4x256", median_ms(|| {
            m.score(&refs, 1.0, false).unwrap();
        }));
    }
    if "qwen0.5b greedy decode 32+72".starts_with(only) {
        let prompt = &tokens(1, 32, cfg.vocab_size)[0];
        report("qwen0.5b greedy decode 32+72", median_ms(|| {
            let mut cache = KvCache::with_capacity(&m.cfg, 1, 32 + 72);
            let mut logits = m.forward_last(&mut cache, &[prompt]).unwrap();
            for _ in 0..72 {
                let next = drpo::sampling::argmax(&logits) as u32;
                logits = m.forward_last(&mut cache, &[&[next]]).unwrap();
            }
        }));
    }
}

fn main() {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_default();
    println!("{{\"level\": \"{}\", \"threads\": {}}}", drpo::cpu::simd::level().name(), rayon::current_num_threads());
    matmuls(&only);
    if "toy train step".starts_with(&only) || only.starts_with("toy") {
        toy_step();
    }
    if "qwen0.5b".starts_with(&only) || only.starts_with("qwen") {
        qwen05(&only);
    }
}
