// Test kernels for the device primitives the kernels of cuda/ build on: warp shuffles and votes,
// mma.sync, ldmatrix, cp.async. tests/sim_device.rs runs them on every device (the simulator and a
// GPU when present) against scalar references written from the PTX ISA, so a GPU run checks the
// simulator's emulation too. Compiled with common.cuh and ptx.cuh in front, like the GEMM families.

// out[t * 16 + k]: result k of thread t. Blocks of 64 threads (two warps), in[t] distinct values.
extern "C" __global__ void warp_shuffles(int* out, const int* in) {
    const int t = threadIdx.x, lane = t % 32;
    const int v = in[t];
    int* o = out + t * 16;
    o[0] = __shfl_sync(0xffffffffu, v, (lane * 7 + 3) % 32);
    o[1] = __shfl_sync(0xffffffffu, v, lane + 5, 8);          // source (lane + 5) mod 8 in its 8-lane segment
    o[2] = __shfl_up_sync(0xffffffffu, v, 3);                  // lanes 0-2 keep their own value
    o[3] = __shfl_up_sync(0xffffffffu, v, 2, 16);
    o[4] = __shfl_down_sync(0xffffffffu, v, 5);                // lanes 27-31 keep their own value
    o[5] = __shfl_down_sync(0xffffffffu, v, 3, 8);
    o[6] = __shfl_xor_sync(0xffffffffu, v, 9);
    o[7] = __shfl_xor_sync(0xffffffffu, v, 6, 4);              // lane ^ 6 past its segment: own value
    // two disjoint groups of lanes, each with its own mask and its own shuffle
    if (lane < 16) o[8] = __shfl_xor_sync(0x0000ffffu, v, 1);
    else o[8] = __shfl_down_sync(0xffff0000u, v, 4);
    const unsigned b = __ballot_sync(0xffffffffu, v % 3 == 0);
    o[9] = (int)b;
    o[10] = __any_sync(0xffffffffu, v == in[5]);               // true in warp 0 only
    o[11] = __all_sync(0xffffffffu, v >= in[32 * (t / 32)]);   // in[] ascends within a warp: true
    o[12] = (int)__reduce_add_sync(0xffffffffu, (unsigned)v);
    o[13] = __reduce_max_sync(0xffffffffu, -v);
    // 64-bit and floating-point values move whole
    const unsigned long long w = ((unsigned long long)v << 33) | (unsigned)lane;
    o[14] = (int)(__shfl_xor_sync(0xffffffffu, w, 1) >> 33);
    o[15] = (int)(__shfl_sync(0xffffffffu, (double)v * 0.5, 31 - lane) * 2.0);
}

// One warp: d = A·Wᵀ + c for A [16, 16] (bf16, row-major), W [8, 16] (bf16: the "col" B operand,
// k contiguous), c [16, 8] f32, fragments loaded straight from global memory by the documented
// layout (g = lane / 4, t = lane % 4). Called twice (k = 0..15 then 16..31 of a [16, 32] A and an
// [8, 32] W), so the accumulation through c is checked too.
extern "C" __global__ void mma_tile(float* d, const bf16* a, const bf16* w, const float* c) {
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
    for (int k0 = 0; k0 < 32; k0 += 16) {
        auto pair = [](const bf16* p) { return (unsigned)p[0] | ((unsigned)p[1] << 16); };
        unsigned af[4] = {pair(a + g * 32 + k0 + 2 * t), pair(a + (g + 8) * 32 + k0 + 2 * t),
                          pair(a + g * 32 + k0 + 2 * t + 8), pair(a + (g + 8) * 32 + k0 + 2 * t + 8)};
        unsigned bfr[2] = {pair(w + g * 32 + k0 + 2 * t), pair(w + g * 32 + k0 + 2 * t + 8)};
        mma_bf16_16816(acc, af, bfr);
    }
    d[g * 8 + 2 * t] = acc[0];
    d[g * 8 + 2 * t + 1] = acc[1];
    d[(g + 8) * 8 + 2 * t] = acc[2];
    d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

// One warp: four 8×8 b16 matrices m[i][r][c] = src[(8i + r) * 8 + c], staged in shared memory with a
// padded row stride of 16 elements (32 bytes), read back with every ldmatrix shape. Lane l passes
// the address of row l % 8 of matrix l / 8. out[(shape * 32 + lane) * 4 + i] = register i.
extern "C" __global__ void ldmatrix_shapes(unsigned* out, const bf16* src) {
    __shared__ __align__(16) bf16 tile[32 * 16];
    const int lane = threadIdx.x;
    for (int e = lane; e < 32 * 8; e += 32) tile[(e / 8) * 16 + e % 8] = src[e];
    for (int e = lane; e < 32 * 8; e += 32) tile[(e / 8) * 16 + 8 + e % 8] = 0;   // the padding
    __syncwarp();
    const bf16* row = &tile[lane * 16];
    unsigned r[4];
    unsigned* o = out + lane * 4;
    ldmatrix_x1(r, row);          o[0 * 128] = r[0];
    ldmatrix_x2(r, row);          o[1 * 128] = r[0]; o[1 * 128 + 1] = r[1];
    ldmatrix_x4(r, row);          for (int i = 0; i < 4; i++) o[2 * 128 + i] = r[i];
    ldmatrix_x1_trans(r, row);    o[3 * 128] = r[0];
    ldmatrix_x2_trans(r, row);    o[4 * 128] = r[0]; o[4 * 128 + 1] = r[1];
    ldmatrix_x4_trans(r, row);    for (int i = 0; i < 4; i++) o[5 * 128 + i] = r[i];
}

// cp.async: 64 threads copy src (bytes) into shared memory in three commit groups — 4-byte .ca,
// 8-byte .ca, then 16-byte .cg with a partial source (zero fill) — and read each group back only
// after the wait that covers it. out (bytes): the shared buffer after everything landed.
//   group 0: bytes [0, 256)     4 bytes per thread
//   group 1: bytes [256, 768)   8 bytes per thread
//   group 2: bytes [768, 1792)  16 bytes per thread, of which the first (t % 17) come from src
extern "C" __global__ void cp_async_groups(unsigned char* out, int* early, const unsigned char* src) {
    __shared__ __align__(16) unsigned char buf[1792];
    const int t = threadIdx.x;
    cp_async_ca<4>(buf + 4 * t, src + 4 * t);
    cp_async_commit();
    cp_async_ca<8>(buf + 256 + 8 * t, src + 256 + 8 * t);
    cp_async_commit();
    cp_async_cg16_zfill(buf + 768 + 16 * t, src + 768 + 16 * t, t % 17);
    cp_async_commit();
    cp_async_wait<2>();                      // group 0 (this thread's part) has landed
    early[t] = *(const int*)(buf + 4 * t);
    cp_async_wait<1>();
    early[64 + t] = *(const int*)(buf + 256 + 8 * t);
    cp_async_wait_all();
    __syncthreads();                         // every thread's copies visible to all
    for (int e = t; e < 1792; e += 64) out[e] = buf[e];
}
