// Next-token sampling: temperature / top-k / top-p from one row of logits and one Philox uniform.
// Reference: sampling::sample (the distribution: sampling::sampling_probs) with rng::uniform.
// Launchers: gpu::sampling::{sample, philox_uniform}.
//
//   tokens[r] = sample(logits[r, :], params, u_r),   u_r = uniform(seed, streams[r], step)
//   nonfinite[r] = the lowest id of a NaN / ±inf logit of row r, 0xffffffff when there is none
//   logp[r] = log softmax(logits[r, :] / T)[tokens[r]] in f64 (before top-k / top-p; 0 when T = 0):
//     sampling::sampled_logp, from the softmax pass's m and Σe (one log per row, no extra pass)
//   logits: [rows, v] f32   streams: [rows] u64   tokens, nonfinite: [rows] u32   logp: [rows] f64
//   scratch: [rows, v] u64
// A flagged row still gets a token (the rules below), but the host refuses it (Policy::sample: a
// non-finite logit is an error, not a token): the flags come back in the copy of the tokens.
// The distribution, exactly as src/sampling.rs defines it:
//   temperature 0: the arg-max, lowest id among ties, NaN never wins;
//   else p = softmax(x / T) in f64, each p as a fixed-point mass f = ⌊p·2^62⌋ (u64, NaN → 0); rank by
//   (f desc, id asc); top-k keeps the first k (0: all); top-p keeps the shortest prefix of that ranking
//   whose mass M satisfies M·2^32 ≥ ⌈top_p·2^32⌉·M_k (M_k: the top-k mass; top_p = 1: off); the token
//   is the first kept id, in id order, whose cumulative kept mass exceeds ⌊u53·F / 2^53⌋ (F: the kept
//   mass, u53: the uniform's 53 bits); F = 0 (NaN / +inf logits only): the arg-max.
// No sort: the kept set is {f > τ} ∪ {the first j ids with f = τ}. τ is found by a radix descent over
// the 64 bits of f in 4-bit digits: for top-k by counts, for top-p by masses (restricted to the top-k
// set). Ties are then taken in id order by a block scan, which is exactly the CPU's (f desc, id asc).
// Grid (rows), block 512: one block per row; thread t owns the contiguous ids [t·seg, (t+1)·seg), so
// thread order is id order and scans over threads are scans over ids.
// Precision: the softmax in f64 (tree sums: p may differ from the CPU's by an ulp, f by ~1 unit);
//   after it, integers only: every mass is a u64 sum (order-independent, exact), every comparison
//   exact (`reaches` is a 128-bit comparison). A token can differ from the CPU's only where one of
//   those comparisons is within a few units of 2^-62 of its boundary.
// Determinism: counts and masses are integers; the softmax sums are fixed trees: bit-identical.
// Philox4x32-10 and the 53-bit uniform are bit-identical to src/rng.rs (philox_uniform_f64 tests it).
// v2: fixed-point masses (v1 summed f64 probabilities: ties with k·top_p an integer kept
//   different nuclei on CPU and GPU, and a top-p descent could slip below its parent's mass).
// v3: a digit histogram sums its 16 bins with one transposing butterfly per warp (16 shuffles)
//   and one barrier pair (v2: 16 block_reduce calls, 80 shuffles and 32 barriers per histogram; a
//   top-k + top-p row makes 48 histograms). The same integer sums, so the same tokens; found by the
//   simulated device, where v2's ~770 reductions per row made a top-p row cost ~0.3 s. GPU speed-up
//   predicted (barriers dominate a 512-thread reduction), not yet measured.
// v4: the non-finite flag per row (one more pass over the row and one block reduction; the
//   tokens are v3's).
// v5 (this): the drawn token's log-probability per row (logp), for the trainer's sampler/scorer
//   mismatch; the tokens are v4's.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// The uniform's 53 bits; uniform = bits · 2^-53 (rng::uniform).
__device__ __forceinline__ u64 philox_bits53(u64 seed, u64 stream, u64 step) {
    unsigned c0 = (unsigned)step, c1 = (unsigned)(step >> 32), c2 = (unsigned)stream, c3 = (unsigned)(stream >> 32);
    unsigned k0 = (unsigned)seed, k1 = (unsigned)(seed >> 32);
#pragma unroll
    for (int round = 0; round < 10; round++) {
        if (round > 0) { k0 += PHILOX_W0; k1 += PHILOX_W1; }
        unsigned hi0 = __umulhi(PHILOX_M0, c0), lo0 = PHILOX_M0 * c0;
        unsigned hi1 = __umulhi(PHILOX_M1, c2), lo1 = PHILOX_M1 * c2;
        unsigned n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    }
    return ((u64)c0 << 21) | ((u64)c1 >> 11);
}

