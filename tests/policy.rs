//! The policy contract (`drpo::policy::Policy`), one test body per property, run on every device:
//! the CPU model (f32), the GPU model on the simulated device (f32 and bf16 storage), and the same on
//! a GPU when one is present. Then `drpo train --device sim` and `drpo sft --device sim` up to the
//! device backward (not built yet), with one policy sampling and scoring.

mod gpu_common;
use drpo::generate::{generate, GenerateOptions};
use drpo::gpu::bf16;
use drpo::model::gpu::GpuModel;
use drpo::model::Model;
use drpo::policy::{Chunks, Policy, ScoreBatch};
use drpo::sampling::SamplingParams;
use gpu_common::*;
use std::sync::Arc;

/// log softmax(row / temp)[target] in f64.
fn log_softmax_at(row: &[f64], target: u32, temp: f64) -> f64 {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x / temp));
    let lse = max + row.iter().map(|&x| (x / temp - max).exp()).sum::<f64>().ln();
    row[target as usize] / temp - lse
}

const PROMPTS: [&[u32]; 3] = [&[1, 2, 3, 4, 5], &[6, 7], &[8, 9, 10]];
const RESPONSES: [&[u32]; 3] = [&[11, 12, 13, 14], &[15, 16, 17, 18, 19, 20], &[21]];
const TEMP: f64 = 0.7;

/// Prefill of the prompts, then the responses one token per step through the cache (a sequence
/// whose response is used up leaves the batch): the log-probs of the response tokens from those
/// logits equal `score_responses`'s, which runs the whole sequences at once without a cache.
fn prefill_decode_equals_score<P: Policy>(what: &str, p: &P, bound: Bound) -> drpo::Result<()> {
    let cfg = p.config().clone();
    let v = cfg.vocab_size;
    let cap = PROMPTS.iter().zip(RESPONSES).map(|(a, b)| a.len() + b.len()).max().unwrap();
    let mut cache = p.new_cache(PROMPTS.len(), cap)?;
    let chunks = Chunks::new(&cfg, p.cache_lens(&cache), p.cache_cap(&cache), PROMPTS.iter().copied().enumerate().collect())?;
    let mut logits = p.logits_to_host(&p.forward_last(&mut cache, &chunks)?)?;
    let mut active: Vec<usize> = (0..PROMPTS.len()).collect();
    let mut got: Vec<Vec<f64>> = vec![Vec::new(); PROMPTS.len()];
    for t in 0.. {
        assert_eq!(logits.len(), active.len() * v, "{what}: one row of logits per active sequence");
        for (row, &s) in active.iter().enumerate() {
            got[s].push(log_softmax_at(&logits[row * v..(row + 1) * v], RESPONSES[s][t], TEMP));
        }
        active.retain(|&s| t + 1 < RESPONSES[s].len());
        if active.is_empty() {
            break;
        }
        let pairs = active.iter().map(|&s| (s, &RESPONSES[s][t..t + 1])).collect();
        let chunks = Chunks::new(&cfg, p.cache_lens(&cache), p.cache_cap(&cache), pairs)?;
        logits = p.logits_to_host(&p.forward_last(&mut cache, &chunks)?)?;
    }
    let batch = ScoreBatch::responses(&cfg, &PROMPTS, &RESPONSES, TEMP)?;
    let want = p.score_responses(&batch, false)?.logp;
    for (s, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), RESPONSES[s].len(), "{what}: sequence {s}");
        assert_eq!(w.len(), RESPONSES[s].len(), "{what}: sequence {s}");
    }
    assert_close(&format!("{what}: prefill+decode vs score"), &got.concat(), &want.concat(), bound);
    Ok(())
}

