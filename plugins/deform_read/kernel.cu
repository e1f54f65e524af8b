// Deformable multi-scale read (eq. 17-19): one warp per (b, k, r) query anchor, all heads.
//
// 1. nchw_to_nhwc: each value map is copied channel-last into the workspace, so that the
//    channels of one head at one pixel are contiguous and a warp's reads coalesce. Maps that
//    arrive channel-last (values_channels_last: the PyTorch op given channels_last tensors,
//    which the GPU benchmark's precompute emits once per window) skip this per-call copy.
// 2. deform_read_kernel: the warp's lanes first compute, for every (head, level, point)
//    sample, the softmax weight (over the head's L*M logits, fp32) and the four bilinear
//    corners (fp32 coordinates, deform_read/arith.h) into shared memory; then each lane owns
//    channels c = lane, lane + 32, ... and accumulates sum_{l,m,corner} a * w * value in fp32.
//    Where a head's channels allow (C / heads and C multiples of 8 for fp16, 4 for fp32, 16-byte
//    aligned maps and output: the model's C 192 / 6 heads), each lane owns 8 (fp16) or 4 (fp32)
//    consecutive channels and reads each corner as one 16-byte vector, a quarter or an eighth of
//    the load instructions; the sums run in the same order as the one-channel path's.
#include <cuda_fp16.h>

#include "deform_read/arith.h"
#include "deform_read/launch.h"

namespace eventspd {
namespace cuda {
namespace {

constexpr int kWarp = 32;
constexpr size_t kSmemBudget = 48 * 1024;
constexpr size_t kAlign = 256;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Bit-exact copy [B, C, HW] -> [B, HW, C] through a 32 x 33 shared tile. U is an unsigned
// integer of the element size (the copy moves bits, not values).
template <class U>
__global__ void nchw_to_nhwc(const U* __restrict__ in, U* __restrict__ out, int32_t C, int32_t HW) {
    __shared__ U tile[32][33];
    const int64_t b = blockIdx.z;
    const int32_t hw0 = blockIdx.x * 32, c0 = blockIdx.y * 32;
    const U* inb = in + b * C * static_cast<int64_t>(HW);
    U* outb = out + b * C * static_cast<int64_t>(HW);
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int32_t c = c0 + i, hw = hw0 + threadIdx.x;
        if (c < C && hw < HW) tile[i][threadIdx.x] = inb[static_cast<int64_t>(c) * HW + hw];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int32_t hw = hw0 + i, c = c0 + threadIdx.x;
        if (c < C && hw < HW) outb[static_cast<int64_t>(hw) * C + c] = tile[threadIdx.x][i];
    }
}

struct Maps {
    const void* nhwc[kDeformLevels];
    int32_t height[kDeformLevels], width[kDeformLevels], stride[kDeformLevels];
};

// a[l] for a level l known only at run time. Indexing the kernel's Maps parameter with such an l
// makes nvcc copy the whole struct to local memory in every thread (a 64-byte stack frame and
// local loads per sample; tests/plugins/test_kernel_resources.py rejects any); a select over the
// unrolled levels keeps it in the parameter bank. The loops over levels are unrolled for the same
// reason.
template <class V>
__device__ __forceinline__ V at_level(const V (&a)[kDeformLevels], int32_t l) {
    V v = a[0];
#pragma unroll
    for (int32_t i = 1; i < kDeformLevels; ++i)
        if (l == i) v = a[i];
    return v;
}

// 16 bytes of T as one load: 4 fp32 or 8 fp16 channels.
template <class T>
struct Vec16;
template <>
struct Vec16<float> {
    static constexpr int kN = 4;
    using Raw = float4;
    __device__ static void widen(const Raw& r, float* f) { f[0] = r.x, f[1] = r.y, f[2] = r.z, f[3] = r.w; }
    __device__ static Raw narrow(const float* f) { return make_float4(f[0], f[1], f[2], f[3]); }
};
template <>
struct Vec16<__half> {
    static constexpr int kN = 8;
    using Raw = uint4;
    __device__ static void widen(const Raw& r, float* f) {
        const __half2* h = reinterpret_cast<const __half2*>(&r);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 t = __half22float2(h[i]);
            f[2 * i] = t.x;
            f[2 * i + 1] = t.y;
        }
    }
    __device__ static Raw narrow(const float* f) {
        Raw r;
        __half2* h = reinterpret_cast<__half2*>(&r);
#pragma unroll
        for (int i = 0; i < 4; ++i) h[i] = __halves2half2(__float2half_rn(f[2 * i]), __float2half_rn(f[2 * i + 1]));
        return r;
    }
};

template <class T, class P, bool kVector>
__global__ void deform_read_kernel(Maps maps, const float* __restrict__ anchors, const P* __restrict__ offsets,
                                   const P* __restrict__ logits, int64_t items, int32_t per_batch,
                                   int32_t channels, int32_t heads, int32_t points, T* __restrict__ out) {
    extern __shared__ unsigned char smem_raw[];
    constexpr int32_t L = kDeformLevels;
    const int32_t samples = heads * L * points;  // per warp: samples * 4 corners
    const int warp = threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    const int64_t p = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + warp;  // (b, k, r)
    if (p >= items) return;  // whole warp leaves; only __syncwarp below
    int32_t* s_index = reinterpret_cast<int32_t*>(smem_raw) + static_cast<size_t>(warp) * samples * 8;
    float* s_weight = reinterpret_cast<float*>(s_index + samples * 4);

    const int64_t b = p / per_batch;
    const float u = anchors[2 * p], v = anchors[2 * p + 1];
    const int32_t LM = L * points;
    for (int32_t s = lane; s < samples; s += kWarp) {  // s = (h * L + l) * M + m
        const int32_t h = s / LM, l = (s / points) % L;
        const P* lg = logits + (p * heads + h) * LM;
        const auto st = softmax_stats<float>(LM, [&](int32_t i) { return Arith<P>::widen(lg[i]); });
        const float a = softmax_weight(Arith<P>::widen(lg[s - h * LM]), st);
        const P* off = offsets + (p * heads * LM + s) * 2;
        const int32_t stride = at_level(maps.stride, l);
        const float x = level_coord(u, stride, Arith<P>::widen(off[0]));
        const float y = level_coord(v, stride, Arith<P>::widen(off[1]));
        const Corners<float> c = bilinear_corners(x, y, at_level(maps.height, l), at_level(maps.width, l));
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            s_index[s * 4 + k] = c.index[k];
            s_weight[s * 4 + k] = __fmul_rn(a, c.weight[k]);
        }
    }
    __syncwarp();

