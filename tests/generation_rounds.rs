//! Generation in rounds (`drpo::generate::generate_in_rounds`, what `generate` does when a device's
//! free memory holds fewer sequences than asked for): rounds of 1, 3 and all the prompts give the same
//! tokens on the CPU and on the simulated device (f32 and bf16), the GPU model's round override and
//! its memory rule, and the refusal when not one sequence fits.

mod gpu_common;
use drpo::generate::{generate, generate_in_rounds, GenerateOptions, Generation};
use drpo::gpu::bf16;
use drpo::gpu::memory::{generation_round, step_memory, GENERATION_RESERVE_DIVISOR};
use drpo::model::gpu::GpuModel;
use drpo::model::Model;
use drpo::policy::Policy;
use drpo::sampling::SamplingParams;
use gpu_common::*;
use rand::Rng;
use std::sync::Arc;

/// Seven prompts of different lengths (so rounds of 3 mix lengths: 3 + 3 + 1).
fn prompts(rng: &mut rand::rngs::StdRng, vocab: u32) -> Vec<Vec<u32>> {
    [5usize, 1, 9, 3, 12, 2, 7].iter().map(|&l| (0..l).map(|_| rng.random_range(0..vocab)).collect()).collect()
}

/// Rounds of each size in `rounds` (and `generate`'s own choice) give one-batch generation's tokens
/// and the sampler's log-probs bit for bit, `want` (every sequence with its own stream, at a non-zero offset as the trainer's later steps
/// have; an eos stops some sequences early).
fn rounds_change_no_token<P: Policy>(what: &str, p: &P, opts: &GenerateOptions, prompts: &[Vec<u32>], rounds: &[usize], want: &[Generation]) -> drpo::Result<()> {
    for &round in rounds {
        assert_eq!(generate_in_rounds(p, prompts, opts, round)?, want, "{what}: rounds of {round}");
    }
    assert_eq!(generate(p, prompts, opts)?, want, "{what}: generate's own rounds ({})", p.generation_round(12, 20)?);
    Ok(())
}

/// On the CPU, rounds of 1, 3 and all; on the simulated device (its f32 path, whose one-batch tokens
/// are the CPU's on these fixtures, and its bf16 path) the same against its own one-batch tokens,
/// and the GPU model's round override. The simulator runs a few of them: each generation costs
/// seconds there.
#[test]
fn rounds_of_one_three_and_all_give_the_same_tokens_on_every_device() -> drpo::Result<()> {
    let mut rng = rng("rounds_same_tokens");
    let mut sims = devices("generation_rounds");
    for name in ["qwen2-tiny", "qwen2-tiny-mqa"] {
        let cpu = Model::<f32>::load(&fixture(name))?;
        let prompts = prompts(&mut rng, cpu.cfg.vocab_size as u32);
        let mut opts = GenerateOptions { max_new_tokens: 8, sampling: SamplingParams::default(), seed: rng.random(), eos_ids: vec![], stream_offset: 21 };
        // an eos that some sequence draws before its last token: the second token of a free run
        let free = generate(&cpu, &prompts, &opts)?;
        opts.eos_ids = vec![free[0].tokens[1]];
        let want = generate_in_rounds(&cpu, &prompts, &opts, usize::MAX)?;
        println!("{name}: {} stopped on the eos, lengths {:?}", want.iter().filter(|g| g.stopped_on_eos).count(), want.iter().map(|g| g.tokens.len()).collect::<Vec<_>>());
        assert!(want.iter().any(|g| g.stopped_on_eos), "{name}: the eos stops a sequence");
        assert!(want.iter().any(|g| g.tokens != want[0].tokens), "{name}: every sequence drew the same tokens");
        rounds_change_no_token(&format!("{name} cpu"), &cpu, &opts, &prompts, &[1, 3, prompts.len()], &want)?;
        if name != "qwen2-tiny" {
            continue; // the simulator: one fixture
        }
        for gpu in std::mem::take(&mut sims) {
            let gpu = Arc::new(gpu);
            let dev = if gpu.is_simulated() { "sim" } else { "gpu" };
            let mut m32 = GpuModel::<f32>::from_cpu(gpu.clone(), &cpu)?;
            let want32 = generate_in_rounds(&m32, &prompts, &opts, usize::MAX)?;
            // the tokens and stops; the sampler's log-probs differ by the devices' f32 round-off
            let drawn = |g: &[Generation]| g.iter().map(|g| (g.tokens.clone(), g.stopped_on_eos)).collect::<Vec<_>>();
            assert_eq!(drawn(&want32), drawn(&want), "{name} {dev} f32: one batch, the CPU's tokens");
            rounds_change_no_token(&format!("{name} {dev} f32"), &m32, &opts, &prompts, &[1, 3], &want32)?;
            // the override is what `generate` uses
            m32.set_generation_round(Some(2))?;
            assert_eq!(m32.generation_round(12, 20)?, 2);
            rounds_change_no_token(&format!("{name} {dev} f32, rounds of 2"), &m32, &opts, &prompts, &[], &want32)?;
            assert!(m32.set_generation_round(Some(0)).is_err(), "a round of 0 sequences is refused");
            let m16 = GpuModel::<bf16>::from_cpu(gpu.clone(), &cpu)?;
            let want16 = generate_in_rounds(&m16, &prompts, &opts, usize::MAX)?;
            rounds_change_no_token(&format!("{name} {dev} bf16"), &m16, &opts, &prompts, &[1], &want16)?;
        }
    }
    Ok(())
}

