// The RL objectives on the device: DRPO / DisCO (discriminative, log-L score) and the policy-gradient
// baselines' group advantages and PPO clipped surrogate; values and the per-token gradient ∂loss/∂ℓ.
// References: rl::objectives::{drpo, disco, grpo_advantages, rloo_advantages, clipped_surrogate}
// (the formulas are written out in src/rl/objectives.rs; SPEC §3–§7).  Launchers: gpu::objective.
//
// Inputs (the batch layout of rl::objectives::Batch, plus the group bookkeeping built on the host by
// gpu::objective::DeviceGroups): n responses, q groups (ascending id), T tokens.
//   logp, old_logp [T] (T = float or double): token log-probs, response i at offsets[i] .. offsets[i+1]
//   offsets [n+1] (i64), len [n], correct [n] (0/1)
//   group_start [q+1], members [n]: group g = members[group_start[g] .. group_start[g+1]], batch order
// Kernels, in launch order:
//   objective_sums_<t>   grid n, block 128: Σ_t ℓ and Σ_t (ℓ^old − ℓ) of each response (fixed tree)
//   drpo_groups          grid ⌈q/64⌉, block 64, one thread per group: scores s_i = Σℓ/L_i, the
//                        max-shifted softmax of r/λ over the positives (r = 1 − L/C; every exponent
//                        ≤ 0, so any λ > 0 is safe, λ = +inf gives 1/|P|), the τ-log-mean-exp of the
//                        negatives in the log1p/expm1 form, J_g, ∂loss/∂s_i = −(1/q)·∂J_g/∂s_i;
//                        all-correct / all-wrong groups give J_g = 0 and zero gradients
//   group_advantages     grid ⌈q/64⌉, block 64, one thread per group: GRPO (r − mean)/(std + ε)
//                        (sample or population std; a group of one: mean 0, std 1) or RLOO
//   surrogate_<t>        grid n, block 128: ρ = exp(ℓ − ℓ^old), the clipped token terms summed per
//                        response, ∂loss/∂ℓ = −ρA/(nL) unless clipped (0), clipped-token counts
//   objective_finish     one thread: J = Σ_k part_k / div_k / count in index order, K = Σ_i kl_i / T,
//                        the hinge β[K − δ]_+, penalty (β/2)[K − δ]_+², loss = −J + penalty
//   objective_dlogp_<t>  grid n, block 128: ∂loss/∂ℓ_{i,t} = ∂loss/∂s_i / L_i − β[K − δ]_+ / T
// The two per-token kernels multiply by `scale` (the trainer's 1/chunks) and count outputs that are not
// finite once rounded to T (nonfinite[n]; the launcher turns any into an error).
// One thread per group: a group is 2–16 responses, so there is nothing to split, and a thread walks
// the members in the CPU's order, so the group sums round as the CPU's do.
// Precision: f64 throughout (the work is O(T) and memory-bound; f64 keeps the result within f64
// round-off of the f64 CPU reference, the output rounded once to T). The sums over a response's tokens
// and over responses use another order than the CPU (tree vs sequential): ~L·u of the terms' magnitude.
// exp / log1p / expm1: CUDA's ≤ 1–2 ulp (the simulator: glibc's, as the CPU).
// Determinism: fixed reduction orders, no atomics: bit-identical from run to run.
// Versions: v1 (2026-12-06, issue 12): this file; validated on the simulator, not yet on a GPU.

__device__ __forceinline__ double widen(float x) { return (double)x; }
__device__ __forceinline__ double widen(double x) { return x; }
__device__ __forceinline__ void narrow(float* p, double x) { *p = (float)x; }
__device__ __forceinline__ void narrow(double* p, double x) { *p = x; }
__device__ __forceinline__ bool finite_as(const float*, double x) { float f = (float)x; return f - f == 0.0f; }
__device__ __forceinline__ bool finite_as(const double*, double x) { return x - x == 0.0; }

// block-wide sum (blockDim.x a multiple of 32); every thread gets the result, in the same order each run
template <typename V>
__device__ V block_sum_any(V v, V* scratch) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < blockDim.x / 32 ? scratch[lane] : V(0);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T>
__device__ void objective_sums(double* logp_sum, double* kl_sum, const T* logp, const T* old_logp, const long long* offsets) {
    __shared__ double scratch[32];
    const long long begin = offsets[blockIdx.x], end = offsets[blockIdx.x + 1];
    double s = 0.0, k = 0.0;
    for (long long t = begin + threadIdx.x; t < end; t += blockDim.x) {
        double l = widen(logp[t]);
        s += l;
        k += widen(old_logp[t]) - l;
    }
    s = block_sum_any(s, scratch);
    k = block_sum_any(k, scratch);
    if (threadIdx.x == 0) {
        logp_sum[blockIdx.x] = s;
        kl_sum[blockIdx.x] = k;
    }
}

