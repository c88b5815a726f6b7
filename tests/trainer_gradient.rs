//! The trainer's mini-batch gradient against SPEC §5.1 computed independently: per-token
//! coefficients written out from the formulas (no call into the objectives), backpropagated through
//! `Model::score_backward` in f64.
//!
//! DRPO, for token t of response i in chunk B of a mini-batch of Q_mb questions and n_chunks chunks:
//!   ∂loss/∂ℓ_{i,t} = −g_i/(Q_mb·L_i) − (1/n_chunks)·β[K_B − δ]_+/T_B
//!   g_i = ŵ_i = exp(r_i/λ)/Σ_P exp(r_k/λ) (positive of a mixed group), r = 1 − L/C
//!       = −exp(s_i/τ)/Σ_N exp(s_k/τ)       (negative of a mixed group),  s = mean ℓ
//!       = 0                                 (all-correct or all-wrong group)
//!   K_B = Σ_B (ℓ^old − ℓ)/T_B,  T_B = Σ_B L_i
//! GRPO surrogate without clipping: ∂loss/∂ℓ_{i,t} = −(1/n_chunks)·A_i·exp(ℓ − ℓ^old)/(n_B·L_i).

mod common;
use common::*;
use drpo::model::Model;
use drpo::rl::objectives::Hyper;
use drpo::rl::trainer::{minibatch_gradient, ChunkResult, ObjectiveKind, Rollout, TrainConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const G: usize = 3;
const Q_MB: usize = 4;
const CHUNK_Q: usize = 2;
const C: usize = 8;
const TEMP: f64 = 0.7;
/// correctness per question: question 1 is all-correct (skipped) and sits in chunk 0 with a mixed one
const CORRECT: [[bool; G]; Q_MB] = [[true, false, true], [true, true, true], [false, true, false], [false, false, true]];

struct Case {
    prompts: Vec<Vec<u32>>,
    rollouts: Vec<Rollout>,
    /// ℓ under the current model, per response
    logp: Vec<Vec<f64>>,
}

/// What `minibatch_gradient` gives: the gradient it writes and the chunks' numbers.
struct Got {
    grads: Vec<f64>,
    chunks: Vec<ChunkResult>,
}

/// `minibatch_gradient` into a buffer holding garbage: the mini-batch gradient replaces it.
fn gradient(model: &Model<f64>, cfg: &TrainConfig, prompts: &[&[u32]], rollouts: &[Rollout], adv: Option<&[f64]>) -> Got {
    let mut grads = vec![7.0; model.layout.total];
    let chunks = minibatch_gradient(model, cfg, prompts, rollouts, adv, &mut grads).unwrap();
    Got { grads, chunks }
}

/// Token log-probs of the responses at TEMP, straight from Model::score.
fn response_logp(model: &Model<f64>, prompts: &[Vec<u32>], resps: &[Vec<u32>]) -> Vec<Vec<f64>> {
    let seqs: Vec<Vec<u32>> = prompts.iter().zip(resps).map(|(p, r)| [p.as_slice(), r].concat()).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let scored = model.score(&refs, TEMP, false).unwrap();
    scored.logp.iter().zip(prompts.iter().zip(resps)).map(|(lp, (p, r))| lp[p.len() - 1..p.len() - 1 + r.len()].to_vec()).collect()
}

fn case(model: &Model<f64>, seed: u64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    // the old policy: the current weights perturbed, so K ≠ 0 and the ratios are not 1
    let mut old_model = model.clone();
    for p in old_model.params.iter_mut() {
        *p += rng.random_range(-0.02..0.02);
    }
    let (mut prompts, mut resps) = (Vec::new(), Vec::new());
    for _ in 0..Q_MB {
        let prompt: Vec<u32> = (0..rng.random_range(3..=6)).map(|_| rng.random_range(0..381)).collect();
        for _ in 0..G {
            prompts.push(prompt.clone());
            resps.push((0..rng.random_range(2..=C)).map(|_| rng.random_range(0..381)).collect::<Vec<u32>>());
        }
    }
    let old = response_logp(&old_model, &prompts, &resps);
    let logp = response_logp(model, &prompts, &resps);
    let rollouts = resps
        .into_iter()
        .zip(old)
        .enumerate()
        .map(|(k, (tokens, old_logp))| Rollout {
            problem: 100 + k / G,
            group: k / G,
            finished: tokens.len() < C,
            correct: CORRECT[k / G][k % G],
            steps: None,
            undecodable: 0,
            tokens,
            old_logp,
        })
        .collect();
    Case { prompts, rollouts, logp }
}

fn config(hyper: Hyper, objective: ObjectiveKind) -> TrainConfig {
    TrainConfig {
        objective,
        hyper,
        questions_per_step: Q_MB,
        group_size: G,
        mini_batch_questions: Q_MB,
        chunk_questions: CHUNK_Q,
        temperature: TEMP,
        max_new_tokens: C,
        ..TrainConfig::default()
    }
}

/// ∇ of Σ coef[i][t]·ℓ_{i,t} over the whole mini-batch: one score, one score_backward.
fn backprop(model: &Model<f64>, c: &Case, coef: &[Vec<f64>]) -> Vec<f64> {
    let seqs: Vec<Vec<u32>> = c.prompts.iter().zip(&c.rollouts).map(|(p, r)| [p.as_slice(), &r.tokens].concat()).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let scored = model.score(&refs, TEMP, true).unwrap();
    let rows: Vec<Vec<f64>> = scored
        .logp
        .iter()
        .zip(c.prompts.iter().zip(coef))
        .map(|(lp, (p, k))| {
            let mut row = vec![0.0; lp.len()];
            row[p.len() - 1..p.len() - 1 + k.len()].copy_from_slice(k);
            row
        })
        .collect();
    model.score_backward(&scored, &rows)
}

fn compare(what: &str, got: &[f64], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let err = got.iter().zip(want).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    println!("{what}: max |Δ| / max |∇| = {:.3e} (max |∇| = {scale:.3e})", err / scale);
    assert!(scale > 1e-8, "{what}: the reference gradient is zero: the test would be vacuous");
    assert!(err <= 1e-6 * scale, "{what}: {:.3e} relative", err / scale);
}

#[test]
fn drpo_minibatch_gradient_matches_spec_5_1() {
    let model = Model::<f64>::load(&fixture("qwen2-tiny")).unwrap();
    let n_chunks = (Q_MB / CHUNK_Q) as f64;
    // δ = −1: the hinge is active in every chunk whatever the sign of K; δ = 1: inactive
    for (delta, lambda, tau) in [(-1.0, 0.3, 2.0), (1.0, 0.05, 10.0)] {
        let c = case(&model, 7);
        let hyper = Hyper { lambda, tau, beta: 50.0, delta, ..Hyper::default() };
        let mut coef: Vec<Vec<f64>> = Vec::new();
        let mut losses = Vec::new();
        let mut pushes = Vec::new();
        for chunk in 0..Q_MB / CHUNK_Q {
            let rows: Vec<usize> = (chunk * CHUNK_Q * G..(chunk + 1) * CHUNK_Q * G).collect();
            let t_b: usize = rows.iter().map(|&i| c.rollouts[i].tokens.len()).sum();
            let k_b: f64 = rows.iter().flat_map(|&i| c.rollouts[i].old_logp.iter().zip(&c.logp[i]).map(|(o, l)| o - l)).sum::<f64>() / t_b as f64;
            let hinge = (k_b - delta).max(0.0);
            if delta < 0.0 {
                assert!(hinge > 0.0);
            }
            let mut j_sum = 0.0;
            for (q, verdicts) in CORRECT.iter().enumerate().skip(chunk * CHUNK_Q).take(CHUNK_Q) {
                let members: Vec<usize> = (q * G..(q + 1) * G).collect();
                let s: Vec<f64> = members.iter().map(|&i| c.logp[i].iter().sum::<f64>() / c.logp[i].len() as f64).collect();
                let pos: Vec<usize> = (0..G).filter(|&k| verdicts[k]).collect();
                let neg: Vec<usize> = (0..G).filter(|&k| !verdicts[k]).collect();
                let mut g = [0.0; G];
                if !pos.is_empty() && !neg.is_empty() {
                    let e: Vec<f64> = pos.iter().map(|&k| ((1.0 - c.rollouts[members[k]].tokens.len() as f64 / C as f64) / lambda).exp()).collect();
                    let ez: Vec<f64> = neg.iter().map(|&k| (s[k] / tau).exp()).collect();
                    let (se, sz) = (e.iter().sum::<f64>(), ez.iter().sum::<f64>());
                    for (&k, ek) in pos.iter().zip(&e) {
                        g[k] = ek / se;
                        j_sum += ek / se * s[k];
                    }
                    for (&k, zk) in neg.iter().zip(&ez) {
                        g[k] = -zk / sz;
                    }
                    j_sum -= tau * (sz / neg.len() as f64).ln();
                }
                for (k, &i) in members.iter().enumerate() {
                    // the objective's push: (1/Q_B) ∂J_g/∂s_i, the KL hinge left out
                    pushes.push(g[k] / CHUNK_Q as f64);
                    let l = c.rollouts[i].tokens.len() as f64;
                    let per_token = -g[k] / (Q_MB as f64 * l) - beta_term(hyper.beta, hinge, t_b) / n_chunks;
                    coef.push(vec![per_token; c.rollouts[i].tokens.len()]);
                }
            }
            losses.push(-j_sum / CHUNK_Q as f64 + 0.5 * hyper.beta * hinge * hinge);
        }
        let want = backprop(&model, &c, &coef);
        let prompts: Vec<&[u32]> = c.prompts.iter().map(Vec::as_slice).collect();
        let got = gradient(&model, &config(hyper, ObjectiveKind::Drpo), &prompts, &c.rollouts, None);
        compare(&format!("DRPO δ = {delta}, λ = {lambda}, τ = {tau}"), &got.grads, &want);
        assert_eq!(got.chunks.len(), 2);
        for (r, l) in got.chunks.iter().zip(&losses) {
            assert!((r.loss - l).abs() <= 1e-12 * l.abs().max(1.0), "chunk loss {} vs {l}", r.loss);
        }
        // chunk 0 has one valid group (question 1 is all-correct), chunk 1 two
        assert_eq!(got.chunks[0].positive_weights.len(), 1);
        assert_eq!(got.chunks[1].positive_weights.len(), 2);
        // the push on each response: the written-out coefficient; a correct response is never
        // pushed down (> 0 in a mixed group, exactly 0 in the all-correct one), a wrong one is
        let got_push: Vec<f64> = got.chunks.iter().flat_map(|r| r.push.iter().copied()).collect();
        compare("DRPO push", &got_push, &pushes);
        for (i, (&p, r)) in got_push.iter().zip(&c.rollouts).enumerate() {
            let mixed = CORRECT[i / G].contains(&true) && CORRECT[i / G].contains(&false);
            match (r.correct, mixed) {
                (true, true) => assert!(p > 0.0, "rollout {i}: {p}"),
                (false, true) => assert!(p < 0.0, "rollout {i}: {p}"),
                (_, false) => assert_eq!(p, 0.0, "rollout {i}"),
            }
        }
    }
}

fn beta_term(beta: f64, hinge: f64, t_b: usize) -> f64 {
    beta * hinge / t_b as f64
}

#[test]
fn grpo_minibatch_gradient_matches_the_surrogate() {
    let model = Model::<f64>::load(&fixture("qwen2-tiny")).unwrap();
    let c = case(&model, 8);
    let n_chunks = (Q_MB / CHUNK_Q) as f64;
    let n_b = (CHUNK_Q * G) as f64;
    let adv: Vec<f64> = (0..Q_MB * G).map(|i| ((i * 7) % 5) as f64 * 0.5 - 1.0).collect();
    let coef: Vec<Vec<f64>> = (0..Q_MB * G)
        .map(|i| {
            let l = c.rollouts[i].tokens.len() as f64;
            c.logp[i].iter().zip(&c.rollouts[i].old_logp).map(|(lp, old)| -adv[i] * (lp - old).exp() / (n_b * l) / n_chunks).collect()
        })
        .collect();
    let want = backprop(&model, &c, &coef);
    let prompts: Vec<&[u32]> = c.prompts.iter().map(Vec::as_slice).collect();
    let hyper = Hyper { clip_eps: None, ..Hyper::default() };
    let got = gradient(&model, &config(hyper, ObjectiveKind::Grpo), &prompts, &c.rollouts, Some(&adv));
    compare("GRPO surrogate", &got.grads, &want);
    // the push on a response is −Σ_t ∂loss/∂ℓ (before the 1/chunks scale): the sign of its advantage
    let got_push: Vec<f64> = got.chunks.iter().flat_map(|r| r.push.iter().copied()).collect();
    let want_push: Vec<f64> = coef.iter().map(|k| -k.iter().sum::<f64>() * n_chunks).collect();
    compare("GRPO push", &got_push, &want_push);
    for (p, a) in got_push.iter().zip(&adv) {
        assert_eq!(p.partial_cmp(&0.0), a.partial_cmp(&0.0), "push {p} for advantage {a}");
    }
}