/// The one generation loop: greedy tokens equal the tokens the policy's own prefill/decode logits
/// put first (`reference`: the same tokens, for the f32 paths the CPU's), an eos is kept as the
/// last token and stops only its sequence, and max_new_tokens bounds the others.
fn generation_through_the_loop<P: Policy>(what: &str, p: &P, reference: Option<&[Vec<u32>]>) -> drpo::Result<Vec<Vec<u32>>> {
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|x| x.to_vec()).collect();
    let greedy = SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0 };
    let opts = GenerateOptions { max_new_tokens: 6, sampling: greedy, seed: 0, eos_ids: vec![], stream_offset: 0 };
    let free: Vec<Vec<u32>> = generate(p, &prompts, &opts)?.into_iter().map(|g| g.tokens).collect();
    assert!(free.iter().all(|t| t.len() == 6), "{what}: no eos: every sequence runs to max_new_tokens, {free:?}");
    if let Some(want) = reference {
        assert_eq!(free, want, "{what}: greedy tokens");
    }
    // the third token of sequence 0 as the eos: sequence 0 stops on it (kept), unless it came earlier
    let eos = free[0][2];
    let stopped = generate(p, &prompts, &GenerateOptions { eos_ids: vec![eos], ..opts.clone() })?;
    for (s, (g, f)) in stopped.iter().zip(&free).enumerate() {
        let until = f.iter().position(|&t| t == eos).map_or(f.len(), |i| i + 1);
        assert_eq!(g.tokens, f[..until], "{what}: sequence {s} with eos {eos}");
        assert_eq!(g.stopped_on_eos, until < f.len() || f.last() == Some(&eos), "{what}: sequence {s} stopped_on_eos");
    }
    assert!(stopped[0].stopped_on_eos && stopped[0].tokens.len() <= 3, "{what}: sequence 0 must stop at its eos");
    Ok(free)
}

/// The sampler's log-prob of each token it drew (`Generation.logp`, from the decode logits, before
/// top-p truncation) against the f64 CPU model's score of the same tokens at the same temperature:
/// the f64 scorer (on the weights the policy holds) is the reference, so the gap is the policy's own
/// logit error Δz. dℓ/dz_j = (1[j = token] − p_j)/T gives |Δℓ| ≤ 2(1 − p)·max|Δz|/T, and a likely
/// token has |ℓ| ≈ 1 − p: relative to ℓ the error is about 2·max|Δz|/T, not the logits' relative
/// error. The f32 paths stay within their decode-vs-score bounds; bf16 gets 2·BF16_MODEL/T.
fn sampler_logp_equals_f64_score<P: Policy>(what: &str, p: &P, scorer: &Model<f64>, bound: Bound) -> drpo::Result<()> {
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|x| x.to_vec()).collect();
    let sampling = SamplingParams { temperature: TEMP, top_k: 0, top_p: 0.9 };
    let opts = GenerateOptions { max_new_tokens: 5, sampling, seed: 17, eos_ids: vec![], stream_offset: 3 };
    let gens = generate(p, &prompts, &opts)?;
    let responses: Vec<&[u32]> = gens.iter().map(|g| g.tokens.as_slice()).collect();
    let batch = ScoreBatch::responses(&scorer.cfg, &PROMPTS, &responses, TEMP)?;
    let want = scorer.score_responses(&batch, false)?.logp;
    let got: Vec<Vec<f64>> = gens.into_iter().map(|g| g.logp).collect();
    assert!(got.iter().zip(&want).all(|(g, w)| g.len() == w.len()), "{what}: one sampler log-prob per token");
    assert_close(&format!("{what}: sampler logp vs f64 score"), &got.concat(), &want.concat(), bound);
    Ok(())
}