extern "C" __global__ void objective_sums_f32(double* logp_sum, double* kl_sum, const float* logp, const float* old_logp,
                                              const long long* offsets) {
    objective_sums(logp_sum, kl_sum, logp, old_logp, offsets);
}
extern "C" __global__ void objective_sums_f64(double* logp_sum, double* kl_sum, const double* logp, const double* old_logp,
                                              const long long* offsets) {
    objective_sums(logp_sum, kl_sum, logp, old_logp, offsets);
}

extern "C" __global__ void drpo_groups(double* scores, double* weights, double* dloss_ds, double* group_j,
                                       const double* logp_sum, const int* len, const int* correct,
                                       const int* group_start, const int* members, int q, int max_len,
                                       double lambda, double tau) {
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= q) return;
    const int first = group_start[g], last = group_start[g + 1];
    int n_pos = 0, n_neg = 0;
    for (int k = first; k < last; k++) {
        int i = members[k];
        scores[i] = logp_sum[i] / (double)len[i];
        weights[i] = 0.0;
        dloss_ds[i] = 0.0;
        if (correct[i]) n_pos++; else n_neg++;
    }
    if (n_pos == 0 || n_neg == 0) {            // skipped: J_g = 0, still counted in q
        group_j[g] = 0.0;
        return;
    }
    const double neg_inf = __longlong_as_double((long long)0xfff0000000000000ULL);
    // positives: ŵ_i = exp((r_i − max r)/λ) / Σ_k exp((r_k − max r)/λ),  r = 1 − L/C
    double r_max = neg_inf;
    for (int k = first; k < last; k++) {
        int i = members[k];
        if (correct[i]) r_max = fmax(r_max, 1.0 - (double)len[i] / (double)max_len);
    }
    double e_sum = 0.0;
    for (int k = first; k < last; k++) {
        int i = members[k];
        if (correct[i]) e_sum += exp((1.0 - (double)len[i] / (double)max_len - r_max) / lambda);
    }
    double positive = 0.0;
    for (int k = first; k < last; k++) {
        int i = members[k];
        if (!correct[i]) continue;
        double w = exp((1.0 - (double)len[i] / (double)max_len - r_max) / lambda) / e_sum;
        weights[i] = w;
        dloss_ds[i] = -w / (double)q;
        positive += w * scores[i];
    }
    // negatives: LME = m + τ·log1p(mean expm1((s − m)/τ)),  ∂LME/∂s_j = exp(d_j) / Σ exp(d)
    double m = neg_inf;
    for (int k = first; k < last; k++) {
        int i = members[k];
        if (!correct[i]) m = fmax(m, scores[i]);
    }
    double expm1_sum = 0.0, e_neg = 0.0;
    for (int k = first; k < last; k++) {
        int i = members[k];
        if (correct[i]) continue;
        double d = (scores[i] - m) / tau;
        expm1_sum += expm1(d);
        e_neg += exp(d);
    }
    const double lme = m + tau * log1p(expm1_sum / (double)n_neg);
    for (int k = first; k < last; k++) {
        int i = members[k];
        if (!correct[i]) dloss_ds[i] = (exp((scores[i] - m) / tau) / e_neg) / (double)q;
    }
    group_j[g] = positive - lme;
}

// estimator: 0 = GRPO ((r − mean)/(std + eps); sample_std: ÷(K−1), else ÷K), 1 = RLOO
extern "C" __global__ void group_advantages(double* adv, const double* rewards, const int* group_start, const int* members,
                                            int q, int estimator, int sample_std, double eps) {
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= q) return;
    const int first = group_start[g], last = group_start[g + 1], size = last - first;
    double total = 0.0;
    for (int k = first; k < last; k++) total += rewards[members[k]];
    if (estimator == 1) {
        for (int k = first; k < last; k++) {
            int i = members[k];
            adv[i] = size < 2 ? 0.0 : rewards[i] - (total - rewards[i]) / (double)(size - 1);
        }
        return;
    }
    double mean = 0.0, sd = 1.0;                // a group of one: mean 0, std 1 (verl)
    if (size > 1) {
        mean = total / (double)size;
        double ss = 0.0;
        for (int k = first; k < last; k++) {
            double d = rewards[members[k]] - mean;
            ss += d * d;
        }
        sd = sqrt(ss / (double)(sample_std ? size - 1 : size));
    }
    const double denom = sd + eps;
    for (int k = first; k < last; k++) {
        int i = members[k];
        adv[i] = denom > 0.0 ? (rewards[i] - mean) / denom : 0.0;
    }
}

