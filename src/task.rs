//! A synthetic reasoning task for the toy DRPO study: chains of one-digit arithmetic mod 10, solved
//! step by step, with a verifiable answer. The paper's story in miniature: a tiny model fine-tuned on
//! padded ("over-thinking") traces, then RL that keeps it correct while making it concise.
//!
//! # Questions
//!
//! A question of level k is k+1 digits joined by k operators from `+ - *`, e.g. `3+4*2-5` (k = 3).
//! It is evaluated **left to right, every result mod 10** (no operator precedence):
//! `p_0 = x_0`, `p_i = (p_{i-1} op_i x_i) mod 10`, answer = `p_k`. Subtraction wraps: `3-5 = 8`.
//!
//! # Responses
//!
//! ```text
//! 3+4=7;7*2=4;check 7;4-5=9;\boxed{9}<|im_end|>
//! ```
//!
//! - a **necessary step** `p_{i-1} op_i x_i = p_i;` writes one partial result. A level-k question
//!   has exactly k of them: every partial depends on the previous one, so a model that cannot do
//!   several operations "in its head" must write them, and the harder the question, the more it
//!   must write.
//! - a **redundant step** `check p_j;` restates a partial result already written (j ≤ the number of
//!   steps so far). It changes nothing: it is the padding that RL should learn to drop.
//! - the answer `\boxed{p_k}`, then the end-of-turn token `<|im_end|>`.
//!
//! Length in tokens of the task tokenizer ([`write_task_tokenizer`]; every digit, operator, `;`,
//! space, `\boxed{`, `}` and `check` is one token): prompt `2k + 9`
//! ([`prompt_tokens`]), response `6k + 4 + 4r` with r redundant steps ([`trace_tokens`]). At k = 5:
//! prompt 19, concise response 34, response with 6 checks 58.
//!
//! # Prompt
//!
//! The real-model conventions of SPEC §8.1, shrunk: a single user turn holding the question, no
//! system prompt, rendered with the ChatML template that [`write_task_tokenizer`] writes into
//! `tokenizer_config.json`, with the generation prompt:
//! `<|im_start|>user\n3+4*2-5<|im_end|>\n<|im_start|>assistant\n`. No instruction sentence: it would
//! be the same tokens in every prompt.
//!
//! # Splits
//!
//! Train and eval are disjoint by construction: a question belongs to eval iff a fixed hash of its
//! text is 0 mod 4 ([`split_of`], independent of any seed), so no seed of one split can produce a
//! question of the other. Each split also draws from its own seeded stream.
//!
//! # Grading
//!
//! [`verify`] grades the outcome only, like the real grader (SPEC §8.2): the **last** `\boxed{…}`
//! (braces balanced) must hold the answer as a plain integer. Steps are counted for diagnostics and
//! length studies, never rewarded: a response that skips steps and still boxes the right digit is
//! correct.

mod verify;
mod vocab;

pub use verify::{verify, Verdict};
pub use vocab::{build_task_tokenizer, write_task_tokenizer, TASK_CHAT_TEMPLATE, TASK_VOCAB};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::tokenizer::Message;
use crate::{Error, Result};

/// The highest level [`TaskConfig`] accepts (prompt 25 tokens, concise response 52).
pub const MAX_LEVEL: usize = 8;

/// One of the three operators, applied mod 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Add, Op::Sub, Op::Mul];

    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
        }
    }

    pub fn from_symbol(c: char) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.symbol() == c)
    }

    /// `(a op b) mod 10` for digits a, b.
    pub fn apply(self, a: u8, b: u8) -> u8 {
        debug_assert!(a < 10 && b < 10);
        match self {
            Op::Add => (a + b) % 10,
            Op::Sub => (a + 10 - b) % 10,
            Op::Mul => (a * b) % 10,
        }
    }
}

