//! Causal grouped-query attention for one sequence, with an optional cached prefix.
//!
//! The tq query rows sit at positions past..past+tq where past = tk − tq: row i sees keys 0..=past+i.
//! Query head h reads kv head h / (nh / nkv) (HF `repeat_kv`: kv heads repeated contiguously).
//! Scores are scaled by 1/sqrt(hd). For training, [`attention_fwd`] returns the whole [nh, tq, tk]
//! probability matrix for the backward pass; inference ([`attention_fwd_infer`]) keeps
//! [`RANGE_BLOCK`] rows of [tk] per task instead (the GPU kernels never keep it). Both run the same
//! kernel (`simd::attention_head_fwd`), so each output has the same bits.
//!
//! The arithmetic (NOTES.md, CPU SIMD): scores are canonical dots, computed N keys at a time from
//! the keys transposed to [hd, tk] (`simd::dots_t`: the same bits as one dot per key, without a
//! horizontal tree per key), except for one or a few query rows (decoding), where transposing would
//! cost more than it saves; p·V, dq, dk and dv are FMA chains in ascending order of the summed index,
//! run as blocked rank updates over the causal ranges (`simd::rank_update_ranges`).

use super::simd::{self, HeadDims, Keys, RANGE_BLOCK};
use super::{math, Float};
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
    let (kt, ldt) = transposed_heads(k, tk, nkv, hd);
    let d = HeadDims { tq, tk, hd, ldq: nh * hd, ldk: nkv * hd, ldt };
    let heads = head_slices(out, nh, hd);
    heads.into_par_iter().zip(probs.par_chunks_mut(tq * tk)).enumerate().for_each(|(h, (mut o, p))| {
        let kvh = s.kv_head(h);
        simd::attention_head_fwd(&mut o, p, &q[h * hd..], Keys::Transposed(&kt[kvh * hd * ldt..]), &v[kvh * hd..], d, scale::<T>(hd));
    });
}

/// [`attention_fwd`] without the probabilities (inference): the same arithmetic, with
/// [`RANGE_BLOCK`] × tk of scratch per task, so the outputs are bitwise those of [`attention_fwd`].
/// q, out: [tq, nh, hd]   k, v: [tk, nkv, hd]
pub fn attention_fwd_infer<T: Float>(out: &mut [T], q: &[T], k: &[T], v: &[T], s: AttnShape) {
    let AttnShape { tq, tk, nh, nkv, hd } = s;
    s.check();
    assert!(out.len() == tq * nh * hd && q.len() == tq * nh * hd, "attention_fwd_infer: bad q/out lengths");
    assert!(k.len() == tk * nkv * hd && v.len() == tk * nkv * hd, "attention_fwd_infer: bad k/v lengths");
    head_slices(out, nh, hd).into_par_iter().enumerate().for_each(|(h, mut rows)| attention_head_infer(&mut rows, q, k, v, s, h));
}

/// Query rows from which a head transposes its keys for the scores (below, one dot per key).
const TRANSPOSE_MIN_ROWS: usize = 4;

/// Query head h of [`attention_fwd_infer`], serially: `rows[i]` is out[i, h, :]. The model runs the
/// heads of every sequence of a batch as one parallel loop of these. Rows go in blocks of
/// [`RANGE_BLOCK`], each block a smaller causal problem (its own rows, the keys its last row sees).
pub fn attention_head_infer<T: Float>(rows: &mut [&mut [T]], q: &[T], k: &[T], v: &[T], s: AttnShape, h: usize) {
    let AttnShape { tq, tk, nh, nkv, hd } = s;
    let past = s.past();
    assert!(rows.len() == tq && h < nh && rows.iter().all(|r| r.len() == hd), "attention_head_infer: bad rows");
    assert!(q.len() == tq * nh * hd && k.len() == tk * nkv * hd && v.len() == tk * nkv * hd, "attention_head_infer: bad lengths");
    let kvh = s.kv_head(h);
    // one kv head's keys transposed: [hd, ldt]
    let kt = (tq >= TRANSPOSE_MIN_ROWS).then(|| transposed(&k[kvh * hd..], tk, nkv * hd, hd));
    let mut p = vec![T::ZERO; RANGE_BLOCK.min(tq) * tk];
    for (b, block) in rows.chunks_mut(RANGE_BLOCK).enumerate() {
        let i0 = b * RANGE_BLOCK;
        let (bq, bk) = (block.len(), past + i0 + block.len());
        let (keys, ldt) = match &kt {
            Some((kt, ldt)) => (Keys::Transposed(&kt[..]), *ldt),
            None => (Keys::Rows(&k[kvh * hd..]), 0),
        };
        let d = HeadDims { tq: bq, tk: bk, hd, ldq: nh * hd, ldk: nkv * hd, ldt };
        simd::attention_head_fwd(block, &mut p[..bq * bk], &q[i0 * nh * hd + h * hd..], keys, &v[kvh * hd..], d, scale::<T>(hd));
    }
}

/// 1/sqrt(hd), rounded once to T.
fn scale<T: Float>(hd: usize) -> T {
    T::from_f64(1.0 / (hd as f64).sqrt())
}

