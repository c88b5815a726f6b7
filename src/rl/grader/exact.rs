//! Exact rational arithmetic for the grader: two answers that are both exact numbers are compared
//! exactly, never with the relative tolerance of the numeric check (which equates 10-digit
//! integers that differ by one, and f64 cannot even tell 21-digit ones apart).
//!
//! A value is a fraction n/d of big integers (sign-magnitude, 32-bit limbs, schoolbook products; no
//! reduction: equality is n1·d2 = n2·d1). Every integer is capped at [`MAX_BITS`]: far above what
//! f64 represents (2^1024), so any answer the numeric check could evaluate is in reach, while an
//! adversarial `9^9^9^…` stops early instead of eating memory. A value past the cap is
//! [`Rational::TooLarge`]; like an overflow to inf in the numeric check, it is never "equal".

use std::cmp::Ordering;

/// Cap on the bits of any numerator or denominator.
pub const MAX_BITS: usize = 8192;

/// A non-negative big integer, little-endian 32-bit limbs, no trailing zero limbs (zero = empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nat(Vec<u32>);

impl Nat {
    fn zero() -> Nat {
        Nat(Vec::new())
    }
    fn small(x: u32) -> Nat {
        Nat(if x == 0 { Vec::new() } else { vec![x] }).trim()
    }
    fn trim(mut self) -> Nat {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
        self
    }
    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
    fn bits(&self) -> usize {
        self.0.last().map_or(0, |&top| 32 * (self.0.len() - 1) + (32 - top.leading_zeros() as usize))
    }
    fn cmp(&self, o: &Nat) -> Ordering {
        self.0.len().cmp(&o.0.len()).then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }
    fn add(&self, o: &Nat) -> Nat {
        let (long, short) = if self.0.len() >= o.0.len() { (self, o) } else { (o, self) };
        let mut out = Vec::with_capacity(long.0.len() + 1);
        let mut carry = 0u64;
        for (i, &a) in long.0.iter().enumerate() {
            let s = a as u64 + *short.0.get(i).unwrap_or(&0) as u64 + carry;
            out.push(s as u32);
            carry = s >> 32;
        }
        out.push(carry as u32);
        Nat(out).trim()
    }
    /// self − o, for self ≥ o.
    fn sub(&self, o: &Nat) -> Nat {
        let mut out = Vec::with_capacity(self.0.len());
        let mut borrow = 0i64;
        for (i, &a) in self.0.iter().enumerate() {
            let mut d = a as i64 - *o.0.get(i).unwrap_or(&0) as i64 - borrow;
            borrow = (d < 0) as i64;
            d += borrow << 32;
            out.push(d as u32);
        }
        Nat(out).trim()
    }
    fn mul(&self, o: &Nat) -> Nat {
        if self.is_zero() || o.is_zero() {
            return Nat::zero();
        }
        let mut out = vec![0u32; self.0.len() + o.0.len()];
        for (i, &a) in self.0.iter().enumerate() {
            let mut carry = 0u64;
            for (j, &b) in o.0.iter().enumerate() {
                let t = a as u64 * b as u64 + out[i + j] as u64 + carry;
                out[i + j] = t as u32;
                carry = t >> 32;
            }
            out[i + o.0.len()] = carry as u32;
        }
        Nat(out).trim()
    }
}

/// A signed integer: sign and magnitude (zero is never negative).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Int {
    negative: bool,
    mag: Nat,
}

impl Int {
    fn from_nat(mag: Nat) -> Int {
        Int { negative: false, mag }
    }
    fn neg(mut self) -> Int {
        self.negative = !self.negative && !self.mag.is_zero();
        self
    }
    fn add(&self, o: &Int) -> Int {
        if self.negative == o.negative {
            return Int { negative: self.negative, mag: self.mag.add(&o.mag) };
        }
        match self.mag.cmp(&o.mag) {
            Ordering::Equal => Int::from_nat(Nat::zero()),
            Ordering::Greater => Int { negative: self.negative, mag: self.mag.sub(&o.mag) },
            Ordering::Less => Int { negative: o.negative, mag: o.mag.sub(&self.mag) },
        }
    }
    fn mul(&self, o: &Int) -> Int {
        let mag = self.mag.mul(&o.mag);
        Int { negative: self.negative != o.negative && !mag.is_zero(), mag }
    }
}