/// The batch types refuse bad input with an error naming the field, whatever the device; the
/// device entry points (generate, score) go through them.
fn packed_batch_validation<P: Policy>(what: &str, p: &P) {
    let cfg = p.config().clone();
    let v = cfg.vocab_size as u32;
    let greedy = GenerateOptions { max_new_tokens: 2, sampling: SamplingParams::default(), seed: 0, eos_ids: vec![], stream_offset: 0 };
    let expect = |r: drpo::Result<()>, needle: &str| {
        let e = r.expect_err(needle).to_string();
        assert!(e.contains(needle), "{what}: `{e}` should name `{needle}`");
    };
    expect(generate(p, &[vec![1, v, 2]], &greedy).map(|_| ()), "token id");
    expect(generate(p, &[vec![1, v, 2]], &greedy).map(|_| ()), "position 1");
    expect(generate(p, &[vec![]], &greedy).map(|_| ()), "prompt 0 is empty");
    let long = vec![1u32; cfg.max_position_embeddings];
    expect(generate(p, std::slice::from_ref(&long), &greedy).map(|_| ()), "max_position_embeddings");
    expect(ScoreBatch::responses(&cfg, &[&[1], &[2]], &[&[3], &[v]], 1.0).map(|_| ()), "token id");
    expect(ScoreBatch::responses(&cfg, &[&[1], &[]], &[&[3], &[4]], 1.0).map(|_| ()), "prompt 1 is empty");
    expect(ScoreBatch::responses(&cfg, &[&[1]], &[&[3], &[4]], 1.0).map(|_| ()), "responses");
    expect(ScoreBatch::responses(&cfg, &[&long], &[&[3]], 1.0).map(|_| ()), "max_position_embeddings");
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        expect(ScoreBatch::responses(&cfg, &[&[1]], &[&[3]], t).map(|_| ()), "temperature");
    }
    let cache = p.new_cache(2, 4).unwrap();
    let (lens, cap) = (p.cache_lens(&cache), p.cache_cap(&cache));
    expect(Chunks::new(&cfg, lens, cap, vec![(1, &[1][..]), (0, &[2][..])]).map(|_| ()), "sequence 0");
    expect(Chunks::new(&cfg, lens, cap, vec![(2, &[1][..])]).map(|_| ()), "sequence 2: out of range");
    if cap < cfg.max_position_embeddings {
        expect(Chunks::new(&cfg, lens, cap, vec![(0, &[1, 2, 3, 4, 5][..])]).map(|_| ()), "capacity");
    }
}

/// Score-backward, the clip and the update on every device (the GPU model's uncached forward and
/// device backward: its numbers are held against the CPU's in tests/gpu_model_grad.rs; its clip and
/// AdamW run on its device state, made by `for_training`; a generation-only bf16 model refuses to train).
fn backward_and_update<P: Policy>(what: &str, p: &mut P) -> drpo::Result<()> {
    let batch = ScoreBatch::responses(p.config(), &PROMPTS, &RESPONSES, TEMP)?;
    let mut grads = p.new_grads()?;
    {
        let scored = p.score_responses(&batch, true)?;
        let dlogp: Vec<Vec<f64>> = scored.logp.iter().map(|r| vec![1.0; r.len()]).collect();
        p.backward_responses(&scored, &dlogp, &mut grads)?;
        let once = p.grads_to_host(&grads)?;
        assert_eq!(once.len(), p.n_params());
        assert!(once.iter().any(|&g| g != 0.0), "{what}: a zero gradient");
        assert!(once.iter().all(|g| g.is_finite()), "{what}: a non-finite gradient");
        // a second backward adds. The CPU adds a separately computed gradient (x + x is exact); the
        // device's GEMMs add their sums onto the buffer, so 2x up to f32 rounding of the sums.
        p.backward_responses(&scored, &dlogp, &mut grads)?;
        let twice = p.grads_to_host(&grads)?;
        if p.device() == "cpu" {
            assert!(once.iter().zip(&twice).all(|(a, b)| 2.0 * a == *b), "{what}: backward_responses must accumulate");
        } else {
            let doubled: Vec<f64> = once.iter().map(|a| 2.0 * a).collect();
            assert_close(&format!("{what}: backward_responses accumulates"), &twice, &doubled, chain(1e-5));
        }
        let short = p.backward_responses(&scored, &dlogp[..1], &mut grads).expect_err("one dlogp row per response");
        assert!(short.to_string().contains("dlogp"), "{short}");
        let unrecorded = p.score_responses(&batch, false)?;
        assert!(p.backward_responses(&unrecorded, &dlogp, &mut grads).is_err(), "{what}: a backward needs a recorded score");
        p.zero_grads(&mut grads)?;
        p.backward_responses(&scored, &dlogp, &mut grads)?;
        assert_eq!(p.grads_to_host(&grads)?, once, "{what}: zero_grads, then one backward");
    }
    let norm = p.clip_grad_norm(&mut grads, 1e-3)?;
    assert!(norm.is_finite(), "{what}: norm {norm}");
    let mut opt = p.new_optimizer()?;
    let before = p.export_state(&opt)?;
    p.apply_update(&mut opt, &grads, &drpo::optim::AdamWConfig::default(), 1e-3)?;
    let after = p.export_state(&opt)?;
    assert_eq!((before.optim.step, after.optim.step), (0, 1), "{what}: the step count");
    assert!(before.params != after.params, "{what}: AdamW's decay moves the weights even at a zero gradient");
    Ok(())
}

