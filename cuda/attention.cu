// Causal grouped-query attention over a per-sequence KV cache, for packed sequences.
// Reference: cpu::attention::attention_fwd (per sequence, probabilities not kept).
// Launchers: gpu::attention::{kv_append, attention_prefill, attention_decode}.
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
// attention_prefill_T:  grid (ceil(max tq / 16), nh, n_seqs), block 128 (ATT_PREFILL_WARPS = 4 warps, a
//   compile-time constant: the launcher's gpu::attention::PREFILL_WARPS, checked equal by
//   tests/kernels_compile.rs). A block owns 16 query rows of one head: K/V tiles of 32 keys are staged in shared memory (f32), each lane scores
//   one key of the tile, and each warp keeps an online softmax (running max m, sum l, f32 accumulator,
//   hd/32 dims per lane) for its 4 rows. The [tq × tk] score matrix never exists anywhere.
// attention_decode_T:   grid (nh, n_seqs), block 256 (ATT_DECODE_WARPS = 8 warps, compile-time like the
//   prefill's), exactly one new row per sequence (tq = 1, row seq_start[s] = s): warps split the keys
//   32 at a time, each with its own online softmax, then merge (m, l, acc) in shared memory in warp
//   order. Each warp stages its 32 keys' K in shared memory 32 dims at a time with coalesced loads.
// Precision: scores, softmax and accumulation in f32 (expf), output rounded once to T.
// Determinism: fixed orders everywhere (shuffle trees, warp-order merge): bit-identical run to run.
// v1: CUDA cores only; a tensor-core prefill (mma for QKᵀ and PV) and split-k decode are the next steps.
// v2 (decode): K staged per warp with coalesced loads (v1: each lane read its own key row, 32 sectors
//   per load instruction); the FMA order is v1's, so the results are bit-identical to v1.

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

template <typename T>
__device__ void attention_prefill(T* out, const T* q, const T* k_cache, const T* v_cache, const int* slot, const int* seq_start,
                                  const int* past, int nh, int nkv, int hd, int cap, float scale) {
    __shared__ float Qs[ATT_BQ][ATT_HD_MAX];
    __shared__ float Ks[ATT_BK][ATT_HD_MAX + 1];   // +1: lane j reads row j, column d: no bank conflicts
    __shared__ float Vs[ATT_BK][ATT_HD_MAX];
    const int s = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_BQ;
    const int row0 = seq_start[s], tq = seq_start[s + 1] - row0, p = past[s];
    if (q0 >= tq) return;                                  // whole block: no barrier is skipped by some threads only
    constexpr int NWARPS = ATT_PREFILL_WARPS, NT = NWARPS * 32, RPW = ATT_RPW;   // the launch is NT threads
    const int kvh = h / (nh / nkv), kvd = nkv * hd;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const T* kc = k_cache + (size_t)slot[s] * cap * kvd + kvh * hd;
    const T* vc = v_cache + (size_t)slot[s] * cap * kvd + kvh * hd;

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
    }
}

template <typename T>
__device__ void attention_decode(T* out, const T* q, const T* k_cache, const T* v_cache, const int* slot, const int* past,
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

#define ATT_ENTRY(T, SUF)                                                                                        \
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
        T* out, const T* q, const T* k_cache, const T* v_cache, const int* slot, const int* past, int nh, int nkv, \
        int hd, int cap, float scale) {                                                                           \
        attention_decode(out, q, k_cache, v_cache, slot, past, nh, nkv, hd, cap, scale);                          \
    }

ATT_ENTRY(float, f32)
ATT_ENTRY(bf16, bf16)
