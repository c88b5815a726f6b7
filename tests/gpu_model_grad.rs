//! The GPU model's uncached forward and whole-model backward (`model::gpu_train`) against the CPU f64
//! model, on every fixture and on each device: response log-probs (f32 and bf16), the parameter
//! gradient per tensor (f32 against the f64 gradient; bf16 against the f64 model on bf16-rounded
//! weights), the same bits for every token budget down to one sequence per chunk (the record's
//! device copy of the response log-probs too), and the same bits from run to run.

mod gpu_common;
use drpo::gpu::{bf16, Gpu, GpuFloat};
use drpo::model::gpu::GpuModel;
use drpo::model::Model;
use drpo::policy::{Policy, ScoreBatch};
use gpu_common::*;
use rand::Rng;
use std::sync::Arc;

/// The fixture's input sequences, cut to their lengths.
fn fixture_inputs(dir: &std::path::Path) -> Vec<Vec<u32>> {
    let (ids, shape) = read_tensor(&dir.join("reference.safetensors"), "input_ids");
    let (lens, _) = read_tensor(&dir.join("reference.safetensors"), "lengths");
    (0..shape[0]).map(|b| ids[b * shape[1]..b * shape[1] + lens[b] as usize].iter().map(|&x| x as u32).collect()).collect()
}

/// Four (prompt, response) pairs cut from the fixture's two sequences: prompts of 1 to a third of a
/// sequence, so prompt rows (no gradient) and response rows sit in every sequence, and lengths differ
/// (the chunking test cuts between them).
fn batch(dir: &std::path::Path, temp: f64, cfg: &drpo::config::ModelConfig) -> ScoreBatch {
    let s = fixture_inputs(dir);
    let (a, b) = (&s[0], &s[1]);
    let pairs: [(&[u32], &[u32]); 4] =
        [(&a[..a.len() / 3], &a[a.len() / 3..]), (&b[..1], &b[1..]), (&b[..b.len() / 3], &b[b.len() / 3..b.len() / 2]), (&a[..2], &a[2..4])];
    let (prompts, responses): (Vec<&[u32]>, Vec<&[u32]>) = pairs.into_iter().unzip();
    ScoreBatch::responses(cfg, &prompts, &responses, temp).unwrap()
}

/// d loss / d logp of every response token, uniform in [−1, 1].
fn random_dlogp(rng: &mut rand::rngs::StdRng, logp: &[Vec<f64>]) -> Vec<Vec<f64>> {
    logp.iter().map(|r| r.iter().map(|_| rng.random_range(-1.0..=1.0)).collect()).collect()
}

/// The response log-probs and the gradient of Σ dlogp·logp of a policy.
fn score_and_grad<P: Policy>(p: &P, batch: &ScoreBatch, dlogp: &[Vec<f64>]) -> drpo::Result<(Vec<Vec<f64>>, Vec<f64>)> {
    let scored = p.score_responses(batch, true)?;
    let mut grads = p.new_grads()?;
    p.backward_responses(&scored, dlogp, &mut grads)?;
    Ok((scored.logp, p.grads_to_host(&grads)?))
}

/// Compares a gradient with the reference tensor by tensor, a projection's weight and bias as one
/// tensor: the bias is the weight's column for a constant input 1, so its terms have the weight's
/// scale, while its sum can cancel far below them (the key bias: Σ_j ds_ij = 0 in every query row, so
/// only what the rotary turns survives, and at low frequencies nearly nothing does), and alone its
/// relative error would measure that cancellation, not the arithmetic. The embedding rows of ids
/// absent from the batch have no term at all (untied: exactly zero in the reference) and must be
/// exactly zero; the other elements meet `bound` with the floor at their own rms (the absent rows'
/// zeros would put it far below the scale of the used rows).
fn assert_grads_close(what: &str, model: &Model<f64>, got: &[f64], want: &[f64], bound: Bound) {
    assert_eq!(got.len(), want.len(), "{what}: gradient lengths");
    let c = model.cfg.hidden_size;
    let entries = &model.layout.entries;
    let mut k = 0;
    while k < entries.len() {
        let e = &entries[k];
        let bias = entries.get(k + 1).filter(|b| b.name == e.name.replace(".weight", ".bias"));
        let (range, name) = match bias {
            Some(b) => (e.offset..b.range().end, format!("{} and bias", e.name)),
            None => (e.range(), e.name.clone()),
        };
        k += 1 + bias.is_some() as usize;
        let (g, w) = (&got[range.clone()], &want[range.clone()]);
        let mut keep = vec![true; w.len()];
        if range == model.layout.embed {
            for (row, (gr, wr)) in g.chunks(c).zip(w.chunks(c)).enumerate() {
                if wr.iter().all(|&x| x == 0.0) {
                    assert!(gr.iter().all(|&x| x == 0.0), "{what}: embedding row {row} has no term, yet got {gr:?}");
                    keep[row * c..(row + 1) * c].fill(false);
                }
            }
        }
        let absent = keep.iter().filter(|&&k| !k).count() / c;
        let (g, w): (Vec<f64>, Vec<f64>) = g.iter().zip(w).zip(&keep).filter(|(_, &k)| k).map(|((&g, &w), _)| (g, w)).unzip();
        assert_close(&format!("{what} grad {name} ({absent} absent rows)"), &g, &w, bound);
    }
}