/// The [t] rows of one head (every `ld` elements, hd each) transposed to [hd, ldt], ldt = t rounded
/// up to a whole vector, the padding zero (what `simd::dots_t` reads).
fn transposed<T: Float>(x: &[T], t: usize, ld: usize, hd: usize) -> (Vec<T>, usize) {
    let ldt = t.next_multiple_of(simd::lanes::<T>());
    let mut xt = vec![T::ZERO; hd * ldt];
    for j in 0..t {
        for (d, &xv) in x[j * ld..j * ld + hd].iter().enumerate() {
            xt[d * ldt + j] = xv;
        }
    }
    (xt, ldt)
}

/// Every head of x: [t, heads, hd] transposed, one after the other: [heads, hd, ldt].
fn transposed_heads<T: Float>(x: &[T], t: usize, heads: usize, hd: usize) -> (Vec<T>, usize) {
    let parts: Vec<(Vec<T>, usize)> = (0..heads).map(|g| transposed(&x[g * hd..], t, heads * hd, hd)).collect();
    let ldt = parts.first().map_or(0, |p| p.1);
    (parts.into_iter().flat_map(|p| p.0).collect(), ldt)
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

/// Backward of [`attention_fwd`]; dq, dk, dv accumulate (`+=`).
/// dv_j += Σ_i p_ij dout_i;  dp_ij = dout_i·v_j;  ds_ij = p_ij (dp_ij − Σ_l p_il dp_il);
/// dq_i += Σ_j ds_ij k_j / sqrt(hd);  dk_j += Σ_i ds_ij q_i / sqrt(hd)
/// Each output element is one FMA chain over the query heads in ascending order, and inside a head
/// over the keys (dq) or the query rows (dk, dv) in ascending order. The kv heads run in parallel
/// (each owns its rows of dk, dv and its query heads' rows of dq), so the result does not depend on
/// the thread count.
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
    s.check();
    assert!(dq.len() == tq * nh * hd && dk.len() == tk * nkv * hd && dv.len() == tk * nkv * hd);
    assert!(dout.len() == tq * nh * hd && q.len() == tq * nh * hd && k.len() == tk * nkv * hd && v.len() == tk * nkv * hd);
    assert!(probs.len() == nh * tq * tk, "attention_bwd: bad lengths");
    if tq == 0 {
        return;
    }
    let group = nh / nkv;
    let mut dq_heads = head_slices(dq, nh, hd).into_iter();
    let tasks: Vec<_> = head_slices(dk, nkv, hd).into_iter().zip(head_slices(dv, nkv, hd)).map(|(dk_g, dv_g)| (dk_g, dv_g, dq_heads.by_ref().take(group).collect::<Vec<_>>())).collect();
    tasks.into_par_iter().enumerate().for_each(|(kvh, (mut dk_g, mut dv_g, mut dq_g))| {
        let (vt, ldt) = transposed(&v[kvh * hd..], tk, nkv * hd, hd);
        let d = HeadDims { tq, tk, hd, ldq: nh * hd, ldk: nkv * hd, ldt };
        simd::attention_group_bwd(&mut dq_g, &mut dk_g, &mut dv_g, kvh * group..(kvh + 1) * group, dout, q, &k[kvh * hd..], &vt, probs, d, scale::<T>(hd));
    });
}

/// lse[i, h] = log Σ_{j ≤ past+i} exp(q[i,h]·k[j,kvh] / sqrt(hd)): the log-sum-exp of each row's scaled
/// scores, which a training forward saves so that its backward can recompute p[h, i, j] =
/// exp(score − lse[i, h]) instead of keeping [`attention_fwd`]'s probabilities (the GPU's
/// `attention_fwd` writes it; the CPU model keeps the probabilities and has no use for it).
/// q: [tq, nh, hd]   k: [tk, nkv, hd]   lse: [tq, nh]
/// Plain loops in f64 whatever T (max-shifted), rounded once: the reference for the device's value.
pub fn attention_lse<T: Float>(lse: &mut [T], q: &[T], k: &[T], s: AttnShape) {
    let AttnShape { tq, tk, nh, nkv, hd } = s;
    let past = s.past();
    assert!(lse.len() == tq * nh && q.len() == tq * nh * hd && k.len() == tk * nkv * hd, "attention_lse: bad lengths");
    let scale = 1.0 / (hd as f64).sqrt();
    for i in 0..tq {
        for h in 0..nh {
            let qi = &q[(i * nh + h) * hd..][..hd];
            let kvh = s.kv_head(h);
            let dot = |j: usize| qi.iter().zip(&k[(j * nkv + kvh) * hd..][..hd]).map(|(x, y)| x.to_f64() * y.to_f64()).sum::<f64>();
            let scores: Vec<f64> = (0..=past + i).map(|j| dot(j) * scale).collect();
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            lse[i * nh + h] = T::from_f64(m + math::ln(scores.iter().map(|&x| math::exp(x - m)).sum::<f64>()));
        }
    }
}
