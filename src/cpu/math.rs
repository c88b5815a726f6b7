//! The project's own scalar transcendentals in f64: [`exp`], [`exp_m1`], [`ln`], [`ln_1p`], [`sin`],
//! [`cos`], [`sin_cos`], [`powi`] (AdamW's β^t) and [`pow_ratio`] (rope's θ^(−2i/hd)).
//!
//! **Why not libm**: glibc picks its `exp`, `log`, `pow`, `sin`, `cos` per CPU at load time (ifunc:
//! FMA and non-FMA builds of the same algorithm), so a last bit of a result could differ between two
//! x86-64 CPUs. Everything here is built from operations IEEE 754 rounds exactly (+, −, ×, ÷, sqrt,
//! fma: `mul_add` is the hardware FMA or glibc's software fma, both correctly rounded) and integer
//! arithmetic, so every machine computes the same bits. [`exp`] is the SIMD kernels' canonical exp
//! applied to one lane (the same function as the vectors', at every dispatch level).
//!
//! **Accuracy** (ulp of the exact result, the worst measured against mpmath by tests/hf/math_ulps.py;
//! tests/math.rs holds each within 1 ulp of glibc's on ~10^5 random and edge inputs per function):
//! - [`ln`], [`ln_1p`]: a double-double core (error ~2^-58 relative before the last rounding):
//!   ≤ 0.54 ulp. [`sin`], [`cos`]: an exact range reduction (Cody–Waite with π/2 in three doubles
//!   below 2^20, Payne–Hanek with 2/π to 1280 bits above, so any finite argument), a double-double
//!   reduced argument and Taylor polynomials with truncation below 2^-60: ≤ 0.72 ulp.
//! - [`exp`]: ≤ 0.83 ulp (the canonical exp: 0 below −707, +inf from 709.78). [`exp_m1`]: ≤ 0.84 ulp.
//! - [`powi`]: binary powering in double-double: correctly rounded unless the exact power lies within
//!   ~2^-100 relative of a rounding boundary, for results above ~2^-1000; nearer the subnormals, where
//!   the low half of the double-double underflows, ≤ 1.3 ulp. [`pow_ratio`]: ≤ 1.03 ulp (its
//!   exponent is never rounded).
//!
//! The polynomials are Taylor series (coefficients 1/j! or 1/(2j+1), rounded once by the compiler),
//! long enough that their truncation error is below 2^-60 relative on the reduced range.

/// ln 2 as a double-double: LN2_HI is the double nearest ln 2, LN2_LO the double nearest the rest.
const LN2_HI: f64 = std::f64::consts::LN_2;
const LN2_LO: f64 = 2.319_046_813_846_299_6e-17;
/// π/2 as a double-double, the same way, and the double nearest what is left (the three within
/// 2^-164 of π/2).
const PIO2_HI: f64 = std::f64::consts::FRAC_PI_2;
const PIO2_LO: f64 = 6.123_233_995_736_766e-17;
const PIO2_LO2: f64 = -1.497_384_904_859_169_8e-33;
/// 2^54: scales a subnormal into the normal range.
const TWO54: f64 = 18_014_398_509_481_984.0;

/// a + b = s + e exactly (Knuth's two-sum, any magnitudes).
#[inline(always)]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// a + b = s + e exactly, for |a| ≥ |b| (or a = 0).
#[inline(always)]
fn fast_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (s, b - (s - a))
}

/// a · b = p + e exactly (barring overflow and underflow).
#[inline(always)]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

/// Double-double product (a.0 + a.1)(b.0 + b.1), renormalised; relative error below 2^-102.
#[inline(always)]
fn dd_mul(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let (p, e) = two_prod(a.0, b.0);
    fast_two_sum(p, e + (a.0 * b.1 + a.1 * b.0))
}

/// Horner's scheme with FMAs: c[0] + z·(c[1] + z·(c[2] + …)).
#[inline(always)]
fn horner(z: f64, c: &[f64]) -> f64 {
    c.iter().rev().fold(0.0, |acc, &ci| acc.mul_add(z, ci))
}

