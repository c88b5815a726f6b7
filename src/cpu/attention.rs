//! Causal grouped-query attention for one sequence, with an optional cached prefix.
//!
//! The tq query rows sit at positions past..past+tq where past = tk − tq: row i sees keys 0..=past+i.
//! Query head h reads kv head h / (nh / nkv) (HF `repeat_kv`: kv heads repeated contiguously).
//! Scores are scaled by 1/sqrt(hd). For training, [`attention_fwd`] returns the whole [nh, tq, tk]
//! probability matrix for the backward pass; inference ([`attention_fwd_infer`]) keeps one [tk] row
//! per task instead (the GPU kernels never keep it). Both compute each row identically.

use super::{axpy, simd, Float};
use rayon::prelude::*;

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub tq: usize,
    pub tk: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hd: usize,
}

impl AttnShape {
    /// Panics on a shape no attention call can have (more queries than keys, nh not a multiple of nkv).
    fn check(&self) {
        assert!(self.tk >= self.tq && self.nkv > 0 && self.nh.is_multiple_of(self.nkv), "attention: bad shape {self:?}");
    }
    fn past(&self) -> usize {
        self.check();
        self.tk - self.tq
    }
    fn kv_head(&self, h: usize) -> usize {
        h / (self.nh / self.nkv)
    }
}

/// out[i, h, :] = Σ_{j ≤ past+i} p[h, i, j] · v[j, kvh, :],   p[h, i, :] = softmax_j(q[i,h]·k[j,kvh] / sqrt(hd))
/// q, out: [tq, nh, hd]   k, v: [tk, nkv, hd]   probs: [nh, tq, tk] (masked entries 0)
/// Heads run in parallel (rayon); each output and probability is computed by one thread in a fixed
/// order, so the result does not depend on the thread count.
pub fn attention_fwd<T: Float>(out: &mut [T], probs: &mut [T], q: &[T], k: &[T], v: &[T], s: AttnShape) {
    let AttnShape { tq, tk, nh, nkv, hd } = s;
    s.check();
    assert!(out.len() == tq * nh * hd && q.len() == tq * nh * hd && probs.len() == nh * tq * tk);
    assert!(k.len() == tk * nkv * hd && v.len() == tk * nkv * hd, "attention_fwd: bad k/v lengths");
    if tq == 0 {
        return;
    }
    let heads = head_slices(out, nh, hd);
    heads.into_par_iter().zip(probs.par_chunks_mut(tq * tk)).enumerate().for_each(|(h, (mut o, p))| {
        for (i, (oi, pi)) in o.iter_mut().zip(p.chunks_mut(tk)).enumerate() {
            attend_row(oi, pi, q, k, v, s, h, i);
        }
    });
}

/// [`attention_fwd`] without the probabilities (inference): the same arithmetic, row by row, with
/// one [tk] scratch row per task, so the outputs are bitwise those of [`attention_fwd`].
/// q, out: [tq, nh, hd]   k, v: [tk, nkv, hd]
pub fn attention_fwd_infer<T: Float>(out: &mut [T], q: &[T], k: &[T], v: &[T], s: AttnShape) {
    let AttnShape { tq, tk, nh, nkv, hd } = s;
    s.check();
    assert!(out.len() == tq * nh * hd && q.len() == tq * nh * hd, "attention_fwd_infer: bad q/out lengths");
    assert!(k.len() == tk * nkv * hd && v.len() == tk * nkv * hd, "attention_fwd_infer: bad k/v lengths");
    head_slices(out, nh, hd).into_par_iter().enumerate().for_each(|(h, mut rows)| attention_head_infer(&mut rows, q, k, v, s, h));
}

/// Query head h of [`attention_fwd_infer`], serially: `rows[i]` is out[i, h, :]. The model runs the
/// heads of every sequence of a batch as one parallel loop of these.
pub fn attention_head_infer<T: Float>(rows: &mut [&mut [T]], q: &[T], k: &[T], v: &[T], s: AttnShape, h: usize) {
    let AttnShape { tq, tk, nh, nkv, hd } = s;
    s.check();
    assert!(rows.len() == tq && h < nh && rows.iter().all(|r| r.len() == hd), "attention_head_infer: bad rows");
    assert!(q.len() == tq * nh * hd && k.len() == tk * nkv * hd && v.len() == tk * nkv * hd, "attention_head_infer: bad lengths");
    let mut p = vec![T::ZERO; s.tk];
    for (i, oi) in rows.iter_mut().enumerate() {
        attend_row(oi, &mut p, q, k, v, s, h, i);
    }
}