// clip_eps < 0: no clipping (the plain ratio surrogate)
template <typename T>
__device__ void surrogate(T* dlogp, double* seq_sum, int* clipped, int* nonfinite, const T* logp, const T* old_logp,
                          const double* adv, const long long* offsets, int n, double clip_eps, double scale) {
    __shared__ double scratch[32];
    __shared__ int count_scratch[32];
    const int i = blockIdx.x;
    const long long begin = offsets[i], end = offsets[i + 1];
    const double a = adv[i];
    const double per_token = 1.0 / ((double)n * (double)(end - begin));
    double sum = 0.0;
    int clips = 0, bad = 0;
    for (long long t = begin + threadIdx.x; t < end; t += blockDim.x) {
        double d = 0.0;                         // a zero advantage contributes exactly 0, even if ρ overflows
        if (a != 0.0) {
            double ratio = exp(widen(logp[t]) - widen(old_logp[t]));
            double bound = 0.0;
            bool clip = false;
            if (clip_eps >= 0.0 && a > 0.0 && ratio > 1.0 + clip_eps) { bound = 1.0 + clip_eps; clip = true; }
            if (clip_eps >= 0.0 && a < 0.0 && ratio < 1.0 - clip_eps) { bound = 1.0 - clip_eps; clip = true; }
            if (clip) {
                sum += bound * a;
                clips++;
            } else {
                sum += ratio * a;
                d = -ratio * a * per_token * scale;
            }
        }
        narrow(dlogp + t, d);
        if (!finite_as(dlogp, d)) bad++;
    }
    sum = block_sum_any(sum, scratch);
    clips = block_sum_any(clips, count_scratch);
    bad = block_sum_any(bad, count_scratch);
    if (threadIdx.x == 0) {
        seq_sum[i] = sum;
        clipped[i] = clips;
        nonfinite[i] = bad;
    }
}

extern "C" __global__ void surrogate_f32(float* dlogp, double* seq_sum, int* clipped, int* nonfinite, const float* logp,
                                         const float* old_logp, const double* adv, const long long* offsets, int n,
                                         double clip_eps, double scale) {
    surrogate(dlogp, seq_sum, clipped, nonfinite, logp, old_logp, adv, offsets, n, clip_eps, scale);
}
extern "C" __global__ void surrogate_f64(double* dlogp, double* seq_sum, int* clipped, int* nonfinite, const double* logp,
                                         const double* old_logp, const double* adv, const long long* offsets, int n,
                                         double clip_eps, double scale) {
    surrogate(dlogp, seq_sum, clipped, nonfinite, logp, old_logp, adv, offsets, n, clip_eps, scale);
}

// scalars: [0] J, [1] K, [2] penalty, [3] loss, [4] β[K − δ]_+, [5] clipped tokens (0 without `clipped`)
// J = (Σ_k part_k / div_k) / count with div_k = len[k] when per_len (the surrogate's sequence means),
// else 1 (the groups' J_g); the sums run in index order, as the CPU's.
extern "C" __global__ void objective_finish(double* scalars, const double* part, const int* len, const double* kl_sum,
                                            const int* clipped, int parts, int per_len, int n, long long tokens,
                                            double count, double beta, double delta) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double j = 0.0;
    for (int k = 0; k < parts; k++) j += per_len ? part[k] / (double)len[k] : part[k];
    j /= count;
    double diff = 0.0;
    long long clips = 0;
    for (int i = 0; i < n; i++) {
        diff += kl_sum[i];
        if (clipped) clips += clipped[i];
    }
    const double kl = diff / (double)tokens;
    const double excess = fmax(kl - delta, 0.0);
    const double penalty = 0.5 * beta * excess * excess;
    scalars[0] = j;
    scalars[1] = kl;
    scalars[2] = penalty;
    scalars[3] = -j + penalty;
    scalars[4] = beta * excess;
    scalars[5] = (double)clips;
}

template <typename T>
__device__ void objective_dlogp(T* dlogp, int* nonfinite, const double* dloss_ds, const double* scalars,
                                const long long* offsets, long long tokens, double scale) {
    const int i = blockIdx.x;
    const long long begin = offsets[i], end = offsets[i + 1];
    // the CPU's expression: ∂loss/∂s_i / L_i + (−β[K − δ]_+ / T), then the trainer's scale
    const double d = (dloss_ds[i] / (double)(end - begin) + -scalars[4] / (double)tokens) * scale;
    for (long long t = begin + threadIdx.x; t < end; t += blockDim.x) narrow(dlogp + t, d);
    if (threadIdx.x == 0) nonfinite[i] = finite_as(dlogp, d) ? 0 : (int)(end - begin);
}

extern "C" __global__ void objective_dlogp_f32(float* dlogp, int* nonfinite, const double* dloss_ds, const double* scalars,
                                               const long long* offsets, long long tokens, double scale) {
    objective_dlogp(dlogp, nonfinite, dloss_ds, scalars, offsets, tokens, scale);
}
extern "C" __global__ void objective_dlogp_f64(double* dlogp, int* nonfinite, const double* dloss_ds, const double* scalars,
                                               const long long* offsets, long long tokens, double scale) {
    objective_dlogp(dlogp, nonfinite, dloss_ds, scalars, offsets, tokens, scale);
}
