//! The project's own transcendentals (`drpo::cpu::math`) against glibc's on random and edge inputs:
//! each within its stated error of glibc's (which is itself within ~0.5 ulp of the exact value), the
//! special values (0, subnormals, ±inf, NaN, the domain edges) as documented, the range reduction of
//! sin/cos right for every rope angle and for huge arguments, and every dispatch level the same bits.
//! (The errors against the exact values, measured once with mpmath, are in NOTES.md's numerics log:
//! `cargo test --release --test math -- --ignored dump` then `python3 tests/hf/math_ulps.py`.)

mod common;
use common::rng;
use drpo::cpu::math;
use drpo::cpu::simd::{self, Level};
use rand::{rngs::StdRng, Rng};

/// Distance in ulps between two doubles of the same sign (both finite): the count of doubles between.
fn ulps(a: f64, b: f64) -> u64 {
    if a == b {
        return 0;
    }
    assert!(a.is_finite() && b.is_finite() && (a.is_sign_negative() == b.is_sign_negative() || a == 0.0 || b == 0.0), "{a:e} vs {b:e}");
    let key = |x: f64| if x.is_sign_negative() { -(x.abs().to_bits() as i128) } else { x.to_bits() as i128 };
    (key(a) - key(b)).unsigned_abs() as u64
}

/// A double with a uniformly random exponent in [lo, hi] and a random mantissa (sign +).
fn log_uniform(rng: &mut StdRng, lo: i32, hi: i32) -> f64 {
    rng.random_range(1.0..2.0) * 2f64.powi(rng.random_range(lo..=hi))
}

/// Compares `ours` with `libm` on `xs`: asserts ≤ `bound` ulps and returns (worst, count differing).
fn against(name: &str, xs: &[f64], ours: impl Fn(f64) -> f64, libm: impl Fn(f64) -> f64, bound: u64) -> (u64, usize) {
    let (mut worst, mut worst_x, mut differ) = (0, 0.0, 0);
    for &x in xs {
        let (a, b) = (ours(x), libm(x));
        let d = ulps(a, b);
        if d > 0 {
            differ += 1;
        }
        if d > worst {
            (worst, worst_x) = (d, x);
        }
    }
    println!("{name}: {} inputs, {differ} differ from glibc, worst {worst} ulp (x = {worst_x:e})", xs.len());
    assert!(worst <= bound, "{name}: {worst} ulps from glibc at x = {worst_x:e} ({:e} vs {:e})", ours(worst_x), libm(worst_x));
    (worst, differ)
}

#[test]
fn ln_matches_glibc() {
    let mut rng = rng("ln_matches_glibc");
    let mut xs: Vec<f64> = (0..100_000).map(|_| log_uniform(&mut rng, -1074, 1023)).collect();
    xs.extend((0..100_000).map(|_| rng.random_range(0.5..2.0))); // around 1, where ln is small
    xs.extend((0..20_000).map(|_| 1.0 + rng.random_range(-1e-6..1e-6)));
    xs.extend((0..20_000).map(|_| f64::from_bits(rng.random_range(1..1u64 << 52)))); // subnormals
    xs.extend([1.0, 2.0, 0.5, f64::MIN_POSITIVE, f64::MAX, 5e-324, 1.0 + f64::EPSILON, 1.0 - f64::EPSILON / 2.0, std::f64::consts::SQRT_2]);
    // ≤ 0.51 ulp here, ≤ ~0.5 ulp for glibc: differences are single ulps at near-halfway cases
    against("ln", &xs, math::ln, f64::ln, 1);
    assert_eq!(math::ln(1.0).to_bits(), 0f64.to_bits());
    assert_eq!(math::ln(0.0), f64::NEG_INFINITY);
    assert_eq!(math::ln(-0.0), f64::NEG_INFINITY);
    assert_eq!(math::ln(f64::INFINITY), f64::INFINITY);
    assert!(math::ln(-1.0).is_nan() && math::ln(f64::NAN).is_nan() && math::ln(f64::NEG_INFINITY).is_nan());
    // the f32 logarithm (log-softmax's, through Float::ln) is the f64 one rounded once
    use drpo::cpu::Float;
    for &x in xs.iter().filter(|x| **x < 3e38) {
        let x = x.max(1e-45) as f32;
        assert_eq!(Float::ln(x).to_bits(), (math::ln(x as f64) as f32).to_bits());
        assert!(ulps(Float::ln(x) as f64, (x as f64).ln() as f32 as f64) <= 1, "f32 ln({x:e})");
    }
}