/// Every property on one policy.
fn contract<P: Policy>(what: &str, p: &mut P, bound: Bound, reference: Option<&[Vec<u32>]>, scorer: &Model<f64>, sampler_bound: Bound) -> drpo::Result<Vec<Vec<u32>>> {
    prefill_decode_equals_score(what, p, bound)?;
    sampler_logp_equals_f64_score(what, p, scorer, sampler_bound)?;
    let tokens = generation_through_the_loop(what, p, reference)?;
    packed_batch_validation(what, p);
    backward_and_update(what, p)?;
    Ok(tokens)
}

#[test]
fn every_device_keeps_the_policy_contract() -> drpo::Result<()> {
    for name in FIXTURES {
        let cpu = Model::<f32>::load(&fixture(name))?;
        let f64_scorer = Model::<f64>::load(&fixture(name))?;
        // the CPU's cached decode and its scoring run the same f32 ops on the same rows; the host
        // log-softmax (f64) of the f32 logits differs from the f32 one by rounding
        let want = contract(&format!("{name} cpu"), &mut cpu.clone(), chain(1e-5), None, &f64_scorer, chain(1e-5))?;
        for gpu in devices("policy_contract") {
            let gpu = Arc::new(gpu);
            let dev = if gpu.is_simulated() { "sim" } else { "gpu" };
            // f32 storage: decode and prefill kernels, the f32-out head vs the fused head
            let mut m32 = GpuModel::<f32>::for_training(gpu.clone(), &cpu)?;
            contract(&format!("{name} {dev} f32"), &mut m32, chain(1e-4), Some(&want), &f64_scorer, chain(1e-4))?;
            // bf16 storage (what --device gpu|sim runs): the decode-step and score paths round differently
            let mut m16 = GpuModel::<bf16>::for_training(gpu.clone(), &cpu)?;
            let bf16_sampler = chain(2.0 * BF16_MODEL / TEMP);
            contract(&format!("{name} {dev} bf16"), &mut m16, chain(BF16_MODEL), None, &on_bf16_weights(&cpu), bf16_sampler)?;
            // a generation-only bf16 model has no master weights: training it is refused by name
            let m16 = GpuModel::<bf16>::from_cpu(gpu.clone(), &cpu)?;
            let e = m16.new_optimizer().err().expect("a from_cpu bf16 model cannot train").to_string();
            assert!(e.contains("master weights") && e.contains("for_training"), "{e}");
        }
    }
    Ok(())
}

/// `train` and `sft` run whole steps on the simulated device (rollouts, scoring, backward, clip and
/// AdamW through its Policy), record the device, and write their checkpoint / model; the CPU run of
/// the same command writes one metrics line per step. (Their numbers against the CPU trainer: see
/// NOTES.md, "Device training state"; here the end-to-end wiring.)
#[test]
fn train_and_sft_run_on_the_simulated_device() {
    if devices("train_sim").iter().all(|g| !g.is_simulated()) {
        return;
    }
    let model = toy_model_dir("policy-train-sim-model", 11);
    let train = |device: &str| {
        let out = scratch_dir(&format!("policy-train-{device}"));
        let (ok, _, err) = run_drpo(&[
            "train", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--device", device, "--steps", "2",
            "--questions-per-step", "2", "--group-size", "4", "--mini-batch-questions", "2", "--chunk-questions", "2",
            "--max-new-tokens", "12",
        ]);
        (ok, err, out)
    };
    for device in ["sim", "cpu"] {
        let (ok, err, out) = train(device);
        assert!(ok, "train --device {device}: {err}");
        let config = drpo::error::read_json(out.join("train_config.json")).unwrap();
        assert_eq!(config["device"], device, "the run records its device");
        assert!(out.join("checkpoint").join("model.safetensors").exists(), "{device}: the last step checkpoints");
        let metrics = drpo::rl::trainer::read_metrics(&out.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.len(), 2, "{device}: one metrics line per step");
        // the sampler's log-probs (decode path) against the scorer's (uncached forward), one model:
        // within round-off of the two paths (bounds and measured values: NOTES.md, "One policy seam")
        let mismatch: Vec<f64> = metrics.iter().map(|m| m.sampler_logp_mismatch.expect("the mismatch is measured every step")).collect();
        println!("train --device {device}: sampler_logp_mismatch {mismatch:?}");
        let bound = if device == "cpu" { 1e-5 } else { 0.05 };
        assert!(mismatch.iter().all(|m| m.is_finite() && (0.0..bound).contains(m)), "{device}: sampler_logp_mismatch {mismatch:?} ≥ {bound}");
    }
    let sft_out = scratch_dir("policy-sft-sim");
    let (ok, _, err) = run_drpo(&["sft", "--out", sft_out.to_str().unwrap(), "--device", "sim", "--steps", "1", "--full-only-steps", "0"]);
    assert!(ok, "sft --device sim: {err}");
    assert!(sft_out.join("model.safetensors").exists(), "sft --device sim writes its model");
}

