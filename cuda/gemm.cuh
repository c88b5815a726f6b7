// gemm.cuh — the main loops of acc = A·B, shared by matmul.cu (forward with a bias epilogue, the two
// backward products with accumulating epilogues) and logprob.cu (fused log-softmax epilogue).
// Prepended after common.cuh and ptx.cuh (mma_bf16_16816, ldmatrix) for those two families.
// Each operand is read in the layout it is stored in (row-major, the contiguous index last), chosen
// at compile time, so no transposed copy of anything is ever made:
//   A: [m, k] (A_KM = false: x in the forward, dY in dX)   or [k, m] (A_KM = true: dY in dW = dYᵀ·X)
//   B: [n, k] (B_KN = false: W in the forward, y = x·Wᵀ)   or [k, n] (B_KN = true: W in dX = dY·W, X in dW)
//   acc: [m, n] f32
// Sizes need not be multiples of any tile: out-of-range rows / columns / k are loaded as zeros and
// out-of-range outputs are not written. Each output is summed over k in one fixed order by one thread
// (no atomics): bit-identical from run to run. `mainloop_range` walks one k range of a split-k GEMM
// (matmul.cu: each range's sum is a partial, the partials are added in range order by a second pass).

// ---------------------------------------------------------------------------------------------
// bf16 on tensor cores: mma.sync.m16n8k16 (sm_80+), bf16 operands, f32 accumulators.
// Block tile BM×BN×32, WM×WN warps, each warp a (BM/WM)×(BN/WN) tile of 16×8 mma tiles.
// Global → registers → shared, double-buffered: the next k-tile's loads are in flight while the
// current one feeds the tensor cores. Shared rows are padded by 8 bf16 (16 B): with the 80-byte row
// stride the 8 row groups of a fragment load hit 8 disjoint 4-bank sets (no bank conflicts).
// Fragment layouts (PTX ISA, mma.m16n8k16, g = lane/4, t = lane%4):
//   A (row-major 16×16): reg0 = A[g][2t..2t+1], reg1 = A[g+8][2t..], reg2 = A[g][2t+8..], reg3 = A[g+8][2t+8..]
//   B ("col" 16×8 = W rows, k contiguous): reg0 = W[g][2t..2t+1], reg1 = W[g][2t+8..2t+9]
//   C (16×8 f32): c0,c1 = C[g][2t, 2t+1], c2,c3 = C[g+8][2t, 2t+1]
// A k-contiguous operand is staged as [rows][BK + 8] and its fragments are two consecutive bf16 read
// as one 32-bit word. An m- or n-contiguous operand is staged as it is stored, [BK][BM + 8] or
// [BK][BN + 8] (16-byte chunks along m / n, coalesced), and its fragments come from ldmatrix.trans:
// an 8×8 block whose rows are 8 consecutive k transposes into exactly the fragment's pairs of
// consecutive k. Row strides of 136 / 72 bf16 (272 / 144 bytes) put the 8 rows of an ldmatrix in
// 8 disjoint 4-bank groups (no bank conflicts), and keep every row 16-byte aligned.

struct Chunk { unsigned w[4]; };   // 8 bf16, 16 bytes

// 8 consecutive elements src[row, col .. col+8), zeros outside [rows, cols).
// vec: cols % 8 == 0 and src 16-byte aligned, so a chunk is wholly in or out and loads as one 16-byte
// access (a run-time flag, uniform over the grid: one instantiation keeps one set of shared buffers).
__device__ __forceinline__ Chunk load_chunk(bool vec, const bf16* src, int row, int rows, int col, int cols) {
    Chunk r = {{0u, 0u, 0u, 0u}};
    if (row >= rows || col >= cols) return r;
    const bf16* p = src + (size_t)row * cols + col;
    if (vec) {
        uint4 v = *(const uint4*)p;
        r.w[0] = v.x; r.w[1] = v.y; r.w[2] = v.z; r.w[3] = v.w;
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            unsigned lo = col + 2 * i < cols ? p[2 * i] : 0u;
            unsigned hi = col + 2 * i + 1 < cols ? p[2 * i + 1] : 0u;
            r.w[i] = lo | (hi << 16);
        }
    }
    return r;
}