#[test]
fn ln_1p_matches_glibc() {
    let mut rng = rng("ln_1p_matches_glibc");
    let mut xs: Vec<f64> = (0..100_000).map(|_| rng.random_range(-1.0..1.0)).collect();
    xs.extend((0..50_000).map(|_| log_uniform(&mut rng, -1074, 1023)));
    xs.extend((0..50_000).map(|_| -log_uniform(&mut rng, -1074, -1)));
    xs.extend((0..20_000).map(|_| -1.0 + log_uniform(&mut rng, -53, -2))); // near −1
    xs.extend([0.0, -0.0, 1e-300, -1e-300, 5e-324, -0.29289321881345254, 0.41421356237309515, 1.0, -0.5, f64::MAX]);
    against("ln_1p", &xs, math::ln_1p, f64::ln_1p, 1);
    assert_eq!(math::ln_1p(-0.0).to_bits(), (-0.0f64).to_bits());
    assert_eq!(math::ln_1p(-1.0), f64::NEG_INFINITY);
    assert_eq!(math::ln_1p(f64::INFINITY), f64::INFINITY);
    assert!(math::ln_1p(-1.5).is_nan() && math::ln_1p(f64::NAN).is_nan());
}

#[test]
fn exp_m1_matches_glibc() {
    let mut rng = rng("exp_m1_matches_glibc");
    let mut xs: Vec<f64> = (0..100_000).map(|_| rng.random_range(-40.0..40.0)).collect();
    xs.extend((0..100_000).map(|_| rng.random_range(-1.5..1.5)));
    xs.extend((0..50_000).map(|_| log_uniform(&mut rng, -1074, -1) * if rng.random() { 1.0 } else { -1.0 }));
    xs.extend((0..20_000).map(|_| rng.random_range(-700.0..700.0)));
    xs.extend([0.0, -0.0, 5e-324, -37.5, -37.4, 36.0, 36.1, 0.3465, -0.3466, 709.7, -745.0]);
    against("exp_m1", &xs, math::exp_m1, f64::exp_m1, 1);
    assert_eq!(math::exp_m1(-0.0).to_bits(), (-0.0f64).to_bits());
    assert_eq!(math::exp_m1(f64::INFINITY), f64::INFINITY);
    assert_eq!(math::exp_m1(f64::NEG_INFINITY), -1.0);
    assert_eq!(math::exp_m1(710.0), f64::INFINITY);
    assert!(math::exp_m1(f64::NAN).is_nan());
}

/// The scalar exp is the canonical (vector) exp: ≤ 1 ulp of glibc's over its range, the same bits as
/// a vector of the same inputs, 0 below −707 and +inf from 709.78 as documented.
#[test]
fn exp_is_the_canonical_exp() {
    let mut rng = rng("exp_is_the_canonical_exp");
    let xs: Vec<f64> = (0..100_000).map(|i| if i % 2 == 0 { rng.random_range(-707.0..709.7) } else { rng.random_range(-1.0..1.0) }).collect();
    against("exp", &xs, math::exp, f64::exp, 1);
    let mut v = xs.clone();
    simd::exp_in_place(&mut v);
    assert!(xs.iter().zip(&v).all(|(&x, &e)| math::exp(x).to_bits() == e.to_bits()));
    assert_eq!(math::exp(0.0), 1.0);
    assert_eq!((math::exp(-708.0), math::exp(f64::NEG_INFINITY)), (0.0, 0.0));
    assert_eq!((math::exp(709.79), math::exp(f64::INFINITY)), (f64::INFINITY, f64::INFINITY));
    assert!(math::exp(f64::NAN).is_nan());
}

fn sin_cos_inputs(rng: &mut StdRng) -> Vec<f64> {
    let mut xs: Vec<f64> = (0..100_000).map(|_| rng.random_range(-10.0..10.0)).collect();
    xs.extend((0..50_000).map(|_| rng.random_range(-1e6..1e6)));
    xs.extend((0..50_000).map(|_| log_uniform(rng, -1074, 1023) * if rng.random() { 1.0 } else { -1.0 })); // huge ones: Payne–Hanek
    xs.extend((0..20_000).map(|_| log_uniform(rng, 20, 31)));
    xs.extend((0..20_000).map(|_| 1_048_576.0 + rng.random_range(-10.0..10.0))); // the switch of reductions
    // near multiples of π/2, where the remainder is small and cancellation the worst
    xs.extend((0..20_000).map(|_| {
        let k = rng.random_range(1..1_000_000) as f64;
        let x = k * std::f64::consts::FRAC_PI_2;
        f64::from_bits((x.to_bits() as i64 + rng.random_range(-3..=3)) as u64)
    }));
    // rope: position × θ^(−2i/hd) for Qwen2.5's θ = 1e6, hd = 128, positions up to 131,072
    xs.extend((0..50_000).map(|_| rng.random_range(0..131_072) as f64 * math::pow_ratio(1e6, -2 * rng.random_range(0..64i64), 128)));
    xs.extend([0.0, -0.0, 5e-324, -5e-324, 1e-300, std::f64::consts::FRAC_PI_4, -std::f64::consts::FRAC_PI_4, 0.785398163397449, std::f64::consts::PI, f64::MAX, -f64::MAX]);
    xs
}