extern "C" __global__ void philox_uniform_f64(double* out, u64 seed, const u64* streams, const u64* steps, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = (double)philox_bits53(seed, streams[i], steps[i]) * (1.0 / 9007199254740992.0);   // 2^-53
}

// ---- fixed-point masses (sampling::{fixed_point, reaches}) ----
__device__ __forceinline__ u64 fixed_point(double p) { return p > 0.0 ? (u64)(p * 4611686018427387904.0) : 0ull; }   // 2^62

// mass·2^32 ≥ tp32·topk in 128 bits (NVRTC has no __int128 without a flag): compare (high, low) words.
__device__ __forceinline__ bool reaches(u64 mass, u64 tp32, u64 topk) {
    const u64 lh = mass >> 32, ll = mass << 32, rh = __umul64hi(tp32, topk), rl = tp32 * topk;
    return lh > rh || (lh == rh && ll >= rl);
}

// ---- block-wide helpers (blockDim.x a multiple of 32, ≤ 1024), fixed orders ----
struct SumD { __device__ double operator()(double a, double b) const { return a + b; } };
struct MaxD { __device__ double operator()(double a, double b) const { return fmax(a, b); } };
struct SumU { __device__ u64 operator()(u64 a, u64 b) const { return a + b; } };
struct MinI { __device__ int operator()(int a, int b) const { return min(a, b); } };

template <typename V, typename Op>
__device__ V block_reduce(V v, Op op, V* sh /*[32]*/) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    V r = sh[0];
    for (int w = 1; w < nw; w++) r = op(r, sh[w]);          // same order in every thread
    return r;
}

// Exclusive prefix sum over threads in thread order; `total` gets the block's sum.
template <typename V>
__device__ V block_exclusive_scan(V v, V* sh /*[32]*/, V& total) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    V incl = v;
    for (int o = 1; o < 32; o <<= 1) {
        V up = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl = incl + up;
    }
    __syncthreads();
    if (lane == 31) sh[warp] = incl;
    __syncthreads();
    V base = V(0);
    total = V(0);
    for (int w = 0; w < nw; w++) {
        if (w < warp) base = base + sh[w];
        total = total + sh[w];
    }
    return base + incl - v;
}

// Arg-max of x[0, v) (the CPU's scan within each thread's segment, then a commutative combine: value
// desc, NaN loses, lower id on ties — the same id as one left-to-right scan). Valid in thread 0.
__device__ int block_argmax(const float* x, int lo, int hi) {
    __shared__ float wv[32];
    __shared__ int wi[32];
    float bv = lo < hi ? x[lo] : F32_NAN;
    int bi = lo < hi ? lo : 0x7fffffff;
    for (int i = lo + 1; i < hi; i++)
        if (x[i] > bv || (bv != bv && x[i] == x[i])) { bv = x[i]; bi = i; }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        bool take = (bv != bv) ? (ov == ov || oi < bi) : (ov == ov && (ov > bv || (ov == bv && oi < bi)));
        if (take) { bv = ov; bi = oi; }
    }
    __syncthreads();
    if (threadIdx.x % 32 == 0) { wv[threadIdx.x / 32] = bv; wi[threadIdx.x / 32] = bi; }
    __syncthreads();
    if (threadIdx.x == 0)
        for (int w = 1; w < blockDim.x / 32; w++) {
            float ov = wv[w];
            int oi = wi[w];
            bool take = (bv != bv) ? (ov == ov || oi < bi) : (ov == ov && (ov > bv || (ov == bv && oi < bi)));
            if (take) { bv = ov; bi = oi; }
        }
    return bi;
}

