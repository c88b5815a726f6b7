//! drpo's side of `bench/gpu.sh` (drpo against PyTorch on one GPU): the cases, and their times.
//!   cargo bench --bench vs_torch_gpu -- --list [--dry]            the cases, one JSON line each
//!   cargo bench --bench vs_torch_gpu -- [--dry] [--device gpu|sim] [FILTER]    and their times
//! `bench/torch_gpu.py` reads the list and times the same cases with its peers (cuBLAS, SDPA,
//! transformers); `bench/gpu_table.py` joins the two. One list, so both sides run the same shapes.
//!
//! Cases, bf16 throughout, at Qwen2.5-0.5B's and 1.5B's shapes (random weights, same shapes, each
//! side its own values):
//! - `matmul`: y = x·Wᵀ, dX = dY·W, dW = dYᵀ·X of four projections, n = 8192 tokens;
//! - `attention`: causal GQA attention forward (+ log-sum-exp) and backward over packed sequences
//!   (8 × 1024, 1 × 8192 tokens) with the 0.5B heads (hd 64) and the 1.5B heads (hd 128);
//! - `score`: response log-probs of 4 × 1024 tokens (the model forward and the head);
//! - `generate`: 16 prompts of 32 tokens, 128 new tokens each at temperature 0.6 (no EOS: every
//!   sequence runs to the end);
//! - `train_step`: score with the record, backward of Σ w·logp, one AdamW step (4 × 1024 tokens).
//!
//! Kernel-level cases: the median of 5 batches of event-timed launches ([`common::time_us`]);
//! model-level: the median of 3 calls after a warm-up, wall clock, host work included.
//! Output: `{"case", "ms", "flops"}` per case, or `{"case", "missing": why}` when drpo cannot run
//! it (the device training step before it exists); `--dry` (tiny models and shapes, one call each)
//! checks the logic on the simulated device (tests/bench_dry.rs).

#[path = "common.rs"]
pub mod common;

use common::{random, time_us, wall_ms, Opts};
use drpo::config::ModelConfig;
use drpo::generate::GenerateOptions;
use drpo::gpu::attention::{Heads, PackedSeqs};
use drpo::gpu::matmul::MatmulTile;
use drpo::gpu::{self, bf16, Gpu};
use drpo::model::gpu::GpuModel;
use drpo::model::Model;
use drpo::optim::AdamWConfig;
use drpo::policy::{Policy, ScoreBatch};
use drpo::sampling::SamplingParams;
use rand::{rngs::StdRng, SeedableRng};
use serde_json::{json, Value};
use std::sync::Arc;

/// A GEMM of the training step: the forward product or one of the two backward ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    Fwd,
    Dx,
    Dw,
}

#[derive(Clone, Debug)]
pub enum Spec {
    Matmul { product: Product, n: usize, d_in: usize, d_out: usize },
    Attention { backward: bool, count: usize, len: usize, heads: Heads },
    Score { model: usize, count: usize, len: usize },
    Generate { model: usize, batch: usize, prompt: usize, new_tokens: usize },
    TrainStep { model: usize, count: usize, len: usize },
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub spec: Spec,
}

/// The two model shapes and every case, in run order (kernel-level first).
pub struct Plan {
    pub models: Vec<(&'static str, ModelConfig)>,
    pub cases: Vec<Case>,
}

fn qwen(vocab: usize, hidden: usize, ff: usize, layers: usize, (nh, nkv, hd): (usize, usize, usize)) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: ff,
        num_hidden_layers: layers,
        num_attention_heads: nh,
        num_key_value_heads: nkv,
        head_dim: hd,
        rope_theta: 1e6,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 32_768,
        tie_word_embeddings: true,
        bos_token_id: None,
        // none: generation runs every sequence to max_new_tokens on both sides
        eos_token_ids: vec![],
        torch_dtype: None,
    }
}

