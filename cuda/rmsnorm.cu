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

// RMSNorm backward.  Reference: cpu::rmsnorm::rmsnorm_bwd.  Launcher: gpu::rmsnorm::rmsnorm_bwd.
//   g = w ⊙ dout[r],   dx[r,i] += rstd·g[i] − (rstd³/c)·x[r,i]·(g·x[r]),   dw[i] += Σ_r dout[r,i]·x[r,i]·rstd[r]
//   dx, dout, x: [n, c] (T)   w: [c] (T)   rstd: [n] (f32, from the forward)   dw: [c] (f32 gradient)
//   dw_part: [ceil(n / RMSNORM_BWD_ROWS), c] (f32 scratch)
// Two kernels, no atomics:
//   rmsnorm_bwd_*: grid (ceil(n / RMSNORM_BWD_ROWS)), block 256, dynamic shared c floats. A block walks
//     its RMSNORM_BWD_ROWS rows in order: per row a block reduction of g·x, then dx. Thread t owns the
//     columns t, t + 256, … of the block's dw accumulator in shared memory (no other thread touches
//     them, so no barrier guards it) and adds row after row in order; the block writes its partial
//     row to dw_part. dout and x are read once from memory for both outputs (the second pass over a
//     row hits L1/L2).
//   rmsnorm_bwd_dw: grid (ceil(c / 256)), block 256: dw[i] += Σ_b dw_part[b, i], b ascending.
// The row grouping is a constant (not the device's SM count), so dw has the same bits on every device.
// Precision: f32 throughout; dx rounded once to T after the addition (dx += …). 1/c, rstd³ in f32.
// Determinism: fixed reduction orders (block tree, rows in order, partials in order): bit-identical.
#define RMSNORM_BWD_ROWS 16

template <typename T>
__device__ void rmsnorm_bwd(T* dx, float* dw_part, const T* dout, const T* x, const T* w, const float* rstd, int n, int c) {
    __shared__ float scratch[32];
    extern __shared__ float dw_acc[];
    for (int i = threadIdx.x; i < c; i += blockDim.x) dw_acc[i] = 0.0f;
    const int r0 = blockIdx.x * RMSNORM_BWD_ROWS, r1 = min(n, r0 + RMSNORM_BWD_ROWS);
    for (int r = r0; r < r1; r++) {
        const T* xr = x + (size_t)r * c;
        const T* dr = dout + (size_t)r * c;
        const float s = rstd[r];
        float gx = 0.0f;
        for (int i = threadIdx.x; i < c; i += blockDim.x) {
            float xv = load(xr + i), dv = load(dr + i);
            gx += load(w + i) * dv * xv;
            dw_acc[i] += dv * xv * s;
        }
        gx = block_sum(gx, scratch);
        const float k = s * s * s * gx / (float)c;
        T* dxr = dx + (size_t)r * c;
        for (int i = threadIdx.x; i < c; i += blockDim.x)
            store(dxr + i, load(dxr + i) + (s * (load(w + i) * load(dr + i)) - k * load(xr + i)));
    }
    float* part = dw_part + (size_t)blockIdx.x * c;
    for (int i = threadIdx.x; i < c; i += blockDim.x) part[i] = dw_acc[i];
}

extern "C" __global__ void __launch_bounds__(256) rmsnorm_bwd_f32(float* dx, float* dw_part, const float* dout, const float* x,
                                                                   const float* w, const float* rstd, int n, int c) {
    rmsnorm_bwd(dx, dw_part, dout, x, w, rstd, n, c);
}
extern "C" __global__ void __launch_bounds__(256) rmsnorm_bwd_bf16(bf16* dx, float* dw_part, const bf16* dout, const bf16* x,
                                                                    const bf16* w, const float* rstd, int n, int c) {
    rmsnorm_bwd(dx, dw_part, dout, x, w, rstd, n, c);
}
extern "C" __global__ void rmsnorm_bwd_dw(float* dw, const float* dw_part, int parts, int c) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= c) return;
    float sum = 0.0f;
    for (int b = 0; b < parts; b++) sum += dw_part[(size_t)b * c + i];
    dw[i] += sum;
}
