//! CPU reference timings: `cargo bench --bench cpu` (release). One line per case, median of a few
//! runs, with the bytes of W read and the flops, so each line reads against memory bandwidth.
//!
//! The matmul cases also time the unblocked loops the blocked ones replaced (`*_rows`, kept here
//! only as the baseline) and check that both give bitwise the same numbers.

use drpo::cpu::attention::{attention_fwd, attention_fwd_infer, AttnShape};
use drpo::cpu::matmul::{matmul_bwd, matmul_fwd};
use drpo::model::Model;
use drpo::sampling::{kept_masses, kept_masses_sorted, SamplingParams};
use rayon::prelude::*;
use std::time::Instant;

/// Peak resident memory of this process so far (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = text.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0.0);
    kb / 1024.0 // MiB
}

/// Scoring at the real vocabulary (151936) on a small model: peak memory of the blocked head, then of
/// what `score` did before (all [tokens × vocab] logits, then log-softmax). Run first: VmHWM only grows.
fn score_memory() {
    let cfg = drpo::config::ModelConfig {
        vocab_size: 151_936,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 1,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        rope_theta: 1e6,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 4096,
        tie_word_embeddings: true,
        bos_token_id: None,
        eos_token_ids: vec![0],
        torch_dtype: None,
    };
    let m = Model::<f32>::random(cfg, 7, 0.02);
    let seqs: Vec<Vec<u32>> = (0..4).map(|s| (0..512).map(|t| ((s * 7919 + t * 104729) % 151_936) as u32).collect()).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let n: usize = seqs.iter().map(Vec::len).sum();
    let base = peak_rss_mb();
    let t = Instant::now();
    let blocked = m.score(&refs, 1.0, false).unwrap();
    let blocked_ms = t.elapsed().as_secs_f64() * 1e3;
    let after_blocked = peak_rss_mb();
    let t = Instant::now();
    let logits = m.logits(&refs).unwrap();
    let targets: Vec<u32> = seqs.iter().flat_map(|s| s.iter().skip(1).copied().chain([0])).collect();
    let (mut logp, mut lse) = (vec![0f32; n], vec![0f32; n]);
    drpo::cpu::logprob::logprob_fwd(&mut logp, &mut lse, &logits, &targets, 151_936, 1.0);
    let full_ms = t.elapsed().as_secs_f64() * 1e3;
    let after_full = peak_rss_mb();
    let same = blocked.logp.concat().iter().zip(logp.chunks(512).flat_map(|r| &r[..511])).all(|(a, b)| a.to_bits() == b.to_bits());
    println!(
        "score f32, {n} tokens, vocab 151936, hidden 64: blocked head {blocked_ms:.0} ms, peak +{:.0} MiB;  \
         full logits {full_ms:.0} ms, peak +{:.0} MiB (logits alone {:.0} MiB); bitwise equal {same}",
        after_blocked - base,
        after_full - base,
        (n * 151_936 * 4) as f64 / (1u64 << 20) as f64
    );
}

