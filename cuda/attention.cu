// Causal grouped-query attention over a per-sequence KV cache, for packed sequences; and the training
// pair over packed q, k, v without a cache: a forward that saves each row's log-sum-exp, its backward.
// Reference: cpu::attention::attention_fwd (per sequence, probabilities not kept), attention_lse,
// attention_bwd. Launchers: gpu::attention::{kv_append, attention_prefill, attention_decode,
// attention_fwd, attention_bwd}.
//
// Layouts (T = float or bf16):
//   q, out:           [n, nh, hd]   packed rows; sequence s owns rows seq_start[s] .. seq_start[s+1]
//   k_cache, v_cache: [slots, cap, nkv, hd]   one layer; sequence s lives in cache slot slot[s] and
//                     holds keys 0 .. past[s] + tq_s there (its new keys appended by kv_append first)
//   The tq_s new rows of sequence s sit at positions past[s] .. past[s] + tq_s − 1, and row i sees keys
//   0 ..= past[s] + i (causal). Query head h reads kv head h / (nh / nkv) (HF repeat_kv).
//   out[i, h] = Σ_j softmax_j(q_i·k_j · scale) v_j,   scale = 1/sqrt(hd);   hd ≤ 128, even.
//
// kv_append_T:          grid (n), block 128: writes the new rows' k, v into the cache at (slot, position).
// attention_prefill_T:  grid (ceil(max tq / rows), nh, n_seqs), rows 16 for f32 (below), 64 for bf16 (tensor
//   cores: attention_rows_tc), block 128 (ATT_PREFILL_WARPS = 4 warps, a
//   compile-time constant: the launcher's gpu::attention::PREFILL_WARPS, checked equal by
//   tests/kernels_compile.rs). A block owns 16 query rows of one head: K/V tiles of 32 keys are staged in shared memory (f32), each lane scores
//   one key of the tile, and each warp keeps an online softmax (running max m, sum l, f32 accumulator,
//   hd/32 dims per lane) for its 4 rows. The [tq × tk] score matrix never exists anywhere.
// attention_fwd_T:      the prefill's body (attention_rows) over packed q [n, nh, hd], k, v [n, nkv, hd]
//   (sequence s = rows seq_start[s] ..; no past), same grid and block; also writes lse [n, nh] f32 =
//   m + log l of the online softmax, in the scaled-score domain.
// attention_bwd_dq_T, attention_bwd_dkdv_T: the training backward, below (FlashAttention-2's scheme).
// attention_decode_T (+ attention_decode_combine_T): exactly one new row per sequence (tq = 1, row
//   seq_start[s] = s); block 256 (ATT_DECODE_WARPS = 8 warps, compile-time like the prefill's). Since v3
//   flash-decoding: a block per (256-key split, kv head, sequence) serves every query head of the kv
//   head's group, and a second kernel merges the splits in order (the section above the training backward).
// Precision: scores, softmax and accumulation in f32 (expf), output rounded once to T.
// Determinism: fixed orders everywhere (shuffle trees, warp-order merge): bit-identical run to run.
// v1: CUDA cores only; a tensor-core prefill (mma for QKᵀ and PV) and split-k decode were the next steps.
// v3 (prefill, training forward; issue 12): bf16 on tensor cores (attention_rows_tc, 64 rows per block),
//   f32 stays on CUDA cores (attention_rows): bf16 results differ from v2 by P's rounding to bf16.
// Training backward v1: CUDA cores for both types; v2: bf16 on tensor cores (attention_bwd_*_tc).
// v2 (decode): K staged per warp with coalesced loads (v1: each lane read its own key row, 32 sectors
//   per load instruction); the FMA order is v1's, so the results are bit-identical to v1.
// v3 (decode; issue 12): a block per (key split, kv head) for the whole GQA group (v2: a block per query
//   head over all keys, re-reading each K/V row once per head of the group, and one block per (head,
//   sequence) however long the sequence); the scores keep v2's FMA order, the softmax merges differ.

#define ATT_BQ 16        // query rows per prefill block (gpu::attention::PREFILL_ROWS)
#define ATT_BK 32        // keys per tile (one per lane)
#define ATT_PREFILL_WARPS 4                          // warps per prefill block (gpu::attention::PREFILL_WARPS)
#define ATT_RPW (ATT_BQ / ATT_PREFILL_WARPS)         // query rows per warp
#define ATT_DECODE_WARPS 8                           // warps per decode block (gpu::attention::DECODE_WARPS)
static_assert(ATT_BQ % ATT_PREFILL_WARPS == 0, "every warp owns the same number of query rows");
#define ATT_HD_MAX 128
#define ATT_DPL (ATT_HD_MAX / 32)   // head dims per lane

template <typename T>
__device__ void kv_append(T* k_cache, T* v_cache, const T* k, const T* v, const int* row_slot, const int* row_pos, int kvd, int cap) {
    size_t dst = ((size_t)row_slot[blockIdx.x] * cap + row_pos[blockIdx.x]) * kvd;
    size_t src = (size_t)blockIdx.x * kvd;
    for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
        k_cache[dst + i] = k[src + i];
        v_cache[dst + i] = v[src + i];
    }
}

