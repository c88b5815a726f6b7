//! Evaluation: pass@1 averaged over n samples per question, response lengths, per difficulty level.
//! The toy task ([`eval_toy`]) and the math benchmarks share the report shape ([`EvalReport`]).

use crate::cpu::Float;
use crate::error::Result;
use crate::generate::{generate, GenerateOptions};
use crate::model::Model;
use crate::sampling::SamplingParams;
use crate::task::{generate_split, verify, Split, TaskConfig};
use crate::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalOptions {
    /// samples per question (pass@1 is averaged over them)
    pub n_samples: usize,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    /// sequences generated together
    pub batch_size: usize,
}

/// Totals of one slice of the evaluation (all questions, or one level).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EvalStats {
    pub level: Option<String>,
    pub questions: usize,
    pub responses: usize,
    /// pass@1 averaged over the samples
    pub accuracy: f64,
    /// mean response length in tokens (eos included)
    pub mean_length: f64,
    pub mean_length_correct: Option<f64>,
    pub mean_length_wrong: Option<f64>,
    /// share of responses cut at max_new_tokens without an eos
    pub truncation_rate: f64,
    /// toy task only: mean necessary / redundant steps per response
    pub mean_necessary_steps: Option<f64>,
    pub mean_redundant_steps: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub overall: EvalStats,
    pub per_level: Vec<EvalStats>,
}

/// One graded response.
#[derive(Clone, Debug)]
pub struct Graded {
    pub level: Option<String>,
    pub correct: bool,
    pub length: usize,
    pub truncated: bool,
    pub steps: Option<(usize, usize)>,
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for x in xs {
        s += x;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}

/// Aggregates graded responses of `questions` questions.
pub fn summarize(level: Option<String>, questions: usize, g: &[&Graded]) -> EvalStats {
    EvalStats {
        level,
        questions,
        responses: g.len(),
        accuracy: mean(g.iter().map(|r| r.correct as u8 as f64)).unwrap_or(0.0),
        mean_length: mean(g.iter().map(|r| r.length as f64)).unwrap_or(0.0),
        mean_length_correct: mean(g.iter().filter(|r| r.correct).map(|r| r.length as f64)),
        mean_length_wrong: mean(g.iter().filter(|r| !r.correct).map(|r| r.length as f64)),
        truncation_rate: mean(g.iter().map(|r| r.truncated as u8 as f64)).unwrap_or(0.0),
        mean_necessary_steps: mean(g.iter().filter_map(|r| r.steps.map(|s| s.0 as f64))),
        mean_redundant_steps: mean(g.iter().filter_map(|r| r.steps.map(|s| s.1 as f64))),
    }
}

/// Overall and per-level statistics; `levels` lists the level of each question (None: no levels).
pub fn report(graded: &[Graded], n_questions: usize) -> EvalReport {
    let all: Vec<&Graded> = graded.iter().collect();
    let mut levels: Vec<String> = graded.iter().filter_map(|g| g.level.clone()).collect();
    levels.sort_by(|a, b| a.parse::<f64>().ok().partial_cmp(&b.parse::<f64>().ok()).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(b)));
    levels.dedup();
    let per_sample = graded.len().checked_div(n_questions).unwrap_or(0).max(1);
    let per_level = levels
        .into_iter()
        .map(|l| {
            let g: Vec<&Graded> = graded.iter().filter(|r| r.level.as_deref() == Some(&l)).collect();
            let q = g.len() / per_sample;
            summarize(Some(l), q, &g)
        })
        .collect();
    EvalReport { overall: summarize(None, n_questions, &all), per_level }
}

/// Generates `n_samples` responses to every prompt, in batches; returns (tokens, stopped on eos) in
/// question-major order (question i's samples are rows i·n .. i·n + n).
pub fn sample_responses<T: Float>(model: &Model<T>, prompts: &[Vec<u32>], eos: &[u32], opts: &EvalOptions) -> Result<Vec<(Vec<u32>, bool)>> {
    let rows: Vec<Vec<u32>> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), opts.n_samples)).collect();
    let mut out = Vec::with_capacity(rows.len());
    for (b, chunk) in rows.chunks(opts.batch_size.max(1)).enumerate() {
        let g = GenerateOptions {
            max_new_tokens: opts.max_new_tokens,
            sampling: opts.sampling,
            seed: opts.seed,
            eos_ids: eos.to_vec(),
            stream_offset: (b * opts.batch_size.max(1)) as u64,
        };
        out.extend(generate(model, chunk, &g)?.into_iter().map(|r| (r.tokens, r.stopped_on_eos)));
    }
    Ok(out)
}

/// The toy task's held-out split: `n_questions` eval questions, graded by [`crate::task::verify`].
pub fn eval_toy<T: Float>(model: &Model<T>, tok: &Tokenizer, task: &TaskConfig, n_questions: usize, opts: &EvalOptions) -> Result<EvalReport> {
    let examples = generate_split(task, Split::Eval, n_questions)?;
    let prompts: Vec<Vec<u32>> = examples.iter().map(|e| tok.encode(&e.prompt())).collect::<Result<_>>()?;
    let responses = sample_responses(model, &prompts, tok.eos_ids(), opts)?;
    let mut graded = Vec::with_capacity(responses.len());
    for (i, (tokens, eos)) in responses.iter().enumerate() {
        let ex = &examples[i / opts.n_samples];
        let v = verify(ex, &tok.decode(tokens, false)?);
        graded.push(Graded {
            level: Some(ex.level.to_string()),
            correct: v.correct,
            length: tokens.len(),
            truncated: !eos,
            steps: Some((v.necessary_steps, v.redundant_steps)),
        });
    }
    Ok(report(&graded, examples.len()))
}
