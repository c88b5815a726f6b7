//! LaTeX to plain text, the way the authors' grader sees it (pylatexenc 2.10 `LatexNodes2Text`,
//! default settings), for the subset of LaTeX that math answers use.
//!
//! What it produces, measured against pylatexenc 2.10:
//! - `\frac{a}{b}` and `\nicefrac` → `a/b` (no parentheses: `\frac{x+1}{2}` → `x+1/2`, as there);
//! - `\sqrt{x}` → `√(x)`; `\sqrt[n]{x}` → `√[n](x)` (pylatexenc drops `n`; we keep it, see NOTES);
//! - Greek letters, relations and operators → their Unicode characters (`\pi` → `π`, `\cdot` → `·`);
//! - `\text{…}`, `\mathrm{…}`, any unknown macro → nothing, its braced arguments render as plain groups
//!   (`\binom{5}{2}` → `52`, as there); `\mbox{…}`, `\color{…}`, `\hspace{…}` vanish with their argument;
//! - `{…}` → its content; `\{`, `\}`, `\%`, `\$`, `\&`, `\#`, `\_` → the character; `~` → no-break space;
//! - `\,` `\:` `\;` `\ ` → a space, `\quad` → 2 spaces, `\\` → newline, `&` → 3 spaces;
//! - `pmatrix`, `bmatrix`, `array` → `[ a b; c d ]` with cells right-aligned to the widest;
//! - a space after a letter macro is swallowed (`\pi r` → `πr`); `--` → `–`, `---` → `—`, `''` → `”`.
//!
//! Returns `None` where pylatexenc raises (a `\sqrt` with no argument), so the caller keeps its text;
//! also for input nested deeper than 200 nodes, and for a matrix whose aligned rendering would pass
//! 100,000 characters (cells × widest cell): limits that keep adversarial model output cheap.

/// Converts LaTeX to text; `None` where the original converter fails.
pub fn latex_to_text(src: &str) -> Option<String> {
    let mut p = Parser { c: src.chars().collect(), i: 0, depth: 0 };
    let nodes = p.nodes_until(Stop::End)?;
    Some(nodes)
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    End,
    CloseBrace,
    EndEnv,
}

struct Parser {
    c: Vec<char>,
    i: usize,
    /// Nesting of nodes being rendered; past [`MAX_DEPTH`] the conversion gives up (no deep recursion).
    depth: usize,
}

const MAX_DEPTH: usize = 200;

/// A matrix renders as cells × (widest cell) characters (every cell is right-aligned to the widest);
/// past this many the conversion gives up rather than blow a short input up quadratically.
const MAX_MATRIX_CHARS: usize = 100_000;

/// What a macro does with its arguments.
enum Spec {
    /// No arguments; this text.
    Sym(&'static str),
    /// `a/b` of two arguments.
    Frac,
    /// Optional `[n]`, one argument.
    Sqrt,
    /// Consumes this many arguments and prints this text.
    Drop(usize, &'static str),
    /// One argument followed by a combining mark.
    Accent(char),
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }

    /// Renders nodes until `stop`; `\end{…}` and `}` end the corresponding levels.
    fn nodes_until(&mut self, stop: Stop) -> Option<String> {
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            match ch {
                '}' => {
                    self.i += 1;
                    if stop == Stop::CloseBrace {
                        return Some(out);
                    }
                    // a stray closing brace is dropped
                }
                '\\' if stop == Stop::EndEnv && self.looking_at("\\end") => return Some(out),
                _ => out.push_str(&self.node()?),
            }
        }
        Some(out)
    }

    fn looking_at(&self, s: &str) -> bool {
        let mut k = self.i;
        for ch in s.chars() {
            if self.c.get(k) != Some(&ch) {
                return false;
            }
            k += 1;
        }
        // `\end` must not be the start of a longer macro name such as `\endgraf`
        !self.c.get(k).is_some_and(|c| c.is_ascii_alphabetic())
    }

    /// One node: a character, a group, a macro with its arguments, a comment or an environment.
    /// Every recursion of the parser (groups, optional arguments, environments, matrix cells) passes
    /// through here, so this is where the depth is counted.
    fn node(&mut self) -> Option<String> {
        self.depth += 1;
        let out = if self.depth > MAX_DEPTH { None } else { self.node_inner() };
        self.depth -= 1;
        out
    }

