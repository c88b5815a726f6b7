//! GPU KV append + causal GQA attention (prefill over packed sequences with cached prefixes, and
//! decode) against cpu::attention::attention_fwd per sequence, in f64 on the exact stored values.
//! Cache positions that no sequence owns are NaN: a kernel reading them would fail the test.
//! The training pair (forward over packed sequences saving the log-sum-exp, backward into dq, dk, dv)
//! against cpu::attention::{attention_fwd, attention_lse, attention_bwd} per sequence, likewise.

mod gpu_common;
use drpo::cpu::attention::{attention_bwd, attention_fwd, attention_lse, AttnShape};
use drpo::gpu::attention::{attention_decode, attention_decode_v2, attention_prefill, kv_append, Heads, PackedSeqs, SeqTable};
use drpo::gpu::{bf16, Gpu, GpuFloat};
use gpu_common::*;

/// bf16 attention on the tensor cores (prefill, training forward, backward): P (and dS) enter their
/// second product rounded to bf16, then the result is rounded once — three roundings of ≤ 2^-8
/// relative each (bf16 keeps 8 significant bits), the first averaged over many keys, so the error is
/// noise-like with an unbounded tail rather than one bounded rounding: the final rounding alone gives
/// σ ≈ 2^-8/√3 ≈ 2.3e-3 of rms(want), measured ≤ 2.3e-3 on the simulator (NOTES.md numerics log).
/// A bf16 chain bound (STYLE §5): rel_l2 6e-3 (≈ 2.6× measured; a GPU adds mma truncation and expf
/// ulps, each far below 2^-8), every element within 5× of it.
const BF16_TC: Bound = chain(6e-3);

