//! The study's statistics and verdict rule, against values the test derives itself (numerical
//! integration of Student's t density, hand-computed intervals, SPEC §9.2's AES values).

use drpo::study::stats::{aes, difference, interpolation_weights, stratified_difference, t975, Summary};
use drpo::study::verdict::{answer, matched_comparisons, Answer, CurvePoint, Outcome};

/// P(T ≤ x) for Student's t with `df` degrees of freedom, by Simpson's rule on the density.
fn t_cdf(x: f64, df: f64) -> f64 {
    let ln_gamma = |z: f64| -> f64 {
        // Lanczos (g = 7, n = 9): ~1e-15 relative for z > 0.5
        const C: [f64; 9] = [
            0.999_999_999_999_809_9,
            676.520_368_121_885_1,
            -1_259.139_216_722_402_8,
            771.323_428_777_653_1,
            -176.615_029_162_140_6,
            12.507_343_278_686_905,
            -0.138_571_095_265_720_12,
            9.984_369_578_019_572e-6,
            1.505_632_735_149_311_6e-7,
        ];
        let z = z - 1.0;
        let t = z + 7.5;
        let s: f64 = C[0] + (1..9).map(|i| C[i] / (z + i as f64)).sum::<f64>();
        0.5 * (2.0 * std::f64::consts::PI).ln() + (z + 0.5) * t.ln() - t + s.ln()
    };
    let c = (ln_gamma((df + 1.0) / 2.0) - ln_gamma(df / 2.0)).exp() / (df * std::f64::consts::PI).sqrt();
    let f = |t: f64| c * (1.0 + t * t / df).powf(-(df + 1.0) / 2.0);
    let n = 20_000;
    let h = x / n as f64;
    let simpson: f64 = (0..=n).map(|i| f(i as f64 * h) * if i == 0 || i == n { 1.0 } else if i % 2 == 1 { 4.0 } else { 2.0 }).sum::<f64>() * h / 3.0;
    0.5 + simpson
}

#[test]
fn t_quantiles_match_the_t_distribution() {
    for df in [1.0, 2.0, 3.0, 4.0, 7.0, 12.0, 30.0, 31.0, 45.0, 100.0, 1000.0] {
        let q = t975(df).unwrap();
        let p = t_cdf(q, df);
        println!("df {df}: t = {q}, P = {p:.6}");
        // the tables give 3 decimals: at df = 1 the density at 12.7 is 0.002, so P is within 1e-6
        assert!((p - 0.975).abs() < 2.5e-5, "df {df}: P(T ≤ {q}) = {p}");
    }
    // a fractional df is rounded down: wider, never narrower
    assert_eq!(t975(2.7), t975(2.0));
    assert!(t975(0.5).is_none() && t975(f64::NAN).is_none());
}