// The query rows q0 .. q0 + ATT_BQ − 1 (q0 = blockIdx.x · ATT_BQ) of one head h of one sequence, whose
// new rows sit at rows row0 .. row0 + tq − 1 of q and out, after p cached positions; kc, vc point at
// the sequence's key / value 0 of head h's kv head, keys kvd elements apart. Writes out and, when lse
// is not null, lse[row, h] = log Σ_j exp(q·k_j · scale) (what the training backward recomputes P from).
template <typename T>
__device__ void attention_rows(T* out, float* lse, const T* q, const T* kc, const T* vc, int row0, int tq, int p, int h,
                               int nh, int kvd, int hd, float scale) {
    __shared__ float Qs[ATT_BQ][ATT_HD_MAX];
    __shared__ float Ks[ATT_BK][ATT_HD_MAX + 1];   // +1: lane j reads row j, column d: no bank conflicts
    __shared__ float Vs[ATT_BK][ATT_HD_MAX];
    const int q0 = blockIdx.x * ATT_BQ;
    if (q0 >= tq) return;                                  // whole block: no barrier is skipped by some threads only
    constexpr int NWARPS = ATT_PREFILL_WARPS, NT = NWARPS * 32, RPW = ATT_RPW;   // the launch is NT threads
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

    for (int e = threadIdx.x; e < ATT_BQ * hd; e += NT) {
        int r = e / hd, d = e % hd;
        Qs[r][d] = q0 + r < tq ? load(q + ((size_t)(row0 + q0 + r) * nh + h) * hd + d) * scale : 0.0f;
    }
    float m[RPW], l[RPW], acc[RPW][ATT_DPL];
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        m[r] = -F32_INF;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) acc[r][i] = 0.0f;
    }
    const int n_keys = p + min(q0 + ATT_BQ, tq);          // keys visible to the tile's last row
    for (int k0 = 0; k0 < n_keys; k0 += ATT_BK) {
        __syncthreads();                                   // previous tile fully consumed (and Qs written)
        for (int e = threadIdx.x; e < ATT_BK * hd; e += NT) {
            int j = e / hd, d = e % hd;
            bool ok = k0 + j < n_keys;                     // rows past the end are zeros, never garbage: 0·NaN = NaN
            Ks[j][d] = ok ? load(kc + (size_t)(k0 + j) * kvd + d) : 0.0f;
            Vs[j][d] = ok ? load(vc + (size_t)(k0 + j) * kvd + d) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            const int rr = warp + NWARPS * r, qi = q0 + rr;
            if (qi >= tq) continue;
            const int visible = p + qi + 1;                // keys 0 .. visible-1
            if (k0 >= visible) continue;                   // warp-uniform
            const int j = k0 + lane;
            float sc = -F32_INF;
            if (j < visible) {
                sc = 0.0f;
                for (int d = 0; d < hd; d++) sc = fmaf(Qs[rr][d], Ks[lane][d], sc);
            }
            const float m_new = fmaxf(m[r], warp_max(sc));      // finite: key k0 is visible
            const float corr = expf(m[r] - m_new);                // 0 on the first tile (m = −inf)
            const float pj = expf(sc - m_new);                    // 0 for masked keys
            l[r] = l[r] * corr + warp_sum(pj);
            m[r] = m_new;
            const int jn = min(ATT_BK, visible - k0);
#pragma unroll
            for (int i = 0; i < ATT_DPL; i++) acc[r][i] *= corr;
            for (int jj = 0; jj < jn; jj++) {
                const float pjj = __shfl_sync(0xffffffffu, pj, jj);
#pragma unroll
                for (int i = 0; i < ATT_DPL; i++) {
                    const int d = lane + 32 * i;
                    if (d < hd) acc[r][i] = fmaf(pjj, Vs[jj][d], acc[r][i]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        const int qi = q0 + warp + NWARPS * r;
        if (qi >= tq) continue;
        T* o = out + ((size_t)(row0 + qi) * nh + h) * hd;
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) {
            const int d = lane + 32 * i;
            if (d < hd) store(o + d, acc[r][i] / l[r]);
        }
        if (lse != nullptr && lane == 0) lse[(size_t)(row0 + qi) * nh + h] = m[r] + logf(l[r]);
    }
}

// ---- bf16 on tensor cores (mma.sync m16n8k16, f32 accumulate): the same contract as attention_rows ----
// A block owns ATC_BQ = 64 query rows (16 per warp); key tiles of ATC_BK = 32 staged as bf16 in shared
// memory (rows padded to ATC_LD = hd_max + 8 elements, 272 bytes: the 8 rows of an ldmatrix fall on 8
// disjoint 4-bank groups). Per warp and tile: S = Q·Kᵀ (A = Q rows by ldmatrix, B = K rows: K is stored
// [key][dim], which is the "col" operand), scaled and masked in f32; the online softmax on the C fragments
// (rows g and g + 8 of the warp, a quad of lanes per row: two xor shuffles); P rounded to bf16 and reused
// in registers as the A operand of P·V (the C layout of two 16×8 tiles is the A layout of one 16×16);
// V by ldmatrix .trans. head_dim is padded with zeros to a multiple of 16 (the mma's k).
// Precision: as the CUDA-core body (f32 scores, softmax, sums), except that the products are the tensor
// cores' and P enters P·V rounded to bf16 (≤ 2^-9 relative per weight, while l sums the f32 values).
#define ATC_BQ 64        // query rows per tensor-core block (gpu::attention::TC_ROWS)
#define ATC_BK 32        // keys per tile
#define ATC_LD (ATT_HD_MAX + 8)
static_assert(ATC_BQ == 16 * ATT_PREFILL_WARPS, "the tensor-core body runs in the prefill's launch: 16 rows per warp");

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    return (unsigned)f32_to_bf16(lo) | ((unsigned)f32_to_bf16(hi) << 16);
}

// Stages rows r0 .. r0 + rows − 1 of a [*, ld] bf16 matrix (row r at src + r·ld) into dst [rows][ATC_LD],
// columns 0 .. hdp − 1, zeros for rows ≥ n or columns ≥ hd; two elements (4 bytes) per access (hd even).
__device__ __forceinline__ void tc_stage(bf16 (*dst)[ATC_LD], const bf16* src, size_t ld, int r0, int rows, int n, int hd, int hdp) {
    const int pairs = hdp / 2;
    for (int e = threadIdx.x; e < rows * pairs; e += blockDim.x) {
        const int r = e / pairs, c = 2 * (e % pairs);
        const unsigned v = r0 + r < n && c < hd ? *(const unsigned*)(src + (size_t)(r0 + r) * ld + c) : 0u;
        *(unsigned*)&dst[r][c] = v;
    }
}

__device__ void attention_rows_tc(bf16* out, float* lse, const bf16* q, const bf16* kc, const bf16* vc, int row0, int tq, int p,
                                  int h, int nh, int kvd, int hd, float scale) {
    __shared__ __align__(16) bf16 Qs[ATC_BQ][ATC_LD];
    __shared__ __align__(16) bf16 Ks[ATC_BK][ATC_LD];
    __shared__ __align__(16) bf16 Vs[ATC_BK][ATC_LD];
    constexpr int NT = ATC_BK / 8, DT = ATT_HD_MAX / 8;   // S tiles per warp, output tiles (at most)
    const int q0 = blockIdx.x * ATC_BQ;
    if (q0 >= tq) return;                                  // whole block
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t4 = lane % 4;
    const int hdp = (hd + 15) / 16 * 16;
    tc_stage(Qs, q + (size_t)(row0 + q0) * nh * hd + h * hd, (size_t)nh * hd, 0, ATC_BQ, tq - q0, hd, hdp);

    const int w0 = q0 + warp * 16;                         // the warp's first row (sequence-relative)
    const int qa = w0 + g, qb = qa + 8;                    // this lane's two rows
    float o[DT][4], m[2] = {-F32_INF, -F32_INF}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int dt = 0; dt < DT; dt++)
#pragma unroll
        for (int i = 0; i < 4; i++) o[dt][i] = 0.0f;

    const int n_keys = p + min(q0 + ATC_BQ, tq);
    for (int k0 = 0; k0 < n_keys; k0 += ATC_BK) {
        __syncthreads();                                   // previous tile consumed (and Qs staged)
        tc_stage(Ks, kc, kvd, k0, ATC_BK, n_keys, hd, hdp);
        tc_stage(Vs, vc, kvd, k0, ATC_BK, n_keys, hd, hdp);
        __syncthreads();
        if (w0 >= tq || k0 > p + w0 + 15) continue;         // warp-uniform: no row of the warp sees a key here
        float sacc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) sacc[nt][i] = 0.0f;
        for (int kk = 0; kk < hdp; kk += 16) {
            unsigned a[4];
            ldmatrix_x4(a, &Qs[warp * 16 + lane % 16][kk + lane / 16 * 8]);
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                unsigned b[2];
                ldmatrix_x2(b, &Ks[nt * 8 + lane % 8][kk + (lane / 8) % 2 * 8]);
                mma_bf16_16816(sacc[nt], a, b);
            }
        }
        // scale, mask (key > p + row, or a row past the end), row maxima over the quad
        float mx[2] = {-F32_INF, -F32_INF};
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int row = i < 2 ? qa : qb, key = k0 + nt * 8 + 2 * t4 + (i & 1);
                const float sc = row < tq && key <= p + row ? sacc[nt][i] * scale : -F32_INF;
                sacc[nt][i] = sc;
                mx[i / 2] = fmaxf(mx[i / 2], sc);
            }
        float base[2], corr[2], rs[2] = {0.0f, 0.0f};
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float m_new = fmaxf(m[r], mx[r]);
            base[r] = m_new == -F32_INF ? 0.0f : m_new;    // a row with no key yet (or past the end): p = 0
            corr[r] = expf(m[r] - base[r]);
            m[r] = m_new;
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                sacc[nt][i] = expf(sacc[nt][i] - base[i / 2]);
                rs[i / 2] += sacc[nt][i];
            }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            rs[r] += __shfl_xor_sync(0xffffffffu, rs[r], 1);
            rs[r] += __shfl_xor_sync(0xffffffffu, rs[r], 2);
            l[r] = l[r] * corr[r] + rs[r];
        }
#pragma unroll
        for (int dt = 0; dt < DT; dt++)
#pragma unroll
            for (int i = 0; i < 4; i++) o[dt][i] *= corr[i / 2];
        // O += P·V: P's C fragments of key tiles 2kc, 2kc + 1 are the A fragment of keys 16kc .. 16kc + 15