    fn node_inner(&mut self) -> Option<String> {
        let ch = self.peek()?;
        self.i += 1;
        match ch {
            '{' => self.nodes_until(Stop::CloseBrace),
            '%' => {
                while let Some(c) = self.peek() {
                    self.i += 1;
                    if c == '\n' {
                        break;
                    }
                }
                Some(String::new())
            }
            '$' => Some(String::new()),
            '~' => Some("\u{a0}".to_string()),
            '&' => Some("   ".to_string()),
            '\\' => self.macro_node(),
            // TeX ligatures: `---` is an em dash, `--` an en dash, `` `` `` and `''` curly quotes
            '-' | '`' | '\'' => {
                let run = |p: &Self, n: usize| (0..n).all(|k| p.c.get(p.i + k) == Some(&ch));
                if ch == '-' && run(self, 2) {
                    self.i += 2;
                    Some("—".to_string())
                } else if run(self, 1) {
                    self.i += 1;
                    Some(
                        match ch {
                            '-' => "–",
                            '`' => "“",
                            _ => "”",
                        }
                        .to_string(),
                    )
                } else {
                    Some(ch.to_string())
                }
            }
            c => Some(c.to_string()),
        }
    }

    /// After a backslash.
    fn macro_node(&mut self) -> Option<String> {
        let Some(first) = self.peek() else { return Some(String::new()) };
        if !first.is_ascii_alphabetic() {
            self.i += 1;
            if first == '\\' {
                // `\\*` and `\\[2pt]`: the star and the spacing argument go with the line break
                if self.peek() == Some('*') {
                    self.i += 1;
                }
                if self.peek() == Some('[') {
                    self.optional_argument()?;
                }
                return Some("\n".to_string());
            }
            return Some(
                match first {
                    ',' | ':' | ';' | ' ' | '\n' | '\t' => " ",
                    '(' | ')' | '!' | '>' => "",
                    '[' => "\n    ",
                    ']' => "\n",
                    '{' => "{",
                    '}' => "}",
                    '%' => "%",
                    '$' => "$",
                    '&' => "&",
                    '#' => "#",
                    '_' => "_",
                    _ => "",
                }
                .to_string(),
            );
        }
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.i += 1;
        }
        let name: String = self.c[start..self.i].iter().collect();
        while self.peek().is_some_and(|c| c == ' ' || c == '\t' || c == '\n') {
            self.i += 1;
        }
        if name == "begin" {
            return self.environment();
        }
        if name == "end" {
            // an `\end{…}` with no `\begin`: drop it and its name
            self.argument();
            return Some(String::new());
        }
        match spec(&name) {
            Spec::Sym(s) => Some(s.to_string()),
            Spec::Frac => {
                let first_is_brace = self.c[self.i..].iter().find(|c| !c.is_whitespace()) == Some(&'}');
                let a = self.argument();
                let b = self.argument();
                match (a, b) {
                    (Some(a), Some(b)) => Some(format!("{}/{}", a?, b?)),
                    // `\frac}` at the end of the input: both arguments empty
                    (Some(_), None) if first_is_brace => Some("/".to_string()),
                    // pylatexenc prints its unfilled template, then whatever argument it did get
                    (a, _) => Some(format!("%s/%s{}", a.unwrap_or(Some(String::new()))?)),
                }
            }
            Spec::Sqrt => {
                let degree = self.optional_argument()?;
                let radicand = self.argument()??;
                Some(match degree {
                    Some(n) if !n.trim().is_empty() => format!("√[{}]({radicand})", n.trim()),
                    _ => format!("√({radicand})"),
                })
            }
            Spec::Drop(n, text) => {
                for _ in 0..n {
                    self.argument();
                }
                Some(text.to_string())
            }
            Spec::Accent(mark) => match self.argument() {
                Some(a) => Some(format!("{}{mark}", a?)),
                None => Some(format!(" {mark}")),
            },
        }
    }

    /// A mandatory argument: a group, one character, or a macro *without* its own arguments
    /// (as pylatexenc parses it: `\frac\sqrt{2}{3}` fails, `\sqrt\frac12` is `√(%s/%s)12`).
    /// A `}` is consumed as an empty argument. `None` when the input ends first; `Some(None)` when
    /// rendering failed.
    fn argument(&mut self) -> Option<Option<String>> {
        while self.peek().is_some_and(|c| c == ' ' || c == '\t' || c == '\n') {
            self.i += 1;
        }
        match self.peek()? {
            '}' => {
                self.i += 1;
                Some(Some(String::new()))
            }
            // a lone backslash ending the input is no argument (`\sqrt\` fails there)
            '\\' if self.i + 1 == self.c.len() => {
                self.i += 1;
                None
            }
            '\\' if self.c.get(self.i + 1).is_some_and(|c| c.is_ascii_alphabetic()) => {
                self.i += 1;
                let start = self.i;
                while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                    self.i += 1;
                }
                let name: String = self.c[start..self.i].iter().collect();
                Some(match spec(&name) {
                    Spec::Sym(s) => Some(s.to_string()),
                    Spec::Frac => Some("%s/%s".to_string()),
                    Spec::Sqrt => None,
                    Spec::Drop(..) => Some(String::new()),
                    Spec::Accent(mark) => Some(format!(" {mark}")),
                })
            }
            _ => Some(self.node()),
        }
    }

    /// `[…]` if present: `Some(None)` when absent, `None` when rendering failed.
    fn optional_argument(&mut self) -> Option<Option<String>> {
        let save = self.i;
        while self.peek().is_some_and(|c| c == ' ' || c == '\t' || c == '\n') {
            self.i += 1;
        }
        if self.peek() != Some('[') {
            self.i = save;
            return Some(None);
        }
        self.i += 1;
        let mut out = String::new();
        let mut depth = 0usize;
        while let Some(ch) = self.peek() {
            if ch == ']' && depth == 0 {
                self.i += 1;
                return Some(Some(out));
            }
            match ch {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            out.push_str(&self.node()?);
        }
        Some(Some(out))
    }

    /// After `\begin`: reads `{name}` and renders the body up to `\end{name}`.
    fn environment(&mut self) -> Option<String> {
        let name = self.argument().flatten().unwrap_or_default();
        let matrix = matches!(name.as_str(), "pmatrix" | "bmatrix" | "array" | "smallmatrix");
        if name == "array" {
            self.argument(); // the column specification
        }
        let body_start = self.i;
        let body = if matrix { None } else { Some(self.nodes_until(Stop::EndEnv)?) };
        let text = match body {
            Some(b) => b,
            None => {
                self.i = body_start;
                self.matrix_body()?
            }
        };
        if self.looking_at("\\end") {
            self.i += 4;
            self.argument();
        }
        Some(match name.as_str() {
            "align" | "align*" | "equation" | "equation*" | "displaymath" | "gather" | "gather*" => {
                format!("\n    {text}\n")
            }
            _ => text,
        })
    }

    /// Cells split at `&`, rows at `\\`; `[ a b; c d ]` with every cell right-aligned to the widest.
    fn matrix_body(&mut self) -> Option<String> {
        let mut rows: Vec<Vec<String>> = vec![vec![String::new()]];
        while let Some(ch) = self.peek() {
            if ch == '\\' && self.looking_at("\\end") {
                break;
            }
            if ch == '&' {
                self.i += 1;
                rows.last_mut()?.push(String::new());
            } else if ch == '\\' && self.c.get(self.i + 1) == Some(&'\\') {
                self.i += 2;
                // `\\[2pt]` carries a spacing argument
                self.optional_argument()?;
                rows.push(vec![String::new()]);
            } else if ch == '}' {
                self.i += 1;
            } else {
                let piece = self.node()?;
                rows.last_mut()?.last_mut()?.push_str(&piece);
            }
        }
        if rows.len() > 1 && rows.last().is_some_and(|r| r.len() == 1 && r[0].trim().is_empty()) {
            rows.pop();
        }
        let cells: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| c.trim().to_string()).collect()).collect();
        let width = cells.iter().flatten().map(|c| c.chars().count()).max().unwrap_or(0);
        let n_cells: usize = cells.iter().map(Vec::len).sum();
        if n_cells.saturating_mul(width) > MAX_MATRIX_CHARS {
            return None;
        }
        let lines: Vec<String> =
            cells.iter().map(|r| r.iter().map(|c| format!("{c:>width$}")).collect::<Vec<_>>().join(" ")).collect();
        Some(format!("[ {} ]", lines.join("; ")))
    }
}