/// An exact value, or why there is none.
#[derive(Clone, Debug)]
pub enum Rational {
    /// num / den with den > 0; `decimal`: a decimal literal (`1.5`, `2e3`) went into it, which
    /// sympy reads as a Float
    Value { num: Int, den: Nat, decimal: bool },
    /// past [`MAX_BITS`]
    TooLarge,
    /// not a rational number of this arithmetic (symbols, π, roots, division by zero, …)
    NotExact,
}

impl Rational {
    fn checked(num: Int, den: Nat, decimal: bool) -> Rational {
        if num.mag.bits() > MAX_BITS || den.bits() > MAX_BITS {
            return Rational::TooLarge;
        }
        Rational::Value { num, den, decimal }
    }

    /// A number literal: `digits` (the mantissa's decimal digits, no point) × 10^`exp10`.
    pub fn literal(digits: &str, exp10: i64, decimal: bool) -> Rational {
        // 10^k has 3.33·k bits: refuse before building anything past the cap
        let k = exp10.unsigned_abs() as usize;
        if digits.len().saturating_add(k) > MAX_BITS * 3 / 10 {
            return Rational::TooLarge;
        }
        let mut n = Nat::zero();
        for c in digits.chars() {
            let Some(d) = c.to_digit(10) else { return Rational::NotExact };
            n = n.mul(&Nat::small(10)).add(&Nat::small(d));
        }
        let pow = (0..k).fold(Nat::small(1), |p, _| p.mul(&Nat::small(10)));
        let (num, den) = if exp10 >= 0 { (n.mul(&pow), Nat::small(1)) } else { (n, pow) };
        Rational::checked(Int::from_nat(num), den, decimal)
    }

    pub fn neg(self) -> Rational {
        match self {
            Rational::Value { num, den, decimal } => Rational::Value { num: num.neg(), den, decimal },
            other => other,
        }
    }

    /// `self op other` for op in + − * /.
    pub fn binary(self, op: char, other: Rational) -> Rational {
        let (a, ad, b, bd, decimal) = match (self, other) {
            (Rational::Value { num: a, den: ad, decimal: x }, Rational::Value { num: b, den: bd, decimal: y }) => (a, ad, b, bd, x || y),
            (Rational::NotExact, _) | (_, Rational::NotExact) => return Rational::NotExact,
            _ => return Rational::TooLarge,
        };
        let cross = |p: &Int, q: &Nat| p.mul(&Int::from_nat(q.clone()));
        match op {
            '+' => Rational::checked(cross(&a, &bd).add(&cross(&b, &ad)), ad.mul(&bd), decimal),
            '-' => Rational::checked(cross(&a, &bd).add(&cross(&b, &ad).neg()), ad.mul(&bd), decimal),
            '*' => Rational::checked(a.mul(&b), ad.mul(&bd), decimal),
            '/' if b.mag.is_zero() => Rational::NotExact,
            '/' => {
                let num = cross(&a, &bd);
                let num = if b.negative { num.neg() } else { num };
                Rational::checked(num, ad.mul(&b.mag), decimal)
            }
            _ => Rational::NotExact,
        }
    }

    /// `self ^ exponent` for an integer exponent (a literal integer fraction n/1).
    pub fn pow(self, exponent: Rational) -> Rational {
        let e = match exponent {
            Rational::Value { num, den, .. } if den == Nat::small(1) && num.mag.bits() <= 32 => {
                let m = num.mag.0.first().copied().unwrap_or(0) as usize;
                (num.negative, m)
            }
            Rational::TooLarge => return Rational::TooLarge,
            _ => return Rational::NotExact,
        };
        let Rational::Value { num, den, decimal } = self else { return self };
        if den == Nat::small(1) && num.mag.bits() <= 1 {
            // 0, 1 and −1 to any power, without the size check (0^0 = 1, as sympy and the numeric check say)
            if num.mag.is_zero() {
                return match e {
                    (true, m) if m > 0 => Rational::NotExact,
                    (_, 0) => Rational::Value { num: Int::from_nat(Nat::small(1)), den, decimal },
                    _ => Rational::Value { num, den, decimal },
                };
            }
            let negative = num.negative && e.1 % 2 == 1;
            return Rational::Value { num: Int { negative, mag: Nat::small(1) }, den, decimal };
        }
        if num.mag.bits().max(den.bits()).saturating_mul(e.1) > MAX_BITS {
            return Rational::TooLarge;
        }
        let (mut p, mut q) = (Int::from_nat(Nat::small(1)), Nat::small(1));
        for _ in 0..e.1 {
            p = p.mul(&num);
            q = q.mul(&den);
        }
        if !e.0 {
            return Rational::checked(p, q, decimal);
        }
        if p.mag.is_zero() {
            return Rational::NotExact; // 0 to a negative power
        }
        let negative = p.negative;
        let num = Int { negative, mag: q };
        Rational::checked(num, p.mag, decimal)
    }