/// Saving a 25M-parameter model in f32: peak memory of the streaming writer, then of what the save did
/// before (every tensor's bytes, then the whole serialized file, then the write).
fn save_memory() {
    let cfg = drpo::config::ModelConfig {
        vocab_size: 8000,
        hidden_size: 512,
        intermediate_size: 1024,
        num_hidden_layers: 8,
        num_attention_heads: 8,
        num_key_value_heads: 2,
        head_dim: 64,
        rope_theta: 1e6,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 4096,
        tie_word_embeddings: false,
        bos_token_id: None,
        eos_token_ids: vec![0],
        torch_dtype: None,
    };
    let m = Model::<f32>::random(cfg, 3, 0.02);
    let dir = std::env::temp_dir().join(format!("drpo-bench-save-{}", std::process::id()));
    let base = peak_rss_mb();
    let t = Instant::now();
    drpo::weights::save_params(&dir, &m.cfg, &m.layout, &m.params, drpo::weights::SaveDtype::F32).unwrap();
    let (stream_ms, after_stream) = (t.elapsed().as_secs_f64() * 1e3, peak_rss_mb());
    let t = Instant::now();
    let blobs: Vec<(String, Vec<usize>, Vec<u8>)> =
        m.layout.entries.iter().map(|e| (e.name.clone(), e.shape.clone(), m.params[e.range()].iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = blobs
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    let meta: std::collections::HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = safetensors::tensor::serialize(views, Some(meta)).unwrap();
    drpo::error::write_atomic(dir.join("old.safetensors"), &bytes).unwrap();
    let (old_ms, after_old) = (t.elapsed().as_secs_f64() * 1e3, peak_rss_mb());
    let same = std::fs::read(dir.join("model.safetensors")).unwrap() == bytes;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "save f32, {:.1}M parameters ({:.0} MiB, largest tensor {:.0} MiB): streaming {stream_ms:.0} ms, peak +{:.0} MiB;  \
         whole-file buffers {old_ms:.0} ms, peak +{:.0} MiB; byte-identical files {same}",
        m.params.len() as f64 / 1e6,
        (m.params.len() * 4) as f64 / (1u64 << 20) as f64,
        (8000 * 512 * 4) as f64 / (1u64 << 20) as f64,
        after_stream - base,
        after_old - base
    );
}

/// Attention before the inference path: per sequence, heads one after another, probabilities kept.
fn attention_serial(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], s: AttnShape) {
    let AttnShape { tq, tk, nh, nkv, hd } = s;
    let scale = 1.0 / (hd as f32).sqrt();
    for h in 0..nh {
        let kvh = h / (nh / nkv);
        for i in 0..tq {
            let qi = &q[(i * nh + h) * hd..(i * nh + h + 1) * hd];
            let p = &mut probs[(h * tq + i) * tk..(h * tq + i + 1) * tk];
            let visible = tk - tq + i + 1;
            let mut m = f32::NEG_INFINITY;
            for j in 0..visible {
                p[j] = drpo::cpu::dot(qi, &k[(j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd]) * scale;
                m = m.max(p[j]);
            }
            let mut sum = 0.0;
            for pj in &mut p[..visible] {
                *pj = (*pj - m).exp();
                sum += *pj;
            }
            for pj in &mut p[..visible] {
                *pj /= sum;
            }
            p[visible..].fill(0.0);
            let o = &mut out[(i * nh + h) * hd..(i * nh + h + 1) * hd];
            o.fill(0.0);
            for j in 0..visible {
                drpo::cpu::axpy(o, p[j], &v[(j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd]);
            }
        }
    }
}

fn attention_prefill() {
    // one Qwen2-1.5B layer's attention (12 query heads, 2 kv heads, hd 128) over a 1024-token prompt
    let s = AttnShape { tq: 1024, tk: 1024, nh: 12, nkv: 2, hd: 128 };
    let q = filled(s.tq * s.nh * s.hd, 5);
    let k = filled(s.tk * s.nkv * s.hd, 6);
    let v = filled(s.tk * s.nkv * s.hd, 7);
    let (mut a, mut b, mut c) = (vec![0f32; q.len()], vec![0f32; q.len()], vec![0f32; q.len()]);
    let mut probs = vec![0f32; s.nh * s.tq * s.tk];
    let old = best_ms(3, || attention_serial(&mut a, &mut probs, &q, &k, &v, s));
    let rec = best_ms(3, || attention_fwd(&mut b, &mut probs, &q, &k, &v, s));
    let new = best_ms(3, || attention_fwd_infer(&mut c, &q, &k, &v, s));
    let same = a.iter().zip(&b).zip(&c).all(|((x, y), z)| x.to_bits() == y.to_bits() && y.to_bits() == z.to_bits());
    println!(
        "attention f32 {s:?}: serial heads {old:.1} ms;  recording, heads in parallel {rec:.1} ms;  \
         inference (no [nh, t, t] = {:.0} MiB) {new:.1} ms; bitwise equal {same}",
        (probs.len() * 4) as f64 / (1u64 << 20) as f64
    );
}

/// The forward before blocking: one row of x against all of W per task (W read once per row).
fn matmul_fwd_rows(out: &mut [f32], x: &[f32], w: &[f32], n: usize, d_in: usize, d_out: usize) {
    let row = |out_row: &mut [f32], xr: &[f32], o0: usize| {
        for (j, y) in out_row.iter_mut().enumerate() {
            let o = o0 + j;
            *y = drpo::cpu::dot(xr, &w[o * d_in..(o + 1) * d_in]) + 0.0;
        }
    };
    if n >= 4 {
        out.par_chunks_mut(d_out).zip(x.par_chunks(d_in)).for_each(|(o, xr)| row(o, xr, 0));
    } else {
        for r in 0..n {
            let xr = &x[r * d_in..(r + 1) * d_in];
            out[r * d_out..(r + 1) * d_out].par_chunks_mut(256).enumerate().for_each(|(k, o)| row(o, xr, k * 256));
        }
    }
}

/// The backward before blocking.
#[allow(clippy::too_many_arguments)]
fn matmul_bwd_rows(dx: &mut [f32], dw: &mut [f32], dout: &[f32], x: &[f32], w: &[f32], n: usize, d_in: usize, d_out: usize) {
    dx.par_chunks_mut(d_in).zip(dout.par_chunks(d_out)).for_each(|(dxr, dr)| {
        for (o, &g) in dr.iter().enumerate() {
            drpo::cpu::axpy(dxr, g, &w[o * d_in..(o + 1) * d_in]);
        }
    });
    dw.par_chunks_mut(d_in).enumerate().for_each(|(o, dwr)| {
        for r in 0..n {
            drpo::cpu::axpy(dwr, dout[r * d_out + o], &x[r * d_in..(r + 1) * d_in]);
        }
    });
}

/// The fastest of `reps` runs after one warm-up: on a shared machine the minimum is the closest to
/// the uncontended time (the median moves with other people's load).
fn best_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// One sampling row at Qwen2's vocabulary: logits spread like a model's (a few nats between the top
/// tokens, a long tail), top-p 0.95 (SPEC's eval) and top-k 50 + top-p 0.9.
fn sampling_row() {
    let v = 151_936;
    let logits: Vec<f32> = filled(v, 5).iter().map(|x| 12.0 * x * x * x).collect();
    for p in [
        SamplingParams { temperature: 0.6, top_k: 0, top_p: 0.95 },
        SamplingParams { temperature: 1.0, top_k: 50, top_p: 0.9 },
    ] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let old = best_ms(5, || a = kept_masses_sorted(&logits, &p));
        let new = best_ms(5, || b = kept_masses(&logits, &p));
        assert_eq!(a, b, "selection differs from the full sort");
        let kept = b.iter().filter(|&&m| m > 0).count();
        println!("sampling v={v} T={} top_k={} top_p={}: full sort {old:7.2} ms   selection {new:7.2} ms   ({kept} kept, equal)", p.temperature, p.top_k, p.top_p);
    }
}

fn filled(len: usize, seed: u32) -> Vec<f32> {
    // a cheap deterministic fill in (-1, 1)
    (0..len).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 23) as f32 - 1.0).collect()
}

