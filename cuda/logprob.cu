// Fused lm head: logits = h·W_lmᵀ, log-softmax with a temperature, gather at the taken token, with the
// [n × v] logits never written anywhere. Reference: cpu::logprob::logprob_fwd applied to
// cpu::matmul::matmul_fwd(h, W_lm).  Launcher: gpu::logprob::head_logprob.
//   z[r, j] = (h[r, :]·W[j, :]) / temp,   lse[r] = log Σ_j e^z[r, j],   logp[r] = z[r, target[r]] − lse[r]
//   h: [n, c] (final-norm output)   W: [v, c]   target: [n] (u32, < v)   logp, lse: [n] (f32)
// Two kernels:
//   head_partial_*: the GEMM of gemm.cuh over the whole vocabulary; its epilogue turns each block's
//     BM×BN logit tile into per-row (max, Σ e^(z − max)) over the tile's BN columns, written to
//     part_m, part_s: [n, nb] (nb = ceil(v / BN)); the one thread holding z[r, target[r]] writes
//     z_target[r].  f32: 64×64 SIMT tiles, block 256;  bf16: 128×128 mma tiles, block 256.
//     Grid (ceil(n / BM), nb): row blocks fastest, so the blocks resident at one time share a few
//     vocabulary tiles of W and each W tile comes from HBM about once, then from L2 (h, at most
//     4096 rows × c per launch, stays in L2). nb ≤ 65,535 (v ≤ 8.4M with 128-wide tiles).
//   head_finish: grid (n), block 256: combines a row's nb partials (strided, then a shuffle tree),
//     lse[r] = m + log s, logp[r] = z_target[r] − lse[r].
// Memory: per row nb·8 bytes of partials (9.5 KB for v = 151,936 with bf16 tiles) instead of 4·v
//   (600 KB) of logits; the launcher also walks the rows in chunks to bound the scratch.
// Traffic: W (v × c) once per launch of ≤ 4096 rows, h and the partials through L2.
// Precision: logits in f32 (bf16 operands for the bf16 kernel), expf/logf, f32 combination.
// Determinism: fixed orders (shuffle trees, warp order, strided-then-tree combine): bit-identical.
// v2 (this): grid swapped from (nb, row blocks): with vocabulary tiles fastest every row block
//   streamed all of W (272 MB at Qwen2-0.5B) from HBM, 32 times per 4096-row launch.

// (m, s) pairs: s = Σ e^(z − m). m = −inf means "no terms"; combining never forms −inf − (−inf).
__device__ __forceinline__ void lse_combine(float& m, float& s, float m2, float s2) {
    float mt = fmaxf(m, m2);
    if (mt == -F32_INF) return;
    s = (m == -F32_INF ? 0.0f : s * expf(m - mt)) + (m2 == -F32_INF ? 0.0f : s2 * expf(m2 - mt));
    m = mt;
}
__device__ __forceinline__ void lse_combine_xor(float& m, float& s, int mask) {
    float m2 = __shfl_xor_sync(0xffffffffu, m, mask), s2 = __shfl_xor_sync(0xffffffffu, s, mask);
    lse_combine(m, s, m2, s2);
}