#[test]
fn sin_cos_match_glibc() {
    let mut rng = rng("sin_cos_match_glibc");
    let xs = sin_cos_inputs(&mut rng);
    against("sin", &xs, math::sin, f64::sin, 1);
    against("cos", &xs, math::cos, f64::cos, 1);
    assert!(xs.iter().all(|&x| math::sin_cos(x) == (math::sin(x), math::cos(x))));
    // the hardest double for the reduction (x mod π/2 ≈ 2^-61, from the literature), where glibc's
    // cos is 8 ulp off: cos x = −4.6871659242546276111e-19 (mpmath, 2000 bits), rounded; sin x = 1
    let hard = 6381956970095103.0 * 2f64.powi(797);
    assert_eq!(math::cos(hard), -4.687165924254628e-19);
    assert_eq!(math::sin(hard).abs(), 1.0);
    assert_eq!(math::sin(-0.0).to_bits(), (-0.0f64).to_bits());
    assert_eq!((math::sin(0.0), math::cos(0.0), math::cos(-0.0)), (0.0, 1.0, 1.0));
    assert_eq!(math::sin(5e-324), 5e-324);
    for x in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
        assert!(math::sin(x).is_nan() && math::cos(x).is_nan());
    }
    // the cosine schedule's end points: exactly 1 and −1 (up to cos π's own rounding)
    assert_eq!(math::cos(0.0), 1.0);
    assert_eq!(math::cos(std::f64::consts::PI), -1.0);
}

#[test]
fn powi_matches_glibc_pow() {
    let mut rng = rng("powi_matches_glibc_pow");
    // AdamW's bias corrections: β^t for the usual betas and every step to 10^5
    let mut differ = 0;
    for beta in [0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999, 0.3] {
        let ts: Vec<f64> = (1..=100_000).map(|t| t as f64).collect();
        differ += against(&format!("powi({beta}, t)"), &ts, |t| math::powi(beta, t as u64), |t| beta.powf(t), 1).1;
    }
    println!("powi: {differ} of 800,000 AdamW bias corrections differ from glibc's pow");
    let mut worst = 0;
    for _ in 0..100_000 {
        let (x, n) = (rng.random_range(0.0..2.0), rng.random_range(0..2000u64));
        let (a, b) = (math::powi(x, n), x.powf(n as f64));
        if a.is_finite() && b.is_finite() && b != 0.0 && b.is_normal() {
            worst = worst.max(ulps(a, b));
        }
    }
    println!("powi, random x in (0, 2), n < 2000: worst {worst} ulp from glibc");
    assert!(worst <= 1);
    assert_eq!((math::powi(f64::NAN, 0), math::powi(0.0, 0), math::powi(0.0, 3), math::powi(-2.0, 3)), (1.0, 1.0, 0.0, -8.0));
    assert_eq!((math::powi(10.0, 400), math::powi(-10.0, 401), math::powi(-10.0, 400)), (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY));
    assert_eq!(math::powi(0.5, 1074), 5e-324);
    assert_eq!(math::powi(0.5, 1075), 0.0);
    assert!(math::powi(f64::NAN, 2).is_nan());
}

/// θ^(−2i/hd) against glibc's pow where the exponent −2i/hd is exact in binary (hd a power of 2):
/// both then compute the same real number.
#[test]
fn pow_ratio_matches_glibc_pow() {
    let mut rng = rng("pow_ratio_matches_glibc_pow");
    let mut worst = 0;
    for theta in [1e4, 1e6, 5e5, 1e7, 2.5e5, 10.0, 1.5] {
        for hd in [16u64, 64, 128, 256] {
            for i in 0..hd as i64 / 2 {
                worst = worst.max(ulps(math::pow_ratio(theta, -2 * i, hd), theta.powf(-2.0 * i as f64 / hd as f64)));
            }
        }
    }
    for _ in 0..100_000 {
        let (x, num, den): (f64, i64, u64) = (rng.random_range(1e-3..1e7), rng.random_range(-4096..4096i64), 1u64 << rng.random_range(0..12));
        let want = x.powf(num as f64 / den as f64);
        if (1e-300..1e300).contains(&want) {
            worst = worst.max(ulps(math::pow_ratio(x, num, den), want));
        }
    }
    println!("pow_ratio: worst {worst} ulp from glibc's pow");
    assert!(worst <= 2, "pow_ratio: {worst} ulp");
    assert_eq!(math::pow_ratio(1e6, 0, 128), 1.0);
}

