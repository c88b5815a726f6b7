// Linear layer y = x·Wᵀ + b (W stored [out, in] as in HF: an "NT" GEMM) with the bias fused into the
// epilogue.  Reference: cpu::matmul::matmul_fwd.  Launcher: gpu::matmul::matmul_fwd.
//   out: [m, n]   x: [m, k]   w: [n, k]   b: [n] or null
// Kernels (main loops in gemm.cuh):
//   matmul_fwd_f32                 f32 in/out, CUDA cores; grid (ceil(n/64), ceil(m/64)), block 256
//   matmul_fwd_bf16_{large,small}  bf16 in/out, tensor cores (mma.sync m16n8k16), f32 accumulate;
//   matmul_fwd_bf16f32_{large,small}   same with f32 out (the lm-head logits for sampling)
//     large: 128×128 tiles, block 256;  small: 64×64 tiles, block 128;  grid (ceil(n/BN), ceil(m/BM))
//     vec = 1 when k % 8 == 0 and x, w are 16-byte aligned (the launcher checks): 16-byte loads
//   matmul_part_{bf16_small,f32}   split-k (below): f32 partial sums of one k range each
// Precision: f32 accumulation in a fixed k order; bias added in f32; output rounded once to its type.
// Determinism: no atomics; every sum in an order fixed by the shape alone: bit-identical from run to
// run and from device to device (the tile choice, which depends on the SM count, does not change a
// bit: both tiles add the same mma k-steps of 16 in the same order).
// v1: register-staged double buffer, no cp.async / ldmatrix, one output element per store.
// v2 (issue 12): split-k for the decode GEMMs (rows ≤ 64), below.