    const int32_t ch = channels / heads;
    T* o = out + p * channels;
    if (kVector) {
        using V = Vec16<T>;
        for (int32_t c0 = lane * V::kN; c0 < channels; c0 += kWarp * V::kN) {
            const int32_t h = c0 / ch;  // all kN channels are in this head (ch % kN == 0)
            float acc[V::kN] = {};
#pragma unroll
            for (int32_t l = 0; l < L; ++l) {
                const T* vl = static_cast<const T*>(maps.nhwc[l]) +
                              b * static_cast<int64_t>(maps.height[l]) * maps.width[l] * channels + c0;
                const int32_t s0 = ((h * L + l) * points) * 4;
                for (int32_t j = 0; j < points * 4; ++j) {
                    const int32_t idx = s_index[s0 + j];
                    if (idx < 0) continue;
                    float f[V::kN];
                    V::widen(__ldg(reinterpret_cast<const typename V::Raw*>(vl + static_cast<int64_t>(idx) * channels)), f);
                    const float w = s_weight[s0 + j];
#pragma unroll
                    for (int i = 0; i < V::kN; ++i) acc[i] += w * f[i];
                }
            }
            *reinterpret_cast<typename V::Raw*>(o + c0) = V::narrow(acc);
        }
    } else {
        for (int32_t c = lane; c < channels; c += kWarp) {
            const int32_t h = c / ch;
            float acc = 0.0f;
#pragma unroll
            for (int32_t l = 0; l < L; ++l) {
                const T* vl = static_cast<const T*>(maps.nhwc[l]) +
                              b * static_cast<int64_t>(maps.height[l]) * maps.width[l] * channels + c;
                const int32_t s0 = ((h * L + l) * points) * 4;
                for (int32_t j = 0; j < points * 4; ++j) {
                    const int32_t idx = s_index[s0 + j];
                    if (idx >= 0) acc += s_weight[s0 + j] * Arith<T>::widen(vl[static_cast<int64_t>(idx) * channels]);
                }
            }
            o[c] = Arith<T>::narrow(acc);
        }
    }
}