#[test]
fn uncached_scores_and_gradients_match_the_cpu() -> drpo::Result<()> {
    let mut rng = rng("gpu_model_grad");
    for gpu in devices("gpu_model_grad") {
        let gpu = Arc::new(gpu);
        for name in FIXTURES {
            let dir = fixture(name);
            let cpu = Model::<f32>::load(&dir)?;
            let cpu64 = Model::<f64>::load(&dir)?;
            let batch = batch(&dir, 0.6, &cpu.cfg);
            let want_logp = cpu64.score_responses(&batch, false)?.logp;
            let dlogp = random_dlogp(&mut rng, &want_logp);
            let (_, want) = score_and_grad(&cpu64, &batch, &dlogp)?;

            let m32 = GpuModel::<f32>::for_training(gpu.clone(), &cpu)?;
            let plain = m32.score_responses(&batch, false)?.logp;
            let (logp, got) = score_and_grad(&m32, &batch, &dlogp)?;
            assert_eq!(plain, logp, "{name}: scoring with a record gives the same log-probs");
            assert_close(&format!("{name} f32 logprobs"), &logp.concat(), &want_logp.concat(), chain(1e-4));
            assert_grads_close(&format!("{name} f32"), &cpu64, &got, &want, F32_GRAD);

            let cpu16 = on_bf16_weights(&cpu);
            let want_logp16 = cpu16.score_responses(&batch, false)?.logp;
            let (_, want16) = score_and_grad(&cpu16, &batch, &dlogp)?;
            let m16 = GpuModel::<bf16>::for_training(gpu.clone(), &cpu)?;
            let (logp16, got16) = score_and_grad(&m16, &batch, &dlogp)?;
            assert_close(&format!("{name} bf16 logprobs"), &logp16.concat(), &want_logp16.concat(), chain(BF16_MODEL));
            assert_grads_close(&format!("{name} bf16"), &cpu16, &got16, &want16, BF16_GRAD);
        }
    }
    Ok(())
}

/// The f32 gradient against the f64 one. Every stored value carries one rounding (u = 2^-24) and a sum
/// of k terms ≲ u·√k of its terms (k ≤ 2·ff = 400 here: 1.2e-6); a weight's gradient goes through the
/// forward to the loss and the backward down to its layer, ≤ 2L + 2 = 8 such stages (≈ 1e-5 of the
/// terms), then sums ≤ 100 tokens' terms of both signs, whose cancellation can raise the relative
/// error up to √100 = 10×: rel_l2 ≤ 1e-4 per tensor (the f32 model's log-prob bound), every element
/// within 5σ of it (floor rms). Measured on the simulator over 10 seeds: ≤ 1.8e-6, worst 1.7e-5.
const F32_GRAD: Bound = chain(1e-4);
/// The bf16 gradient against the f64 model on the same bf16 weights: every stored activation and
/// activation gradient is one rounding of ≤ 2^-8 relative, σ = 2^-8/√3 ≈ 2.3e-3 when independent. A
/// layer-0 gradient of the 3-layer fixture sees ≈ 14 roundings per layer in the forward and ≈ 10 in
/// the backward (dact, dgu, dh2, dx twice, datt, dq, dk, dv, dh1 thrice): ≈ 80, √80 · 2.3e-3 ≈ 2e-2
/// (measured ≤ 2.2e-2 over 10 seeds). rel_l2 ≤ 8e-2: ≈ 3× the estimate and the measurement (STYLE §5
/// for bf16 chains). An element's error is that noise relative to its own terms, and where the terms
/// cancel (the head's rows: dlogp·(1[target] − p) summed over tokens of both signs; the MLP's sums of
/// dgu·h2 over tokens) they exceed |want| + rms(want) several-fold: measured up to 0.21 (mlp.up_proj
/// of qwen2-odd; lm_head 0.19), ≈ 10× rel_l2, so no 5σ per element. Worst 0.5 of |want| + rms: a wrong
/// element (off by its own size, a ratio near 1) still fails.
const BF16_GRAD: Bound = Bound { rel_l2: 8e-2, worst: 0.5, floor: Floor::Rms };