impl Plan {
    /// Qwen2.5-0.5B and 1.5B (`dry`: two tiny configs with the same structure, head_dim 16 and 32).
    pub fn new(dry: bool) -> Plan {
        let models = if dry {
            vec![("tiny-a", qwen(1000, 64, 96, 2, (4, 2, 16))), ("tiny-b", qwen(1000, 64, 128, 2, (2, 1, 32)))]
        } else {
            vec![("0.5B", qwen(151_936, 896, 4864, 24, (14, 2, 64))), ("1.5B", qwen(151_936, 1536, 8960, 28, (12, 2, 128)))]
        };
        let tokens = if dry { 40 } else { 8192 };
        let attention = if dry { vec![(2, 24), (1, 40)] } else { vec![(8, 1024), (1, 8192)] };
        let (count, len) = if dry { (2, 12) } else { (4, 1024) };
        let (batch, prompt, new_tokens) = if dry { (2, 4, 4) } else { (16, 32, 128) };
        let mut cases = Vec::new();
        for (name, cfg) in &models {
            let (c, ff, kvd) = (cfg.hidden_size, cfg.intermediate_size, cfg.kv_dim());
            for (proj, d_in, d_out) in [("q_o", c, c), ("k_v", c, kvd), ("gate_up", c, 2 * ff), ("down", ff, c)] {
                for (p, label) in [(Product::Fwd, "fwd"), (Product::Dx, "dX"), (Product::Dw, "dW")] {
                    let name = format!("matmul {label} {name} {proj} n={tokens} {d_in}->{d_out}");
                    cases.push(Case { name, spec: Spec::Matmul { product: p, n: tokens, d_in, d_out } });
                }
            }
        }
        for (_, cfg) in &models {
            let heads = Heads { nh: cfg.num_attention_heads, nkv: cfg.num_key_value_heads, hd: cfg.head_dim };
            for &(count, len) in &attention {
                for backward in [false, true] {
                    let pass = if backward { "bwd" } else { "fwd" };
                    let name = format!("attention {pass} hd={} nh={}/{} {count}x{len}", heads.hd, heads.nh, heads.nkv);
                    cases.push(Case { name, spec: Spec::Attention { backward, count, len, heads } });
                }
            }
        }
        for (m, (name, _)) in models.iter().enumerate() {
            cases.push(Case { name: format!("{name} score {count}x{len}"), spec: Spec::Score { model: m, count, len } });
            let name = format!("{name} generate {batch}x({prompt}+{new_tokens}) T=0.6");
            cases.push(Case { name, spec: Spec::Generate { model: m, batch, prompt, new_tokens } });
            cases.push(Case { name: format!("{} train step {count}x{len}", models[m].0), spec: Spec::TrainStep { model: m, count, len } });
        }
        Plan { models, cases }
    }

    fn model_json(cfg: &ModelConfig) -> Value {
        json!({
            "vocab": cfg.vocab_size, "hidden": cfg.hidden_size, "ff": cfg.intermediate_size,
            "layers": cfg.num_hidden_layers, "nh": cfg.num_attention_heads, "nkv": cfg.num_key_value_heads,
            "hd": cfg.head_dim, "theta": cfg.rope_theta, "eps": cfg.rms_norm_eps,
            "max_pos": cfg.max_position_embeddings, "tie": cfg.tie_word_embeddings,
        })
    }

    /// The case as the torch side reads it: kind, shapes, nominal flops where they are defined.
    pub fn json(&self, case: &Case) -> Value {
        match case.spec {
            Spec::Matmul { product, n, d_in, d_out } => {
                let p = match product {
                    Product::Fwd => "fwd",
                    Product::Dx => "dx",
                    Product::Dw => "dw",
                };
                json!({"case": case.name, "kind": "matmul", "product": p, "n": n, "d_in": d_in, "d_out": d_out, "flops": 2.0 * (n * d_in * d_out) as f64})
            }
            Spec::Attention { backward, count, len, heads } => {
                let fwd = 4.0 * (count * len * (len + 1) / 2 * heads.nh * heads.hd) as f64;
                json!({"case": case.name, "kind": "attention", "pass": if backward { "bwd" } else { "fwd" }, "count": count, "len": len,
                       "nh": heads.nh, "nkv": heads.nkv, "hd": heads.hd, "flops": if backward { 2.5 * fwd } else { fwd }})
            }
            Spec::Score { model, count, len } | Spec::TrainStep { model, count, len } => {
                let kind = if matches!(case.spec, Spec::Score { .. }) { "score" } else { "train_step" };
                json!({"case": case.name, "kind": kind, "model": Plan::model_json(&self.models[model].1), "count": count, "len": len})
            }
            Spec::Generate { model, batch, prompt, new_tokens } => json!({
                "case": case.name, "kind": "generate", "model": Plan::model_json(&self.models[model].1),
                "batch": batch, "prompt": prompt, "new_tokens": new_tokens, "temperature": 0.6,
            }),
        }
    }
}

/// Token t of sequence s: (s·7919 + t·104729 + 1) mod v (both sides use this formula).
pub fn tokens(count: usize, len: usize, v: usize) -> Vec<Vec<u32>> {
    (0..count).map(|s| (0..len).map(|t| ((s * 7919 + t * 104_729 + 1) % v) as u32).collect()).collect()
}

/// The device, the models built so far (one at a time: the previous one is dropped), the random state.
pub struct Runner {
    pub gpu: Arc<Gpu>,
    pub dry: bool,
    model: Option<(usize, GpuModel<bf16>)>,
    rng: StdRng,
}