size_t map_bytes(const DeformReadArgs& a, int l) {
    return static_cast<size_t>(a.batch) * a.channels * a.height[l] * a.width[l] * dtype_size(a.value_type);
}

template <class T, class P>
cudaError_t launch_read(const DeformReadArgs& a, const Maps& maps, cudaStream_t stream) {
    const int64_t items = static_cast<int64_t>(a.batch) * a.queries * a.top_r;
    const size_t per_warp = static_cast<size_t>(a.heads) * kDeformLevels * a.points * 4 * (sizeof(int32_t) + sizeof(float));
    int warps = 4;
    while (warps > 1 && per_warp * warps > kSmemBudget) warps /= 2;
    if (per_warp * warps > kSmemBudget) return cudaErrorInvalidValue;  // > 1536 samples per query anchor
    const int64_t blocks = (items + warps - 1) / warps;
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
    constexpr int kN = Vec16<T>::kN;
    bool aligned = reinterpret_cast<uintptr_t>(a.out) % 16 == 0;
    for (int l = 0; l < kDeformLevels; ++l) aligned = aligned && reinterpret_cast<uintptr_t>(maps.nhwc[l]) % 16 == 0;
    const bool vector = aligned && a.channels % kN == 0 && (a.channels / a.heads) % kN == 0;
    const auto kernel = vector ? deform_read_kernel<T, P, true> : deform_read_kernel<T, P, false>;
    kernel<<<static_cast<unsigned>(blocks), warps * kWarp, per_warp * warps, stream>>>(
        maps, a.anchors, static_cast<const P*>(a.offsets), static_cast<const P*>(a.logits), items,
        a.queries * a.top_r, a.channels, a.heads, a.points, static_cast<T*>(a.out));
    return cudaGetLastError();
}

}  // namespace

size_t deform_read_workspace_size(const DeformReadArgs& a) {
    if (a.values_channels_last) return 0;
    size_t total = 0;
    for (int l = 0; l < kDeformLevels; ++l) total += align_up(map_bytes(a, l));
    return total;
}

cudaError_t deform_read(const DeformReadArgs& a, void* workspace, cudaStream_t stream) {
    if (a.batch < 0 || a.queries < 0 || a.top_r < 0 || a.heads < 1 || a.points < 1 || a.channels % a.heads != 0)
        return cudaErrorInvalidValue;
    if (static_cast<int64_t>(a.batch) * a.queries * a.top_r == 0 || a.channels == 0) return cudaSuccess;
    if (a.batch > 65535) return cudaErrorInvalidValue;
    Maps maps;
    unsigned char* ws = static_cast<unsigned char*>(workspace);
    for (int l = 0; l < kDeformLevels; ++l) {
        maps.nhwc[l] = a.values_channels_last ? a.values[l] : ws;
        maps.height[l] = a.height[l];
        maps.width[l] = a.width[l];
        maps.stride[l] = a.stride[l];
        if (a.values_channels_last) continue;
        const int32_t HW = a.height[l] * a.width[l];
        if (HW > 0) {
            const dim3 grid((HW + 31) / 32, (a.channels + 31) / 32, a.batch), block(32, 8);
            if (a.value_type == DType::kFloat16) {
                nchw_to_nhwc<uint16_t><<<grid, block, 0, stream>>>(static_cast<const uint16_t*>(a.values[l]),
                                                                    reinterpret_cast<uint16_t*>(ws), a.channels, HW);
            } else {
                nchw_to_nhwc<uint32_t><<<grid, block, 0, stream>>>(static_cast<const uint32_t*>(a.values[l]),
                                                                    reinterpret_cast<uint32_t*>(ws), a.channels, HW);
            }
        }
        ws += align_up(map_bytes(a, l));
    }
    const bool vh = a.value_type == DType::kFloat16, ph = a.param_type == DType::kFloat16;
    if (vh && ph) return launch_read<__half, __half>(a, maps, stream);
    if (vh) return launch_read<__half, float>(a, maps, stream);
    if (ph) return launch_read<float, __half>(a, maps, stream);
    return launch_read<float, float>(a, maps, stream);
}

}  // namespace cuda
}  // namespace eventspd
