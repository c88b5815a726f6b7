//! Linear layer y = x W^T + b with W stored [out, in] (the Hugging Face layout), and its backward.
//!
//! Both forward loops read contiguous rows of x and W (a dot product per output), so no transposed
//! copy is needed. The work is blocked so that each block of W rows is read from memory once per tile
//! of x rows, not once per x row: a W block (≈ 128 KiB) stays in cache while every row of the x tile
//! meets it. Blocks (of W rows in the forward and for dw, of x rows for dx) are spread over threads
//! with rayon; each output element is still computed by one thread as one `dot` (or one chain of
//! `axpy`s) in the same order as the unblocked loops, so results are bitwise independent of the
//! blocking and of the thread count.

use super::{axpy, simd, Float};
use rayon::prelude::*;

/// Bytes of W (or x) a block should hold: small enough to stay in a core's L2 while reused.
const BLOCK_BYTES: usize = 128 * 1024;
/// Rows of x (or dout) per tile: W is read once per tile.
const TILE_ROWS: usize = 64;
/// Steps of a rank update between loads and stores of its register tile (dx: W rows, dw: x rows):
/// the panel of b it walks (128 × 64 floats = 32 KiB in f32) stays in L1.
const RANK_STEPS: usize = 128;

/// Rows of a `[rows, d]` matrix of T per block of about [`BLOCK_BYTES`]: a multiple of 12 (whole
/// register tiles of 4 or 6 rows) from 12 to 60.
fn block_rows<T>(d: usize) -> usize {
    (BLOCK_BYTES / (d.max(1) * std::mem::size_of::<T>())).clamp(12, 60) / 12 * 12
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
        cols.into_par_iter().enumerate().for_each(|(k, mut rows)| simd::matmul_fwd_task(&mut rows, x, w, b, r0, k * block, d_in));
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
    let w_block = RANK_STEPS;
    let tile = TILE_ROWS.min(n.div_ceil(rayon::current_num_threads() * 4)).max(1);
    dx.par_chunks_mut(tile * d_in).zip(dout.par_chunks(tile * d_out)).for_each(|(dx_tile, dout_tile)| {
        let mut rows: Vec<&mut [T]> = dx_tile.chunks_mut(d_in).collect();
        for o0 in (0..d_out).step_by(w_block) {
            let o1 = (o0 + w_block).min(d_out);
            // dx[r, :] += Σ_{o in block} dout[r, o] · w[o, :]: a = dout (row stride d_out), b = W rows
            simd::rank_update(&mut rows, &dout_tile[o0..], d_out, 1, &w[o0 * d_in..], d_in, o1 - o0);
        }
    });
    // dw: blocks of W rows in parallel; inside a block, x in tiles of rows, each tile used by every W row
    let (x_tile, dw_block) = (RANK_STEPS, block_rows::<T>(d_in));
    dw.par_chunks_mut(dw_block * d_in).enumerate().for_each(|(k, dw_rows)| {
        let o0 = k * dw_block;
        let mut rows: Vec<&mut [T]> = dw_rows.chunks_mut(d_in).collect();
        for r0 in (0..n).step_by(x_tile) {
            let r1 = (r0 + x_tile).min(n);
            // dw[o, :] += Σ_{r in tile} dout[r, o] · x[r, :]: a = doutᵀ (row stride 1, k stride d_out), b = x rows
            simd::rank_update(&mut rows, &dout[r0 * d_out + o0..], 1, d_out, &x[r0 * d_in..], d_in, r1 - r0);
        }
    });
    if let Some(db) = db {
        assert_eq!(db.len(), d_out);
        for dr in dout.chunks_exact(d_out) {
            axpy(db, T::ONE, dr);
        }
    }
}
