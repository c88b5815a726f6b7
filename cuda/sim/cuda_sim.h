// cuda_sim.h — what a CUDA kernel sees when it runs on the simulated device (`--device sim`).
//
// src/gpu/sim compiles each kernel family — the very files NVRTC compiles (common.cuh, gemm.cuh,
// ptx.cuh, the .cu) — as host C++ with this header in front, into a shared object it loads with
// dlopen. Nothing here reaches NVRTC.
//
// Execution model
//   One CUDA thread is one fiber: its own stack and a user-space context switch (x86-64: callee-saved
//   registers, rsp, MXCSR and the x87 control word, a few instructions; elsewhere ucontext, which
//   makes a system call per switch). One block's fibers run on one OS thread and take turns at every
//   __syncthreads, warp collective and __nanosleep; blocks run in parallel on the OS threads the
//   Rust side lends (`DRPO_SIM_THREADS`). Between two synchronisation points a fiber runs alone, so
//   the only freedom left is the order in which fibers are resumed: forward, reverse or a seeded
//   shuffle (`Launch::order`). The Rust side runs a launch under several orders and reports any
//   difference in its outputs as a race.
//
// What is checked here (compute-sanitizer's jobs), each an error naming the place, never a hang:
//   * __syncthreads reached by some threads of the block only (divergent barrier, early return),
//     or by threads at different __syncthreads (different source lines): CUDA C++ requires every
//     thread of the block at the same barrier.
//   * warp collectives (shuffles, votes, __syncwarp, mma, ldmatrix) whose calling lane is not in its
//     mask, or that can never complete (lanes waiting for each other at different collectives or
//     masks, or at a barrier): a deadlock, reported with where every thread waits.
//     As in PTX (shfl.sync et al. on sm_70+), lanes of the mask that have exited do not hold a
//     collective up; a value read from such a lane (or from a lane outside the mask) is poison
//     (all bits set). mma and ldmatrix are `.aligned`: all 32 lanes must execute them.
//   * shared memory: every variable is poisoned (0xff bytes: NaN for f32, bf16 and f64) at block
//     start and followed by a red zone checked at block end; static shared memory above 48 KiB, or
//     static + dynamic above the launch's limit, is an error; ldmatrix / cp.async addresses must
//     lie inside one shared variable.
//   * cp.async: forward order copies at issue, every other order only when the thread waits
//     (cp.async.wait_group / wait_all), so a kernel that reads the destination too early gives
//     different outputs under different orders.
//   * faults (out-of-bounds global accesses hit guard pages set by src/gpu/sim; a fiber's stack
//     overflow hits its own guard page) end the launch through siglongjmp with the address; the
//     Rust side names the buffer.
//
// Numerics: f32 arithmetic is the host's (IEEE, no FMA contraction: -ffp-contract=off), fmaf is the
// fused libm one, expf/logf are glibc's (≤ 1 ulp, CUDA's ≤ 2), __expf is expf, mma is exact products
// summed in f64 and rounded once to f32. NOTES.md lists what this cannot tell about a real GPU.

#pragma once
#define DRPO_SIM 1

#include <algorithm>
#include <climits>
#include <cmath>
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <math.h>
#include <signal.h>
#include <sys/mman.h>
#include <type_traits>
#include <unistd.h>
#include <utility>
#include <string>
#include <time.h>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// ---------------------------------------------------------------------------------------------
// CUDA's vector types, with CUDA's alignments.

#define DRPO_SIM_VEC1(T, N) struct alignas(sizeof(T)) N##1 { T x; };                                 \
    inline N##1 make_##N##1(T x) { return N##1{x}; }
#define DRPO_SIM_VEC2(T, N) struct alignas(2 * sizeof(T)) N##2 { T x, y; };                          \
    inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }
#define DRPO_SIM_VEC3(T, N) struct N##3 { T x, y, z; };                                               \
    inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }
#define DRPO_SIM_VEC4(T, N) struct alignas(4 * sizeof(T) > 16 ? 16 : 4 * sizeof(T)) N##4 { T x, y, z, w; }; \
    inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
#define DRPO_SIM_VECS(T, N) DRPO_SIM_VEC1(T, N) DRPO_SIM_VEC2(T, N) DRPO_SIM_VEC3(T, N) DRPO_SIM_VEC4(T, N)
DRPO_SIM_VECS(signed char, char)
DRPO_SIM_VECS(unsigned char, uchar)
DRPO_SIM_VECS(short, short)
DRPO_SIM_VECS(unsigned short, ushort)
DRPO_SIM_VECS(int, int)
DRPO_SIM_VECS(unsigned int, uint)
DRPO_SIM_VECS(long, long)
DRPO_SIM_VECS(unsigned long, ulong)
DRPO_SIM_VECS(long long, longlong)
DRPO_SIM_VECS(unsigned long long, ulonglong)
DRPO_SIM_VECS(float, float)
DRPO_SIM_VECS(double, double)
#undef DRPO_SIM_VECS
#undef DRPO_SIM_VEC1
#undef DRPO_SIM_VEC2
#undef DRPO_SIM_VEC3
#undef DRPO_SIM_VEC4

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

// ---------------------------------------------------------------------------------------------
// Qualifiers. __shared__ declarations never reach here: src/gpu/sim rewrites them into calls of
// drpo_sim::shared_var / shared_dynamic before compiling (see there).

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) alignas(n)
#define __launch_bounds__(...)
#define __constant__
#define __managed__
#define warpSize 32