// ACCUMULATE (the backward products): out += acc, rounded once to Out; else out = acc + b.
// SPLIT (split-k partials): block z sums k in [z·k_chunk, min(k, (z + 1)·k_chunk)) and writes plain sums
// to out + z·m·n (Out = float, b = null); otherwise k_chunk is unused and the block walks all of k.
template <typename Tile, typename Out, bool ACCUMULATE = false, bool SPLIT = false>
__device__ void matmul_tc(Out* out, const bf16* x, const bf16* w, const bf16* b, int m, int k, int n, int vec, int k_chunk = 0) {
    float acc[Tile::TM][Tile::TN][4];
    const int m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
    if (SPLIT) {
        const int k_lo = blockIdx.z * k_chunk;
        Tile::mainloop_range(acc, vec != 0, x, w, m, n, k, m0, n0, k_lo, min(k, k_lo + k_chunk));
        out += (size_t)blockIdx.z * m * n;
    } else {
        Tile::mainloop(acc, vec != 0, x, w, m, n, k, m0, n0);
    }
#pragma unroll
    for (int a = 0; a < Tile::TM; a++)
#pragma unroll
        for (int c = 0; c < Tile::TN; c++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int row = m0 + Tile::row_of(a, i), col = n0 + Tile::col_of(c, i);
                if (row >= m || col >= n) continue;
                Out* p = out + (size_t)row * n + col;
                store(p, ACCUMULATE ? load(p) + acc[a][c][i] : acc[a][c][i] + (b ? bf16_to_f32(b[col]) : 0.0f));
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

// The f32 CUDA-core twin of matmul_tc (same epilogues, same SPLIT).
template <typename Simt, bool ACCUMULATE = false, bool SPLIT = false>
__device__ void matmul_simt(float* out, const float* x, const float* w, const float* b, int m, int k, int n, int k_chunk = 0) {
    float acc[4][4];
    const int m0 = blockIdx.y * Simt::BM, n0 = blockIdx.x * Simt::BN;
    if (SPLIT) {
        const int k_lo = blockIdx.z * k_chunk;
        Simt::mainloop_range(acc, x, w, m, n, k, m0, n0, k_lo, min(k, k_lo + k_chunk));
        out += (size_t)blockIdx.z * m * n;
    } else {
        Simt::mainloop(acc, x, w, m, n, k, m0, n0);
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int row = m0 + Simt::row_of(i), col = n0 + Simt::col_of(j);
            if (row >= m || col >= n) continue;
            float* p = out + (size_t)row * n + col;
            *p = ACCUMULATE ? *p + acc[i][j] : acc[i][j] + (b ? b[col] : 0.0f);
        }
}

extern "C" __global__ void __launch_bounds__(256) matmul_fwd_f32(float* out, const float* x, const float* w, const float* b, int m, int k, int n) {
    matmul_simt<SimtGemm>(out, x, w, b, m, k, n);
}

// ---------------------------------------------------------------------------------------------
// Split-k of the forward: the GEMMs of a decoding step (rows = sequences, 1–64) fit one 64-row tile,
// so the unsplit kernel has only ceil(n / 64) blocks (2 for Qwen2-0.5B's k and v projections, 14 for
// q, o and down), each walking all of k with one k-tile in flight. Launcher: gpu::matmul (MatmulPlan).
//   matmul_part_bf16_small, matmul_part_f32: grid (ceil(n/64), ceil(m/64), splits), the unsplit
//     kernels' blocks and main loops; block z sums k in [z·k_chunk, min(k, (z + 1)·k_chunk)) and writes
//     its f32 sums to part[z, row, col] (part: [splits, m, n]); k_chunk is a multiple of 32.
//   matmul_split_sum_{bf16,bf16f32,f32}: grid (ceil(m·n / 256)), block 256, a thread per output:
//     s = ((part[0] + part[1]) + …) + part[splits − 1], then out = s + b[col], rounded once to the
//     output type (matmul_split_acc_f32: out += s, the split dW of the backward).
// The k ranges come from the shape alone (gpu::matmul::MatmulPlan: never the SM count), so the bits
// are the same on every device; they differ from the unsplit kernel's (another summation order), so
// the plan splits every GEMM of ≤ 64 rows by the same rule: a row's bits never depend on how many
// other rows (≤ 64) share its launch.
extern "C" __global__ void __launch_bounds__(128) matmul_part_bf16_small(float* part, const bf16* x, const bf16* w, int m, int k, int n, int k_chunk, int vec) {
    matmul_tc<TcSmall, float, false, true>(part, x, w, nullptr, m, k, n, vec, k_chunk);
}
extern "C" __global__ void __launch_bounds__(256) matmul_part_f32(float* part, const float* x, const float* w, int m, int k, int n, int k_chunk) {
    matmul_simt<SimtGemm, false, true>(part, x, w, nullptr, m, k, n, k_chunk);
}

// ACCUMULATE: out += s (no bias); else out = s + b[col] (b may be null).
template <typename Out, typename B, bool ACCUMULATE>
__device__ void matmul_split_sum(Out* out, const float* part, const B* b, int m, int n, int splits) {
    const size_t mn = (size_t)m * n, i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= mn) return;
    float s = part[i];
    for (int z = 1; z < splits; z++) s += part[z * mn + i];
    if (ACCUMULATE) store(out + i, load(out + i) + s);
    else store(out + i, s + (b ? load(b + i % n) : 0.0f));
}
extern "C" __global__ void __launch_bounds__(256) matmul_split_sum_bf16(bf16* out, const float* part, const bf16* b, int m, int n, int splits) {
    matmul_split_sum<bf16, bf16, false>(out, part, b, m, n, splits);
}
extern "C" __global__ void __launch_bounds__(256) matmul_split_sum_bf16f32(float* out, const float* part, const bf16* b, int m, int n, int splits) {
    matmul_split_sum<float, bf16, false>(out, part, b, m, n, splits);
}
extern "C" __global__ void __launch_bounds__(256) matmul_split_sum_f32(float* out, const float* part, const float* b, int m, int n, int splits) {
    matmul_split_sum<float, float, false>(out, part, b, m, n, splits);
}

// ---------------------------------------------------------------------------------------------
// Backward of the linear layer.  Reference: cpu::matmul::matmul_bwd.  Launcher: gpu::matmul::matmul_bwd.
//   dX[r, i] += Σ_o dY[r, o]·W[o, i]     dW[o, i] += Σ_r dY[r, o]·X[r, i]     db[o] += Σ_r dY[r, o]
//   dY: [tokens, d_out]   X, dX: [tokens, d_in]   W: [d_out, d_in]   dW: [d_out, d_in] (f32)   db: [d_out] (f32)
// Both products run the forward's main loops (gemm.cuh) with the operands read as they are stored:
//   dX = dY·W:   m = tokens, n = d_in, k = d_out; A = dY [m, k], B = W [k, n] (n-contiguous: ldmatrix.trans)
//   dW = dYᵀ·X:  m = d_out, n = d_in, k = tokens; A = dY [k, m], B = X [k, n] (both through ldmatrix.trans)
// Kernels (grid (ceil(n/BN), ceil(m/BM)) as the forward):
//   matmul_bwd_dx_bf16_{large,small}   bf16 dX, tensor cores;  matmul_bwd_dx_f32   f32, CUDA cores
//   matmul_bwd_dx_bf16f32_{large,small}   f32 dX from bf16 operands (several products summed in f32)
//   matmul_bwd_dw_bf16_{large,small}   f32 dW from bf16 operands, tensor cores;  matmul_bwd_dw_f32
//   matmul_bwd_db_{f32,bf16}   grid (ceil(d_out / 32)), block 256: 8 row phases × 32 columns, then a
//     fixed-order sum of the 8 phase sums (coalesced rows, no atomics)
//   matmul_bwd_dw_part_{bf16_small,f32} + matmul_split_acc_f32   split-k dW (below)
// Every output accumulates (+=, the CPU's contract: a gradient summed over uses, the residual stream):
// the f32 accumulator of the whole k range is added to the stored value, rounded once to the output type.
// Precision: f32 accumulation in a fixed k order (mma for bf16); dW and db are f32 whatever the operands.
// Determinism: no atomics, every order fixed by the shape: bit-identical from run to run.
// v1: the forward's register-staged double buffer; K = tokens of dW is walked by one block per output
//   tile (the launcher's small tile gives 28 blocks for Qwen2-0.5B's k and v projections, 196 for q and o).
// v2 (issue 12): dW splits k (tokens) where the weight has fewer than 512 output tiles of 64×64
//   (gpu::matmul::MatmulPlan::dw): the forward's split-k kernels with dW's operand layouts.

// dX = dY·W: m = tokens, k = d_out, n = d_in
extern "C" __global__ void __launch_bounds__(256) matmul_bwd_dx_bf16_large(bf16* dx, const bf16* dy, const bf16* w, int m, int k, int n, int vec) {
    matmul_tc<TcLargeDx, bf16, true>(dx, dy, w, nullptr, m, k, n, vec);
}
extern "C" __global__ void __launch_bounds__(128) matmul_bwd_dx_bf16_small(bf16* dx, const bf16* dy, const bf16* w, int m, int k, int n, int vec) {
    matmul_tc<TcSmallDx, bf16, true>(dx, dy, w, nullptr, m, k, n, vec);
}
// dX with an f32 output from bf16 operands: a caller summing several products into one dX in f32
// before a single rounding (the head backward, over vocabulary chunks)
extern "C" __global__ void __launch_bounds__(256) matmul_bwd_dx_bf16f32_large(float* dx, const bf16* dy, const bf16* w, int m, int k, int n, int vec) {
    matmul_tc<TcLargeDx, float, true>(dx, dy, w, nullptr, m, k, n, vec);
}
extern "C" __global__ void __launch_bounds__(128) matmul_bwd_dx_bf16f32_small(float* dx, const bf16* dy, const bf16* w, int m, int k, int n, int vec) {
    matmul_tc<TcSmallDx, float, true>(dx, dy, w, nullptr, m, k, n, vec);
}
extern "C" __global__ void __launch_bounds__(256) matmul_bwd_dx_f32(float* dx, const float* dy, const float* w, int m, int k, int n) {
    matmul_simt<SimtGemmDx, true>(dx, dy, w, nullptr, m, k, n);
}
// dW = dYᵀ·X: m = d_out, k = tokens, n = d_in
extern "C" __global__ void __launch_bounds__(256) matmul_bwd_dw_bf16_large(float* dw, const bf16* dy, const bf16* x, int m, int k, int n, int vec) {
    matmul_tc<TcLargeDw, float, true>(dw, dy, x, nullptr, m, k, n, vec);
}
extern "C" __global__ void __launch_bounds__(128) matmul_bwd_dw_bf16_small(float* dw, const bf16* dy, const bf16* x, int m, int k, int n, int vec) {
    matmul_tc<TcSmallDw, float, true>(dw, dy, x, nullptr, m, k, n, vec);
}
extern "C" __global__ void __launch_bounds__(256) matmul_bwd_dw_f32(float* dw, const float* dy, const float* x, int m, int k, int n) {
    matmul_simt<SimtGemmDw, true>(dw, dy, x, nullptr, m, k, n);
}
// split-k dW: the partials of one token range each ([splits, d_out, d_in] f32), then dW += their sum in range order
extern "C" __global__ void __launch_bounds__(128) matmul_bwd_dw_part_bf16_small(float* part, const bf16* dy, const bf16* x, int m, int k, int n, int k_chunk, int vec) {
    matmul_tc<TcSmallDw, float, false, true>(part, dy, x, nullptr, m, k, n, vec, k_chunk);
}
extern "C" __global__ void __launch_bounds__(256) matmul_bwd_dw_part_f32(float* part, const float* dy, const float* x, int m, int k, int n, int k_chunk) {
    matmul_simt<SimtGemmDw, false, true>(part, dy, x, nullptr, m, k, n, k_chunk);
}
extern "C" __global__ void __launch_bounds__(256) matmul_split_acc_f32(float* out, const float* part, int m, int n, int splits) {
    matmul_split_sum<float, float, true>(out, part, (const float*)nullptr, m, n, splits);
}

template <typename T>
__device__ void matmul_bwd_db(float* db, const T* dy, int rows, int cols) {
    __shared__ float phase_sum[8][32];
    const int tx = threadIdx.x % 32, ty = threadIdx.x / 32, col = blockIdx.x * 32 + tx;
    float s = 0.0f;
    if (col < cols)
        for (int r = ty; r < rows; r += 8) s += load(dy + (size_t)r * cols + col);
    phase_sum[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && col < cols) {
        float t = 0.0f;
#pragma unroll
        for (int p = 0; p < 8; p++) t += phase_sum[p][tx];
        db[col] += t;
    }
}
extern "C" __global__ void __launch_bounds__(256) matmul_bwd_db_f32(float* db, const float* dy, int rows, int cols) { matmul_bwd_db(db, dy, rows, cols); }
extern "C" __global__ void __launch_bounds__(256) matmul_bwd_db_bf16(float* db, const bf16* dy, int rows, int cols) { matmul_bwd_db(db, dy, rows, cols); }
