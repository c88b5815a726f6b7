//! Every op's backward in src/cpu against finite differences of its forward, in f64.
//!
//! For an op y = f(x…) and random r, the scalar L = Σ r ⊙ y has dL/dy = r, so the op's backward fed
//! dout = r must give dL/dx, which is estimated here coordinate by coordinate with the five-point
//! central difference (8·(L(x+h) − L(x−h)) − (L(x+2h) − L(x−2h))) / 12h, h = 1e-4·max(1, |x|)
//! (truncation ~h⁴, rounding ~1e-16·|L|/h: about 1e-11 here; see src/gradcheck.rs).
//! Backward outputs accumulate (`+=`), so they are prefilled with a known value that is subtracted.
//! Sizes: degenerate (1), odd, and GQA / cached-prefix attention shapes.

mod common;
use common::*;
use drpo::cpu::attention::{attention_bwd, attention_fwd, AttnShape};
use drpo::cpu::embedding::{embedding_bwd, embedding_fwd};
use drpo::cpu::logprob::{logprob_bwd, logprob_fwd};
use drpo::cpu::matmul::{matmul_bwd, matmul_fwd};
use drpo::cpu::rmsnorm::{rmsnorm_bwd, rmsnorm_fwd};
use drpo::cpu::rope::{rope_bwd, rope_fwd, rope_tables};
use drpo::cpu::swiglu::{swiglu_bwd, swiglu_fwd};
use rand::rngs::StdRng;
use rand::Rng;

/// Per-element error |a − n| / max(|a|, |n|, floor), floor = 1e-4 · max(1, the tensor's largest |entry|):
/// inputs and r are O(1), so gradients are O(1) by construction, and entries far below that (near-exact
/// cancellations, or a tensor whose true gradient is 0 like log-softmax over a vocabulary of 1) are
/// compared absolutely at 1e-4. The difference's rounding noise is ~1e-16 · |L| / h ≈ 1e-11 for
/// |L| ~ 10, i.e. ≤ 1e-7 against the floor (measured worst 1e-7, on such small entries; 1e-9 and
/// below elsewhere). The bound is the project's gradcheck bound (STYLE §5), as in src/gradcheck.rs.
const TOL: f64 = 1e-6;
/// Value the `+=` outputs start from.
const PREFILL: f64 = 0.25;

fn uniform(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// dL/dx by the five-point central difference, every coordinate.
fn numeric_grad(x: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = 1e-4 * x[i].abs().max(1.0);
            let mut at = |xi: f64| {
                probe[i] = xi;
                loss(&probe)
            };
            let (p1, m1, p2, m2) = (at(x[i] + h), at(x[i] - h), at(x[i] + 2.0 * h), at(x[i] - 2.0 * h));
            probe[i] = x[i];
            (8.0 * (p1 - m1) - (p2 - m2)) / (12.0 * h)
        })
        .collect()
}

/// Removes the prefill from an accumulated backward output.
fn accumulated(buf: &[f64]) -> Vec<f64> {
    buf.iter().map(|g| g - PREFILL).collect()
}

fn assert_grad(what: &str, analytic: &[f64], numeric: &[f64]) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: lengths");
    let scale = numeric.iter().chain(analytic).fold(0.0f64, |m, g| m.max(g.abs()));
    let floor = 1e-4 * scale.max(1.0);
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        let den = a.abs().max(n.abs()).max(floor);
        let e = (a - n).abs() / den;
        assert!(!e.is_nan() && a.is_finite(), "{what}[{i}]: analytic {a}, numeric {n}");
        if e > worst {
            (worst, at) = (e, i);
        }
    }
    println!("{what}: worst rel {worst:.2e} at #{at} (analytic {:.9e}, numeric {:.9e}, scale {scale:.2e})", analytic[at], numeric[at]);
    assert!(worst <= TOL, "{what}: backward differs from finite differences: {worst:.2e} > {TOL:.0e} at #{at}");
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn embedding() {
    let mut rng = rng("ops_gradcheck_embedding");
    for (v, c, ids) in [(1, 1, vec![0, 0]), (5, 3, vec![4, 1, 4, 0, 4]), (7, 33, vec![6, 2, 2, 3, 0, 1, 6, 5, 5])] {
        let table = uniform(&mut rng, v * c, 1.0);
        let r = uniform(&mut rng, ids.len() * c, 1.0);
        let loss = |t: &[f64]| {
            let mut out = vec![0.0; ids.len() * c];
            embedding_fwd(&mut out, &ids, t, c);
            dot(&out, &r)
        };
        let mut dtable = vec![PREFILL; v * c];
        embedding_bwd(&mut dtable, &r, &ids, c);
        assert_grad(&format!("embedding v={v} c={c} dtable"), &accumulated(&dtable), &numeric_grad(&table, loss));
    }
}

