//! The stand-in for `sympy.simplify(parse_expr(a) - parse_expr(b)) == 0`: a small parser for the
//! text the sympy normalization leaves (Python syntax after `^` → `**`, with sympy's implicit
//! multiplication and symbol splitting), evaluated in complex f64 at fixed-seed random points.
//!
//! Grammar (Python precedence; juxtaposition is multiplication, as sympy's
//! `implicit_multiplication_application` inserts `*` between adjacent operands):
//! ```text
//! sum     = term (('+' | '-') term)*
//! term    = factor (('*' | '/' | '//') factor | power)*        (a bare `power` is implicit `*`)
//! factor  = ('+' | '-') factor | power
//! power   = postfix ['**' factor]                             (right-associative, -2**2 = -4)
//! postfix = primary '!'*
//! primary = number | name | name '(' sum (',' sum)* ')' | '(' sum ')' | 'sqrt' '[' sum ']' '(' sum ')'
//! ```
//! Names: `pi` is π; `sqrt`, `ln`/`log` (natural), `exp`, `re`, `im` are functions; a name with `_`
//! or a Greek letter's name is one symbol; any other name splits into one-letter symbols and digit
//! runs (`xy2` = x·y·2), as sympy's `split_symbols` does. `e` and `i` are plain symbols there too.
//! `oo`, `zoo`, `nan` are not finite and never compare equal. More than 1000 tokens: not equal. Anything else (tuples, lists,
//! relations, unknown characters) is a parse failure, which counts as "not equal" like sympy's
//! exceptions do.
//!
//! Symbols are complex, like sympy's default symbols: each takes values z = a + bi with a, b drawn
//! uniformly from [-2, 2] (|z| ≥ 0.25). Two sides A, B are equal when at every point both are finite
//! and |A − B| ≤ 1e-9 · max(|A|, |B|).

use super::exact::Rational;
use std::collections::BTreeMap;

const TOL: f64 = 1e-9;
const POINTS: usize = 6;
const SEED: u64 = 0x5eed_d4b0_0c0f_fee5;
const MAX_TOKENS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq)]
struct C {
    re: f64,
    im: f64,
}

impl C {
    const fn real(re: f64) -> C {
        C { re, im: 0.0 }
    }
    fn add(self, o: C) -> C {
        C { re: self.re + o.re, im: self.im + o.im }
    }
    fn sub(self, o: C) -> C {
        C { re: self.re - o.re, im: self.im - o.im }
    }
    fn mul(self, o: C) -> C {
        C { re: self.re * o.re - self.im * o.im, im: self.re * o.im + self.im * o.re }
    }
    fn div(self, o: C) -> C {
        let d = o.re * o.re + o.im * o.im;
        if d == 0.0 {
            return C { re: f64::NAN, im: f64::NAN };
        }
        C { re: (self.re * o.re + self.im * o.im) / d, im: (self.im * o.re - self.re * o.im) / d }
    }
    fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
    fn is_finite(self) -> bool {
        self.re.is_finite() && self.im.is_finite()
    }
    fn ln(self) -> C {
        C { re: self.abs().ln(), im: self.im.atan2(self.re) }
    }
    fn exp(self) -> C {
        let m = self.re.exp();
        C { re: m * self.im.cos(), im: m * self.im.sin() }
    }
    /// Principal square root.
    fn sqrt(self) -> C {
        if self.im == 0.0 && self.re >= 0.0 {
            return C::real(self.re.sqrt());
        }
        let r = self.abs();
        let re = ((r + self.re) / 2.0).sqrt();
        let im = ((r - self.re) / 2.0).sqrt().copysign(if self.im == 0.0 { 1.0 } else { self.im });
        C { re, im }
    }
    /// Principal power; integer exponents by repeated squaring so that `(x+1)^2` stays exact-ish.
    fn pow(self, e: C) -> C {
        if e.im == 0.0 && e.re.fract() == 0.0 && e.re.abs() <= 4096.0 {
            let mut n = e.re.abs() as u32;
            let mut base = self;
            let mut acc = C::real(1.0);
            while n > 0 {
                if n & 1 == 1 {
                    acc = acc.mul(base);
                }
                base = base.mul(base);
                n >>= 1;
            }
            return if e.re < 0.0 { C::real(1.0).div(acc) } else { acc };
        }
        if self.re == 0.0 && self.im == 0.0 {
            return if e.re > 0.0 { C::real(0.0) } else { C { re: f64::NAN, im: f64::NAN } };
        }
        e.mul(self.ln()).exp()
    }
    /// The n-th root a reader means by `\sqrt[n]{x}`: the real root of a negative real for odd n,
    /// the principal root otherwise.
    fn root(self, n: C) -> C {
        let odd = n.im == 0.0 && n.re.fract() == 0.0 && n.re.rem_euclid(2.0) == 1.0;
        if odd && self.im == 0.0 && self.re < 0.0 {
            return C::real(-(-self.re).powf(1.0 / n.re));
        }
        self.pow(C::real(1.0).div(n))
    }
}