namespace drpo_sim {

// ---------------------------------------------------------------------------------------------
// The launch interface shared with src/gpu/sim/mod.rs (`#[repr(C)]` there; keep the two in step).

struct Launch {
    uint32_t grid[3];
    uint32_t block[3];
    uint32_t dynamic_shared_bytes;
    uint32_t shared_limit_bytes;   // static + dynamic allowed per block (48 KiB, or the opt-in maximum)
    uint32_t order;                // 0 forward, 1 reverse, ≥ 2 shuffled (seeded by `seed`)
    uint32_t stack_bytes;          // per fiber
    uint64_t seed;
    uint64_t* next_block;          // block counter shared by the OS threads of this launch
    uint32_t* abort;               // set by the first OS thread that fails
    const uint64_t* blocks;        // the linear indices of the blocks to run (null: every block)
    uint64_t block_count;          // their number (with `blocks`)
};

struct Report {
    char message[4096];
    uint64_t fault_addr;
    int32_t fault_write;           // 1 write, 0 read, -1 unknown
    int32_t fault_signal;
    uint32_t block[3];
    uint32_t thread[3];
    int32_t has_thread;
};

enum : int { RUN_OK = 0, RUN_FAILED = 1, RUN_FAULT = 2 };

typedef void (*KernelCall)(void** args);

struct KernelInfo {
    const char* name;
    KernelCall call;
    uint32_t max_threads;          // __launch_bounds__, 0 when none
    const char* signature;         // one code per parameter: r<bytes> / w<bytes> pointer (const / not),
                                   // i<bytes> u<bytes> f<bytes> b1 s<bytes> by value; comma-separated
    const char* params;            // the parameter names, comma-separated
};

// ---------------------------------------------------------------------------------------------
// Fibers and their context switch.

#if defined(__x86_64__)
struct Context { void* sp; };
extern "C" void drpo_sim_swap(void** save_sp, void* load_sp);
#else
struct Context { ucontext_t uc; };
#endif

enum State : uint8_t { RUNNABLE, AT_BARRIER, AT_WARP, DONE };

// warp collectives (a fiber's pending request)
enum Kind : uint8_t {
    K_NONE, K_SHFL_IDX, K_SHFL_UP, K_SHFL_DOWN, K_SHFL_XOR, K_SYNCWARP, K_BALLOT, K_ANY, K_ALL,
    K_REDUCE_ADD, K_REDUCE_MIN, K_REDUCE_MAX, K_REDUCE_AND, K_REDUCE_OR, K_REDUCE_XOR, K_MMA_BF16, K_LDMATRIX
};

struct Coll {
    Kind kind;
    uint8_t variant;               // ldmatrix: count | trans << 4; reduce: signed; shuffles: width
    unsigned mask;
    int src;                       // shuffles: the lane this lane reads
    uint64_t value;                // shuffles, votes, reductions: this lane's contribution
    const void* p0;                // mma: a; ldmatrix: the row address
    const void* p1;                // mma: b
    const void* p2;                // mma: c
    void* p3;                      // mma: d; ldmatrix: r
};

struct AsyncCopy {
    void* dst;
    const void* src;
    unsigned bytes, src_bytes;
    unsigned long long group;      // commits before it was issued
};

struct Fiber {
    Context ctx;
    char* stack_lo;                // usable stack [stack_lo, stack_hi)
    char* stack_hi;
    unsigned warp, lane;
    uint3 tid;
    State state;
    const char* file;              // where it waits
    int line;
    Coll coll;
    uint64_t result;
    std::vector<AsyncCopy> copies; // cp.async issued and not yet completed (lazy orders)
    unsigned long long commits;
};

// The collectives a warp's lanes wait at: one group per (kind, variant, mask) being gathered.
struct Group {
    Coll key;
    unsigned arrived;              // lanes waiting in this group
    const Fiber* first;            // for messages
};
struct Warp {
    unsigned existing;             // lanes that exist (the last warp of a block may be partial)
    unsigned exited;
    unsigned ngroups;
    Group groups[32];
};

struct SharedVar {
    const void* key;               // the declaration (one static per function instantiation)
    const char* name;
    size_t offset, bytes;
};

constexpr size_t kRedZone = 128;
constexpr size_t kArenaBytes = 1u << 20;
constexpr size_t kStaticSharedMax = 48 * 1024;
constexpr unsigned char kPoison = 0xff;

struct Block {
    const Launch* launch;
    const KernelInfo* kernel;
    void** args;
    uint3 idx;
    unsigned n;                    // threads
    unsigned done, at_barrier;    // exited threads, threads waiting at __syncthreads
    const char* bar_file;
    int bar_line;
    Fiber* fibers;
    struct Warp* warps;
    // shared memory: [red zone][dynamic][red zone] then each static variable + red zone
    char* arena;
    size_t arena_used, static_bytes;
    std::vector<SharedVar> vars;
    bool cp_async_eager;
};

// Per OS thread. `tls` is trivially constructible and destructible, so reading threadIdx costs a
// TLS address and a load (a thread_local with a destructor goes through a wrapper call each time).
struct Tls {
    // what the kernel reads as threadIdx / blockIdx / blockDim / gridDim
    uint3 thread_idx, block_idx;
    uint3 block_dim, grid_dim;
    Fiber* cur;                    // the running fiber, null on the scheduler's stack
    Block* block;
    Context sched;
    sigjmp_buf* jmp;               // the launch entry's, while a launch runs on this OS thread
    Report* report;
    char* arena;                   // shared memory, reused from block to block
    char* stacks;                  // fiber stacks, each with a guard page below it
    size_t stacks_bytes, stack_slot;
    unsigned stacks_count;
    bool altstack_checked;
};
inline thread_local Tls tls;

struct Pools {
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    std::vector<unsigned> order;
};
inline thread_local Pools pools;

// ---------------------------------------------------------------------------------------------
// Failing: the message goes to the Report and the launch entry resumes through siglongjmp (from a
// fiber's stack or the scheduler's; nothing on those stacks needs unwinding).

[[noreturn]] inline void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] inline void fail(const char* fmt, ...) {
    Report* r = tls.report;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
    if (tls.cur) {
        r->has_thread = 1;
        r->thread[0] = tls.cur->tid.x;
        r->thread[1] = tls.cur->tid.y;
        r->thread[2] = tls.cur->tid.z;
    }
    siglongjmp(*tls.jmp, RUN_FAILED);
}

inline const char* kind_name(Kind k) {
    switch (k) {
    case K_SHFL_IDX: return "__shfl_sync";
    case K_SHFL_UP: return "__shfl_up_sync";
    case K_SHFL_DOWN: return "__shfl_down_sync";
    case K_SHFL_XOR: return "__shfl_xor_sync";
    case K_SYNCWARP: return "__syncwarp";
    case K_BALLOT: return "__ballot_sync";
    case K_ANY: return "__any_sync";
    case K_ALL: return "__all_sync";
    case K_REDUCE_ADD: return "__reduce_add_sync";
    case K_REDUCE_MIN: return "__reduce_min_sync";
    case K_REDUCE_MAX: return "__reduce_max_sync";
    case K_REDUCE_AND: return "__reduce_and_sync";
    case K_REDUCE_OR: return "__reduce_or_sync";
    case K_REDUCE_XOR: return "__reduce_xor_sync";
    case K_MMA_BF16: return "mma.sync.m16n8k16 (bf16)";
    case K_LDMATRIX: return "ldmatrix";
    default: return "(none)";
    }
}

// .aligned instructions: every lane of the warp must execute them
inline bool aligned_kind(Kind k) { return k == K_MMA_BF16 || k == K_LDMATRIX; }

// ---------------------------------------------------------------------------------------------
// Context switch.

#if defined(__x86_64__)
// drpo_sim_swap(save, load): push the callee-saved registers and the FP control words (MXCSR, x87
// CW), store rsp in *save, load rsp from `load`, restore the other side's control words (only when
// they differ from ours: ldmxcsr / fldcw cost as much as the rest of the switch, and kernels never
// change them), pop its registers, return into it. A fresh fiber's stack is laid out by ctx_init so
// that this "return" enters drpo_sim_fiber_entry with rbx = Fiber*.
asm(R"(
    .text
    .p2align 4
    .globl drpo_sim_swap
    .hidden drpo_sim_swap
    .type drpo_sim_swap, @function
drpo_sim_swap:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    pushq $0
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq (%rsp), %rax
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    cmpq (%rsp), %rax
    je 1f
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
1:
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size drpo_sim_swap, .-drpo_sim_swap

    .p2align 4
    .globl drpo_sim_fiber_entry
    .hidden drpo_sim_fiber_entry
    .type drpo_sim_fiber_entry, @function
drpo_sim_fiber_entry:
    movq %rbx, %rdi
    call drpo_sim_fiber_main
    ud2
    .size drpo_sim_fiber_entry, .-drpo_sim_fiber_entry
)");
extern "C" void drpo_sim_fiber_entry();
#endif

extern "C" __attribute__((visibility("hidden"))) void drpo_sim_fiber_main(Fiber* f);

inline void ctx_init(Fiber* f) {
#if defined(__x86_64__)
    // [sp0] MXCSR, x87 CW | r15 r14 r13 r12 | rbx = f | rbp = 0 | return address (16-byte aligned + 8)
    uintptr_t top = reinterpret_cast<uintptr_t>(f->stack_hi) & ~uintptr_t(15);
    uint64_t* ret = reinterpret_cast<uint64_t*>(top - 24);
    uint64_t* sp0 = ret - 7;
    unsigned mxcsr;
    unsigned short fcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fcw));
    std::memset(sp0, 0, 8 * sizeof(uint64_t));
    std::memcpy(sp0, &mxcsr, 4);
    std::memcpy(reinterpret_cast<char*>(sp0) + 4, &fcw, 2);
    sp0[5] = reinterpret_cast<uint64_t>(f);
    *ret = reinterpret_cast<uint64_t>(&drpo_sim_fiber_entry);
    f->ctx.sp = sp0;