/// Splits out: [t, nh, hd] into per-head lists of row slices: result[h][i] = out[i, h, :].
pub fn head_slices<T>(out: &mut [T], nh: usize, hd: usize) -> Vec<Vec<&mut [T]>> {
    let t = out.len().checked_div(nh * hd).unwrap_or(0);
    let mut heads: Vec<Vec<&mut [T]>> = (0..nh).map(|_| Vec::with_capacity(t)).collect();
    if hd == 0 {
        return heads;
    }
    for row in out.chunks_mut(nh * hd) {
        for (h, piece) in row.chunks_mut(hd).enumerate() {
            heads[h].push(piece);
        }
    }
    heads
}

/// One query row i of head h: p[..visible] = softmax of the scaled scores (the rest of p zeroed),
/// o = Σ_j p_j v_j.   o: [hd]   p: [tk]
#[allow(clippy::too_many_arguments)]
#[inline]
fn attend_row<T: Float>(o: &mut [T], p: &mut [T], q: &[T], k: &[T], v: &[T], s: AttnShape, h: usize, i: usize) {
    let AttnShape { tk, nh, nkv, hd, .. } = s;
    let kvh = s.kv_head(h);
    let scale = T::from_f64(1.0 / (hd as f64).sqrt());
    let qi = &q[(i * nh + h) * hd..(i * nh + h + 1) * hd];
    let visible = s.past() + i + 1;
    debug_assert!(visible <= tk && p.len() == tk);
    // scores: canonical dots of q_i with the visible keys of kv head kvh (rows of stride nkv·hd)
    simd::dots(&mut p[..visible], qi, &k[kvh * hd..], nkv * hd);
    for pj in &mut p[..visible] {
        *pj *= scale;
    }
    // softmax with the canonical max, exp and sum (simd's module doc), then one division per entry
    let m = simd::max(&p[..visible]);
    let sum = simd::exp_shifted_sum(&mut p[..visible], m);
    for pj in &mut p[..visible] {
        *pj /= sum;
    }
    p[visible..].fill(T::ZERO);
    // o = Σ_j p_j v_j: one FMA chain per element in ascending j (= an axpy per j), as one rank update
    o.fill(T::ZERO);
    simd::rank_update(&mut [o], &p[..visible], 0, 1, &v[kvh * hd..], nkv * hd, visible);
}

/// Backward of [`attention_fwd`]; dq, dk, dv accumulate (`+=`).
/// dv_j += Σ_i p_ij dout_i;  dp_ij = dout_i·v_j;  ds_ij = p_ij (dp_ij − Σ_l p_il dp_il);
/// dq_i += Σ_j ds_ij k_j / sqrt(hd);  dk_j += Σ_i ds_ij q_i / sqrt(hd)
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<T: Float>(
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    dout: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    probs: &[T],
    s: AttnShape,
) {
    let AttnShape { tq, tk, nh, nkv, hd } = s;
    let past = s.past();
    assert!(dq.len() == tq * nh * hd && dk.len() == tk * nkv * hd && dv.len() == tk * nkv * hd);
    assert!(dout.len() == tq * nh * hd && probs.len() == nh * tq * tk, "attention_bwd: bad lengths");
    let scale = T::from_f64(1.0 / (hd as f64).sqrt());
    let (mut dp, mut ds) = (vec![T::ZERO; tk], vec![T::ZERO; tk]);
    for h in 0..nh {
        let kvh = s.kv_head(h);
        for i in 0..tq {
            let visible = past + i + 1;
            let p = &probs[(h * tq + i) * tk..(h * tq + i + 1) * tk];
            let doi = &dout[(i * nh + h) * hd..(i * nh + h + 1) * hd];
            simd::dots(&mut dp[..visible], doi, &v[kvh * hd..], nkv * hd);
            let mut pdp = T::ZERO;
            for j in 0..visible {
                pdp += p[j] * dp[j];
                axpy(&mut dv[(j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd], p[j], doi);
            }
            for j in 0..visible {
                ds[j] = p[j] * (dp[j] - pdp) * scale;
            }
            // dq_i += Σ_j ds_j k_j (one FMA chain per element, ascending j); dk_j += ds_j q_i
            let qi = (i * nh + h) * hd..(i * nh + h + 1) * hd;
            simd::rank_update(&mut [&mut dq[qi.clone()]], &ds[..visible], 0, 1, &k[kvh * hd..], nkv * hd, visible);
            for j in 0..visible {
                axpy(&mut dk[(j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd], ds[j], &q[qi.clone()]);
            }
        }
    }
}