// out[d] = Σ over the block's threads of v[d], d < 16 (blockDim.x a multiple of 32, ≤ 1024; integers,
// so the order of the additions changes nothing). Within a warp, a transposing butterfly: at the
// step with lane mask m each lane keeps half of its values and trades the other half with lane ^ m,
// so 16 values need 8 + 4 + 2 + 1 shuffles, leaving lane l with the sum over its 16-lane half of bin
// d(l) = bit-reversed (l % 16); one more xor 16 completes the warp. Then across warps through
// `sh` [32 warps × 16 bins] between two barriers (the first: earlier readers of `sh` are done).
template <typename V>
__device__ void block_sum16(V (&out)[16], V (&v)[16], V* sh) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
#pragma unroll
    for (int m = 1, half = 8; m < 16; m <<= 1, half >>= 1) {
        const bool upper = (lane & m) != 0;
#pragma unroll
        for (int i = 0; i < half; i++) {               // constant indices: v stays in registers
            const V send = upper ? v[i] : v[i + half];
            const V keep = upper ? v[i + half] : v[i];
            v[i] = keep + __shfl_xor_sync(0xffffffffu, send, m);
        }
    }
    v[0] += __shfl_xor_sync(0xffffffffu, v[0], 16);
    const int d = ((lane & 1) << 3) | ((lane & 2) << 1) | ((lane & 4) >> 1) | ((lane & 8) >> 3);
    __syncthreads();
    if (lane < 16) sh[warp * 16 + d] = v[0];
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 16; k++) {
        V t = V(0);
        for (int w = 0; w < nw; w++) t += sh[w * 16 + k];
        out[k] = t;
    }
}

// 16-bin histogram (counts, and masses when WITH_MASS) of the digit (f >> shift) & 15 over the
// thread's ids whose f match `prefix` under `mask` and pass `include`; summed over the block.
template <bool WITH_MASS, typename Include>
__device__ void digit_histogram(int (&cnt)[16], u64 (&mass)[16], const u64* f, int lo, int hi, u64 prefix, u64 mask,
                                int shift, Include include, int* shi, u64* shu) {
    int c[16];
    u64 ms[16];
#pragma unroll
    for (int d = 0; d < 16; d++) { c[d] = 0; ms[d] = 0; }
    for (int i = lo; i < hi; i++) {
        const u64 fi = f[i];
        if ((fi & mask) != prefix || !include(fi)) continue;
        const int dig = (int)((fi >> shift) & 15u);
#pragma unroll
        for (int d = 0; d < 16; d++) {                    // constant indices: the arrays stay in registers
            c[d] += dig == d;
            if (WITH_MASS) ms[d] += dig == d ? fi : 0ull;
        }
    }
    block_sum16(cnt, c, shi);
    if (WITH_MASS) block_sum16(mass, ms, shu);
}

