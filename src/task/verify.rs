//! The task's verifier: grades the last boxed answer, counts the steps of the reasoning.

use super::{Op, TaskExample};

/// The grade of one response. `reward()` is 1 for a correct answer, else 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The last `\boxed{…}` holds the question's answer.
    pub correct: bool,
    /// The integer in the last `\boxed{…}`; None when [`malformed`](Self::malformed).
    pub answer: Option<u64>,
    /// Distinct steps `p_{i-1} op_i x_i = p_i` of the solution present (in any order), ≤ level.
    pub necessary_steps: usize,
    /// Repeats of a step already counted, and `check v` with v a partial result already written.
    pub redundant_steps: usize,
    /// Other non-empty `;`-separated pieces: wrong arithmetic, checks of unwritten values, prose.
    pub unrecognised_steps: usize,
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
}

/// Grades `response` (the text after the prompt) against `example`.
///
/// Answer (SPEC §8.2 step 3): the **last** occurrence of `\boxed`; it must be followed by `{`, and the
/// braces are counted until they balance; the content, trimmed, must be ASCII digits (`07` reads as
/// 7). With two boxed answers the last one counts, whatever the first says.
///
/// Steps: the text before that last `\boxed` (the whole text when there is none) is cut at `;`.
/// A piece `a o b = r` (spaces ignored) that is step i of the solution counts as necessary the first
/// time and redundant after; `check v` is redundant when v is a partial result `p_j` whose step j
/// was already written; everything else non-empty is unrecognised. Never panics.
pub fn verify(example: &TaskExample, response: &str) -> Verdict {
    let (answer, steps_end) = match response.rfind("\\boxed") {
        Some(at) => (boxed_integer(&response[at + "\\boxed".len()..]), at),
        None => (None, response.len()),
    };
    let (necessary_steps, redundant_steps, unrecognised_steps) = count_steps(example, &response[..steps_end]);
    Verdict {
        correct: answer == Some(u64::from(example.answer)),
        answer,
        necessary_steps,
        redundant_steps,
        unrecognised_steps,
        malformed: answer.is_none(),
    }
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

/// (necessary, redundant, unrecognised) steps in `text`.
fn count_steps(example: &TaskExample, text: &str) -> (usize, usize, usize) {
    let partials = example.partials();
    // = level for examples built by TaskExample::new; bounded here because the fields are public
    let k = example.ops.len().min(example.operands.len().saturating_sub(1));
    let mut step_seen = vec![false; k + 1]; // index = step number, 0 unused
    let (mut necessary, mut redundant, mut unrecognised) = (0, 0, 0);
    for piece in text.split(';') {
        let compact: String = piece.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() {
            continue;
        }
        if let Some((a, op, b, r)) = parse_step(&compact) {
            // identical texts can occur at two steps (7*1=7 twice): take the first unwritten one
            let matches = |i: usize| {
                partials[i - 1] == a && example.ops[i - 1] == op && example.operands[i] == b && partials[i] == r
            };
            let steps: Vec<usize> = (1..=k).filter(|&i| matches(i)).collect();
            match steps.iter().find(|&&i| !step_seen[i]) {
                Some(&i) => {
                    step_seen[i] = true;
                    necessary += 1;
                }
                None if !steps.is_empty() => redundant += 1,
                None => unrecognised += 1,
            }
        } else if let Some(v) = compact.strip_prefix("check").and_then(parse_digit) {
            if (1..=k).any(|j| step_seen[j] && partials[j] == v) {
                redundant += 1;
            } else {
                unrecognised += 1;
            }
        } else {
            unrecognised += 1;
        }
    }
    (necessary, redundant, unrecognised)
}

/// `a o b = r` with one-digit a, b, r (whitespace already removed).
fn parse_step(s: &str) -> Option<(u8, Op, u8, u8)> {
    let c: Vec<char> = s.chars().collect();
    if c.len() != 5 || c[3] != '=' {
        return None;
    }
    let digit = |ch: char| ch.to_digit(10).map(|d| d as u8);
    Some((digit(c[0])?, Op::from_symbol(c[1])?, digit(c[2])?, digit(c[4])?))
}

fn parse_digit(s: &str) -> Option<u8> {
    let mut chars = s.chars();
    let d = chars.next()?.to_digit(10)?;
    chars.next().is_none().then_some(d as u8)
}
