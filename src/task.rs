//! A synthetic reasoning task for the toy DRPO study: chains of one-digit arithmetic mod 10, solved
//! in written steps, with a verifiable answer. It is built so that response length can buy accuracy
//! (writing partial results) and can also be pure padding (restating them): the trade-off the paper's
//! question is about (does a length penalty cut needed reasoning, or only the padding?).
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
//! 3+4=7;7*2=4;check 7;4-5=9;\boxed{9}<|im_end|>      full granularity, one check (padding)
//! 3+4*2=4;4-5=9;\boxed{9}<|im_end|>                  a shortcut step folds two operations
//! \boxed{9}<|im_end|>                                 a guess: every operation unwritten
//! ```
//!
//! - a **chain step** `p_{i-1} op_i x_i … op_j x_j = p_j;` writes the partial result after the
//!   operations i..=j (j > i: a *shortcut* step, the intermediate partials stay unwritten). The steps
//!   of a trace cut the k operations into consecutive pieces ([`TraceShape::chunks`]), the last ending
//!   at `p_k`. Every partial a step writes is one the next steps read instead of recomputing it: for
//!   a model that cannot do several operations "in its head", folded operations and guesses are
//!   shorter and less reliable. Whether they are, for the base model the study trains, is measured
//!   (the study report's base trade-off table), not assumed.
//! - a **check** `check p_j;` restates the partial just written. It changes nothing: padding.
//! - the answer `\boxed{p_k}`, then the end-of-turn token `<|im_end|>`.
//!
//! Length in tokens of the task tokenizer ([`write_task_tokenizer`]; every digit, operator, `;`,
//! space, `\boxed{`, `}` and `check` is one token): prompt `2k + 9` ([`prompt_tokens`]); a step of m
//! operations `2m + 4`, a check 4, the answer 4 ([`TraceShape::tokens`]). At k = 5: full granularity
//! 34, with 6 checks 58 ([`trace_tokens`]), two shortcut steps 26, a guess 4.
//!
//! # Slips and fixes
//!
//! A step with the right left side but a wrong result is a *slip*; the steps after it usually build on
//! the wrong value. A later correct step over the same operations is a *fix*. Grading never looks at
//! the steps: a trace with a slip and a fix is correct iff its last box is (see [`verify`]).
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
//! length studies (useful, shortcut, useless, wrong), never rewarded: a guess that boxes the right
//! digit is correct.

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
    /// Steps of a full-granularity solution; equals `level` by construction.
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

    /// Text of full-granularity step i (1 ≤ i ≤ level), without the `;`: `p_{i-1} op_i x_i = p_i`.
    pub fn step_text(&self, i: usize) -> String {
        self.segment_text(i, i)
    }

    /// Text of the step over operations i..=j (1 ≤ i ≤ j ≤ level), without the `;`:
    /// `p_{i-1} op_i x_i … op_j x_j = p_j` (a shortcut step when j > i).
    pub fn segment_text(&self, i: usize, j: usize) -> String {
        assert!(1 <= i && i <= j && j <= self.level, "steps {i}..={j} of a level-{} question", self.level);
        let p = self.partials();
        let mut s = p[i - 1].to_string();
        for op in i..=j {
            s.push(self.ops[op - 1].symbol());
            s.push(char::from(b'0' + self.operands[op]));
        }
        s.push('=');
        s.push(char::from(b'0' + p[j]));
        s
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

/// How a correct response is written: the operations each chain step folds, in order, and the
/// number of checks (padding) inserted after the steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceShape {
    /// Operations per step, a composition of the level (each ≥ 1, sum = k): all 1 = full
    /// granularity, an entry ≥ 2 = a shortcut step, empty = a guess (the answer alone).
    pub chunks: Vec<usize>,
    /// `check` pieces; a guess has none (nothing is written to restate).
    pub checks: usize,
}

impl TraceShape {
    /// Full granularity (one step per operation) with `checks` checks.
    pub fn full(level: usize, checks: usize) -> TraceShape {
        TraceShape { chunks: vec![1; level], checks }
    }

    /// The answer alone.
    pub fn guess() -> TraceShape {
        TraceShape { chunks: Vec::new(), checks: 0 }
    }

    /// Partials p_1..p_{k-1} that no step writes (computed "in the head"): 0 at full
    /// granularity, k − 1 for a guess.
    pub fn unwritten_partials(&self, level: usize) -> usize {
        level.saturating_sub(self.chunks.len().max(1))
    }

    /// Response tokens: 2m + 4 per step of m operations, 4 per check, 4 for `\boxed{ d } <|im_end|>`.
    pub fn tokens(&self) -> usize {
        self.chunks.iter().map(|m| 2 * m + 4).sum::<usize>() + 4 * self.checks + 4
    }

