//! The SIMD levels of the CPU path (`drpo::cpu::simd`): every level this CPU has gives the scalar
//! level's bits, op by op and through the whole model; the matmuls follow the canonical order the
//! module doc states (spelled out here in plain loops, bit for bit); the canonical exp is accurate to
//! a few ulp; f32 results stay within the f32 bounds of an f64 reference.
//!
//! Levels are switched with `force_level`, a process-wide setting: the tests that switch hold LEVELS.

mod common;
use common::*;
use drpo::cpu::attention::{attention_bwd, attention_fwd, AttnShape};
use drpo::cpu::logprob::{logprob_bwd, logprob_fwd};
use drpo::cpu::matmul::{matmul_bwd, matmul_fwd};
use drpo::cpu::rmsnorm::{rmsnorm_bwd, rmsnorm_fwd};
use drpo::cpu::simd::{self, Level};
use drpo::cpu::swiglu::{swiglu_bwd, swiglu_fwd};
use drpo::cpu::Float;
use drpo::gradcheck::{random_config, random_params};
use drpo::model::Model;
use rand::{rngs::StdRng, Rng};
use std::sync::Mutex;

static LEVELS: Mutex<()> = Mutex::new(());

/// The levels this CPU runs, scalar first (the reference the others must equal).
fn levels() -> Vec<Level> {
    let have: Vec<Level> = Level::ALL.into_iter().filter(|l| l.supported()).collect();
    let missing: Vec<&str> = Level::ALL.iter().filter(|l| !l.supported()).map(|l| l.name()).collect();
    println!("levels: {:?}; not on this CPU (untested here): {missing:?}", have.iter().map(|l| l.name()).collect::<Vec<_>>());
    have
}

/// Runs `f` at each level and asserts its output's bits equal the scalar level's.
fn same_bits_at_every_level<T: Float>(what: &str, f: impl Fn() -> Vec<T>) {
    let _guard = LEVELS.lock().unwrap_or_else(|e| e.into_inner());
    let mut want: Option<Vec<u64>> = None;
    for level in levels() {
        simd::force_level(level).unwrap();
        let got: Vec<u64> = f().iter().map(|x| x.to_f64().to_bits()).collect();
        match &want {
            None => want = Some(got),
            Some(w) => {
                let diff = w.iter().zip(&got).filter(|(a, b)| a != b).count();
                assert!(w.len() == got.len() && diff == 0, "{what}: level {} differs from scalar in {diff} of {} values", level.name(), w.len());
            }
        }
    }
    simd::force_level(simd::detect()).unwrap();
}

fn uniform<T: Float>(rng: &mut StdRng, n: usize, scale: f64) -> Vec<T> {
    (0..n).map(|_| T::from_f64(rng.random_range(-scale..scale))).collect()
}

/// Shapes (n, d_in, d_out): degenerate, odd (not multiples of 16 or of the register tiles), Qwen2 widths.
const MATMUL_SHAPES: [(usize, usize, usize); 8] = [(1, 1, 1), (3, 5, 7), (7, 17, 13), (5, 16, 6), (65, 33, 61), (9, 100, 130), (1, 896, 97), (70, 64, 176)];

fn matmul_case<T: Float>(rng: &mut StdRng) {
    for &(n, d_in, d_out) in &MATMUL_SHAPES {
        let (x, w, b, dout) = (uniform::<T>(rng, n * d_in, 2.0), uniform::<T>(rng, d_out * d_in, 2.0), uniform::<T>(rng, d_out, 1.0), uniform::<T>(rng, n * d_out, 1.0));
        let (dx0, dw0, db0) = (uniform::<T>(rng, n * d_in, 1.0), uniform::<T>(rng, d_out * d_in, 1.0), uniform::<T>(rng, d_out, 1.0));
        same_bits_at_every_level(&format!("matmul_fwd {} {n}x{d_in}->{d_out}", T::NAME), || {
            let mut out = vec![T::from_f64(f64::NAN); n * d_out];
            matmul_fwd(&mut out, &x, &w, Some(&b), n, d_in, d_out);
            out
        });
        same_bits_at_every_level(&format!("matmul_bwd {} {n}x{d_in}->{d_out}", T::NAME), || {
            let (mut dx, mut dw, mut db) = (dx0.clone(), dw0.clone(), db0.clone());
            matmul_bwd(&mut dx, &mut dw, Some(&mut db), &dout, &x, &w, n, d_in, d_out);
            [dx, dw, db].concat()
        });
    }
}

#[test]
fn matmul_is_bitwise_the_same_at_every_level() {
    let mut rng = rng("matmul_is_bitwise_the_same_at_every_level");
    matmul_case::<f32>(&mut rng);
    matmul_case::<f64>(&mut rng);
}