/// The macro table (names measured against pylatexenc 2.10); unknown names print nothing.
fn spec(name: &str) -> Spec {
    use Spec::*;
    match name {
        "frac" | "nicefrac" => Frac,
        "sqrt" => Sqrt,
        "mbox" | "color" | "hspace" | "label" | "makebox" => Drop(1, ""),
        "vspace" => Drop(1, "\n"),
        "hat" | "widehat" => Accent('\u{302}'),
        "bar" => Accent('\u{305}'),
        "vec" => Accent('\u{20d7}'),
        "dot" => Accent('\u{307}'),
        "ddot" => Accent('\u{308}'),
        _ => Sym(symbol(name)),
    }
}

/// Zero-argument macros that print a character or a word.
#[rustfmt::skip]
fn symbol(name: &str) -> &'static str {
    match name {
        // Greek
        "alpha" => "α", "beta" => "β", "gamma" => "γ", "delta" => "δ", "epsilon" => "ϵ",
        "varepsilon" => "ε", "zeta" => "ζ", "eta" => "η", "theta" => "θ", "vartheta" => "ϑ",
        "iota" => "ι", "kappa" => "κ", "lambda" => "λ", "mu" => "μ", "nu" => "ν", "xi" => "ξ",
        "omicron" => "ο", "pi" => "π", "varpi" => "ϖ", "rho" => "ρ", "varrho" => "ϱ",
        "sigma" => "σ", "varsigma" => "ς", "tau" => "τ", "upsilon" => "υ", "phi" => "ϕ",
        "varphi" => "φ", "chi" => "χ", "psi" => "ψ", "omega" => "ω",
        "Gamma" => "Γ", "Delta" => "Δ", "Theta" => "Θ", "Lambda" => "Λ", "Xi" => "Ξ", "Pi" => "Π",
        "Sigma" => "Σ", "Upsilon" => "Υ", "Phi" => "Φ", "Psi" => "Ψ", "Omega" => "Ω",
        // operators and relations
        "infty" => "∞", "cdot" => "·", "times" => "×", "div" => "÷", "pm" => "±", "mp" => "∓",
        "ast" => "∗", "star" => "⋆", "circ" => "∘", "bullet" => "∙", "oplus" => "⊕", "otimes" => "⊗",
        "odot" => "⊙", "le" | "leq" => "≤", "ge" | "geq" => "≥", "leqslant" => "⩽", "geqslant" => "⩾",
        "neq" => "≠", "approx" => "≈", "sim" => "∼", "simeq" => "≃", "equiv" => "≡", "cong" => "≅",
        "propto" => "∝", "ll" => "≪", "gg" => "≫", "cup" => "∪", "cap" => "∩", "in" => "∈",
        "notin" => "∉", "ni" => "∋", "subset" => "⊂", "subseteq" => "⊆", "supset" => "⊃",
        "supseteq" => "⊇", "setminus" => "∖", "emptyset" | "varnothing" => "∅", "to" | "rightarrow" => "→",
        "Rightarrow" => "⇒", "leftarrow" => "←", "leftrightarrow" => "↔", "Leftrightarrow" => "⇔",
        "mapsto" => "↦", "perp" => "⊥", "parallel" => "∥", "angle" => "∠", "measuredangle" => "∡",
        "partial" => "∂", "nabla" => "∇", "forall" => "∀", "exists" => "∃", "lnot" => "¬",
        "wedge" => "∧", "vee" => "∨", "ell" => "ℓ", "hbar" => "ħ", "aleph" => "ℵ",
        // dots, delimiters, primes
        "cdots" => "⋯", "ldots" | "dots" | "dotsc" | "dotsb" => "…", "vdots" => "⋮", "ddots" => "⋱",
        "prime" => "'", "lfloor" => "⌊", "rfloor" => "⌋", "lceil" => "⌈", "rceil" => "⌉",
        "langle" => "⟨", "rangle" => "⟩", "mid" => "|", "lbrace" => "{", "rbrace" => "}",
        "Vert" | "lVert" | "rVert" => "‖", "backslash" => "\\", "textbackslash" => "\\",
        "textdegree" => "°", "AA" => "Å", "mho" => "℧",
        // spacing
        "quad" => "  ", "qquad" => "    ",
        // operator names
        "sin" => "sin", "cos" => "cos", "tan" => "tan", "sinh" => "sinh", "cosh" => "cosh",
        "tanh" => "tanh", "arcsin" => "arcsin", "arccos" => "arccos", "arctan" => "arctan",
        "exp" => "exp", "ln" => "ln", "log" => "log", "lim" => "lim", "liminf" => "lim inf",
        "limsup" => "lim sup", "max" => "max", "min" => "min", "sup" => "sup", "inf" => "inf",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::latex_to_text as t;

    /// Expected strings are pylatexenc 2.10's output for the same input.
    #[test]
    fn matches_pylatexenc_on_common_answers() {
        let cases = [
            (" \\frac{1}{2}", " 1/2"),
            ("\\frac{x+1}{2}", "x+1/2"),
            ("\\sqrt{18}", "√(18)"),
            ("\\left( 3, \\frac{\\pi}{2} \\right)", "( 3, π/2 )"),
            ("3\\times 4", "3×4"),
            ("\\text{ cm}", " cm"),
            ("\\unknown{5}", "5"),
            ("\\{1,2\\}", "{1,2}"),
            ("\\frac12", "1/2"),
            ("\\binom{5}{2}", "52"),
            ("\\sin x", "sinx"),
            ("90^\\circ", "90^∘"),
            ("\\mbox{5}", ""),
            ("\\frac{1}{\\sqrt{2}}", "1/√(2)"),
            ("\\frac{a}{b}{c}", "a/bc"),
            ("1\\,000", "1 000"),
            ("\\pi r", "πr"),
            ("a\\\\b", "a\nb"),
            ("\\begin{pmatrix} -1 & 2 \\\\ 3 & \\frac{1}{2} \\end{pmatrix}", "[  -1   2;   3 1/2 ]"),
            ("\\begin{array}{cc} 1 & 2 \\end{array}", "[ 1 2 ]"),
            ("\\lfloor x \\rfloor", "⌊x ⌋"),
            ("a}b", "ab"),
            ("a{b", "ab"),
            ("\\frac{a}", "%s/%sa"),
            ("a----b", "a—-b"),
            ("f''(x)", "f”(x)"),
            ("\\sqrt\\text{5}", "√()5"),
            ("\\frac\\text{5}2", "/52"),
            ("\\sqrt}", "√()"),
            ("\\sqrt\\frac12", "√(%s/%s)12"),
            ("{\\frac{1}}2", "1/2"),
            ("\\sqrt\\hat{x}", "√( \u{302})x"),
            ("a\\\\*b\\\\[2pt]c", "a\nb\nc"),
            ("x\\frac}", "x/"),
        ];
        for (src, want) in cases {
            assert_eq!(t(src).as_deref(), Some(want), "{src:?}");
        }
        assert_eq!(t("\\sqrt"), None);
        assert_eq!(t("\\frac\\sqrt{2}{3}"), None);
        assert_eq!(t("5\\").as_deref(), Some("5"));
        assert_eq!(t("5\\sqrt\\"), None);
        assert_eq!(t("\\sqrt[3]{2}").as_deref(), Some("√[3](2)"));
    }

    /// Every recursive path is cut at 200 nested nodes: groups, `\sqrt[` and `\\[` optional arguments,
    /// matrices in matrices, other environments. Below the limit the same inputs convert.
    #[test]
    fn depth_limit_on_every_recursion() {
        let open = |what: &str, n: usize| what.repeat(n);
        assert_eq!(t(&(open("{", 199) + "5" + &open("}", 199))).as_deref(), Some("5"));
        assert_eq!(t(&(open("{", 200) + "5" + &open("}", 200))), None);
        let (mut src, mut want) = ("2".to_string(), "2".to_string());
        for _ in 0..60 {
            src = format!("\\sqrt[{src}]{{3}}");
            want = format!("√[{want}](3)");
        }
        assert_eq!(t(&src), Some(want));
        for deep in [open("\\sqrt[", 20_000), open("\\\\[", 20_000), open("\\begin{pmatrix}", 30_000), open("\\begin{center}", 30_000)]
        {
            assert_eq!(t(&deep), None, "{}", &deep[..20]);
        }
    }

    /// A matrix renders as cells × widest cell characters; past 1e5 it is not rendered.
    #[test]
    fn matrix_size_limit() {
        // 2 cells of width 50,000: 100,000 characters, the limit itself, still renders
        let at_limit = format!("\\begin{{pmatrix}}{}&x\\end{{pmatrix}}", "y".repeat(50_000));
        assert_eq!(t(&at_limit).map(|s| s.chars().count()), Some(2 + 50_000 + 1 + 50_000 + 2));
        let over = format!("\\begin{{pmatrix}}{}&x&z\\end{{pmatrix}}", "y".repeat(50_000));
        assert_eq!(t(&over), None);
        let wide = format!("\\begin{{pmatrix}}{}{}\\end{{pmatrix}}", "&".repeat(15_000), "x".repeat(15_000));
        assert_eq!(t(&wide), None);
    }
}
