// SwiGLU of the Qwen2 MLP on the fused gate|up projection.
// Reference: cpu::swiglu::swiglu_fwd.  Launcher: gpu::swiglu::swiglu_fwd.
//   out[r,k] = silu(g)·u,  g = gu[r, k],  u = gu[r, ff + k],  silu(g) = g / (1 + e^(−g))
//   gu: [n, 2·ff] (T; one GEMM against gate_w and up_w, adjacent in the flat layout)   out: [n, ff] (T)
// Grid (ceil(n·ff / 256)), block 256: one thread per output element.
// Precision: f32 (expf ≤ 2 ulp), the output rounded once to T.  Determinism: elementwise.

template <typename T>
__device__ void swiglu_fwd(T* out, const T* gu, int n, int ff) {
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (size_t)n * ff) return;
    size_t r = k / ff, j = k % ff;
    float g = load(gu + r * 2 * ff + j), u = load(gu + r * 2 * ff + ff + j);
    store(out + k, g * (1.0f / (1.0f + expf(-g))) * u);
}

extern "C" __global__ void swiglu_fwd_f32(float* out, const float* gu, int n, int ff) { swiglu_fwd(out, gu, n, ff); }
extern "C" __global__ void swiglu_fwd_bf16(bf16* out, const bf16* gu, int n, int ff) { swiglu_fwd(out, gu, n, ff); }

// SwiGLU backward on the fused gate|up rows.  Reference: cpu::swiglu::swiglu_bwd.  Launcher: gpu::swiglu::swiglu_bwd.
//   σ = 1 / (1 + e^(−g)),   dgu[r, k] += dout·u·σ·(1 + g·(1 − σ)),   dgu[r, ff + k] += dout·g·σ
//   dout: [n, ff] (T)   gu: [n, 2·ff] (T, the forward's input)   dgu: [n, 2·ff] (T, accumulated)
// Grid (ceil(n·ff / 256)), block 256: one thread per (row, k), writing both halves.
// Precision: f32 (expf ≤ 2 ulp), each output rounded once to T after the addition.
// Determinism: elementwise.

template <typename T>
__device__ void swiglu_bwd(T* dgu, const T* dout, const T* gu, int n, int ff) {
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (size_t)n * ff) return;
    size_t r = k / ff, j = k % ff;
    size_t ig = r * 2 * ff + j, iu = ig + ff;
    float g = load(gu + ig), u = load(gu + iu), d = load(dout + k);
    float s = 1.0f / (1.0f + expf(-g));
    store(dgu + ig, load(dgu + ig) + d * u * (s * (1.0f + g * (1.0f - s))));
    store(dgu + iu, load(dgu + iu) + d * (g * s));
}

extern "C" __global__ void swiglu_bwd_f32(float* dgu, const float* dout, const float* gu, int n, int ff) { swiglu_bwd(dgu, dout, gu, n, ff); }
extern "C" __global__ void swiglu_bwd_bf16(bf16* dgu, const bf16* dout, const bf16* gu, int n, int ff) { swiglu_bwd(dgu, dout, gu, n, ff); }