#pragma unroll
        for (int kc2 = 0; kc2 < ATC_BK / 16; kc2++) {
            const unsigned a[4] = {pack_bf16(sacc[2 * kc2][0], sacc[2 * kc2][1]), pack_bf16(sacc[2 * kc2][2], sacc[2 * kc2][3]),
                                   pack_bf16(sacc[2 * kc2 + 1][0], sacc[2 * kc2 + 1][1]), pack_bf16(sacc[2 * kc2 + 1][2], sacc[2 * kc2 + 1][3])};
#pragma unroll
            for (int dt = 0; dt < DT; dt++) {
                if (dt * 8 >= hdp) break;
                unsigned b[2];
                ldmatrix_x2_trans(b, &Vs[kc2 * 16 + lane % 16][dt * 8]);
                mma_bf16_16816(o[dt], a, b);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = r == 0 ? qa : qb;
        if (row >= tq) continue;
        bf16* dst = out + ((size_t)(row0 + row) * nh + h) * hd;
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            const int d = dt * 8 + 2 * t4;
            if (d < hd) *(unsigned*)(dst + d) = pack_bf16(o[dt][2 * r] / l[r], o[dt][2 * r + 1] / l[r]);
        }
        if (lse != nullptr && t4 == 0) lse[(size_t)(row0 + row) * nh + h] = m[r] + logf(l[r]);
    }
}

// The row core per storage type: f32 on CUDA cores, bf16 on tensor cores.
__device__ __forceinline__ void attention_rows_any(float* out, float* lse, const float* q, const float* kc, const float* vc, int row0,
                                                   int tq, int p, int h, int nh, int kvd, int hd, float scale) {
    attention_rows(out, lse, q, kc, vc, row0, tq, p, h, nh, kvd, hd, scale);
}
__device__ __forceinline__ void attention_rows_any(bf16* out, float* lse, const bf16* q, const bf16* kc, const bf16* vc, int row0,
                                                   int tq, int p, int h, int nh, int kvd, int hd, float scale) {
    attention_rows_tc(out, lse, q, kc, vc, row0, tq, p, h, nh, kvd, hd, scale);
}

template <typename T>
__device__ void attention_prefill(T* out, const T* q, const T* k_cache, const T* v_cache, const int* slot, const int* seq_start,
                                  const int* past, int nh, int nkv, int hd, int cap, float scale) {
    const int s = blockIdx.z, h = blockIdx.y;
    const int row0 = seq_start[s], tq = seq_start[s + 1] - row0;
    const int kvh = h / (nh / nkv), kvd = nkv * hd;
    const T* kc = k_cache + (size_t)slot[s] * cap * kvd + kvh * hd;
    const T* vc = v_cache + (size_t)slot[s] * cap * kvd + kvh * hd;
    attention_rows_any(out, (float*)nullptr, q, kc, vc, row0, tq, past[s], h, nh, kvd, hd, scale);
}

// Training forward: packed q, k, v (no cache, no past), writes the per-row log-sum-exp too.
template <typename T>
__device__ void attention_fwd(T* out, float* lse, const T* q, const T* k, const T* v, const int* seq_start, int nh, int nkv,
                              int hd, float scale) {
    const int s = blockIdx.z, h = blockIdx.y;
    const int row0 = seq_start[s], t = seq_start[s + 1] - row0;
    const int kvh = h / (nh / nkv), kvd = nkv * hd;
    const size_t base = (size_t)row0 * kvd + kvh * hd;
    attention_rows_any(out, lse, q, k + base, v + base, row0, t, 0, h, nh, kvd, hd, scale);
}

// ---- decode v3 (issue 12): flash-decoding, the GQA group sharing each K/V read ----
// attention_decode_T: grid (ceil(max keys / ATT_SPLIT_KEYS), nkv · ceil(g / ATT_GROUP_MAX), n_seqs), block
//   ATT_DECODE_WARPS · 32 (g = nh / nkv). A block owns one split of ATT_SPLIT_KEYS consecutive keys (one
//   32-key tile per warp) of one kv head of one sequence, and the query heads of that head's group (up to
//   ATT_GROUP_MAX of them: a larger group is cut into head chunks on grid.y), so each key and value is read
//   from memory once per group instead of once per query head. Per warp: K staged 32 keys × 32 dims at a
//   time with coalesced loads, lane j scores key j for every head (each an FMA chain in d order, as v1/v2),
//   per head the tile's max, exp and sum by shuffles, then o_h = Σ_j p_hj v_j in key order, each V row read
//   once and used by every head. The block merges its warps per head in warp order:
//   m = max_w m_w, l = Σ_w l_w e^(m_w − m), o = Σ_w o_w e^(m_w − m). A sequence with one split writes
//   out = o / l; otherwise the split's (m, l, o[hd]) go to part [n_seqs, nh, max_splits, hd + 2] f32 and
// attention_decode_combine_T: grid (nh, n_seqs), block ATT_HD_MAX (a thread per dim) merges the splits of
//   each (sequence, head) in split order by the same formula and writes out = o / l.
// The split length is a constant: a sequence's bits depend on its own length only (never on the device,
// nor on the other sequences of the batch). One split computes exactly what the combine would (e^0 = 1).
#define ATT_SPLIT_KEYS 256          // keys per decode split (gpu::attention::DECODE_SPLIT_KEYS)
#define ATT_GROUP_MAX 8             // query heads per decode block (gpu::attention::DECODE_GROUP_MAX)
static_assert(ATT_SPLIT_KEYS == ATT_DECODE_WARPS * 32, "a decode split is one 32-key tile per warp");

template <typename T>
__device__ void attention_decode(T* out, float* part, const T* q, const T* k_cache, const T* v_cache, const int* slot, const int* past,
                                 int nh, int nkv, int hd, int cap, int max_splits, float scale) {
    constexpr int NWARPS = ATT_DECODE_WARPS, NT = NWARPS * 32, G = ATT_GROUP_MAX;    // the launch is NT threads
    __shared__ float Qs[G][ATT_HD_MAX];
    __shared__ float Ms[NWARPS][G], Ls[NWARPS][G];
    __shared__ float Acc[NWARPS][ATT_HD_MAX];
    __shared__ T Kt[NWARPS][32][33];                       // per warp: 32 keys × 32 dims of K, as stored
    const int s = blockIdx.z, sp = blockIdx.x, nk = past[s] + 1, splits = ceil_div(nk, ATT_SPLIT_KEYS);
    if (sp >= splits) return;                              // whole block: no barrier is skipped by some threads only
    const int g = nh / nkv, chunks = ceil_div(g, G), kvh = blockIdx.y / chunks;
    const int h0 = kvh * g + (blockIdx.y % chunks) * G, gh = min(G, (kvh + 1) * g - h0);   // heads h0 .. h0 + gh − 1
    const int kvd = nkv * hd, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const T* kc = k_cache + (size_t)slot[s] * cap * kvd + kvh * hd;
    const T* vc = v_cache + (size_t)slot[s] * cap * kvd + kvh * hd;
    for (int e = threadIdx.x; e < gh * hd; e += NT) Qs[e / hd][e % hd] = load(q + ((size_t)s * nh + h0) * hd + e) * scale;
    __syncthreads();

    const int k0 = sp * ATT_SPLIT_KEYS + warp * 32, jn = max(0, min(32, nk - k0));   // this warp's keys
    float acc[G][ATT_DPL];
#pragma unroll
    for (int h = 0; h < G; h++)
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) acc[h][i] = 0.0f;
    if (jn == 0 && lane == 0) {
        for (int h = 0; h < gh; h++) { Ms[warp][h] = -F32_INF; Ls[warp][h] = 0.0f; }   // weight 0 in the merge
    }
    if (jn > 0) {                                          // warp-uniform
        // Row stride 33: lane j reading column dd hits bank (33j + dd) mod 32 (f32) or, for 2-byte bf16,
        // banks 0..15 for even j and 16..31 for odd j: no conflicts either way.
        T (*ks)[33] = Kt[warp];
        float sc[G];
#pragma unroll
        for (int h = 0; h < G; h++) sc[h] = 0.0f;
        for (int d0 = 0; d0 < hd; d0 += 32) {
            const int d = d0 + lane;
            for (int r = 0; r < 32; r++) ks[r][lane] = r < jn && d < hd ? kc[(size_t)(k0 + r) * kvd + d] : T(0);
            __syncwarp();
            const int dn = min(32, hd - d0);
            for (int dd = 0; dd < dn; dd++) {
                const float kv = load(&ks[lane][dd]);          // one shared read, every head's FMA
#pragma unroll
                for (int h = 0; h < G; h++)
                    if (h < gh) sc[h] = fmaf(Qs[h][d0 + dd], kv, sc[h]);
            }
            __syncwarp();                                  // read before the next chunk overwrites it
        }
        // per head: the tile's max and sum go straight to shared memory (fewer live registers below)
        float p[G];
#pragma unroll
        for (int h = 0; h < G; h++) {
            if (h >= gh) continue;                         // uniform
            const float sh = lane < jn ? sc[h] : -F32_INF;
            const float mh = warp_max(sh);                 // finite: key k0 exists
            p[h] = expf(sh - mh);                          // 0 for the lanes without a key
            const float lh = warp_sum(p[h]);
            if (lane == 0) { Ms[warp][h] = mh; Ls[warp][h] = lh; }
        }
        for (int jj = 0; jj < jn; jj++) {
            // V rows: lane reads dims lane, lane + 32, …: one coalesced read per key, used by every head
            const T* vr = vc + (size_t)(k0 + jj) * kvd;
            float v[ATT_DPL];
#pragma unroll
            for (int i = 0; i < ATT_DPL; i++) v[i] = lane + 32 * i < hd ? load(vr + lane + 32 * i) : 0.0f;
#pragma unroll
            for (int h = 0; h < G; h++) {
                if (h >= gh) continue;
                const float pj = __shfl_sync(0xffffffffu, p[h], jj);
#pragma unroll
                for (int i = 0; i < ATT_DPL; i++) acc[h][i] = fmaf(pj, v[i], acc[h][i]);
            }
        }
    }
    // merge the warps per head, in warp order; one head at a time through Acc (gh is uniform)