template <int BM_, int BN_, int WM_, int WN_, bool A_KM = false, bool B_KN = false>
struct TcGemm {
    static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_;
    static constexpr int BK = 32, LDS = BK + 8;
    static constexpr int LDA_T = BM + 8, LDB_T = BN + 8;    // row strides of the m- / n-contiguous tiles
    static constexpr int A_ELEMS = A_KM ? BK * LDA_T : BM * LDS, B_ELEMS = B_KN ? BK * LDB_T : BN * LDS;
    static constexpr int THREADS = WM * WN * 32;
    static constexpr int WTM = BM / WM, WTN = BN / WN;     // warp tile
    static constexpr int TM = WTM / 16, TN = WTN / 8;       // mma tiles per warp
    static constexpr int CHUNKS_A = BM * BK / 8 / THREADS, CHUNKS_B = BN * BK / 8 / THREADS;
    static_assert(CHUNKS_A * THREADS * 8 == BM * BK && CHUNKS_B * THREADS * 8 == BN * BK, "tile/threads mismatch");
    static_assert(!B_KN || TN % 2 == 0, "B fragments of two n tiles per ldmatrix.x4");

    // Row / column of accumulator acc[tm][tn][i] of this thread, relative to the block's (m0, n0).
    static __device__ __forceinline__ int row_of(int tm, int i) {
        int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        return (warp / WN) * WTM + tm * 16 + lane / 4 + (i / 2) * 8;
    }
    static __device__ __forceinline__ int col_of(int tn, int i) {
        int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        return (warp % WN) * WTN + tn * 8 + (lane % 4) * 2 + (i % 2);
    }

    // Staging of 16-byte chunk e of a tile: (row, col) in the stored matrix's own coordinates, and
    // its offset in the shared tile. k-contiguous: BK / 8 = 4 chunks per row; else BM / 8 (BN / 8).
    static __device__ __forceinline__ int chunk_row(bool kmajor, int e, int mn) { return kmajor ? e / (mn / 8) : e / 4; }
    static __device__ __forceinline__ int chunk_col(bool kmajor, int e, int mn) { return kmajor ? (e % (mn / 8)) * 8 : (e % 4) * 8; }

    // x: A (as stored, see A_KM), w: B (see B_KN); m, n, k: the product's sizes.
    static __device__ __forceinline__ void mainloop(float (&acc)[TM][TN][4], bool vec, const bf16* x, const bf16* w, int m, int n, int k, int m0, int n0) {
        mainloop_range(acc, vec, x, w, m, n, k, m0, n0, 0, k);
    }