/// One batch: `(past, tq)` per sequence; slot s = entry s reversed, so slots ≠ entry order.
fn run<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng, seqs: &[(usize, usize)], heads: Heads, decode: bool) -> drpo::Result<()> {
    let Heads { nh, nkv, hd } = heads;
    let (qd, kvd) = (nh * hd, nkv * hd);
    let n_seqs = seqs.len();
    let cap = seqs.iter().map(|&(p, t)| p + t).max().unwrap() + 3;
    let slot_of = |s: usize| n_seqs - 1 - s;
    // every sequence's full keys/values (cached prefix + new rows)
    let full_k: Vec<Vec<T>> = seqs.iter().map(|&(p, t)| uniform::<T>(rng, (p + t) * kvd, 2.0)).collect();
    let full_v: Vec<Vec<T>> = seqs.iter().map(|&(p, t)| uniform::<T>(rng, (p + t) * kvd, 2.0)).collect();
    let mut k_cache = nan::<T>(n_seqs * cap * kvd);
    let mut v_cache = nan::<T>(n_seqs * cap * kvd);
    let (mut k_new, mut v_new, mut q) = (Vec::new(), Vec::new(), Vec::new());
    for (s, &(p, t)) in seqs.iter().enumerate() {
        let base = slot_of(s) * cap * kvd;
        k_cache[base..base + p * kvd].copy_from_slice(&full_k[s][..p * kvd]);
        v_cache[base..base + p * kvd].copy_from_slice(&full_v[s][..p * kvd]);
        k_new.extend_from_slice(&full_k[s][p * kvd..]);
        v_new.extend_from_slice(&full_v[s][p * kvd..]);
        q.extend(uniform::<T>(rng, t * qd, 2.0));
    }
    let n_rows: usize = seqs.iter().map(|s| s.1).sum();
    let mut want = Vec::with_capacity(n_rows * qd);
    let mut row = 0;
    for (s, &(p, t)) in seqs.iter().enumerate() {
        let shape = AttnShape { tq: t, tk: p + t, nh, nkv, hd };
        let mut out = vec![0.0; t * qd];
        let mut probs = vec![0.0; nh * t * (p + t)];
        attention_fwd(&mut out, &mut probs, &widen(&q[row * qd..(row + t) * qd]), &widen(&full_k[s]), &widen(&full_v[s]), shape);
        want.extend(out);
        row += t;
    }

    let entries: Vec<(usize, usize, usize)> = seqs.iter().enumerate().map(|(s, &(p, t))| (slot_of(s), p, t)).collect();
    let table = SeqTable::new(gpu, &entries, n_seqs, cap)?;
    let (mut kc, mut vc) = (gpu.htod(&k_cache)?, gpu.htod(&v_cache)?);
    let (kn, vn, qd_) = (gpu.htod(&k_new)?, gpu.htod(&v_new)?, gpu.htod(&q)?);
    kv_append(gpu, &mut kc.as_view_mut(), &mut vc.as_view_mut(), &kn.as_view(), &vn.as_view(), &table, kvd)?;
    let mut out = gpu.htod(&nan::<T>(n_rows * qd))?;
    if decode {
        // v2, kept as the bench baseline, held to the same reference and bound as v3 (below)
        let mut out_v2 = gpu.htod(&nan::<T>(n_rows * qd))?;
        attention_decode_v2(gpu, &mut out_v2.as_view_mut(), &qd_.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)?;
        let what = format!("attention decode v2 {} seqs={seqs:?} {heads:?}", T::NAME);
        assert_close(&what, &widen(&gpu.dtoh(&out_v2)?), &want, if T::NAME == "f32" { chain(1e-5) } else { BF16_CHAIN });
        attention_decode(gpu, &mut out.as_view_mut(), &qd_.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)?;
    } else {
        attention_prefill(gpu, &mut out.as_view_mut(), &qd_.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)?;
    }
    let what = format!("attention {} {} seqs={seqs:?} {heads:?}", if decode { "decode" } else { "prefill" }, T::NAME);
    // Bound derived, not yet measured on a GPU. The chain: scores as f32 FMA dots over hd ≤ 128, expf
    // (≤ 2 ulp), the online-softmax rescalings, ≤ 600 f32 FMA accumulations of p·v, one division.
    // Relative to the output's scale that is ~u·sqrt(keys) ≈ 1.5e-6 (an f32 emulation of both kernels
    // on these inputs: rel_l2 ≤ 6.9e-7, worst 2.3e-6 at floor rms(want)), and v's signs cancel, so the
    // floor is rms(want). f32: the 1e-5 and 5σ of it.
    // bf16 prefill: tensor cores, BF16_TC; bf16 decode (CUDA cores) rounds once at the end (emulated
    // 1.7e-3, 2.7e-3): BF16_CHAIN. The decode's split merge (flash-decoding) adds per split one exp and
    // two f32 multiply-adds of the split's sums, f32 chains far below the final rounding.
    let bound = match (T::NAME, decode) {
        ("f32", _) => chain(1e-5),
        (_, false) => BF16_TC,
        (_, true) => BF16_CHAIN,
    };
    assert_close(&what, &widen(&gpu.dtoh(&out)?), &want, bound);

    // the append wrote exactly the new rows at their slots (a copy: bit-exact), keys and values, and nothing else
    let (got_k, got_v) = (gpu.dtoh(&kc)?, gpu.dtoh(&vc)?);
    let bits = |x: &[T]| x.iter().map(|v| v.to_f32().to_bits()).collect::<Vec<u32>>();
    for (s, &(p, t)) in seqs.iter().enumerate() {
        let base = slot_of(s) * cap * kvd;
        for (name, got, full) in [("k", &got_k, &full_k[s]), ("v", &got_v, &full_v[s])] {
            assert_eq!(bits(&got[base..base + (p + t) * kvd]), bits(full), "{what}: {name} cache of sequence {s}");
            assert!(widen(&got[base + (p + t) * kvd..base + cap * kvd]).iter().all(|x| x.is_nan()), "{what}: {name} written past sequence {s}");
        }
    }
    Ok(())
}

