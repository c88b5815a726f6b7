//! Comparing numbers: relative errors used by the tests, `drpo gradcheck` and the GPU checks.

/// max |got − want| / max |want|   (the "relative" error of a whole tensor)
pub fn max_rel(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "max_rel: lengths differ");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let diff = got.iter().zip(want).fold(0.0f64, |m, (g, w)| if (g - w).is_nan() { f64::INFINITY } else { m.max((g - w).abs()) });
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// ‖got − want‖₂ / ‖want‖₂  (‖got − want‖₂ when want is zero)
pub fn rel_l2(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "rel_l2: lengths differ");
    let num: f64 = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum::<f64>().sqrt();
    let den: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    if num.is_nan() {
        f64::INFINITY
    } else if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// The worst element by |got − want| / (|want| + floor): (index, error, got, want).
pub fn worst(got: &[f64], want: &[f64], floor: f64) -> (usize, f64, f64, f64) {
    let mut best = (0, 0.0, f64::NAN, f64::NAN);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = if (g - w).is_nan() { f64::INFINITY } else { (g - w).abs() / (w.abs() + floor) };
        if e > best.1 || i == 0 {
            best = (i, e, g, w);
        }
    }
    best
}