/// One question with its solution. `operands.len() == ops.len() + 1 == level + 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskExample {
    /// The question text, e.g. `3+4*2-5`.
    pub question: String,
    pub operands: Vec<u8>,
    pub ops: Vec<Op>,
    /// `p_k`, a digit.
    pub answer: u8,
    /// k = number of operators.
    pub level: usize,
    /// Steps a complete solution writes; equals `level` by construction.
    pub necessary_steps: usize,
}

impl TaskExample {
    /// Builds the example for digits `operands` and operators `ops` (`operands.len() == ops.len() + 1`).
    pub fn new(operands: Vec<u8>, ops: Vec<Op>) -> Result<TaskExample> {
        if operands.len() != ops.len() + 1 || ops.is_empty() {
            return Err(Error::input(format!(
                "a task question needs k >= 1 operators and k + 1 operands, got {} and {}",
                ops.len(),
                operands.len()
            )));
        }
        if let Some(&d) = operands.iter().find(|&&d| d > 9) {
            return Err(Error::input(format!("task operands are digits, got {d}")));
        }
        let mut question = String::with_capacity(2 * operands.len());
        question.push(char::from(b'0' + operands[0]));
        for (op, &x) in ops.iter().zip(&operands[1..]) {
            question.push(op.symbol());
            question.push(char::from(b'0' + x));
        }
        let level = ops.len();
        let mut example = TaskExample { question, operands, ops, answer: 0, level, necessary_steps: level };
        example.answer = example.partials()[level];
        Ok(example)
    }

    /// Parses a question text such as `3+4*2-5`.
    pub fn parse(question: &str) -> Result<TaskExample> {
        let chars: Vec<char> = question.chars().collect();
        let bad = || Error::input(format!("`{question}` is not a task question (digit (op digit)+, ops + - *)"));
        if chars.len() < 3 || chars.len().is_multiple_of(2) {
            return Err(bad());
        }
        let mut operands = Vec::new();
        let mut ops = Vec::new();
        for (i, &c) in chars.iter().enumerate() {
            if i % 2 == 0 {
                operands.push(c.to_digit(10).ok_or_else(bad)? as u8);
            } else {
                ops.push(Op::from_symbol(c).ok_or_else(bad)?);
            }
        }
        TaskExample::new(operands, ops)
    }

    /// Partial results `[p_0, p_1, …, p_k]`, p_0 = first operand.
    pub fn partials(&self) -> Vec<u8> {
        let mut p = vec![self.operands[0]];
        for (op, &x) in self.ops.iter().zip(&self.operands[1..]) {
            let prev = p[p.len() - 1];
            p.push(op.apply(prev, x));
        }
        p
    }

    /// Text of necessary step i (1 ≤ i ≤ level), without the `;`: `p_{i-1} op_i x_i = p_i`.
    pub fn step_text(&self, i: usize) -> String {
        assert!((1..=self.level).contains(&i), "step {i} of a level-{} question", self.level);
        let p = self.partials();
        format!("{}{}{}={}", p[i - 1], self.ops[i - 1].symbol(), self.operands[i], p[i])
    }

    /// The chat: one user turn holding the question.
    pub fn messages(&self) -> Vec<Message> {
        vec![Message::user(self.question.clone())]
    }

    /// The prompt text, as the task tokenizer's chat template renders [`messages`](Self::messages)
    /// with the generation prompt.
    pub fn prompt(&self) -> String {
        format!("<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n", self.question)
    }
}

/// Tokens of the prompt of a level-k question: `<|im_start|> user \n` (3) + question (2k + 1) +
/// `<|im_end|> \n <|im_start|> assistant \n` (5).
pub fn prompt_tokens(level: usize) -> usize {
    2 * level + 9
}

/// Tokens of a trace with `redundant` checks: 6 per step (`a op b = r ;`), 4 per check
/// (`check ␣ d ;`), 4 for `\boxed{ d } <|im_end|>`.
pub fn trace_tokens(level: usize, redundant: usize) -> usize {
    6 * level + 4 * redundant + 4
}

/// Generator settings. Levels are dealt round-robin: example i has level `min_level + i % (max_level
/// - min_level + 1)`, so every level is equally represented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskConfig {
    pub min_level: usize,
    pub max_level: usize,
    pub seed: u64,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig { min_level: 1, max_level: 5, seed: 0 }
    }
}

