//! What a model's responses look like, by the task's verifier: the shape each response chose (a
//! guess, shortcut steps, full granularity, padded or not) and its useful and useless steps. The
//! base model's accuracy per shape is the study's test of whether length buys accuracy.

use serde::{Deserialize, Serialize};

use crate::task::{verify, TaskExample, Verdict};

/// The shape a response attempted, whatever its arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ShapeClass {
    /// no chain step: every operation left to the box
    Guess,
    /// at least one step folds two or more operations
    Shortcut,
    /// one operation per step, no check
    Full,
    /// one operation per step, with checks
    FullPadded,
}

impl ShapeClass {
    pub const ALL: [ShapeClass; 4] = [ShapeClass::Guess, ShapeClass::Shortcut, ShapeClass::Full, ShapeClass::FullPadded];

    pub fn of(v: &Verdict) -> ShapeClass {
        if v.chain_steps == 0 {
            ShapeClass::Guess
        } else if v.folded_steps > 0 {
            ShapeClass::Shortcut
        } else if v.checks == 0 {
            ShapeClass::Full
        } else {
            ShapeClass::FullPadded
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ShapeClass::Guess => "guess",
            ShapeClass::Shortcut => "shortcut steps",
            ShapeClass::Full => "full granularity",
            ShapeClass::FullPadded => "full + checks",
        }
    }
}

/// One graded response.
#[derive(Clone, Debug)]
pub struct Response {
    pub level: usize,
    /// tokens, EOS included
    pub length: usize,
    pub verdict: Verdict,
}

impl Response {
    pub fn new(example: &TaskExample, text: &str, length: usize) -> Response {
        Response { level: example.level, length, verdict: verify(example, text) }
    }
}

/// Totals of a set of responses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShapeStats {
    pub responses: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub mean_length: f64,
    /// steps that advance the solution, padding, and wrong arithmetic (task::Verdict)
    pub mean_useful_steps: f64,
    pub mean_useless_steps: f64,
    pub mean_wrong_steps: f64,
    /// shares of the responses by [`ShapeClass`] (full_share counts full granularity padded or not)
    pub guess_share: f64,
    pub shortcut_share: f64,
    pub full_share: f64,
    /// responses with at least one check, whatever their shape
    pub padded_share: f64,
}

impl ShapeStats {
    pub fn of<'a>(rs: impl IntoIterator<Item = &'a Response>) -> ShapeStats {
        let rs: Vec<&Response> = rs.into_iter().collect();
        let n = rs.len();
        if n == 0 {
            return ShapeStats::default();
        }
        let mean = |f: &dyn Fn(&Response) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / n as f64;
        let share = |c: &dyn Fn(ShapeClass) -> bool| mean(&|r| f64::from(u8::from(c(ShapeClass::of(&r.verdict)))));
        let correct = rs.iter().filter(|r| r.verdict.correct).count();
        ShapeStats {
            responses: n,
            correct,
            accuracy: correct as f64 / n as f64,
            mean_length: mean(&|r| r.length as f64),
            mean_useful_steps: mean(&|r| r.verdict.useful_steps as f64),
            mean_useless_steps: mean(&|r| r.verdict.useless_steps as f64),
            mean_wrong_steps: mean(&|r| r.verdict.wrong_steps as f64),
            guess_share: share(&|c| c == ShapeClass::Guess),
            shortcut_share: share(&|c| c == ShapeClass::Shortcut),
            full_share: share(&|c| matches!(c, ShapeClass::Full | ShapeClass::FullPadded)),
            padded_share: mean(&|r| f64::from(u8::from(r.verdict.checks > 0))),
        }
    }
}

/// The shape statistics of one model's evaluation: overall, per level, per level and shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShapeReport {
    pub overall: ShapeStats,
    /// (level, stats), ascending levels
    pub per_level: Vec<(usize, ShapeStats)>,
    /// (level, shape, stats) for every pair with at least one response
    pub per_level_shape: Vec<(usize, ShapeClass, ShapeStats)>,
}

impl ShapeReport {
    pub fn of(rs: &[Response]) -> ShapeReport {
        let mut levels: Vec<usize> = rs.iter().map(|r| r.level).collect();
        levels.sort_unstable();
        levels.dedup();
        let per_level = levels.iter().map(|&l| (l, ShapeStats::of(rs.iter().filter(|r| r.level == l)))).collect();
        let per_level_shape = levels
            .iter()
            .flat_map(|&l| ShapeClass::ALL.into_iter().map(move |c| (l, c)))
            .filter_map(|(l, c)| {
                let s = ShapeStats::of(rs.iter().filter(|r| r.level == l && ShapeClass::of(&r.verdict) == c));
                (s.responses > 0).then_some((l, c, s))
            })
            .collect();
        ShapeReport { overall: ShapeStats::of(rs), per_level, per_level_shape }
    }
}