extern "C" __global__ void __launch_bounds__(256) head_partial_bf16(float* part_m, float* part_s, float* z_target, const bf16* h,
                                                                     const bf16* w, const unsigned* target, int n, int c, int v,
                                                                     float inv_temp, int vec) {
    typedef TcLarge G;
    __shared__ float red_m[G::WN][G::BM], red_s[G::WN][G::BM];
    float acc[G::TM][G::TN][4];
    const int m0 = blockIdx.x * G::BM, n0 = blockIdx.y * G::BN, nb = gridDim.y;
    G::mainloop(acc, vec != 0, h, w, n, v, c, m0, n0);
    const int lane = threadIdx.x % 32, wn = (threadIdx.x / 32) % G::WN;
#pragma unroll
    for (int a = 0; a < G::TM; a++)
#pragma unroll
        for (int half = 0; half < 2; half++) {            // rows g and g + 8 of the 16-row mma tile
            const int rl = G::row_of(a, 2 * half), row = m0 + rl;
            const unsigned t = row < n ? target[row] : 0xffffffffu;
            float mx = -F32_INF;
#pragma unroll
            for (int b = 0; b < G::TN; b++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    const int col = n0 + G::col_of(b, i);
                    const float z = acc[a][b][2 * half + i] * inv_temp;
                    if (col < v) mx = fmaxf(mx, z);
                    if ((unsigned)col == t) z_target[row] = z;
                }
            float sm = 0.0f;
#pragma unroll
            for (int b = 0; b < G::TN; b++)
#pragma unroll
                for (int i = 0; i < 2; i++)
                    if (n0 + G::col_of(b, i) < v) sm += expf(acc[a][b][2 * half + i] * inv_temp - mx);
            lse_combine_xor(mx, sm, 1);                   // the 4 lanes of a row group hold one row
            lse_combine_xor(mx, sm, 2);
            if (lane % 4 == 0) { red_m[wn][rl] = mx; red_s[wn][rl] = sm; }
        }
    __syncthreads();
    for (int rl = threadIdx.x; rl < G::BM; rl += blockDim.x) {
        if (m0 + rl >= n) continue;
        float mx = red_m[0][rl], sm = red_s[0][rl];
        for (int k = 1; k < G::WN; k++) lse_combine(mx, sm, red_m[k][rl], red_s[k][rl]);
        part_m[(size_t)(m0 + rl) * nb + blockIdx.y] = mx;
        part_s[(size_t)(m0 + rl) * nb + blockIdx.y] = sm;
    }
}

extern "C" __global__ void __launch_bounds__(256) head_partial_f32(float* part_m, float* part_s, float* z_target, const float* h,
                                                                    const float* w, const unsigned* target, int n, int c, int v,
                                                                    float inv_temp) {
    typedef SimtGemm G;
    float acc[4][4];
    const int m0 = blockIdx.x * G::BM, n0 = blockIdx.y * G::BN, nb = gridDim.y;
    G::mainloop(acc, h, w, n, v, c, m0, n0);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int row = m0 + G::row_of(i);                 // 16 threads (half a warp) share a row
        const unsigned t = row < n ? target[row] : 0xffffffffu;
        float mx = -F32_INF, sm = 0.0f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int col = n0 + G::col_of(j);
            const float z = acc[i][j] * inv_temp;
            if (col < v) mx = fmaxf(mx, z);
            if ((unsigned)col == t) z_target[row] = z;
        }
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (n0 + G::col_of(j) < v) sm += expf(acc[i][j] * inv_temp - mx);
        for (int mask = 1; mask < 16; mask <<= 1) lse_combine_xor(mx, sm, mask);
        if (threadIdx.x % 16 == 0 && row < n) {
            part_m[(size_t)row * nb + blockIdx.y] = mx;
            part_s[(size_t)row * nb + blockIdx.y] = sm;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) head_finish(float* logp, float* lse, const float* part_m, const float* part_s,
                                                              const float* z_target, int nb) {
    __shared__ float wm[32], ws[32];
    const int r = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float mx = -F32_INF, sm = 0.0f;
    for (int b = threadIdx.x; b < nb; b += blockDim.x)
        lse_combine(mx, sm, part_m[(size_t)r * nb + b], part_s[(size_t)r * nb + b]);
    for (int mask = 16; mask > 0; mask >>= 1) lse_combine_xor(mx, sm, mask);
    if (lane == 0) { wm[warp] = mx; ws[warp] = sm; }
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = wm[0], s = ws[0];
        for (int k = 1; k < blockDim.x / 32; k++) lse_combine(m, s, wm[k], ws[k]);
        const float l = m + logf(s);
        lse[r] = l;
        logp[r] = z_target[r] - l;
    }
}