/// Scores and differentiates `batch` with each token budget: every result equals the first bit for bit.
fn same_bits_for_every_budget<T: GpuFloat>(gpu: &Arc<Gpu>, name: &str, budgets: &[usize], rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    let dir = fixture(name);
    let cpu = Model::<f32>::load(&dir)?;
    let batch = batch(&dir, 0.7, &cpu.cfg);
    let mut m = GpuModel::<T>::for_training(gpu.clone(), &cpu)?;
    let mut first: Option<(Vec<Vec<f64>>, Vec<u32>)> = None;
    let dlogp = random_dlogp(rng, &m.score_responses(&batch, false)?.logp);
    for &budget in budgets {
        m.set_max_tokens_per_chunk(Some(budget))?;
        let scored = m.score_responses(&batch, true)?;
        let rec = scored.recorded()?;
        println!("{name} {}: budget {budget}: chunks {:?}, kept {}", T::NAME, rec.chunks(), rec.kept());
        // the premise: one chunk keeps its activations; one token per chunk is one sequence per chunk
        assert_eq!(rec.kept(), rec.chunks().len() == 1);
        assert!(budget > 1 || rec.chunks().len() == batch.len(), "{name}: one sequence per chunk");
        // the record's device copy of the response log-probs (what the chunk objective reads) holds
        // the bits of the host copy, gathered from every chunk
        let device_bits: Vec<u32> = gpu.dtoh(&rec.logp())?.iter().map(|x| x.to_bits()).collect();
        let host_bits: Vec<u32> = scored.logp.iter().flatten().map(|&x| (x as f32).to_bits()).collect();
        assert!(device_bits == host_bits, "{name} {}: the record's device log-probs differ from the host's with budget {budget}", T::NAME);
        let mut g = m.new_grads()?;
        m.backward_responses(&scored, &dlogp, &mut g)?;
        let grads: Vec<f32> = m.grads_to_host(&g)?.iter().map(|&x| x as f32).collect();
        let bits: Vec<u32> = grads.iter().map(|g| g.to_bits()).collect();
        assert!(grads.iter().all(|g| g.is_finite()) && grads.iter().any(|&g| g != 0.0), "{name}: a finite, non-zero gradient");
        match &first {
            None => first = Some((scored.logp, bits)),
            Some((logp, want)) => {
                assert_eq!(&scored.logp, logp, "{name} {}: log-probs with budget {budget}", T::NAME);
                let differ = bits.iter().zip(want).filter(|(a, b)| a != b).count();
                assert_eq!(differ, 0, "{name} {}: {differ} gradient elements differ with budget {budget}", T::NAME);
            }
        }
    }
    Ok(())
}

#[test]
fn chunking_and_reruns_give_the_same_bits() -> drpo::Result<()> {
    let mut rng = rng("gpu_model_grad_chunks");
    for gpu in devices("gpu_model_grad_chunks") {
        let gpu = Arc::new(gpu);
        // one chunk (activations kept), the same again (a rerun: determinism), about half the tokens
        // (a recomputed chunk of two sequences), one sequence per chunk (each recomputed). In CI: f32
        // on the tied fixture (the compact gather table), bf16 on qwen2-odd (GQA 3:1, head_dim 24, the
        // tensor-core kernels); DRPO_SIM_FULL=1 runs both types on every fixture.
        for name in FIXTURES {
            let cpu = Model::<f32>::load(&fixture(name))?;
            let tokens: usize = batch(&fixture(name), 1.0, &cpu.cfg).seqs().iter().map(|s| s.len()).sum();
            let budgets = [usize::MAX, usize::MAX, tokens / 2, 1];
            if full_size(&gpu) || cpu.layout.tied {
                same_bits_for_every_budget::<f32>(&gpu, name, &budgets, &mut rng)?;
            }
            if full_size(&gpu) || name == "qwen2-odd" {
                same_bits_for_every_budget::<bf16>(&gpu, name, &budgets, &mut rng)?;
            }
        }
    }
    Ok(())
}

