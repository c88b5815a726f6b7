//! Minimal SVG charts for reports (line charts, scatter plots, curves with error bars), hand-written so the
//! report needs no plotting or font dependency: any browser or Markdown viewer shows them.

const W: f64 = 640.0;
const H: f64 = 400.0;
// plot margins: left, right (legend), top, bottom
const L: f64 = 70.0;
const R: f64 = 170.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: [&str; 10] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// One named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Axis ticks at "nice" numbers: a step of 1, 2 or 5 × 10^k, the nearest to (hi − lo)/`target`; the axis runs from the last tick ≤ lo to the first tick ≥ hi. Returns the ticks and
/// the decimals that print the step exactly. A degenerate range (lo = hi) is widened by 1 around it.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, usize) {
    let (lo, hi) = if !(lo.is_finite() && hi.is_finite()) {
        (0.0, 1.0)
    } else if hi - lo < 1e-12 * lo.abs().max(1.0) {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    // the nearest of 1, 2, 5, 10 × mag (Heckbert's "nice numbers"), so the tick count stays near target
    let f = raw / mag;
    let step = mag * if f < 1.5 { 1.0 } else if f < 3.0 { 2.0 } else if f < 7.0 { 5.0 } else { 10.0 };
    let first = (lo / step + 1e-9).floor() as i64;
    let last = (hi / step - 1e-9).ceil() as i64;
    // k·step, not a running sum: no accumulated rounding in the labels
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    (ticks, decimals)
}

/// Data bounds of all finite points, widened to nice ticks: (x ticks, x decimals, y ticks, y decimals).
fn axes(series: &[Series]) -> (Vec<f64>, usize, Vec<f64>, usize) {
    let pts = series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (xt, xd) = nice_ticks(x0, x1, 5);
    let (yt, yd) = nice_ticks(y0, y1, 5);
    (xt, xd, yt, yd)
}

/// (x0, x1, y0, y1) of the plot area: the first and last ticks.
type Bounds = (f64, f64, f64, f64);

fn frame(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> (String, Bounds) {
    let (xt, xd, yt, yd) = axes(series);
    let b = (xt[0], xt[xt.len() - 1], yt[0], yt[yt.len() - 1]);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
         <rect x=\"{L}\" y=\"{T}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n",
        (L + W - R) / 2.0,
        esc(title),
        W - L - R,
        H - T - B
    );
    for &xv in &xt {
        let (px, _) = to_px(b, xv, b.2);
        s += &format!("<line x1=\"{px:.1}\" y1=\"{T}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\n", H - B);
        s += &format!("<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{xv:.xd$}</text>\n", H - B + 16.0);
    }
    for &yv in &yt {
        let (_, py) = to_px(b, b.0, yv);
        s += &format!("<line x1=\"{L}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\n", W - R);
        s += &format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{yv:.yd$}</text>\n", L - 6.0, py + 4.0);
    }
    s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (L + W - R) / 2.0, H - 12.0, esc(xlabel));
    s += &format!(
        "<text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">{}</text>\n",
        (T + H - B) / 2.0,
        (T + H - B) / 2.0,
        esc(ylabel)
    );
    (s, b)
}

fn to_px(b: Bounds, x: f64, y: f64) -> (f64, f64) {
    let (x0, x1, y0, y1) = b;
    (L + (x - x0) / (x1 - x0) * (W - L - R), H - B - (y - y0) / (y1 - y0) * (H - T - B))
}

fn legend(s: &mut String, i: usize, name: &str) {
    // 16 px per entry: 21 entries fit beside the plot
    let y = T + 14.0 + 16.0 * i as f64;
    let (color, dash) = stroke(i);
    *s += &format!(
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{color}\"{dash} stroke-width=\"4\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>\n",
        W - R + 8.0,
        y - 4.0,
        W - R + 26.0,
        y - 4.0,
        W - R + 30.0,
        y,
        esc(name)
    );
}

/// Colour and dash pattern of series i: ten colours, then the same ten dashed.
fn stroke(i: usize) -> (&'static str, &'static str) {
    (COLORS[i % COLORS.len()], if (i / COLORS.len()) % 2 == 1 { " stroke-dasharray=\"6 3\"" } else { "" })
}