    // The same over k_lo ≤ k < k_hi only (a split-k block's range): k_lo a multiple of BK, k_hi a
    // multiple of BK or k, so a k-tile never straddles the range's end (only the matrix's, as before).
    static __device__ void mainloop_range(float (&acc)[TM][TN][4], bool vec, const bf16* x, const bf16* w, int m, int n, int k, int m0, int n0,
                                          int k_lo, int k_hi) {
        __shared__ __align__(16) bf16 As[2][A_ELEMS];
        __shared__ __align__(16) bf16 Bs[2][B_ELEMS];
        const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, wm = warp / WN, wn = warp % WN;
#pragma unroll
        for (int a = 0; a < TM; a++)
#pragma unroll
            for (int b = 0; b < TN; b++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[a][b][i] = 0.0f;

        Chunk ra[CHUNKS_A], rb[CHUNKS_B];
        auto fetch = [&](int k0) {
#pragma unroll
            for (int c = 0; c < CHUNKS_A; c++) {
                int e = tid + c * THREADS, r = chunk_row(A_KM, e, BM), col = chunk_col(A_KM, e, BM);
                ra[c] = A_KM ? load_chunk(vec, x, k0 + r, k, m0 + col, m) : load_chunk(vec, x, m0 + r, m, k0 + col, k);
            }
#pragma unroll
            for (int c = 0; c < CHUNKS_B; c++) {
                int e = tid + c * THREADS, r = chunk_row(B_KN, e, BN), col = chunk_col(B_KN, e, BN);
                rb[c] = B_KN ? load_chunk(vec, w, k0 + r, k, n0 + col, n) : load_chunk(vec, w, n0 + r, n, k0 + col, k);
            }
        };
        auto stash = [&](int buf) {
#pragma unroll
            for (int c = 0; c < CHUNKS_A; c++) {
                int e = tid + c * THREADS, r = chunk_row(A_KM, e, BM), col = chunk_col(A_KM, e, BM);
                *(uint4*)&As[buf][r * (A_KM ? LDA_T : LDS) + col] = make_uint4(ra[c].w[0], ra[c].w[1], ra[c].w[2], ra[c].w[3]);
            }
#pragma unroll
            for (int c = 0; c < CHUNKS_B; c++) {
                int e = tid + c * THREADS, r = chunk_row(B_KN, e, BN), col = chunk_col(B_KN, e, BN);
                *(uint4*)&Bs[buf][r * (B_KN ? LDB_T : LDS) + col] = make_uint4(rb[c].w[0], rb[c].w[1], rb[c].w[2], rb[c].w[3]);
            }
        };

        const int kt0 = k_lo / BK, ktiles = ceil_div(k_hi, BK);
        fetch(kt0 * BK);
        stash(0);
        __syncthreads();
        for (int kt = kt0; kt < ktiles; kt++) {
            const int cur = (kt - kt0) & 1;
            if (kt + 1 < ktiles) fetch((kt + 1) * BK);           // in flight during the mma below
#pragma unroll
            for (int kk = 0; kk < BK; kk += 16) {
                unsigned af[TM][4], bfr[TN][2];
#pragma unroll
                for (int a = 0; a < TM; a++) {
                    if (A_KM) {
                        // matrices 0-3: (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15) = a[0..3]
                        const int i = lane / 8, r = lane % 8;
                        ldmatrix_x4_trans(af[a], &As[cur][(kk + (i / 2) * 8 + r) * LDA_T + wm * WTM + a * 16 + (i % 2) * 8]);
                    } else {
                        const bf16* p = &As[cur][(wm * WTM + a * 16 + lane / 4) * LDS + kk + (lane % 4) * 2];
                        af[a][0] = *(const unsigned*)p;
                        af[a][1] = *(const unsigned*)(p + 8 * LDS);
                        af[a][2] = *(const unsigned*)(p + 8);
                        af[a][3] = *(const unsigned*)(p + 8 * LDS + 8);
                    }
                }
#pragma unroll
                for (int b = 0; b < TN; b += B_KN ? 2 : 1) {
                    if (B_KN) {
                        // matrices 0-3: (k 0-7, tile b), (k 8-15, tile b), (k 0-7, tile b+1), (k 8-15, tile b+1)
                        const int i = lane / 8, r = lane % 8;
                        unsigned q[4];
                        ldmatrix_x4_trans(q, &Bs[cur][(kk + (i % 2) * 8 + r) * LDB_T + wn * WTN + (b + i / 2) * 8]);
                        bfr[b][0] = q[0];
                        bfr[b][1] = q[1];
                        bfr[b + 1][0] = q[2];
                        bfr[b + 1][1] = q[3];
                    } else {
                        const bf16* q = &Bs[cur][(wn * WTN + b * 8 + lane / 4) * LDS + kk + (lane % 4) * 2];
                        bfr[b][0] = *(const unsigned*)q;
                        bfr[b][1] = *(const unsigned*)(q + 8);
                    }
                }
#pragma unroll
                for (int a = 0; a < TM; a++)
#pragma unroll
                    for (int b = 0; b < TN; b++) mma_bf16_16816(acc[a][b], af[a], bfr[b]);
            }
            // buffer cur^1 was last read in iteration kt-1, which every thread has left (barrier below)
            if (kt + 1 < ktiles) stash(cur ^ 1);
            __syncthreads();
        }
    }
};

// The two tile shapes the launchers choose between (gpu::matmul::MatmulTile), in each operand layout.
typedef TcGemm<128, 128, 2, 4> TcLarge;   // 256 threads, warp tile 64×32: big m (prefill, scoring)
typedef TcGemm<64, 64, 2, 2> TcSmall;     // 128 threads, warp tile 32×32: small m (decode), more blocks
typedef TcGemm<128, 128, 2, 4, false, true> TcLargeDx;   // dX = dY·W: W read [d_out, d_in] as stored
typedef TcGemm<64, 64, 2, 2, false, true> TcSmallDx;
typedef TcGemm<128, 128, 2, 4, true, true> TcLargeDw;    // dW = dYᵀ·X: dY and X read [tokens, ·] as stored
typedef TcGemm<64, 64, 2, 2, true, true> TcSmallDw;

// ---------------------------------------------------------------------------------------------
// f32 on the CUDA cores (the tight-check path): 64×64 block tile, k-step 16, 256 threads as 16×16,
// each thread a 4×4 register tile at rows ty + 16i, columns tx + 16j (coalesced stores).
// Shared tiles are stored k-major, so the inner loop reads 4 + 4 values and does 16 FMAs.

// A_KM / B_KN as for TcGemm: a transposed operand is loaded along its contiguous index (coalesced).
template <bool A_KM = false, bool B_KN = false>
struct SimtGemmT {
    static constexpr int BM = 64, BN = 64, BK = 16, THREADS = 256;
    static __device__ __forceinline__ int row_of(int i) { return threadIdx.x / 16 + 16 * i; }
    static __device__ __forceinline__ int col_of(int j) { return threadIdx.x % 16 + 16 * j; }

