//! One line per kernel at Qwen2-0.5B sizes, with the bytes or flops it must move, so each line reads
//! against the roofline (H100: ~3.0 TB/s measured copy, ~800 TFLOP/s bf16 dense).
//!   cargo bench --bench kernels          (prints SKIP without a GPU)
//! Times: median of 5 batches of `iters` launches between two events, after 3 warm-ups; inputs are
//! random (never zeros); L2-resident when the working set fits in 50 MB (said per line).

use drpo::gpu::attention::{Heads, SeqTable};
use drpo::gpu::matmul::{MatmulPlan, MatmulTile};
use drpo::gpu::{self, bf16, Gpu, GpuFloat};
use drpo::sampling::SamplingParams;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn time_us(gpu: &Gpu, iters: usize, mut f: impl FnMut() -> drpo::Result<()>) -> drpo::Result<f64> {
    let mut batches = Vec::new();
    for _ in 0..5 {
        // each batch: 3 warm-ups, then `iters` launches between two events
        batches.push(gpu.time_us(iters, &mut f)?);
    }
    batches.sort_by(|a, b| a.total_cmp(b));
    Ok(batches[2])
}

fn random<T: GpuFloat>(rng: &mut StdRng, n: usize, scale: f32) -> Vec<T> {
    (0..n).map(|_| T::from_f32(rng.random_range(-scale..scale))).collect()
}

fn gbs(bytes: f64, us: f64) -> String {
    format!("{us:9.2} us {:7.0} GB/s", bytes / us / 1e3)
}
fn tflops(flops: f64, us: f64) -> String {
    format!("{us:9.2} us {:7.1} TFLOP/s", flops / us / 1e6)
}

/// The training attention forward (saving the log-sum-exp) and backward (dq + delta, then dk dv) over
/// `count` packed sequences of `len` tokens. FLOPs of causal attention: 4·hd·nh per visible (query,
/// key) pair in the forward (QKᵀ and PV); the backward does 2.5× that (QKᵀ and dO·Vᵀ recomputed, dV,
/// dQ, dK).
fn train_attention<T: GpuFloat>(gpu: &Gpu, rng: &mut StdRng, len: usize, count: usize, heads: Heads) -> drpo::Result<()> {
    let seqs = gpu::attention::PackedSeqs::new(gpu, &vec![len; count])?;
    let (rows, qd, kvd) = (seqs.n_rows, heads.nh * heads.hd, heads.nkv * heads.hd);
    let (q, k, v) = (gpu.htod(&random::<T>(rng, rows * qd, 1.0))?, gpu.htod(&random::<T>(rng, rows * kvd, 1.0))?, gpu.htod(&random::<T>(rng, rows * kvd, 1.0))?);
    let dout = gpu.htod(&random::<T>(rng, rows * qd, 1.0))?;
    let (mut att, mut lse, mut delta) = (gpu.alloc_zeros::<T>(rows * qd)?, gpu.alloc_zeros::<f32>(rows * heads.nh)?, gpu.alloc_zeros::<f32>(rows * heads.nh)?);
    let (mut dq, mut dk, mut dv) = (gpu.alloc_zeros::<T>(rows * qd)?, gpu.alloc_zeros::<T>(rows * kvd)?, gpu.alloc_zeros::<T>(rows * kvd)?);
    let fwd_flops = 4.0 * (count * len * (len + 1) / 2 * qd) as f64;
    let label = format!("{:<5} {count}×{len} tokens nh={} nkv={} hd={}", T::NAME, heads.nh, heads.nkv, heads.hd);
    let us = time_us(gpu, 5, || gpu::attention::attention_fwd(gpu, &mut att.as_view_mut(), &mut lse.as_view_mut(), &q.as_view(), &k.as_view(), &v.as_view(), &seqs, heads))?;
    println!("attention_fwd {label} (+lse)  {}", tflops(fwd_flops, us));
    let us = time_us(gpu, 5, || {
        let (q, k, v, o, l) = (q.as_view(), k.as_view(), v.as_view(), att.as_view(), lse.as_view());
        gpu::attention::attention_bwd(gpu, &mut dq.as_view_mut(), &mut dk.as_view_mut(), &mut dv.as_view_mut(), &mut delta.as_view_mut(), &dout.as_view(), &q, &k, &v, &o, &l, &seqs, heads)
    })?;
    println!("attention_bwd {label} (dq, dk, dv)  {}", tflops(2.5 * fwd_flops, us));
    Ok(())
}