#pragma unroll
    for (int h = 0; h < G; h++) {
        if (h >= gh) continue;
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++)
            if (lane + 32 * i < hd) Acc[warp][lane + 32 * i] = acc[h][i];
        __syncthreads();
        if (threadIdx.x < hd) {
            const int d = threadIdx.x;
            float mt = -F32_INF;
            for (int w = 0; w < NWARPS; w++) mt = fmaxf(mt, Ms[w][h]);
            float lt = 0.0f, o = 0.0f;
            for (int w = 0; w < NWARPS; w++) {
                if (Ms[w][h] == -F32_INF) continue;
                const float c = expf(Ms[w][h] - mt);
                lt += Ls[w][h] * c;
                o += Acc[w][d] * c;
            }
            const size_t sh = (size_t)s * nh + h0 + h;
            if (splits == 1) {
                store(out + sh * hd + d, o / lt);
            } else {
                float* e = part + (sh * max_splits + sp) * (hd + 2);
                if (d == 0) { e[0] = mt; e[1] = lt; }
                e[2 + d] = o;
            }
        }
        __syncthreads();                                   // Acc read before the next head overwrites it
    }
}

template <typename T>
__device__ void attention_decode_combine(T* out, const float* part, const int* past, int nh, int hd, int max_splits) {
    const int h = blockIdx.x, s = blockIdx.y, d = threadIdx.x;
    const int splits = ceil_div(past[s] + 1, ATT_SPLIT_KEYS);
    if (splits == 1 || d >= hd) return;                    // one split: attention_decode wrote out itself
    const size_t sh = (size_t)s * nh + h;
    const float* e = part + sh * max_splits * (hd + 2);
    float mt = -F32_INF;
    for (int sp = 0; sp < splits; sp++) mt = fmaxf(mt, e[sp * (hd + 2)]);
    float lt = 0.0f, o = 0.0f;
    for (int sp = 0; sp < splits; sp++) {                  // every split holds ≥ 1 key: its m is finite
        const float c = expf(e[sp * (hd + 2)] - mt);
        lt += e[sp * (hd + 2) + 1] * c;
        o += e[sp * (hd + 2) + 2 + d] * c;
    }
    store(out + sh * hd + d, o / lt);
}

// ---- decode v2: the bench baseline of v3 (kept until a GPU has measured both; then it goes) ----
// attention_decode_v2_T: grid (nh, n_seqs), block ATT_DECODE_WARPS · 32: a block per (query head, sequence)
//   walks all of the sequence's keys, its warps 32 keys at a time with their own online softmax, merged in
//   warp order; each K/V row is read once per query head of its group.
template <typename T>
__device__ void attention_decode_v2(T* out, const T* q, const T* k_cache, const T* v_cache, const int* slot, const int* past,
                                 int nh, int nkv, int hd, int cap, float scale) {
    constexpr int NWARPS = ATT_DECODE_WARPS, NT = NWARPS * 32;    // the launch is NT threads
    __shared__ float Qs[ATT_HD_MAX];
    __shared__ float Ms[NWARPS], Ls[NWARPS];
    __shared__ float Acc[NWARPS][ATT_HD_MAX];
    __shared__ T Kt[NWARPS][32][33];                       // per warp: 32 keys × 32 dims of K, as stored
    const int h = blockIdx.x, s = blockIdx.y, nk = past[s] + 1;
    const int kvh = h / (nh / nkv), kvd = nkv * hd;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const T* kc = k_cache + (size_t)slot[s] * cap * kvd + kvh * hd;
    const T* vc = v_cache + (size_t)slot[s] * cap * kvd + kvh * hd;
    T (*ks)[33] = Kt[warp];
    for (int d = threadIdx.x; d < hd; d += NT) Qs[d] = load(q + ((size_t)s * nh + h) * hd + d) * scale;
    __syncthreads();

    float m = -F32_INF, l = 0.0f, acc[ATT_DPL];
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) acc[i] = 0.0f;
    for (int k0 = warp * 32; k0 < nk; k0 += NT) {         // warp-uniform
        // lane j scores key k0 + j: sc = Σ_d Qs[d]·K[k0 + j][d] as FMAs in d order (v1's order, so the
        // same bits), reading K from a tile of 32 keys × 32 dims staged per warp: row r of the tile
        // is one coalesced read (32 consecutive dims of key k0 + r), where v1 had each lane walk its
        // own key row (32 rows, 32 sectors per load instruction). Keys past nk are staged as zeros.
        // Row stride 33: lane j reading column dd hits bank (33j + dd) mod 32 (f32) or, for 2-byte
        // bf16, banks 0..15 for even j and 16..31 for odd j: no conflicts either way.
        float sc = 0.0f;
        for (int d0 = 0; d0 < hd; d0 += 32) {
            const int d = d0 + lane;
            for (int r = 0; r < 32; r++)
                ks[r][lane] = k0 + r < nk && d < hd ? kc[(size_t)(k0 + r) * kvd + d] : T(0);
            __syncwarp();
            const int dn = min(32, hd - d0);
            for (int dd = 0; dd < dn; dd++) sc = fmaf(Qs[d0 + dd], load(&ks[lane][dd]), sc);
            __syncwarp();                                  // read before the next chunk overwrites it
        }
        if (k0 + lane >= nk) sc = -F32_INF;
        const float m_new = fmaxf(m, warp_max(sc));        // finite: key k0 < nk exists
        const float corr = expf(m - m_new);
        const float pj = expf(sc - m_new);
        l = l * corr + warp_sum(pj);
        m = m_new;
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) acc[i] *= corr;
        // V rows: lane reads dims lane, lane + 32, …: already one coalesced read per key, no staging
        const int jn = min(32, nk - k0);
        for (int jj = 0; jj < jn; jj++) {
            const float pjj = __shfl_sync(0xffffffffu, pj, jj);
            const T* vr = vc + (size_t)(k0 + jj) * kvd;
#pragma unroll
            for (int i = 0; i < ATT_DPL; i++) {
                const int d = lane + 32 * i;
                if (d < hd) acc[i] = fmaf(pjj, load(vr + d), acc[i]);
            }
        }
    }
    if (lane == 0) { Ms[warp] = m; Ls[warp] = l; }
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) {
        const int d = lane + 32 * i;
        if (d < hd) Acc[warp][d] = acc[i];
    }
    __syncthreads();
    // merge the warps' partial softmaxes in warp order; a warp that saw no key has m = −inf, weight 0
    float mt = -F32_INF;
    for (int w = 0; w < NWARPS; w++) mt = fmaxf(mt, Ms[w]);
    float lt = 0.0f;
    for (int w = 0; w < NWARPS; w++) lt += Ms[w] == -F32_INF ? 0.0f : Ls[w] * expf(Ms[w] - mt);
    for (int d = threadIdx.x; d < hd; d += NT) {
        float o = 0.0f;
        for (int w = 0; w < NWARPS; w++) o += Ms[w] == -F32_INF ? 0.0f : Acc[w][d] * expf(Ms[w] - mt);
        store(out + ((size_t)s * nh + h) * hd + d, o / lt);
    }
}

