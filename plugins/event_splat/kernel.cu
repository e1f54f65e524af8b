// Fused F^3 grid encoding and splat: one thread per event computes the 2L features of its
// pixel (8 trilinear corners per level, event_splat/arith.h) and atomically adds them.
//
// Why a channels-last scratch grid: in the NCHW output an event's 2L sums land in 2L
// different cache lines (one per channel plane), so the splat costs 2L scattered scalar
// atomics per event; that was 0.163 ms for 1M events at HD (results/h200-2026-11-26), above a
// bare index_add_ of the same data. Accumulating into a [H, W, 2L] workspace puts a pixel's
// channels side by side (8L bytes: one 32-byte sector for the model's L = 4), so an event adds
// them with L/2 float4 (even L) or L float2 (odd L) vector atomics on sm_90+; a transpose then
// writes the NCHW output (one extra read and write of the grid, ~15 us of traffic at HD on an
// H200). Below sm_90 the same layout is used with scalar atomics. Any event count, incl. zero.
#include <cuda_fp16.h>

#include <cstdint>

#include "event_splat/arith.h"
#include "event_splat/launch.h"

namespace eventspd {
namespace cuda {
namespace {

struct SplatParams {
    F3Level levels[kMaxF3Levels];
    int32_t num_levels, width, height;
    float time_scale;
};

__device__ __forceinline__ float2 load_row(const float* table, int32_t row) {
    return __ldg(reinterpret_cast<const float2*>(table) + row);
}
__device__ __forceinline__ float2 load_row(const __half* table, int32_t row) {
    return __half22float2(__ldg(reinterpret_cast<const __half2*>(table) + row));
}

// Vector atomics exist for global memory on compute capability 9.x and later only.
__device__ __forceinline__ void atomic_add2(float* p, float2 v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2*>(p), v);
#else
    atomicAdd(p, v.x);
    atomicAdd(p + 1, v.y);
#endif
}
__device__ __forceinline__ void atomic_add4(float* p, float4 v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float4*>(p), v);
#else
    atomicAdd(p, v.x);
    atomicAdd(p + 1, v.y);
    atomicAdd(p + 2, v.z);
    atomicAdd(p + 3, v.w);
#endif
}

// The level's two features: the 8 corners' products summed in the CPU reference's order.
template <class TT>
__device__ __forceinline__ float2 level_features(const F3Event<float>& e, const F3Level& level, const TT* table) {
    int32_t rows[8];
    float w[8];
    f3_corners(e, level, rows, w);
    float p0[8], p1[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const float2 t = load_row(table, rows[k]);
        p0[k] = __fmul_rn(t.x, w[k]);
        p1[k] = __fmul_rn(t.y, w[k]);
    }
    return make_float2(f3_sum8(p0), f3_sum8(p1));
}

// PAIRS: two levels (4 channels) per float4 atomic; needs an even level count so that every
// float4 is 16-byte aligned in the [H, W, 2L] grid. Otherwise one float2 per level.
template <class TT, bool PAIRS>
__global__ void event_splat_nhwc_kernel(const float4* __restrict__ events, int64_t n, const TT* __restrict__ table,
                                        SplatParams prm, float* __restrict__ nhwc) {
    const int32_t channels = 2 * prm.num_levels;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float4 ev = events[i];
        F3Event<float> e;
        if (!f3_event<float>(ev.x, ev.y, ev.z, prm.width, prm.height, prm.time_scale, &e)) continue;
        float* gp = nhwc + (static_cast<int64_t>(e.py) * prm.width + e.px) * channels;
        if (PAIRS) {
            for (int32_t l = 0; l < prm.num_levels; l += 2) {
                const float2 a = level_features(e, prm.levels[l], table);
                const float2 b = level_features(e, prm.levels[l + 1], table);
                atomic_add4(gp + 2 * l, make_float4(a.x, a.y, b.x, b.y));
            }
        } else {
            for (int32_t l = 0; l < prm.num_levels; ++l) atomic_add2(gp + 2 * l, level_features(e, prm.levels[l], table));
        }
    }
}