#[test]
fn rmsnorm() {
    let mut rng = rng("ops_gradcheck_rmsnorm");
    for (n, c, scale, eps) in [(1, 1, 1.0, 1e-6), (3, 5, 2.0, 1e-5), (2, 33, 1.0, 1e-2), (2, 7, 1e4, 1e-6)] {
        let (x, w, r) = (uniform(&mut rng, n * c, scale), uniform(&mut rng, c, 1.5), uniform(&mut rng, n * c, 1.0));
        let fwd = |x: &[f64], w: &[f64]| {
            let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
            rmsnorm_fwd(&mut out, &mut rstd, x, w, c, eps);
            (dot(&out, &r), rstd)
        };
        let (_, rstd) = fwd(&x, &w);
        let (mut dx, mut dw) = (vec![PREFILL; n * c], vec![PREFILL; c]);
        rmsnorm_bwd(&mut dx, &mut dw, &r, &x, &w, &rstd, c);
        let what = format!("rmsnorm n={n} c={c} |x|~{scale:e}");
        assert_grad(&format!("{what} dx"), &accumulated(&dx), &numeric_grad(&x, |x| fwd(x, &w).0));
        assert_grad(&format!("{what} dw"), &accumulated(&dw), &numeric_grad(&w, |w| fwd(&x, w).0));
    }
}

#[test]
fn matmul_with_bias() {
    let mut rng = rng("ops_gradcheck_matmul");
    // n < 4 takes the column-split path of the forward, n ≥ 4 the row-parallel one
    for (n, d_in, d_out, bias) in [(1, 1, 1, true), (3, 5, 7, true), (5, 2, 3, true), (6, 33, 17, true), (4, 3, 2, false)] {
        let (x, w, b) = (uniform(&mut rng, n * d_in, 1.0), uniform(&mut rng, d_out * d_in, 1.0), uniform(&mut rng, d_out, 1.0));
        let r = uniform(&mut rng, n * d_out, 1.0);
        let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut out = vec![0.0; n * d_out];
            matmul_fwd(&mut out, x, w, bias.then_some(b), n, d_in, d_out);
            dot(&out, &r)
        };
        let (mut dx, mut dw, mut db) = (vec![PREFILL; n * d_in], vec![PREFILL; d_out * d_in], vec![PREFILL; d_out]);
        matmul_bwd(&mut dx, &mut dw, bias.then_some(&mut db[..]), &r, &x, &w, n, d_in, d_out);
        let what = format!("matmul n={n} in={d_in} out={d_out} bias={bias}");
        assert_grad(&format!("{what} dx"), &accumulated(&dx), &numeric_grad(&x, |x| fwd(x, &w, &b)));
        assert_grad(&format!("{what} dw"), &accumulated(&dw), &numeric_grad(&w, |w| fwd(&x, w, &b)));
        if bias {
            assert_grad(&format!("{what} db"), &accumulated(&db), &numeric_grad(&b, |b| fwd(&x, &w, b)));
        } else {
            assert!(db.iter().all(|&g| g == PREFILL), "{what}: db touched without a bias");
        }
    }
}

#[test]
fn rope() {
    let mut rng = rng("ops_gradcheck_rope");
    for (n, heads, hd, theta) in [(1, 1, 2, 10000.0), (3, 3, 6, 1e6), (5, 2, 4, 500.0)] {
        // positions include a large one: angles far from zero
        let positions: Vec<usize> = (0..n).map(|k| if k == 0 { 0 } else { rng.random_range(1..5000) }).collect();
        let (cos, sin) = rope_tables::<f64>(&positions, hd, theta);
        let (x, r) = (uniform(&mut rng, n * heads * hd, 1.0), uniform(&mut rng, n * heads * hd, 1.0));
        let loss = |x: &[f64]| {
            let mut y = x.to_vec();
            rope_fwd(&mut y, &cos, &sin, heads, hd);
            dot(&y, &r)
        };
        let mut dx = r.clone(); // rope_bwd works in place: dy in, dx out
        rope_bwd(&mut dx, &cos, &sin, heads, hd);
        assert_grad(&format!("rope n={n} heads={heads} hd={hd} positions={positions:?}"), &dx, &numeric_grad(&x, loss));
    }
}