/// e^x: the canonical exp of the SIMD kernels (`simd::kernels::exp`) on one lane, so a scalar and a
/// vector exp of the same x are the same number. ≤ 1 ulp; 0 for x < −707, +inf from 709.78, NaN kept.
pub fn exp(x: f64) -> f64 {
    let mut y = [0.0];
    super::simd::exp(&mut y, &[x]);
    y[0]
}

/// 1/j! for j = 2..=15: e^r − 1 − r = r²·Σ r^(j−2)/j!, truncated below 2^-60 relative for |r| ≤ 0.35.
const EXPM1_POLY: [f64; 14] = [
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40_320.0,
    1.0 / 362_880.0,
    1.0 / 3_628_800.0,
    1.0 / 39_916_800.0,
    1.0 / 479_001_600.0,
    1.0 / 6_227_020_800.0,
    1.0 / 87_178_291_200.0,
    1.0 / 1_307_674_368_000.0,
];

/// e^x − 1 without the cancellation of `exp(x) − 1` near 0. ≤ 0.84 ulp (above 40: `exp(x) − 1`).
/// x = k·ln 2 + r (|r| ≤ ln 2 / 2, r as a double-double), e^x − 1 = (2^k − 1) + 2^k·(e^r − 1), the
/// first term as a double-double and summed with the second's leading part exactly.
pub fn exp_m1(x: f64) -> f64 {
    if x.is_nan() || x == 0.0 {
        return x; // ±0 keeps its sign
    }
    if x > 40.0 {
        return exp(x) - 1.0; // e^x > 2^57: the −1 is below 1/16 ulp (inf stays inf)
    }
    if x < -37.5 {
        return -1.0; // e^x < 2^-54: −1 + e^x rounds to −1
    }
    let k = (x * std::f64::consts::LOG2_E).round();
    if k == 0.0 {
        return (x * x).mul_add(horner(x, &EXPM1_POLY), x);
    }
    // r = x − k·ln 2 as r_hi + r_lo: k·LN2_HI's product is exact in the fma, the rest is one two-sum
    let r1 = (-k).mul_add(LN2_HI, x);
    let (r_hi, r_lo) = two_sum(r1, -k * LN2_LO);
    // e^r − 1 = r_hi + (r_lo + r_hi²·P(r_hi) + r_lo·r_hi) (the last term: the first order of r_lo in r²/2)
    let q = (r_hi * r_hi).mul_add(horner(r_hi, &EXPM1_POLY), r_lo.mul_add(r_hi, r_lo));
    let scale = f64::from_bits(((1023 + k as i64) as u64) << 52); // 2^k, −54 ≤ k ≤ 58
    let (t_hi, t_lo) = two_sum(scale, -1.0);
    let (s, e) = two_sum(t_hi, scale * r_hi);
    s + (e + (t_lo + scale * q))
}

/// 1/(2j + 3) for j = 0..=9: 2·atanh(s) = 2s + 2s·z·Σ z^j/(2j + 3), z = s², truncated below 2^-60
/// relative for |s| ≤ 0.1716 (z ≤ 0.0295).
const ATANH_POLY: [f64; 10] = [1.0 / 3.0, 1.0 / 5.0, 1.0 / 7.0, 1.0 / 9.0, 1.0 / 11.0, 1.0 / 13.0, 1.0 / 15.0, 1.0 / 17.0, 1.0 / 19.0, 1.0 / 21.0];