fn check<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    let tiny = Heads { nh: 4, nkv: 2, hd: 16 };
    let qwen05 = Heads { nh: 14, nkv: 2, hd: 64 };
    let wide = Heads { nh: 4, nkv: 4, hd: 128 };
    let mqa = Heads { nh: 6, nkv: 1, hd: 34 };
    // a group larger than a decode block's 8 heads (chunks of 8, 8, 2), and one of exactly 8
    let big_group = Heads { nh: 18, nkv: 1, hd: 32 };
    let group8 = Heads { nh: 16, nkv: 2, hd: 64 };
    let qwen15 = Heads { nh: 12, nkv: 2, hd: 128 };
    // prefill: fresh, odd lengths across tile edges (16 rows, 32 keys), continuations of a cache
    run::<T>(gpu, rng, &[(0, 1)], tiny, false)?;
    run::<T>(gpu, rng, &[(0, 17), (0, 1), (5, 33), (40, 3), (0, 64)], tiny, false)?;
    run::<T>(gpu, rng, &[(0, 100), (31, 2)], qwen05, false)?;
    run::<T>(gpu, rng, &[(0, 45), (7, 16)], wide, false)?;
    run::<T>(gpu, rng, &[(0, 19), (3, 5)], mqa, false)?;
    // decode: one row each, caches of 0, 31, 32, 33 keys (a warp's tile), across the 256-key splits
    // (255, 256, 257 keys and several splits) in one batch with short ones
    run::<T>(gpu, rng, &[(0, 1), (31, 1), (32, 1), (33, 1), (300, 1)], tiny, true)?;
    run::<T>(gpu, rng, &[(257, 1), (1, 1), (254, 1), (255, 1)], qwen05, true)?;
    run::<T>(gpu, rng, &[(600, 1)], wide, true)?;
    run::<T>(gpu, rng, &[(70, 1), (0, 1)], mqa, true)?;
    run::<T>(gpu, rng, &[(530, 1), (5, 1)], big_group, true)?;
    run::<T>(gpu, rng, &[(40, 1), (1000, 1)], group8, true)?;
    if full_size(gpu) {
        // Qwen2-1.5B's heads over a long cache (9 splits)
        run::<T>(gpu, rng, &[(2200, 1), (17, 1)], qwen15, true)?;
    }
    Ok(())
}

/// A sequence's decode output depends on its own length only: the same bits alone as in a batch whose
/// other sequences need more splits (the grid and the workspace's layout change, its arithmetic must not).
fn decode_alone_equals_batched<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    let heads = Heads { nh: 14, nkv: 2, hd: 64 };
    let (qd, kvd) = (heads.nh * heads.hd, heads.nkv * heads.hd);
    let past = [300usize, 3, 1100, 255];
    let cap = 1101 + 2;
    let kc = gpu.htod(&uniform::<T>(rng, past.len() * cap * kvd, 2.0))?;
    let vc = gpu.htod(&uniform::<T>(rng, past.len() * cap * kvd, 2.0))?;
    let q = uniform::<T>(rng, past.len() * qd, 2.0);
    let decode = |entries: &[(usize, usize, usize)], q: &[T]| -> drpo::Result<Vec<u32>> {
        let table = SeqTable::new(gpu, entries, past.len(), cap)?;
        let qd_ = gpu.htod(q)?;
        let mut out = gpu.htod(&nan::<T>(entries.len() * qd))?;
        attention_decode(gpu, &mut out.as_view_mut(), &qd_.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)?;
        Ok(gpu.dtoh(&out)?.iter().map(|v| v.to_f32().to_bits()).collect())
    };
    // the keys are already in the cache: sequence s in slot s holds past[s] + 1 keys
    let entries: Vec<(usize, usize, usize)> = past.iter().enumerate().map(|(s, &p)| (s, p, 1)).collect();
    let batched = decode(&entries, &q)?;
    for (s, &e) in entries.iter().enumerate() {
        let alone = decode(&[e], &q[s * qd..(s + 1) * qd])?;
        assert_eq!(alone, batched[s * qd..(s + 1) * qd], "{}: sequence {s} ({} keys) alone vs in the batch", T::NAME, past[s] + 1);
    }
    Ok(())
}