#define SAMPLE_THREADS 512

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sampling_fwd_f32(unsigned* tokens, unsigned* nonfinite, double* logp, u64* scratch,
                                                                             const float* logits, const u64* streams, int v,
                                                                             double temperature, int top_k, double top_p, u64 seed,
                                                                             u64 step) {
    __shared__ double shd[32];
    __shared__ u64 shu[32];
    __shared__ int shi[32];
    __shared__ u64 shu16[32 * 16];                         // histogram bins per warp (block_sum16)
    __shared__ int shi16[32 * 16];
    const int row = blockIdx.x, tid = threadIdx.x;
    const int seg = ceil_div(v, blockDim.x), lo = min(tid * seg, v), hi = min(lo + seg, v);
    const float* x = logits + (size_t)row * v;
    u64* f = scratch + (size_t)row * v;

    // 0. the row's first non-finite logit (exponent bits all set: NaN or ±inf), whatever the sampling
    int bad = 0x7fffffff;
    for (int i = lo; i < hi; i++)
        if ((__float_as_uint(x[i]) & 0x7f800000u) == 0x7f800000u) { bad = i; break; }
    bad = block_reduce(bad, MinI(), shi);
    if (tid == 0) nonfinite[row] = bad == 0x7fffffff ? 0xffffffffu : (unsigned)bad;

    if (temperature == 0.0) {
        const int best = block_argmax(x, lo, hi);
        if (tid == 0) { tokens[row] = (unsigned)best; logp[row] = 0.0; }   // the arg-max is certain
        return;
    }

    // 1. p = softmax(x / T) in f64, as sampling::fixed_point_probs: m = max(x·inv_t), e = exp(x·inv_t − m),
    //    p = e / Σe; f = fixed_point(p). The scratch holds e (as bits), then f; each thread reads back
    //    only its own ids.
    const double inv_t = 1.0 / temperature;
    double mloc = -1.0 / 0.0;
    for (int i = lo; i < hi; i++) mloc = fmax(mloc, (double)x[i] * inv_t);
    const double m = block_reduce(mloc, MaxD(), shd);
    double tl = 0.0;
    for (int i = lo; i < hi; i++) {
        const double e = exp((double)x[i] * inv_t - m);
        f[i] = (u64)__double_as_longlong(e);
        tl += e;
    }
    const double total = block_reduce(tl, SumD(), shd);
    for (int i = lo; i < hi; i++) f[i] = fixed_point(__longlong_as_double((long long)f[i]) / total);

    // 2. the kept set {f > tau} ∪ {first tie_keep ids with f == tau}; keep_all: everything
    bool keep_all = true;
    u64 tau = 0;
    int tie_keep = 0;
    const bool topk_on = top_k > 0 && top_k < v, topp_on = top_p < 1.0;
    u64 tau_k = 0;
    int r_k = 0;                                           // ties at tau_k inside the top-k set
    u64 topk_mass;
    if (topk_on) {
        u64 prefix = 0, mask = 0;
        int need = top_k;
        int cnt[16];
        u64 unused[16];
        for (int shift = 60; shift >= 0; shift -= 4) {
            digit_histogram<false>(cnt, unused, f, lo, hi, prefix, mask, shift, [](u64) { return true; }, shi16, shu16);
            int d = 15;
            for (; d > 0; d--) {
                if (need <= cnt[d]) break;
                need -= cnt[d];
            }
            prefix |= (u64)d << shift;
            mask |= (u64)15 << shift;
        }
        tau_k = prefix;
        r_k = need;
        u64 ml = 0;
        for (int i = lo; i < hi; i++)
            if (f[i] > tau_k) ml += f[i];
        topk_mass = block_reduce(ml, SumU(), shu) + (u64)r_k * tau_k;   // exact
        keep_all = false;
        tau = tau_k;
        tie_keep = r_k;
    } else {
        u64 ml = 0;
        for (int i = lo; i < hi; i++) ml += f[i];
        topk_mass = block_reduce(ml, SumU(), shu);
    }
    if (topp_on) {
        // Descend in rank order (largest digit first) to the value tau at which the ranking's prefix
        // mass first reaches the threshold; the top-k ties at tau_k enter as one virtual entry (count
        // r_k, mass r_k·tau_k) so only the first r_k of them can count. Invariant: mass_above (the
        // included mass above the current bucket) does not reach, mass_above + the bucket's mass does.
        // It holds at the root (the whole top-k mass reaches: tp32 ≤ 2^32) and, the masses being exact
        // integers, a bucket's mass is exactly the sum of its sub-buckets', so some sub-bucket always
        // crosses: the v1 slip (f64 sub-bucket sums re-added in another order falling short of the
        // parent's crossing) cannot happen. The lowest non-empty digit is taken untested, which is
        // that same guarantee written into the loop.
        const u64 tp32 = (u64)ceil(top_p * 4294967296.0);
        auto include = [=](u64 b) { return !topk_on || b > tau_k; };
        u64 prefix = 0, mask = 0, mass_above = 0;
        int cnt[16];
        u64 ms[16];
        int ties = 0;
        for (int shift = 60; shift >= 0; shift -= 4) {
            digit_histogram<true>(cnt, ms, f, lo, hi, prefix, mask, shift, include, shi16, shu16);
            if (topk_on && (tau_k & mask) == prefix) {
                const int dk = (int)((tau_k >> shift) & 15u);
                cnt[dk] += r_k;
                ms[dk] += (u64)r_k * tau_k;
            }
            int dlow = 0;
            while (cnt[dlow] == 0) dlow++;                 // the bucket we are in is not empty
            int d = 15;
            for (; d > dlow; d--) {
                if (cnt[d] == 0) continue;
                if (reaches(mass_above + ms[d], tp32, topk_mass)) break;
                mass_above += ms[d];
            }
            prefix |= (u64)d << shift;
            mask |= (u64)15 << shift;
            ties = cnt[d];
        }
        // every entry of the last bucket has f = prefix: the smallest j ≥ 1 with mass_above + j·tau
        // reaching (j = ties reaches by the invariant) — the CPU's one-by-one loop, by bisection
        int jlo = 1, jhi = ties;
        while (jlo < jhi) {
            const int mid = (jlo + jhi) / 2;
            if (reaches(mass_above + (u64)mid * prefix, tp32, topk_mass)) jhi = mid;
            else jlo = mid + 1;
        }
        keep_all = false;
        tau = prefix;
        tie_keep = jlo;
    }

    // 3. ordinal of this thread's first tie at tau (id order), the kept mass F, then the inverse CDF
    int my_ties = 0;
    if (!keep_all)
        for (int i = lo; i < hi; i++) my_ties += f[i] == tau;
    int ties_total;
    const int tie_base = block_exclusive_scan(my_ties, shi, ties_total);
    auto kept = [&](u64 fi, int& ord) {
        if (keep_all) return true;
        if (fi > tau) return true;
        if (fi == tau) return ord++ < tie_keep;
        return false;
    };
    u64 kl = 0;
    {
        int ord = tie_base;
        for (int i = lo; i < hi; i++)
            if (kept(f[i], ord)) kl += f[i];
    }
    u64 kept_total;
    u64 cum = block_exclusive_scan(kl, shu, kept_total);   // exact: kept mass of the ids before this thread's
    if (kept_total == 0) {                                 // NaN / +inf logits: no token has mass (block-uniform)
        const int best = block_argmax(x, lo, hi);
        if (tid == 0) { tokens[row] = (unsigned)best; logp[row] = (double)x[best] * inv_t - m - log(total); }
        return;
    }
    // target = ⌊u53·F / 2^53⌋ < F from the 128-bit product
    const u64 u53 = philox_bits53(seed, streams[row], step);
    const u64 target = (__umul64hi(u53, kept_total) << 11) | ((u53 * kept_total) >> 53);
    int hit = 0x7fffffff;
    {
        int ord = tie_base;
        for (int i = lo; i < hi; i++) {
            if (!kept(f[i], ord)) continue;
            cum += f[i];
            if (cum > target) { hit = i; break; }
        }
    }
    hit = block_reduce(hit, MinI(), shi);                  // some id crosses: the last cum is F > target
    if (tid == 0) { tokens[row] = (unsigned)hit; logp[row] = (double)x[hit] * inv_t - m - log(total); }
}