/// The host generates in one round; `generate_in_rounds` refuses a round of 0 (what a device that
/// holds not one sequence answers) with the sizes in the message.
#[test]
fn the_host_is_one_round_and_a_round_of_zero_is_refused() -> drpo::Result<()> {
    let cpu = Model::<f32>::load(&fixture("qwen2-tiny"))?;
    assert_eq!(cpu.generation_round(100, 200)?, usize::MAX);
    let opts = GenerateOptions { max_new_tokens: 4, sampling: SamplingParams::greedy(), seed: 0, eos_ids: vec![], stream_offset: 0 };
    let e = generate_in_rounds(&cpu, &[vec![1, 2, 3]], &opts, 0).expect_err("round 0").to_string();
    assert!(e.contains("not one sequence of 7 tokens") && e.contains("cpu"), "{e}");
    assert!(generate_in_rounds(&cpu, &[], &opts, 0)?.is_empty(), "no prompt, nothing to fit");
    Ok(())
}

/// The memory rule against an independent count: Qwen2.5-1.5B (bf16 compute copy) with the paper's
/// 1k-token prompts and 8k-token responses on an 80 GB card, its training state resident; and the simulated device's
/// answer (the host's memory) holds a fixture's batch.
#[test]
fn the_round_is_what_the_free_memory_holds() -> drpo::Result<()> {
    let json = serde_json::json!({
        "model_type": "qwen2", "hidden_act": "silu", "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 131072,
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "eos_token_id": 151643,
    });
    let cfg = drpo::config::ModelConfig::from_json(&json, std::path::Path::new("Qwen2.5-1.5B/config.json"))?;
    let (prompt, len) = (1024u64, 1024 + 8192u64);
    let m = step_memory(&cfg, 2);
    let free = 80_000_000_000 - m.resident();
    // per sequence: K and V of 28 layers × 256 values × 2 bytes per token; logits f32 and sampler
    // masses u64 over the vocabulary; one decode row and the prompt's prefill rows of
    // (4·1536 + 2·1536 + 2·256 + 3·8960) bf16 values and an f32 rstd each; decode attention's states,
    // 12 heads × 36 splits of 256 keys × (128 + 2) f32. Once per round: the gate|up GEMM's split-k
    // partials of a 64-row decoding step, 2 ranges × 64 × 17,920 f32.
    let row = (4 * 1536 + 2 * 1536 + 2 * 256 + 3 * 8960) * 2;
    let per_seq = 2 * 28 * 256 * 2 * len + 151936 * 12 + row + (row + 4) * prompt + 12 * 36 * 130 * 4;
    let want = (free - free / GENERATION_RESERVE_DIVISOR - 2 * 64 * 17920 * 4) / per_seq;
    let got = generation_round(&cfg, 2, prompt, len, free);
    println!("Qwen2.5-1.5B, 80 GB, {prompt}+8192 tokens: {got} sequences per round ({} MB each)", per_seq / 1_000_000);
    assert_eq!(got, want);
    assert!((100..1024).contains(&got), "the paper's 1,024 rollouts of a step take several rounds: {got}");
    assert_eq!(generation_round(&cfg, 2, prompt, len, per_seq), 0, "a sequence's share less the reserve holds none");
    for gpu in devices("generation_round_sim") {
        let cpu = Model::<f32>::load(&fixture("qwen2-tiny"))?;
        let m = GpuModel::<bf16>::from_cpu(Arc::new(gpu), &cpu)?;
        let free = m.gpu.free_bytes()?;
        let round = m.generation_round(20, 120)?;
        println!("{}: {free} bytes free, {round} sequences of 120 tokens per round", m.gpu.device_name);
        assert!(free > 0 && round >= 64, "a fixture's batch fits at once");
    }
    Ok(())
}
