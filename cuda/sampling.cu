// Next-token sampling: temperature / top-k / top-p from one row of logits and one Philox uniform.
// Reference: sampling::sample (the distribution: sampling::sampling_probs) with rng::uniform.
// Launchers: gpu::sampling::{sample, philox_uniform}.
//
//   tokens[r] = sample(logits[r, :], params, u_r),   u_r = uniform(seed, streams[r], step)
//   logits: [rows, v] f32   streams: [rows] u64   tokens: [rows] u32   scratch: [rows, v] f64
// The distribution, exactly as src/sampling.rs defines it (all in f64, like the CPU):
//   temperature 0: the arg-max, lowest id among ties, NaN never wins;
//   else p = softmax(x / T); rank by (p desc, id asc); top-k keeps the first k (0: all); top-p keeps the
//   shortest prefix of that ranking whose mass over the top-k mass reaches top_p; renormalise; the token
//   is the first id, in id order, whose cumulative kept mass exceeds u · total.
// No sort: the kept set is {p > τ} ∪ {the first j ids with p = τ}. τ is found by a radix descent over
// the bits of p (non-negative doubles order like their bit patterns) in 4-bit digits: for top-k by
// counts, for top-p by masses (restricted to the top-k set). Ties are then taken in id order by a
// block scan, which is exactly the CPU's (p desc, id asc) rank order.
// Grid (rows), block 512: one block per row; thread t owns the contiguous ids [t·seg, (t+1)·seg), so
// thread order is id order and scans over threads are scans over ids.
// Precision: f64 throughout; sums are trees, not the CPU's left-to-right order, so a decision can
//   differ only when u (or the top-p mass) is within ~1e-15 relative of a boundary.
// Determinism: counts are integers; sums are fixed trees: bit-identical from run to run.
// Philox4x32-10 and the 53-bit uniform are bit-identical to src/rng.rs (philox_uniform_f64 tests it).

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ double philox_uniform(u64 seed, u64 stream, u64 step) {
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
    u64 bits = ((u64)c0 << 21) | ((u64)c1 >> 11);
    return (double)bits * (1.0 / 9007199254740992.0);   // 2^-53
}

extern "C" __global__ void philox_uniform_f64(double* out, u64 seed, const u64* streams, const u64* steps, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = philox_uniform(seed, streams[i], steps[i]);
}

// ---- block-wide helpers (blockDim.x a multiple of 32, ≤ 1024), fixed orders ----
struct SumD { __device__ double operator()(double a, double b) const { return a + b; } };
struct MaxD { __device__ double operator()(double a, double b) const { return fmax(a, b); } };
struct SumI { __device__ int operator()(int a, int b) const { return a + b; } };
struct MinI { __device__ int operator()(int a, int b) const { return min(a, b); } };
struct MaxI { __device__ int operator()(int a, int b) const { return max(a, b); } };

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

__device__ __forceinline__ u64 dbits(double p) { return (u64)__double_as_longlong(p); }

// 16-bin histogram (counts, and masses when WITH_MASS) of the digit (bits >> shift) & 15 over the
// thread's ids whose bits match `prefix` under `mask` and pass `include`; summed over the block.
template <bool WITH_MASS, typename Include>
__device__ void digit_histogram(int (&cnt)[16], double (&mass)[16], const double* p, int lo, int hi, u64 prefix, u64 mask,
                                int shift, Include include, int* shi, double* shd) {
    int c[16];
    double ms[16];
#pragma unroll
    for (int d = 0; d < 16; d++) { c[d] = 0; ms[d] = 0.0; }
    for (int i = lo; i < hi; i++) {
        const double pi = p[i];
        const u64 b = dbits(pi);
        if ((b & mask) != prefix || !include(i, b)) continue;
        const int dig = (int)((b >> shift) & 15u);
#pragma unroll
        for (int d = 0; d < 16; d++) {                    // constant indices: the arrays stay in registers
            c[d] += dig == d;
            if (WITH_MASS) ms[d] += dig == d ? pi : 0.0;
        }
    }
#pragma unroll
    for (int d = 0; d < 16; d++) {
        cnt[d] = block_reduce(c[d], SumI(), shi);
        if (WITH_MASS) mass[d] = block_reduce(ms[d], SumD(), shd);
    }
}

