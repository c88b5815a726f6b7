//! GPU KV append + causal GQA attention (prefill over packed sequences with cached prefixes, and
//! decode) against cpu::attention::attention_fwd per sequence, in f64 on the exact stored values.
//! Cache positions that no sequence owns are NaN: a kernel reading them would fail the test.

mod gpu_common;
use drpo::cpu::attention::{attention_fwd, AttnShape};
use drpo::gpu::attention::{attention_decode, attention_prefill, kv_append, Heads, SeqTable};
use drpo::gpu::{bf16, Gpu, GpuFloat};
use gpu_common::*;

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
        attention_decode(gpu, &mut out.as_view_mut(), &qd_.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)?;
    } else {
        attention_prefill(gpu, &mut out.as_view_mut(), &qd_.as_view(), &kc.as_view(), &vc.as_view(), &table, heads)?;
    }
    let what = format!("attention {} {} seqs={seqs:?} {heads:?}", if decode { "decode" } else { "prefill" }, T::NAME);
    // Bound derived, not yet measured on a GPU. The chain: scores as f32 FMA dots over hd ≤ 128, expf
    // (≤ 2 ulp), the online-softmax rescalings, ≤ 600 f32 FMA accumulations of p·v, one division.
    // Relative to the output's scale that is ~u·sqrt(keys) ≈ 1.5e-6 (an f32 emulation of both kernels
    // on these inputs: rel_l2 ≤ 6.9e-7, worst 2.3e-6 at floor rms(want)), and v's signs cancel, so the
    // floor is rms(want). f32: the 1e-5 and 5σ of it; bf16: the output rounded once dominates
    // (emulated 1.7e-3, 2.7e-3).
    let bound = if T::NAME == "f32" { chain(1e-5) } else { BF16_CHAIN };
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
    // prefill: fresh, odd lengths across tile edges (16 rows, 32 keys), continuations of a cache
    run::<T>(gpu, rng, &[(0, 1)], tiny, false)?;
    run::<T>(gpu, rng, &[(0, 17), (0, 1), (5, 33), (40, 3), (0, 64)], tiny, false)?;
    run::<T>(gpu, rng, &[(0, 100), (31, 2)], qwen05, false)?;
    run::<T>(gpu, rng, &[(0, 45), (7, 16)], wide, false)?;
    run::<T>(gpu, rng, &[(0, 19), (3, 5)], mqa, false)?;
    // decode: one row each, caches of 0, 31, 32, 33 and a few hundred keys (8 warps × 32 keys)
    run::<T>(gpu, rng, &[(0, 1), (31, 1), (32, 1), (33, 1), (300, 1)], tiny, true)?;
    run::<T>(gpu, rng, &[(257, 1), (1, 1)], qwen05, true)?;
    run::<T>(gpu, rng, &[(600, 1)], wide, true)?;
    run::<T>(gpu, rng, &[(70, 1), (0, 1)], mqa, true)?;
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
    // sequences go on grid.z (prefill) / grid.y (decode), ≤ 65,535: an input error naming the op
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
