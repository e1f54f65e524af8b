// The CPU emulation's runtime (plugins/emulation): the launch scheduler (blocks in order, each
// block's threads as fibers switched at barriers), the CUDA runtime API subset of
// cuda_runtime_api.h, and UndefinedBehaviorSanitizer handlers that turn a misaligned access, an
// out-of-bounds index into a fixed-size array or a signed overflow inside a kernel into an error
// of its launch. Single-threaded, like the launches it runs.
#include <sys/mman.h>
#include <ucontext.h>

#include <cinttypes>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cuda_runtime_api.h"
#include "emu/control.h"
#include "emu/device.h"

#if defined(__SANITIZE_ADDRESS__)
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
#endif

namespace emu {

uint3 g_thread_idx{0, 0, 0}, g_block_idx{0, 0, 0};
dim3 g_block_dim, g_grid_dim;

namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
// Per fiber; the kernels' frames are a few KB. Small, because AddressSanitizer clears a stack's
// shadow on every switch to it.
constexpr size_t kStackBytes = 128 * 1024;
constexpr size_t kPage = 4096;
constexpr int kDefaultSharedOptin = 232448;  // cudaDevAttrMaxSharedMemoryPerBlockOptin of an H100/H200
constexpr int kDefaultDynamicShared = 48 * 1024;  // without cudaFuncSetAttribute
// Fresh shared memory: 0x7FA57FA5 is NaN as float and as two halves, and a huge index as int32 /
// int64 (-1 or ~0, what 0xFF bytes would give, are "skip" / "no candidate" values in the kernels).
constexpr unsigned char kPoison[4] = {0xa5, 0x7f, 0xa5, 0x7f};

enum class State : uint8_t { kReady, kAtBlockBarrier, kAtWarpBarrier, kDone };

// A suspended execution context. On x86-64: the stack pointer emu_switch saved (the callee-saved
// registers, MXCSR and the x87 control word lie on that stack): no system call per switch, where
// swapcontext makes one to save the signal mask (most of the emulation's time went there).
// Elsewhere: a ucontext_t.
#if defined(__x86_64__)
#define EMU_ASM_SWITCH 1
struct Context {
    void* sp = nullptr;
    char* stack = nullptr;  // a fiber's stack (none for the scheduler's)
    size_t stack_size = 0;
};
#else
#define EMU_ASM_SWITCH 0
struct Context {
    ucontext_t uc;
    char* stack = nullptr;
    size_t stack_size = 0;
};
#endif

struct Fiber {
    Context ctx;
    State state;
    uint64_t shuffles;     // how many shuffles this thread has made in the block
    uint64_t collectives;  // how many next_collective() calls (WMMA operations)
    WarpOp warp_op;        // the kind of warp barrier it waits at
};

// A warp's shuffle exchange, double-buffered: shuffle n writes slot set n % 2, waits at the warp
// barrier and reads; the set is written again only by shuffle n + 2, after the barrier of n + 1,
// which every lane reaches only after its read of n. So one barrier per shuffle suffices.
// generation = the writer's shuffle count: a lane whose slot holds another count has exited or
// skipped this shuffle.
struct WarpSlots {
    uint64_t value[2][kWarpSize];
    uint64_t generation[2][kWarpSize];
    alignas(64) unsigned char scratch[kWarpScratchBytes];  // warp_scratch()
};

struct DeviceState {
    int shared_optin = kDefaultSharedOptin;
    uint64_t schedule_seed = 0;
    std::map<const void*, int> max_dynamic_shared;  // cudaFuncSetAttribute, per kernel
    cudaError_t last_error = cudaSuccess;           // cleared by cudaGetLastError
    cudaError_t message_error = cudaSuccess;        // the error last_message describes
    std::string last_message;
    std::string log;  // one line per launch since reset()
};

DeviceState& device() {
    static DeviceState d;
    return d;
}

// Filled while the library loads (static initialisers of the rewritten kernel.cu files); kept by
// reset(): it describes the compiled code, not the device's state.
std::map<const void*, KernelResources>& kernel_registry() {
    static std::map<const void*, KernelResources> r;
    return r;
}

const KernelResources* resources_of(const void* func) {
    const auto it = kernel_registry().find(func);
    return it == kernel_registry().end() ? nullptr : &it->second;
}


// The launch in flight.
struct Run {
    const LaunchConfig* cfg = nullptr;
    void (*body)(void*) = nullptr;
    void* ctx = nullptr;
    int threads = 0;
    int current = -1;
    std::vector<Fiber> fibers;
    std::vector<WarpSlots> warps;
    Context scheduler{};
    void* shared = nullptr;
    std::set<void*> fresh_statics;  // the static __shared__ variables this block has poisoned
    std::string error;  // the first violation
};
Run* g_run = nullptr;

std::vector<char*> g_stacks;  // reused by every launch; the lowest page of each is a guard page

char* stack_of(int i) {
    while (static_cast<int>(g_stacks.size()) <= i) {
        void* p = mmap(nullptr, kStackBytes + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p == MAP_FAILED) {
            std::fprintf(stderr, "emulation: cannot map a fiber stack\n");
            std::abort();
        }
        mprotect(p, kPage, PROT_NONE);  // a fiber that overflows its stack faults here
        g_stacks.push_back(static_cast<char*>(p));
    }
    return g_stacks[i] + kPage;
}

std::string where(const Run& r) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "%s: block (%u, %u, %u) thread (%u, %u, %u)", r.cfg->name, g_block_idx.x,
                  g_block_idx.y, g_block_idx.z, g_thread_idx.x, g_thread_idx.y, g_thread_idx.z);
    return buf;
}