#[test]
fn summaries_and_welch_intervals() {
    let s = Summary::of(&[0.80, 0.84, 0.86]);
    let mean = 2.5 / 3.0;
    let want_sd = (((0.80f64 - mean).powi(2) + (0.84f64 - mean).powi(2) + (0.86f64 - mean).powi(2)) / 2.0).sqrt();
    assert!((s.mean - mean).abs() < 1e-15 && (s.sd.unwrap() - want_sd).abs() < 1e-15);
    let (lo, hi) = s.ci95().unwrap();
    let half = 4.303 * want_sd / 3f64.sqrt();
    assert!((lo - (mean - half)).abs() < 1e-12 && (hi - (mean + half)).abs() < 1e-12);
    assert!(Summary::of(&[0.5]).ci95().is_none());

    // Welch: equal n = 3, sds 0.02 and 0.04: se² = (0.0004 + 0.0016)/3, df = se⁴ / Σ (v²/2) = 2.94 → t(2)
    let a = Summary { mean: 0.80, sd: Some(0.02), n: 3 };
    let b = Summary { mean: 0.60, sd: Some(0.04), n: 3 };
    let d = difference(&a, &[(1.0, b)]);
    let se = ((0.0004f64 + 0.0016) / 3.0).sqrt();
    let (lo, hi) = d.ci95.unwrap();
    assert!((d.delta - 0.20).abs() < 1e-15);
    assert!((hi - lo - 2.0 * 4.303 * se).abs() < 1e-12, "{lo} {hi}");
    assert_eq!(d.sign(), 1); // half-width 4.303 · 0.0258 = 0.111 < 0.2
    assert_eq!(difference(&Summary { mean: 0.70, ..a }, &[(1.0, b)]).sign(), 0); // Δ = 0.1 < 0.111
    // an interpolated baseline: weights enter squared
    let c = Summary { mean: 0.50, sd: Some(0.04), n: 3 };
    let d = difference(&a, &[(0.25, b), (0.75, c)]);
    assert!((d.delta - (0.80 - 0.25 * 0.60 - 0.75 * 0.50)).abs() < 1e-15);
    let se2 = 0.0004 / 3.0 + 0.0625 * 0.0016 / 3.0 + 0.5625 * 0.0016 / 3.0;
    let (v1, v2, v3) = (0.0004f64 / 3.0, 0.0625 * 0.0016 / 3.0, 0.5625 * 0.0016 / 3.0);
    let df = se2 * se2 / ((v1 * v1 + v2 * v2 + v3 * v3) / 2.0);
    let (lo, hi) = d.ci95.unwrap();
    assert!((hi - lo - 2.0 * t975(df).unwrap() * se2.sqrt()).abs() < 1e-12);
    // one seed on either side: no interval, no sign
    let one = Summary { mean: 0.9, sd: None, n: 1 };
    assert!(difference(&one, &[(1.0, b)]).ci95.is_none() && difference(&one, &[(1.0, b)]).sign() == 0);
}

#[test]
fn interpolation_and_stratified_proportions() {
    let xs = [10.0, 20.0, 40.0];
    assert_eq!(interpolation_weights(&xs, 15.0), Some(vec![(0, 0.5), (1, 0.5)]));
    assert_eq!(interpolation_weights(&xs, 35.0), Some(vec![(1, 0.25), (2, 0.75)]));
    assert_eq!(interpolation_weights(&xs, 20.0), Some(vec![(1, 1.0)]));
    assert_eq!(interpolation_weights(&xs, 10.0), Some(vec![(0, 1.0)]));
    assert_eq!(interpolation_weights(&xs, 9.99), None);
    assert_eq!(interpolation_weights(&xs, 40.01), None);
    assert_eq!(interpolation_weights(&[], 1.0), None);

    // one stratum: the Wald interval of two proportions
    let d = stratified_difference(&[((80, 100), (30, 60))]).unwrap();
    let half = 1.959964 * (0.8f64 * 0.2 / 100.0 + 0.5 * 0.5 / 60.0).sqrt();
    assert!((d.delta - 0.3).abs() < 1e-15);
    let (lo, hi) = d.ci95.unwrap();
    assert!((lo - (0.3 - half)).abs() < 1e-12 && (hi - (0.3 + half)).abs() < 1e-12);
    // two strata, hand-weighted; an empty side is skipped
    let d = stratified_difference(&[((80, 100), (30, 60)), ((10, 20), (5, 20)), ((3, 3), (0, 0))]).unwrap();
    let (w1, w2) = (100.0 * 60.0 / 160.0, 20.0 * 20.0 / 40.0);
    let want = (w1 * 0.3 + w2 * 0.25) / (w1 + w2);
    assert!((d.delta - want).abs() < 1e-15);
    let var = (w1 * w1 * (0.16 / 100.0 + 0.25 / 60.0) + w2 * w2 * (0.25 / 20.0 + 0.1875 / 20.0)) / ((w1 + w2) * (w1 + w2));
    let (lo, hi) = d.ci95.unwrap();
    assert!((hi - lo - 2.0 * 1.959964 * var.sqrt()).abs() < 1e-12);
    assert!(stratified_difference(&[((1, 1), (0, 0))]).is_none());
}

