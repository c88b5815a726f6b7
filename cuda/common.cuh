// common.cuh — prepended to every kernel family by src/gpu/mod.rs (NVRTC, no CUDA headers needed).
//
// bf16 travels as raw bits (unsigned short), so device rounding is exactly `half::bf16::from_f32`
// (round to nearest even, NaN stays NaN) and NVRTC needs no include path. Every kernel is written once
// as a template over its storage type T ∈ {float, bf16}; `load` / `store` widen to f32 and round back,
// so arithmetic is always f32 (f64 in the sampler).

typedef unsigned short bf16;
typedef unsigned long long u64;

__device__ __forceinline__ float bf16_to_f32(bf16 b) { return __uint_as_float((unsigned)b << 16); }
__device__ __forceinline__ bf16 f32_to_bf16(float f) {        // nearest-even; NaN stays NaN
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40u);
    return (bf16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const bf16* p) { return bf16_to_f32(*p); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(bf16* p, float v) { *p = f32_to_bf16(v); }

#define F32_INF __int_as_float(0x7f800000)
#define F32_NAN __int_as_float(0x7fc00000)

__host__ __device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// xor-shuffle reductions: every lane ends with the same value, combined in the same order each run
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
// `scratch` holds 32 floats; the leading barrier makes back-to-back calls on one scratch safe.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_sum(lane < blockDim.x / 32 ? scratch[lane] : 0.0f);
}