    /// n! for a non-negative integer n.
    pub fn factorial(self) -> Rational {
        match self {
            Rational::Value { num, den, decimal } if den == Nat::small(1) && !num.negative && num.mag.bits() <= 16 => {
                let n = num.mag.0.first().copied().unwrap_or(0);
                let mut acc = Nat::small(1);
                for k in 2..=n {
                    acc = acc.mul(&Nat::small(k));
                    if acc.bits() > MAX_BITS {
                        return Rational::TooLarge;
                    }
                }
                Rational::checked(Int::from_nat(acc), Nat::small(1), decimal)
            }
            Rational::TooLarge => Rational::TooLarge,
            _ => Rational::NotExact,
        }
    }

    /// Exact equality of two values; None unless both are values.
    pub fn equals(&self, other: &Rational) -> Option<bool> {
        match (self, other) {
            (Rational::Value { num: a, den: ad, .. }, Rational::Value { num: b, den: bd, .. }) => {
                Some(a.mul(&Int::from_nat(bd.clone())) == b.mul(&Int::from_nat(ad.clone())))
            }
            _ => None,
        }
    }

    /// Whether a decimal literal went into the value.
    pub fn is_decimal(&self) -> bool {
        matches!(self, Rational::Value { decimal: true, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::Rational;

    fn int(s: &str) -> Rational {
        let (neg, digits) = s.strip_prefix('-').map_or((false, s), |d| (true, d));
        let r = Rational::literal(digits, 0, false);
        if neg {
            r.neg()
        } else {
            r
        }
    }

    #[test]
    fn big_integers_and_fractions_compare_exactly() {
        let eq = |a: Rational, b: Rational| a.equals(&b).unwrap();
        assert!(!eq(int("1234567890123"), int("1234567890124")));
        assert!(!eq(int("123456789012345678901"), int("123456789012345678902")));
        assert!(eq(int("123456789012345678901"), int("123456789012345678900").binary('+', int("1"))));
        // 1/3 + 1/6 = 1/2; 2/4 = 1/2 without any reduction
        assert!(eq(int("1").binary('/', int("3")).binary('+', int("1").binary('/', int("6"))), int("1").binary('/', int("2"))));
        assert!(eq(int("2").binary('/', int("-4")), int("-1").binary('/', int("2"))));
        // 1.5 = 15 × 10^-1 = 3/2; 2e3 = 2000
        assert!(eq(Rational::literal("15", -1, true), int("3").binary('/', int("2"))));
        assert!(eq(Rational::literal("2", 3, true), int("2000")));
        assert!(eq(int("2").pow(int("10")), int("1024")));
        assert!(eq(int("2").pow(int("-2")), int("1").binary('/', int("4"))));
        assert!(eq(int("-3").pow(int("3")), int("-27")));
        assert!(eq(int("20").factorial(), int("2432902008176640000")));
        assert!(eq(int("0").binary('-', int("0")), int("0")));
        // a product of large factors: (10^20 + 1)^2 = 10^40 + 2·10^20 + 1
        let a = int("100000000000000000001");
        assert!(eq(a.clone().binary('*', a), int("10000000000000000000200000000000000000001")));
        assert!(matches!(int("1").binary('/', int("0")), Rational::NotExact));
        assert!(matches!(int("9").pow(int("9999")), Rational::TooLarge));
        assert!(matches!(Rational::literal("1", 1_000_000, true), Rational::TooLarge));
        assert!(eq(int("-1").pow(int("99999")), int("-1")));
        assert!(eq(int("0").pow(int("0")), int("1")));
        assert!(matches!(int("0").pow(int("-1")), Rational::NotExact));
    }
}
