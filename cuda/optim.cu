// AdamW, the global gradient norm and clipping, on the flat f32 parameter buffer.
// References: optim::global_grad_norm, optim::clip_grad_norm, AdamWState::step (src/optim.rs).
// Launchers: gpu::optim::{grad_norm, clip_grad, adamw_step}.
//
// Everything here is bit-identical to the CPU (tests/kernels_optim.rs compares bits), so every f32 and
// f64 operation is written with an explicit-rounding intrinsic: NVRTC contracts a*b + c into an FMA by
// default, which would round once where the CPU rounds twice.
//
// grad_norm: ‖g‖₂ accumulated in f64 in the CPU's order: the buffer is cut into chunks of
// OPTIM_CHUNK = 2^15 elements (optim::CHUNK); each chunk is summed sequentially (g·g, exact in f64 for
// f32 g), the chunk sums are summed sequentially, then one correctly rounded sqrt. Same bits as the CPU
// and for any launch.
//   grad_norm_partial_f32: grid ceil(chunks / 256), block 256; thread = chunk. A warp owns 32
//     consecutive chunks; for each 32-element column of them it loads a 32×32 tile (each load
//     instruction is one chunk's 32 consecutive elements: coalesced), transposes it through shared
//     memory, and each lane adds its own chunk's 32 values in order.
//   grad_norm_finish: block 256; thread 0 adds the chunk sums in order (a dependent chain of `chunks`
//     f64 adds: 15k at 0.5B parameters, 46k at 1.5B; ≈ 8 cycles each ≈ 0.07 / 0.2 ms, the price of the
//     CPU's order), the block staging them 256 at a time through shared memory so the chain does not
//     also wait on memory; then the sqrt.
// clip_grad_f32: g ← g·(float)(max_norm / (norm + 1e-6)) when that coefficient is < 1 and the norm is
//   finite (torch's clip_grad_norm_), the coefficient computed in f64 from the device-side norm, so the
//   host never waits for it.
// adamw_step_f32: element-wise, torch's CUDA rounding order (module doc of src/optim.rs), the scalars
//   (bias corrections, step size, …) computed on the host by optim::AdamWScalars::new and passed in, so
//   they are the CPU's bits. Optionally (grad_norm non-null) the clip is fused: g·c rounded to f32
//   exactly as clip_grad writes it, without rewriting the gradient buffer. Optionally writes the bf16
//   compute copy of the updated weights (round to nearest even, = half::bf16::from_f32).
//   Grid-stride loop, block 256. Determinism: element-wise.
// Versions: v1 (2026-12-06, issue 12), with grad_norm_finish staging through shared memory from the
// start (a plain one-thread loop would wait on memory every few values); simulator-validated only.

#define OPTIM_CHUNK 32768

extern "C" __global__ void __launch_bounds__(256) grad_norm_partial_f32(double* partial, const float* g, long long n) {
    __shared__ float tile[8][32][33];           // per warp: 32 chunks × 32 elements (+1: no bank conflicts)
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const long long first = ((long long)blockIdx.x * 8 + warp) * 32;   // the warp's first chunk
    const long long chunks = (n + OPTIM_CHUNK - 1) / OPTIM_CHUNK;
    if (first >= chunks) return;                // the whole warp: nothing to sum, no collective after
    const long long mine = first + lane;
    // the warp's first chunk is its longest: every lane runs the same number of columns
    const long long columns = min((long long)OPTIM_CHUNK, n - first * OPTIM_CHUNK);
    double sum = 0.0;
    for (long long col = 0; col < columns; col += 32) {
        for (int r = 0; r < 32; r++) {
            long long i = (first + r) * OPTIM_CHUNK + col + lane;
            tile[warp][r][lane] = (first + r < chunks && col + lane < OPTIM_CHUNK && i < n) ? g[i] : 0.0f;
        }
        __syncwarp();
        long long base = mine * OPTIM_CHUNK + col;
        for (int k = 0; k < 32; k++) {
            if (mine < chunks && col + k < OPTIM_CHUNK && base + k < n) {
                double x = (double)tile[warp][lane][k];
                sum = __dadd_rn(sum, __dmul_rn(x, x));
            }
        }
        __syncwarp();                            // the tile is rewritten by the next column
    }
    if (mine < chunks) partial[mine] = sum;
}

extern "C" __global__ void __launch_bounds__(256) grad_norm_finish(double* norm, const double* partial, int chunks) {
    __shared__ double tile[256];
    double sum = 0.0;                            // meaningful in thread 0 only
    for (int base = 0; base < chunks; base += 256) {
        // the block stages 256 chunk sums with one coalesced load, thread 0 adds them in order from
        // shared memory: one memory round trip per 256 values instead of one per few
        if (base + (int)threadIdx.x < chunks) tile[threadIdx.x] = partial[base + threadIdx.x];
        __syncthreads();
        if (threadIdx.x == 0)
            for (int k = 0; k < 256 && base + k < chunks; k++) sum = __dadd_rn(sum, tile[k]);
        __syncthreads();                         // the tile is rewritten by the next round
    }
    if (threadIdx.x == 0) norm[0] = sqrt(sum);   // IEEE sqrt (correctly rounded), as f64::sqrt
}

// torch's clip coefficient as the CPU computes it; 1.0f where the CPU leaves the gradient alone
// (multiplying by 1.0f is exact, so the fused and unfused paths agree bit for bit)
__device__ __forceinline__ float clip_scale(const double* norm, double max_norm) {
    double nrm = norm[0];
    double coef = max_norm / (nrm + 1e-6);
    bool finite = nrm - nrm == 0.0;              // false for inf and NaN
    return (finite && coef < 1.0) ? (float)coef : 1.0f;
}

extern "C" __global__ void clip_grad_f32(float* g, const double* norm, long long n, double max_norm) {
    const float c = clip_scale(norm, max_norm);
    if (c == 1.0f) return;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        g[i] = __fmul_rn(g[i], c);
}

extern "C" __global__ void adamw_step_f32(float* p, float* m, float* v, bf16* p_bf16, const float* g,
                                          const double* grad_norm, long long n, double max_norm,
                                          float decay, float step_size, float one_minus_b1, float b2,
                                          float one_minus_b2, int lerp_low, float one_minus_w,
                                          float bc2_sqrt, float eps) {
    const float c = grad_norm ? clip_scale(grad_norm, max_norm) : 1.0f;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i];
        if (c != 1.0f) gi = __fmul_rn(gi, c);
        float pi = __fmul_rn(p[i], decay);                                   // decoupled decay first
        float mi = m[i];
        float diff = __fsub_rn(gi, mi);
        mi = lerp_low ? __fadd_rn(mi, __fmul_rn(one_minus_b1, diff))          // torch lerp_, both forms
                      : __fsub_rn(gi, __fmul_rn(diff, one_minus_w));
        float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(one_minus_b2, __fmul_rn(gi, gi)));   // mul_, addcmul_
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        pi = __fsub_rn(pi, __fmul_rn(step_size, __fdiv_rn(mi, denom)));       // addcdiv_
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        if (p_bf16) p_bf16[i] = f32_to_bf16(pi);
    }
}