fn run(gpu: &Gpu) -> drpo::Result<()> {
    let mut rng = StdRng::seed_from_u64(1);
    let (n, c, ff, v) = (4096usize, 896usize, 4864usize, 151_936usize);
    let heads = Heads { nh: 14, nkv: 2, hd: 64 };
    println!("{gpu:?}");

    // embedding gather (bf16): ids in, n rows out, n rows of the table read
    let table = gpu.htod(&random::<bf16>(&mut rng, v * c, 1.0))?;
    let ids = gpu.htod(&(0..n).map(|_| rng.random_range(0..v as u32)).collect::<Vec<_>>())?;
    let mut x = gpu.htod(&random::<bf16>(&mut rng, n * c, 2.0))?;
    let us = time_us(gpu, 200, || gpu::embedding::embedding_fwd(gpu, &mut x.as_view_mut(), &ids.as_view(), &table.as_view(), n, c, v))?;
    println!("embedding_fwd bf16  n={n} c={c}            {}", gbs((2 * n * c * 2 + 4 * n) as f64, us));

    // RMSNorm
    let w = gpu.htod(&random::<bf16>(&mut rng, c, 1.0))?;
    let mut out = gpu.htod(&random::<bf16>(&mut rng, n * c, 1.0))?;
    let mut rstd = gpu.alloc_zeros::<f32>(n)?;
    let us = time_us(gpu, 200, || {
        gpu::rmsnorm::rmsnorm_fwd(gpu, &mut out.as_view_mut(), &mut rstd.as_view_mut(), &x.as_view(), &w.as_view(), n, c, 1e-6)
    })?;
    println!("rmsnorm_fwd bf16    n={n} c={c}            {}  (L2-resident)", gbs((2 * n * c * 2 + 2 * c + 4 * n) as f64, us));

    // rotary on q (in place)
    let (cos, sin) = gpu::rope::rope_table(32_768, heads.hd, 1e6);
    let (cos, sin) = (gpu.htod(&cos)?, gpu.htod(&sin)?);
    let pos = gpu.htod(&(0..n as i32).collect::<Vec<_>>())?;
    let mut q = gpu.htod(&random::<bf16>(&mut rng, n * heads.nh * heads.hd, 2.0))?;
    let us = time_us(gpu, 200, || {
        gpu::rope::rope_fwd(gpu, &mut q.as_view_mut(), &pos.as_view(), &cos.as_view(), &sin.as_view(), n, heads.nh, heads.hd)
    })?;
    let qn = n * heads.nh * heads.hd;
    println!("rope_fwd bf16       n={n} nh=14 hd=64       {}", gbs((2 * qn * 2 + n * heads.hd * 4) as f64, us));

    // GEMMs: the MLP up projection (prefill) and the same at decode size, both tiles; the f32 path
    let xw = gpu.htod(&random::<bf16>(&mut rng, n * c, 1.0))?;
    let wu = gpu.htod(&random::<bf16>(&mut rng, 2 * ff * c, 0.05))?;
    let mut y = gpu.alloc_zeros::<bf16>(n * 2 * ff)?;
    for (rows, tile) in [(n, MatmulTile::Large), (n, MatmulTile::Small), (64, MatmulTile::Large), (64, MatmulTile::Small)] {
        let us = time_us(gpu, 20, || {
            gpu::matmul::matmul_fwd_with(gpu, tile, &mut y.slice_mut(0..rows * 2 * ff), &xw.slice(0..rows * c), &wu.as_view(), None, rows, c, 2 * ff)
        })?;
        let flops = 2.0 * rows as f64 * c as f64 * (2 * ff) as f64;
        let bytes = ((rows * c + 2 * ff * c + rows * 2 * ff) * 2) as f64;
        println!("matmul_fwd bf16 {tile:?}  m={rows} k={c} n={}  {}  {}", 2 * ff, tflops(flops, us), gbs(bytes, us));
    }
    let x32 = gpu.htod(&random::<f32>(&mut rng, n * c, 1.0))?;
    let w32 = gpu.htod(&random::<f32>(&mut rng, 2 * ff * c, 0.05))?;
    let mut y32 = gpu.alloc_zeros::<f32>(n * 2 * ff)?;
    let us = time_us(gpu, 5, || gpu::matmul::matmul_fwd(gpu, &mut y32.as_view_mut(), &x32.as_view(), &w32.as_view(), None, n, c, 2 * ff))?;
    println!("matmul_fwd f32      m={n} k={c} n={}   {}", 2 * ff, tflops(2.0 * (n * c * 2 * ff) as f64, us));

    // attention: prefill 8 sequences × 512 tokens; decode 64 sequences over 1024 cached keys
    let kvd = heads.nkv * heads.hd;
    let qd = heads.nh * heads.hd;
    for (label, seqs, cap) in [("prefill", vec![(0usize, 512usize); 8], 512usize), ("decode", vec![(1023, 1); 64], 1024)] {
        let entries: Vec<_> = seqs.iter().enumerate().map(|(i, &(p, t))| (i, p, t)).collect();
        let table = SeqTable::new(gpu, &entries, seqs.len(), cap)?;
        let kc = gpu.htod(&random::<bf16>(&mut rng, seqs.len() * cap * kvd, 1.0))?;
        let vc = gpu.htod(&random::<bf16>(&mut rng, seqs.len() * cap * kvd, 1.0))?;
        let qq = gpu.htod(&random::<bf16>(&mut rng, table.n_rows * qd, 1.0))?;
        let mut att = gpu.alloc_zeros::<bf16>(table.n_rows * qd)?;
        let us = time_us(gpu, 20, || {
            if label == "decode" {
                gpu::attention::attention_decode(gpu, &mut att.as_view_mut(), &qq.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)
            } else {
                gpu::attention::attention_prefill(gpu, &mut att.as_view_mut(), &qq.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)
            }
        })?;
        let pairs: f64 = seqs.iter().map(|&(p, t)| (t * p + t * (t + 1) / 2) as f64).sum();
        let flops = 4.0 * pairs * (heads.nh * heads.hd) as f64;
        let bytes = (seqs.iter().map(|&(p, t)| (p + t) * kvd * 2 * 2).sum::<usize>() + table.n_rows * qd * 2 * 2) as f64;
        println!("attention_{label:<7} bf16 seqs={} rows={} nh=14 nkv=2 hd=64  {}  {}", seqs.len(), table.n_rows, tflops(flops, us), gbs(bytes, us));
    }

    // training attention over packed sequences (no cache): bf16 on tensor cores; f32 is the CUDA-core v1
    for (len, count) in [(1024usize, 8usize), (8192, 1)] {
        train_attention::<bf16>(gpu, &mut rng, len, count, heads)?;
    }
    train_attention::<f32>(gpu, &mut rng, 1024, 8, heads)?;

    // SwiGLU and residual (elementwise, bandwidth-bound)
    let mut act = gpu.alloc_zeros::<bf16>(n * ff)?;
    let us = time_us(gpu, 100, || gpu::swiglu::swiglu_fwd(gpu, &mut act.as_view_mut(), &y.as_view(), n, ff))?;
    println!("swiglu_fwd bf16     n={n} ff={ff}           {}", gbs((3 * n * ff * 2) as f64, us));
    let us = time_us(gpu, 200, || gpu::residual::residual_add(gpu, &mut x.as_view_mut(), &out.as_view()))?;
    println!("residual_add bf16   n={n} c={c}             {}", gbs((3 * n * c * 2) as f64, us));

    // fused head: 1024 scored tokens over the full vocabulary; the logits would be 622 MB in f32
    let rows = 1024;
    let targets: Vec<u32> = (0..rows).map(|_| rng.random_range(0..v as u32)).collect();
    let mut logp = gpu.alloc_zeros::<f32>(rows)?;
    let mut lse = gpu.alloc_zeros::<f32>(rows)?;
    // the scratch (partials, targets upload) is built once, outside the timed launches
    let mut head = gpu::logprob::HeadScratch::new::<bf16>(gpu, &targets, v)?;
    let us = time_us(gpu, 5, || {
        let h = xw.slice(0..rows * c);
        gpu::logprob::head_logprob_with(gpu, &mut head, &mut logp.as_view_mut(), &mut lse.as_view_mut(), &h, &table.as_view(), rows, c, v, 0.6)
    })?;
    // W (v·c bf16) once from HBM per launch of ≤ 4096 rows since the grid swap; h stays in L2
    let bytes = (v * c * 2 + rows * c * 2) as f64;
    println!("head_logprob bf16   n={rows} c={c} v={v}  {}  {}", tflops(2.0 * (rows * c * v) as f64, us), gbs(bytes, us));

    // sampler: 64 rows of the full vocabulary, top-p 0.9 (fixed-point masses in u64 scratch, several passes over it)
    let b = 64;
    let logits = gpu.htod(&random::<f32>(&mut rng, b * v, 8.0))?;
    let streams = gpu.htod(&(0..b as u64).collect::<Vec<_>>())?;
    let mut scratch = gpu.alloc_zeros::<u64>(b * v)?;
    let mut toks = gpu.alloc_zeros::<u32>(b)?;
    for params in [SamplingParams { temperature: 0.6, top_k: 0, top_p: 1.0 }, SamplingParams { temperature: 0.6, top_k: 0, top_p: 0.9 }] {
        let us = time_us(gpu, 10, || {
            gpu::sampling::sample(gpu, &mut toks.as_view_mut(), &mut scratch.as_view_mut(), &logits.as_view(), &streams.as_view(), b, v, &params, 7, 0)
        })?;
        println!("sample f32          rows={b} v={v} top_p={}   {}  (logits once + u64 scratch passes)", params.top_p, gbs((b * v * 4) as f64, us));
    }

    // the objective: the paper's chunk (4 questions × 8 responses) at ~4k tokens each, and 64 questions
    // × 8 at ~2k; f32 log-probs. DRPO reads ℓ and ℓ^old once (sums) and writes ∂loss/∂ℓ: 12 B/token;
    // the surrogate reads both twice and writes: 20 B/token. Each call ends in a readback (a sync).
    for (questions, mean_len) in [(4usize, 4096usize), (64, 2048)] {
        let rows = questions * 8;
        let group: Vec<usize> = (0..rows).map(|i| i / 8).collect();
        let correct: Vec<bool> = (0..rows).map(|i| i % 3 == 0).collect();
        let len: Vec<usize> = (0..rows).map(|_| rng.random_range(mean_len / 2..mean_len * 3 / 2)).collect();
        let finished = vec![true; rows];
        let o = drpo::rl::objectives::Outcomes { group: &group, correct: &correct, finished: &finished, len: &len, max_len: 2 * mean_len };
        let groups = gpu::objective::DeviceGroups::upload(gpu, &o)?;
        let mut work = gpu::objective::ObjectiveWork::new(gpu, &groups)?;
        let t = groups.tokens;
        let mut log_probs = || (0..t).map(|_| rng.random_range(-3.0f32..-1.0)).collect::<Vec<f32>>();
        let (lp, old) = (gpu.htod(&log_probs())?, gpu.htod(&log_probs())?);
        let tl = gpu::objective::TokenLogProbs { logp: lp.as_view(), old_logp: old.as_view() };
        let mut dlogp = gpu.alloc_zeros::<f32>(t)?;
        let hyper = drpo::rl::objectives::Hyper::default();
        let us = time_us(gpu, 50, || gpu::objective::drpo(gpu, &mut dlogp.as_view_mut(), &mut work, &groups, &tl, &hyper, 1.0).map(|_| ()))?;
        println!("objective drpo f32  n={rows} T={t}       {}  (4 launches + readback)", gbs((12 * t) as f64, us));
        let adv = gpu.htod(&(0..rows).map(|i| if i % 3 == 0 { 1.0 } else { -0.5 }).collect::<Vec<f64>>())?;
        let us = time_us(gpu, 50, || {
            gpu::objective::clipped_surrogate(gpu, &mut dlogp.as_view_mut(), &mut work, &groups, &tl, &adv.as_view(), Some(0.2), 1.0).map(|_| ())
        })?;
        println!("objective surrogate f32 n={rows} T={t}   {}  (3 launches + readback)", gbs((20 * t) as f64, us));
    }

    // the optimizer over Qwen2-0.5B's 494,032,768 parameters: grad norm (reads g: 4 B/param), AdamW with
    // the fused clip and the bf16 copy (p, m, v, g in; p, m, v, bf16 out: 30 B/param)
    let params = 494_032_768usize;
    let g = gpu.htod(&random::<f32>(&mut rng, params, 1e-3))?;
    let mut p = gpu.htod(&random::<f32>(&mut rng, params, 0.05))?;
    let (mut m, mut v2) = (gpu.alloc_zeros::<f32>(params)?, gpu.alloc_zeros::<f32>(params)?);
    let mut pbf = gpu.alloc_zeros::<bf16>(params)?;
    let mut norm = gpu.alloc_zeros::<f64>(1)?;
    let mut partial = gpu.alloc_zeros::<f64>(gpu::optim::grad_norm_scratch_len(params))?;
    let us = time_us(gpu, 10, || gpu::optim::grad_norm(gpu, &mut norm.as_view_mut(), &mut partial.as_view_mut(), &g.as_view()))?;
    println!("grad_norm f32       n={params}        {}  (CPU order: 2^15-element chunks, then one thread)", gbs((4 * params) as f64, us));
    let k = drpo::optim::AdamWScalars::<f32>::new(&drpo::optim::AdamWConfig::default(), 2e-6, 1);
    let us = time_us(gpu, 10, || {
        let (mut pv, mut mv, mut vv, mut bv) = (p.as_view_mut(), m.as_view_mut(), v2.as_view_mut(), pbf.as_view_mut());
        let bufs = gpu::optim::AdamWBuffers { params: &mut pv, m: &mut mv, v: &mut vv, params_bf16: Some(&mut bv) };
        gpu::optim::adamw_step(gpu, bufs, &g.as_view(), Some((&norm.as_view(), 1.0)), &k)
    })?;
    println!("adamw_step f32      n={params}        {}  (fused clip, bf16 copy)", gbs((30 * params) as f64, us));
    decode(gpu, &mut rng)?;
    backward(gpu, &mut rng)
}