#[test]
fn attention_with_cached_prefix_and_gqa() {
    let mut rng = rng("ops_gradcheck_attention");
    let shapes = [
        AttnShape { tq: 1, tk: 1, nh: 1, nkv: 1, hd: 1 },
        AttnShape { tq: 3, tk: 5, nh: 4, nkv: 2, hd: 3 }, // GQA, 2 cached positions
        AttnShape { tq: 4, tk: 4, nh: 3, nkv: 1, hd: 5 }, // MQA, fresh sequence
        AttnShape { tq: 1, tk: 7, nh: 6, nkv: 3, hd: 2 }, // one decoding step after 6 cached
        AttnShape { tq: 2, tk: 3, nh: 2, nkv: 2, hd: 7 }, // MHA
    ];
    for s in shapes {
        let AttnShape { tq, tk, nh, nkv, hd } = s;
        // scale 2: scores of a few units, so the softmax is neither uniform nor one-hot
        let (q, k, v) = (uniform(&mut rng, tq * nh * hd, 2.0), uniform(&mut rng, tk * nkv * hd, 2.0), uniform(&mut rng, tk * nkv * hd, 1.0));
        let r = uniform(&mut rng, tq * nh * hd, 1.0);
        let fwd = |q: &[f64], k: &[f64], v: &[f64]| {
            let (mut out, mut probs) = (vec![0.0; tq * nh * hd], vec![0.0; nh * tq * tk]);
            attention_fwd(&mut out, &mut probs, q, k, v, s);
            (dot(&out, &r), probs)
        };
        let (_, probs) = fwd(&q, &k, &v);
        let (mut dq, mut dk, mut dv) = (vec![PREFILL; q.len()], vec![PREFILL; k.len()], vec![PREFILL; v.len()]);
        attention_bwd(&mut dq, &mut dk, &mut dv, &r, &q, &k, &v, &probs, s);
        let what = format!("attention {s:?}");
        assert_grad(&format!("{what} dq"), &accumulated(&dq), &numeric_grad(&q, |q| fwd(q, &k, &v).0));
        assert_grad(&format!("{what} dk"), &accumulated(&dk), &numeric_grad(&k, |k| fwd(&q, k, &v).0));
        assert_grad(&format!("{what} dv"), &accumulated(&dv), &numeric_grad(&v, |v| fwd(&q, &k, v).0));
    }
}

#[test]
fn swiglu() {
    let mut rng = rng("ops_gradcheck_swiglu");
    for (n, scale) in [(1, 1.0), (7, 3.0), (33, 1.0), (5, 30.0)] {
        // scale 30: σ saturates (both tails of SiLU)
        let (gate, up, r) = (uniform(&mut rng, n, scale), uniform(&mut rng, n, 2.0), uniform(&mut rng, n, 1.0));
        let fwd = |g: &[f64], u: &[f64]| {
            let mut out = vec![0.0; n];
            swiglu_fwd(&mut out, g, u);
            dot(&out, &r)
        };
        let (mut dgate, mut dup) = (vec![PREFILL; n], vec![PREFILL; n]);
        swiglu_bwd(&mut dgate, &mut dup, &r, &gate, &up);
        assert_grad(&format!("swiglu n={n} |g|~{scale} dgate"), &accumulated(&dgate), &numeric_grad(&gate, |g| fwd(g, &up)));
        assert_grad(&format!("swiglu n={n} |g|~{scale} dup"), &accumulated(&dup), &numeric_grad(&up, |u| fwd(&gate, u)));
    }
}

#[test]
fn logprob_with_temperature() {
    let mut rng = rng("ops_gradcheck_logprob");
    for (n, v, temp, scale) in [(1, 1, 0.6, 1.0), (2, 2, 0.6, 1.0), (3, 37, 0.6, 3.0), (4, 19, 1.7, 5.0), (2, 384, 0.6, 2.0)] {
        let logits = uniform(&mut rng, n * v, scale);
        let targets: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
        let mut r = uniform(&mut rng, n, 1.0);
        if n > 2 {
            r[1] = 0.0; // a row with no gradient (the last position of a sequence)
        }
        let fwd = |l: &[f64]| {
            let (mut logp, mut lse) = (vec![0.0; n], vec![0.0; n]);
            logprob_fwd(&mut logp, &mut lse, l, &targets, v, temp);
            (dot(&logp, &r), lse)
        };
        let (_, lse) = fwd(&logits);
        let mut dlogits = vec![PREFILL; n * v];
        logprob_bwd(&mut dlogits, &r, &logits, &lse, &targets, v, temp);
        assert_grad(&format!("logprob n={n} v={v} T={temp} dlogits"), &accumulated(&dlogits), &numeric_grad(&logits, |l| fwd(l).0));
    }
}