fn main() {
    println!("threads {}", rayon::current_num_threads());
    // `cargo bench --bench cpu -- score|attention|matmul` runs one section
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if run("save") {
        save_memory();
    }
    if run("score") {
        score_memory();
    }
    if run("attention") {
        attention_prefill();
    }
    if run("sampling") {
        sampling_row();
    }
    if !run("matmul") {
        return;
    }
    let (d_in, d_out) = (1536, 8960); // Qwen2-1.5B gate/up projection
    let w = filled(d_in * d_out, 1);
    println!("matmul_fwd f32 {d_in}→{d_out} (W {:.1} MB)", (w.len() * 4) as f64 / 1e6);
    for n in [1usize, 4, 16, 64, 256] {
        let x = filled(n * d_in, 2);
        let (mut a, mut b) = (vec![0f32; n * d_out], vec![0f32; n * d_out]);
        let reps = if n >= 64 { 5 } else { 11 };
        let old = best_ms(reps, || matmul_fwd_rows(&mut a, &x, &w, n, d_in, d_out));
        let new = best_ms(reps, || matmul_fwd(&mut b, &x, &w, None, n, d_in, d_out));
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "blocked forward differs");
        let gflop = 2.0 * (n * d_in * d_out) as f64 / 1e9;
        println!("  n={n:<4} rows {old:8.2} ms   blocked {new:8.2} ms   ({:.1} GFLOP/s)   bitwise equal", gflop / new * 1e3);
    }
    println!("matmul_bwd f32 {d_in}→{d_out}");
    for n in [16usize, 64, 256] {
        let x = filled(n * d_in, 3);
        let dout = filled(n * d_out, 4);
        let (mut dx_a, mut dw_a) = (vec![0f32; n * d_in], vec![0f32; d_out * d_in]);
        let (mut dx_b, mut dw_b) = (vec![0f32; n * d_in], vec![0f32; d_out * d_in]);
        let old = best_ms(3, || {
            dx_a.fill(0.0);
            dw_a.fill(0.0);
            matmul_bwd_rows(&mut dx_a, &mut dw_a, &dout, &x, &w, n, d_in, d_out)
        });
        let new = best_ms(3, || {
            dx_b.fill(0.0);
            dw_b.fill(0.0);
            matmul_bwd(&mut dx_b, &mut dw_b, None, &dout, &x, &w, n, d_in, d_out)
        });
        let same = dx_a.iter().zip(&dx_b).chain(dw_a.iter().zip(&dw_b)).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "blocked backward differs");
        println!("  n={n:<4} rows {old:8.2} ms   blocked {new:8.2} ms   bitwise equal");
    }
}
