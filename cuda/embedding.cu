// Embedding gather.  Reference: cpu::embedding::embedding_fwd.  Launcher: gpu::embedding::embedding_fwd.
//   out[r, :] = table[ids[r], :]        out: [n, c]   ids: [n] (u32)   table: [v, c]
// Grid (n), block 256: one block per row, threads stride over c (coalesced copy).
// Precision: a copy, bit-exact. An id ≥ v (the launcher's caller validates ids; this is a guard)
// writes NaN rows, so a bad id cannot read out of bounds and cannot go unnoticed.
// Determinism: no reductions.

template <typename T>
__device__ void embedding_fwd(T* out, const unsigned* ids, const T* table, int c, int v) {
    unsigned id = ids[blockIdx.x];
    T* o = out + (size_t)blockIdx.x * c;
    if (id >= (unsigned)v) {
        for (int i = threadIdx.x; i < c; i += blockDim.x) store(o + i, F32_NAN);
        return;
    }
    const T* row = table + (size_t)id * c;
    for (int i = threadIdx.x; i < c; i += blockDim.x) o[i] = row[i];
}

extern "C" __global__ void embedding_fwd_f32(float* out, const unsigned* ids, const float* table, int c, int v) {
    embedding_fwd(out, ids, table, c, v);
}
extern "C" __global__ void embedding_fwd_bf16(bf16* out, const unsigned* ids, const bf16* table, int c, int v) {
    embedding_fwd(out, ids, table, c, v);
}

// Embedding backward: the scatter-add of the gradient rows into the table, without atomics.
// Reference: cpu::embedding::embedding_bwd.  Launcher: gpu::embedding::embedding_bwd.
//   dtable[ids[r], :] += dout[r, :] for r = 0, 1, …, n − 1
//   dtable: [v, c] (f32 gradient)   dout: [n, c] (T)
//   order: [n] (u32) the row indices sorted by (id, r)   seg_start: [u + 1] (u32)   seg_id: [u] (u32)
//   (built on the host by gpu::embedding::EmbeddingGradPlan: segment b holds the rows of token
//   seg_id[b], order[seg_start[b] .. seg_start[b + 1]], ascending)
// Grid (u), block 256: one block per distinct token, threads stride over c; each thread adds its
// column of the segment's rows to the table in row order, so every id's sum has the CPU's order:
// ((dtable + dout[r0]) + dout[r1]) + … — the f32 path is bit-identical to the CPU f32 reference.
// Distinct ids own distinct table rows, so blocks never write the same element (no atomics, no race).
// Rows of ids absent from the batch are not touched.
// Determinism: fixed order per element: bit-identical from run to run.

template <typename T>
__device__ void embedding_bwd(float* dtable, const T* dout, const unsigned* order, const unsigned* seg_start,
                              const unsigned* seg_id, int c) {
    const unsigned b0 = seg_start[blockIdx.x], b1 = seg_start[blockIdx.x + 1];
    float* row = dtable + (size_t)seg_id[blockIdx.x] * c;
    for (int i = threadIdx.x; i < c; i += blockDim.x) {
        float acc = row[i];
        for (unsigned p = b0; p < b1; p++) acc += load(dout + (size_t)order[p] * c + i);
        row[i] = acc;
    }
}

extern "C" __global__ void embedding_bwd_f32(float* dtable, const float* dout, const unsigned* order, const unsigned* seg_start,
                                             const unsigned* seg_id, int c) {
    embedding_bwd(dtable, dout, order, seg_start, seg_id, c);
}
extern "C" __global__ void embedding_bwd_bf16(float* dtable, const bf16* dout, const unsigned* order, const unsigned* seg_start,
                                              const unsigned* seg_id, int c) {
    embedding_bwd(dtable, dout, order, seg_start, seg_id, c);
}