#[test]
fn aes_reproduces_spec_values() {
    // SPEC §9.2: DRPO λ = 0.1 vs DisCO (1.5B, 7B) and ALP β = 1e-9 vs β = 0 (1.5B), read off the plot
    for (acc, len, acc_ref, len_ref, want) in [
        (0.624, 1527.0, 0.649, 3492.0, 0.177),
        (0.714, 1502.0, 0.733, 3052.0, 0.248),
        (0.568, 2660.0, 0.606, 3494.0, -0.388),
    ] {
        let got = aes(acc, len, acc_ref, len_ref).unwrap();
        assert!((got - want).abs() < 0.002, "{acc}/{len} vs {acc_ref}/{len_ref}: {got}, SPEC {want}");
    }
    // an accuracy gain: ΔL + 3ΔA
    assert!((aes(0.66, 50.0, 0.60, 100.0).unwrap() - (0.5 + 3.0 * 0.1)).abs() < 1e-12);
    assert_eq!(aes(0.5, 50.0, 0.0, 100.0), None, "a reference with pass@1 0 has no relative change");
}

fn point(label: &str, acc: &[f64], len: &[f64]) -> CurvePoint {
    CurvePoint { label: label.into(), accuracy: Summary::of(acc), length: Summary::of(len) }
}

#[test]
fn verdict_rule() {
    // a baseline curve from 20 to 40 tokens, pass@1 0.60 → 0.80, sd 0.01
    let base = vec![point("ref", &[0.79, 0.80, 0.81], &[40.0, 40.0, 40.0]), point("a", &[0.59, 0.60, 0.61], &[20.0, 20.0, 20.0])];
    let baselines = vec![("B".to_string(), base)];
    // at 30 tokens the baseline reads 0.70
    let better = point("d1", &[0.77, 0.78, 0.79], &[30.0, 30.0, 30.0]);
    let worse = point("d2", &[0.61, 0.62, 0.63], &[30.0, 30.0, 30.0]);
    let noisy = point("d3", &[0.55, 0.70, 0.85], &[30.0, 30.0, 30.0]);
    let outside = point("d4", &[0.9, 0.9, 0.9], &[10.0, 10.0, 10.0]);
    let cs = matched_comparisons(&[better.clone(), worse.clone(), noisy.clone(), outside.clone()], &baselines);
    let outcomes: Vec<Outcome> = cs.iter().map(|c| c.outcome).collect();
    assert_eq!(outcomes, [Outcome::Better, Outcome::Worse, Outcome::NotDistinguishable, Outcome::NotComparable]);
    assert!((cs[0].baselines[0].accuracy - 0.70).abs() < 1e-12);
    assert!((cs[0].baselines[0].difference.delta - 0.08).abs() < 1e-12);
    assert!(cs[3].baselines.is_empty());
    assert_eq!(answer(&cs), Answer::Mixed);
    assert_eq!(answer(&cs[..1]), Answer::Yes);
    assert_eq!(answer(&cs[1..2]), Answer::No);
    assert_eq!(answer(&[cs[0].clone(), cs[2].clone()]), Answer::Yes);
    assert_eq!(answer(&cs[2..3]), Answer::NotDistinguishable);
    assert_eq!(answer(&cs[3..]), Answer::NotComparable);
    // better than one family, indistinguishable from another: not better
    let flat = vec![point("ref", &[0.70, 0.78, 0.86], &[40.0; 3]), point("a", &[0.70, 0.78, 0.86], &[20.0; 3])];
    let two = vec![baselines[0].clone(), ("C".to_string(), flat)];
    let cs = matched_comparisons(&[better], &two);
    assert_eq!(cs[0].outcome, Outcome::NotDistinguishable);
    assert_eq!(cs[0].baselines.len(), 2);
    // one seed: never an interval, so never better or worse
    let single = vec![("B".to_string(), vec![point("ref", &[0.8], &[40.0]), point("a", &[0.6], &[20.0])])];
    let cs = matched_comparisons(&[point("d", &[0.99], &[30.0])], &single);
    assert_eq!(cs[0].outcome, Outcome::NotDistinguishable);
}