/// `drpo gradcheck --device`'s library face: the device's f32 gradient against the CPU's f64 one on
/// random configs (MHA, GQA, MQA, tied or not, widths 3–20, head_dim 2–8, 1–3 layers) and a fixture.
#[test]
fn device_gradcheck_passes() -> drpo::Result<()> {
    let mut rng = rng("gpu_gradcheck");
    for gpu in devices("gpu_gradcheck") {
        let gpu = Arc::new(gpu);
        let mut cases: Vec<(String, Option<std::path::PathBuf>, u64)> = (0..3).map(|_| rng.random()).map(|s| (format!("random config {s}"), None, s)).collect();
        cases.push(("qwen2-odd".into(), Some(fixture("qwen2-odd")), 1));
        for (what, dir, seed) in cases {
            for r in &drpo::gradcheck::device_gradcheck(gpu.clone(), dir.as_deref(), None, seed)? {
                println!("{what} {:<45} n={:<6} abs={:.2e} rel={:.2e} (#{}: {:.6e} vs {:.6e})", r.tensor, r.numel, r.max_abs_err, r.max_rel_err, r.worst_index, r.analytic, r.numeric);
                assert!(r.pass && r.checked == r.numel, "{what}: {} fails: {:.2e} > {:.0e}", r.tensor, r.max_rel_err, r.tolerance);
            }
        }
    }
    Ok(())
}

/// The log-probs and the gradient's bits of Σ dlogp·logp on a device model.
fn scored_bits<T: GpuFloat>(m: &GpuModel<T>, batch: &ScoreBatch, dlogp: &[Vec<f64>]) -> drpo::Result<(Vec<Vec<f64>>, Vec<u32>)> {
    let (logp, grads) = score_and_grad(m, batch, dlogp)?;
    Ok((logp, grads.iter().map(|&g| (g as f32).to_bits()).collect()))
}

/// The training workspace is allocated once per shape and reused: the same batch twice, a bigger one
/// (the workspace grows), a smaller one (it does not), each scored and differentiated with the bits of
/// a fresh model (whose buffers are new), though the reused buffers hold the previous batch's values.
#[test]
fn the_workspace_is_reused_with_the_bits_of_a_fresh_model() -> drpo::Result<()> {
    let mut rng = rng("gpu_model_grad_workspace");
    for gpu in devices("gpu_model_grad_workspace") {
        let gpu = Arc::new(gpu);
        let dir = fixture("qwen2-odd");
        let cpu = Model::<f32>::load(&dir)?;
        let full = batch(&dir, 0.8, &cpu.cfg);
        let sub = |n: usize| {
            let seqs = full.seqs();
            let (prompts, responses): (Vec<&[u32]>, Vec<&[u32]>) = (0..n).map(|i| seqs[i].split_at(full.prompt_lens()[i])).unzip();
            ScoreBatch::responses(&cpu.cfg, &prompts, &responses, 0.8).unwrap()
        };
        let (small, smaller) = (sub(2), sub(1));
        let m = GpuModel::<bf16>::for_training(gpu.clone(), &cpu)?;
        let mut grown = Vec::new();
        for (what, b) in [("small", &small), ("small again", &small), ("bigger", &full), ("smaller", &smaller)] {
            let dlogp = random_dlogp(&mut rng, &m.score_responses(b, false)?.logp);
            let mut grads = m.new_grads()?;
            let before = gpu.allocations();
            let scored = m.score_responses(b, true)?;
            m.backward_responses(&scored, &dlogp, &mut grads)?;
            let step_allocations = gpu.allocations() - before;
            let got = scored_bits(&m, b, &dlogp)?;
            let fresh = GpuModel::<bf16>::for_training(gpu.clone(), &cpu)?;
            assert!(got == scored_bits(&fresh, b, &dlogp)?, "{what}: the reused workspace changed a log-prob or a gradient bit");
            let (allocations, bytes) = m.workspace_stats();
            let tokens: usize = b.seqs().iter().map(|s| s.len()).sum();
            println!("{what}: {tokens} tokens, workspace {allocations} allocations, {bytes} bytes; device allocations of a recorded scoring + backward: {step_allocations}");
            grown.push((allocations, bytes));
        }
        // the first batch: the forward's set for one layer (a scoring without a record), grown to every
        // layer (the recorded scoring), the backward's and the head scratch; then only the bigger batch grows it
        assert_eq!(grown[0].0, 4, "the first batch allocates four buffer sets");
        assert_eq!(grown[1], grown[0], "the same batch again allocates nothing");
        assert!(grown[2].0 > grown[1].0 && grown[2].1 > grown[1].1, "a bigger batch grows the workspace");
        assert_eq!(grown[3], grown[2], "a smaller batch reuses it");
        // its bytes are bytes_per_token's per row of the largest chunk (up to the RMSNorm partials'
        // rounding to 16 rows)
        let rows: usize = full.seqs().iter().map(|s| s.len()).sum();
        let per_token = drpo::model::gpu_train::bytes_per_token(&cpu.cfg, 2, true) * rows;
        let slack = 16 * cpu.cfg.hidden_size * 4;
        assert!(grown[2].1.abs_diff(per_token) <= slack, "workspace {} bytes against {per_token} from bytes_per_token", grown[2].1);
        // a generation between the scoring and the backward frees the workspace (its KV cache takes
        // the memory): the backward recomputes the activations, with the same bits
        let dlogp = random_dlogp(&mut rng, &m.score_responses(&small, false)?.logp);
        let scored = m.score_responses(&small, true)?;
        drop(m.new_cache(2, 8)?);
        assert_eq!(m.workspace_stats().1, 0, "a generation frees the training workspace");
        let mut grads = m.new_grads()?;
        m.backward_responses(&scored, &dlogp, &mut grads)?;
        let got: Vec<u32> = m.grads_to_host(&grads)?.iter().map(|&g| (g as f32).to_bits()).collect();
        let fresh = GpuModel::<bf16>::for_training(gpu.clone(), &cpu)?;
        assert!(got == scored_bits(&fresh, &small, &dlogp)?.1, "the backward after a generation changed a gradient bit");
    }
    Ok(())
}