fn elementwise_case<T: Float>(rng: &mut StdRng) {
    for len in [1usize, 15, 16, 17, 100, 4864 + 3] {
        let x = uniform::<T>(rng, len, 30.0);
        let (g, u, d) = (uniform::<T>(rng, len, 12.0), uniform::<T>(rng, len, 3.0), uniform::<T>(rng, len, 1.0));
        same_bits_at_every_level(&format!("dot/sum/max/exp {} len {len}", T::NAME), || {
            let mut e = vec![T::ZERO; len];
            simd::exp(&mut e, &x);
            let mut p = x.clone();
            let s = simd::exp_shifted_sum(&mut p, simd::max(&x));
            [vec![simd::dot(&x, &g), simd::sum(&x), simd::max(&x), s], e, p].concat()
        });
        same_bits_at_every_level(&format!("swiglu {} len {len}", T::NAME), || {
            let (mut out, mut dg, mut du) = (vec![T::ZERO; len], d.clone(), u.clone());
            swiglu_fwd(&mut out, &g, &u);
            swiglu_bwd(&mut dg, &mut du, &d, &g, &u);
            [out, dg, du].concat()
        });
    }
    for (n, c) in [(1usize, 1usize), (3, 33), (5, 896)] {
        let (x, w, dout) = (uniform::<T>(rng, n * c, 4.0), uniform::<T>(rng, c, 1.0), uniform::<T>(rng, n * c, 1.0));
        same_bits_at_every_level(&format!("rmsnorm {} {n}x{c}", T::NAME), || {
            let (mut out, mut rstd, mut dx, mut dw) = (vec![T::ZERO; n * c], vec![T::ZERO; n], vec![T::ZERO; n * c], vec![T::ZERO; c]);
            rmsnorm_fwd(&mut out, &mut rstd, &x, &w, c, 1e-6);
            rmsnorm_bwd(&mut dx, &mut dw, &dout, &x, &w, &rstd, c);
            [out, rstd, dx, dw].concat()
        });
    }
    for (n, v) in [(1usize, 1usize), (4, 26), (3, 1000), (2, 151_936)] {
        let logits = uniform::<T>(rng, n * v, 20.0);
        let targets: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
        let dlogp = uniform::<T>(rng, n, 1.0);
        same_bits_at_every_level(&format!("logprob {} {n}x{v}", T::NAME), || {
            let (mut logp, mut lse, mut dl) = (vec![T::ZERO; n], vec![T::ZERO; n], vec![T::ZERO; n * v]);
            logprob_fwd(&mut logp, &mut lse, &logits, &targets, v, 0.6);
            logprob_bwd(&mut dl, &dlogp, &logits, &lse, &targets, v, 0.6);
            [logp, lse, dl].concat()
        });
    }
    for s in [AttnShape { tq: 5, tk: 5, nh: 3, nkv: 1, hd: 6 }, AttnShape { tq: 33, tk: 40, nh: 4, nkv: 2, hd: 16 }, AttnShape { tq: 3, tk: 70, nh: 2, nkv: 2, hd: 64 }] {
        let (q, k, v, dout) = (uniform::<T>(rng, s.tq * s.nh * s.hd, 2.0), uniform::<T>(rng, s.tk * s.nkv * s.hd, 2.0), uniform::<T>(rng, s.tk * s.nkv * s.hd, 2.0), uniform::<T>(rng, s.tq * s.nh * s.hd, 1.0));
        same_bits_at_every_level(&format!("attention {} {s:?}", T::NAME), || {
            let (mut out, mut probs) = (vec![T::ZERO; q.len()], vec![T::ZERO; s.nh * s.tq * s.tk]);
            attention_fwd(&mut out, &mut probs, &q, &k, &v, s);
            let (mut dq, mut dk, mut dv) = (vec![T::ZERO; q.len()], vec![T::ZERO; k.len()], vec![T::ZERO; v.len()]);
            attention_bwd(&mut dq, &mut dk, &mut dv, &dout, &q, &k, &v, &probs, s);
            [out, probs, dq, dk, dv].concat()
        });
    }
}

#[test]
fn row_kernels_are_bitwise_the_same_at_every_level() {
    let mut rng = rng("row_kernels_are_bitwise_the_same_at_every_level");
    elementwise_case::<f32>(&mut rng);
    elementwise_case::<f64>(&mut rng);
}

