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