/// A number literal: its f64 value and its exact decimal form `digits` × 10^`exp10`.
#[derive(Clone, Debug, PartialEq)]
struct Literal {
    value: f64,
    digits: String,
    exp10: i64,
    /// written with a point or an exponent (`1.5`, `2e3`): a Float to sympy
    decimal: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(Literal),
    Name(String),
    Op(&'static str),
}

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    // end of the whitespace run after the last line break looked at: a run of n line breaks is
    // searched once, not n times (that was O(n²))
    let mut ws_end = 0;
    while i < c.len() {
        let ch = c[i];
        if matches!(ch, ' ' | '\t' | '\x0c') {
            i += 1;
        } else if ch == '\n' || ch == '\r' {
            // Python joins lines inside the `(…)-(…)` parentheses, but sympy's implicit multiplication
            // breaks on a line break between two operands (`70\npi` fails, `9.6\n` is fine)
            let ends_operand = matches!(out.last(), Some(Tok::Num(_) | Tok::Name(_) | Tok::Op(")" | "]" | "!")));
            if ends_operand {
                if ws_end <= i {
                    ws_end = c[i + 1..].iter().position(|c| !c.is_whitespace()).map_or(c.len(), |k| i + 1 + k);
                }
                let next = c.get(ws_end);
                if next.is_some_and(|&d| d.is_alphanumeric() || d == '_' || d == '.' || d == '(') {
                    return None;
                }
            }
            i += 1;
        } else if ch.is_ascii_digit() || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let (lit, len) = number(&c[i..])?;
            out.push(Tok::Num(lit));
            i += len;
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Name(c[start..i].iter().collect()));
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let op = match two.as_str() {
                "**" => Some("**"),
                "//" => Some("//"),
                _ => None,
            };
            if let Some(op) = op {
                out.push(Tok::Op(op));
                i += 2;
                continue;
            }
            let op = match ch {
                '+' => "+",
                '-' => "-",
                '*' => "*",
                '/' => "/",
                '(' => "(",
                ')' => ")",
                '[' => "[",
                ']' => "]",
                ',' => ",",
                '!' => "!",
                _ => return None,
            };
            out.push(Tok::Op(op));
            i += 1;
        }
    }
    Some(out)
}

/// A Python number literal at the start of `c`: the literal and its length in chars.
fn number(c: &[char]) -> Option<(Literal, usize)> {
    let mut i = 0;
    let mut text = String::new();
    let digits = |i: &mut usize, text: &mut String| {
        while *i < c.len()
            && (c[*i].is_ascii_digit() || (c[*i] == '_' && c.get(*i + 1).is_some_and(|d| d.is_ascii_digit())))
        {
            if c[*i] != '_' {
                text.push(c[*i]);
            }
            *i += 1;
        }
    };
    digits(&mut i, &mut text);
    let int_digits = text.len();
    if i < c.len() && c[i] == '.' {
        text.push('.');
        i += 1;
        digits(&mut i, &mut text);
    }
    let mantissa_end = text.len();
    if i < c.len() && (c[i] == 'e' || c[i] == 'E') {
        let mut k = i + 1;
        if k < c.len() && (c[k] == '+' || c[k] == '-') {
            k += 1;
        }
        if k < c.len() && c[k].is_ascii_digit() {
            text.push('e');
            text.extend(&c[i + 1..k]);
            i = k;
            digits(&mut i, &mut text);
        }
    }
    // Python's tokenizer reads `0032` as the integer `00` followed by `32`
    if !text.contains(['.', 'e']) && text.len() > 1 && text.starts_with('0') {
        let zeros = c.iter().take_while(|&&d| d == '0' || d == '_').count();
        return Some((Literal { value: 0.0, digits: "0".into(), exp10: 0, decimal: false }, zeros));
    }
    let mantissa = text[..mantissa_end].to_string();
    let fraction_digits = mantissa.len().saturating_sub(int_digits + 1);
    // an exponent too long for i64 saturates: the exact side then reports the value as too large
    let exponent: i64 = text[mantissa_end..].strip_prefix('e').map_or(0, |e| e.parse().unwrap_or(if e.starts_with('-') { i64::MIN / 2 } else { i64::MAX / 2 }));
    let exp10 = exponent.saturating_sub(fraction_digits as i64);
    let decimal = text.contains(['.', 'e']);
    if text.starts_with('.') {
        text.insert(0, '0');
    }
    let value = text.parse::<f64>().ok()?;
    Some((Literal { value, digits: mantissa.replace('.', ""), exp10, decimal }, i))
}