/// The weight gradients of a long sequence run the split-k plan (`MatmulPlan::dw`: qwen2-odd's k and
/// v have 2 tiles of 64×64, so 300 tokens are cut into 2 ranges): the f32 gradient stays within the
/// f64 model's bound, and its bits are the same for every chunking and from run to run.
#[test]
fn split_k_weight_gradients_match_the_cpu_and_keep_their_bits() -> drpo::Result<()> {
    use drpo::gpu::matmul::MatmulPlan;
    let mut rng = rng("gpu_model_grad_split_k");
    for gpu in devices("gpu_model_grad_split_k") {
        let gpu = Arc::new(gpu);
        let dir = fixture("qwen2-odd");
        let cpu = Model::<f32>::load(&dir)?;
        let cpu64 = Model::<f64>::load(&dir)?;
        let cfg = &cpu.cfg;
        let ids = |rng: &mut rand::rngs::StdRng, n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect() };
        let (p0, r0, p1, r1) = (ids(&mut rng, 20), ids(&mut rng, 280), ids(&mut rng, 5), ids(&mut rng, 30));
        let batch = ScoreBatch::responses(cfg, &[&p0, &p1], &[&r0, &r1], 0.9)?;
        assert_eq!(MatmulPlan::dw(&gpu, 300, cfg.hidden_size, cfg.kv_dim()), MatmulPlan::SplitK { k_chunk: 160 }, "the premise: k and v split");
        let want_logp = cpu64.score_responses(&batch, false)?.logp;
        let dlogp = random_dlogp(&mut rng, &want_logp);
        let (_, want) = score_and_grad(&cpu64, &batch, &dlogp)?;
        let mut m = GpuModel::<f32>::for_training(gpu.clone(), &cpu)?;
        let (logp, got) = score_and_grad(&m, &batch, &dlogp)?;
        assert_close("split-k f32 logprobs", &logp.concat(), &want_logp.concat(), chain(1e-4));
        assert_grads_close("split-k f32", &cpu64, &got, &want, F32_GRAD);
        let first = (logp, got.iter().map(|&g| (g as f32).to_bits()).collect::<Vec<u32>>());
        // a rerun (one chunk), then one sequence per chunk
        for budget in [usize::MAX, 1] {
            m.set_max_tokens_per_chunk(Some(budget))?;
            assert!(scored_bits(&m, &batch, &dlogp)? == first, "budget {budget}: other bits");
        }
    }
    Ok(())
}