/// ln(2^k · (1 + f)) as a double-double, for an integral k and f ∈ [√½ − 1, √2 − 1] (exact inputs):
/// ln(1 + f) = 2·atanh(s), s = f / (2 + f) computed as a double-double, plus k·ln 2 (double-double).
/// Relative error below 2^-60.
fn ln_core(k: f64, f: f64) -> (f64, f64) {
    // s = f / (2 + f): d = 2 + f exactly as d_hi + d_lo, then one correction step of the quotient
    let (d_hi, d_lo) = fast_two_sum(2.0, f);
    let s_hi = f / d_hi;
    let rem = (-s_hi).mul_add(d_hi, f) - s_hi * d_lo;
    let s_lo = rem / d_hi;
    let z = s_hi * s_hi;
    let tail = 2.0 * s_hi * z * horner(z, &ATANH_POLY);
    let (t_hi, t_lo) = (2.0 * s_hi, 2.0 * s_lo + tail);
    if k == 0.0 {
        return fast_two_sum(t_hi, t_lo);
    }
    // k·ln 2 (|k| ≤ 1075: k·LN2_HI exact as a two-product) + ln(1 + f) (|ln(1 + f)| ≤ 0.35 < ln 2)
    let (a, b) = two_prod(k, LN2_HI);
    let (s, e) = fast_two_sum(a, t_hi);
    fast_two_sum(s, e + (t_lo + k.mul_add(LN2_LO, b)))
}

/// ln x for a finite x > 0 as a double-double (subnormals included).
fn ln_dd(x: f64) -> (f64, f64) {
    let (x, k0) = if x < f64::MIN_POSITIVE { (x * TWO54, -54) } else { (x, 0) };
    let bits = x.to_bits();
    let mut k = ((bits >> 52) as i64) - 1023 + k0;
    // the mantissa m ∈ [1, 2), folded into [√½, √2) so that |ln m| ≤ ln √2
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        k += 1;
    }
    ln_core(k as f64, m - 1.0) // m − 1 is exact (Sterbenz)
}

/// Natural logarithm: −inf at ±0, NaN below 0 and for NaN, +inf at +inf. ≤ 0.54 ulp.
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x == f64::INFINITY {
        return x;
    }
    ln_dd(x).0
}

/// ln(1 + x) without the rounding of 1 + x: −inf at −1, NaN below −1 and for NaN. ≤ 0.54 ulp.
/// Where 1 + x ∈ [√½, √2] the core runs on f = x itself; elsewhere on u = 1 + x, corrected by the
/// exact rounding error c of that sum: ln(1 + x) = ln u + ln(1 + c/u) ≈ ln u + c/u.
pub fn ln_1p(x: f64) -> f64 {
    if x.is_nan() || x < -1.0 {
        return f64::NAN;
    }
    if x == -1.0 {
        return f64::NEG_INFINITY;
    }
    if x == f64::INFINITY || x == 0.0 {
        return x; // ±0 keeps its sign
    }
    if (std::f64::consts::FRAC_1_SQRT_2 - 1.0..=std::f64::consts::SQRT_2 - 1.0).contains(&x) {
        let (h, l) = ln_core(0.0, x);
        return h + l;
    }
    let (u, c) = two_sum(1.0, x);
    let (h, l) = ln_dd(u);
    h + (l + c / u)
}

/// x^n for an integer n ≥ 0 (x^0 = 1 for every x), by binary powering in double-double arithmetic.
/// Correctly rounded unless the exact power lies within ~2^-100 relative of a rounding boundary or
/// below ~2^-1000 (≤ 1.3 ulp there); ±inf when it overflows. AdamW's bias corrections 1 − β^t use it (torch: Python's `beta ** step`).
pub fn powi(x: f64, n: u64) -> f64 {
    let odd = n & 1 == 1;
    let (mut acc, mut base, mut n) = ((1.0, 0.0), (x, 0.0), n);
    while n > 0 {
        if n & 1 == 1 {
            acc = dd_mul(acc, base);
        }
        n >>= 1;
        if n > 0 {
            base = dd_mul(base, base);
        }
        if !acc.0.is_finite() || !base.0.is_finite() {
            // |base| only grows toward |x^n| here (it is squared only while bits remain), so an
            // overflow anywhere means the result overflows: its sign is x's for an odd power
            return if x.is_nan() { x } else if x.is_sign_negative() && odd { f64::NEG_INFINITY } else { f64::INFINITY };
        }
    }
    acc.0 + acc.1
}