#define SAMPLE_THREADS 512

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sampling_fwd_f32(unsigned* tokens, double* scratch, const float* logits,
                                                                             const u64* streams, int v, double temperature, int top_k,
                                                                             double top_p, u64 seed, u64 step) {
    __shared__ double shd[32];
    __shared__ int shi[32];
    const int row = blockIdx.x, tid = threadIdx.x;
    const int seg = ceil_div(v, blockDim.x), lo = min(tid * seg, v), hi = min(lo + seg, v);
    const float* x = logits + (size_t)row * v;
    double* p = scratch + (size_t)row * v;

    if (temperature == 0.0) {
        // arg-max: the CPU's scan within the segment, then a commutative combine (value desc, NaN
        // loses, lower id on ties), which gives the same id as one left-to-right scan
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
        __shared__ float wv[32];
        __shared__ int wi[32];
        if (tid % 32 == 0) { wv[tid / 32] = bv; wi[tid / 32] = bi; }
        __syncthreads();
        if (tid == 0) {
            for (int w = 1; w < blockDim.x / 32; w++) {
                float ov = wv[w];
                int oi = wi[w];
                bool take = (bv != bv) ? (ov == ov || oi < bi) : (ov == ov && (ov > bv || (ov == bv && oi < bi)));
                if (take) { bv = ov; bi = oi; }
            }
            tokens[row] = (unsigned)bi;
        }
        return;
    }

    // 1. p = softmax(x / T) in f64, as sampling_probs: m = max(x·inv_t), e = exp(x·inv_t − m), p = e / Σe
    const double inv_t = 1.0 / temperature;
    double mloc = -1.0 / 0.0;
    for (int i = lo; i < hi; i++) mloc = fmax(mloc, (double)x[i] * inv_t);
    const double m = block_reduce(mloc, MaxD(), shd);
    double tl = 0.0;
    for (int i = lo; i < hi; i++) {
        const double e = exp((double)x[i] * inv_t - m);
        p[i] = e;
        tl += e;
    }
    const double total = block_reduce(tl, SumD(), shd);
    for (int i = lo; i < hi; i++) p[i] = p[i] / total;     // each thread reads back only its own ids

    // 2. the kept set {bits > tau} ∪ {first tie_keep ids with bits == tau}; keep_all: everything
    bool keep_all = true;
    u64 tau = 0;
    long long tie_keep = 0;
    const bool topk_on = top_k > 0 && top_k < v, topp_on = top_p < 1.0;
    u64 tau_k = 0;
    int r_k = 0;                                           // ties at tau_k inside the top-k set
    double topk_mass;
    if (topk_on) {
        u64 prefix = 0, mask = 0;
        int need = top_k;
        int cnt[16];
        double unused[16];
        for (int shift = 60; shift >= 0; shift -= 4) {
            digit_histogram<false>(cnt, unused, p, lo, hi, prefix, mask, shift, [](int, u64) { return true; }, shi, shd);
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
        double ml = 0.0;
        for (int i = lo; i < hi; i++)
            if (dbits(p[i]) > tau_k) ml += p[i];
        topk_mass = block_reduce(ml, SumD(), shd) + (double)r_k * __longlong_as_double((long long)tau_k);
        keep_all = false;
        tau = tau_k;
        tie_keep = r_k;
    } else {
        double ml = 0.0;
        for (int i = lo; i < hi; i++) ml += p[i];
        topk_mass = block_reduce(ml, SumD(), shd);
    }
    if (topp_on) {
        // descend in rank order (largest digit first); the top-k ties at tau_k enter as one virtual
        // entry (count r_k, mass r_k·tau_k) so only the first r_k of them can count
        auto include = [=](int, u64 b) { return !topk_on || b > tau_k; };
        u64 prefix = 0, mask = 0;
        double mass_above = 0.0;
        int cnt[16];
        double ms[16];
        bool found = true;
        int ties = 0;
        for (int shift = 60; shift >= 0; shift -= 4) {
            digit_histogram<true>(cnt, ms, p, lo, hi, prefix, mask, shift, include, shi, shd);
            if (topk_on && (tau_k & mask) == prefix) {
                const int dk = (int)((tau_k >> shift) & 15u);
                cnt[dk] += r_k;
                ms[dk] += (double)r_k * __longlong_as_double((long long)tau_k);
            }
            int d = 15;
            for (; d >= 0; d--) {
                if (cnt[d] == 0) continue;
                if ((mass_above + ms[d]) / topk_mass >= top_p) break;
                mass_above += ms[d];
            }
            if (d < 0) { found = false; break; }           // rounding kept the mass below top_p: keep the top-k set
            prefix |= (u64)d << shift;
            mask |= (u64)15 << shift;
            ties = cnt[d];
        }
        if (found) {
            // all ties at tau have the same p: add them one by one as the CPU does, in id order
            const double t = __longlong_as_double((long long)prefix);
            double mass = mass_above;
            int j = 0;
            while (j < ties) {
                mass += t;
                j++;
                if (mass / topk_mass >= top_p) break;
            }
            keep_all = false;
            tau = prefix;
            tie_keep = j;
        }
    }

    // 3. ordinal of this thread's first tie at tau (id order), the kept mass, then the inverse CDF
    int my_ties = 0;
    if (!keep_all)
        for (int i = lo; i < hi; i++) my_ties += dbits(p[i]) == tau;
    int ties_total;
    const int tie_base = block_exclusive_scan(my_ties, shi, ties_total);
    auto kept = [&](double pi, int& ord) {
        if (keep_all) return true;
        const u64 b = dbits(pi);
        if (b > tau) return true;
        if (b == tau) return ord++ < tie_keep;
        return false;
    };
    double kl = 0.0;
    {
        int ord = tie_base;
        for (int i = lo; i < hi; i++)
            if (kept(p[i], ord)) kl += p[i];
    }
    const double mass_kept = block_reduce(kl, SumD(), shd);
    double ql = 0.0;
    {
        int ord = tie_base;
        for (int i = lo; i < hi; i++)
            if (kept(p[i], ord)) ql += p[i] / mass_kept;
    }
    double q_total;
    double cum = block_exclusive_scan(ql, shd, q_total);
    const double target = philox_uniform(seed, streams[row], step) * q_total;
    int hit = 0x7fffffff, last = -1;
    {
        int ord = tie_base;
        for (int i = lo; i < hi; i++) {
            if (!kept(p[i], ord)) continue;
            const double q = p[i] / mass_kept;
            if (q > 0.0) {
                cum += q;
                last = i;
                if (cum > target && hit == 0x7fffffff) hit = i;
            }
        }
    }
    hit = block_reduce(hit, MinI(), shi);
    last = block_reduce(last, MaxI(), shi);
    if (tid == 0) tokens[row] = (unsigned)(hit != 0x7fffffff ? hit : max(last, 0));
}