/// The fitness criterion on hand-made responses: shapes, shares and the stratified difference.
#[test]
fn fitness_reads_the_shapes_of_responses() {
    use drpo::study::{Fitness, Response, ShapeClass, ShapeReport};
    use drpo::task::TaskExample;
    let two = TaskExample::parse("3+4*2").unwrap(); // 7, then 4
    let three = TaskExample::parse("3+4*2-5").unwrap(); // 7, 4, then 9
    let text_len = |t: &str| t.matches(';').count() * 5 + 4; // any positive length will do
    let mut rs = Vec::new();
    let mut add = |ex: &TaskExample, text: &str, times: usize| {
        for _ in 0..times {
            rs.push(Response::new(ex, text, text_len(text)));
        }
    };
    // level 2: full granularity 45/50 right, guesses 5/50 right
    add(&two, "3+4=7;7*2=4;\\boxed{4}", 30);
    add(&two, "3+4=7;check 7;7*2=4;\\boxed{4}", 15);
    add(&two, "3+4=7;7*2=5;\\boxed{5}", 5);
    add(&two, "\\boxed{4}", 5);
    add(&two, "\\boxed{1}", 45);
    // level 3: full 20/20, shortcut 2/20
    add(&three, "3+4=7;7*2=4;4-5=9;\\boxed{9}", 20);
    add(&three, "3+4*2=4;4-5=9;\\boxed{9}", 2);
    add(&three, "3+4*2=5;5-5=0;\\boxed{0}", 18);
    let report = ShapeReport::of(&rs);
    assert_eq!(report.per_level.len(), 2);
    let cell = |l: usize, c: ShapeClass| report.per_level_shape.iter().find(|(a, b, _)| *a == l && *b == c).map(|x| (x.2.correct, x.2.responses));
    assert_eq!(cell(2, ShapeClass::Full), Some((30, 35)));
    assert_eq!(cell(2, ShapeClass::FullPadded), Some((15, 15)));
    assert_eq!(cell(2, ShapeClass::Guess), Some((5, 50)));
    assert_eq!(cell(3, ShapeClass::Shortcut), Some((2, 20)));
    assert_eq!(cell(3, ShapeClass::Guess), None);
    let l2 = &report.per_level[0].1;
    assert_eq!((l2.responses, l2.correct), (100, 50));
    assert!((l2.guess_share - 0.5).abs() < 1e-12 && (l2.full_share - 0.5).abs() < 1e-12 && (l2.padded_share - 0.15).abs() < 1e-12);
    // useful steps: 2 per right full trace, 1 per wrong one (the slip is a wrong step), 0 per guess
    assert!((l2.mean_useful_steps - (45.0 * 2.0 + 5.0 * 1.0) / 100.0).abs() < 1e-12);
    assert!((l2.mean_useless_steps - 0.15).abs() < 1e-12);

    let f = Fitness::of(&report);
    let d = f.length_buys_accuracy.unwrap();
    let (w2, w3) = (50.0 * 50.0 / 100.0, 20.0 * 20.0 / 40.0);
    let want = (w2 * (0.9 - 0.1) + w3 * (1.0 - 0.1)) / (w2 + w3);
    assert!((d.delta - want).abs() < 1e-12, "{d:?}");
    assert!(f.fit);
    // padding: 15/15 padded vs 30/35 unpadded at level 2, 20/20 unpadded and no padded at level 3
    let p = f.padding_effect.unwrap();
    assert!((p.delta - (1.0 - 30.0 / 35.0)).abs() < 1e-12);

    // flat: the shorter shapes as accurate as the full ones: not fit
    let mut flat = Vec::new();
    for _ in 0..40 {
        flat.push(Response::new(&two, "3+4=7;7*2=4;\\boxed{4}", 14));
        flat.push(Response::new(&two, "3+4=7;7*2=5;\\boxed{5}", 14));
        flat.push(Response::new(&two, "\\boxed{4}", 4));
        flat.push(Response::new(&two, "\\boxed{5}", 4));
    }
    let f = Fitness::of(&ShapeReport::of(&flat));
    assert!(!f.fit && f.length_buys_accuracy.unwrap().delta.abs() < 1e-12);
    // level 1 alone: no level with a shorter shape to compare, not fit
    let one = TaskExample::parse("3+4").unwrap();
    let f = Fitness::of(&ShapeReport::of(&[Response::new(&one, "\\boxed{7}", 4), Response::new(&one, "3+4=7;\\boxed{7}", 10)]));
    assert!(f.length_buys_accuracy.is_none() && !f.fit);
}