impl TaskConfig {
    pub fn validate(&self) -> Result<()> {
        if self.min_level < 1 || self.min_level > self.max_level || self.max_level > MAX_LEVEL {
            return Err(Error::input(format!(
                "task levels {}..={} are invalid (need 1 <= min <= max <= {MAX_LEVEL})",
                self.min_level, self.max_level
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Eval,
}

/// The split a question belongs to: Eval iff `mix(fnv1a64(question)) % 4 == 0` (a quarter held out).
/// Fixed, independent of seeds, so splits are disjoint whatever generated them.
pub fn split_of(question: &str) -> Split {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in question.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits are weak on short strings: finish with the splitmix64 mixer
    if splitmix64_mix(h).is_multiple_of(4) {
        Split::Eval
    } else {
        Split::Train
    }
}

fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Draws per level before a repeated question is accepted (level 1 has only 300 questions, ~75 of
/// them in eval).
const FRESH_TRIES: usize = 64;

/// Cap on the questions of one split (`drpo sft`'s n_train, `--limit` on the toy task): far above
/// the study's sizes, far below an allocation that aborts.
pub const MAX_EXAMPLES: usize = 1 << 20;

/// `n` questions of `split`, deterministic in `(cfg, split, n)`; a prefix of a longer call equals a
/// shorter call. Questions are distinct within one call while the level's pool of the split
/// allows, then repeat.
pub fn generate_split(cfg: &TaskConfig, split: Split, n: usize) -> Result<Vec<TaskExample>> {
    cfg.validate()?;
    if n > MAX_EXAMPLES {
        return Err(Error::input(format!("{n} task questions asked for; at most {MAX_EXAMPLES} are generated")));
    }
    let stream = match split {
        Split::Train => 0x7472_6169_6e00_0000u64, // "train"
        Split::Eval => 0x6576_616c_0000_0000u64,  // "eval"
    };
    let mut rng = StdRng::seed_from_u64(splitmix64_mix(cfg.seed ^ stream));
    let levels = cfg.max_level - cfg.min_level + 1;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let level = cfg.min_level + i % levels;
        let mut tries = 0;
        let example = loop {
            let operands: Vec<u8> = (0..=level).map(|_| rng.random_range(0..10u8)).collect();
            let ops: Vec<Op> = (0..level).map(|_| Op::ALL[rng.random_range(0..3usize)]).collect();
            let example = TaskExample::new(operands, ops)?;
            if split_of(&example.question) != split {
                continue;
            }
            tries += 1;
            if !seen.contains(&example.question) || tries >= FRESH_TRIES {
                break example;
            }
        };
        seen.insert(example.question.clone());
        out.push(example);
    }
    Ok(out)
}

/// A correct response with `redundant_steps` checks inserted: each check goes after a uniformly
/// chosen necessary step i and restates a uniformly chosen partial `p_j`, 1 ≤ j ≤ i. Ends with
/// `\boxed{answer}<|im_end|>`; [`trace_tokens`] tokens long.
pub fn render_trace<R: Rng + ?Sized>(example: &TaskExample, redundant_steps: usize, rng: &mut R) -> String {
    let k = example.level;
    let p = example.partials();
    let mut checks_after: Vec<Vec<u8>> = vec![Vec::new(); k + 1];
    for _ in 0..redundant_steps {
        let after = rng.random_range(1..=k);
        let j = rng.random_range(1..=after);
        checks_after[after].push(p[j]);
    }
    let mut out = String::with_capacity(6 * k + 8 * redundant_steps + 24);
    for (i, checks) in checks_after.iter().enumerate().skip(1) {
        out.push_str(&example.step_text(i));
        out.push(';');
        for v in checks {
            out.push_str(&format!("check {v};"));
        }
    }
    out.push_str(&format!("\\boxed{{{}}}<|im_end|>", example.answer));
    out
}
