//! Linear layer y = x W^T + b with W stored [out, in] (the Hugging Face layout), and its backward.
//!
//! Both forward loops read contiguous rows of x and W (a dot product per output), so no transposed
//! copy is needed. The work is blocked so that each block of W rows is read from memory once per tile
//! of x rows, not once per x row: a W block (≈ 128 KiB) stays in cache while every row of the x tile
//! meets it. Blocks (of W rows in the forward and for dw, of x rows for dx) are spread over threads
//! with rayon; each output element is still computed by one thread as one `dot` (or one chain of
//! `axpy`s) in the same order as the unblocked loops, so results are bitwise independent of the
//! blocking and of the thread count.

use super::{axpy, dot, Float};
use rayon::prelude::*;

/// Bytes of W (or x) a block should hold: small enough to stay in a core's L2 while reused.
const BLOCK_BYTES: usize = 128 * 1024;
/// Rows of x (or dout) per tile: W is read once per tile.
const TILE_ROWS: usize = 64;

/// Rows of a `[rows, d]` matrix of T per block of about [`BLOCK_BYTES`] (at least 4, at most 64).
fn block_rows<T>(d: usize) -> usize {
    (BLOCK_BYTES / (d.max(1) * std::mem::size_of::<T>())).clamp(4, 64)
}

/// out[r, o] = Σ_i x[r, i] · w[o, i] + b[o].   out: [n, o]   x: [n, i]   w: [o, i]   b: [o]
pub fn matmul_fwd<T: Float>(out: &mut [T], x: &[T], w: &[T], b: Option<&[T]>, n: usize, d_in: usize, d_out: usize) {
    assert!(out.len() == n * d_out && x.len() == n * d_in && w.len() == d_out * d_in, "matmul_fwd: bad lengths");
    assert!(b.is_none_or(|b| b.len() == d_out), "matmul_fwd: bad bias length");
    if n == 0 || d_out == 0 {
        return;
    }
    let block = block_rows::<T>(d_in);
    // tiles and the blocks inside them both go to rayon (nested: idle threads steal blocks)
    out.par_chunks_mut(TILE_ROWS * d_out).enumerate().for_each(|(t, out_tile)| {
        let r0 = t * TILE_ROWS;
        // column block k of every row of the tile: disjoint slices, one list per block of W rows
        let mut cols: Vec<Vec<&mut [T]>> = (0..d_out.div_ceil(block)).map(|_| Vec::with_capacity(TILE_ROWS)).collect();
        for row in out_tile.chunks_mut(d_out) {
            for (k, piece) in row.chunks_mut(block).enumerate() {
                cols[k].push(piece);
            }
        }
        cols.into_par_iter().enumerate().for_each(|(k, mut rows)| {
            let o0 = k * block;
            for (j, out_row) in rows.iter_mut().enumerate() {
                let xr = &x[(r0 + j) * d_in..(r0 + j + 1) * d_in];
                for (m, y) in out_row.iter_mut().enumerate() {
                    let o = o0 + m;
                    *y = dot(xr, &w[o * d_in..(o + 1) * d_in]) + b.map_or(T::ZERO, |b| b[o]);
                }
            }
        });
    });
}

/// Backward of [`matmul_fwd`]; every output accumulates (`+=`).
#[allow(clippy::too_many_arguments)]
/// dx[r, i] += Σ_o dout[r, o] w[o, i]    dw[o, i] += Σ_r dout[r, o] x[r, i]    db[o] += Σ_r dout[r, o]
/// (each sum in ascending o, resp. r: the order of the unblocked loops)
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
    if n == 0 || d_out == 0 || d_in == 0 {
        return;
    }
    // dx: tiles of rows in parallel; inside a tile, W in blocks of rows, each block used by every row
    let w_block = block_rows::<T>(d_in);
    let tile = TILE_ROWS.min(n.div_ceil(rayon::current_num_threads() * 4)).max(1);
    dx.par_chunks_mut(tile * d_in).zip(dout.par_chunks(tile * d_out)).for_each(|(dx_tile, dout_tile)| {
        for o0 in (0..d_out).step_by(w_block) {
            let o1 = (o0 + w_block).min(d_out);
            for (dxr, dr) in dx_tile.chunks_mut(d_in).zip(dout_tile.chunks(d_out)) {
                for o in o0..o1 {
                    axpy(dxr, dr[o], &w[o * d_in..(o + 1) * d_in]);
                }
            }
        }
    });
    // dw: blocks of W rows in parallel; inside a block, x in tiles of rows, each tile used by every W row
    let x_tile = block_rows::<T>(d_in);
    dw.par_chunks_mut(w_block * d_in).enumerate().for_each(|(k, dw_block)| {
        let o0 = k * w_block;
        for r0 in (0..n).step_by(x_tile) {
            let r1 = (r0 + x_tile).min(n);
            for (m, dwr) in dw_block.chunks_mut(d_in).enumerate() {
                let o = o0 + m;
                for r in r0..r1 {
                    axpy(dwr, dout[r * d_out + o], &x[r * d_in..(r + 1) * d_in]);
                }
            }
        }
    });
    if let Some(db) = db {
        assert_eq!(db.len(), d_out);
        for dr in dout.chunks_exact(d_out) {
            axpy(db, T::ONE, dr);
        }
    }
}