// ---- training backward (FlashAttention-2's split: D, then dQ by query tiles, dK dV by key tiles) ----
// Per head, with s_ij = q_i·k_j·scale (j ≤ i), P recomputed from the forward's lse:
//   p_ij = exp(s_ij − lse_i),  dp_ij = dO_i·v_j,  D_i = dO_i·O_i (= Σ_j p_ij dp_ij),  ds_ij = p_ij (dp_ij − D_i)
//   dq_i += scale Σ_j ds_ij k_j      dk_j += scale Σ_{h in group} Σ_i ds_ij q_i      dv_j += Σ_{h in group} Σ_i p_ij dO_i
// Both kernels compute P and dS one ATB_BQ × ATB_BK tile at a time into shared memory (bwd_scores) and never
// hold more of the T × T matrix. Every sum is a fixed-order f32 chain and no value is written by two blocks.

#define ATB_BQ 16        // query rows per backward tile (gpu::attention::BWD_ROWS)
#define ATB_BK 16        // keys per backward tile (gpu::attention::BWD_KEYS)
#define ATB_WARPS 4      // warps per backward block (gpu::attention::BWD_WARPS)
#define ATB_NT (ATB_WARPS * 32)
// Blocks per SM the register budget is set for (__launch_bounds__' second argument): 4 × 35 KB of static
// shared memory fits sm_80 (164 KB) and sm_90; without it ptxas sized sm_90 for the ~6 blocks the shared
// memory allows, 80 registers, and attention_bwd_dkdv spilled.
#define ATB_MIN_BLOCKS 4
static_assert(ATB_BQ % ATB_WARPS == 0 && ATB_BK % ATB_WARPS == 0, "every warp owns the same number of rows / keys");
static_assert(ATB_NT % ATB_BK == 0, "bwd_scores: a thread keeps one key column");

// P and dS of query rows q0 + i (i < ATB_BQ) against keys k0 + j (j < ATB_BK) of a sequence of t rows,
// into P[i][j], dS[i][j]; zero where the key is masked (k0 + j > q0 + i) or the row does not exist.
// Qs holds q·scale, dOs dO; Ks, Vs the key tile; lse_s, D_s the rows' lse and D. Thread e owns the pairs
// (e / ATB_BK + m·ATB_NT / ATB_BK, e % ATB_BK); each dot is an FMA chain in d order, as the forward's scores.
__device__ void bwd_scores(float (*P)[ATB_BK], float (*dS)[ATB_BK], const float (*Qs)[ATT_HD_MAX], const float (*dOs)[ATT_HD_MAX],
                           const float (*Ks)[ATT_HD_MAX + 1], const float (*Vs)[ATT_HD_MAX + 1], const float* lse_s,
                           const float* D_s, int q0, int k0, int t, int hd) {
    for (int e = threadIdx.x; e < ATB_BQ * ATB_BK; e += ATB_NT) {
        const int i = e / ATB_BK, j = e % ATB_BK, qi = q0 + i;
        float p = 0.0f, ds = 0.0f;
        if (qi < t && k0 + j <= qi) {
            float sc = 0.0f, dp = 0.0f;
            for (int d = 0; d < hd; d++) {
                sc = fmaf(Qs[i][d], Ks[j][d], sc);
                dp = fmaf(dOs[i][d], Vs[j][d], dp);
            }
            p = expf(sc - lse_s[i]);
            ds = p * (dp - D_s[i]);
        }
        P[i][j] = p;
        dS[i][j] = ds;
    }
}

// Stages rows r0 .. r0 + ATB_BQ − 1 (of t) of head h: Qs = q·scale, dOs = dO; zeros past t.
template <typename T>
__device__ void bwd_stage_rows(float (*Qs)[ATT_HD_MAX], float (*dOs)[ATT_HD_MAX], const T* q, const T* dout, int row0, int r0,
                               int t, int h, int nh, int hd, float scale) {
    for (int e = threadIdx.x; e < ATB_BQ * hd; e += ATB_NT) {
        const int r = e / hd, d = e % hd;
        const bool ok = r0 + r < t;
        const size_t at = ((size_t)(row0 + r0 + r) * nh + h) * hd + d;
        Qs[r][d] = ok ? load(q + at) * scale : 0.0f;
        dOs[r][d] = ok ? load(dout + at) : 0.0f;
    }
}

// Stages keys k0 .. k0 + ATB_BK − 1 (of t) of one kv head: kc, vc point at key 0 of the head; zeros past t.
template <typename T>
__device__ void bwd_stage_keys(float (*Ks)[ATT_HD_MAX + 1], float (*Vs)[ATT_HD_MAX + 1], const T* kc, const T* vc, int k0, int t,
                               int kvd, int hd) {
    for (int e = threadIdx.x; e < ATB_BK * hd; e += ATB_NT) {
        const int j = e / hd, d = e % hd;
        const bool ok = k0 + j < t;
        Ks[j][d] = ok ? load(kc + (size_t)(k0 + j) * kvd + d) : 0.0f;
        Vs[j][d] = ok ? load(vc + (size_t)(k0 + j) * kvd + d) : 0.0f;
    }
}