#[derive(Debug)]
enum Node {
    Num(Literal),
    Sym(String),
    Pi,
    NotFinite,
    Neg(Box<Node>),
    Bin(char, Box<Node>, Box<Node>),
    Call(&'static str, Vec<Node>),
    Fact(Box<Node>),
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
}

const GREEK: [&str; 24] = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu", "xi",
    "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega",
];

impl Parser {
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.i), Some(Tok::Op(o)) if *o == op)
    }
    fn eat(&mut self, op: &str) -> bool {
        let hit = self.peek_op(op);
        if hit {
            self.i += 1;
        }
        hit
    }
    fn starts_operand(&self) -> bool {
        match self.toks.get(self.i) {
            Some(Tok::Num(_) | Tok::Name(_)) => true,
            Some(Tok::Op(o)) => *o == "(",
            None => false,
        }
    }

    fn sum(&mut self, depth: usize) -> Option<Node> {
        if depth > 200 {
            return None;
        }
        let mut left = self.term(depth)?;
        loop {
            if self.eat("+") {
                left = Node::Bin('+', Box::new(left), Box::new(self.term(depth)?));
            } else if self.eat("-") {
                left = Node::Bin('-', Box::new(left), Box::new(self.term(depth)?));
            } else {
                return Some(left);
            }
        }
    }

    fn term(&mut self, depth: usize) -> Option<Node> {
        let mut left = self.factor(depth)?;
        loop {
            if self.eat("*") {
                left = Node::Bin('*', Box::new(left), Box::new(self.factor(depth)?));
            } else if self.eat("/") {
                left = Node::Bin('/', Box::new(left), Box::new(self.factor(depth)?));
            } else if self.eat("//") {
                left = Node::Bin('f', Box::new(left), Box::new(self.factor(depth)?));
            } else if self.starts_operand() {
                left = Node::Bin('*', Box::new(left), Box::new(self.power(depth)?));
            } else {
                return Some(left);
            }
        }
    }

    fn factor(&mut self, depth: usize) -> Option<Node> {
        if depth > 200 {
            return None;
        }
        if self.eat("+") {
            return self.factor(depth + 1);
        }
        if self.eat("-") {
            return Some(Node::Neg(Box::new(self.factor(depth + 1)?)));
        }
        self.power(depth)
    }

    fn power(&mut self, depth: usize) -> Option<Node> {
        let base = self.postfix(depth)?;
        if self.eat("**") {
            let exp = self.factor(depth + 1)?;
            return Some(Node::Bin('^', Box::new(base), Box::new(exp)));
        }
        Some(base)
    }

    fn postfix(&mut self, depth: usize) -> Option<Node> {
        let mut node = self.primary(depth)?;
        while self.eat("!") {
            node = Node::Fact(Box::new(node));
        }
        Some(node)
    }

    fn primary(&mut self, depth: usize) -> Option<Node> {
        match self.toks.get(self.i)?.clone() {
            Tok::Num(lit) => {
                self.i += 1;
                Some(Node::Num(lit))
            }
            Tok::Op("(") => {
                self.i += 1;
                let inner = self.sum(depth + 1)?;
                self.eat(")").then_some(inner)
            }
            Tok::Op(_) => None,
            Tok::Name(name) => {
                self.i += 1;
                self.name(&name, depth)
            }
        }
    }

    fn name(&mut self, name: &str, depth: usize) -> Option<Node> {
        let func: Option<&'static str> = match name {
            "sqrt" => Some("sqrt"),
            "ln" | "log" => Some("ln"),
            "exp" => Some("exp"),
            "re" => Some("re"),
            "im" => Some("im"),
            _ => None,
        };
        if let Some(f) = func {
            if f == "sqrt" && self.eat("[") {
                let degree = self.sum(depth + 1)?;
                if !self.eat("]") || !self.eat("(") {
                    return None;
                }
                let radicand = self.sum(depth + 1)?;
                return self.eat(")").then(|| Node::Call("root", vec![radicand, degree]));
            }
            if !self.eat("(") {
                return None;
            }
            let arg = self.sum(depth + 1)?;
            return self.eat(")").then(|| Node::Call(f, vec![arg]));
        }
        match name {
            "pi" => return Some(Node::Pi),
            "oo" | "zoo" | "nan" => return Some(Node::NotFinite),
            _ => {}
        }
        if name.contains('_') || GREEK.contains(&name) || name.chars().count() == 1 {
            return Some(Node::Sym(name.to_string()));
        }
        // sympy's split_symbols: letters become symbols, digit runs numbers, multiplied together
        let chars: Vec<char> = name.chars().collect();
        let mut parts = Vec::new();
        let mut k = 0;
        while k < chars.len() {
            if chars[k].is_ascii_digit() {
                let start = k;
                while k < chars.len() && chars[k].is_ascii_digit() {
                    k += 1;
                }
                let digits: String = chars[start..k].iter().collect();
                let value = digits.parse().ok()?;
                parts.push(Node::Num(Literal { value, digits, exp10: 0, decimal: false }));
            } else {
                parts.push(Node::Sym(chars[k].to_string()));
                k += 1;
            }
        }
        parts.into_iter().reduce(|a, b| Node::Bin('*', Box::new(a), Box::new(b)))
    }
}