#else
    getcontext(&f->ctx.uc);
    f->ctx.uc.uc_stack.ss_sp = f->stack_lo;
    f->ctx.uc.uc_stack.ss_size = size_t(f->stack_hi - f->stack_lo);
    f->ctx.uc.uc_link = nullptr;
    uintptr_t p = reinterpret_cast<uintptr_t>(f);
    makecontext(&f->ctx.uc, reinterpret_cast<void (*)()>(+[](unsigned lo, unsigned hi) {
                    drpo_sim_fiber_main(reinterpret_cast<Fiber*>((uintptr_t(hi) << 32) | lo));
                }),
                2, unsigned(p), unsigned(uint64_t(p) >> 32));
#endif
}

inline void ctx_switch(Context& from, Context& to) {
#if defined(__x86_64__)
    drpo_sim_swap(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
}

// The running fiber gives the OS thread back to the scheduler (state already set).
inline void yield() {
    Fiber* f = tls.cur;
    ctx_switch(f->ctx, tls.sched);
}

inline Fiber* lane_fiber(unsigned warp, unsigned lane) {
    unsigned i = warp * 32 + lane;
    return i < tls.block->n ? &tls.block->fibers[i] : nullptr;
}

// ---------------------------------------------------------------------------------------------
// Shared memory: one arena per OS thread; every block lays out its variables afresh.

inline void shared_fail_limits(const char* name, size_t bytes) {
    Block& b = *tls.block;
    if (b.static_bytes > kStaticSharedMax)
        fail("static shared memory of this kernel exceeds 48 KiB (CUDA's limit for static __shared__) at `%s` "
             "(%zu bytes; %zu in all)", name, bytes, b.static_bytes);
    size_t total = b.static_bytes + b.launch->dynamic_shared_bytes;
    if (total > b.launch->shared_limit_bytes)
        fail("shared memory of this block: %zu static + %u dynamic bytes exceed the limit of %u (at `%s`)",
             b.static_bytes, b.launch->dynamic_shared_bytes, b.launch->shared_limit_bytes, name);
}

inline void* shared_static(const void* key, size_t bytes, size_t align, const char* name) {
    Block& b = *tls.block;
    for (const SharedVar& v : b.vars)
        if (v.key == key) return b.arena + v.offset;
    if (align < 16) align = 16;
    size_t off = (b.arena_used + align - 1) & ~(align - 1);
    if (off + bytes + kRedZone > kArenaBytes)
        fail("shared memory arena of the simulator exhausted at `%s` (%zu bytes)", name, bytes);
    b.static_bytes += bytes;
    shared_fail_limits(name, bytes);
    std::memset(b.arena + b.arena_used, kPoison, off + bytes + kRedZone - b.arena_used);
    b.vars.push_back(SharedVar{key, name, off, bytes});
    b.arena_used = off + bytes + kRedZone;
    return b.arena + off;
}

template <class T, size_t Align>
inline T& shared_var(const void* key, const char* name) {
    constexpr size_t a = alignof(T) > Align ? alignof(T) : Align;
    return *static_cast<T*>(shared_static(key, sizeof(T), a, name));
}

inline void* shared_dynamic(size_t align, const char* name) {
    if (align > kRedZone) fail("extern __shared__ `%s`: alignment %zu above the simulator's %zu", name, align, kRedZone);
    return tls.block->arena + kRedZone;
}

// True when [p, p + bytes) lies inside one shared variable (dynamic or static) of the block.
inline bool in_shared(const void* p, size_t bytes, const char** var = nullptr) {
    Block& b = *tls.block;
    const char* c = static_cast<const char*>(p);
    if (c < b.arena || c >= b.arena + kArenaBytes) return false;
    size_t off = size_t(c - b.arena);
    size_t dyn = b.launch->dynamic_shared_bytes;
    if (off >= kRedZone && off + bytes <= kRedZone + dyn) {
        if (var) *var = "extern __shared__";
        return true;
    }
    for (const SharedVar& v : b.vars)
        if (off >= v.offset && off + bytes <= v.offset + v.bytes) {
            if (var) *var = v.name;
            return true;
        }
    return false;
}

inline bool in_arena(const void* p) {
    const char* c = static_cast<const char*>(p);
    return tls.arena && c >= tls.arena && c < tls.arena + kArenaBytes;
}

inline void check_red_zones(Block& b) {
    auto scan = [&](size_t from, size_t to, const char* after) {
        for (size_t i = from; i < to; i++)
            if (static_cast<unsigned char>(b.arena[i]) != kPoison)
                fail("shared memory written out of bounds: byte %zu after the end of `%s`", i - from, after);
    };
    size_t dyn_end = kRedZone + b.launch->dynamic_shared_bytes;
    for (size_t i = 0; i < kRedZone; i++)
        if (static_cast<unsigned char>(b.arena[i]) != kPoison)
            fail("shared memory written out of bounds: %zu bytes before the start of the dynamic shared memory",
                 kRedZone - i);
    scan(dyn_end, dyn_end + kRedZone, "extern __shared__ (dynamic shared memory)");
    for (const SharedVar& v : b.vars) scan(v.offset + v.bytes, v.offset + v.bytes + kRedZone, v.name);
}

// ---------------------------------------------------------------------------------------------
// Barriers and warp collectives.

inline void barrier(const char* file, int line) {
    Fiber* f = tls.cur;
    Block& b = *tls.block;
    if (b.done)
        fail("__syncthreads at %s:%d: %u thread(s) of the block have already exited (an early return before a "
             "barrier: every thread of the block must reach it)", file, line, b.done);
    if (b.at_barrier == 0) {
        b.bar_file = file;
        b.bar_line = line;
    } else if (b.bar_line != line || (b.bar_file != file && std::strcmp(b.bar_file, file) != 0)) {
        fail("divergent __syncthreads: this thread is at %s:%d while %u thread(s) wait at %s:%d", file, line,
             b.at_barrier, b.bar_file, b.bar_line);
    }
    if (++b.at_barrier == b.n) {
        b.at_barrier = 0;
        for (unsigned i = 0; i < b.n; i++)
            if (b.fibers[i].state == AT_BARRIER) b.fibers[i].state = RUNNABLE;
        return;
    }
    f->state = AT_BARRIER;
    f->file = file;
    f->line = line;
    yield();
}

inline bool same_coll(const Coll& a, const Coll& b) {
    return a.kind == b.kind && a.mask == b.mask && a.variant == b.variant;
}

inline float bf16_lo(unsigned w) { uint32_t u = (w & 0xffffu) << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline float bf16_hi(unsigned w) { uint32_t u = w & 0xffff0000u; float f; std::memcpy(&f, &u, 4); return f; }

inline void complete_mma_bf16(Fiber* lanes[32]) {
    // PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type": g = lane >> 2,
    // t = lane % 4; A (row-major 16×16): a0,a1 = A[g][2t, 2t+1], a2,a3 = A[g+8][2t..], a4,a5 = A[g][2t+8..],
    // a6,a7 = A[g+8][2t+8..], two per .b32 register, low half first; B (16×8, "col"): b0,b1 = B[2t, 2t+1][g],
    // b2,b3 = B[2t+8, 2t+9][g]; C, D (16×8 f32): c0,c1 = C[g][2t, 2t+1], c2,c3 = C[g+8][2t, 2t+1].
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const int g = l >> 2, t = l & 3;
        const unsigned* a = static_cast<const unsigned*>(lanes[l]->coll.p0);
        const unsigned* bb = static_cast<const unsigned*>(lanes[l]->coll.p1);
        const float* c = static_cast<const float*>(lanes[l]->coll.p2);
        A[g][2 * t] = bf16_lo(a[0]);         A[g][2 * t + 1] = bf16_hi(a[0]);
        A[g + 8][2 * t] = bf16_lo(a[1]);     A[g + 8][2 * t + 1] = bf16_hi(a[1]);
        A[g][2 * t + 8] = bf16_lo(a[2]);     A[g][2 * t + 9] = bf16_hi(a[2]);
        A[g + 8][2 * t + 8] = bf16_lo(a[3]); A[g + 8][2 * t + 9] = bf16_hi(a[3]);
        B[2 * t][g] = bf16_lo(bb[0]);        B[2 * t + 1][g] = bf16_hi(bb[0]);
        B[2 * t + 8][g] = bf16_lo(bb[1]);    B[2 * t + 9][g] = bf16_hi(bb[1]);
        C[g][2 * t] = c[0];                  C[g][2 * t + 1] = c[1];
        C[g + 8][2 * t] = c[2];              C[g + 8][2 * t + 1] = c[3];
    }
    // bf16 products are exact in f64 (and in f32); the 16 of a dot product and C are summed in f64, in
    // k order, and rounded once: an ideal tensor core (real ones align to the largest exponent and
    // truncate). j innermost: eight independent sums the compiler can vectorise.
    float D[16][8];
    for (int i = 0; i < 16; i++) {
        double s[8];
        for (int j = 0; j < 8; j++) s[j] = C[i][j];
        for (int k = 0; k < 16; k++) {
            const double a = A[i][k];
            for (int j = 0; j < 8; j++) s[j] += a * double(B[k][j]);
        }
        for (int j = 0; j < 8; j++) D[i][j] = float(s[j]);
    }
    for (int l = 0; l < 32; l++) {
        const int g = l >> 2, t = l & 3;
        float* d = static_cast<float*>(lanes[l]->coll.p3);
        d[0] = D[g][2 * t];
        d[1] = D[g][2 * t + 1];
        d[2] = D[g + 8][2 * t];
        d[3] = D[g + 8][2 * t + 1];
    }
}

inline void complete_ldmatrix(Fiber* lanes[32], unsigned count, bool trans) {
    // PTX ISA, ldmatrix .m8n8 .b16: lane 8·i + r gives the address of row r of matrix i (16 bytes,
    // 16-byte aligned, in shared memory); lane l receives, for each matrix i, the 32-bit word l % 4
    // of row l / 4 (two elements, low half first); with .trans, elements [2·(l%4)][l/4] and
    // [2·(l%4)+1][l/4] instead.
    const unsigned char* row[4][8];
    for (unsigned i = 0; i < count; i++)
        for (unsigned r = 0; r < 8; r++) {
            const Fiber* src = lanes[8 * i + r];
            const void* p = src->coll.p0;
            if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
                fail("ldmatrix at %s:%d: lane %u's row address %p is not 16-byte aligned", src->file, src->line,
                     8 * i + r, p);
            if (!in_shared(p, 16))
                fail("ldmatrix at %s:%d: lane %u's row address %p is not 16 bytes inside one shared variable",
                     src->file, src->line, 8 * i + r, p);
            row[i][r] = static_cast<const unsigned char*>(p);
        }
    for (int l = 0; l < 32; l++) {
        unsigned* out = static_cast<unsigned*>(lanes[l]->coll.p3);
        for (unsigned i = 0; i < count; i++) {
            uint32_t w;
            if (!trans) {
                std::memcpy(&w, row[i][l / 4] + 4 * (l % 4), 4);
            } else {
                uint16_t lo, hi;
                std::memcpy(&lo, row[i][2 * (l % 4)] + 2 * (l / 4), 2);
                std::memcpy(&hi, row[i][2 * (l % 4) + 1] + 2 * (l / 4), 2);
                w = uint32_t(lo) | (uint32_t(hi) << 16);
            }
            out[i] = w;
        }
    }
}

// Every lane of the group's mask that has not exited waits in it: compute each lane's result.
inline void complete(unsigned warp, const Group& grp) {
    const Coll& c = grp.key;
    Fiber* lanes[32] = {};
    const unsigned present = grp.arrived;
    for (unsigned l = 0; l < 32; l++)
        if (present >> l & 1) lanes[l] = lane_fiber(warp, l);
    const uint64_t poison = ~uint64_t(0);
    switch (c.kind) {
    case K_SHFL_IDX:
    case K_SHFL_UP:
    case K_SHFL_DOWN:
    case K_SHFL_XOR:
        for (unsigned l = 0; l < 32; l++)
            if (lanes[l]) {
                int s = lanes[l]->coll.src;
                lanes[l]->result = (s >= 0 && s < 32 && (present >> s & 1)) ? lanes[s]->coll.value : poison;
            }
        break;
    case K_SYNCWARP:
        break;
    case K_BALLOT:
    case K_ANY:
    case K_ALL: {
        unsigned bits = 0;
        for (unsigned l = 0; l < 32; l++)
            if (lanes[l] && lanes[l]->coll.value) bits |= 1u << l;
        uint64_t r = c.kind == K_BALLOT ? bits : c.kind == K_ANY ? bits != 0 : bits == present;
        for (unsigned l = 0; l < 32; l++)
            if (lanes[l]) lanes[l]->result = r;
        break;
    }
    case K_REDUCE_ADD:
    case K_REDUCE_MIN:
    case K_REDUCE_MAX:
    case K_REDUCE_AND:
    case K_REDUCE_OR:
    case K_REDUCE_XOR: {
        bool first = true;
        uint32_t r = 0;
        for (unsigned l = 0; l < 32; l++) {
            if (!lanes[l]) continue;
            uint32_t v = uint32_t(lanes[l]->coll.value);
            if (first) { r = v; first = false; continue; }
            switch (c.kind) {
            case K_REDUCE_ADD: r += v; break;
            case K_REDUCE_AND: r &= v; break;
            case K_REDUCE_OR: r |= v; break;
            case K_REDUCE_XOR: r ^= v; break;
            case K_REDUCE_MIN: r = c.variant ? uint32_t(std::min(int32_t(r), int32_t(v))) : std::min(r, v); break;
            default: r = c.variant ? uint32_t(std::max(int32_t(r), int32_t(v))) : std::max(r, v); break;
            }
        }
        for (unsigned l = 0; l < 32; l++)
            if (lanes[l]) lanes[l]->result = r;
        break;
    }
    case K_MMA_BF16:
        complete_mma_bf16(lanes);
        break;
    case K_LDMATRIX:
        complete_ldmatrix(lanes, c.variant & 0xf, (c.variant >> 4) != 0);
        break;
    default:
        fail("internal: unknown collective %d", int(c.kind));
    }
    for (unsigned l = 0; l < 32; l++)
        if (lanes[l]) lanes[l]->state = RUNNABLE;
}

// The lanes group `g` still waits for: those of its mask that exist, have not exited, have not arrived.
inline unsigned missing(const Warp& w, const Group& g) { return g.key.mask & w.existing & ~w.exited & ~g.arrived; }

inline void check_aligned(const Warp& w, const Group& g, unsigned warp) {
    const unsigned bad = ~w.existing | w.exited;
    if (!aligned_kind(g.key.kind) || !bad) return;
    const int lane = __builtin_ctz(bad);
    fail("%s at %s:%d: lane %d of warp %u %s (all 32 lanes must execute it)", kind_name(g.key.kind), g.first->file,
         g.first->line, lane, warp, (~w.existing >> lane & 1) ? "does not exist (a partial last warp)" : "has exited");
}

inline void finish_group(unsigned warp, unsigned gi) {
    Warp& w = tls.block->warps[warp];
    Group g = w.groups[gi];
    w.groups[gi] = w.groups[--w.ngroups];
    complete(warp, g);
}

inline uint64_t collective(Coll c, const char* file, int line) {
    Fiber* f = tls.cur;
    Warp& w = tls.block->warps[f->warp];
    if (aligned_kind(c.kind)) c.mask = 0xffffffffu;
    const unsigned me = 1u << f->lane;
    if (!(c.mask & me))
        fail("%s at %s:%d: mask 0x%08x does not contain the calling lane %u", kind_name(c.kind), file, line, c.mask,
             f->lane);
    f->coll = c;
    f->file = file;
    f->line = line;
    f->state = AT_WARP;
    // Lanes of this mask may still wait in an earlier collective that completes without us (two
    // groups of lanes, each with its own mask): they come here afterwards. Lanes that wait for each
    // other in different collectives never do; the scheduler reports that as a deadlock.
    unsigned gi = w.ngroups;
    for (unsigned i = 0; i < w.ngroups; i++)
        if (same_coll(w.groups[i].key, c)) gi = i;
    if (gi == w.ngroups) {
        w.groups[w.ngroups++] = Group{c, 0, f};
    }
    Group& g = w.groups[gi];
    g.arrived |= me;
    check_aligned(w, g, f->warp);
    if (!missing(w, g)) {
        finish_group(f->warp, gi);
        return f->result;
    }
    yield();
    return f->result;
}

// A fiber has exited: a barrier can never complete now; collectives that only waited for it can.
inline void on_exit(Fiber* f) {
    Block& b = *tls.block;
    if (b.at_barrier)
        fail("thread exited while %u thread(s) of the block wait at __syncthreads at %s:%d (every thread of the "
             "block must reach it)", b.at_barrier, b.bar_file, b.bar_line);
    Warp& w = b.warps[f->warp];
    w.exited |= 1u << f->lane;
    for (unsigned i = 0; i < w.ngroups;) {
        Group& g = w.groups[i];
        if (g.key.mask >> f->lane & 1) {
            check_aligned(w, g, f->warp);
            if (!missing(w, g)) {
                finish_group(f->warp, i);
                continue;   // groups[i] is now another group
            }
        }
        i++;
    }
}

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp shuffles move 1 to 8 bytes");
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof(T));
    return u;
}
template <class T>
inline T from_bits(uint64_t u) {
    T v;
    std::memcpy(&v, &u, sizeof(T));
    return v;
}

