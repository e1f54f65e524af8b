// CPU emulation of the CUDA device language the EventSPD kernels use (plugins/emulation).
//
// A launch runs its blocks one after another; each block's threads are fibers on one OS thread,
// switched only at barriers: __syncthreads, __syncwarp and the warp-collective operations
// (shuffles, WMMA), which are barriers of their warp here. A kernel that relies on lock-step
// execution without them reads what its neighbours have not written yet (poison, see below: wrong
// numbers, not an error message). A kernel that mixes barriers (lanes of one warp at different
// ones), shuffles with a lane that has exited, runs WMMA with exited lanes, or hands WMMA a
// misaligned tile is reported as an error of its launch (cudaGetLastError / the op's RuntimeError).
// Unlike a GPU, where such faults surface asynchronously and poison the context, the error is
// returned by the next cudaGetLastError and then cleared. Atomics are plain read-modify-writes (nothing runs between a
// fiber's switches). Dynamic shared memory is allocated per block with exactly the launch's size
// and filled with the bytes of 0x7FA57FA5 (NaN as float and as half, a huge index as int32 or
// int64), so a read of an unwritten element shows. Static __shared__ variables are statics, poisoned
// the same way when the first of a block's threads reaches their declaration. With ptxas' figures registered
// (register_kernels below) a launch is also held to the kernel's registers, launch bounds and
// static shared memory, as a GPU holds it.
//
// What it cannot tell: timing, memory-model races between warps that a barrier would order on a
// GPU anyway, the exact rounding of tensor-core accumulation (here fp32 in k order), rsqrtf's
// approximation (here exact), and nvcc's FMA contraction (the emulation build is compiled with
// -ffp-contract=off); the GPU tests' tolerances cover those.
#pragma once

#include <math.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda_runtime_api.h"

// ---- qualifiers: plain C++ here ------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// A static local is shared by every fiber of the block (and blocks run one at a time), which is
// what __shared__ means. `extern __shared__` arrays are rewritten by plugins/emulation/__init__.py.
#define __shared__ static