/// `Policy::sample` refuses a non-finite logit with one error on every device (the GPU sampler flags
/// the row, read back with the tokens): the first NaN / ±inf of the batch, by row and id, with its
/// value and the step; finite rows sample.
#[test]
fn every_device_refuses_non_finite_logits_alike() -> drpo::Result<()> {
    let cpu = Model::<f32>::load(&fixture("qwen2-tiny"))?;
    let v = cpu.cfg.vocab_size;
    let finite: Vec<f32> = (0..3 * v).map(|i| ((i * 37 % 101) as f32 - 50.0) / 10.0).collect();
    let params = SamplingParams::default();
    let streams = [4u64, 5, 6];
    let draw = drpo::policy::Draw { params: &params, seed: 9, streams: &streams, step: 3 };
    let cases: [(&str, Vec<(usize, f32)>); 3] = [
        ("NaN", vec![(v + 17, f32::NAN)]),
        ("+inf after a later NaN row", vec![(2 * v + 1, f32::NAN), (v + 300, f32::INFINITY)]),
        ("-inf", vec![(5, f32::NEG_INFINITY)]),
    ];
    let mut cache = cpu.new_cache(3, 8)?;
    let want_tokens = cpu.sample(&mut cache, &finite, &draw)?;
    let mut want_errors = Vec::new();
    for (what, bad) in &cases {
        let mut logits = finite.clone();
        bad.iter().for_each(|&(i, x)| logits[i] = x);
        let e = cpu.sample(&mut cache, &logits, &draw).expect_err(what);
        assert!(matches!(e, drpo::Error::NonFinite { .. }), "{what}: {e}");
        want_errors.push(e.to_string());
    }
    assert!(want_errors[0].contains("batch row 1, id 17") && want_errors[0].contains("new token 3"), "{}", want_errors[0]);
    assert!(want_errors[1].contains("batch row 1, id 300"), "{}", want_errors[1]);
    for gpu in devices("sample_non_finite_policy") {
        let m = GpuModel::<f32>::from_cpu(Arc::new(gpu), &cpu)?;
        let mut cache = m.new_cache(3, 8)?;
        let upload = |x: &[f32]| -> drpo::Result<drpo::model::gpu::GpuLogits> { Ok(drpo::model::gpu::GpuLogits { values: m.gpu.htod(x)?, rows: 3 }) };
        let got = m.sample(&mut cache, &upload(&finite)?, &draw)?;
        assert_eq!(got.tokens, want_tokens.tokens, "finite rows: the CPU's tokens");
        // the same f32 logits: m, Σe and ln Σe in f64 on both, only Σe's order and exp's last ulp differ
        for (g, w) in got.logp.iter().zip(&want_tokens.logp) {
            assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "finite rows: logp {g} against the CPU's {w}");
        }
        for ((what, bad), want) in cases.iter().zip(&want_errors) {
            let mut logits = finite.clone();
            bad.iter().for_each(|&(i, x)| logits[i] = x);
            let e = m.sample(&mut cache, &upload(&logits)?, &draw).expect_err(what);
            assert!(matches!(e, drpo::Error::NonFinite { .. }), "{what}: {e}");
            assert_eq!(&e.to_string(), want, "{what}: the CPU's error");
        }
    }
    Ok(())
}