// attention_bwd_dq_T: grid (ceil(max t / ATB_BQ), nh, n_seqs), block ATB_NT. A block owns ATB_BQ query rows of
// one head: computes D_i = dO_i·O_i (a lane-strided partial per warp, xor tree) and writes it to delta for
// the dK/dV kernel, then walks the key tiles 0 ..= its last row: dq_i += scale · Σ_j ds_ij k_j in key
// order (warp w owns rows w + 4r, lane the dims lane + 32i), added to dq's old value and rounded once.
template <typename T>
__device__ void attention_bwd_dq(T* dq, float* delta, const T* dout, const T* q, const T* k, const T* v, const T* out,
                                 const float* lse, const int* seq_start, int nh, int nkv, int hd, float scale) {
    __shared__ float Qs[ATB_BQ][ATT_HD_MAX], dOs[ATB_BQ][ATT_HD_MAX];
    __shared__ float Ks[ATB_BK][ATT_HD_MAX + 1], Vs[ATB_BK][ATT_HD_MAX + 1];
    __shared__ float P[ATB_BQ][ATB_BK], dS[ATB_BQ][ATB_BK];
    __shared__ float lse_s[ATB_BQ], D_s[ATB_BQ];
    constexpr int RPW = ATB_BQ / ATB_WARPS;
    const int s = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATB_BQ;
    const int row0 = seq_start[s], t = seq_start[s + 1] - row0;
    if (q0 >= t) return;                                   // whole block
    const int kvh = h / (nh / nkv), kvd = nkv * hd;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const size_t kv_base = (size_t)row0 * kvd + kvh * hd;

    bwd_stage_rows(Qs, dOs, q, dout, row0, q0, t, h, nh, hd, scale);
    for (int r = 0; r < RPW; r++) {
        const int rr = warp + ATB_WARPS * r, qi = q0 + rr;
        float part = 0.0f;
        if (qi < t)
            for (int d = lane; d < hd; d += 32) {
                const size_t at = ((size_t)(row0 + qi) * nh + h) * hd + d;
                part = fmaf(load(dout + at), load(out + at), part);
            }
        const float D = warp_sum(part);
        if (lane == 0) {
            D_s[rr] = D;
            lse_s[rr] = qi < t ? lse[(size_t)(row0 + qi) * nh + h] : 0.0f;
            if (qi < t) delta[(size_t)(row0 + qi) * nh + h] = D;
        }
    }
    float acc[RPW][ATT_DPL];
#pragma unroll
    for (int r = 0; r < RPW; r++)
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) acc[r][i] = 0.0f;

    const int n_keys = min(q0 + ATB_BQ, t);                // keys visible to the tile's last row
    for (int k0 = 0; k0 < n_keys; k0 += ATB_BK) {
        __syncthreads();                                   // previous tile consumed (and the rows staged)
        bwd_stage_keys(Ks, Vs, k + kv_base, v + kv_base, k0, n_keys, kvd, hd);
        __syncthreads();
        bwd_scores(P, dS, Qs, dOs, Ks, Vs, lse_s, D_s, q0, k0, t, hd);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            const int rr = warp + ATB_WARPS * r;
            for (int j = 0; j < ATB_BK; j++) {
                const float ds = dS[rr][j];
#pragma unroll
                for (int i = 0; i < ATT_DPL; i++) {
                    const int d = lane + 32 * i;
                    if (d < hd) acc[r][i] = fmaf(ds, Ks[j][d], acc[r][i]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RPW; r++) {
        const int qi = q0 + warp + ATB_WARPS * r;
        if (qi >= t) continue;
        T* o = dq + ((size_t)(row0 + qi) * nh + h) * hd;
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) {
            const int d = lane + 32 * i;
            if (d < hd) store(o + d, load(o + d) + scale * acc[r][i]);
        }
    }
}

// attention_bwd_dkdv_T: grid (ceil(max t / ATB_BK), nkv, n_seqs), block ATB_NT; after attention_bwd_dq (reads
// its delta). A block owns ATB_BK keys of one kv head and walks the group's query heads in ascending order,
// for each the query tiles that see its keys (rows ≥ its first key) in row order:
//   dv_j += Σ p_ij dO_i,  dk_j += Σ ds_ij (q_i·scale)
// (warp w owns keys w + 4r, lane the dims lane + 32i), so the group's heads are summed in a fixed order
// in registers, without atomics; added to the old values and rounded once at the end.
template <typename T>
__device__ void attention_bwd_dkdv(T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const float* lse,
                                   const float* delta, const int* seq_start, int nh, int nkv, int hd, float scale) {
    __shared__ float Qs[ATB_BQ][ATT_HD_MAX], dOs[ATB_BQ][ATT_HD_MAX];
    __shared__ float Ks[ATB_BK][ATT_HD_MAX + 1], Vs[ATB_BK][ATT_HD_MAX + 1];
    __shared__ float P[ATB_BQ][ATB_BK], dS[ATB_BQ][ATB_BK];
    __shared__ float lse_s[ATB_BQ], D_s[ATB_BQ];
    constexpr int KPW = ATB_BK / ATB_WARPS;
    const int s = blockIdx.z, g = blockIdx.y, k0 = blockIdx.x * ATB_BK;
    const int row0 = seq_start[s], t = seq_start[s + 1] - row0;
    if (k0 >= t) return;                                   // whole block
    const int group = nh / nkv, kvd = nkv * hd;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const size_t kv_base = (size_t)row0 * kvd + g * hd;

    bwd_stage_keys(Ks, Vs, k + kv_base, v + kv_base, k0, t, kvd, hd);
    float acc_k[KPW][ATT_DPL], acc_v[KPW][ATT_DPL];
#pragma unroll
    for (int r = 0; r < KPW; r++)
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) acc_k[r][i] = acc_v[r][i] = 0.0f;

    for (int h = g * group; h < (g + 1) * group; h++) {
        for (int q0 = k0 / ATB_BQ * ATB_BQ; q0 < t; q0 += ATB_BQ) {
            __syncthreads();                               // previous tile consumed (and the keys staged)
            bwd_stage_rows(Qs, dOs, q, dout, row0, q0, t, h, nh, hd, scale);
            for (int r = threadIdx.x; r < ATB_BQ; r += ATB_NT) {
                const bool ok = q0 + r < t;
                lse_s[r] = ok ? lse[(size_t)(row0 + q0 + r) * nh + h] : 0.0f;
                D_s[r] = ok ? delta[(size_t)(row0 + q0 + r) * nh + h] : 0.0f;
            }
            __syncthreads();
            bwd_scores(P, dS, Qs, dOs, Ks, Vs, lse_s, D_s, q0, k0, t, hd);
            __syncthreads();
#pragma unroll
            for (int r = 0; r < KPW; r++) {
                const int j = warp + ATB_WARPS * r;
                for (int i = 0; i < ATB_BQ; i++) {
                    const float p = P[i][j], ds = dS[i][j];
#pragma unroll
                    for (int u = 0; u < ATT_DPL; u++) {
                        const int d = lane + 32 * u;
                        if (d < hd) {
                            acc_v[r][u] = fmaf(p, dOs[i][d], acc_v[r][u]);
                            acc_k[r][u] = fmaf(ds, Qs[i][d], acc_k[r][u]);
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < KPW; r++) {
        const int kj = k0 + warp + ATB_WARPS * r;
        if (kj >= t) continue;
        const size_t at = (size_t)(row0 + kj) * kvd + g * hd;
#pragma unroll
        for (int u = 0; u < ATT_DPL; u++) {
            const int d = lane + 32 * u;
            if (d < hd) {
                store(dk + at + d, load(dk + at + d) + acc_k[r][u]);
                store(dv + at + d, load(dv + at + d) + acc_v[r][u]);
            }
        }
    }
}

// ---- bf16 backward on tensor cores: the same two kernels' contracts, 64 rows (dq) / keys (dk dv) per block ----
// attention_bwd_dq (bf16): a warp owns 16 query rows; per key tile of ATB_TC_K = 16 it forms S = Q·Kᵀ and
// dP = dO·Vᵀ (two 16×16 C tiles by mma), P = exp(S·scale − lse) and dS = P (dP − D) on the fragments, and
// dQ += dS·K with dS rounded to bf16 as the A operand (K by ldmatrix .trans). attention_bwd_dkdv (bf16): a
// warp owns 16 keys; per query tile of 16 rows it forms Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ directly (keys as the
// mma's rows), then dV += Pᵀ·dO and dK += dSᵀ·Q (Pᵀ, dSᵀ rounded to bf16; dO, Q by ldmatrix .trans), the
// group's heads in ascending order. Shared memory: 64 rows of two operands + 16 of two more, 43.5 KB.
// Precision: f32 products and sums; P, dS enter their second product rounded to bf16 (≤ 2^-9 each).
#define ATB_TC 64        // query rows (dq) / keys (dk dv) per tensor-core block (gpu::attention::TC_ROWS)
#define ATB_TC_K 16      // the other side's tile
#define ATB_TC_MIN_BLOCKS 2   // register budget: 255 per thread (dk and dv accumulate 2·hd/8·4 f32 per lane)
static_assert(ATB_TC == 16 * ATB_WARPS, "16 rows or keys per warp");

__device__ void attention_bwd_dq_tc(bf16* dq, float* delta, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                                    const bf16* out, const float* lse, const int* seq_start, int nh, int nkv, int hd, float scale) {
    __shared__ __align__(16) bf16 Qs[ATB_TC][ATC_LD], dOs[ATB_TC][ATC_LD];
    __shared__ __align__(16) bf16 Ks[ATB_TC_K][ATC_LD], Vs[ATB_TC_K][ATC_LD];
    constexpr int DT = ATT_HD_MAX / 8;
    const int s = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATB_TC;
    const int row0 = seq_start[s], t = seq_start[s + 1] - row0;
    if (q0 >= t) return;                                   // whole block
    const int kvh = h / (nh / nkv), kvd = nkv * hd;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t4 = lane % 4;
    const int hdp = (hd + 15) / 16 * 16;
    const size_t qoff = (size_t)(row0 + q0) * nh * hd + h * hd, kv_base = (size_t)row0 * kvd + kvh * hd;
    tc_stage(Qs, q + qoff, (size_t)nh * hd, 0, ATB_TC, t - q0, hd, hdp);
    tc_stage(dOs, dout + qoff, (size_t)nh * hd, 0, ATB_TC, t - q0, hd, hdp);

    const int w0 = q0 + warp * 16, qa = w0 + g, qb = qa + 8;
    // D of the warp's 16 rows (lane-strided partial, xor tree), written to delta; lanes keep their rows'
    float Dr[2] = {0.0f, 0.0f}, Lr[2];
    for (int r = 0; r < 16; r++) {
        const int row = w0 + r;
        float part = 0.0f;
        if (row < t)
            for (int d = lane; d < hd; d += 32) {
                const size_t at = ((size_t)(row0 + row) * nh + h) * hd + d;
                part = fmaf(bf16_to_f32(dout[at]), bf16_to_f32(out[at]), part);
            }
        const float D = warp_sum(part);
        if (r == g) Dr[0] = D;
        if (r == g + 8) Dr[1] = D;
        if (lane == 0 && row < t) delta[(size_t)(row0 + row) * nh + h] = D;
    }
    Lr[0] = qa < t ? lse[(size_t)(row0 + qa) * nh + h] : 0.0f;
    Lr[1] = qb < t ? lse[(size_t)(row0 + qb) * nh + h] : 0.0f;
    float acc[DT][4];
#pragma unroll
    for (int dt = 0; dt < DT; dt++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[dt][i] = 0.0f;

    const int n_keys = min(q0 + ATB_TC, t);
    for (int k0 = 0; k0 < n_keys; k0 += ATB_TC_K) {
        __syncthreads();                                   // previous tile consumed (and Q, dO staged)
        tc_stage(Ks, k + kv_base, kvd, k0, ATB_TC_K, n_keys, hd, hdp);
        tc_stage(Vs, v + kv_base, kvd, k0, ATB_TC_K, n_keys, hd, hdp);
        __syncthreads();
        if (w0 >= t || k0 > w0 + 15) continue;             // warp-uniform: no row of the warp sees these keys
        float sc[2][4] = {}, dp[2][4] = {};
        for (int kk = 0; kk < hdp; kk += 16) {
            unsigned aq[4], ado[4];
            ldmatrix_x4(aq, &Qs[warp * 16 + lane % 16][kk + lane / 16 * 8]);
            ldmatrix_x4(ado, &dOs[warp * 16 + lane % 16][kk + lane / 16 * 8]);
#pragma unroll
            for (int nt = 0; nt < 2; nt++) {
                unsigned bk[2], bv[2];
                ldmatrix_x2(bk, &Ks[nt * 8 + lane % 8][kk + (lane / 8) % 2 * 8]);
                ldmatrix_x2(bv, &Vs[nt * 8 + lane % 8][kk + (lane / 8) % 2 * 8]);
                mma_bf16_16816(sc[nt], aq, bk);
                mma_bf16_16816(dp[nt], ado, bv);
            }
        }
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int row = i < 2 ? qa : qb, key = k0 + nt * 8 + 2 * t4 + (i & 1);
                const float pr = row < t && key <= row ? expf(sc[nt][i] * scale - Lr[i / 2]) : 0.0f;
                sc[nt][i] = pr * (dp[nt][i] - Dr[i / 2]);  // dS
            }
        const unsigned a[4] = {pack_bf16(sc[0][0], sc[0][1]), pack_bf16(sc[0][2], sc[0][3]), pack_bf16(sc[1][0], sc[1][1]),
                               pack_bf16(sc[1][2], sc[1][3])};
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            if (dt * 8 >= hdp) break;
            unsigned b[2];
            ldmatrix_x2_trans(b, &Ks[lane % 16][dt * 8]);
            mma_bf16_16816(acc[dt], a, b);
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = r == 0 ? qa : qb;
        if (row >= t) continue;
        bf16* dst = dq + ((size_t)(row0 + row) * nh + h) * hd;
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            const int d = dt * 8 + 2 * t4;
            if (d < hd) {
                const unsigned old = *(const unsigned*)(dst + d);
                *(unsigned*)(dst + d) = pack_bf16(bf16_to_f32(old & 0xffffu) + scale * acc[dt][2 * r],
                                                  bf16_to_f32(old >> 16) + scale * acc[dt][2 * r + 1]);
            }
        }
    }
}

__device__ void attention_bwd_dkdv_tc(bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                                      const float* lse, const float* delta, const int* seq_start, int nh, int nkv, int hd,
                                      float scale) {
    __shared__ __align__(16) bf16 Ks[ATB_TC][ATC_LD], Vs[ATB_TC][ATC_LD];
    __shared__ __align__(16) bf16 Qs[ATB_TC_K][ATC_LD], dOs[ATB_TC_K][ATC_LD];
    __shared__ float lse_s[ATB_TC_K], D_s[ATB_TC_K];
    constexpr int DT = ATT_HD_MAX / 8;
    const int s = blockIdx.z, gk = blockIdx.y, k0 = blockIdx.x * ATB_TC;
    const int row0 = seq_start[s], t = seq_start[s + 1] - row0;
    if (k0 >= t) return;                                   // whole block
    const int group = nh / nkv, kvd = nkv * hd;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t4 = lane % 4;
    const int hdp = (hd + 15) / 16 * 16;
    const size_t kv_base = (size_t)row0 * kvd + gk * hd;
    tc_stage(Ks, k + kv_base, kvd, k0, ATB_TC, t, hd, hdp);
    tc_stage(Vs, v + kv_base, kvd, k0, ATB_TC, t, hd, hdp);

    const int kw0 = k0 + warp * 16, ka = kw0 + g, kb = ka + 8;   // the warp's keys; this lane's two
    float acc_k[DT][4], acc_v[DT][4];
#pragma unroll
    for (int dt = 0; dt < DT; dt++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc_k[dt][i] = acc_v[dt][i] = 0.0f;

    for (int h = gk * group; h < (gk + 1) * group; h++) {
        for (int q0 = k0 / ATB_TC_K * ATB_TC_K; q0 < t; q0 += ATB_TC_K) {
            __syncthreads();                               // previous tile consumed (and K, V staged)
            const size_t qoff = (size_t)row0 * nh * hd + h * hd;
            tc_stage(Qs, q + qoff, (size_t)nh * hd, q0, ATB_TC_K, t, hd, hdp);
            tc_stage(dOs, dout + qoff, (size_t)nh * hd, q0, ATB_TC_K, t, hd, hdp);
            for (int r = threadIdx.x; r < ATB_TC_K; r += blockDim.x) {
                const bool ok = q0 + r < t;
                lse_s[r] = ok ? lse[(size_t)(row0 + q0 + r) * nh + h] : 0.0f;
                D_s[r] = ok ? delta[(size_t)(row0 + q0 + r) * nh + h] : 0.0f;
            }
            __syncthreads();
            if (kw0 >= t || q0 + ATB_TC_K - 1 < kw0) continue;   // warp-uniform: no query here sees its keys
            float sc[2][4] = {}, dp[2][4] = {};
            for (int kk = 0; kk < hdp; kk += 16) {
                unsigned ak[4], av[4];
                ldmatrix_x4(ak, &Ks[warp * 16 + lane % 16][kk + lane / 16 * 8]);
                ldmatrix_x4(av, &Vs[warp * 16 + lane % 16][kk + lane / 16 * 8]);
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    unsigned bq[2], bdo[2];
                    ldmatrix_x2(bq, &Qs[nt * 8 + lane % 8][kk + (lane / 8) % 2 * 8]);
                    ldmatrix_x2(bdo, &dOs[nt * 8 + lane % 8][kk + (lane / 8) % 2 * 8]);
                    mma_bf16_16816(sc[nt], ak, bq);
                    mma_bf16_16816(dp[nt], av, bdo);
                }
            }
            // C element i of tile nt: key (i < 2 ? ka : kb), query q0 + 8nt + 2t4 + (i & 1)
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int key = i < 2 ? ka : kb, c = nt * 8 + 2 * t4 + (i & 1), qi = q0 + c;
                    const float pr = qi < t && key <= qi ? expf(sc[nt][i] * scale - lse_s[c]) : 0.0f;
                    sc[nt][i] = pr;
                    dp[nt][i] = pr * (dp[nt][i] - D_s[c]);        // dSᵀ
                }
            const unsigned ap[4] = {pack_bf16(sc[0][0], sc[0][1]), pack_bf16(sc[0][2], sc[0][3]), pack_bf16(sc[1][0], sc[1][1]),
                                    pack_bf16(sc[1][2], sc[1][3])};
            const unsigned ads[4] = {pack_bf16(dp[0][0], dp[0][1]), pack_bf16(dp[0][2], dp[0][3]), pack_bf16(dp[1][0], dp[1][1]),
                                     pack_bf16(dp[1][2], dp[1][3])};
#pragma unroll
            for (int dt = 0; dt < DT; dt++) {
                if (dt * 8 >= hdp) break;
                unsigned bdo[2], bq[2];
                ldmatrix_x2_trans(bdo, &dOs[lane % 16][dt * 8]);
                ldmatrix_x2_trans(bq, &Qs[lane % 16][dt * 8]);
                mma_bf16_16816(acc_v[dt], ap, bdo);
                mma_bf16_16816(acc_k[dt], ads, bq);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int key = r == 0 ? ka : kb;
        if (key >= t) continue;
        const size_t at = (size_t)(row0 + key) * kvd + gk * hd;
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            const int d = dt * 8 + 2 * t4;
            if (d < hd) {
                const unsigned ok_ = *(const unsigned*)(dk + at + d), ov = *(const unsigned*)(dv + at + d);
                *(unsigned*)(dk + at + d) = pack_bf16(bf16_to_f32(ok_ & 0xffffu) + scale * acc_k[dt][2 * r],
                                                      bf16_to_f32(ok_ >> 16) + scale * acc_k[dt][2 * r + 1]);
                *(unsigned*)(dv + at + d) = pack_bf16(bf16_to_f32(ov & 0xffffu) + acc_v[dt][2 * r],
                                                      bf16_to_f32(ov >> 16) + acc_v[dt][2 * r + 1]);
            }
        }
    }
}

// The backward per storage type: f32 on CUDA cores, bf16 on tensor cores.
__device__ __forceinline__ void attention_bwd_dq_any(float* dq, float* delta, const float* dout, const float* q, const float* k,
                                                     const float* v, const float* out, const float* lse, const int* seq_start, int nh,
                                                     int nkv, int hd, float scale) {
    attention_bwd_dq(dq, delta, dout, q, k, v, out, lse, seq_start, nh, nkv, hd, scale);
}
__device__ __forceinline__ void attention_bwd_dq_any(bf16* dq, float* delta, const bf16* dout, const bf16* q, const bf16* k,
                                                     const bf16* v, const bf16* out, const float* lse, const int* seq_start, int nh,
                                                     int nkv, int hd, float scale) {
    attention_bwd_dq_tc(dq, delta, dout, q, k, v, out, lse, seq_start, nh, nkv, hd, scale);
}
__device__ __forceinline__ void attention_bwd_dkdv_any(float* dk, float* dv, const float* dout, const float* q, const float* k,
                                                       const float* v, const float* lse, const float* delta, const int* seq_start,
                                                       int nh, int nkv, int hd, float scale) {
    attention_bwd_dkdv(dk, dv, dout, q, k, v, lse, delta, seq_start, nh, nkv, hd, scale);
}
__device__ __forceinline__ void attention_bwd_dkdv_any(bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k,
                                                       const bf16* v, const float* lse, const float* delta, const int* seq_start,
                                                       int nh, int nkv, int hd, float scale) {
    attention_bwd_dkdv_tc(dk, dv, dout, q, k, v, lse, delta, seq_start, nh, nkv, hd, scale);
}

#define ATT_ENTRY(T, SUF, BWD_MIN_BLOCKS)                                                                                      \
    extern "C" __global__ void kv_append_##SUF(T* k_cache, T* v_cache, const T* k, const T* v, const int* row_slot, \
                                               const int* row_pos, int kvd, int cap) {                            \
        kv_append(k_cache, v_cache, k, v, row_slot, row_pos, kvd, cap);                                           \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(ATT_PREFILL_WARPS * 32) attention_prefill_##SUF(                                    \
        T* out, const T* q, const T* k_cache, const T* v_cache, const int* slot, const int* seq_start,            \
        const int* past, int nh, int nkv, int hd, int cap, float scale) {                                         \
        attention_prefill(out, q, k_cache, v_cache, slot, seq_start, past, nh, nkv, hd, cap, scale);              \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(ATT_DECODE_WARPS * 32) attention_decode_##SUF(                                     \
        T* out, float* part, const T* q, const T* k_cache, const T* v_cache, const int* slot, const int* past, int nh, \
        int nkv, int hd, int cap, int max_splits, float scale) {                                                  \
        attention_decode(out, part, q, k_cache, v_cache, slot, past, nh, nkv, hd, cap, max_splits, scale);        \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(ATT_HD_MAX) attention_decode_combine_##SUF(                      \
        T* out, const float* part, const int* past, int nh, int hd, int max_splits) {                              \
        attention_decode_combine(out, part, past, nh, hd, max_splits);                                            \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(ATT_DECODE_WARPS * 32) attention_decode_v2_##SUF(                \
        T* out, const T* q, const T* k_cache, const T* v_cache, const int* slot, const int* past, int nh, int nkv, \
        int hd, int cap, float scale) {                                                                           \
        attention_decode_v2(out, q, k_cache, v_cache, slot, past, nh, nkv, hd, cap, scale);                       \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(ATT_PREFILL_WARPS * 32) attention_fwd_##SUF(                     \
        T* out, float* lse, const T* q, const T* k, const T* v, const int* seq_start, int nh, int nkv, int hd,    \
        float scale) {                                                                                            \
        attention_fwd(out, lse, q, k, v, seq_start, nh, nkv, hd, scale);                                          \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(ATB_NT, BWD_MIN_BLOCKS) attention_bwd_dq_##SUF(                              \
        T* dq, float* delta, const T* dout, const T* q, const T* k, const T* v, const T* out, const float* lse,   \
        const int* seq_start, int nh, int nkv, int hd, float scale) {                                             \
        attention_bwd_dq_any(dq, delta, dout, q, k, v, out, lse, seq_start, nh, nkv, hd, scale);                  \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(ATB_NT, BWD_MIN_BLOCKS) attention_bwd_dkdv_##SUF(                              \
        T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const float* lse, const float* delta,     \
        const int* seq_start, int nh, int nkv, int hd, float scale) {                                             \
        attention_bwd_dkdv_any(dk, dv, dout, q, k, v, lse, delta, seq_start, nh, nkv, hd, scale);                 \
    }

ATT_ENTRY(float, f32, ATB_MIN_BLOCKS)
ATT_ENTRY(bf16, bf16, ATB_TC_MIN_BLOCKS)