// ---- vector types --------------------------------------------------------------------------
struct uint3 {
    unsigned x, y, z;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

namespace emu {

// The running fiber's coordinates: the scheduler sets them before it switches to a fiber.
extern uint3 g_thread_idx, g_block_idx;
extern dim3 g_block_dim, g_grid_dim;

// Barriers and warp exchange (runtime.cpp). They are out-of-line calls, so the compiler reloads
// the coordinates above after each of them.
void sync_block();
void sync_warp(unsigned mask);
// A warp-collective operation's barrier: every live lane of the warp must reach the same kind
// (a __syncwarp, a shuffle, a WMMA operation); WMMA also needs all 32 lanes live.
enum class WarpOp : uint8_t { kSyncwarp, kShuffle, kWmma };
void warp_barrier(WarpOp op);
uint64_t shuffle_xor(uint64_t bits, int lane_mask, int width, unsigned mask);
void* dynamic_shared();
// Poisons a static __shared__ variable (a C++ static here) the first time one of the running
// block's threads reaches its declaration; the rewrite calls it right after every one.
void fresh_shared(void* variable, size_t bytes);
// For warp-collective operations that every lane would otherwise repeat (WMMA): a per-warp scratch
// of kWarpScratchBytes (zeroed when a block starts) and the running thread's count of such calls.
constexpr size_t kWarpScratchBytes = 8192;
void* warp_scratch();
uint64_t next_collective();
// Records a violation against the running launch, with the fiber's block and thread (the first
// one is kept): "<op>: <what>".
void fail(const char* op, const char* what);

// ---- launch ------------------------------------------------------------------------------------
struct LaunchConfig {
    dim3 grid, block;
    size_t smem;
    const char* name;
    const void* func;
};
void run(const LaunchConfig& cfg, void (*body)(void*), void* ctx);

// What ptxas reports for a kernel on sm_90 (plugins/kernel_resources.py), registered by the code
// plugins/emulation/__init__.py appends to each rewritten kernel.cu (nothing without nvcc). With it
// a launch is checked as a GPU checks it: threads within the function's maxThreadsPerBlock (its
// __launch_bounds__ and its registers cap it), static plus dynamic shared memory within the limit.
struct KernelResources {
    const void* func;
    const char* name;    // the template-id, e.g. "block_pass1_tc<true>"
    int registers;       // per thread
    int static_shared;   // bytes of __shared__ variables
    int local_bytes;     // ptxas' stack frame (not checked here; tests/plugins/test_kernel_resources.py)
    int launch_bound;    // __launch_bounds__' maxThreadsPerBlock, 0 for none
    int max_threads;     // cudaFuncGetAttributes' maxThreadsPerBlock (registers and launch bound)
};
bool register_kernels(std::initializer_list<KernelResources> kernels);

inline dim3 to_dim3(dim3 d) { return d; }
template <class I, class = std::enable_if_t<std::is_integral_v<I>>>
dim3 to_dim3(I n) {
    // a negative or over-wide count becomes a size the launch rejects (on a GPU an over-wide one
    // would be truncated by dim3's conversion instead; the launchers check their counts first)
    return dim3(n < 0 || static_cast<uint64_t>(n) > 0xffffffffull ? 0u : static_cast<unsigned>(n));
}

template <class... P>
struct Launch {
    const char* name;
    void (*kernel)(P...);
    dim3 grid, block;
    size_t smem;
    template <class... A>
    void operator()(A&&... a) const {
        using Args = std::tuple<std::decay_t<P>...>;
        Args args(std::forward<A>(a)...);  // converted once, as the launch copies a kernel's parameters
        struct Ctx {
            void (*kernel)(P...);
            Args* args;
        } ctx{kernel, &args};
        run(LaunchConfig{grid, block, smem, name, reinterpret_cast<const void*>(kernel)},
            [](void* c) {
                auto* x = static_cast<Ctx*>(c);
                std::apply(x->kernel, *x->args);
            },
            &ctx);
    }
};

// kernel<<<grid, block, smem, stream>>>(args) is rewritten to
// ::emu::launch("kernel", kernel, grid, block, smem, stream)(args).
template <class... P, class G, class B>
Launch<P...> launch(const char* name, void (*kernel)(P...), G grid, B block, size_t smem = 0, cudaStream_t = nullptr) {
    return Launch<P...>{name, kernel, to_dim3(grid), to_dim3(block), smem};
}

template <class T>
T* dynamic_shared_as() {
    return static_cast<T*>(dynamic_shared());
}

}  // namespace emu

#define threadIdx (::emu::g_thread_idx)
#define blockIdx (::emu::g_block_idx)
#define blockDim (::emu::g_block_dim)
#define gridDim (::emu::g_grid_dim)

inline void __syncthreads() { ::emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emu::sync_warp(mask); }

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffle of up to 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = ::emu::shuffle_xor(bits, lane_mask, width, mask);
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

// ---- memory and atomics ------------------------------------------------------------------------
template <class T>
T __ldg(const T* p) {
    return *p;
}

template <class T, class = std::enable_if_t<std::is_arithmetic_v<T>>>
T atomicAdd(T* p, T v) {
    const T old = *p;
    *p = old + v;
    return old;
}
// Vector atomics: global memory, compute capability 9.x (the emulated device); naturally aligned.
inline float2 atomicAdd(float2* p, float2 v) {
    if (reinterpret_cast<uintptr_t>(p) % 8 != 0) ::emu::fail("atomicAdd(float2*)", "the address is not 8-byte aligned");
    const float2 old = *p;
    p->x = old.x + v.x;
    p->y = old.y + v.y;
    return old;
}
inline float4 atomicAdd(float4* p, float4 v) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) ::emu::fail("atomicAdd(float4*)", "the address is not 16-byte aligned");
    const float4 old = *p;
    p->x = old.x + v.x;
    p->y = old.y + v.y;
    p->z = old.z + v.z;
    p->w = old.w + v.w;
    return old;
}

// ---- arithmetic intrinsics: IEEE, correctly rounded (the build does not contract FMAs) ------------
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }  // rounded twice; the GPU's is within 2 ulp
inline unsigned __float_as_uint(float x) {
    unsigned u;
    std::memcpy(&u, &x, sizeof(u));
    return u;
}
inline float __uint_as_float(unsigned u) {
    float x;
    std::memcpy(&x, &u, sizeof(x));
    return x;
}
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