#[test]
fn decode_bits_do_not_depend_on_the_batch() -> drpo::Result<()> {
    let mut rng = rng("attention_decode_batch");
    for gpu in devices("attention_decode_batch") {
        decode_alone_equals_batched::<f32>(&gpu, &mut rng)?;
        decode_alone_equals_batched::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}

#[test]
fn attention_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("attention");
    for gpu in devices("attention") {
        check::<f32>(&gpu, &mut rng)?;
        check::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}

#[test]
fn seq_table_rejects_out_of_bounds_batches() {
    for gpu in devices("seq_table") {
        assert!(SeqTable::new(&gpu, &[(0, 10, 5)], 1, 14).is_err(), "past + tq > cap");
        assert!(SeqTable::new(&gpu, &[(1, 0, 5)], 1, 14).is_err(), "slot ≥ slots");
        assert!(SeqTable::new(&gpu, &[(0, 0, 0)], 1, 14).is_err(), "no keys at all");
        assert!(SeqTable::new(&gpu, &[(0, 9, 5)], 1, 14).is_ok());
    }
}

#[test]
fn attention_refuses_more_sequences_than_a_grid_holds() -> drpo::Result<()> {
    // sequences go on grid.z (prefill and decode), ≤ 65,535: an input error naming the op
    for gpu in devices("attention_grid_limit") {
        let heads = Heads { nh: 4, nkv: 2, hd: 16 };
        let n_seqs = 65_536;
        let entries: Vec<(usize, usize, usize)> = (0..n_seqs).map(|s| (s, 0, 1)).collect();
        let table = SeqTable::new(&gpu, &entries, n_seqs, 1)?;
        let (qd, kvd) = (heads.nh * heads.hd, heads.nkv * heads.hd);
        let kc = gpu.alloc_zeros::<bf16>(n_seqs * kvd)?;
        let vc = gpu.alloc_zeros::<bf16>(n_seqs * kvd)?;
        let q = gpu.alloc_zeros::<bf16>(n_seqs * qd)?;
        let mut out = gpu.alloc_zeros::<bf16>(n_seqs * qd)?;
        for (op, e) in [
            ("attention_decode", attention_decode(&gpu, &mut out.as_view_mut(), &q.as_view(), &kc.as_view(), &vc.as_view(), &table, heads).unwrap_err()),
            ("attention_prefill", attention_prefill(&gpu, &mut out.as_view_mut(), &q.as_view(), &kc.as_view(), &vc.as_view(), &table, heads).unwrap_err()),
        ] {
            println!("{e}");
            assert!(matches!(e, drpo::Error::Input { .. }) && e.to_string().contains(op) && e.to_string().contains("65535"), "{e}");
        }
    }
    Ok(())
}

/// The CPU reference of one packed training batch, per sequence in f64 on the stored values:
/// (out, lse, dq, dk, dv), the gradients accumulated onto `d0 = (dq0, dk0, dv0)` as the kernels do.
/// With `stored_out` (the output the device's backward reads, rounded to its T), dq and dk are moved by
/// what reading it instead of the exact output changes (FlashAttention-2's D_i = dO_i·out_i): ds_ij
/// loses p_ij·δD_i, δD_i = dO_i·(stored_out_i − out_i), so dq_i −= scale Σ_j p_ij δD_i k_j and
/// dk_j −= scale Σ_i p_ij δD_i q_i (dv does not use D).
fn train_reference(lengths: &[usize], heads: Heads, x: [&[f64]; 4], d0: [&[f64]; 3], stored_out: Option<&[f64]>) -> [Vec<f64>; 5] {
    let Heads { nh, nkv, hd } = heads;
    let (qd, kvd, group) = (nh * hd, nkv * hd, nh / nkv);
    let scale = 1.0 / (hd as f64).sqrt();
    let [q, k, v, dout] = x;
    let (mut out, mut lse) = (Vec::new(), Vec::new());
    let (mut dq, mut dk, mut dv) = (d0[0].to_vec(), d0[1].to_vec(), d0[2].to_vec());
    let mut r0 = 0;
    for &t in lengths {
        let shape = AttnShape { tq: t, tk: t, nh, nkv, hd };
        let (qs, ks) = (r0 * qd..(r0 + t) * qd, r0 * kvd..(r0 + t) * kvd);
        let (mut o, mut p, mut l) = (vec![0.0; t * qd], vec![0.0; nh * t * t], vec![0.0; t * nh]);
        attention_fwd(&mut o, &mut p, &q[qs.clone()], &k[ks.clone()], &v[ks.clone()], shape);
        attention_lse(&mut l, &q[qs.clone()], &k[ks.clone()], shape);
        attention_bwd(&mut dq[qs.clone()], &mut dk[ks.clone()], &mut dv[ks.clone()], &dout[qs.clone()], &q[qs.clone()], &k[ks.clone()], &v[ks.clone()], &p, shape);
        if let Some(stored) = stored_out {
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
            for h in 0..nh {
                let g = h / group;
                for i in 0..t {
                    let at = qs.start + i * qd + h * hd;
                    let d_delta = dot(&dout[at..at + hd], &stored[at..at + hd]) - dot(&dout[at..at + hd], &o[i * qd + h * hd..][..hd]);
                    for j in 0..=i {
                        let c = scale * p[(h * t + i) * t + j] * d_delta;
                        let kj = ks.start + j * kvd + g * hd;
                        for d in 0..hd {
                            dq[at + d] -= c * k[kj + d];
                            dk[kj + d] -= c * q[at + d];
                        }
                    }
                }
            }
        }
        out.extend(o);
        lse.extend(l);
        r0 += t;
    }
    [out, lse, dq, dk, dv]
}

/// What one training forward + backward on the device returns.
struct TrainResult<T> {
    out: Vec<T>,
    lse: Vec<f32>,
    dq: Vec<T>,
    dk: Vec<T>,
    dv: Vec<T>,
}

/// The training forward (out, lse NaN-poisoned) and the backward fed the forward's own out and lse,
/// as training does; `x = (q, k, v, dout)`, `d0` the gradients' starting values.
fn train_on_device<T: GpuFloat>(gpu: &Gpu, seqs: &PackedSeqs, heads: Heads, x: [&[T]; 4], d0: [&[T]; 3]) -> drpo::Result<TrainResult<T>> {
    let (n, nh) = (seqs.n_rows, heads.nh);
    let [q, k, v, dout] = x.map(|a| gpu.htod(a));
    let (q, k, v, dout) = (q?, k?, v?, dout?);
    let (mut out, mut lse) = (gpu.htod(&nan::<T>(n * nh * heads.hd))?, gpu.htod(&vec![f32::NAN; n * nh])?);
    drpo::gpu::attention::attention_fwd(gpu, &mut out.as_view_mut(), &mut lse.as_view_mut(), &q.as_view(), &k.as_view(), &v.as_view(), seqs, heads)?;
    let (mut dq, mut dk, mut dv) = (gpu.htod(d0[0])?, gpu.htod(d0[1])?, gpu.htod(d0[2])?);
    let mut delta = gpu.htod(&vec![f32::NAN; n * nh])?;
    drpo::gpu::attention::attention_bwd(
        gpu,
        &mut dq.as_view_mut(),
        &mut dk.as_view_mut(),
        &mut dv.as_view_mut(),
        &mut delta.as_view_mut(),
        &dout.as_view(),
        &q.as_view(),
        &k.as_view(),
        &v.as_view(),
        &out.as_view(),
        &lse.as_view(),
        seqs,
        heads,
    )?;
    // delta is scratch, but every (row, head) must have been written before the dk/dv kernel read it
    let delta = gpu.dtoh(&delta)?;
    assert!(delta.iter().all(|d| d.is_finite()), "delta (rowsum(dout ∘ out)) left unwritten or non-finite");
    Ok(TrainResult { out: gpu.dtoh(&out)?, lse: gpu.dtoh(&lse)?, dq: gpu.dtoh(&dq)?, dk: gpu.dtoh(&dk)?, dv: gpu.dtoh(&dv)? })
}

/// One packed training batch of sequences of `lengths`: the device against the CPU, then a second run
/// from the same inputs, bit for bit.
fn train_case<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng, lengths: &[usize], heads: Heads) -> drpo::Result<()> {
    let Heads { nh, nkv, hd } = heads;
    let n: usize = lengths.iter().sum();
    let (qd, kvd) = (nh * hd, nkv * hd);
    let (q, k, v) = (uniform::<T>(rng, n * qd, 2.0), uniform::<T>(rng, n * kvd, 2.0), uniform::<T>(rng, n * kvd, 2.0));
    let dout = uniform::<T>(rng, n * qd, 1.0);
    // the gradients accumulate: start from known values, smaller than what is added
    let (dq0, dk0, dv0) = (uniform::<T>(rng, n * qd, 0.25), uniform::<T>(rng, n * kvd, 0.25), uniform::<T>(rng, n * kvd, 0.25));
    let (x, d0) = ([&widen(&q)[..], &widen(&k), &widen(&v), &widen(&dout)], [&widen(&dq0)[..], &widen(&dk0), &widen(&dv0)]);
    let seqs = PackedSeqs::new(gpu, lengths)?;
    let got = train_on_device(gpu, &seqs, heads, [&q, &k, &v, &dout], [&dq0, &dk0, &dv0])?;
    let [want_out, want_lse, exact_dq, exact_dk, _] = train_reference(lengths, heads, x, d0, None);
    let [_, _, want_dq, want_dk, want_dv] = train_reference(lengths, heads, x, d0, Some(&widen(&got.out)));
    let what = |name: &str| format!("attention train {name} {} lengths={lengths:?} {heads:?}", T::NAME);
    // out: the prefill's bound (same kernel body: CUDA cores for f32, tensor cores for bf16). lse: f32 whatever T, an absolute error of a few
    // u·Σ_d |q_d k_d|·scale in the scores plus logf's ulps, against lse's own scale: floor rms(want).
    let out_bound = if T::NAME == "f32" { chain(1e-5) } else { BF16_TC };
    assert_close(&what("out"), &widen(&got.out), &want_out, out_bound);
    assert_close(&what("lse"), &got.lse.iter().map(|&x| x as f64).collect::<Vec<_>>(), &want_lse, chain(1e-6));
    // The gradients, against the exact gradient given the stored out the backward reads (NOTES.md's
    // numerics log, "attention backward"): f32 chains of ≤ group·t terms with cancellation
    // (ds = p (dp − D)), so floor rms(want) and the 1e-5; bf16: tensor cores, BF16_TC.
    let grad_bound = if T::NAME == "f32" { chain(1e-5) } else { BF16_TC };
    assert_close(&what("dq"), &widen(&got.dq), &want_dq, grad_bound);
    assert_close(&what("dk"), &widen(&got.dk), &want_dk, grad_bound);
    assert_close(&what("dv"), &widen(&got.dv), &want_dv, grad_bound);
    // how far reading the stored out (D from it) moves dq, dk from the exact gradient: logged, not bounded
    for (name, got, exact) in [("dq", &got.dq, &exact_dq), ("dk", &got.dk, &exact_dk)] {
        println!("{} vs the exact gradient (D from the exact out): rel_l2 = {:.3e}", what(name), drpo::check::rel_l2(&widen(got), exact));
    }

    let again = train_on_device(gpu, &seqs, heads, [&q, &k, &v, &dout], [&dq0, &dk0, &dv0])?;
    let bits = |x: &[T]| x.iter().map(|v| v.to_f32().to_bits()).collect::<Vec<u32>>();
    assert_eq!(bits(&got.out), bits(&again.out), "{}: two runs differ", what("out"));
    assert_eq!(got.lse.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), again.lse.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "{}: two runs differ", what("lse"));
    for (name, a, b) in [("dq", &got.dq, &again.dq), ("dk", &got.dk, &again.dk), ("dv", &got.dv, &again.dv)] {
        assert_eq!(bits(a), bits(b), "{}: two runs differ", what(name));
    }
    Ok(())
}

