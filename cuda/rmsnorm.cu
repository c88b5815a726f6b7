// RMSNorm forward.  Reference: cpu::rmsnorm::rmsnorm_fwd.  Launcher: gpu::rmsnorm::rmsnorm_fwd.
//   out[r,i] = w[i] · (x[r,i] · rstd[r]),   rstd[r] = 1 / sqrt(mean_i x[r,i]² + eps)
//   x, out: [n, c] (T)   w: [c] (T)   rstd: [n] (f32, kept for the backward pass)
// Grid (n), block 256: one block per row; each thread sums a strided slice, then a warp/block tree.
// Precision: f32 accumulation, the output rounded once to T. 1/sqrt is `1.0f / sqrtf` (correctly
// rounded), not rsqrtf (2 ulp), so the f32 path tracks the f32 CPU reference to ~1e-7.
// Determinism: fixed reduction order, no atomics: bit-identical from run to run.

template <typename T>
__device__ void rmsnorm_fwd(T* out, float* rstd, const T* x, const T* w, int c, float eps) {
    __shared__ float scratch[32];
    const T* xr = x + (size_t)blockIdx.x * c;
    float sum_sq = 0.0f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) {
        float v = load(xr + i);
        sum_sq += v * v;
    }
    sum_sq = block_sum(sum_sq, scratch);
    float s = 1.0f / sqrtf(sum_sq / (float)c + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = s;
    T* o = out + (size_t)blockIdx.x * c;
    for (int i = threadIdx.x; i < c; i += blockDim.x) store(o + i, load(w + i) * (load(xr + i) * s));
}

extern "C" __global__ void rmsnorm_fwd_f32(float* out, float* rstd, const float* x, const float* w, int c, float eps) {
    rmsnorm_fwd(out, rstd, x, w, c, eps);
}
extern "C" __global__ void rmsnorm_fwd_bf16(bf16* out, float* rstd, const bf16* x, const bf16* w, int c, float eps) {
    rmsnorm_fwd(out, rstd, x, w, c, eps);
}