/// x^(num/den) for x > 0 and den > 0, the exponent never rounded: e^((num · ln x) / den) with ln x,
/// the product and the quotient in double-double, and e^(h + l) = e^h + e^h·l with the canonical
/// [`exp`] (so 0 where x^(num/den) < e^-707, +inf from e^709.78). ≤ 1.03 ulp. Rope's inverse
/// frequencies θ^(−2i/hd) use it.
pub fn pow_ratio(x: f64, num: i64, den: u64) -> f64 {
    assert!(x > 0.0 && x.is_finite() && den > 0, "pow_ratio: x = {x}, den = {den}");
    let (lh, ll) = ln_dd(x);
    // (num · ln x) exactly as a double-double (|num| < 2^53), then divided by den with one correction
    let num = num as f64;
    let (p, e) = two_prod(num, lh);
    let (ph, pl) = fast_two_sum(p, num.mul_add(ll, e));
    let den = den as f64;
    let qh = ph / den;
    let ql = ((-qh).mul_add(den, ph) + pl) / den;
    let eh = exp(qh);
    eh.mul_add(ql, eh)
}

/// 1/(2j+1)! for j = 1..=9, alternating in sign: sin y = y + y·z·Σ (−1)^j z^(j−1)/(2j+1)!, z = y²,
/// truncated below 2^-60 relative for |y| ≤ π/4.
const SIN_POLY: [f64; 9] = [
    -1.0 / 6.0,
    1.0 / 120.0,
    -1.0 / 5040.0,
    1.0 / 362_880.0,
    -1.0 / 39_916_800.0,
    1.0 / 6_227_020_800.0,
    -1.0 / 1_307_674_368_000.0,
    1.0 / 355_687_428_096_000.0,
    -1.0 / 121_645_100_408_832_000.0,
];
/// 1/(2j)! for j = 2..=10, alternating in sign: cos y = 1 − z/2 + z²·Σ (−1)^j z^(j−2)/(2j)!.
const COS_POLY: [f64; 9] = [
    1.0 / 24.0,
    -1.0 / 720.0,
    1.0 / 40_320.0,
    -1.0 / 3_628_800.0,
    1.0 / 479_001_600.0,
    -1.0 / 87_178_291_200.0,
    1.0 / 20_922_789_888_000.0,
    -1.0 / 6_402_373_705_728_000.0,
    1.0 / 2_432_902_008_176_640_000.0,
];

/// sin(y_hi + y_lo) for |y_hi| ≤ π/4 (1.0001·π/4 at most), |y_lo| ≤ ulp(y_hi): the first order of y_lo.
#[inline(always)]
fn sin_kernel(y: f64, y_lo: f64) -> f64 {
    let z = y * y;
    y + (y * z).mul_add(horner(z, &SIN_POLY), y_lo * (1.0 - 0.5 * z))
}

/// cos(y_hi + y_lo), same ranges: w = 1 − y²/2 rounded, its rounding error and the low half of y²
/// carried into the last addition.
#[inline(always)]
fn cos_kernel(y: f64, y_lo: f64) -> f64 {
    let (z, z_lo) = two_prod(y, y);
    let (hz, hz_lo) = (0.5 * z, 0.5 * z_lo);
    let w = 1.0 - hz;
    let w_err = (1.0 - w) - hz; // exact: w ∈ [0.69, 1]
    let poly = (z * z).mul_add(horner(z, &COS_POLY), -(y * y_lo));
    w + ((w_err - hz_lo) + poly)
}