inline int check_width(int width, const char* file, int line) {
    if (width < 1 || width > 32 || (width & (width - 1)))
        fail("warp shuffle at %s:%d: width %d is not a power of two in [1, 32]", file, line, width);
    return width;
}

template <class T>
inline T shuffle(Kind kind, unsigned mask, T var, int arg, int width, const char* file, int line) {
    const int lane = int(tls.cur->lane);
    width = check_width(width, file, line);
    const int base = lane & ~(width - 1);
    int src = lane;
    switch (kind) {
    case K_SHFL_IDX: src = base + (arg & (width - 1)); break;
    case K_SHFL_UP: src = lane - arg >= base ? lane - arg : lane; break;
    case K_SHFL_DOWN: src = lane + arg < base + width ? lane + arg : lane; break;
    default: src = lane ^ arg; if (src >= base + width) src = lane; break;
    }
    Coll c{};
    c.kind = kind;
    c.variant = uint8_t(width);
    c.mask = mask;
    c.src = src;
    c.value = to_bits(var);
    return from_bits<T>(collective(c, file, line));
}

inline uint64_t vote(Kind kind, unsigned mask, uint64_t value, uint8_t variant, const char* file, int line) {
    Coll c{};
    c.kind = kind;
    c.variant = variant;
    c.mask = mask;
    c.value = value;
    return collective(c, file, line);
}