// [H*W, C] -> [C, H*W]: one thread per pixel reads its C contiguous floats (as float4 when C is
// a multiple of 4: the model's 8) and writes each to its channel plane; across the warp the
// writes are coalesced and the reads cover one contiguous span.
template <bool VEC4>
__global__ void nhwc_to_nchw_kernel(const float* __restrict__ nhwc, int64_t pixels, int32_t channels,
                                    float* __restrict__ nchw) {
    for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < pixels;
         p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float* src = nhwc + p * channels;
        if (VEC4) {
            for (int32_t c = 0; c < channels; c += 4) {
                const float4 v = *reinterpret_cast<const float4*>(src + c);  // 16-byte aligned: C % 4 == 0
                nchw[c * pixels + p] = v.x;
                nchw[(c + 1) * pixels + p] = v.y;
                nchw[(c + 2) * pixels + p] = v.z;
                nchw[(c + 3) * pixels + p] = v.w;
            }
        } else {
            for (int32_t c = 0; c < channels; ++c) nchw[c * pixels + p] = src[c];
        }
    }
}

unsigned blocks_for(int64_t items, int threads) {
    const int64_t want = (items + threads - 1) / threads;
    return static_cast<unsigned>(want < 65535 * 16 ? want : 65535 * 16);
}

}  // namespace

size_t event_splat_workspace_size(int32_t num_levels, int32_t width, int32_t height) {
    if (num_levels < 1 || width < 1 || height < 1) return 0;
    return static_cast<size_t>(2 * num_levels) * width * height * sizeof(float);
}

cudaError_t event_splat(const EventSplatArgs& a, void* workspace, cudaStream_t stream) {
    if (a.num_levels < 0 || a.num_levels > kMaxF3Levels || a.width < 1 || a.height < 1 || a.num_events < 0)
        return cudaErrorInvalidValue;
    const int32_t channels = 2 * a.num_levels;
    const int64_t pixels = static_cast<int64_t>(a.width) * a.height;
    const size_t grid_bytes = static_cast<size_t>(channels) * pixels * sizeof(float);
    if (a.num_events == 0 || a.num_levels == 0) return cudaMemsetAsync(a.grid, 0, grid_bytes, stream);
    // float4 atomics need 16-byte alignment (cudaMalloc, PyTorch and TensorRT give 256).
    if (workspace == nullptr || reinterpret_cast<uintptr_t>(workspace) % 16 != 0) return cudaErrorInvalidValue;
    float* nhwc = static_cast<float*>(workspace);
    cudaError_t err = cudaMemsetAsync(nhwc, 0, grid_bytes, stream);
    if (err != cudaSuccess) return err;
    SplatParams prm;
    for (int l = 0; l < a.num_levels; ++l) prm.levels[l] = a.levels[l];
    prm.num_levels = a.num_levels;
    prm.width = a.width;
    prm.height = a.height;
    prm.time_scale = a.time_scale;
    const int threads = 256;
    const unsigned blocks = blocks_for(a.num_events, threads);
    const float4* ev = reinterpret_cast<const float4*>(a.events);  // rows of 4 floats, 16-byte aligned
    const bool pairs = a.num_levels % 2 == 0;
    if (a.table_type == DType::kFloat16) {
        const auto* table = static_cast<const __half*>(a.table);
        if (pairs)
            event_splat_nhwc_kernel<__half, true><<<blocks, threads, 0, stream>>>(ev, a.num_events, table, prm, nhwc);
        else
            event_splat_nhwc_kernel<__half, false><<<blocks, threads, 0, stream>>>(ev, a.num_events, table, prm, nhwc);
    } else {
        const auto* table = static_cast<const float*>(a.table);
        if (pairs)
            event_splat_nhwc_kernel<float, true><<<blocks, threads, 0, stream>>>(ev, a.num_events, table, prm, nhwc);
        else
            event_splat_nhwc_kernel<float, false><<<blocks, threads, 0, stream>>>(ev, a.num_events, table, prm, nhwc);
    }
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    const auto transpose = channels % 4 == 0 ? nhwc_to_nchw_kernel<true> : nhwc_to_nchw_kernel<false>;
    transpose<<<blocks_for(pixels, threads), threads, 0, stream>>>(nhwc, pixels, channels, a.grid);
    return cudaGetLastError();
}

}  // namespace cuda
}  // namespace eventspd
