//! Token embedding gather and its backward (a scatter-add into the table).

use super::Float;

/// out[r, :] = table[ids[r], :].   out: [n, c]   ids: [n]   table: [v, c]
/// Ids are checked by the caller (the model validates user input once, with a typed error).
pub fn embedding_fwd<T: Float>(out: &mut [T], ids: &[u32], table: &[T], c: usize) {
    assert_eq!(out.len(), ids.len() * c, "embedding_fwd: bad lengths");
    for (row, &id) in out.chunks_exact_mut(c).zip(ids) {
        let id = id as usize;
        row.copy_from_slice(&table[id * c..(id + 1) * c]);
    }
}

/// dtable[ids[r], :] += dout[r, :].   dtable: [v, c]   dout: [n, c]   ids: [n]
/// Rows are visited in order, so a token seen twice accumulates deterministically.
pub fn embedding_bwd<T: Float>(dtable: &mut [T], dout: &[T], ids: &[u32], c: usize) {
    assert_eq!(dout.len(), ids.len() * c, "embedding_bwd: bad lengths");
    for (row, &id) in dout.chunks_exact(c).zip(ids) {
        let id = id as usize;
        super::axpy(&mut dtable[id * c..(id + 1) * c], T::ONE, row);
    }
}