// ---------------------------------------------------------------------------------------------
// Tensor-core and async-copy instructions, called by the DRPO_SIM branches of cuda/ptx.cuh.

inline void mma_m16n8k16_bf16(float* d, const unsigned* a, const unsigned* b, const float* c, const char* file,
                              int line) {
    Coll k{};
    k.kind = K_MMA_BF16;
    k.p0 = a;
    k.p1 = b;
    k.p2 = c;
    k.p3 = d;
    collective(k, file, line);
}

inline void ldmatrix(unsigned* r, unsigned count, bool trans, const void* row_addr, const char* file, int line) {
    Coll k{};
    k.kind = K_LDMATRIX;
    k.variant = uint8_t(count | (trans ? 0x10 : 0));
    k.p0 = row_addr;
    k.p3 = r;
    collective(k, file, line);
}

inline void copy_async_now(const AsyncCopy& c) {
    std::memcpy(c.dst, c.src, c.src_bytes);
    std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
}

inline void cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes, bool cg, const char* file,
                     int line) {
    Fiber* f = tls.cur;
    if (bytes != 4 && bytes != 8 && bytes != 16)
        fail("cp.async at %s:%d: %u bytes (4, 8 or 16)", file, line, bytes);
    if (cg && bytes != 16) fail("cp.async.cg at %s:%d: %u bytes (.cg copies 16)", file, line, bytes);
    if (src_bytes > bytes) fail("cp.async at %s:%d: src-size %u above cp-size %u", file, line, src_bytes, bytes);
    if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes)
        fail("cp.async at %s:%d: %p <- %p not aligned to %u bytes", file, line, dst, src, bytes);
    const char* var = nullptr;
    if (!in_shared(dst, bytes, &var))
        fail("cp.async at %s:%d: destination %p is not %u bytes inside one shared variable", file, line, dst, bytes);
    if (in_arena(src)) fail("cp.async at %s:%d: source %p is shared memory (it copies global to shared)", file, line, src);
    AsyncCopy c{dst, src, bytes, src_bytes, f->commits};
    if (tls.block->cp_async_eager) copy_async_now(c);
    else f->copies.push_back(c);
}

inline void cp_async_commit() { tls.cur->commits++; }

// Completes the copies of every committed group but the newest `pending` ones (wait_all: all).
inline void cp_async_wait(unsigned long long pending, bool all) {
    Fiber* f = tls.cur;
    std::vector<AsyncCopy>& q = f->copies;
    size_t keep = 0;
    for (size_t i = 0; i < q.size(); i++) {
        bool done = all || q[i].group + pending < f->commits;
        if (done) copy_async_now(q[i]);
        else q[keep++] = q[i];
    }
    q.resize(keep);
}

// ---------------------------------------------------------------------------------------------
// Running a launch: blocks from the shared counter, each block's fibers on this OS thread.

inline size_t page_size() { return size_t(sysconf(_SC_PAGESIZE)); }

inline void ensure_pools(const Launch& L, unsigned n) {
    size_t page = page_size();
    size_t slot = ((size_t(L.stack_bytes) + page - 1) / page + 1) * page;   // + guard page below
    if (!tls.stacks || tls.stacks_count < n || tls.stack_slot != slot) {
        if (tls.stacks) munmap(tls.stacks, tls.stacks_bytes);
        unsigned count = std::max(n, tls.stacks_count);
        size_t bytes = slot * count;
        void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) fail("the simulator could not map %zu bytes of fiber stacks", bytes);
        for (unsigned i = 0; i < count; i++) mprotect(static_cast<char*>(m) + i * slot, page, PROT_NONE);
        tls.stacks = static_cast<char*>(m);
        tls.stacks_bytes = bytes;
        tls.stack_slot = slot;
        tls.stacks_count = count;
    }
    if (pools.fibers.size() < n) pools.fibers.resize(n);
    if (pools.warps.size() < (n + 31) / 32) pools.warps.resize((n + 31) / 32);
    if (!tls.arena) {
        void* m = mmap(nullptr, kArenaBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) fail("the simulator could not map its shared memory arena");
        mprotect(static_cast<char*>(m) + kArenaBytes, page, PROT_NONE);
        tls.arena = static_cast<char*>(m);
    }
}