/// A training step's numbers (log-probs, the parameter gradient) and a decode's logits, f32, on random
/// GQA configs: the same bits at every level.
#[test]
fn model_is_bitwise_the_same_at_every_level() {
    let mut rng = rng("model_is_bitwise_the_same_at_every_level");
    for _ in 0..3 {
        // widths past one 16-lane chunk, so full chunks, tails and tiles all run
        let mut cfg = random_config(rng.random());
        cfg.hidden_size = rng.random_range(17..=80);
        cfg.intermediate_size = rng.random_range(20..=150);
        cfg.head_dim = 2 * rng.random_range(2..=20);
        cfg.vocab_size = rng.random_range(30..=300);
        cfg.max_position_embeddings = 128;
        let m = Model::from_params(cfg.clone(), random_params(&cfg, rng.random())).cast::<f32>();
        let seqs: Vec<Vec<u32>> = [37usize, 1, 70].iter().map(|&l| (0..l).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect()).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        same_bits_at_every_level("model score + score_backward + decode", || {
            let scored = m.score(&refs, 0.6, true).unwrap();
            let dlogp: Vec<Vec<f32>> = scored.logp.iter().map(|r| r.iter().map(|x| x.sin()).collect()).collect();
            let grads = m.score_backward(&scored, &dlogp);
            let mut cache = drpo::model::KvCache::new(&m.cfg, 1);
            m.forward(&mut cache, &[&seqs[0][..30]], None).unwrap();
            let last = m.forward_last(&mut cache, &[&seqs[0][30..]]).unwrap();
            [scored.logp.concat(), grads, last].concat()
        });
    }
}

/// The canonical dot product written out for f32: 16 lanes, FMA, the last chunk zero-padded, the tree.
fn canonical_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (ca, cb) in a.chunks(16).zip(b.chunks(16)) {
        for (l, a) in acc.iter_mut().enumerate() {
            let (x, y) = (ca.get(l).copied().unwrap_or(0.0), cb.get(l).copied().unwrap_or(0.0));
            *a = x.mul_add(y, *a);
        }
    }
    for half in [8, 4, 2, 1] {
        for l in 0..half {
            acc[l] += acc[l + half];
        }
    }
    acc[0]
}

/// matmul_fwd is the canonical dot + bias per output; matmul_bwd is one FMA chain per output element
/// in ascending order from its starting value (NOTES.md's definitions, bit for bit).
#[test]
fn matmul_follows_the_canonical_order() {
    let mut rng = rng("matmul_follows_the_canonical_order");
    for &(n, d_in, d_out) in &MATMUL_SHAPES {
        let (x, w, b, dout) = (uniform::<f32>(&mut rng, n * d_in, 2.0), uniform::<f32>(&mut rng, d_out * d_in, 2.0), uniform::<f32>(&mut rng, d_out, 1.0), uniform::<f32>(&mut rng, n * d_out, 1.0));
        let mut out = vec![f32::NAN; n * d_out];
        matmul_fwd(&mut out, &x, &w, Some(&b), n, d_in, d_out);
        for r in 0..n {
            for o in 0..d_out {
                let want = canonical_dot_f32(&x[r * d_in..(r + 1) * d_in], &w[o * d_in..(o + 1) * d_in]) + b[o];
                assert_eq!(out[r * d_out + o].to_bits(), want.to_bits(), "fwd {n}x{d_in}->{d_out} at ({r}, {o})");
            }
        }
        let (mut dx, mut dw, mut db) = (uniform::<f32>(&mut rng, n * d_in, 1.0), uniform::<f32>(&mut rng, d_out * d_in, 1.0), uniform::<f32>(&mut rng, d_out, 1.0));
        let (mut want_dx, mut want_dw, mut want_db) = (dx.clone(), dw.clone(), db.clone());
        matmul_bwd(&mut dx, &mut dw, Some(&mut db), &dout, &x, &w, n, d_in, d_out);
        for r in 0..n {
            for o in 0..d_out {
                let g = dout[r * d_out + o];
                for i in 0..d_in {
                    want_dx[r * d_in + i] = g.mul_add(w[o * d_in + i], want_dx[r * d_in + i]);
                    want_dw[o * d_in + i] = g.mul_add(x[r * d_in + i], want_dw[o * d_in + i]);
                }
                want_db[o] += g;
            }
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dx), bits(&want_dx), "dx {n}x{d_in}->{d_out}");
        assert_eq!(bits(&dw), bits(&want_dw), "dw {n}x{d_in}->{d_out}");
        assert_eq!(bits(&db), bits(&want_db), "db {n}x{d_in}->{d_out}");
    }
}

