// Residual add, in place.  Reference: the `x += proj` loops of model::cpu::Model::forward.
// Launcher: gpu::residual::residual_add.
//   x[k] += y[k]        x, y: [len] (T)
// Grid (ceil(len / 256)), block 256.  Precision: f32 sum rounded once to T.  Determinism: elementwise.

template <typename T>
__device__ void residual_add(T* x, const T* y, size_t len) {
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < len) store(x + k, load(x + k) + load(y + k));
}

extern "C" __global__ void residual_add_f32(float* x, const float* y, unsigned long long len) { residual_add(x, y, len); }
extern "C" __global__ void residual_add_bf16(bf16* x, const bf16* y, unsigned long long len) { residual_add(x, y, len); }