inline void ensure_altstack() {
    if (tls.altstack_checked) return;
    tls.altstack_checked = true;
    stack_t ss;
    if (sigaltstack(nullptr, &ss) == 0 && !(ss.ss_flags & SS_DISABLE)) return;
    // the fault handler must run somewhere when a fiber overflows its stack
    size_t bytes = 256 * 1024;
    void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return;
    ss.ss_sp = m;
    ss.ss_size = bytes;
    ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);
}

struct Rng {
    uint64_t s;
    uint64_t next() {
        s += 0x9e3779b97f4a7c15ull;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
};

inline const char* state_name(State s) {
    switch (s) {
    case RUNNABLE: return "runnable";
    case AT_BARRIER: return "at __syncthreads";
    case AT_WARP: return "at a warp collective";
    default: return "exited";
    }
}

[[noreturn]] inline void deadlock(Block& b) {
    // group the waiting threads by what they wait at
    std::string s = "deadlock: no thread of the block can proceed:";
    std::vector<bool> seen(b.n, false);
    for (unsigned i = 0; i < b.n; i++) {
        if (seen[i]) continue;
        const Fiber& f = b.fibers[i];
        unsigned count = 0, last = i;
        for (unsigned j = i; j < b.n; j++) {
            const Fiber& g = b.fibers[j];
            bool same = g.state == f.state && (f.state == DONE || (g.line == f.line && g.file == f.file &&
                                                                     (f.state != AT_WARP || same_coll(g.coll, f.coll))));
            if (same) {
                seen[j] = true;
                count++;
                last = j;
            }
        }
        char buf[256];
        if (f.state == DONE)
            snprintf(buf, sizeof buf, " %u exited (first %u, last %u);", count, i, last);
        else if (f.state == AT_WARP)
            snprintf(buf, sizeof buf, " %u at %s (mask 0x%08x) at %s:%d (first %u, last %u);", count,
                     kind_name(f.coll.kind), f.coll.mask, f.file, f.line, i, last);
        else
            snprintf(buf, sizeof buf, " %u %s at %s:%d (first %u, last %u);", count, state_name(f.state), f.file,
                     f.line, i, last);
        s += buf;
    }
    s.pop_back();
    fail("%s", s.c_str());
}

inline void run_block(Block& b) {
    const Launch& L = *b.launch;
    const unsigned bx = L.block[0], by = L.block[1];
    tls.block = &b;
    tls.block_idx = b.idx;
    b.fibers = pools.fibers.data();
    b.warps = pools.warps.data();
    for (unsigned w = 0; w < (b.n + 31) / 32; w++) {
        Warp& wp = b.warps[w];
        unsigned lanes = std::min(32u, b.n - 32 * w);
        wp.existing = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
        wp.exited = 0;
        wp.ngroups = 0;
    }
    b.arena = tls.arena;
    b.vars.clear();
    b.arena_used = kRedZone + L.dynamic_shared_bytes + kRedZone;
    b.static_bytes = 0;
    shared_fail_limits("extern __shared__", 0);
    std::memset(b.arena, kPoison, b.arena_used);
    for (unsigned i = 0; i < b.n; i++) {
        Fiber& f = b.fibers[i];
        f.warp = i / 32;
        f.lane = i % 32;
        f.tid = uint3{i % bx, (i / bx) % by, i / (bx * by)};
        f.state = RUNNABLE;
        f.file = "";
        f.line = 0;
        f.coll = Coll{};
        f.copies.clear();
        f.commits = 0;
        f.stack_lo = tls.stacks + size_t(i) * tls.stack_slot + page_size();
        f.stack_hi = tls.stacks + size_t(i + 1) * tls.stack_slot;
        ctx_init(&f);
    }
    b.done = b.at_barrier = 0;
    // resume order: forward, reverse, or a fresh shuffle every round
    std::vector<unsigned>& order = pools.order;
    order.resize(b.n);
    for (unsigned i = 0; i < b.n; i++) order[i] = L.order == 1 ? b.n - 1 - i : i;
    Rng rng{L.seed ^ (uint64_t(b.idx.x) * 0x100000001b3ull + uint64_t(b.idx.y) * 0x9e3779b1ull + b.idx.z) ^
            (uint64_t(L.order) << 40)};
    while (b.done < b.n) {
        if (L.order >= 2)
            for (unsigned i = b.n - 1; i > 0; i--)
                std::swap(order[i], order[unsigned(((rng.next() >> 32) * uint64_t(i + 1)) >> 32)]);
        bool ran = false;
        for (unsigned k = 0; k < b.n; k++) {
            Fiber* f = &b.fibers[order[k]];
            if (f->state != RUNNABLE) continue;
            ran = true;
            tls.cur = f;
            tls.thread_idx = f->tid;
            ctx_switch(tls.sched, f->ctx);
            tls.cur = nullptr;
        }
        if (!ran) deadlock(b);
    }
    check_red_zones(b);
}

// Entered (from drpo_sim_fiber_entry) on the fiber's own stack; defined once per module: this header
// is the first part of exactly one translation unit.
extern "C" void drpo_sim_fiber_main(Fiber* f) {
    Block& b = *tls.block;
    b.kernel->call(b.args);
    cp_async_wait(0, true);           // copies still in flight land eventually
    f->state = DONE;
    b.done++;
    on_exit(f);
    ctx_switch(f->ctx, tls.sched);
    __builtin_trap();                 // never resumed
}

inline uint64_t gcd(uint64_t a, uint64_t b) {
    while (b) { uint64_t t = a % b; a = b; b = t; }
    return a;
}

inline int run_launch(const KernelInfo& k, const Launch& L, void** args, Report* report) {
    ensure_altstack();
    std::memset(report, 0, sizeof *report);
    report->fault_write = -1;
    const uint64_t gx = L.grid[0], gy = L.grid[1], gz = L.grid[2];
    const uint64_t total = L.blocks ? L.block_count : gx * gy * gz;
    const unsigned n = L.block[0] * L.block[1] * L.block[2];
    tls.block_dim = uint3{L.block[0], L.block[1], L.block[2]};
    tls.grid_dim = uint3{L.grid[0], L.grid[1], L.grid[2]};
    tls.report = report;
    tls.cur = nullptr;
    Block b{};
    b.launch = &L;
    b.kernel = &k;
    b.args = args;
    b.n = n;
    b.cp_async_eager = L.order == 0;
    sigjmp_buf jb;
    tls.jmp = &jb;
    int code = sigsetjmp(jb, 1);
    if (code != 0) {
        report->block[0] = tls.block_idx.x;
        report->block[1] = tls.block_idx.y;
        report->block[2] = tls.block_idx.z;
        __atomic_store_n(L.abort, 1u, __ATOMIC_SEQ_CST);
        tls.jmp = nullptr;
        tls.cur = nullptr;
        tls.block = nullptr;
        return code;
    }
    ensure_pools(L, n);
    // block order: ascending, descending, or an affine permutation i -> (a·i + c) mod total (of the
    // listed blocks, when there is a list)
    Rng rng{L.seed * 0x2545f4914f6cdd1dull + L.order};
    uint64_t a = 1, c = 0;
    if (L.order >= 2 && total > 1) {
        a = (rng.next() % total) | 1;
        while (gcd(a, total) != 1) a += 2;
        c = rng.next() % total;
    }
    for (;;) {
        if (__atomic_load_n(L.abort, __ATOMIC_RELAXED)) break;
        uint64_t i = __atomic_fetch_add(L.next_block, 1, __ATOMIC_RELAXED);
        if (i >= total) break;
        uint64_t j = L.order == 0 ? i : L.order == 1 ? total - 1 - i
                                                     : uint64_t((unsigned __int128)(a) * i % total + c) % total;
        if (L.blocks) j = L.blocks[j];
        b.idx = uint3{unsigned(j % gx), unsigned((j / gx) % gy), unsigned(j / (gx * gy))};
        run_block(b);
    }
    tls.jmp = nullptr;
    tls.block = nullptr;
    return RUN_OK;
}

// Called by src/gpu/sim's SIGSEGV/SIGBUS/SIGFPE handler (on the signal stack) for a fault on an OS
// thread inside drpo_sim_run of this module: record it and leave the launch.
inline void on_fault(uint64_t addr, int is_write, int sig) {
    if (!tls.jmp) return;   // not inside a launch of this module: the handler chains on
    Report* r = tls.report;
    r->fault_addr = addr;
    r->fault_write = is_write;
    r->fault_signal = sig;
    r->message[0] = 0;
    if (tls.cur) {
        r->has_thread = 1;
        r->thread[0] = tls.cur->tid.x;
        r->thread[1] = tls.cur->tid.y;
        r->thread[2] = tls.cur->tid.z;
        char* p = reinterpret_cast<char*>(addr);
        if (p >= tls.cur->stack_lo - page_size() && p < tls.cur->stack_lo)
            snprintf(r->message, sizeof r->message, "stack overflow of the thread (its fiber has %zu bytes of stack)",
                     size_t(tls.cur->stack_hi - tls.cur->stack_lo));
    }
    if (tls.arena && reinterpret_cast<char*>(addr) >= tls.arena + kArenaBytes &&
        reinterpret_cast<char*>(addr) < tls.arena + kArenaBytes + page_size())
        snprintf(r->message, sizeof r->message, "access past the end of the simulator's shared memory arena");
    siglongjmp(*tls.jmp, RUN_FAULT);
}

// ---------------------------------------------------------------------------------------------
// Kernel parameters: the signature code of each type, and the call that unpacks `void** args`.

template <class T>
inline std::string param_code() {
    if constexpr (std::is_pointer<T>::value) {
        using P = typename std::remove_pointer<T>::type;
        size_t bytes = 0;
        if constexpr (!std::is_void<P>::value) bytes = sizeof(P);
        return std::string(std::is_const<P>::value ? "r" : "w") + std::to_string(bytes);
    } else if constexpr (std::is_same<T, bool>::value) {
        return "b1";
    } else if constexpr (std::is_floating_point<T>::value) {
        return "f" + std::to_string(sizeof(T));
    } else if constexpr (std::is_integral<T>::value) {
        return std::string(std::is_signed<T>::value ? "i" : "u") + std::to_string(sizeof(T));
    } else {
        return "s" + std::to_string(sizeof(T));
    }
}

template <class... Ps>
inline const char* signature_of(void (*)(Ps...)) {
    static const std::string s = [] {
        std::string r;
        ((r += (r.empty() ? "" : ","), r += param_code<typename std::decay<Ps>::type>()), ...);
        return r;
    }();
    return s.c_str();
}

template <class... Ps, size_t... I>
inline void invoke_with(void (*k)(Ps...), void** args, std::index_sequence<I...>) {
    k(*static_cast<typename std::decay<Ps>::type*>(args[I])...);
}

template <class... Ps>
inline void invoke(void (*k)(Ps...), void** args) {
    invoke_with(k, args, std::index_sequence_for<Ps...>{});
}

}  // namespace drpo_sim