void set_error(cudaError_t code, const std::string& message) {
    DeviceState& d = device();
    d.last_error = code;
    d.message_error = code;
    d.last_message = message;
}

void set_coordinates(const Run& r, int t) {
    const dim3 b = r.cfg->block;
    g_thread_idx = uint3{t % b.x, (t / b.x) % b.y, t / (b.x * b.y)};
}

#if EMU_ASM_SWITCH
}  // namespace
}  // namespace emu
// emu_switch(&from->sp, to->sp): System V x86-64; saves what a callee must preserve on the current
// stack, stores the stack pointer, loads the other and restores what it saved there.
extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .type emu_switch, @function
    .hidden emu_switch
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr 8(%rsp)
    fnstcw (%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr 8(%rsp)
    fldcw (%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
namespace emu {
namespace {

// A fresh fiber's stack as emu_switch leaves a suspended one: the control words, six zero
// registers, then `entry` as the address to return to; entry starts with rsp = 8 mod 16, as after
// a call, and never returns.
void make_context(Context* c, char* stack, size_t size, void (*entry)()) {
    c->stack = stack;
    c->stack_size = size;
    auto* sp = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(stack + size)) & ~uintptr_t{15});
    *--sp = 0;                                   // entry's own (never used) return address
    *--sp = reinterpret_cast<uint64_t>(entry);   // at a 16-byte boundary
    for (int i = 0; i < 6; ++i) *--sp = 0;       // rbp, rbx, r12..r15
    sp -= 2;
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    std::memcpy(sp, &fpucw, sizeof(fpucw));
    std::memcpy(sp + 1, &mxcsr, sizeof(mxcsr));
    c->sp = sp;
}
void raw_switch(Context* from, Context* to) { emu_switch(&from->sp, to->sp); }
#else
void make_context(Context* c, char* stack, size_t size, void (*entry)()) {
    c->stack = stack;
    c->stack_size = size;
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;  // entry switches back itself
    makecontext(&c->uc, entry, 0);
}
void raw_switch(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
#endif

// AddressSanitizer (the ASan build, load(asan=True)) must be told of every switch between the
// scheduler's stack and a fiber's, or it mistakes the other stack's frames for overflows.
#if defined(__SANITIZE_ADDRESS__)
const void* g_main_stack_bottom = nullptr;
size_t g_main_stack_size = 0;
void switch_to_fiber(Context* from, Context* to) {
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, to->stack, to->stack_size);
    raw_switch(from, to);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
}
void switch_to_scheduler(Context* from, Context* to, bool exiting) {
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(exiting ? nullptr : &fake, g_main_stack_bottom, g_main_stack_size);
    raw_switch(from, to);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
}
void fiber_started() { __sanitizer_finish_switch_fiber(nullptr, &g_main_stack_bottom, &g_main_stack_size); }
#else
void switch_to_fiber(Context* from, Context* to) { raw_switch(from, to); }
void switch_to_scheduler(Context* from, Context* to, bool) { raw_switch(from, to); }
void fiber_started() {}
#endif

void fiber_entry() {
    fiber_started();
    Run& r = *g_run;
    r.body(r.ctx);
    Fiber& f = r.fibers[r.current];
    f.state = State::kDone;
    switch_to_scheduler(&f.ctx, &r.scheduler, true);  // never resumed
}

void enter(Run& r, int t) {
    r.current = t;
    set_coordinates(r, t);
    switch_to_fiber(&r.scheduler, &r.fibers[t].ctx);
}

void wait_at(State s) {
    Run& r = *g_run;
    Fiber& f = r.fibers[r.current];
    f.state = s;
    switch_to_scheduler(&f.ctx, &r.scheduler, false);
}

const char* warp_op_name(WarpOp op) {
    switch (op) {
        case WarpOp::kSyncwarp: return "__syncwarp";
        case WarpOp::kShuffle: return "a shuffle";
        case WarpOp::kWmma: return "a WMMA operation";
    }
    return "?";
}

// Every live lane of warp [w0, w1) waits at a warp barrier: they must all be at the same kind, and
// WMMA needs the whole warp.
void check_warp_barrier(Run& r, int w0, int w1) {
    int first = -1;
    bool exited = w1 - w0 < kWarpSize;
    for (int t = w0; t < w1; ++t) {
        if (r.fibers[t].state == State::kDone) {
            exited = true;
            continue;
        }
        if (first < 0) first = t;
        if (r.fibers[t].warp_op != r.fibers[first].warp_op && r.error.empty()) {
            char buf[320];
            std::snprintf(buf, sizeof(buf), "%s: block (%u, %u, %u) warp %d: lanes at different warp barriers (lane %d "
                          "at %s, lane %d at %s): divergent warp-collective calls",
                          r.cfg->name, g_block_idx.x, g_block_idx.y, g_block_idx.z, w0 / kWarpSize, first % kWarpSize,
                          warp_op_name(r.fibers[first].warp_op), t % kWarpSize, warp_op_name(r.fibers[t].warp_op));
            r.error = buf;
        }
    }
    if (first >= 0 && exited && r.fibers[first].warp_op == WarpOp::kWmma && r.error.empty()) {
        char buf[240];
        std::snprintf(buf, sizeof(buf), "%s: block (%u, %u, %u) warp %d: a WMMA operation without all 32 lanes "
                      "(some have exited or do not exist)", r.cfg->name, g_block_idx.x, g_block_idx.y, g_block_idx.z,
                      w0 / kWarpSize);
        r.error = buf;
    }
}

uint64_t next_random(uint64_t& s) {  // xorshift64*
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    return s * 2685821657736338717ull;
}

// Runs one block's fibers to completion, releasing a warp barrier when every live lane of the
// warp waits at one and the block barrier when every live thread does. Returns false (and sets
// r.error) on a deadlock.
bool run_block(Run& r, uint64_t& rng) {
    const int n = r.threads;
    for (int t = 0; t < n; ++t) {
        Fiber& f = r.fibers[t];
        f.state = State::kReady;
        f.shuffles = f.collectives = 0;
        make_context(&f.ctx, stack_of(t), kStackBytes, fiber_entry);
    }
    for (auto& w : r.warps) {
        std::memset(w.generation, 0, sizeof(w.generation));
        std::memset(w.scratch, 0, sizeof(w.scratch));
    }
    std::vector<int> order(n);
    for (int t = 0; t < n; ++t) order[t] = t;
    for (;;) {
        if (rng != 0)  // another interleaving each round: results must not depend on it
            for (int i = n - 1; i > 0; --i) std::swap(order[i], order[next_random(rng) % (i + 1)]);
        for (int t : order)
            if (r.fibers[t].state == State::kReady) enter(r, t);
        int done = 0, at_block = 0, at_warp = 0;
        for (const Fiber& f : r.fibers) {
            done += f.state == State::kDone;
            at_block += f.state == State::kAtBlockBarrier;
            at_warp += f.state == State::kAtWarpBarrier;
        }
        if (done == n) return true;
        bool released = false;
        for (int w0 = 0; w0 < n; w0 += kWarpSize) {
            const int w1 = std::min(n, w0 + kWarpSize);
            bool all = true, any = false;
            for (int t = w0; t < w1; ++t) {
                const State s = r.fibers[t].state;
                if (s == State::kDone) continue;
                any = true;
                all = all && s == State::kAtWarpBarrier;
            }
            if (any && all) {
                check_warp_barrier(r, w0, w1);
                for (int t = w0; t < w1; ++t)
                    if (r.fibers[t].state == State::kAtWarpBarrier) r.fibers[t].state = State::kReady;
                released = true;
            }
        }
        if (at_block + done == n) {
            for (Fiber& f : r.fibers)
                if (f.state == State::kAtBlockBarrier) f.state = State::kReady;
            released = true;
        }
        if (!released) {
            char buf[320];
            std::snprintf(buf, sizeof(buf),
                          "%s: block (%u, %u, %u): barrier deadlock: %d thread(s) at __syncthreads, %d at a warp "
                          "barrier (__syncwarp, a shuffle or WMMA) in a warp whose other lanes are at __syncthreads, "
                          "%d exited (divergent barriers)",
                          r.cfg->name, g_block_idx.x, g_block_idx.y, g_block_idx.z, at_block, at_warp, done);
            if (r.error.empty()) r.error = buf;
            return false;
        }
    }
}

bool valid_config(const LaunchConfig& c, std::string* why, cudaError_t* code) {
    *code = cudaErrorInvalidConfiguration;
    const uint64_t threads = static_cast<uint64_t>(c.block.x) * c.block.y * c.block.z;
    char buf[512];
    if (c.grid.x < 1 || c.grid.x > 0x7fffffffu || c.grid.y < 1 || c.grid.y > 65535 || c.grid.z < 1 || c.grid.z > 65535) {
        std::snprintf(buf, sizeof(buf), "%s: invalid grid (%u, %u, %u): x must be in [1, 2^31 - 1], y and z in [1, 65535]",
                      c.name, c.grid.x, c.grid.y, c.grid.z);
    } else if (threads < 1 || threads > 1024 || c.block.z > 64) {
        std::snprintf(buf, sizeof(buf), "%s: invalid block (%u, %u, %u): 1 to 1024 threads, z <= 64", c.name, c.block.x,
                      c.block.y, c.block.z);
    } else if (const KernelResources* k = resources_of(c.func); k != nullptr && threads > static_cast<uint64_t>(k->max_threads)) {
        *code = cudaErrorLaunchOutOfResources;
        std::snprintf(buf, sizeof(buf),
                      "%s: too many resources requested for launch: %llu threads per block, at most %d for this "
                      "kernel (%d registers per thread on sm_90%s)",
                      c.name, static_cast<unsigned long long>(threads), k->max_threads, k->registers,
                      k->launch_bound > 0 ? (", __launch_bounds__(" + std::to_string(k->launch_bound) + ")").c_str() : "");
    } else {
        // Without cudaFuncSetAttribute static and dynamic shared memory share the 48 KB default;
        // with it the attribute bounds the dynamic part (and was checked against the opt-in limit
        // minus the static part when it was set).
        const auto it = device().max_dynamic_shared.find(c.func);
        const size_t fixed = k != nullptr ? static_cast<size_t>(k->static_shared) : 0;
        const size_t limit = it != device().max_dynamic_shared.end() ? it->second : kDefaultDynamicShared - fixed;
        if (c.smem <= limit) return true;
        *code = cudaErrorInvalidValue;
        std::snprintf(buf, sizeof(buf),
                      "%s: %zu bytes of dynamic shared memory requested, %zu allowed (%zu bytes of static __shared__; "
                      "cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize) raises the 48 KB default)",
                      c.name, c.smem, limit, fixed);
    }
    *why = buf;
    return false;
}

}  // namespace

void run(const LaunchConfig& cfg, void (*body)(void*), void* ctx) {
    DeviceState& d = device();
    d.message_error = cudaSuccess;  // a message describes the launch that failed, not an older one
    // the launch log's one format: plugins/kernel_resources.py (parse_launch_log) reads it
    char line[400];
    std::snprintf(line, sizeof(line), "%s grid=(%u,%u,%u) block=(%u,%u,%u) smem=%zu", cfg.name, cfg.grid.x, cfg.grid.y,
                  cfg.grid.z, cfg.block.x, cfg.block.y, cfg.block.z, cfg.smem);
    d.log += line;
    if (const KernelResources* k = resources_of(cfg.func)) {  // the instantiation, for plugins/kernel_resources.py
        std::snprintf(line, sizeof(line), " kernel=%s registers=%d static_shared=%d", k->name, k->registers,
                      k->static_shared);
        d.log += line;
    }
    d.log += '\n';
    if (g_run != nullptr) {
        set_error(cudaErrorLaunchFailure, std::string(cfg.name) + ": launched from inside a kernel (not emulated)");
        return;
    }
    std::string why;
    cudaError_t code;
    if (!valid_config(cfg, &why, &code)) {
        set_error(code, why);
        return;
    }
    Run r;
    r.cfg = &cfg;
    r.body = body;
    r.ctx = ctx;
    r.threads = static_cast<int>(cfg.block.x * cfg.block.y * cfg.block.z);
    r.fibers.resize(r.threads);
    r.warps.resize((r.threads + kWarpSize - 1) / kWarpSize);
    g_block_dim = cfg.block;
    g_grid_dim = cfg.grid;
    uint64_t rng = d.schedule_seed;
    g_run = &r;
    for (unsigned z = 0; z < cfg.grid.z && r.error.empty(); ++z)
        for (unsigned y = 0; y < cfg.grid.y && r.error.empty(); ++y)
            for (unsigned x = 0; x < cfg.grid.x && r.error.empty(); ++x) {
                g_block_idx = uint3{x, y, z};
                void* shared = nullptr;
                // exactly the launch's size (an allocator's bounds checks see an overrun), poisoned
                if (posix_memalign(&shared, 256, cfg.smem > 0 ? cfg.smem : 1) != 0) {
                    r.error = std::string(cfg.name) + ": cannot allocate the block's shared memory";
                    break;
                }
                poison(shared, cfg.smem);
                r.shared = shared;
                r.fresh_statics.clear();
                run_block(r, rng);
                r.shared = nullptr;
                std::free(shared);
            }
    g_run = nullptr;
    if (!r.error.empty()) set_error(cudaErrorLaunchFailure, r.error);
}

void* dynamic_shared() {
    if (g_run == nullptr) {
        fail("extern __shared__", "used outside a kernel");
        return nullptr;
    }
    return g_run->shared;
}

void fresh_shared(void* variable, size_t bytes) {
    if (g_run == nullptr) return fail("__shared__", "declared outside a kernel");
    if (g_run->fresh_statics.insert(variable).second) poison(variable, bytes);
}

void* warp_scratch() {
    if (g_run == nullptr) {
        fail("warp_scratch", "used outside a kernel");
        return nullptr;
    }
    return g_run->warps[g_run->current / kWarpSize].scratch;
}

uint64_t next_collective() { return g_run == nullptr ? 0 : ++g_run->fibers[g_run->current].collectives; }

void sync_block() {
    if (g_run == nullptr) return fail("__syncthreads", "called outside a kernel");
    wait_at(State::kAtBlockBarrier);
}

void warp_barrier(WarpOp op) {
    if (g_run == nullptr) return fail(warp_op_name(op), "called outside a kernel");
    g_run->fibers[g_run->current].warp_op = op;
    wait_at(State::kAtWarpBarrier);
}

void sync_warp(unsigned mask) {
    if (mask != kFullMask) fail("__syncwarp", "a partial lane mask is not emulated");
    warp_barrier(WarpOp::kSyncwarp);
}

uint64_t shuffle_xor(uint64_t bits, int lane_mask, int width, unsigned mask) {
    if (g_run == nullptr) {
        fail("__shfl_xor_sync", "called outside a kernel");
        return bits;
    }
    Run& r = *g_run;
    if (mask != kFullMask) fail("__shfl_xor_sync", "a partial lane mask is not emulated");
    if (width < 1 || width > kWarpSize || (width & (width - 1)) != 0)
        fail("__shfl_xor_sync", "width must be a power of two <= 32");
    const int t = r.current, warp = t / kWarpSize, lane = t % kWarpSize;
    WarpSlots& s = r.warps[warp];
    const uint64_t n = ++r.fibers[t].shuffles;
    const int set = static_cast<int>(n & 1);
    s.value[set][lane] = bits;
    s.generation[set][lane] = n;
    warp_barrier(WarpOp::kShuffle);
    int src = lane ^ lane_mask;
    if (width > 0 && (src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;  // outside its segment: own value
    uint64_t out = bits;
    if (src < 0 || src >= kWarpSize || s.generation[set][src] != n)
        fail("__shfl_xor_sync", "reads a lane that has exited, does not exist or skipped this shuffle (undefined on a GPU)");
    else
        out = s.value[set][src];
    return out;
}

void fail(const char* op, const char* what) {
    if (g_run == nullptr) {
        set_error(cudaErrorLaunchFailure, std::string("host code: ") + op + ": " + what);
        return;
    }
    if (g_run->error.empty()) g_run->error = where(*g_run) + ": " + op + ": " + what;
}

int shared_optin_bytes() { return device().shared_optin; }

void set_shared_optin_bytes(int bytes) { device().shared_optin = bytes; }

cudaError_t func_set_max_dynamic_shared(const void* func, int bytes) {
    const KernelResources* k = resources_of(func);
    const int fixed = k != nullptr ? k->static_shared : 0;  // the kernel's static __shared__ counts too
    if (bytes < 0 || bytes + fixed > device().shared_optin) {
        set_error(cudaErrorInvalidValue, "cudaFuncSetAttribute: " + std::to_string(bytes) +
                                             " bytes of dynamic shared memory" +
                                             (fixed ? " and " + std::to_string(fixed) + " of static __shared__" : "") +
                                             " exceed the device's opt-in limit of " +
                                             std::to_string(device().shared_optin));
        return cudaErrorInvalidValue;
    }
    device().max_dynamic_shared[func] = bytes;
    return cudaSuccess;
}

// CUDA's occupancy calculator (cuda_occupancy.h) on the emulated device: sm_90's limits (64 warps
// and 32 blocks an SM, 64 K registers in four sub-partitions, given to a warp 256 at a time,
// shared memory in 128-byte units plus the 1 KB the driver keeps a block) with the device's opt-in
// shared memory, and the kernel's registers and static shared memory where ptxas' figures are
// registered. As on a GPU, dynamic shared memory above the kernel's attribute (48 KB unless
// cudaFuncSetAttribute raised it) gives 0 blocks. plugins/kernel_resources.py's
// KernelResources.blocks_per_sm is the same rule; tests/plugins/test_emulation.py compares them.
cudaError_t occupancy_blocks(int* blocks, const void* func, int threads, size_t dynamic_shared) {
    constexpr int kMaxWarps = 64, kMaxBlocks = 32, kRegisters = 65536, kRegisterUnit = 256, kSubPartitions = 4;
    constexpr size_t kSharedUnit = 128, kReservedShared = 1024;
    if (blocks == nullptr || threads <= 0) return cudaErrorInvalidValue;
    *blocks = 0;
    const KernelResources* k = resources_of(func);
    const auto attr = device().max_dynamic_shared.find(func);
    // without the attribute static and dynamic shared memory share the 48 KB default, as at launch
    const size_t max_dynamic = attr != device().max_dynamic_shared.end() ? attr->second
                               : k != nullptr ? kDefaultDynamicShared - k->static_shared
                                              : kDefaultDynamicShared;
    const size_t shared = dynamic_shared + (k != nullptr ? k->static_shared : 0);
    if (dynamic_shared > max_dynamic || shared > static_cast<size_t>(device().shared_optin)) return cudaSuccess;
    if (k != nullptr && threads > k->max_threads) return cudaSuccess;
    const int warps = (threads + kWarpSize - 1) / kWarpSize;
    int limit = std::min(kMaxBlocks, kMaxWarps / warps);
    if (k != nullptr && k->registers > 0) {  // whole warps of each quarter of the register file
        const int per_warp = (k->registers * kWarpSize + kRegisterUnit - 1) / kRegisterUnit * kRegisterUnit;
        limit = std::min(limit, kRegisters / kSubPartitions / per_warp * kSubPartitions / warps);
    }
    const size_t per_block = (shared + kSharedUnit - 1) / kSharedUnit * kSharedUnit + kReservedShared;
    const size_t per_sm = static_cast<size_t>(device().shared_optin) + kReservedShared;
    limit = std::min<int>(limit, static_cast<int>(per_sm / per_block));
    *blocks = limit;
    return cudaSuccess;
}

static const KernelResources* resources_named(const std::string& name) {
    const KernelResources* found = nullptr;
    for (const auto& [func, k] : kernel_registry())
        if (name == k.name) {
            if (found != nullptr) return nullptr;  // ambiguous
            found = &k;
        }
    return found;
}

int occupancy_of(const std::string& kernel, int threads, int dynamic_shared) {
    const KernelResources* k = resources_named(kernel);
    if (k == nullptr) return -1;
    if (func_set_max_dynamic_shared(k->func, dynamic_shared) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    int blocks = 0;
    occupancy_blocks(&blocks, k->func, threads, static_cast<size_t>(dynamic_shared));
    return blocks;
}

void reset(int shared_optin, uint64_t schedule_seed) {
    DeviceState& d = device();
    d.shared_optin = shared_optin > 0 ? shared_optin : kDefaultSharedOptin;
    d.schedule_seed = schedule_seed;
    d.max_dynamic_shared.clear();
    d.last_error = d.message_error = cudaSuccess;
    d.last_message.clear();
    d.log.clear();
}

std::string launch_log() { return device().log; }

bool register_kernels(std::initializer_list<KernelResources> kernels) {
    for (const KernelResources& k : kernels) kernel_registry()[k.func] = k;
    return true;
}

std::string kernel_resources() {
    std::string out;
    char line[256];
    for (const auto& [func, k] : kernel_registry()) {
        std::snprintf(line, sizeof(line), "%s registers=%d static_shared=%d local=%d launch_bound=%d max_threads=%d\n",
                      k.name, k.registers, k.static_shared, k.local_bytes, k.launch_bound, k.max_threads);
        out += line;
    }
    return out;
}

void poison(void* memory, size_t bytes) {
    auto* b = static_cast<unsigned char*>(memory);
    for (size_t i = 0; i < bytes; ++i) b[i] = kPoison[i % 4];
}

}  // namespace emu

// ---- runtime API ---------------------------------------------------------------------------------
cudaError_t cudaGetLastError() {
    auto& d = emu::device();
    const cudaError_t e = d.last_error;
    d.last_error = cudaSuccess;
    if (e == cudaSuccess) d.message_error = cudaSuccess;  // so a launcher's own later error is not described by an old message
    return e;
}

cudaError_t cudaPeekAtLastError() { return emu::device().last_error; }

const char* cudaGetErrorString(cudaError_t err) {
    const auto& d = emu::device();
    if (err != cudaSuccess && err == d.message_error && !d.last_message.empty()) return d.last_message.c_str();
    switch (err) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
        case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
        case cudaErrorMisalignedAddress: return "misaligned address";
        case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
    if (device != 0) return cudaErrorInvalidValue;
    if (attr == cudaDevAttrMaxSharedMemoryPerBlockOptin) {
        *value = emu::device().shared_optin;
    } else if (attr == cudaDevAttrMaxSharedMemoryPerMultiprocessor) {
        // an SM holds the opt-in maximum plus the 1 KB the driver reserves a block: 228 KB on sm_90,
        // 164 KB on sm_80, 100 KB on sm_86/89
        *value = emu::device().shared_optin + 1024;
    } else {
        return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) {
    if (bytes == 0) return cudaSuccess;
    if (ptr == nullptr) return cudaErrorInvalidValue;
    std::memset(ptr, value, bytes);
    return cudaSuccess;
}

// ---- UndefinedBehaviorSanitizer handlers ------------------------------------------------------------
// The emulation build compiles with -fsanitize=alignment,bounds,... but links no sanitizer runtime:
// these are the handlers the instrumentation calls (the ABI of GCC's and Clang's libubsan). Inside a
// kernel each becomes a launch error naming the kernel.cu line; in host code (ATen's headers
// included) they are ignored, that is not what this checks.
namespace {
struct SourceLocation {
    const char* file;
    uint32_t line, column;
};
struct TypeDescriptor {
    uint16_t kind, info;
    char name[1];
};
struct TypeMismatchData {
    SourceLocation loc;
    const TypeDescriptor* type;
    unsigned char log_alignment, check_kind;
};
struct OutOfBoundsData {
    SourceLocation loc;
    const TypeDescriptor* array_type;
    const TypeDescriptor* index_type;
};
struct OverflowData {
    SourceLocation loc;
    const TypeDescriptor* type;
};
struct ShiftData {
    SourceLocation loc;
    const TypeDescriptor* lhs_type;
    const TypeDescriptor* rhs_type;
};

void report(const SourceLocation& loc, const std::string& what) {
    if (emu::g_run == nullptr) return;
    const std::string at = std::string(loc.file ? loc.file : "?") + ":" + std::to_string(loc.line);
    emu::fail(at.c_str(), what.c_str());
}
}  // namespace

extern "C" {
void __ubsan_handle_type_mismatch_v1(TypeMismatchData* d, uintptr_t ptr) {
    char buf[200];
    if (ptr == 0)
        std::snprintf(buf, sizeof(buf), "access through a null pointer of type %s", d->type->name);
    else
        std::snprintf(buf, sizeof(buf), "misaligned address 0x%" PRIxPTR " for type %s, which needs %u-byte alignment",
                      ptr, d->type->name, 1u << d->log_alignment);
    report(d->loc, buf);
}
void __ubsan_handle_type_mismatch_v1_abort(TypeMismatchData* d, uintptr_t ptr) { __ubsan_handle_type_mismatch_v1(d, ptr); }
void __ubsan_handle_out_of_bounds(OutOfBoundsData* d, uintptr_t) {
    report(d->loc, std::string("index out of bounds of ") + d->array_type->name);
}
void __ubsan_handle_out_of_bounds_abort(OutOfBoundsData* d, uintptr_t i) { __ubsan_handle_out_of_bounds(d, i); }
void __ubsan_handle_add_overflow(OverflowData* d, uintptr_t, uintptr_t) {
    report(d->loc, std::string("signed overflow in an addition of ") + d->type->name);
}
void __ubsan_handle_sub_overflow(OverflowData* d, uintptr_t, uintptr_t) {
    report(d->loc, std::string("signed overflow in a subtraction of ") + d->type->name);
}
void __ubsan_handle_mul_overflow(OverflowData* d, uintptr_t, uintptr_t) {
    report(d->loc, std::string("signed overflow in a multiplication of ") + d->type->name);
}
void __ubsan_handle_negate_overflow(OverflowData* d, uintptr_t) {
    report(d->loc, std::string("signed overflow in a negation of ") + d->type->name);
}
void __ubsan_handle_divrem_overflow(OverflowData* d, uintptr_t, uintptr_t) {
    report(d->loc, std::string("division by zero or overflow of ") + d->type->name);
}
void __ubsan_handle_shift_out_of_bounds(ShiftData* d, uintptr_t, uintptr_t) {
    report(d->loc, std::string("shift out of bounds of ") + d->lhs_type->name);
}
void __ubsan_handle_add_overflow_abort(OverflowData* d, uintptr_t a, uintptr_t b) { __ubsan_handle_add_overflow(d, a, b); }
void __ubsan_handle_sub_overflow_abort(OverflowData* d, uintptr_t a, uintptr_t b) { __ubsan_handle_sub_overflow(d, a, b); }
void __ubsan_handle_mul_overflow_abort(OverflowData* d, uintptr_t a, uintptr_t b) { __ubsan_handle_mul_overflow(d, a, b); }
void __ubsan_handle_negate_overflow_abort(OverflowData* d, uintptr_t a) { __ubsan_handle_negate_overflow(d, a); }
void __ubsan_handle_divrem_overflow_abort(OverflowData* d, uintptr_t a, uintptr_t b) { __ubsan_handle_divrem_overflow(d, a, b); }
void __ubsan_handle_shift_out_of_bounds_abort(ShiftData* d, uintptr_t a, uintptr_t b) {
    __ubsan_handle_shift_out_of_bounds(d, a, b);
}
}