/// f32 matmuls against f64 ones on the same (f32) inputs, within the f32 bounds of STYLE §5.
#[test]
fn f32_matmul_is_within_f32_bounds_of_f64() {
    let mut rng = rng("f32_matmul_is_within_f32_bounds_of_f64");
    for &(n, d_in, d_out) in &[(64usize, 896usize, 130usize), (9, 4864, 33), (70, 64, 176)] {
        let (x, w, dout) = (uniform::<f32>(&mut rng, n * d_in, 1.0), uniform::<f32>(&mut rng, d_out * d_in, 1.0), uniform::<f32>(&mut rng, n * d_out, 1.0));
        let wide = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        let (mut o32, mut o64) = (vec![0f32; n * d_out], vec![0f64; n * d_out]);
        matmul_fwd(&mut o32, &x, &w, None, n, d_in, d_out);
        matmul_fwd(&mut o64, &wide(&x), &wide(&w), None, n, d_in, d_out);
        let (mut dx32, mut dw32, mut dx64, mut dw64) = (vec![0f32; n * d_in], vec![0f32; d_out * d_in], vec![0f64; n * d_in], vec![0f64; d_out * d_in]);
        matmul_bwd(&mut dx32, &mut dw32, None, &dout, &x, &w, n, d_in, d_out);
        matmul_bwd(&mut dx64, &mut dw64, None, &wide(&dout), &wide(&x), &wide(&w), n, d_in, d_out);
        for (name, got, want) in [("out", wide(&o32), o64), ("dx", wide(&dx32), dx64), ("dw", wide(&dw32), dw64)] {
            let rel = drpo::check::rel_l2(&got, &want);
            let rms = (want.iter().map(|v| v * v).sum::<f64>() / want.len() as f64).sqrt();
            let (i, worst, g, wv) = drpo::check::worst(&got, &want, rms);
            println!("{name} {n}x{d_in}->{d_out}: rel_l2 {rel:.2e}, worst {worst:.2e} at #{i} ({g:e} vs {wv:e})");
            // sums of ≤ 4864 f32 products: ~u·sqrt(k/N) per lane chain, rel_l2 far below the 1e-6 bound
            assert!(rel <= 1e-6 && worst <= 1e-5, "{name} {n}x{d_in}->{d_out}: rel_l2 {rel:e}, worst {worst:e}");
        }
    }
}

/// The canonical exp against libm's f64 exp: ≤ 2 ulp for f32 over the whole finite range, ≤ 2 ulp for
/// f64 (libm is itself within 1 ulp); exact at 0; 0 below the range, +inf above, NaN kept.
#[test]
fn canonical_exp_is_accurate() {
    let mut rng = rng("canonical_exp_is_accurate");
    let x32: Vec<f32> = (0..200_000).map(|i| if i % 2 == 0 { rng.random_range(-86.5f32..88.7) } else { rng.random_range(-2.0f32..2.0) }).collect();
    let mut e32 = vec![0f32; x32.len()];
    simd::exp(&mut e32, &x32);
    let ulp32 = |got: f32, x: f32| {
        let want = (x as f64).exp();
        (got as f64 - want).abs() / (f32::EPSILON as f64 * 2f64.powi(want.log2().floor() as i32))
    };
    let worst32 = x32.iter().zip(&e32).map(|(&x, &g)| ulp32(g, x)).fold(0.0, f64::max);
    let x64: Vec<f64> = (0..200_000).map(|i| if i % 2 == 0 { rng.random_range(-707.0..709.7) } else { rng.random_range(-2.0..2.0) }).collect();
    let mut e64 = vec![0f64; x64.len()];
    simd::exp(&mut e64, &x64);
    let worst64 = x64.iter().zip(&e64).map(|(&x, &g)| (g - x.exp()).abs() / (f64::EPSILON * 2f64.powi(x.exp().log2().floor() as i32))).fold(0.0, f64::max);
    println!("canonical exp: worst {worst32:.2} ulp (f32), {worst64:.2} ulp (f64, vs libm)");
    assert!(worst32 <= 2.0 && worst64 <= 2.0, "exp error {worst32} / {worst64} ulp");
    let special = [0.0f32, -0.0, f32::NEG_INFINITY, f32::INFINITY, f32::NAN, -100.0, 100.0, -86.6, 88.8];
    let mut out = [0f32; 9];
    simd::exp(&mut out, &special);
    assert_eq!(&out[..4], &[1.0, 1.0, 0.0, f32::INFINITY]);
    assert!(out[4].is_nan() && out[5] == 0.0 && out[6] == f32::INFINITY && out[7] == 0.0 && out[8] == f32::INFINITY, "{out:?}");
}

/// DRPO_CPU_SIMD names a level; an unknown name is an error naming the variable.
#[test]
fn level_names_round_trip() {
    for l in Level::ALL {
        assert_eq!(Level::ALL.into_iter().find(|m| m.name() == l.name()), Some(l));
    }
    assert!(Level::Scalar.supported());
    let _guard = LEVELS.lock().unwrap_or_else(|e| e.into_inner());
    let unsupported = Level::ALL.into_iter().find(|l| !l.supported());
    if let Some(l) = unsupported {
        assert!(simd::force_level(l).is_err(), "{} forced on a CPU without it", l.name());
    }
}