// ---------------------------------------------------------------------------------------------
// The CUDA API the kernels call.

#define threadIdx (::drpo_sim::tls.thread_idx)
#define blockIdx (::drpo_sim::tls.block_idx)
#define blockDim (::drpo_sim::tls.block_dim)
#define gridDim (::drpo_sim::tls.grid_dim)

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    drpo_sim::barrier(file, line);
}
inline int __syncthreads_count(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    // the barrier, then a block-wide count kept in a per-block shared slot
    static char key;
    int* slots = static_cast<int*>(drpo_sim::shared_static(&key, 2 * sizeof(int), 16, "__syncthreads_count"));
    drpo_sim::barrier(file, line);
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) slots[0] = 0;
    drpo_sim::barrier(file, line);
    slots[0] += pred != 0;   // fibers of a block never run at the same time
    drpo_sim::barrier(file, line);
    int r = slots[0];
    drpo_sim::barrier(file, line);
    return r;
}
inline int __syncthreads_and(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return __syncthreads_count(pred, file, line) == int(blockDim.x * blockDim.y * blockDim.z);
}
inline int __syncthreads_or(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return __syncthreads_count(pred, file, line) != 0;
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    drpo_sim::vote(drpo_sim::K_SYNCWARP, mask, 0, 0, file, line);
}

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
    return drpo_sim::shuffle(drpo_sim::K_SHFL_IDX, mask, var, src_lane, width, file, line);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
    return drpo_sim::shuffle(drpo_sim::K_SHFL_UP, mask, var, int(delta), width, file, line);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
    return drpo_sim::shuffle(drpo_sim::K_SHFL_DOWN, mask, var, int(delta), width, file, line);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32, const char* file = __builtin_FILE(),
                         int line = __builtin_LINE()) {
    return drpo_sim::shuffle(drpo_sim::K_SHFL_XOR, mask, var, lane_mask, width, file, line);
}
inline unsigned __ballot_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return unsigned(drpo_sim::vote(drpo_sim::K_BALLOT, mask, pred != 0, 0, file, line));
}
inline int __any_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return int(drpo_sim::vote(drpo_sim::K_ANY, mask, pred != 0, 0, file, line));
}
inline int __all_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return int(drpo_sim::vote(drpo_sim::K_ALL, mask, pred != 0, 0, file, line));
}
// The lanes of this warp that have not exited (a simulator cannot know which lanes a GPU would
// have converged at this instruction).
inline unsigned __activemask() {
    unsigned m = 0;
    for (unsigned l = 0; l < 32; l++) {
        drpo_sim::Fiber* g = drpo_sim::lane_fiber(drpo_sim::tls.cur->warp, l);
        if (g && g->state != drpo_sim::DONE) m |= 1u << l;
    }
    return m;
}
#define DRPO_SIM_REDUCE(NAME, KIND)                                                                              \
    inline unsigned NAME(unsigned mask, unsigned v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) { \
        return unsigned(drpo_sim::vote(drpo_sim::KIND, mask, v, 0, file, line));                                \
    }                                                                                                            \
    inline int NAME(unsigned mask, int v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {     \
        return int(drpo_sim::vote(drpo_sim::KIND, mask, uint32_t(v), 1, file, line));                           \
    }
DRPO_SIM_REDUCE(__reduce_add_sync, K_REDUCE_ADD)
DRPO_SIM_REDUCE(__reduce_min_sync, K_REDUCE_MIN)
DRPO_SIM_REDUCE(__reduce_max_sync, K_REDUCE_MAX)
DRPO_SIM_REDUCE(__reduce_and_sync, K_REDUCE_AND)
DRPO_SIM_REDUCE(__reduce_or_sync, K_REDUCE_OR)
DRPO_SIM_REDUCE(__reduce_xor_sync, K_REDUCE_XOR)
#undef DRPO_SIM_REDUCE

inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
// Yields the fiber: a thread spinning on a flag another thread of its block sets must let it run.
inline void __nanosleep(unsigned) {
    drpo_sim::tls.cur->state = drpo_sim::RUNNABLE;
    drpo_sim::yield();
}
inline long long clock64() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000ll + t.tv_nsec;
}
[[noreturn]] inline void __trap() { drpo_sim::fail("__trap() called"); }