    static __device__ __forceinline__ void mainloop(float (&acc)[4][4], const float* x, const float* w, int m, int n, int k, int m0, int n0) {
        mainloop_range(acc, x, w, m, n, k, m0, n0, 0, k);
    }

    // over k_lo ≤ k < k_hi only, with TcGemm::mainloop_range's conditions on the range
    static __device__ void mainloop_range(float (&acc)[4][4], const float* x, const float* w, int m, int n, int k, int m0, int n0, int k_lo, int k_hi) {
        __shared__ float As[BK][BM + 4];
        __shared__ float Bs[BK][BN + 4];
        const int tid = threadIdx.x;
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
        for (int k0 = k_lo; k0 < k_hi; k0 += BK) {
#pragma unroll
            for (int l = 0; l < 4; l++) {
                // k-contiguous: 16 consecutive k of a row per half-warp; else 64 consecutive m (n) of a k row
                int e = tid + l * THREADS, r = e / BK, kk = e % BK, rt = e % BM, kt = e / BM;
                if (A_KM) As[kt][rt] = (m0 + rt < m && k0 + kt < k) ? x[(size_t)(k0 + kt) * m + m0 + rt] : 0.0f;
                else As[kk][r] = (m0 + r < m && k0 + kk < k) ? x[(size_t)(m0 + r) * k + k0 + kk] : 0.0f;
                if (B_KN) Bs[kt][rt] = (n0 + rt < n && k0 + kt < k) ? w[(size_t)(k0 + kt) * n + n0 + rt] : 0.0f;
                else Bs[kk][r] = (n0 + r < n && k0 + kk < k) ? w[(size_t)(n0 + r) * k + k0 + kk] : 0.0f;
            }
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < BK; kk++) {
                float a[4], b[4];
#pragma unroll
                for (int i = 0; i < 4; i++) a[i] = As[kk][row_of(i)];
#pragma unroll
                for (int j = 0; j < 4; j++) b[j] = Bs[kk][col_of(j)];
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
            __syncthreads();
        }
    }
};

typedef SimtGemmT<> SimtGemm;                   // y = x·Wᵀ
typedef SimtGemmT<false, true> SimtGemmDx;      // dX = dY·W
typedef SimtGemmT<true, true> SimtGemmDw;       // dW = dYᵀ·X