fn collect_symbols(n: &Node, out: &mut BTreeMap<String, C>) {
    match n {
        Node::Sym(s) => {
            out.insert(s.clone(), C::real(0.0));
        }
        Node::Neg(a) | Node::Fact(a) => collect_symbols(a, out),
        Node::Bin(_, a, b) => {
            collect_symbols(a, out);
            collect_symbols(b, out);
        }
        Node::Call(_, args) => args.iter().for_each(|a| collect_symbols(a, out)),
        Node::Num(_) | Node::Pi | Node::NotFinite => {}
    }
}

fn eval(n: &Node, env: &BTreeMap<String, C>) -> C {
    const NAN: C = C { re: f64::NAN, im: f64::NAN };
    match n {
        Node::Num(lit) => C::real(lit.value),
        Node::Pi => C::real(std::f64::consts::PI),
        Node::NotFinite => NAN,
        Node::Sym(s) => env.get(s).copied().unwrap_or(NAN),
        Node::Neg(a) => C::real(0.0).sub(eval(a, env)),
        Node::Fact(a) => {
            let v = eval(a, env);
            if v.im != 0.0 || v.re < 0.0 || v.re.fract() != 0.0 || v.re > 170.0 {
                return NAN;
            }
            C::real((1..=v.re as u32).map(f64::from).product())
        }
        Node::Bin(op, a, b) => {
            let (x, y) = (eval(a, env), eval(b, env));
            match op {
                '+' => x.add(y),
                '-' => x.sub(y),
                '*' => x.mul(y),
                '/' => x.div(y),
                '^' => x.pow(y),
                'f' if x.im == 0.0 && y.im == 0.0 && y.re != 0.0 => C::real((x.re / y.re).floor()),
                _ => NAN,
            }
        }
        Node::Call(f, args) => {
            let v = eval(&args[0], env);
            match *f {
                "sqrt" => v.sqrt(),
                "ln" => v.ln(),
                "exp" => v.exp(),
                "re" => C::real(v.re),
                "im" => C::real(v.im),
                "root" => v.root(eval(&args[1], env)),
                _ => NAN,
            }
        }
    }
}