fn train_check<T: GpuFloat>(gpu: &Gpu, rng: &mut rand::rngs::StdRng) -> drpo::Result<()> {
    // head_dim 24 / 64 / 128; GQA 7:1 (Qwen2-0.5B: 14:2), 2:1, MHA; lengths across the 16-row tiles
    let odd = Heads { nh: 7, nkv: 1, hd: 24 };
    let qwen05 = Heads { nh: 14, nkv: 2, hd: 64 };
    let wide = Heads { nh: 4, nkv: 2, hd: 128 };
    let mha = Heads { nh: 2, nkv: 2, hd: 64 };
    train_case::<T>(gpu, rng, &[1], odd)?;
    train_case::<T>(gpu, rng, &[17, 1, 33, 0, 16, 40], odd)?;
    train_case::<T>(gpu, rng, &[50, 23], qwen05)?;
    train_case::<T>(gpu, rng, &[45, 3, 31], wide)?;
    train_case::<T>(gpu, rng, &[29], mha)?;
    if full_size(gpu) {
        train_case::<T>(gpu, rng, &[517, 300, 61], qwen05)?;
        train_case::<T>(gpu, rng, &[700, 129], wide)?;
    }
    Ok(())
}

#[test]
fn attention_train_gpu_matches_cpu() -> drpo::Result<()> {
    let mut rng = rng("attention_train");
    for gpu in devices("attention_train") {
        train_check::<f32>(&gpu, &mut rng)?;
        train_check::<bf16>(&gpu, &mut rng)?;
    }
    Ok(())
}
