//! The statistics of the study's report: means and intervals over seeds, the comparison of two
//! settings at a matched length, two-proportion intervals, and AES (SPEC §9.2).

/// Mean, sample standard deviation and count of a set of per-seed values.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub mean: f64,
    /// sample sd (÷ n − 1); None for fewer than two values
    pub sd: Option<f64>,
    pub n: usize,
}

impl Summary {
    /// The summary of `xs` (not empty).
    pub fn of(xs: &[f64]) -> Summary {
        assert!(!xs.is_empty(), "a summary of no values");
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let sd = (n > 1).then(|| (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64).sqrt());
        Summary { mean, sd, n }
    }

    /// Squared standard error of the mean, sd²/n (None with one value).
    pub fn se2(&self) -> Option<f64> {
        self.sd.map(|sd| sd * sd / self.n as f64)
    }

    /// The two-sided 95% interval of the mean, mean ± t(0.975, n − 1)·sd/√n (None with one value).
    pub fn ci95(&self) -> Option<(f64, f64)> {
        let half = t975(self.n as f64 - 1.0)? * self.se2()?.sqrt();
        Some((self.mean - half, self.mean + half))
    }
}

/// Two-sided 95% quantiles of Student's t, t(0.975, df) for df = 1..=30 (standard tables).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110,
    2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// t(0.975, df). A fractional df (Welch) is rounded down, which widens the interval (conservative);
/// beyond 30 the Cornish-Fisher expansion around z = 1.959964 (error < 1e-3 there). None for df < 1.
pub fn t975(df: f64) -> Option<f64> {
    if df.is_nan() || df < 1.0 {
        return None;
    }
    let d = df.floor();
    if d <= 30.0 {
        return Some(T975[d as usize - 1]);
    }
    let z: f64 = 1.959964;
    let (z3, z5) = (z.powi(3), z.powi(5));
    Some(z + (z3 + z) / (4.0 * d) + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * d * d))
}

/// A difference of means with its 95% interval (Welch).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Difference {
    pub delta: f64,
    /// None when a side has a single seed (no spread to build an interval from)
    pub ci95: Option<(f64, f64)>,
}

impl Difference {
    /// −1 the interval lies below 0, +1 above 0, 0 it holds 0 or does not exist.
    pub fn sign(&self) -> i8 {
        match self.ci95 {
            Some((lo, _)) if lo > 0.0 => 1,
            Some((_, hi)) if hi < 0.0 => -1,
            _ => 0,
        }
    }
}

/// `a` minus a weighted sum of independent means Σ w_k·b_k (an interpolation on a curve), with
/// Welch's interval: se² = se_a² + Σ w_k² se_k², df by Welch–Satterthwaite.
pub fn difference(a: &Summary, b: &[(f64, Summary)]) -> Difference {
    let delta = a.mean - b.iter().map(|(w, s)| w * s.mean).sum::<f64>();
    let parts: Option<Vec<(f64, f64)>> = std::iter::once((1.0, *a))
        .chain(b.iter().copied())
        .filter(|(w, _)| *w != 0.0)
        .map(|(w, s)| Some((w * w * s.se2()?, s.n as f64 - 1.0)))
        .collect();
    let ci95 = parts.and_then(|parts| {
        let se2: f64 = parts.iter().map(|(v, _)| v).sum();
        let denom: f64 = parts.iter().map(|(v, df)| v * v / df).sum();
        // all spreads zero: a degenerate interval of width 0 at delta
        let df = if denom > 0.0 { se2 * se2 / denom } else { parts.iter().map(|p| p.1).sum() };
        let half = t975(df)? * se2.sqrt();
        Some((delta - half, delta + half))
    });
    Difference { delta, ci95 }
}

/// Where `x` falls on a curve of points sorted by x: the interpolation weights of its two
/// neighbours, [(index, weight)], or None when x lies outside [first x, last x]. Points with equal
/// x share the weight equally.
pub fn interpolation_weights(xs: &[f64], x: f64) -> Option<Vec<(usize, f64)>> {
    let (lo, hi) = (xs.first()?, xs.last()?);
    if !(x >= *lo && x <= *hi) {
        return None;
    }
    let at: Vec<usize> = (0..xs.len()).filter(|&i| xs[i] == x).collect();
    if !at.is_empty() {
        let w = 1.0 / at.len() as f64;
        return Some(at.into_iter().map(|i| (i, w)).collect());
    }
    let j = xs.partition_point(|&v| v < x); // xs[j-1] < x < xs[j]
    let t = (x - xs[j - 1]) / (xs[j] - xs[j - 1]);
    Some(vec![(j - 1, 1.0 - t), (j, t)])
}

/// Successes and trials: (k, n).
pub type Count = (usize, usize);

/// A difference of two proportions combined over strata (levels). Each cell is
/// ((k1, n1), (k2, n2)); a stratum with both sides non-empty gives d = k1/n1 − k2/n2 with the Wald
/// variance p1(1 − p1)/n1 + p2(1 − p2)/n2 and weight n1·n2/(n1 + n2) (the Cochran–Mantel–Haenszel
/// weight); the combination is Σ w·d / Σ w with variance Σ w²·var / (Σ w)², interval ± 1.96 sd.
/// None when no stratum has both sides.
pub fn stratified_difference(cells: &[(Count, Count)]) -> Option<Difference> {
    let (mut sw, mut swd, mut sw2v) = (0.0, 0.0, 0.0);
    for &((k1, n1), (k2, n2)) in cells {
        if n1 == 0 || n2 == 0 {
            continue;
        }
        let (n1, n2) = (n1 as f64, n2 as f64);
        let (p1, p2) = (k1 as f64 / n1, k2 as f64 / n2);
        let w = n1 * n2 / (n1 + n2);
        sw += w;
        swd += w * (p1 - p2);
        sw2v += w * w * (p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2);
    }
    (sw > 0.0).then(|| {
        let delta = swd / sw;
        let half = 1.959964 * sw2v.sqrt() / sw;
        Difference { delta, ci95: Some((delta - half, delta + half)) }
    })
}

/// Weight of a relative accuracy gain in AES (SPEC §9.2 leaves it open; assumed).
pub const AES_GAIN_WEIGHT: f64 = 3.0;
/// Weight of a relative accuracy loss in AES (SPEC §9.2: reproduces the paper's values).
pub const AES_LOSS_WEIGHT: f64 = 10.0;

/// Accuracy-Efficiency Score against the same method without length penalty (SPEC §9.2):
/// ΔL = (L_ref − L)/L_ref, ΔA = (A − A_ref)/A_ref; AES = ΔL − 10|ΔA| if ΔA < 0, else ΔL + 3ΔA.
/// None when the reference's pass@1 or length is 0 (the relative changes are not defined).
pub fn aes(acc: f64, len: f64, acc_ref: f64, len_ref: f64) -> Option<f64> {
    if acc_ref <= 0.0 || len_ref <= 0.0 {
        return None;
    }
    let dl = (len_ref - len) / len_ref;
    let da = (acc - acc_ref) / acc_ref;
    Some(if da < 0.0 { dl - AES_LOSS_WEIGHT * da.abs() } else { dl + AES_GAIN_WEIGHT * da })
}
