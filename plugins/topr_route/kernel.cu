// Fused top-R routing: head sum (sequential, storage precision), / heads, top-R selection with
// the reference's ranking rule, index -> anchor pixel. One warp per query.
//
// Selection: every token gets a unique 64-bit key whose ascending order is the ranking order
// (topr_route/arith.h). The warp then extracts the R smallest keys one after another: round r
// takes the smallest key greater than the key chosen in round r-1 (a warp-wide min). That is
// exact for any T and any ties, needs no sort, and costs R * T / 32 comparisons per lane.
// Keys live in shared memory when they fit, otherwise they are recomputed from attn.
#include <cuda_fp16.h>

#include "topr_route/arith.h"
#include "topr_route/launch.h"

namespace eventspd {
namespace cuda {
namespace {

constexpr int kWarp = 32;
constexpr size_t kSmemBudget = 48 * 1024;

template <class T>
__device__ __forceinline__ uint64_t token_key(const T* aq, int32_t t, int32_t tokens, int32_t heads) {
    return topr_key(Arith<T>::widen(topr_score<T>(aq + t, tokens, heads)), t);
}

template <class T, bool kKeysInSmem>
__global__ void topr_route_kernel(const T* __restrict__ attn, int64_t queries, int32_t heads, int32_t tokens,
                                  int32_t top_r, int32_t grid_w, int32_t stride, int32_t* __restrict__ indices,
                                  float* __restrict__ anchors) {
    extern __shared__ unsigned long long smem_keys[];
    const int warp = threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    const int64_t q = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + warp;
    if (q >= queries) return;  // whole warp leaves; no block-wide barrier below
    const T* aq = attn + q * heads * static_cast<int64_t>(tokens);
    unsigned long long* keys = smem_keys + static_cast<size_t>(warp) * tokens;
    if (kKeysInSmem) {
        for (int32_t t = lane; t < tokens; t += kWarp) keys[t] = token_key(aq, t, tokens, heads);
        __syncwarp();
    }
    unsigned long long prev = 0ull;
    for (int32_t r = 0; r < top_r; ++r) {
        unsigned long long best = ~0ull;
        for (int32_t t = lane; t < tokens; t += kWarp) {
            const unsigned long long k = kKeysInSmem ? keys[t] : token_key(aq, t, tokens, heads);
            if ((r == 0 || k > prev) && k < best) best = k;
        }
#pragma unroll
        for (int d = kWarp / 2; d > 0; d /= 2) {
            const unsigned long long o = __shfl_xor_sync(0xffffffffu, best, d);
            best = o < best ? o : best;
        }
        prev = best;
        if (lane == (r & (kWarp - 1))) {
            const int32_t idx = topr_key_index(best);
            const int64_t o = q * top_r + r;
            indices[o] = idx;
            float u, v;
            topr_anchor(idx, grid_w, stride, &u, &v);
            anchors[2 * o] = u;
            anchors[2 * o + 1] = v;
        }
    }
}

template <class T>
cudaError_t launch(const ToprRouteArgs& a, cudaStream_t stream) {
    const T* attn = static_cast<const T*>(a.attn);
    const size_t key_bytes = static_cast<size_t>(a.tokens) * sizeof(unsigned long long);
    int warps = 4;
    while (warps > 1 && key_bytes * warps > kSmemBudget) warps /= 2;
    const bool smem = key_bytes * warps <= kSmemBudget;
    const int64_t blocks = (a.queries + warps - 1) / warps;
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(blocks)), block(warps * kWarp);
    if (smem) {
        topr_route_kernel<T, true><<<grid, block, key_bytes * warps, stream>>>(
            attn, a.queries, a.heads, a.tokens, a.top_r, a.grid_w, a.stride, a.indices, a.anchors);
    } else {
        topr_route_kernel<T, false><<<grid, block, 0, stream>>>(
            attn, a.queries, a.heads, a.tokens, a.top_r, a.grid_w, a.stride, a.indices, a.anchors);
    }
    return cudaGetLastError();
}

}  // namespace

cudaError_t topr_route(const ToprRouteArgs& a, cudaStream_t stream) {
    if (a.queries < 0 || a.heads < 1 || a.tokens < 0 || a.top_r < 0 || a.top_r > a.tokens || a.grid_w < 1)
        return cudaErrorInvalidValue;
    if (a.queries == 0 || a.top_r == 0) return cudaSuccess;
    return a.attn_type == DType::kFloat16 ? launch<__half>(a, stream) : launch<float>(a, stream);
}

}  // namespace cuda
}  // namespace eventspd
