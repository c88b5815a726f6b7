// Planted bugs, one per check of the simulated device, each beside its correct twin.
// tests/sim_device.rs asserts the simulator reports every bug with the kernel's name and passes
// every twin. These kernels are wrong on purpose and live here, never in cuda/.

// ---- a race: the block's warp partials are summed without a barrier after they are written ----
template <bool BARRIER>
__device__ void block_total(float* out, const float* x, int n) {
    __shared__ float partial[32];
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[blockIdx.x * n + i];
    s = warp_sum(s);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = s;
    if (BARRIER) __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int w = 0; w < blockDim.x / 32; w++) t += partial[w];
        out[blockIdx.x] = t;
    }
}
extern "C" __global__ void total_missing_barrier(float* out, const float* x, int n) { block_total<false>(out, x, n); }
extern "C" __global__ void total_with_barrier(float* out, const float* x, int n) { block_total<true>(out, x, n); }

// ---- out of bounds: an off-by-one loop bound writes out[n]; another reads x[n] ----
extern "C" __global__ void copy_off_by_one(float* out, const float* x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i <= n; i += gridDim.x * blockDim.x) out[i] = x[i < n ? i : 0];
}
extern "C" __global__ void copy_reads_past_end(float* out, const float* x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = x[i] + x[i + 1];
}
extern "C" __global__ void copy_in_bounds(float* out, const float* x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = x[i];
}

// ---- barriers not reached by every thread ----
// threads past n leave early, the others meet at a barrier
extern "C" __global__ void barrier_after_early_return(float* out, const float* x, int n) {
    __shared__ float tile[256];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    tile[threadIdx.x] = x[i];
    __syncthreads();
    out[i] = tile[(threadIdx.x + 1) % blockDim.x];
}
// the two halves of the block wait at two different barriers
extern "C" __global__ void barrier_divergent(float* out, const float* x, int n) {
    __shared__ float tile[256];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = i < n ? x[i] : 0.0f;
    if (threadIdx.x < blockDim.x / 2) {
        __syncthreads();
        if (i < n) out[i] = tile[blockDim.x - 1 - threadIdx.x];
    } else {
        __syncthreads();
        if (i < n) out[i] = tile[blockDim.x - 1 - threadIdx.x];
    }
}
// the twin: every thread reaches the one barrier, the bounds check comes after it
extern "C" __global__ void barrier_uniform(float* out, const float* x, int n) {
    __shared__ float tile[256];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();
    if (i < n) out[i] = tile[blockDim.x - 1 - threadIdx.x];
}

// ---- warp collectives whose lanes disagree ----
extern "C" __global__ void shuffle_divergent(float* out, const float* x) {
    const int lane = threadIdx.x % 32;
    float v = x[threadIdx.x];
    if (lane < 16) v += __shfl_xor_sync(0xffffffffu, v, 1);   // lanes 16-31 are named but never come
    else v += __shfl_down_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}
extern "C" __global__ void shuffle_uniform(float* out, const float* x) {
    float v = x[threadIdx.x];
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

// ---- shared memory: written past the end of an array; read before it is written ----
extern "C" __global__ void shared_overflow(float* out, const float* x) {
    __shared__ float buf[32];
    buf[threadIdx.x] = x[threadIdx.x];                        // a block of 64 threads
    __syncthreads();
    out[threadIdx.x] = buf[threadIdx.x % 32];
}
extern "C" __global__ void shared_read_uninitialised(float* out, const float* x) {
    __shared__ float buf[64];
    if (threadIdx.x % 2 == 0) buf[threadIdx.x] = x[threadIdx.x];   // odd entries never written
    __syncthreads();
    out[threadIdx.x] = buf[threadIdx.x];
}

// ---- cp.async data read before the wait that covers it ----
template <bool WAIT>
__device__ void staged_copy(float* out, const float* x) {
    __shared__ __align__(16) float buf[256];
    const int t = threadIdx.x;
    cp_async_ca<4>(buf + t, x + t);
    cp_async_commit();
    if (WAIT) cp_async_wait_all();
    __syncthreads();
    out[t] = buf[255 - t];
    cp_async_wait_all();
}
extern "C" __global__ void cp_async_read_early(float* out, const float* x) { staged_copy<false>(out, x); }
extern "C" __global__ void cp_async_read_after_wait(float* out, const float* x) { staged_copy<true>(out, x); }

// ---- an order-dependent float atomic (the sum's rounding depends on the order of additions) ----
extern "C" __global__ void atomic_float_sum(float* out, const float* x, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) atomicAdd(out, x[i]);
}

// ---- launch limits ----
extern "C" __global__ void __launch_bounds__(64) bounded_64(float* out, const float* x) { out[threadIdx.x] = x[0]; }
extern "C" __global__ void big_static_shared(float* out, const float* x) {
    __shared__ float big[13 * 1024];                          // 52 KiB > 48 KiB of static shared memory
    big[threadIdx.x] = x[0];
    __syncthreads();
    out[threadIdx.x] = big[threadIdx.x];
}
extern "C" __global__ void dynamic_shared_sum(float* out, const float* x, int n) {
    extern __shared__ __align__(16) float dyn[];              // n floats, given at launch
    for (int i = threadIdx.x; i < n; i += blockDim.x) dyn[i] = x[i];
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int i = 0; i < n; i++) s += dyn[i];
        out[0] = s;
    }
}
// a bf16 kernel, for argument-type checks
extern "C" __global__ void scale_bf16(bf16* out, const bf16* x, float s, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) store(out + i, load(x + i) * s);
}