#undef assert
#define assert(e) ((e) ? (void)0 : ::drpo_sim::fail("assertion `%s` failed at %s:%d", #e, __FILE__, __LINE__))

// ---- atomics (blocks run on several OS threads: real atomics) ----
template <class T>
inline T drpo_sim_atomic_cas_loop(T* p, T (*op)(T, T), T v) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomic on 4 or 8 bytes");
    using U = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
    U* q = reinterpret_cast<U*>(p);
    U old = __atomic_load_n(q, __ATOMIC_RELAXED);
    for (;;) {
        T o;
        std::memcpy(&o, &old, sizeof(T));
        T n = op(o, v);
        U nu;
        std::memcpy(&nu, &n, sizeof(T));
        if (__atomic_compare_exchange_n(q, &old, nu, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return o;
    }
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline float atomicAdd(float* p, float v) {
    return drpo_sim_atomic_cas_loop<float>(p, [](float a, float b) { return a + b; }, v);
}
inline double atomicAdd(double* p, double v) {
    return drpo_sim_atomic_cas_loop<double>(p, [](double a, double b) { return a + b; }, v);
}
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicSub(unsigned* p, unsigned v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
template <class T> inline T atomicExch(T* p, T v) {
    return drpo_sim_atomic_cas_loop<T>(p, [](T, T b) { return b; }, v);
}
inline int atomicMax(int* p, int v) { return drpo_sim_atomic_cas_loop<int>(p, [](int a, int b) { return a > b ? a : b; }, v); }
inline unsigned atomicMax(unsigned* p, unsigned v) {
    return drpo_sim_atomic_cas_loop<unsigned>(p, [](unsigned a, unsigned b) { return a > b ? a : b; }, v);
}
inline int atomicMin(int* p, int v) { return drpo_sim_atomic_cas_loop<int>(p, [](int a, int b) { return a < b ? a : b; }, v); }
inline unsigned atomicMin(unsigned* p, unsigned v) {
    return drpo_sim_atomic_cas_loop<unsigned>(p, [](unsigned a, unsigned b) { return a < b ? a : b; }, v);
}
inline int atomicAnd(int* p, int v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAnd(unsigned* p, unsigned v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
inline int atomicOr(int* p, int v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline int atomicXor(int* p, int v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicXor(unsigned* p, unsigned v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }
template <class T> inline T atomicCAS(T* p, T expected, T desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}

// ---- bit casts and integer intrinsics ----
inline unsigned __float_as_uint(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
inline float __uint_as_float(unsigned u) { float x; std::memcpy(&x, &u, 4); return x; }
inline int __float_as_int(float x) { int u; std::memcpy(&u, &x, 4); return u; }
inline float __int_as_float(int u) { float x; std::memcpy(&x, &u, 4); return x; }
inline long long __double_as_longlong(double x) { long long u; std::memcpy(&u, &x, 8); return u; }
inline double __longlong_as_double(long long u) { double x; std::memcpy(&x, &u, 8); return x; }
inline int __double2hiint(double x) { return int(__double_as_longlong(x) >> 32); }
inline int __double2loint(double x) { return int(__double_as_longlong(x)); }
inline double __hiloint2double(int hi, int lo) {
    return __longlong_as_double((long long)((unsigned long long)(unsigned)hi << 32 | (unsigned)lo));
}
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((unsigned long long)a * b >> 32); }
inline int __mulhi(int a, int b) { return int((long long)a * b >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)((unsigned __int128)a * b >> 64);
}
inline long long __mul64hi(long long a, long long b) { return (long long)((__int128)a * b >> 64); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline unsigned long long __brevll(unsigned long long x) {
    return (unsigned long long)__brev(unsigned(x)) << 32 | __brev(unsigned(x >> 32));
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    unsigned long long v = (unsigned long long)y << 32 | x;
    unsigned r = 0;
    for (int i = 0; i < 4; i++) r |= unsigned((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
    unsigned long long v = (unsigned long long)hi << 32 | lo;
    return unsigned((v << (shift & 31)) >> 32);
}
inline unsigned __funnelshift_lc(unsigned lo, unsigned hi, unsigned shift) {
    unsigned long long v = (unsigned long long)hi << 32 | lo;
    return unsigned((v << std::min(shift, 32u)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    unsigned long long v = (unsigned long long)hi << 32 | lo;
    return unsigned(v >> (shift & 31));
}
inline unsigned __funnelshift_rc(unsigned lo, unsigned hi, unsigned shift) {
    unsigned long long v = (unsigned long long)hi << 32 | lo;
    return unsigned(v >> std::min(shift, 32u));
}

// ---- min / max (CUDA declares them for every pair of arithmetic types) ----
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
// mixed types: the usual arithmetic conversions, as CUDA's overloads do
template <class A, class B, class = typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value &&
                                                           !std::is_same<A, B>::value>::type>
inline typename std::common_type<A, B>::type min(A a, B b) {
    using C = typename std::common_type<A, B>::type;
    return min(C(a), C(b));
}
template <class A, class B, class = typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value &&
                                                           !std::is_same<A, B>::value>::type>
inline typename std::common_type<A, B>::type max(A a, B b) {
    using C = typename std::common_type<A, B>::type;
    return max(C(a), C(b));
}

// ---- float intrinsics: explicit rounding (round to nearest = the host's default mode) ----
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __saturatef(float x) { return x != x ? 0.0f : fminf(fmaxf(x, 0.0f), 1.0f); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
// fast-math intrinsics: the accurate libm functions (CUDA's are less accurate: NOTES.md)
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { sincosf(x, s, c); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline int __float2int_rn(float x) { return int(rintf(x)); }
inline int __float2int_rz(float x) { return int(x); }
inline int __float2int_rd(float x) { return int(floorf(x)); }
inline int __float2int_ru(float x) { return int(ceilf(x)); }
inline unsigned __float2uint_rn(float x) { return unsigned(rintf(x)); }
inline unsigned __float2uint_rz(float x) { return unsigned(x); }
inline long long __float2ll_rn(float x) { return (long long)rintf(x); }
inline long long __double2ll_rn(double x) { return (long long)rint(x); }
inline float __int2float_rn(int x) { return float(x); }
inline float __uint2float_rn(unsigned x) { return float(x); }
inline float __ll2float_rn(long long x) { return float(x); }
inline float __double2float_rn(double x) { return float(x); }

// ---- cache-hinted loads and stores: plain accesses here ----
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline T __ldcv(const T* p) { return *p; }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

// ---------------------------------------------------------------------------------------------
// The module's entry points (src/gpu/sim/mod.rs looks them up with dlsym; the generated part after
// the kernel sources adds the table `drpo_sim_kernels` and `drpo_sim_kernel_count`).

extern "C" __attribute__((visibility("default"))) const unsigned drpo_sim_abi = 1;

extern "C" __attribute__((visibility("default"))) int drpo_sim_run(const drpo_sim::KernelInfo* k, const drpo_sim::Launch* l,
                                                                   void** args, drpo_sim::Report* r) {
    return drpo_sim::run_launch(*k, *l, args, r);
}

extern "C" __attribute__((visibility("default"))) void drpo_sim_fault(uint64_t addr, int is_write, int sig) {
    drpo_sim::on_fault(addr, is_write, sig);
}
