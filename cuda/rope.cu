// Rotary position embedding, in place, HF rotate-half pairs (i, i + hd/2).
// Reference: cpu::rope::rope_fwd (tables from cpu::rope::rope_tables).  Launcher: gpu::rope::rope_fwd.
//   x'[i] = x[i]·cos − x[i+h]·sin,   x'[i+h] = x[i+h]·cos + x[i]·sin,   h = hd/2
//   x: [n, heads, hd] (T)   pos: [n] (int, the position of each packed row, < max_pos)
//   cos, sin: [max_pos, hd/2] (f32, computed in f64 on the host and rounded once, as the CPU f32 path)
// Grid (n), block 128: one block per row, threads stride over the heads·hd/2 pairs.
// A position outside [0, max_pos) (the callers validate positions; this is a guard) makes the row NaN,
// like a bad id in embedding.cu: no table read out of bounds, and nothing that can go unnoticed.
// Precision: each product and the difference are rounded separately (__fmul_rn/__fsub_rn: no FMA
// contraction), which is exactly what the CPU f32 reference computes: the f32 path is bit-identical.
// Determinism: elementwise.
// Backward (rope_bwd_*, reference cpu::rope::rope_bwd, launcher gpu::rope::rope_bwd): the transpose of
// the rotation, i.e. the rotation by −angle, in place on the gradient:
//   dx[i] = dy[i]·cos + dy[i+h]·sin,   dx[i+h] = dy[i+h]·cos − dy[i]·sin
// the same products with the opposite signs, so its f32 path is bit-identical to the CPU's too.

template <bool INVERSE, typename T>
__device__ void rotate(T* x, const int* pos, const float* cos_t, const float* sin_t, int heads, int hd, int max_pos) {
    int half = hd / 2;
    const int p = pos[blockIdx.x];
    T* row = x + (size_t)blockIdx.x * heads * hd;
    if (p < 0 || p >= max_pos) {
        for (int k = threadIdx.x; k < heads * hd; k += blockDim.x) store(row + k, F32_NAN);
        return;
    }
    const float* cr = cos_t + (size_t)p * half;
    const float* sr = sin_t + (size_t)p * half;
    for (int k = threadIdx.x; k < heads * half; k += blockDim.x) {
        int h = k / half, i = k % half;
        T* v = row + h * hd;
        float a = load(v + i), b = load(v + i + half), c = cr[i], s = sr[i];
        if (INVERSE) {
            store(v + i, __fadd_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
            store(v + i + half, __fsub_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
        } else {
            store(v + i, __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
            store(v + i + half, __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
        }
    }
}

extern "C" __global__ void rope_fwd_f32(float* x, const int* pos, const float* cos_t, const float* sin_t, int heads, int hd, int max_pos) {
    rotate<false>(x, pos, cos_t, sin_t, heads, hd, max_pos);
}
extern "C" __global__ void rope_fwd_bf16(bf16* x, const int* pos, const float* cos_t, const float* sin_t, int heads, int hd, int max_pos) {
    rotate<false>(x, pos, cos_t, sin_t, heads, hd, max_pos);
}
extern "C" __global__ void rope_bwd_f32(float* dx, const int* pos, const float* cos_t, const float* sin_t, int heads, int hd, int max_pos) {
    rotate<true>(dx, pos, cos_t, sin_t, heads, hd, max_pos);
}
extern "C" __global__ void rope_bwd_bf16(bf16* dx, const int* pos, const float* cos_t, const float* sin_t, int heads, int hd, int max_pos) {
    rotate<true>(dx, pos, cos_t, sin_t, heads, hd, max_pos);
}