/// The rope tables use one table per distinct position: the same numbers as computing every row.
#[test]
fn rope_tables_per_row_and_per_position_agree() {
    use drpo::cpu::rope::rope_tables;
    let dense: Vec<usize> = (0..70).chain(0..70).chain(5..40).collect(); // the range path
    let sparse = vec![3, 100_000, 7, 131_071]; // the per-row path
    for positions in [dense, sparse] {
        let (cos, sin) = rope_tables::<f64>(&positions, 64, 1e6);
        for (r, &p) in positions.iter().enumerate() {
            for i in 0..32 {
                let (s, c) = math::sin_cos(p as f64 * math::pow_ratio(1e6, -2 * i as i64, 64));
                assert_eq!((cos[r * 32 + i].to_bits(), sin[r * 32 + i].to_bits()), (c.to_bits(), s.to_bits()), "row {r} position {p} i {i}");
            }
        }
    }
    assert_eq!(rope_tables::<f32>(&[1, 2], 0, 1e4), (vec![], vec![]));
}

/// Every function gives the same bits at every SIMD level (only `exp` and what calls it dispatch).
#[test]
fn same_bits_at_every_level() {
    let mut rng = rng("math_same_bits_at_every_level");
    let xs: Vec<f64> = (0..20_000).map(|_| rng.random_range(-50.0..50.0)).collect();
    let all = |x: f64| {
        let (s, c) = math::sin_cos(x);
        [math::exp(x), math::exp_m1(x), math::ln(x.abs()), math::ln_1p(x.abs()), s, c, math::pow_ratio(x.abs() + 1.0, 7, 3), math::powi(x, 9)].map(f64::to_bits)
    };
    let want: Vec<_> = xs.iter().map(|&x| all(x)).collect();
    for level in Level::ALL.into_iter().filter(|l| l.supported()) {
        simd::force_level(level).unwrap();
        let got: Vec<_> = xs.iter().map(|&x| all(x)).collect();
        assert!(got == want, "level {} differs", level.name());
    }
    simd::force_level(simd::detect()).unwrap();
}

/// Writes inputs and our outputs (hex bits) to target/math_samples.txt for tests/hf/math_ulps.py,
/// which measures each function's error against mpmath. Run by hand (`-- --ignored dump`);
/// `DRPO_MATH_SAMPLES` rounds of 17 samples (default 20,000).
#[test]
#[ignore]
fn dump() {
    use std::fmt::Write;
    let mut rng = rng("dump");
    let mut out = String::new();
    let mut put = |name: &str, x: f64, y: f64| writeln!(out, "{name} {:016x} {:016x}", x.to_bits(), y.to_bits()).unwrap();
    let rounds: usize = std::env::var("DRPO_MATH_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    for _ in 0..rounds {
        let x = log_uniform(&mut rng, -1074, 1023);
        put("ln", x, math::ln(x));
        let u = rng.random_range(0.3..3.0);
        put("ln", u, math::ln(u));
        let t = rng.random_range(-1.0..2.0);
        put("ln_1p", t, math::ln_1p(t));
        let t = log_uniform(&mut rng, -60, 60);
        put("ln_1p", t, math::ln_1p(t));
        let e = rng.random_range(-40.0..40.0);
        put("exp_m1", e, math::exp_m1(e));
        let e = rng.random_range(-1.0..1.0);
        put("exp_m1", e, math::exp_m1(e));
        let e = rng.random_range(-707.0..709.7);
        put("exp", e, math::exp(e));
        let s = rng.random_range(-10.0..10.0);
        put("sin", s, math::sin(s));
        put("cos", s, math::cos(s));
        let s = rng.random_range(0..131_072) as f64 * math::pow_ratio(1e6, -2 * rng.random_range(0..64i64), 128);
        put("sin", s, math::sin(s));
        put("cos", s, math::cos(s));
        let s = log_uniform(&mut rng, 20, 1023);
        put("sin", s, math::sin(s));
        put("cos", s, math::cos(s));
        let i = rng.random_range(0..64i64);
        put(&format!("pow_ratio:{}:128", -2 * i), 1e6, math::pow_ratio(1e6, -2 * i, 128));
        let (i, den) = (rng.random_range(0..8i64), rng.random_range(3..200u64));
        put(&format!("pow_ratio:{}:{den}", -2 * i), 1e4, math::pow_ratio(1e4, -2 * i, den));
        // AdamW's β^t (results above 1e-300), then powers near the subnormals
        let n = rng.random_range(1..600_000u64);
        put(&format!("powi:{n}"), 0.999, math::powi(0.999, n));
        let n = rng.random_range(1..6000u64);
        put(&format!("powi:{n}"), 0.9, math::powi(0.9, n));
        let n = rng.random_range(700_000..745_000u64);
        put(&format!("powi_tiny:{n}"), 0.999, math::powi(0.999, n));
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/math_samples.txt");
    std::fs::write(&path, out).unwrap();
    println!("wrote {}", path.display());
}