/// Bits of 2/π after the binary point, most significant first (2/π · 2^1280, truncated): enough for
/// the reduction of any finite double (see [`reduce_pio2`]). Computed with mpmath at 1500 bits.
const TWO_OVER_PI: [u64; 20] = [
    0xa2f9836e4e441529, 0xfc2757d1f534ddc0, 0xdb6295993c439041, 0xfe5163abdebbc561,
    0xb7246e3a424dd2e0, 0x06492eea09d1921c, 0xfe1deb1cb129a73e, 0xe88235f52ebb4484,
    0xe99c7026b45f7e41, 0x3991d639835339f4, 0x9c845f8bbdf9283b, 0x1ff897ffde05980f,
    0xef2f118b5a0a6d1f, 0x6d367ecf27cb09b7, 0x4f463f669e5fea2d, 0x7527bac7ebe5f17b,
    0x3d0739f78a5292ea, 0x6bfb5fb11f8d5d08, 0x56033046fc7b6bab, 0xf0cfbc209af4361d,
];

/// The 64 bits of 2/π at positions pos + 1 ..= pos + 64 after the binary point (0 before it).
fn two_over_pi_bits(pos: i64) -> u64 {
    let word = |i: i64| if (0..TWO_OVER_PI.len() as i64).contains(&i) { TWO_OVER_PI[i as usize] } else { 0 };
    let (q, r) = (pos.div_euclid(64), pos.rem_euclid(64) as u32);
    if r == 0 {
        word(q)
    } else {
        (word(q) << r) | (word(q + 1) >> (64 - r))
    }
}

/// Arguments below this go through [`reduce_pio2_cody_waite`], the others through [`reduce_pio2`].
const CODY_WAITE_MAX: f64 = 1_048_576.0; // 2^20

/// For π/4 < a < 2^20: like [`reduce_pio2`], by Cody–Waite with π/2 = P1 + P2 + P3 (three doubles):
/// k = round(a·2/π) < 2^20, a − k·P1 is exact in one fma (a multiple of 2^-53 below 1 in magnitude),
/// k·P2 is subtracted as an exact two-product with a two-sum, k·P3 rounded. Absolute error ~2^-139,
/// against remainders of at least ~2^-61 (the smallest of any double): within ~2^-78 relative.
fn reduce_pio2_cody_waite(a: f64) -> (u32, f64, f64) {
    let k = (a * std::f64::consts::FRAC_2_PI).round();
    let r1 = (-k).mul_add(PIO2_HI, a);
    let (p, p_lo) = two_prod(k, PIO2_LO);
    let (s, e) = two_sum(r1, -p);
    let (y_hi, y_lo) = fast_two_sum(s, (e - p_lo) - k * PIO2_LO2);
    ((k as u32) & 3, y_hi, y_lo)
}

/// For a finite a ≥ π/4: (j, y_hi, y_lo) with a = j·π/2 + y_hi + y_lo (mod 2π), j ∈ 0..4,
/// |y_hi + y_lo| ≤ π/4, the double-double within ~2^-138 absolute (~2^-77 relative) of the exact
/// remainder.
///
/// Payne–Hanek, in integers: a = M·2^E (M < 2^53), so a·(2/π)/4 mod 1 = M·frac(2/π · 2^(E−2)) mod 1
/// (the bits of 2/π before position E − 2 make multiples of 4 quadrants). 192 bits of that fraction
/// times M, mod 1: its top 2 bits are the quadrant, the other 190 the position inside it (absolute
/// error < M·2^-192 ≤ 2^-139 of a quadrant, against a smallest remainder of ~2^-61 for any double).
fn reduce_pio2(a: f64) -> (u32, f64, f64) {
    let bits = a.to_bits();
    let m = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let e = ((bits >> 52) as i64) - 1075; // a = m · 2^e
    let s = e - 2;
    let (w0, w1, w2) = (two_over_pi_bits(s), two_over_pi_bits(s + 64), two_over_pi_bits(s + 128));
    let p2 = m as u128 * w2 as u128;
    let p1 = m as u128 * w1 as u128 + (p2 >> 64);
    let p0 = m.wrapping_mul(w0).wrapping_add((p1 >> 64) as u64); // mod 2^64: the integer part drops
    let (f1, f2) = (p1 as u64, p2 as u64);
    let mut j = (p0 >> 62) as u32;
    // the 128 bits after the quadrant: a fraction u·2^-128 of a quadrant; past one half, the next
    // quadrant with a negative remainder (u as i128 is u − 2^128 there)
    let u = ((((p0 << 2) | (f1 >> 62)) as u128) << 64) | (((f1 << 2) | (f2 >> 62)) as u128);
    let v = u as i128;
    if v < 0 {
        j += 1;
    }
    let hi = v as f64;
    // the rest of the 128 bits (hi as i128 saturates only at 2^127: an error of 2^-128), then the
    // fraction's last 62 bits, so a small remainder keeps its precision
    let lo = (v - hi as i128) as f64 + (f2 << 2) as f64 * 2f64.powi(-64);
    let scale = f64::from_bits((1023 - 128) << 52); // 2^-128
    let (h, l) = (hi * scale, lo * scale);
    // (h + l) quadrants · π/2
    let (p, pe) = two_prod(h, PIO2_HI);
    let (y_hi, y_lo) = fast_two_sum(p, pe + (h.mul_add(PIO2_LO, l * PIO2_HI)));
    (j & 3, y_hi, y_lo)
}