impl Runner {
    pub fn new(gpu: Gpu, dry: bool) -> Runner {
        Runner { gpu: Arc::new(gpu), dry, model: None, rng: StdRng::seed_from_u64(2) }
    }

    fn model(&mut self, plan: &Plan, m: usize) -> drpo::Result<&mut GpuModel<bf16>> {
        if self.model.as_ref().is_none_or(|(i, _)| *i != m) {
            self.model = None; // free the previous model's device memory first
            let cpu = Model::<f32>::random(plan.models[m].1.clone(), 1, 0.02);
            // with f32 master weights (the train-step case updates them; the others only read)
            self.model = Some((m, GpuModel::for_training(self.gpu.clone(), &cpu)?));
        }
        Ok(&mut self.model.as_mut().expect("built above").1)
    }

    /// The case's time in ms, or the error that stopped it.
    pub fn time(&mut self, plan: &Plan, case: &Case) -> drpo::Result<f64> {
        let dry = self.dry;
        match case.spec {
            Spec::Matmul { product, n, d_in, d_out } => self.matmul(product, n, d_in, d_out),
            Spec::Attention { backward, count, len, heads } => self.attention(backward, count, len, heads),
            Spec::Score { model, count, len } => {
                let seqs = tokens(count, len, plan.models[model].1.vocab_size);
                let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
                let m = self.model(plan, model)?;
                wall_ms(dry, 3, || m.score(&refs, 1.0).map(|_| ()))
            }
            Spec::Generate { model, batch, prompt, new_tokens } => {
                let prompts = tokens(batch, prompt, plan.models[model].1.vocab_size);
                let opts = GenerateOptions {
                    max_new_tokens: new_tokens,
                    sampling: SamplingParams { temperature: 0.6, top_k: 0, top_p: 1.0 },
                    seed: 7,
                    eos_ids: vec![],
                    stream_offset: 0,
                };
                let m = self.model(plan, model)?;
                wall_ms(dry, 3, || {
                    let out = drpo::generate::generate(&*m, &prompts, &opts)?;
                    assert!(out.iter().all(|g| g.tokens.len() == new_tokens), "generate: a sequence stopped early");
                    Ok(())
                })
            }
            Spec::TrainStep { model, count, len } => {
                let seqs = tokens(count, len, plan.models[model].1.vocab_size);
                let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
                let weights: Vec<Vec<f64>> = (0..count).map(|s| (0..len - 1).map(|t| ((s + t) % 7) as f64 / 7.0 - 0.4).collect()).collect();
                let m = self.model(plan, model)?;
                let batch = ScoreBatch::sequences(&m.cfg, &refs, 1.0)?;
                let (mut opt, mut grads) = (m.new_optimizer()?, m.new_grads()?);
                wall_ms(dry, 3, || train_step(m, &batch, &weights, &mut opt, &mut grads))
            }
        }
    }

    fn matmul(&mut self, product: Product, n: usize, d_in: usize, d_out: usize) -> drpo::Result<f64> {
        let gpu = &*self.gpu;
        let x = gpu.htod(&random::<bf16>(&mut self.rng, n * d_in, 1.0))?;
        let w = gpu.htod(&random::<bf16>(&mut self.rng, d_out * d_in, 0.05))?;
        let us = match product {
            Product::Fwd => {
                let mut y = gpu.alloc_zeros::<bf16>(n * d_out)?;
                time_us(gpu, self.dry, 20, || gpu::matmul::matmul_fwd(gpu, &mut y.as_view_mut(), &x.as_view(), &w.as_view(), None, n, d_in, d_out))?
            }
            Product::Dx => {
                let dy = gpu.htod(&random::<bf16>(&mut self.rng, n * d_out, 1.0))?;
                let mut dx = gpu.alloc_zeros::<bf16>(n * d_in)?;
                let tile = MatmulTile::choose(gpu, n, d_in);
                time_us(gpu, self.dry, 20, || gpu::matmul::matmul_bwd_dx(gpu, tile, &mut dx.as_view_mut(), &dy.as_view(), &w.as_view(), n, d_in, d_out))?
            }
            Product::Dw => {
                let dy = gpu.htod(&random::<bf16>(&mut self.rng, n * d_out, 1.0))?;
                let mut dw = gpu.alloc_zeros::<f32>(d_out * d_in)?;
                let tile = MatmulTile::choose(gpu, d_out, d_in);
                time_us(gpu, self.dry, 20, || gpu::matmul::matmul_bwd_dw(gpu, tile, &mut dw.as_view_mut(), &dy.as_view(), &x.as_view(), n, d_in, d_out))?
            }
        };
        Ok(us / 1e3)
    }

