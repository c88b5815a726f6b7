//! Minimal SVG charts for reports (line charts and labelled scatter plots), hand-written so the
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

fn bounds(series: &[Series]) -> (f64, f64, f64, f64) {
    let pts = series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() {
        return (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |a: f64, b: f64| if b - a < 1e-12 { (a - 0.5, b + 0.5) } else { (a - 0.05 * (b - a), b + 0.05 * (b - a)) };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    (x0, x1, y0, y1)
}

fn frame(title: &str, xlabel: &str, ylabel: &str, b: (f64, f64, f64, f64)) -> String {
    let (x0, x1, y0, y1) = b;
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
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let (xv, yv) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        let (px, py) = (L + f * (W - L - R), H - B - f * (H - T - B));
        s += &format!("<line x1=\"{px}\" y1=\"{}\" x2=\"{px}\" y2=\"{}\" stroke=\"#ddd\"/>\n", T, H - B);
        s += &format!("<line x1=\"{L}\" y1=\"{py}\" x2=\"{}\" y2=\"{py}\" stroke=\"#ddd\"/>\n", W - R);
        s += &format!("<text x=\"{px}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", H - B + 16.0, tick(xv));
        s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", L - 6.0, py + 4.0, tick(yv));
    }
    s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (L + W - R) / 2.0, H - 12.0, esc(xlabel));
    s += &format!(
        "<text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">{}</text>\n",
        (T + H - B) / 2.0,
        (T + H - B) / 2.0,
        esc(ylabel)
    );
    s
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn to_px(b: (f64, f64, f64, f64), x: f64, y: f64) -> (f64, f64) {
    let (x0, x1, y0, y1) = b;
    (L + (x - x0) / (x1 - x0) * (W - L - R), H - B - (y - y0) / (y1 - y0) * (H - T - B))
}

fn legend(s: &mut String, i: usize, name: &str) {
    let y = T + 14.0 + 18.0 * i as f64;
    *s += &format!(
        "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
        W - R + 10.0,
        y - 10.0,
        COLORS[i % COLORS.len()],
        W - R + 28.0,
        y,
        esc(name)
    );
}

/// Lines through each series' points, in x order.
pub fn line_chart(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    let b = bounds(series);
    let mut s = frame(title, xlabel, ylabel, b);
    for (i, se) in series.iter().enumerate() {
        let pts: Vec<String> = se
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| {
                let (px, py) = to_px(b, x, y);
                format!("{px:.1},{py:.1}")
            })
            .collect();
        s += &format!("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" points=\"{}\"/>\n", COLORS[i % COLORS.len()], pts.join(" "));
        legend(&mut s, i, &se.name);
    }
    s + "</svg>\n"
}

/// A marker per point (each series one colour), e.g. accuracy against length per method.
pub fn scatter(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    let b = bounds(series);
    let mut s = frame(title, xlabel, ylabel, b);
    for (i, se) in series.iter().enumerate() {
        for &(x, y) in se.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()) {
            let (px, py) = to_px(b, x, y);
            s += &format!("<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"5\" fill=\"{}\" fill-opacity=\"0.8\"/>\n", COLORS[i % COLORS.len()]);
        }
        legend(&mut s, i, &se.name);
    }
    s + "</svg>\n"
}
