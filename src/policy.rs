//! The policy view of the model: log-probabilities of response tokens given their prompts, and the
//! parameter gradient of a loss given d loss / d (response-token log-prob). Prompt tokens never carry
//! gradient (SPEC §4.5: only response tokens enter the objectives).

use crate::cpu::Float;
use crate::error::Result;
use crate::model::{Model, Scored};

/// A scored batch of (prompt, response) pairs.
pub struct ScoredResponses<T> {
    pub scored: Scored<T>,
    pub prompt_lens: Vec<usize>,
    /// logp[i][t] = log π(response_i[t] | prompt_i, response_i[<t]) under softmax(logits / temp), in f64
    pub logp: Vec<Vec<f64>>,
}

/// Scores every response token. With `record`, keeps what [`backward_responses`] needs.
pub fn score_responses<T: Float>(
    model: &Model<T>,
    prompts: &[&[u32]],
    responses: &[&[u32]],
    temp: f64,
    record: bool,
) -> Result<ScoredResponses<T>> {
    assert_eq!(prompts.len(), responses.len(), "score_responses: one response per prompt");
    // the first response token is predicted by the last prompt position: a prompt needs one
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(crate::Error::input(format!("score_responses: prompt {i} is empty (a response needs a prompt token to follow)")));
    }
    let seqs: Vec<Vec<u32>> = prompts.iter().zip(responses).map(|(p, r)| [*p, *r].concat()).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let scored = model.score(&refs, temp, record)?;
    let prompt_lens: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
    let logp = scored
        .logp
        .iter()
        .zip(prompts.iter().zip(responses))
        .map(|(lp, (p, r))| lp[p.len() - 1..p.len() - 1 + r.len()].iter().map(|x| x.to_f64()).collect())
        .collect();
    Ok(ScoredResponses { scored, prompt_lens, logp })
}

/// Parameter gradient given dlogp[i][t] = d loss / d logp[i][t] of the response tokens.
pub fn backward_responses<T: Float>(model: &Model<T>, batch: &ScoredResponses<T>, dlogp: &[Vec<f64>]) -> Vec<T> {
    assert_eq!(dlogp.len(), batch.logp.len(), "backward_responses: one row per response");
    let rows: Vec<Vec<T>> = batch
        .scored
        .logp
        .iter()
        .zip(dlogp.iter().zip(&batch.prompt_lens))
        .map(|(lp, (d, &p))| {
            let mut row = vec![T::ZERO; lp.len()];
            for (t, &g) in d.iter().enumerate() {
                row[p - 1 + t] = T::from_f64(g);
            }
            row
        })
        .collect();
    model.score_backward(&batch.scored, &rows)
}