    fn attention(&mut self, backward: bool, count: usize, len: usize, heads: Heads) -> drpo::Result<f64> {
        let gpu = &*self.gpu;
        let seqs = PackedSeqs::new(gpu, &vec![len; count])?;
        let (rows, qd, kvd) = (seqs.n_rows, heads.nh * heads.hd, heads.nkv * heads.hd);
        let rng = &mut self.rng;
        let (q, k, v) = (gpu.htod(&random::<bf16>(rng, rows * qd, 1.0))?, gpu.htod(&random::<bf16>(rng, rows * kvd, 1.0))?, gpu.htod(&random::<bf16>(rng, rows * kvd, 1.0))?);
        let (mut out, mut lse) = (gpu.alloc_zeros::<bf16>(rows * qd)?, gpu.alloc_zeros::<f32>(rows * heads.nh)?);
        let mut fwd = || gpu::attention::attention_fwd(gpu, &mut out.as_view_mut(), &mut lse.as_view_mut(), &q.as_view(), &k.as_view(), &v.as_view(), &seqs, heads);
        if !backward {
            return Ok(time_us(gpu, self.dry, 5, fwd)? / 1e3);
        }
        fwd()?; // the backward reads the forward's output and log-sum-exp
        let dout = gpu.htod(&random::<bf16>(rng, rows * qd, 1.0))?;
        let mut delta = gpu.alloc_zeros::<f32>(rows * heads.nh)?;
        let (mut dq, mut dk, mut dv) = (gpu.alloc_zeros::<bf16>(rows * qd)?, gpu.alloc_zeros::<bf16>(rows * kvd)?, gpu.alloc_zeros::<bf16>(rows * kvd)?);
        let us = time_us(gpu, self.dry, 5, || {
            let (q, k, v, o, l) = (q.as_view(), k.as_view(), v.as_view(), out.as_view(), lse.as_view());
            gpu::attention::attention_bwd(gpu, &mut dq.as_view_mut(), &mut dk.as_view_mut(), &mut dv.as_view_mut(), &mut delta.as_view_mut(), &dout.as_view(), &q, &k, &v, &o, &l, &seqs, heads)
        })?;
        Ok(us / 1e3)
    }
}

/// One training step through the policy seam, as the trainer takes it: score with the record, the
/// gradient of Σ w·logp, clipping at norm 1, one AdamW update.
fn train_step<P: Policy>(policy: &mut P, batch: &ScoreBatch, weights: &[Vec<f64>], opt: &mut P::Optimizer, grads: &mut P::Grads) -> drpo::Result<()> {
    let scored = policy.score_responses(batch, true)?;
    policy.zero_grads(grads)?;
    policy.backward_responses(&scored, weights, grads)?;
    policy.clip_grad_norm(grads, 1.0)?;
    policy.apply_update(opt, grads, &AdamWConfig::default(), 1e-6)
}

/// Runs every case the filter keeps, printing one JSON line each as it ends. A case drpo cannot
/// run (the device training step before it exists) prints its reason and the run goes on; every
/// other error stops the run.
pub fn run(runner: &mut Runner, plan: &Plan, filter: &str, out: &mut dyn FnMut(Value)) -> drpo::Result<()> {
    for case in plan.cases.iter().filter(|c| c.name.contains(filter)) {
        let line = match runner.time(plan, case) {
            Ok(ms) => json!({"case": case.name, "ms": ms}),
            Err(e) if matches!(case.spec, Spec::TrainStep { .. }) => json!({"case": case.name, "missing": e.to_string()}),
            Err(e) => return Err(e),
        };
        out(line);
    }
    Ok(())
}

#[allow(dead_code)] // the dry-run test includes this file for `Plan`, `Runner` and `run`
fn main() {
    let list = std::env::args().any(|a| a == "--list");
    let opts = match Opts::parse(std::env::args().skip(1).filter(|a| a != "--list")) {
        Ok(o) => o,
        Err(usage) => {
            eprintln!("{usage} [--list]");
            std::process::exit(2);
        }
    };
    let plan = Plan::new(opts.dry);
    let print = |v: Value| println!("{v}");
    if list {
        plan.cases.iter().filter(|c| opts.wants(&c.name)).for_each(|c| print(plan.json(c)));
        return;
    }
    let result = opts.open("vs_torch_gpu bench").and_then(|gpu| {
        let Some(gpu) = gpu else { return Ok(()) };
        println!("{}", json!({"device": format!("{gpu:?}"), "simulated": gpu.is_simulated()}));
        run(&mut Runner::new(gpu, opts.dry), &plan, &opts.filter, &mut |v| println!("{v}"))
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
