//! Evaluation: pass@1 averaged over n samples per question, response lengths, per difficulty level.
//! The toy task ([`eval_toy`]) and the math benchmarks share the report shape ([`EvalReport`]).

use crate::error::Result;
use crate::generate::GenerateOptions;
use crate::policy::Generator;
use crate::rl::env::Environment;
use crate::sampling::SamplingParams;
use crate::task::{generate_split, Split, TaskConfig};
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
    /// mean response length in tokens, the EOS token included (as training's L; SPEC's evaluation
    /// re-tokenizes the text without special tokens, so its lengths are one lower on finished responses)
    pub mean_length: f64,
    pub mean_length_correct: Option<f64>,
    pub mean_length_wrong: Option<f64>,
    /// share of responses cut at max_new_tokens without an eos
    pub truncation_rate: f64,
    /// toy task only: mean useful / useless steps per response (the names predate shortcut steps:
    /// "necessary" = steps that advance the solution, "redundant" = padding; see task::Verdict)
    pub mean_necessary_steps: Option<f64>,
    pub mean_redundant_steps: Option<f64>,
    /// responses holding sampled ids the tokenizer could not decode (graded on the decodable text)
    #[serde(default)]
    pub undecodable_responses: usize,
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
    /// the response held ids the tokenizer could not decode (graded without them)
    pub undecodable: bool,
}

/// One response as `eval_env` hands it to its caller, batch by batch (`drpo eval --out` writes them
/// to responses.jsonl): which problem and sample, the verdict and the decoded text.
#[derive(Clone, Debug, Serialize)]
pub struct ResponseRecord {
    pub problem: usize,
    pub sample: usize,
    pub correct: bool,
    /// response tokens, EOS included
    pub length: usize,
    pub truncated: bool,
    pub text: String,
}

/// Cap on the responses of one evaluation (problems × samples): far above a benchmark run (MATH500
/// × 64 samples is 32,000), far below a count whose bookkeeping alone would not fit in memory.
pub const MAX_RESPONSES: usize = 1 << 24;

/// What `eval_env` calls after each batch: (that batch's responses, responses done, total).
pub type OnBatch<'a> = dyn FnMut(&[ResponseRecord], usize, usize) -> Result<()> + 'a;

/// The mean of a sequence (None when it is empty).
pub(crate) fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
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
        undecodable_responses: g.iter().filter(|r| r.undecodable).count(),
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

/// Evaluates every problem of an environment: `n_samples` responses each, graded by its verifier
/// on the response text alone (special tokens kept, as the trainer decodes; ids the tokenizer does
/// not know are skipped and the response counted in `undecodable_responses`).
/// Rows (problem i, sample j) are generated in order, `batch_size` at a time; row r draws from
/// stream r, so the samples do not depend on the batch size. After each batch, `on_batch(records,
/// done, total)` gets that batch's responses (for a responses file) and the progress.
pub fn eval_env(
    policy: &dyn Generator,
    env: &dyn Environment,
    tok: &Tokenizer,
    opts: &EvalOptions,
    on_batch: &mut OnBatch,
) -> Result<(EvalReport, Vec<Graded>)> {
    let n = opts.n_samples.max(1);
    let total = env.len().checked_mul(n).ok_or_else(|| crate::Error::input(format!("{} problems × {n} samples overflows", env.len())))?;
    let batch = opts.batch_size.max(1);
    if total > MAX_RESPONSES {
        return Err(crate::Error::input(format!(
            "{} problems × {n} samples = {total} responses; at most {MAX_RESPONSES} are evaluated in one run (lower --n or --limit)",
            env.len()
        )));
    }
    let mut graded = Vec::with_capacity(total);
    for first in (0..total).step_by(batch) {
        let rows = first..(first + batch).min(total);
        let prompts: Vec<Vec<u32>> = rows.clone().map(|r| env.prompt(r / n).to_vec()).collect();
        let g = GenerateOptions {
            max_new_tokens: opts.max_new_tokens,
            sampling: opts.sampling,
            seed: opts.seed,
            eos_ids: tok.eos_ids().to_vec(),
            stream_offset: first as u64,
        };
        let responses = policy.generate(&prompts, &g)?;
        let mut records = Vec::with_capacity(responses.len());
        for (r, resp) in rows.zip(&responses) {
            let i = r / n;
            let (text, skipped) = tok.decode_lenient(&resp.tokens, false)?;
            let v = env.grade(i, &text);
            graded.push(Graded {
                level: env.level(i),
                correct: v.correct,
                length: resp.tokens.len(),
                truncated: !resp.stopped_on_eos,
                steps: v.steps,
                undecodable: skipped > 0,
            });
            let (correct, length, truncated) = (v.correct, resp.tokens.len(), !resp.stopped_on_eos);
            records.push(ResponseRecord { problem: i, sample: r % n, correct, length, truncated, text });
        }
        on_batch(&records, graded.len(), total)?;
    }
    Ok((report(&graded, env.len()), graded))
}

/// The markdown table of a report.
/// Lengths are response tokens with the EOS token counted (SPEC's evaluation does not count it).
pub fn markdown_table(r: &EvalReport) -> String {
    let mut s = String::from("Lengths are response tokens, the EOS token included (as in training; SPEC's evaluation re-tokenizes the text without special tokens, one token less per finished response).\n\n");
    s.push_str("| level | questions | pass@1 | mean length | length (correct) | length (wrong) | truncated |\n|---|---|---|---|---|---|---|\n");
    let opt = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.1}"));
    for st in r.per_level.iter().chain(std::iter::once(&r.overall)) {
        s.push_str(&format!(
            "| {} | {} | {:.4} | {:.1} | {} | {} | {:.3} |\n",
            st.level.as_deref().unwrap_or("all"),
            st.questions,
            st.accuracy,
            st.mean_length,
            opt(st.mean_length_correct),
            opt(st.mean_length_wrong),
            st.truncation_rate
        ));
    }
    if r.overall.undecodable_responses > 0 {
        s.push_str(&format!(
            "\n{} of {} responses hold sampled ids the tokenizer cannot decode; they were graded without them.\n",
            r.overall.undecodable_responses, r.overall.responses
        ));
    }
    s
}

/// The toy task's held-out split: `n_questions` eval questions, graded by [`crate::task::verify`].
pub fn eval_toy(policy: &dyn Generator, tok: &Tokenizer, task: &TaskConfig, n_questions: usize, opts: &EvalOptions) -> Result<EvalReport> {
    let env = crate::rl::env::ToyEnv::new(generate_split(task, Split::Eval, n_questions)?, tok)?;
    Ok(eval_env(policy, &env, tok, opts, &mut |_, _, _| Ok(()))?.0)
}