// ---------------------------------------------------------------------------------------------
// Backward of the fused head.  Reference: cpu::logprob::logprob_bwd, then cpu::matmul::matmul_bwd (no
// bias).  Launcher: gpu::logprob::head_bwd.
//   g[r] = dlogp[r] / temp,   dlogits[r, j] = g[r]·(1[j = target[r]] − e^(z[r, j] − lse[r])),   z = h·Wᵀ / temp
//   dh[r, :] += Σ_j dlogits[r, j]·W[j, :]        dW[j, :] += Σ_r dlogits[r, j]·h[r, :]
// The launcher walks the vocabulary in chunks of ≤ 8192 ids (and the rows in chunks of ≤ 4096): per
// chunk, head_dlogits_* recomputes the logits of the chunk with the forward's main loop and turns them
// into dlogits in its epilogue (lse from the forward, so no second reduction over the vocabulary),
// written to a [rows, chunk] scratch; then the GEMM backward of matmul.cu adds the chunk's dh and dW
// terms. bf16: dh is summed over the vocabulary chunks in an f32 accumulator (matmul_bwd_dx_bf16f32)
// and added to dh once per row chunk by head_dh_flush_bf16, so dh is rounded to bf16 once, not once
// per chunk (19 chunks at v = 151,936). Only one chunk of dlogits exists at a time: ≤ 4096 × 8192 × 2 bytes = 64 MiB in bf16, never
// [tokens × vocab] (2.5 GB at 8192 tokens of Qwen2's 151,936 ids).
//   head_dlogits_*: dlogits: [rows, vc] (T)   h: [rows, c]   w: the chunk's rows of W, [vc, c]
//     j0: the chunk's first id (targets are global ids);  grid (ceil(rows / BM), ceil(vc / BN)), block 256;
//     bf16: TcLarge tiles, f32: SimtGemm tiles.
// Precision: logits in f32 as in the forward; e^(z − lse) by expf; dlogits rounded once to T (bf16 for
// the bf16 path: the operands of the two mma products are bf16 anyway); dh, dW as the GEMM backward.
// Determinism: chunks in ascending order, every sum in a fixed order, no atomics: bit-identical.
// v1 (this): dlogits go through memory (written once, read by the two products: ~3 × 2 bytes per
//   logit); a fused v2 would keep each dlogits tile on chip for both products.

__device__ __forceinline__ float head_dlogit(float acc, float inv_temp, unsigned id, unsigned target, float dlogp, float lse) {
    const float g = dlogp * inv_temp;
    const float d = -g * expf(acc * inv_temp - lse);
    return id == target ? d + g : d;
}

extern "C" __global__ void __launch_bounds__(256) head_dlogits_bf16(bf16* dlogits, const bf16* h, const bf16* w, const unsigned* target,
                                                                     const float* dlogp, const float* lse, int n, int c, int vc, int j0,
                                                                     float inv_temp, int vec) {
    typedef TcLarge G;
    float acc[G::TM][G::TN][4];
    const int m0 = blockIdx.x * G::BM, n0 = blockIdx.y * G::BN;
    G::mainloop(acc, vec != 0, h, w, n, vc, c, m0, n0);
#pragma unroll
    for (int a = 0; a < G::TM; a++)
#pragma unroll
        for (int b = 0; b < G::TN; b++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int row = m0 + G::row_of(a, i), col = n0 + G::col_of(b, i);
                if (row < n && col < vc)
                    store(dlogits + (size_t)row * vc + col, head_dlogit(acc[a][b][i], inv_temp, j0 + col, target[row], dlogp[row], lse[row]));
            }
}

extern "C" __global__ void __launch_bounds__(256) head_dlogits_f32(float* dlogits, const float* h, const float* w, const unsigned* target,
                                                                    const float* dlogp, const float* lse, int n, int c, int vc, int j0,
                                                                    float inv_temp) {
    typedef SimtGemm G;
    float acc[4][4];
    const int m0 = blockIdx.x * G::BM, n0 = blockIdx.y * G::BN;
    G::mainloop(acc, h, w, n, vc, c, m0, n0);
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int row = m0 + G::row_of(i), col = n0 + G::col_of(j);
            if (row < n && col < vc)
                dlogits[(size_t)row * vc + col] = head_dlogit(acc[i][j], inv_temp, j0 + col, target[row], dlogp[row], lse[row]);
        }
}

// dh[i] += acc[i], rounded once to bf16; acc[i] = 0 for the next row chunk.  Grid (ceil(len / 256)), block 256.
extern "C" __global__ void head_dh_flush_bf16(bf16* dh, float* acc, int len) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    dh[i] = f32_to_bf16(bf16_to_f32(dh[i]) + acc[i]);
    acc[i] = 0.0f;
}