/// The decoding step's kernels (issue 12): its GEMMs at the Qwen2-0.5B and 1.5B widths for 1, 16 and 64
/// sequences, whole-k (one block per 64-column tile walks all of k: before split-k) against the plan;
/// the attention projections' weight gradient over 4096 tokens, whole vs the plan; decode attention v2
/// (a block per query head over all keys) against v3 (flash-decoding, a block per key split serving
/// the whole GQA group). All memory-bound: read each line against ~3.0 TB/s of HBM, except where the
/// working set fits the 50 MB L2 and repeated launches find it there (said per line).
fn decode(gpu: &Gpu, rng: &mut StdRng) -> drpo::Result<()> {
    let l2 = |bytes: usize| if bytes < 50_000_000 { "  (L2-resident)" } else { "" };
    // (d_in, d_out) per decoding step: q (= o), k (= v), gate|up, down
    let shapes = [("0.5B q/o", 896, 896), ("0.5B k/v", 896, 128), ("0.5B gate|up", 896, 9728), ("0.5B down", 4864, 896)]
        .into_iter()
        .chain([("1.5B q/o", 1536, 1536), ("1.5B k/v", 1536, 256), ("1.5B gate|up", 1536, 17920), ("1.5B down", 8960, 1536)]);
    for (name, d_in, d_out) in shapes {
        let w = gpu.htod(&random::<bf16>(rng, d_out * d_in, 0.05))?;
        let x = gpu.htod(&random::<bf16>(rng, 64 * d_in, 1.0))?;
        let mut y = gpu.alloc_zeros::<bf16>(64 * d_out)?;
        for rows in [1, 16, 64] {
            // the weight once, x in, y out
            let bytes = (d_out * d_in + rows * d_in + rows * d_out) * 2;
            for plan in [MatmulPlan::Whole(MatmulTile::Small), MatmulPlan::forward(gpu, rows, d_in, d_out)] {
                let us = time_us(gpu, 50, || {
                    gpu::matmul::matmul_fwd_with(gpu, plan, &mut y.slice_mut(0..rows * d_out), &x.slice(0..rows * d_in), &w.as_view(), None, rows, d_in, d_out)
                })?;
                let blocks = d_out.div_ceil(64) * plan.splits(d_in);
                println!("matmul decode bf16 {name:<12} m={rows:<2} k={d_in} n={d_out} {blocks:>4} blocks {plan:?}  {}{}", gbs(bytes as f64, us), l2(bytes));
            }
        }
    }
    // weight gradients of the attention projections over 4096 tokens: dY, X in; dW (f32) read and written
    let n = 4096;
    for (name, d_in, d_out) in [("0.5B k/v", 896, 128), ("0.5B q/o", 896, 896), ("1.5B k/v", 1536, 256), ("1.5B q/o", 1536, 1536)] {
        let (x, dy) = (gpu.htod(&random::<bf16>(rng, n * d_in, 1.0))?, gpu.htod(&random::<bf16>(rng, n * d_out, 1.0))?);
        let mut dw = gpu.alloc_zeros::<f32>(d_out * d_in)?;
        for plan in [MatmulTile::choose(gpu, d_out, d_in).into(), MatmulPlan::dw(gpu, n, d_in, d_out)] {
            let us = time_us(gpu, 20, || gpu::matmul::matmul_bwd_dw(gpu, plan, &mut dw.as_view_mut(), &dy.as_view(), &x.as_view(), n, d_in, d_out))?;
            println!("matmul_bwd_dw bf16 {name:<8} tokens={n} d_in={d_in} d_out={d_out} {plan:?}  {}", tflops(2.0 * (n * d_in * d_out) as f64, us));
        }
    }
    // decode attention: K and V of every cached key once (v3; v2 reads them once per query head of the
    // group, from L2 when it can), q in, out
    let (h05, h15) = (Heads { nh: 14, nkv: 2, hd: 64 }, Heads { nh: 12, nkv: 2, hd: 128 });
    for (seqs, keys, heads) in [(64usize, 1024usize, h05), (1, 8192, h05), (16, 4096, h15), (1, 8192, h15)] {
        let (qd, kvd) = (heads.nh * heads.hd, heads.nkv * heads.hd);
        let entries: Vec<_> = (0..seqs).map(|i| (i, keys - 1, 1)).collect();
        let table = SeqTable::new(gpu, &entries, seqs, keys)?;
        let kc = gpu.htod(&random::<bf16>(rng, seqs * keys * kvd, 1.0))?;
        let vc = gpu.htod(&random::<bf16>(rng, seqs * keys * kvd, 1.0))?;
        let q = gpu.htod(&random::<bf16>(rng, seqs * qd, 1.0))?;
        let mut att = gpu.alloc_zeros::<bf16>(seqs * qd)?;
        let bytes = seqs * keys * kvd * 2 * 2 + 2 * seqs * qd * 2;
        let label = format!("seqs={seqs} keys={keys} nh={} nkv={} hd={}", heads.nh, heads.nkv, heads.hd);
        let us = time_us(gpu, 20, || gpu::attention::attention_decode_v2(gpu, &mut att.as_view_mut(), &q.as_view(), &kc.as_view(), &vc.as_view(), &table, heads))?;
        println!("attention_decode v2 bf16 {label}  {}{}", gbs(bytes as f64, us), l2(bytes));
        let us = time_us(gpu, 20, || gpu::attention::attention_decode(gpu, &mut att.as_view_mut(), &q.as_view(), &kc.as_view(), &vc.as_view(), &table, heads))?;
        println!("attention_decode v3 bf16 {label}  {}{}", gbs(bytes as f64, us), l2(bytes));
    }
    Ok(())
}