/// (sin x, cos x), both ≤ 0.72 ulp, for every finite x (NaN for ±inf and NaN).
pub fn sin_cos(x: f64) -> (f64, f64) {
    if !x.is_finite() {
        return (f64::NAN, f64::NAN);
    }
    let a = x.abs();
    let (j, y, y_lo) = if a <= std::f64::consts::FRAC_PI_4 {
        (0, a, 0.0)
    } else if a < CODY_WAITE_MAX {
        reduce_pio2_cody_waite(a)
    } else {
        reduce_pio2(a)
    };
    let (s, c) = (sin_kernel(y, y_lo), cos_kernel(y, y_lo));
    let (sin_a, cos_a) = match j {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    };
    (if x.is_sign_negative() { -sin_a } else { sin_a }, cos_a)
}

/// sin x, see [`sin_cos`].
pub fn sin(x: f64) -> f64 {
    sin_cos(x).0
}

/// cos x, see [`sin_cos`].
pub fn cos(x: f64) -> f64 {
    sin_cos(x).1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's first word is 2/π's mantissa: rounded to a double it is the standard constant.
    #[test]
    fn two_over_pi_starts_right() {
        assert_eq!(TWO_OVER_PI[0] as f64 * 2f64.powi(-64), std::f64::consts::FRAC_2_PI);
        assert_eq!(two_over_pi_bits(0), TWO_OVER_PI[0]);
        assert_eq!(two_over_pi_bits(-4), TWO_OVER_PI[0] >> 4);
        assert_eq!(two_over_pi_bits(4), (TWO_OVER_PI[0] << 4) | (TWO_OVER_PI[1] >> 60));
    }

    /// The two reductions agree (quadrant, and the remainder to 2^-75 relative) where both apply,
    /// including arguments next to multiples of π/2 (small remainders).
    #[test]
    fn reductions_agree() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..200_000 {
            let a = if i % 2 == 0 {
                std::f64::consts::FRAC_PI_4 + (next() >> 11) as f64 * 2f64.powi(-53) * (CODY_WAITE_MAX - 1.0)
            } else {
                let x = (next() % 600_000 + 1) as f64 * std::f64::consts::FRAC_PI_2;
                f64::from_bits(x.to_bits() + next() % 5 - 2)
            };
            let (j1, h1, l1) = reduce_pio2_cody_waite(a);
            let (j2, h2, l2) = reduce_pio2(a);
            let diff = (h1 - h2) + (l1 - l2);
            assert!(j1 == j2 && diff.abs() <= h2.abs() * 2f64.powi(-75), "a = {a:e}: ({j1}, {h1:e}, {l1:e}) vs ({j2}, {h2:e}, {l2:e})");
        }
    }
}
