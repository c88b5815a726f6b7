//! The study's answer, decided from the numbers by a rule fixed before they exist: does DRPO reach a
//! given length with less accuracy loss than the best length-penalty baseline?
//!
//! ```text
//! baseline curve   a family's settings (its unpenalised reference included), sorted by mean length;
//!                  its pass@1 at a length L in [shortest, longest] is the linear interpolation of the
//!                  two neighbouring settings' mean pass@1 (outside that range the family has no value)
//! one comparison   each DRPO setting with a finite λ, at its own mean length L_d, against every
//!                  family whose curve spans L_d: Δ = pass@1_d − pass@1_F(L_d), 95% Welch interval
//!                  over seeds (se² = sd_d²/n_d + Σ w_k² sd_k²/n_k; lengths taken as exact)
//! outcome          better: every Δ's interval lies above 0 (so also against the best baseline there);
//!                  worse: some Δ's interval lies below 0; otherwise not distinguishable; no family
//!                  spanning L_d: not comparable
//! answer           yes: ≥ 1 better and none worse; no: ≥ 1 worse and none better; mixed: both;
//!                  not distinguishable: every comparable setting is; not comparable: none is
//! ```
//!
//! Every comparison is at the 95% level with no correction for their number (a DRPO setting is
//! compared with up to four families); the report prints each one, so a reader can apply one.

use serde::{Deserialize, Serialize};

use super::stats::{difference, interpolation_weights, Difference, Summary};

/// One setting's point: pass@1 and mean length over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub label: String,
    pub accuracy: Summary,
    pub length: Summary,
}

/// A family's pass@1 at a DRPO setting's length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineAt {
    pub family: String,
    /// the interpolated mean pass@1
    pub accuracy: f64,
    /// DRPO minus the family, with its interval
    pub difference: Difference,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Better,
    Worse,
    NotDistinguishable,
    NotComparable,
}

impl Outcome {
    pub fn text(self) -> &'static str {
        match self {
            Outcome::Better => "better",
            Outcome::Worse => "worse",
            Outcome::NotDistinguishable => "not distinguishable",
            Outcome::NotComparable => "no baseline reaches this length",
        }
    }
}

/// One DRPO setting against every family that reaches its length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchedComparison {
    pub setting: String,
    pub length: f64,
    pub accuracy: f64,
    pub baselines: Vec<BaselineAt>,
    pub outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Yes,
    No,
    Mixed,
    NotDistinguishable,
    NotComparable,
}

/// The comparisons of the module doc. `baselines`: (family name, its settings' points in any order).
pub fn matched_comparisons(drpo: &[CurvePoint], baselines: &[(String, Vec<CurvePoint>)]) -> Vec<MatchedComparison> {
    drpo.iter()
        .map(|d| {
            let at = d.length.mean;
            let found: Vec<BaselineAt> = baselines
                .iter()
                .filter_map(|(family, points)| {
                    let mut curve: Vec<&CurvePoint> = points.iter().collect();
                    curve.sort_by(|a, b| a.length.mean.total_cmp(&b.length.mean));
                    let xs: Vec<f64> = curve.iter().map(|p| p.length.mean).collect();
                    let weights = interpolation_weights(&xs, at)?;
                    let terms: Vec<(f64, Summary)> = weights.iter().map(|&(k, w)| (w, curve[k].accuracy)).collect();
                    let accuracy = terms.iter().map(|(w, s)| w * s.mean).sum();
                    Some(BaselineAt { family: family.clone(), accuracy, difference: difference(&d.accuracy, &terms) })
                })
                .collect();
            let outcome = if found.is_empty() {
                Outcome::NotComparable
            } else if found.iter().any(|b| b.difference.sign() < 0) {
                Outcome::Worse
            } else if found.iter().all(|b| b.difference.sign() > 0) {
                Outcome::Better
            } else {
                Outcome::NotDistinguishable
            };
            MatchedComparison { setting: d.label.clone(), length: at, accuracy: d.accuracy.mean, baselines: found, outcome }
        })
        .collect()
}

/// The answer of the module doc.
pub fn answer(comparisons: &[MatchedComparison]) -> Answer {
    let count = |o: Outcome| comparisons.iter().filter(|c| c.outcome == o).count();
    match (count(Outcome::Better), count(Outcome::Worse), count(Outcome::NotDistinguishable)) {
        (0, 0, 0) => Answer::NotComparable,
        (0, 0, _) => Answer::NotDistinguishable,
        (_, 0, _) => Answer::Yes,
        (0, _, _) => Answer::No,
        _ => Answer::Mixed,
    }
}