/// The exact value of a tree built from number literals with + − × ÷, integer powers and factorials;
/// anything else (a symbol, π, a function, `//`) is [`Rational::NotExact`].
fn exact(n: &Node) -> Rational {
    match n {
        Node::Num(lit) => Rational::literal(&lit.digits, lit.exp10, lit.decimal),
        Node::Neg(a) => exact(a).neg(),
        Node::Fact(a) => exact(a).factorial(),
        Node::Bin('^', a, b) => exact(a).pow(exact(b)),
        Node::Bin(op @ ('+' | '-' | '*' | '/'), a, b) => exact(a).binary(*op, exact(b)),
        _ => Rational::NotExact,
    }
}

/// splitmix64: a fixed, dependency-free stream for the evaluation points.
fn splitmix(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Numerically equal as the authors' `sympy.simplify(parse(expr)) == 0` asks, where `expr` is the text
/// `"(a)-(b)"` they build. Parse failures and non-finite values are "not equal".
pub fn difference_is_zero(expr: &str) -> bool {
    let Some(toks) = tokenize(expr) else { return false };
    // evaluation recurses over the tree: keep it shallow (real answers are a few dozen tokens)
    if toks.len() > MAX_TOKENS {
        return false;
    }
    let mut p = Parser { toks, i: 0 };
    let Some(tree) = p.sum(0) else { return false };
    if p.i != p.toks.len() {
        return false;
    }
    // two exact numbers (integers, fractions, or decimals on both sides) are compared exactly; the
    // relative tolerance below is for everything else, a decimal against a fraction included
    if let Node::Bin('-', a, b) = &tree {
        let (a, b) = (exact(a), exact(b));
        match (&a, &b) {
            (Rational::Value { .. }, Rational::Value { .. }) if a.is_decimal() == b.is_decimal() => {
                return a.equals(&b) == Some(true);
            }
            (Rational::TooLarge, Rational::TooLarge | Rational::Value { .. }) | (Rational::Value { .. }, Rational::TooLarge) => {
                return false;
            }
            _ => {}
        }
    }
    let mut env = BTreeMap::new();
    collect_symbols(&tree, &mut env);
    let points = if env.is_empty() { 1 } else { POINTS };
    let mut state = SEED;
    for _ in 0..points {
        for v in env.values_mut() {
            loop {
                let z = C { re: 4.0 * splitmix(&mut state) - 2.0, im: 4.0 * splitmix(&mut state) - 2.0 };
                if z.abs() >= 0.25 {
                    *v = z;
                    break;
                }
            }
        }
        // compare the two sides of the top-level subtraction, so the tolerance scales with them
        let (a, b) = match &tree {
            Node::Bin('-', a, b) => (eval(a, &env), eval(b, &env)),
            other => (eval(other, &env), C::real(0.0)),
        };
        if !a.is_finite() || !b.is_finite() {
            return false;
        }
        // purely relative: answers such as 8.2e-19 (Minerva) must not pass as equal to -8.2e-19
        let scale = a.abs().max(b.abs());
        if a.sub(b).abs() > TOL * scale {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::difference_is_zero as z;

    #[test]
    fn identities_and_non_identities() {
        assert!(z("(3sqrt(2))-(sqrt(18))"));
        assert!(z("((x+1)**2)-(x**2+2x+1)"));
        assert!(z("(3/2)-(1.5)"));
        assert!(z("(-2**2)-(-4)"));
        assert!(z("(2**-1)-(0.5)"));
        assert!(z("(1/2x)-(x/2)"));
        assert!(z("(5!)-(120)"));
        assert!(z("(sqrt[3](-8))-(-2)"));
        assert!(z("(xy)-(yx)"));
        assert!(z("(2pi)-(pi+pi)"));
        assert!(!z("(sqrt(x**2))-(x)"));
        assert!(!z("(x)-(y)"));
        assert!(!z("(1/3)-(0.333)"));
        assert!(!z("(1/0)-(1/0)"));
        assert!(!z("((1,2))-((1,2))"));
        assert!(!z("(oo)-(oo)"));
        assert!(!z("(x=3)-(3)"));
        assert!(!z("("));
        assert!(z("(0032)-(0)"));
        assert!(z("(9.6\n)-(9.6)"));
        assert!(!z("(70\npi)-(70pi)"));
    }
}
