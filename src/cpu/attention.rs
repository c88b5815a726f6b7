//! Causal grouped-query attention for one sequence, with an optional cached prefix.
//!
//! The tq query rows sit at positions past..past+tq where past = tk − tq: row i sees keys 0..=past+i.
//! Query head h reads kv head h / (nh / nkv) (HF `repeat_kv`: kv heads repeated contiguously).
//! Scores are scaled by 1/sqrt(hd). The probabilities are returned for the backward pass; the
//! reference keeps the whole [nh, tq, tk] matrix (the GPU kernel never does).

use super::{axpy, dot, Float};

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
    fn past(&self) -> usize {
        assert!(self.tk >= self.tq && self.nh % self.nkv == 0, "attention: bad shape {self:?}");
        self.tk - self.tq
    }
    fn kv_head(&self, h: usize) -> usize {
        h / (self.nh / self.nkv)
    }
}

/// out[i, h, :] = Σ_{j ≤ past+i} p[h, i, j] · v[j, kvh, :],   p[h, i, :] = softmax_j(q[i,h]·k[j,kvh] / sqrt(hd))
/// q, out: [tq, nh, hd]   k, v: [tk, nkv, hd]   probs: [nh, tq, tk] (masked entries 0)
pub fn attention_fwd<T: Float>(out: &mut [T], probs: &mut [T], q: &[T], k: &[T], v: &[T], s: AttnShape) {
    let AttnShape { tq, tk, nh, nkv, hd } = s;
    let past = s.past();
    assert!(out.len() == tq * nh * hd && q.len() == tq * nh * hd && probs.len() == nh * tq * tk);
    assert!(k.len() == tk * nkv * hd && v.len() == tk * nkv * hd, "attention_fwd: bad k/v lengths");
    let scale = T::from_f64(1.0 / (hd as f64).sqrt());
    for h in 0..nh {
        let kvh = s.kv_head(h);
        for i in 0..tq {
            let qi = &q[(i * nh + h) * hd..(i * nh + h + 1) * hd];
            let p = &mut probs[(h * tq + i) * tk..(h * tq + i + 1) * tk];
            let visible = past + i + 1;
            let mut m = T::NEG_INFINITY;
            for j in 0..visible {
                p[j] = dot(qi, &k[(j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd]) * scale;
                m = m.max(p[j]);
            }
            let mut sum = T::ZERO;
            for pj in &mut p[..visible] {
                *pj = (*pj - m).exp();
                sum += *pj;
            }
            for pj in &mut p[..visible] {
                *pj /= sum;
            }
            p[visible..].fill(T::ZERO);
            let o = &mut out[(i * nh + h) * hd..(i * nh + h + 1) * hd];
            o.fill(T::ZERO);
            for j in 0..visible {
                axpy(o, p[j], &v[(j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd]);
            }
        }
    }
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
    let mut dp = vec![T::ZERO; tk];
    for h in 0..nh {
        let kvh = s.kv_head(h);
        for i in 0..tq {
            let visible = past + i + 1;
            let p = &probs[(h * tq + i) * tk..(h * tq + i + 1) * tk];
            let doi = &dout[(i * nh + h) * hd..(i * nh + h + 1) * hd];
            let mut pdp = T::ZERO;
            for j in 0..visible {
                let kv = (j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd;
                dp[j] = dot(doi, &v[kv.clone()]);
                pdp += p[j] * dp[j];
                axpy(&mut dv[kv], p[j], doi);
            }
            let qi = (i * nh + h) * hd..(i * nh + h + 1) * hd;
            for j in 0..visible {
                let ds = p[j] * (dp[j] - pdp) * scale;
                let kv = (j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd;
                axpy(&mut dq[qi.clone()], ds, &k[kv.clone()]);
                axpy(&mut dk[kv], ds, &q[qi.clone()]);
            }
        }
    }
}
