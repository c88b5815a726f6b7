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
