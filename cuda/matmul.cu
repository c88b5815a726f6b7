// Linear layer y = x·Wᵀ + b (W stored [out, in] as in HF: an "NT" GEMM) with the bias fused into the
// epilogue.  Reference: cpu::matmul::matmul_fwd.  Launcher: gpu::matmul::matmul_fwd.
//   out: [m, n]   x: [m, k]   w: [n, k]   b: [n] or null
// Kernels (main loops in gemm.cuh):
//   matmul_fwd_f32                 f32 in/out, CUDA cores; grid (ceil(n/64), ceil(m/64)), block 256
//   matmul_fwd_bf16_{large,small}  bf16 in/out, tensor cores (mma.sync m16n8k16), f32 accumulate;
//   matmul_fwd_bf16f32_{large,small}   same with f32 out (the lm-head logits for sampling)
//     large: 128×128 tiles, block 256;  small: 64×64 tiles, block 128;  grid (ceil(n/BN), ceil(m/BM))
//     vec = 1 when k % 8 == 0 and x, w are 16-byte aligned (the launcher checks): 16-byte loads
// Precision: f32 accumulation in a fixed k order; bias added in f32; output rounded once to its type.
// Determinism: no split-k, no atomics: bit-identical from run to run.
// v1 (this): register-staged double buffer, no cp.async / ldmatrix, one output element per store.

template <typename Tile, typename Out>
__device__ void matmul_tc(Out* out, const bf16* x, const bf16* w, const bf16* b, int m, int k, int n, int vec) {
    float acc[Tile::TM][Tile::TN][4];
    const int m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
    Tile::mainloop(acc, vec != 0, x, w, m, n, k, m0, n0);
#pragma unroll
    for (int a = 0; a < Tile::TM; a++)
#pragma unroll
        for (int c = 0; c < Tile::TN; c++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int row = m0 + Tile::row_of(a, i), col = n0 + Tile::col_of(c, i);
                if (row < m && col < n) store(out + (size_t)row * n + col, acc[a][c][i] + (b ? bf16_to_f32(b[col]) : 0.0f));
            }
}

extern "C" __global__ void __launch_bounds__(256) matmul_fwd_bf16_large(bf16* out, const bf16* x, const bf16* w, const bf16* b, int m, int k, int n, int vec) {
    matmul_tc<TcLarge>(out, x, w, b, m, k, n, vec);
}
extern "C" __global__ void __launch_bounds__(128) matmul_fwd_bf16_small(bf16* out, const bf16* x, const bf16* w, const bf16* b, int m, int k, int n, int vec) {
    matmul_tc<TcSmall>(out, x, w, b, m, k, n, vec);
}
extern "C" __global__ void __launch_bounds__(256) matmul_fwd_bf16f32_large(float* out, const bf16* x, const bf16* w, const bf16* b, int m, int k, int n, int vec) {
    matmul_tc<TcLarge>(out, x, w, b, m, k, n, vec);
}
extern "C" __global__ void __launch_bounds__(128) matmul_fwd_bf16f32_small(float* out, const bf16* x, const bf16* w, const bf16* b, int m, int k, int n, int vec) {
    matmul_tc<TcSmall>(out, x, w, b, m, k, n, vec);
}

extern "C" __global__ void __launch_bounds__(256) matmul_fwd_f32(float* out, const float* x, const float* w, const float* b, int m, int k, int n) {
    float acc[4][4];
    const int m0 = blockIdx.y * SimtGemm::BM, n0 = blockIdx.x * SimtGemm::BN;
    SimtGemm::mainloop(acc, x, w, m, n, k, m0, n0);
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int row = m0 + SimtGemm::row_of(i), col = n0 + SimtGemm::col_of(j);
            if (row < m && col < n) out[(size_t)row * n + col] = acc[i][j] + (b ? b[col] : 0.0f);
        }
}