/// The backward kernels at the same sizes; every output accumulates, so its bytes count twice.
fn backward(gpu: &Gpu, rng: &mut StdRng) -> drpo::Result<()> {
    let (n, c, ff, v) = (4096usize, 896usize, 4864usize, 151_936usize);
    let heads = Heads { nh: 14, nkv: 2, hd: 64 };
    let x = gpu.htod(&random::<bf16>(rng, n * c, 2.0))?;
    let dout = gpu.htod(&random::<bf16>(rng, n * c, 1.0))?;
    let mut dx = gpu.htod(&random::<bf16>(rng, n * c, 1.0))?;

    // RMSNorm: dout, x in; dx read and written; the f32 dw partials written and read once
    let w = gpu.htod(&random::<bf16>(rng, c, 1.0))?;
    let rstd = gpu.htod(&random::<f32>(rng, n, 1.0).iter().map(|r| r.abs() + 0.5).collect::<Vec<_>>())?;
    let mut dw = gpu.alloc_zeros::<f32>(c)?;
    let mut part = gpu.alloc_zeros::<f32>(gpu::rmsnorm::bwd_scratch_len(n, c))?;
    let us = time_us(gpu, 200, || {
        gpu::rmsnorm::rmsnorm_bwd(gpu, &mut dx.as_view_mut(), &mut dw.as_view_mut(), &mut part.as_view_mut(), &dout.as_view(), &x.as_view(), &w.as_view(), &rstd.as_view(), n, c)
    })?;
    let bytes = 4 * n * c * 2 + 2 * part.len() * 4 + 2 * c + 4 * n + 8 * c;
    println!("rmsnorm_bwd bf16    n={n} c={c}            {}  (L2-resident)", gbs(bytes as f64, us));

    // rotary backward on dq (in place)
    let (cos, sin) = gpu::rope::rope_table(32_768, heads.hd, 1e6);
    let (cos, sin) = (gpu.htod(&cos)?, gpu.htod(&sin)?);
    let pos = gpu.htod(&(0..n as i32).collect::<Vec<_>>())?;
    let mut dq = gpu.htod(&random::<bf16>(rng, n * heads.nh * heads.hd, 2.0))?;
    let us = time_us(gpu, 200, || gpu::rope::rope_bwd(gpu, &mut dq.as_view_mut(), &pos.as_view(), &cos.as_view(), &sin.as_view(), n, heads.nh, heads.hd))?;
    println!("rope_bwd bf16       n={n} nh=14 hd=64       {}", gbs((2 * n * heads.nh * heads.hd * 2 + n * heads.hd * 4) as f64, us));

    // SwiGLU: dout [n, ff] and gu [n, 2ff] in, dgu [n, 2ff] read and written
    let gu = gpu.htod(&random::<bf16>(rng, n * 2 * ff, 4.0))?;
    let dact = gpu.htod(&random::<bf16>(rng, n * ff, 1.0))?;
    let mut dgu = gpu.alloc_zeros::<bf16>(n * 2 * ff)?;
    let us = time_us(gpu, 100, || gpu::swiglu::swiglu_bwd(gpu, &mut dgu.as_view_mut(), &dact.as_view(), &gu.as_view(), n, ff))?;
    println!("swiglu_bwd bf16     n={n} ff={ff}           {}", gbs((7 * n * ff * 2) as f64, us));

    // embedding: random ids over the vocabulary (few repeats); dout once, each touched f32 row read and written
    let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
    let plan = gpu::embedding::EmbeddingGradPlan::new(gpu, &ids, v)?;
    let mut dtable = gpu.alloc_zeros::<f32>(v * c)?;
    let us = time_us(gpu, 200, || gpu::embedding::embedding_bwd(gpu, &mut dtable.as_view_mut(), &dout.as_view(), &plan, c))?;
    let bytes = n * c * 2 + plan.segments() * c * 4 * 2 + 3 * n * 4;
    println!("embedding_bwd bf16  n={n} c={c} ({} ids)  {}", plan.segments(), gbs(bytes as f64, us));

    // linear backward (dx and dw, the launcher's tiles) at the MLP's up (gate|up) and down projections
    for (d_in, d_out) in [(c, 2 * ff), (ff, c)] {
        let xin = gpu.htod(&random::<bf16>(rng, n * d_in, 1.0))?;
        let wt = gpu.htod(&random::<bf16>(rng, d_out * d_in, 0.05))?;
        let dy = gpu.htod(&random::<bf16>(rng, n * d_out, 1.0))?;
        let mut dxin = gpu.alloc_zeros::<bf16>(n * d_in)?;
        let mut dwt = gpu.alloc_zeros::<f32>(d_out * d_in)?;
        let us = time_us(gpu, 10, || {
            gpu::matmul::matmul_bwd(gpu, &mut dxin.as_view_mut(), &mut dwt.as_view_mut(), None, &dy.as_view(), &xin.as_view(), &wt.as_view(), n, d_in, d_out)
        })?;
        let flops = 4.0 * (n * d_in * d_out) as f64;
        println!("matmul_bwd bf16     m={n} d_in={d_in} d_out={d_out}  {}  (dx + dw)", tflops(flops, us));
    }
    let (d_in, d_out) = (c, 2 * ff);
    let xin = gpu.htod(&random::<f32>(rng, n * d_in, 1.0))?;
    let wt = gpu.htod(&random::<f32>(rng, d_out * d_in, 0.05))?;
    let dy = gpu.htod(&random::<f32>(rng, n * d_out, 1.0))?;
    let (mut dxin, mut dwt) = (gpu.alloc_zeros::<f32>(n * d_in)?, gpu.alloc_zeros::<f32>(d_out * d_in)?);
    let mut db = gpu.alloc_zeros::<f32>(d_out)?;
    let us = time_us(gpu, 5, || {
        let db = Some(&mut db.as_view_mut());
        gpu::matmul::matmul_bwd(gpu, &mut dxin.as_view_mut(), &mut dwt.as_view_mut(), db, &dy.as_view(), &xin.as_view(), &wt.as_view(), n, d_in, d_out)
    })?;
    println!("matmul_bwd f32      m={n} d_in={d_in} d_out={d_out}  {}  (dx + dw + db)", tflops(4.0 * (n * d_in * d_out) as f64, us));

    // fused head backward: 1024 scored tokens over the full vocabulary; three products (the logits
    // recomputed, dh, dW) and the dlogits chunks through memory (written once, read twice, bf16)
    let rows = 1024;
    let targets: Vec<u32> = (0..rows).map(|_| rng.random_range(0..v as u32)).collect();
    let (h, wh) = (gpu.htod(&random::<bf16>(rng, rows * c, 1.0))?, gpu.htod(&random::<bf16>(rng, v * c, 0.05))?);
    let dlogp = gpu.htod(&random::<f32>(rng, rows, 1.0))?;
    let lse = gpu.htod(&vec![12.0f32; rows])?;
    let mut dh = gpu.alloc_zeros::<bf16>(rows * c)?;
    let mut dwh = gpu.alloc_zeros::<f32>(v * c)?;
    let mut scratch = gpu::logprob::HeadGradScratch::<bf16>::new(gpu, &targets, v)?;
    let us = time_us(gpu, 3, || {
        gpu::logprob::head_bwd_with(gpu, &mut scratch, &mut dh.as_view_mut(), &mut dwh.as_view_mut(), &dlogp.as_view(), &lse.as_view(), &h.as_view(), &wh.as_view(), rows, c, v, 0.6)
    })?;
    // W read by two products, dW (f32) read and written, dlogits 3 × 2 bytes per logit
    let bytes = (2 * v * c * 2 + 2 * v * c * 4 + 3 * rows * v * 2) as f64;
    println!("head_bwd bf16       n={rows} c={c} v={v}  {}  {}", tflops(6.0 * (rows * c * v) as f64, us), gbs(bytes, us));
    Ok(())
}

fn main() {
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(drpo::Error::NoDevice { why }) => {
            println!("SKIP kernels bench: {why}");
            return;
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = run(&gpu) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
