//! What the trainer learns from: a list of problems with tokenized prompts and a verifier.
//! [`ToyEnv`] is the synthetic task of the study; [`MathEnv`] a math problem set with the paper's
//! prompt and grader (SPEC §8).

use crate::data::Problem;
use crate::error::Result;
use crate::rl::grader::{grade, math_prompt, GraderConfig};
use crate::task::{verify, TaskExample};
use crate::tokenizer::{Message, Tokenizer};

/// The verifier's verdict on one response, with the toy task's step counts when it has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub correct: bool,
    /// (useful, useless) reasoning steps (toy task only; see [`crate::task::Verdict`])
    pub steps: Option<(usize, usize)>,
}

pub trait Environment: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Prompt token ids of problem `i`, chat template applied.
    fn prompt(&self, i: usize) -> &[u32];
    /// Difficulty label of problem `i`, when the data has one.
    fn level(&self, i: usize) -> Option<String>;
    /// Grades the decoded text of a response to problem `i`: the response alone, or the prompt and
    /// the response decoded together when [`grades_prompt_and_response`](Self::grades_prompt_and_response).
    fn grade(&self, i: usize, response: &str) -> Verdict;
    /// True when the trainer should grade decode(prompt + response) (SPEC §8.2's training reward)
    /// rather than the response alone (evaluation, the toy task).
    fn grades_prompt_and_response(&self) -> bool {
        false
    }
}

pub struct ToyEnv {
    pub examples: Vec<TaskExample>,
    prompts: Vec<Vec<u32>>,
}

impl ToyEnv {
    pub fn new(examples: Vec<TaskExample>, tok: &Tokenizer) -> Result<Self> {
        let prompts = examples.iter().map(|e| tok.encode(&tok.apply_chat_template(&e.messages(), true)?)).collect::<Result<_>>()?;
        Ok(ToyEnv { examples, prompts })
    }
}

impl Environment for ToyEnv {
    fn len(&self) -> usize {
        self.examples.len()
    }
    fn prompt(&self, i: usize) -> &[u32] {
        &self.prompts[i]
    }
    fn level(&self, i: usize) -> Option<String> {
        Some(self.examples[i].level.to_string())
    }
    fn grade(&self, i: usize, response: &str) -> Verdict {
        let v = verify(&self.examples[i], response);
        Verdict { correct: v.correct, steps: Some((v.useful_steps, v.useless_steps)) }
    }
}

pub struct MathEnv {
    pub problems: Vec<Problem>,
    prompts: Vec<Vec<u32>>,
    pub grader: GraderConfig,
    /// grade decode(prompt + response) as SPEC §8.2's training reward does (false: the response
    /// alone, as in evaluation). The verdicts differ only when the prompt itself holds `</think>`.
    pub grade_with_prompt: bool,
}

impl MathEnv {
    /// Prompts are the problem + SPEC §8.1's instruction as one user turn, in the model's chat template.
    pub fn new(problems: Vec<Problem>, tok: &Tokenizer, grader: GraderConfig) -> Result<Self> {
        let prompts = problems
            .iter()
            .map(|p| tok.encode(&tok.apply_chat_template(&[Message::user(math_prompt(&p.problem))], true)?))
            .collect::<Result<_>>()?;
        Ok(MathEnv { problems, prompts, grader, grade_with_prompt: false })
    }

    /// Drops the problems whose templated prompt has more than `max_tokens` tokens (SPEC §5.6's
    /// max_prompt_length filter of the training set); returns how many were dropped.
    pub fn retain_prompts_up_to(&mut self, max_tokens: usize) -> usize {
        let before = self.problems.len();
        let pairs = std::mem::take(&mut self.problems).into_iter().zip(std::mem::take(&mut self.prompts));
        (self.problems, self.prompts) = pairs.filter(|(_, prompt)| prompt.len() <= max_tokens).unzip();
        before - self.problems.len()
    }
}

impl Environment for MathEnv {
    fn len(&self) -> usize {
        self.problems.len()
    }
    fn prompt(&self, i: usize) -> &[u32] {
        &self.prompts[i]
    }
    fn level(&self, i: usize) -> Option<String> {
        self.problems[i].level.clone()
    }
    fn grade(&self, i: usize, response: &str) -> Verdict {
        Verdict { correct: grade(response, &self.problems[i].answers, &self.grader), steps: None }
    }
    fn grades_prompt_and_response(&self) -> bool {
        self.grade_with_prompt
    }
}