/// Lines through each series' points, in the order given.
pub fn line_chart(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    let (mut s, b) = frame(title, xlabel, ylabel, series);
    for (i, se) in series.iter().enumerate() {
        let (color, dash) = stroke(i);
        let pts: Vec<String> = se
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| {
                let (px, py) = to_px(b, x, y);
                format!("{px:.1},{py:.1}")
            })
            .collect();
        s += &format!("<polyline fill=\"none\" stroke=\"{color}\"{dash} stroke-width=\"1.6\" points=\"{}\"/>\n", pts.join(" "));
        legend(&mut s, i, &se.name);
    }
    s + "</svg>\n"
}

/// A marker per point (each series one colour), e.g. accuracy against length per method.
pub fn scatter(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    let (mut s, b) = frame(title, xlabel, ylabel, series);
    for (i, se) in series.iter().enumerate() {
        for &(x, y) in se.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()) {
            let (px, py) = to_px(b, x, y);
            s += &format!("<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"5\" fill=\"{}\" fill-opacity=\"0.8\"/>\n", COLORS[i % COLORS.len()]);
        }
        legend(&mut s, i, &se.name);
    }
    s + "</svg>\n"
}

/// A point with error bars (± x_err, ± y_err; 0 draws none) and a short label written beside it.
pub struct ErrorPoint {
    pub x: f64,
    pub y: f64,
    pub x_err: f64,
    pub y_err: f64,
    pub label: String,
}

/// One curve of labelled points with error bars.
pub struct Curve {
    pub name: String,
    pub points: Vec<ErrorPoint>,
}

/// Curves through points with error bars (a Pareto plot: one curve per method through its
/// settings, in the order given), plus named reference marks drawn as black diamonds (e.g. the
/// base model). The axes cover the error bars.
pub fn error_bar_chart(title: &str, xlabel: &str, ylabel: &str, curves: &[Curve], marks: &[(String, f64, f64)]) -> String {
    // the frame's bounds: every end of every error bar, and the marks
    let extent: Vec<Series> = curves
        .iter()
        .map(|c| Series {
            name: String::new(),
            points: c.points.iter().flat_map(|p| [(p.x - p.x_err, p.y - p.y_err), (p.x + p.x_err, p.y + p.y_err)]).collect(),
        })
        .chain(std::iter::once(Series { name: String::new(), points: marks.iter().map(|m| (m.1, m.2)).collect() }))
        .collect();
    let (mut s, b) = frame(title, xlabel, ylabel, &extent);
    for (i, c) in curves.iter().enumerate() {
        let (color, dash) = stroke(i);
        let pts: Vec<&ErrorPoint> = c.points.iter().filter(|p| p.x.is_finite() && p.y.is_finite()).collect();
        let line: Vec<String> = pts.iter().map(|p| to_px(b, p.x, p.y)).map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        s += &format!("<polyline fill=\"none\" stroke=\"{color}\"{dash} stroke-width=\"1.6\" points=\"{}\"/>\n", line.join(" "));
        for p in pts {
            let (px, py) = to_px(b, p.x, p.y);
            for ((x1, y1), (x2, y2)) in [((p.x - p.x_err, p.y), (p.x + p.x_err, p.y)), ((p.x, p.y - p.y_err), (p.x, p.y + p.y_err))] {
                if (x1, y1) != (x2, y2) && [x1, y1, x2, y2].iter().all(|v| v.is_finite()) {
                    let ((ax, ay), (bx, by)) = (to_px(b, x1, y1), to_px(b, x2, y2));
                    s += &format!("<line x1=\"{ax:.1}\" y1=\"{ay:.1}\" x2=\"{bx:.1}\" y2=\"{by:.1}\" stroke=\"{color}\" stroke-width=\"1\"/>\n");
                }
            }
            s += &format!("<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"{color}\"/>\n");
            if !p.label.is_empty() {
                s += &format!("<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" fill=\"{color}\">{}</text>\n", px + 5.0, py - 5.0, esc(&p.label));
            }
        }
        legend(&mut s, i, &c.name);
    }
    for (name, x, y) in marks {
        if x.is_finite() && y.is_finite() {
            let (px, py) = to_px(b, *x, *y);
            s += &format!("<path d=\"M {px:.1} {:.1} L {:.1} {py:.1} L {px:.1} {:.1} L {:.1} {py:.1} Z\" fill=\"black\"/>\n", py - 7.0, px + 7.0, py + 7.0, px - 7.0);
            s += &format!("<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>\n", px + 9.0, py + 4.0, esc(name));
        }
    }
    s + "</svg>\n"
}
