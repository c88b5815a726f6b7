//! The task's verifier: grades the last boxed answer, counts the steps of the reasoning.

use super::{Op, TaskExample};

/// The grade of one response. `reward()` is 1 for a correct answer, else 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The last `\boxed{…}` holds the question's answer.
    pub correct: bool,
    /// The integer in the last `\boxed{…}`; None when [`malformed`](Self::malformed).
    pub answer: Option<u64>,
    /// Chain steps that are a correct piece of the solution, `p_{i-1} op_i x_i … op_j x_j = p_j`,
    /// and cover at least one operation no earlier correct step covered: the length that can buy
    /// accuracy. At most `level`.
    pub useful_steps: usize,
    /// Useful steps that fold two or more operations.
    pub shortcut_steps: usize,
    /// Operations covered by the useful steps (≤ level); the others are left to the box.
    pub ops_written: usize,
    /// Padding: correct steps over operations already covered, and `check v` with v a partial
    /// result a correct step already wrote.
    pub useless_steps: usize,
    /// Chain steps that are not a correct piece of the solution: slips (a wrong result) and steps
    /// built on one.
    pub wrong_steps: usize,
    /// Other non-empty `;`-separated pieces: checks of unwritten values, prose.
    pub unrecognised_steps: usize,
    /// The shape the response attempted, whatever its arithmetic: every chain step (correct or
    /// not), those folding two or more operations, and every `check` piece.
    pub chain_steps: usize,
    pub folded_steps: usize,
    pub checks: usize,
    /// No gradeable answer: no `\boxed`, braces never closed, `\boxed` not followed by `{`, or the
    /// content is not a plain non-negative integer.
    pub malformed: bool,
}

impl Verdict {
    pub fn reward(&self) -> f64 {
        if self.correct {
            1.0
        } else {
            0.0
        }
    }

    /// No useful step before the answer: every operation was left to the box.
    pub fn is_guess(&self) -> bool {
        self.useful_steps == 0
    }
}

/// Grades `response` (the text after the prompt) against `example`.
///
/// Answer (SPEC §8.2 step 3): the **last** occurrence of `\boxed`; it must be followed by `{`, and the
/// braces are counted until they balance; the content, trimmed, must be ASCII digits (`07` reads as
/// 7). With two boxed answers the last one counts, whatever the first says; so a slip followed by a
/// fix is graded on the final box only.
///
/// Steps: the text before that last `\boxed` (the whole text when there is none) is cut at `;`.
/// A piece `a o b (o b)* = r` (spaces ignored) is correct when it is operations i..=j of the
/// solution started from `p_{i-1}` and ends at `p_j`; it is useful if it covers an operation no
/// earlier correct piece covered, useless otherwise, and wrong when it is no correct piece. When the
/// same text fits several i (e.g. `7*1=7` twice), the first fit with an uncovered operation is
/// taken. `check v` is useless when v is a partial result a correct piece already ended at;
/// everything else non-empty is unrecognised. Never panics.
pub fn verify(example: &TaskExample, response: &str) -> Verdict {
    let (answer, steps_end) = match response.rfind("\\boxed") {
        Some(at) => (boxed_integer(&response[at + "\\boxed".len()..]), at),
        None => (None, response.len()),
    };
    let mut v = Verdict {
        correct: answer == Some(u64::from(example.answer)),
        answer,
        useful_steps: 0,
        shortcut_steps: 0,
        ops_written: 0,
        useless_steps: 0,
        wrong_steps: 0,
        unrecognised_steps: 0,
        chain_steps: 0,
        folded_steps: 0,
        checks: 0,
        malformed: answer.is_none(),
    };
    count_steps(example, &response[..steps_end], &mut v);
    v
}

/// The integer in `{…}` at the start of `after_boxed`; None if absent, unbalanced or not an integer.
fn boxed_integer(after_boxed: &str) -> Option<u64> {
    let bytes = after_boxed.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    let mut close = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    // both braces are ASCII, so the slice bounds are char boundaries
    let inner = after_boxed[1..close?].trim();
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    inner.parse().ok() // None on overflow
}

/// Fills the step counts of `v` from `text`.
fn count_steps(example: &TaskExample, text: &str, v: &mut Verdict) {
    let partials = example.partials();
    // = level for examples built by TaskExample::new; bounded here because the fields are public
    let k = example.ops.len().min(example.operands.len().saturating_sub(1));
    let mut covered = vec![false; k + 1]; // index = operation number, 0 unused
    let mut written = vec![false; k + 1]; // a correct piece ended at p_j
    for piece in text.split(';') {
        let compact: String = piece.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() {
            continue;
        }
        if let Some(Step { a, ops, r }) = parse_step(&compact) {
            // operations i..=j with j = i + ops.len() − 1, started from p_{i-1}, ending at p_j
            let m = ops.len();
            v.chain_steps += 1;
            v.folded_steps += usize::from(m >= 2);
            let fits = |i: usize| {
                i + m - 1 <= k
                    && partials[i - 1] == a
                    && partials[i + m - 1] == r
                    && ops.iter().enumerate().all(|(t, &(op, x))| example.ops[i - 1 + t] == op && example.operands[i + t] == x)
            };
            let fitting: Vec<usize> = (1..=k).filter(|&i| fits(i)).collect();
            match fitting.iter().find(|&&i| covered[i..i + m].iter().any(|c| !c)) {
                Some(&i) => {
                    v.useful_steps += 1;
                    v.shortcut_steps += usize::from(m >= 2);
                    for c in &mut covered[i..i + m] {
                        *c = true;
                    }
                    written[i + m - 1] = true;
                }
                None if !fitting.is_empty() => v.useless_steps += 1,
                None => v.wrong_steps += 1,
            }
        } else if let Some(d) = compact.strip_prefix("check").and_then(parse_digit) {
            v.checks += 1;
            if (1..=k).any(|j| written[j] && partials[j] == d) {
                v.useless_steps += 1;
            } else {
                v.unrecognised_steps += 1;
            }
        } else {
            v.unrecognised_steps += 1;
        }
    }
    v.ops_written = covered.iter().filter(|&&c| c).count();
}

/// A chain step as written: left operand, (operator, operand) pairs, result.
struct Step {
    a: u8,
    ops: Vec<(Op, u8)>,
    r: u8,
}

/// `a o b (o b)* = r` with one-digit a, b, r (whitespace already removed).
fn parse_step(s: &str) -> Option<Step> {
    let c: Vec<char> = s.chars().collect();
    let n = c.len();
    if n < 5 || n.is_multiple_of(2) || c[n - 2] != '=' {
        return None;
    }
    let digit = |ch: char| ch.to_digit(10).map(|d| d as u8);
    let ops = c[1..n - 2].chunks(2).map(|p| Some((Op::from_symbol(p[0])?, digit(p[1])?))).collect::<Option<Vec<_>>>()?;
    Some(Step { a: digit(c[0])?, ops, r: digit(c[n - 1])? })
}

fn parse_digit(s: &str) -> Option<u8> {
    let mut chars = s.chars();
    let d = chars.next()?.to_digit(10)?;
    chars.next().is_none().then_some(d as u8)
}
