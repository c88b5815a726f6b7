//! Linear layer y = x W^T + b with W stored [out, in] (the Hugging Face layout), and its backward.
//!
//! Both forward loops read contiguous rows of x and W (a dot product per output), so no transposed
//! copy is needed. Rows (or, for a single row, output columns) are spread over threads with rayon;
//! each output element is computed by one thread in a fixed order, so results are deterministic.

use super::{axpy, dot, Float};
use rayon::prelude::*;

/// out[r, o] = Σ_i x[r, i] · w[o, i] + b[o].   out: [n, o]   x: [n, i]   w: [o, i]   b: [o]
pub fn matmul_fwd<T: Float>(out: &mut [T], x: &[T], w: &[T], b: Option<&[T]>, n: usize, d_in: usize, d_out: usize) {
    assert!(out.len() == n * d_out && x.len() == n * d_in && w.len() == d_out * d_in, "matmul_fwd: bad lengths");
    assert!(b.is_none_or(|b| b.len() == d_out), "matmul_fwd: bad bias length");
    let row = |out_row: &mut [T], xr: &[T], o0: usize| {
        for (j, y) in out_row.iter_mut().enumerate() {
            let o = o0 + j;
            *y = dot(xr, &w[o * d_in..(o + 1) * d_in]) + b.map_or(T::ZERO, |b| b[o]);
        }
    };
    if n >= 4 {
        out.par_chunks_mut(d_out).zip(x.par_chunks(d_in)).for_each(|(o, xr)| row(o, xr, 0));
    } else {
        // decode: few rows, split the output columns instead
        const COLS: usize = 256;
        for r in 0..n {
            let xr = &x[r * d_in..(r + 1) * d_in];
            out[r * d_out..(r + 1) * d_out].par_chunks_mut(COLS).enumerate().for_each(|(k, o)| row(o, xr, k * COLS));
        }
    }
}

/// Backward of [`matmul_fwd`]; every output accumulates (`+=`).
#[allow(clippy::too_many_arguments)]
/// dx[r, i] += Σ_o dout[r, o] w[o, i]    dw[o, i] += Σ_r dout[r, o] x[r, i]    db[o] += Σ_r dout[r, o]
pub fn matmul_bwd<T: Float>(
    dx: &mut [T],
    dw: &mut [T],
    db: Option<&mut [T]>,
    dout: &[T],
    x: &[T],
    w: &[T],
    n: usize,
    d_in: usize,
    d_out: usize,
) {
    assert!(dx.len() == n * d_in && dw.len() == d_out * d_in && dout.len() == n * d_out && x.len() == n * d_in);
    dx.par_chunks_mut(d_in).zip(dout.par_chunks(d_out)).for_each(|(dxr, dr)| {
        for (o, &g) in dr.iter().enumerate() {
            axpy(dxr, g, &w[o * d_in..(o + 1) * d_in]);
        }
    });
    dw.par_chunks_mut(d_in).enumerate().for_each(|(o, dwr)| {
        for r in 0..n {
            axpy(dwr, dout[r * d_out + o], &x[r * d_in..(r + 1) * d_in]);
        }
    });
    if let Some(db) = db {
        assert_eq!(db.len(), d_out);
        for dr in dout.chunks_exact(d_out) {
            axpy(db, T::ONE, dr);
        }
    }
}