    /// A shape is valid for a level-k question when its chunks are ≥ 1 and sum to k (or it is a
    /// guess without checks).
    pub fn validate(&self, level: usize) -> Result<()> {
        let ok = if self.chunks.is_empty() {
            self.checks == 0
        } else {
            self.chunks.iter().all(|&m| m >= 1) && self.chunks.iter().sum::<usize>() == level
        };
        if ok {
            Ok(())
        } else {
            Err(Error::input(format!("trace shape {self:?} does not fit a level-{level} question")))
        }
    }
}

/// Tokens of a full-granularity trace with `redundant` checks: 6 per step (`a op b = r ;`), 4 per
/// check (`check ␣ d ;`), 4 for `\boxed{ d } <|im_end|>`. The longest trace the SFT mixture writes
/// has k + [`TraceMix::extra_checks`] checks; the study's budget leaves room above that.
pub fn trace_tokens(level: usize, redundant: usize) -> usize {
    TraceShape::full(level, redundant).tokens()
}

/// The mixture of trace shapes a base model is fine-tuned on (all traces are correct).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceMix {
    /// share of guesses (the answer alone)
    pub guess_share: f64,
    /// share of the other traces (level ≥ 2) with shortcut steps: walking the operations in order,
    /// the next two are folded into one step with probability 1/2 (else one step of one operation),
    /// redrawn until at least one step folds two
    pub shortcut_share: f64,
    /// share of the non-guess traces written without any check
    pub concise_share: f64,
    /// a padded trace of level k gets 1..=k + extra_checks checks, uniformly
    pub extra_checks: usize,
}

impl TraceMix {
    /// Every share in [0, 1]; the error names `who` (the settings it comes from) and the field.
    pub fn validate(&self, who: &str) -> Result<()> {
        for (name, v) in [("guess_share", self.guess_share), ("shortcut_share", self.shortcut_share), ("concise_share", self.concise_share)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::input(format!("{who}: {name}: {v} must be in [0, 1]")));
            }
        }
        Ok(())
    }

    /// Draws the shape of one trace for a level-k question.
    pub fn sample<R: Rng + ?Sized>(&self, level: usize, rng: &mut R) -> TraceShape {
        // a share of 0 draws nothing: a mixture without guesses and shortcuts (the task before they
        // existed) reproduces its old traces
        if self.guess_share > 0.0 && rng.random_bool(self.guess_share) {
            return TraceShape::guess();
        }
        let mut chunks = vec![1; level];
        if level >= 2 && self.shortcut_share > 0.0 && rng.random_bool(self.shortcut_share) {
            chunks = loop {
                let mut c = Vec::with_capacity(level);
                let mut op = 0;
                while op < level {
                    let m = if op + 1 < level && rng.random_bool(0.5) { 2 } else { 1 };
                    c.push(m);
                    op += m;
                }
                if c.contains(&2) {
                    break c;
                }
            };
        }
        let checks = if rng.random_bool(self.concise_share) { 0 } else { rng.random_range(1..=level + self.extra_checks) };
        TraceShape { chunks, checks }
    }
}

/// A correct response of the given shape: its chain steps, each check after a uniformly chosen step
/// restating the partial that step wrote, then `\boxed{answer}<|im_end|>`; [`TraceShape::tokens`]
/// tokens long. A check restates the current partial (never an older one), so it cannot be mistaken
/// for the value the next step starts from: padding that neither helps nor misleads.
pub fn render_shaped<R: Rng + ?Sized>(example: &TaskExample, shape: &TraceShape, rng: &mut R) -> Result<String> {
    shape.validate(example.level)?;
    let p = example.partials();
    let steps = shape.chunks.len();
    // the partial each step ends at
    let ends: Vec<usize> = shape.chunks.iter().scan(0, |at, m| {
        *at += m;
        Some(*at)
    }).collect();
    let mut checks_after = vec![0usize; steps];
    for _ in 0..shape.checks {
        checks_after[rng.random_range(0..steps)] += 1;
    }
    let mut out = String::with_capacity(shape.tokens() * 2 + 16);
    let mut start = 0;
    for (s, &end) in ends.iter().enumerate() {
        out.push_str(&example.segment_text(start + 1, end));
        out.push(';');
        for _ in 0..checks_after[s] {
            out.push_str(&format!("check {};", p[end]));
        }
        start = end;
    }
    out.push_str(&format!("\\boxed{{{}}}<|im_end|>", example.answer));
    Ok(out)
}

/// A correct full-granularity response with `redundant_steps` checks inserted (see [`render_shaped`]).
/// Ends with `\boxed{answer}<|im_end|>`; [`trace_tokens`] tokens long.
pub fn render_trace<R: Rng + ?Sized>(example: &TaskExample, redundant_steps: usize, rng: &mut R) -> String {
    render_shaped(example, &TraceShape::full(example.level, redundant_steps), rng).expect("a full shape fits its own level")
}
