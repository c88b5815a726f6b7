// ptx.cuh — every inline-PTX instruction of cuda/, each behind one small wrapper. Prepended after
// common.cuh to the families that use them (src/gpu/mod.rs). The DRPO_SIM branch is what the
// simulated device runs (cuda/sim/cuda_sim.h, from the PTX ISA's definitions); the other branch is
// the instruction NVRTC compiles. Kernels call the wrappers only, so their text is the same for both.
// On the simulator each wrapper also takes the caller's file and line (defaulted), so an error names
// the kernel's line, not this file's.
#ifdef DRPO_SIM
#define PTX_SITE , const char* file_ = __builtin_FILE(), int line_ = __builtin_LINE()
#define PTX_AT file_, line_
#else
#define PTX_SITE
#endif

// ---- mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: c = A·B + c for one 16×8×16 warp tile ----
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"; g = lane / 4,
// t = lane % 4; two bf16 per .b32 register, the lower column / row in the low half):
//   a[0] = A[g][2t..2t+1]   a[1] = A[g+8][2t..]   a[2] = A[g][2t+8..]   a[3] = A[g+8][2t+8..]   (A: 16×16, row-major)
//   b[0] = B[2t..2t+1][g]   b[1] = B[2t+8..2t+9][g]   (B: 16×8, "col": B[k][n] = W[n][k] for x·Wᵀ)
//   c[0], c[1] = C[g][2t, 2t+1]   c[2], c[3] = C[g+8][2t, 2t+1]   (f32)
// All 32 lanes of the warp must execute it (.aligned).
__device__ __forceinline__ void mma_bf16_16816(float* c, const unsigned* a, const unsigned* b PTX_SITE) {
#ifdef DRPO_SIM
    drpo_sim::mma_m16n8k16_bf16(c, a, b, c, PTX_AT);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// ---- ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16: 8×8 b16 matrices, shared -> registers ----
// Lane 8·i + r passes the address of row r of matrix i (16 bytes, 16-byte aligned, in shared memory;
// x1 reads lanes 0-7's addresses, x2 lanes 0-15's). Lane l receives in r[i] the 32-bit word l % 4 of
// row l / 4 of matrix i (columns 2·(l%4), 2·(l%4)+1, low half first) — the A/B fragment layout of
// mma above; with .trans, elements [2·(l%4)][l/4] and [2·(l%4)+1][l/4] (the transposed matrix).
// All 32 lanes must execute it.
#ifdef DRPO_SIM
#define DRPO_LDMATRIX(NAME, N, TRANS)                                                               \
    __device__ __forceinline__ void NAME(unsigned* r, const void* row PTX_SITE) {                  \
        drpo_sim::ldmatrix(r, N, TRANS, row, PTX_AT);                                               \
    }
DRPO_LDMATRIX(ldmatrix_x1, 1, false)
DRPO_LDMATRIX(ldmatrix_x2, 2, false)
DRPO_LDMATRIX(ldmatrix_x4, 4, false)
DRPO_LDMATRIX(ldmatrix_x1_trans, 1, true)
DRPO_LDMATRIX(ldmatrix_x2_trans, 2, true)
DRPO_LDMATRIX(ldmatrix_x4_trans, 4, true)
#undef DRPO_LDMATRIX
#else
__device__ __forceinline__ unsigned shared_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void ldmatrix_x1(unsigned* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(shared_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x2(unsigned* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(shared_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x1_trans(unsigned* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(shared_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(unsigned* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(shared_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_addr(row)));
}
#endif

// ---- cp.async (sm_80): global -> shared without registers, completed in commit groups ----
// cp_async_ca<B>(dst, src): B = 4, 8 or 16 bytes, cached in L1;  cp_async_cg16(dst, src): 16 bytes, L2 only;
// cp_async_cg16_zfill(dst, src, n): copies the first n ≤ 16 bytes of src and zeros the rest (n = 0: a
// zero fill that reads nothing — the way to load past the end of a matrix).
// dst: shared, src: global, both aligned to the copy size. The data is in dst only after
// cp_async_wait<N>() (all but the N most recent committed groups done) or cp_async_wait_all(), and
// visible to other threads only after a __syncthreads following that wait.
template <int B>
__device__ __forceinline__ void cp_async_ca(void* dst, const void* src PTX_SITE) {
    static_assert(B == 4 || B == 8 || B == 16, "cp.async copies 4, 8 or 16 bytes");
#ifdef DRPO_SIM
    drpo_sim::cp_async(dst, src, B, B, false, PTX_AT);
#else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(shared_addr(dst)), "l"(src), "n"(B) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_cg16(void* dst, const void* src PTX_SITE) {
#ifdef DRPO_SIM
    drpo_sim::cp_async(dst, src, 16, 16, true, PTX_AT);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_addr(dst)), "l"(src) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_cg16_zfill(void* dst, const void* src, unsigned src_bytes PTX_SITE) {
#ifdef DRPO_SIM
    drpo_sim::cp_async(dst, src, 16, src_bytes, true, PTX_AT);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_addr(dst)), "l"(src), "r"(src_bytes) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef DRPO_SIM
    drpo_sim::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef DRPO_SIM
    drpo_sim::cp_async_wait(N, false);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#ifdef DRPO_SIM
    drpo_sim::cp_async_wait(0, true);
#else
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

#undef PTX_SITE
#undef PTX_AT
