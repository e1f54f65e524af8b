// Fused ConvNeXt-V2 block (convnext_block/arith.h) on NHWC fp32/fp16 maps, in two kernels:
//
// pass 1: one warp per pixel (grid-stride over the pixels of one batch item, blockIdx.y): the
//   k x k depthwise taps (lanes over channels, so each tap is one coalesced row read), the
//   LayerNorm (warp reductions), W1 (transposed: lanes over outputs, no bank conflicts; in
//   shared memory when C * E <= kBlockSharedWeights and it fits the device, else through the
//   read-only cache; the taps too where they do not fit, L2's on sm_75), GELU; writes h [E] in
//   the data type and adds h^2 into per-lane sums, which the block adds into sumsq[b, :] once
//   (shared, then global atomics).
// pass 2: one warp per pixel: GRN's factors nx from sumsq (each block recomputes the E values and
//   their mean), g = gamma * h * nx + beta + h, then W2 (transposed, shared) + b2 + the residual.
// All arithmetic in fp32; data rounds once on store.
//
// fp16 data with C and E multiples of 16 takes the tensor-core kernels instead (W1/W2 in shared
// memory where they fit with the tiles: F^3's and L1's blocks; else read from global memory:
// L2's on sm_80/sm_90): each warp owns a tile of 16 pixels; the
// taps and LayerNorm fill a 16 x C fp16 tile, W1 (fp16) multiplies it with WMMA
// 16x16x16 fp16 -> fp32, each 16 x 16 result goes through GELU and into h and the sums; pass 2
// builds the 16 x E fp16 tile of g and multiplies it with W2 the same way. The GEMM inputs are
// rounded to fp16 (yn and g), as autocast's fp16 GEMMs round them; accumulation is fp32.
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "convnext_block/arith.h"
#include "convnext_block/launch.h"

namespace eventspd {
namespace cuda {
namespace {

// The kernels' arguments, filled by convnext_block_from_torch_layout (launch.h): x, out
// [B, H, W, C] (NHWC, fp32 or fp16, same type); the weights fp32: dw [k*k, C] (tap-major,
// transposed from torch's [C, 1, k, k]), dw_bias/ln_weight/ln_bias/b2 [C], w1t [C, E] (W1
// transposed), b1/gamma/beta [E], w2t [E, C] (W2 transposed). Scratch: hidden [B, H, W, E] of the
// data type, sumsq [B, E] fp32 (zeroed by the launcher).
struct ConvNeXtBlockArgs {
    const void* x;
    void* out;
    DType type;
    int32_t batch, height, width, channels, hidden_channels, kernel;
    float eps;
    const float *dw, *dw_bias, *ln_weight, *ln_bias, *w1t, *b1, *gamma, *beta, *w2t, *b2;
    void* hidden;
    float* sumsq;
    // fp16 data only, optional: W1 [C, E] and W2 [E, C] transposed as above, in fp16, for the
    // tensor-core path (taken when both are given, 32-byte aligned, and C, E are multiples of 16
    // whose tiles fit the device's shared memory).
    const void* w1t_half = nullptr;
    const void* w2t_half = nullptr;
};

constexpr int kWarps = 8;  // warps (pixels in flight) per block
constexpr int kMaxHiddenPerLane = kBlockMaxHidden / 32;

__device__ __forceinline__ float load(const float* p) { return __ldg(p); }
__device__ __forceinline__ float load(const __half* p) { return __half2float(__ldg(p)); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

// v rounded to T, back in fp32: fp16 data rounds the GEMM inputs as the tensor-core path does
template <class T>
__device__ __forceinline__ float round_as(float v) { return v; }
template <>
__device__ __forceinline__ float round_as<__half>(float v) { return __half2float(__float2half_rn(v)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

struct Shape {
    int32_t H, W, C, E, k;
    float eps;
};

// One pixel's k x k depthwise taps and LayerNorm, lanes over channels (each tap is one coalesced
// row read of the NHWC map xb), shared by the scalar and the tensor-core pass 1: writes the
// normalised value, rounded to T (the GEMM's input), to dst[c]. The whole warp calls it.
template <class T, class D>
__device__ __forceinline__ void taps_layernorm(const T* __restrict__ xb, const Shape& s, const float* s_dw,
                                               const float* __restrict__ dw_bias, const float* __restrict__ ln_w,
                                               const float* __restrict__ ln_b, int py, int px, int lane, D* dst) {
    constexpr int kPerLane = kBlockMaxChannels / 32;
    const int C = s.C, pad = s.k / 2;
    float part = 0.f, y[kPerLane];  // static indices: y stays in registers
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
        const int c = lane + 32 * j;
        if (c >= C) break;
        float v = dw_bias[c];
        for (int i = 0; i < s.k; ++i) {
            const int yy = py + i - pad;
            if (yy < 0 || yy >= s.H) continue;
            for (int jj = 0; jj < s.k; ++jj) {
                const int xx = px + jj - pad;
                if (xx < 0 || xx >= s.W) continue;
                v += s_dw[(i * s.k + jj) * C + c] * load(xb + (static_cast<int64_t>(yy) * s.W + xx) * C + c);
            }
        }
        y[j] = v;
        part += v;
    }
    const float mean = warp_sum(part) / C;
    float dev = 0.f;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
        if (lane + 32 * j < C) dev += (y[j] - mean) * (y[j] - mean);
    const float rstd = rsqrtf(warp_sum(dev) / C + s.eps);
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
        const int c = lane + 32 * j;
        if (c < C) store(dst + c, round_as<T>((y[j] - mean) * rstd * ln_w[c] + ln_b[c]));
    }
}

// GRN's factors of batch item blockIdx.y into s_nx[E]: nx = gx / (mean_e gx + 1e-6), gx =
// sqrt(sumsq / HW). Block-wide: every thread calls it; s_nx is complete when it returns.
__device__ __forceinline__ void grn_factors_block(const float* __restrict__ sumsq_b, int E, int64_t hw, float* s_nx) {
    __shared__ float s_mean;
    for (int e = threadIdx.x; e < E; e += blockDim.x) s_nx[e] = sqrtf(sumsq_b[e] / static_cast<float>(hw));
    __syncthreads();
    if (threadIdx.x < 32) {
        float part = 0.f;
        for (int e = threadIdx.x; e < E; e += 32) part += s_nx[e];
        part = warp_sum(part);
        if (threadIdx.x == 0) s_mean = part / E + static_cast<float>(kGrnEps);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) s_nx[e] = s_nx[e] / s_mean;
    __syncthreads();
}

// kSharedTaps false: the taps are read from global memory (they do not fit shared memory: L2's
// 86.5 KB on sm_75's 64 KB). A template parameter, not a run-time flag: the flag cost the common
// path registers and spills (4-56 B of local memory per thread on sm_90/sm_80).
template <class T, bool kSharedW, bool kSharedTaps>
__global__ void __launch_bounds__(kWarps * 32) block_pass1(const T* __restrict__ x, Shape s, const float* __restrict__ dw,
                                                           const float* __restrict__ dw_bias, const float* __restrict__ ln_w,
                                                           const float* __restrict__ ln_b, const float* __restrict__ w1t,
                                                           const float* __restrict__ b1, T* __restrict__ hidden,
                                                           float* __restrict__ sumsq) {
    extern __shared__ float smem[];
    const int C = s.C, E = s.E, kk = s.k * s.k;
    float* s_w1t = smem;                                  // [C, E] (kSharedW)
    float* s_dw = s_w1t + (kSharedW ? C * E : 0);        // [k*k, C] (kSharedTaps)
    float* s_sq = s_dw + (kSharedTaps ? kk * C : 0);      // [E]
    float* s_y = s_sq + E;                                // [kWarps, C]
    if (kSharedW)
        for (int i = threadIdx.x; i < C * E; i += blockDim.x) s_w1t[i] = w1t[i];
    const float* W1 = kSharedW ? s_w1t : w1t;
    if (kSharedTaps)
        for (int i = threadIdx.x; i < kk * C; i += blockDim.x) s_dw[i] = dw[i];
    const float* taps = kSharedTaps ? s_dw : dw;
    for (int i = threadIdx.x; i < E; i += blockDim.x) s_sq[i] = 0.f;
    __syncthreads();

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int b = blockIdx.y;
    const int64_t hw = static_cast<int64_t>(s.H) * s.W;
    const T* xb = x + b * hw * C;
    float* y = s_y + warp * C;
    float sq[kMaxHiddenPerLane];
#pragma unroll
    for (int j = 0; j < kMaxHiddenPerLane; ++j) sq[j] = 0.f;

    for (int64_t p = static_cast<int64_t>(blockIdx.x) * kWarps + warp; p < hw; p += static_cast<int64_t>(gridDim.x) * kWarps) {
        taps_layernorm<T>(xb, s, taps, dw_bias, ln_w, ln_b, static_cast<int>(p / s.W), static_cast<int>(p % s.W), lane, y);
        __syncwarp();
        T* hp = hidden + (b * hw + p) * E;
        // j runs to a compile-time bound so sq[] stays in registers (static indices)
#pragma unroll
        for (int j = 0; j < kMaxHiddenPerLane; ++j) {
            const int e = lane + 32 * j;
            if (e >= E) break;
            float acc = b1[e];
            for (int c = 0; c < C; ++c) acc += W1[c * E + e] * y[c];
            const float v = gelu_erf(acc);
            sq[j] += v * v;
            store(hp + e, v);
        }
        __syncwarp();  // y is rewritten by this warp's next pixel
    }
#pragma unroll
    for (int j = 0; j < kMaxHiddenPerLane; ++j)
        if (lane + 32 * j < E) atomicAdd(s_sq + lane + 32 * j, sq[j]);
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) atomicAdd(sumsq + b * E + e, s_sq[e]);
}

template <class T, bool kSharedW>
__global__ void __launch_bounds__(kWarps * 32) block_pass2(const T* __restrict__ x, Shape s, const T* __restrict__ hidden,
                                                           const float* __restrict__ sumsq, const float* __restrict__ gamma,
                                                           const float* __restrict__ beta, const float* __restrict__ w2t,
                                                           const float* __restrict__ b2, T* __restrict__ out) {
    extern __shared__ float smem[];
    const int C = s.C, E = s.E;
    float* s_w2t = smem;                            // [E, C] (kSharedW)
    float* s_nx = s_w2t + (kSharedW ? E * C : 0);  // [E]
    float* s_g = s_nx + E;                          // [kWarps, E]
    const int b = blockIdx.y;
    const int64_t hw = static_cast<int64_t>(s.H) * s.W;
    if (kSharedW)
        for (int i = threadIdx.x; i < E * C; i += blockDim.x) s_w2t[i] = w2t[i];
    const float* W2 = kSharedW ? s_w2t : w2t;
    grn_factors_block(sumsq + b * E, E, hw, s_nx);  // (its first barrier also publishes s_w2t)

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float* g = s_g + warp * E;
    for (int64_t p = static_cast<int64_t>(blockIdx.x) * kWarps + warp; p < hw; p += static_cast<int64_t>(gridDim.x) * kWarps) {
        const int64_t pix = b * hw + p;
        const T* hp = hidden + pix * E;
        for (int e = lane; e < E; e += 32) {
            const float h = load(hp + e);
            g[e] = round_as<T>(gamma[e] * (h * s_nx[e]) + beta[e] + h);
        }
        __syncwarp();
        for (int c = lane; c < C; c += 32) {
            float acc = b2[c];
            for (int e = 0; e < E; ++e) acc += W2[e * C + c] * g[e];
            store(out + pix * C + c, load(x + pix * C + c) + acc);
        }
        __syncwarp();
    }
}

// ---- tensor-core kernels (fp16 data) --------------------------------------------------------
namespace wmma = nvcuda::wmma;
constexpr int kTile = 16;  // pixels per warp tile = the WMMA M, N and K
// Warps per block of a tensor-core pass: 4 or 8 (tc_warps below picks one per pass and shape).
constexpr int kTcWarpsFew = 4, kTcWarpsMany = 8;

// Byte offsets in the dynamic shared memory of the tensor-core passes (each a multiple of 32, as
// WMMA needs) for blocks of `warps` warps; W1 / W2 take no room when they are read from global
// memory (shared_w false).
struct TcLayout1 {
    size_t w1, dw, sq, a, acc, total;
    __host__ __device__ TcLayout1(const Shape& s, bool shared_w, int warps)
        : w1(0), dw(w1 + (shared_w ? sizeof(__half) * s.C * s.E : 0)), sq(dw + sizeof(float) * s.k * s.k * s.C),
          a(sq + sizeof(float) * s.E), acc(a + sizeof(__half) * warps * kTile * s.C),
          total(acc + sizeof(float) * warps * kTile * kTile) {}
};
struct TcLayout2 {
    size_t w2, nx, g, acc, total;
    __host__ __device__ TcLayout2(const Shape& s, bool shared_w, int warps)
        : w2(0), nx(w2 + (shared_w ? sizeof(__half) * s.E * s.C : 0)), g(nx + sizeof(float) * s.E),
          acc(g + sizeof(__half) * warps * kTile * s.E), total(acc + sizeof(float) * warps * kTile * kTile) {}
};

// acc_tile[16, 16] = A[16, K] x B[K, 16 columns from nt * 16] on the tensor cores (fp16 in, fp32
// accumulate); A row-major with ld K (shared memory), B row-major [K, N] with ld N (shared or global).
__device__ __forceinline__ void tile_gemm(const __half* a, const __half* b, int K, int N, int nt, float* acc_tile) {
    wmma::fragment<wmma::accumulator, kTile, kTile, kTile, float> acc;
    wmma::fill_fragment(acc, 0.f);
    for (int kt = 0; kt < K / kTile; ++kt) {
        wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, __half, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, __half, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, a + kt * kTile, K);
        wmma::load_matrix_sync(fb, b + kt * kTile * N + nt * kTile, N);
        wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(acc_tile, acc, kTile, wmma::mem_row_major);
}

template <bool kSharedW, int kTcWarps>
__global__ void __launch_bounds__(kTcWarps * 32) block_pass1_tc(const __half* __restrict__ x, Shape s,
                                                                const float* __restrict__ dw,
                                                                const float* __restrict__ dw_bias,
                                                                const float* __restrict__ ln_w,
                                                                const float* __restrict__ ln_b,
                                                                const __half* __restrict__ w1t,
                                                                const float* __restrict__ b1, __half* __restrict__ hidden,
                                                                float* __restrict__ sumsq) {
    extern __shared__ __align__(128) unsigned char tc_smem[];
    const TcLayout1 L(s, kSharedW, kTcWarps);
    const int C = s.C, E = s.E, kk = s.k * s.k;
    __half* s_w1 = reinterpret_cast<__half*>(tc_smem + L.w1);  // [C, E] row-major (kSharedW)
    float* s_dw = reinterpret_cast<float*>(tc_smem + L.dw);     // [k*k, C]
    float* s_sq = reinterpret_cast<float*>(tc_smem + L.sq);     // [E]
    if (kSharedW)
        for (int i = threadIdx.x; i < C * E; i += blockDim.x) s_w1[i] = w1t[i];
    const __half* W1 = kSharedW ? s_w1 : w1t;  // WMMA loads from shared or global memory alike
    for (int i = threadIdx.x; i < kk * C; i += blockDim.x) s_dw[i] = dw[i];
    for (int i = threadIdx.x; i < E; i += blockDim.x) s_sq[i] = 0.f;
    __syncthreads();

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __half* a = reinterpret_cast<__half*>(tc_smem + L.a) + warp * kTile * C;      // [16, C]
    float* acc_tile = reinterpret_cast<float*>(tc_smem + L.acc) + warp * kTile * kTile;  // [16, 16]
    const int b = blockIdx.y;
    const int64_t hw = static_cast<int64_t>(s.H) * s.W, tiles = (hw + kTile - 1) / kTile;
    const __half* xb = x + b * hw * C;
    const int col = lane & 15, row0 = (lane >> 4) * 8;  // each lane's 8 rows of one column

    for (int64_t t = static_cast<int64_t>(blockIdx.x) * kTcWarps + warp; t < tiles;
         t += static_cast<int64_t>(gridDim.x) * kTcWarps) {
        const int64_t p0 = t * kTile;
        for (int r = 0; r < kTile; ++r) {  // the taps and LayerNorm of the tile's 16 pixels
            __half* ar = a + r * C;
            const int64_t p = p0 + r;
            if (p >= hw) {  // warp-uniform: a zero row past the map's end
                for (int c = lane; c < C; c += 32) ar[c] = __float2half_rn(0.f);
                continue;
            }
            taps_layernorm<__half>(xb, s, s_dw, dw_bias, ln_w, ln_b, static_cast<int>(p / s.W), static_cast<int>(p % s.W),
                                   lane, ar);
        }
        __syncwarp();
        for (int nt = 0; nt < E / kTile; ++nt) {
            tile_gemm(a, W1, C, E, nt, acc_tile);
            __syncwarp();
            const int e = nt * kTile + col;
            float part = 0.f;
            for (int r = row0; r < row0 + 8; ++r) {
                const int64_t p = p0 + r;
                if (p >= hw) break;
                const float v = gelu_erf(acc_tile[r * kTile + col] + b1[e]);
                part += v * v;
                hidden[(b * hw + p) * E + e] = __float2half_rn(v);
            }
            atomicAdd(s_sq + e, part);
            __syncwarp();  // acc_tile is rewritten by the next column block
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) atomicAdd(sumsq + b * E + e, s_sq[e]);
}

template <bool kSharedW, int kTcWarps>
__global__ void __launch_bounds__(kTcWarps * 32) block_pass2_tc(const __half* __restrict__ x, Shape s,
                                                                const __half* __restrict__ hidden,
                                                                const float* __restrict__ sumsq,
                                                                const float* __restrict__ gamma,
                                                                const float* __restrict__ beta,
                                                                const __half* __restrict__ w2t,
                                                                const float* __restrict__ b2, __half* __restrict__ out) {
    extern __shared__ __align__(128) unsigned char tc_smem[];
    const TcLayout2 L(s, kSharedW, kTcWarps);
    const int C = s.C, E = s.E;
    __half* s_w2 = reinterpret_cast<__half*>(tc_smem + L.w2);  // [E, C] row-major (kSharedW)
    float* s_nx = reinterpret_cast<float*>(tc_smem + L.nx);     // [E]
    const int b = blockIdx.y;
    const int64_t hw = static_cast<int64_t>(s.H) * s.W, tiles = (hw + kTile - 1) / kTile;
    if (kSharedW)
        for (int i = threadIdx.x; i < E * C; i += blockDim.x) s_w2[i] = w2t[i];
    const __half* W2 = kSharedW ? s_w2 : w2t;
    grn_factors_block(sumsq + b * E, E, hw, s_nx);  // (its first barrier also publishes s_w2)

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __half* g = reinterpret_cast<__half*>(tc_smem + L.g) + warp * kTile * E;            // [16, E]
    float* acc_tile = reinterpret_cast<float*>(tc_smem + L.acc) + warp * kTile * kTile;  // [16, 16]
    const int col = lane & 15, row0 = (lane >> 4) * 8;
    for (int64_t t = static_cast<int64_t>(blockIdx.x) * kTcWarps + warp; t < tiles;
         t += static_cast<int64_t>(gridDim.x) * kTcWarps) {
        const int64_t p0 = t * kTile;
        for (int r = 0; r < kTile; ++r) {
            const int64_t p = p0 + r;
            for (int e = lane; e < E; e += 32) {
                float v = 0.f;  // a zero row past the map's end
                if (p < hw) {
                    const float h = load(hidden + (b * hw + p) * E + e);
                    v = gamma[e] * (h * s_nx[e]) + beta[e] + h;
                }
                g[r * E + e] = __float2half_rn(v);
            }
        }
        __syncwarp();
        for (int nt = 0; nt < C / kTile; ++nt) {
            tile_gemm(g, W2, E, C, nt, acc_tile);
            __syncwarp();
            const int c = nt * kTile + col;
            for (int r = row0; r < row0 + 8; ++r) {
                const int64_t p = p0 + r;
                if (p >= hw) break;
                const int64_t i = (b * hw + p) * C + c;
                out[i] = __float2half_rn(load(x + i) + (acc_tile[r * kTile + col] + b2[c]));
            }
            __syncwarp();
        }
        __syncwarp();  // g is rewritten by the next tile
    }
}

// Dynamic shared memory one block may opt into on the current device, less the kernels' static
// shared memory (pass 2's s_mean) and a margin: 227 KB on sm_90, 163 KB on sm_80, 99 KB on
// sm_86/89. Every kernel choice below is checked against it.
size_t shared_limit() {
    int device = 0, optin = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess)
        return 48 * 1024;  // the limit every device has without opting in
    return static_cast<size_t>(optin) - 256;
}

size_t scalar_smem1(const Shape& s, bool shared_w, bool shared_taps = true) {
    return sizeof(float) *
           ((shared_w ? static_cast<size_t>(s.C) * s.E : 0) + (shared_taps ? s.k * s.k * s.C : 0) + s.E + kWarps * s.C);
}
size_t scalar_smem2(const Shape& s, bool shared_w) {
    return sizeof(float) * ((shared_w ? static_cast<size_t>(s.E) * s.C : 0) + s.E + kWarps * s.E);
}

// Which tensor-core kernels a call takes: 2 = W1/W2 in shared memory, 1 = W1/W2 read from global
// memory (L2's 128 x 512 on sm_80/sm_90), 0 = none (fp32 data, C or E not multiples of 16, no
// fp16 weights given, or the tiles do not fit the device).
int tc_variant(const ConvNeXtBlockArgs& a) {
    const Shape s{a.height, a.width, a.channels, a.hidden_channels, a.kernel, a.eps};
    if (a.type != DType::kFloat16 || a.w1t_half == nullptr || a.w2t_half == nullptr || s.C % kTile != 0 ||
        s.E % kTile != 0)
        return 0;
    // WMMA reads W1/W2 in 32-byte pieces (straight from them when they stay in global memory)
    if (reinterpret_cast<uintptr_t>(a.w1t_half) % 32 != 0 || reinterpret_cast<uintptr_t>(a.w2t_half) % 32 != 0) return 0;
    const size_t limit = shared_limit();
    for (const bool shared_w : {true, false})  // the smaller blocks must fit
        if (TcLayout1(s, shared_w, kTcWarpsFew).total <= limit && TcLayout2(s, shared_w, kTcWarpsFew).total <= limit)
            return shared_w ? 2 : 1;
    return 0;
}

// Warps of `kernel` resident per SM in blocks of `warps` warps and `smem` bytes of dynamic shared
// memory: CUDA's occupancy calculator, so registers, shared memory and the device's own block and
// warp limits all count (48 warps and 16 blocks an SM on sm_86, 32 and 16 on sm_75, 64 and 32 on
// sm_80/sm_90). The attribute is raised first: above 48 KB the calculator counts 0 blocks
// otherwise. 0 where the query fails (its error is taken off, not left for the launch's check).
template <class Kernel>
int resident_warps(Kernel* kernel, int warps, size_t smem) {
    int blocks = 0;
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, warps * 32, smem) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return blocks * warps;
}

// Warps per block of one tensor-core pass (`few` and `many`: its instances of 4 and 8 warps). Each
// block loads the weights it keeps in shared memory (W1 or W2 where shared_w, the depthwise taps)
// once for all its warps, so where shared memory is what limits residency, blocks of 8 warps keep
// more warps resident per SM than blocks of 4: theoretically 32 instead of 20 of 64 for F^3's
// pass 1 on sm_90, 24 instead of 12 for L1's (results/cpu-kernel-occupancy-2026-12-03;
// scripts/kernel_occupancy.py). Takes 8 only when it keeps more warps resident (4 on a tie: more,
// smaller blocks spread better over the SMs).
// EVENTSPD_CONVNEXT_TC_WARPS=4 or 8 forces one where it fits (plugins/bench_gpu.py's A/B; anything
// else is ignored). Whether more resident warps make the pass faster is for a GPU to measure.
template <class Layout, class Kernel>
int tc_warps(const Shape& s, bool shared_w, Kernel* few_kernel, Kernel* many_kernel) {
    const size_t few = Layout(s, shared_w, kTcWarpsFew).total, many = Layout(s, shared_w, kTcWarpsMany).total;
    const bool many_fits = many <= shared_limit();
    if (const char* forced = std::getenv("EVENTSPD_CONVNEXT_TC_WARPS")) {
        if (!std::strcmp(forced, "4")) return kTcWarpsFew;
        if (!std::strcmp(forced, "8") && many_fits) return kTcWarpsMany;
    }
    return many_fits && resident_warps(many_kernel, kTcWarpsMany, many) > resident_warps(few_kernel, kTcWarpsFew, few)
               ? kTcWarpsMany
               : kTcWarpsFew;
}

// The two passes with blocks of kWarps1 and kWarps2 warps.
template <bool kSharedW, int kWarps1, int kWarps2>
cudaError_t launch_tc(const ConvNeXtBlockArgs& a, const Shape& s, cudaStream_t stream) {
    const int64_t hw = static_cast<int64_t>(a.height) * a.width, tiles = (hw + kTile - 1) / kTile;
    const size_t smem1 = TcLayout1(s, kSharedW, kWarps1).total, smem2 = TcLayout2(s, kSharedW, kWarps2).total;
    cudaError_t err = cudaFuncSetAttribute(block_pass1_tc<kSharedW, kWarps1>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem1));
    if (err != cudaSuccess) return err;
    err = cudaFuncSetAttribute(block_pass2_tc<kSharedW, kWarps2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem2));
    if (err != cudaSuccess) return err;
    if (hw == 0 || a.batch == 0) return cudaSuccess;  // nothing to write (and sumsq may be null)
    err = cudaMemsetAsync(a.sumsq, 0, sizeof(float) * a.batch * s.E, stream);
    if (err != cudaSuccess) return err;
    const dim3 grid1(static_cast<unsigned>(std::min<int64_t>((tiles + kWarps1 - 1) / kWarps1, 1024)), a.batch);
    const dim3 grid2(static_cast<unsigned>(std::min<int64_t>((tiles + kWarps2 - 1) / kWarps2, 1024)), a.batch);
    const __half* x = static_cast<const __half*>(a.x);
    __half* hidden = static_cast<__half*>(a.hidden);
    block_pass1_tc<kSharedW, kWarps1><<<grid1, kWarps1 * 32, smem1, stream>>>(
        x, s, a.dw, a.dw_bias, a.ln_weight, a.ln_bias, static_cast<const __half*>(a.w1t_half), a.b1, hidden, a.sumsq);
    err = cudaGetLastError();  // pass 2 must not run on an unwritten hidden map
    if (err != cudaSuccess) return err;
    block_pass2_tc<kSharedW, kWarps2><<<grid2, kWarps2 * 32, smem2, stream>>>(
        x, s, hidden, a.sumsq, a.gamma, a.beta, static_cast<const __half*>(a.w2t_half), a.b2,
        static_cast<__half*>(a.out));
    return cudaGetLastError();
}

template <bool kSharedW>
cudaError_t launch_tc(const ConvNeXtBlockArgs& a, cudaStream_t stream) {
    const Shape s{a.height, a.width, a.channels, a.hidden_channels, a.kernel, a.eps};
    constexpr int F = kTcWarpsFew, M = kTcWarpsMany;
    const bool many1 = tc_warps<TcLayout1>(s, kSharedW, block_pass1_tc<kSharedW, F>, block_pass1_tc<kSharedW, M>) == M;
    const bool many2 = tc_warps<TcLayout2>(s, kSharedW, block_pass2_tc<kSharedW, F>, block_pass2_tc<kSharedW, M>) == M;
    if (many1) return many2 ? launch_tc<kSharedW, M, M>(a, s, stream) : launch_tc<kSharedW, M, F>(a, s, stream);
    return many2 ? launch_tc<kSharedW, F, M>(a, s, stream) : launch_tc<kSharedW, F, F>(a, s, stream);
}

// ---- launchers -------------------------------------------------------------------------------
template <class T, bool kSharedW, bool kSharedTaps>
cudaError_t launch(const ConvNeXtBlockArgs& a, cudaStream_t stream) {
    const Shape s{a.height, a.width, a.channels, a.hidden_channels, a.kernel, a.eps};
    const int64_t hw = static_cast<int64_t>(a.height) * a.width;
    const size_t smem1 = scalar_smem1(s, kSharedW, kSharedTaps), smem2 = scalar_smem2(s, kSharedW);
    if (smem1 > shared_limit() || smem2 > shared_limit()) return cudaErrorInvalidValue;
    cudaError_t err = cudaFuncSetAttribute(block_pass1<T, kSharedW, kSharedTaps>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem1));
    if (err != cudaSuccess) return err;
    err = cudaFuncSetAttribute(block_pass2<T, kSharedW>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem2));
    if (err != cudaSuccess) return err;
    if (hw == 0 || a.batch == 0) return cudaSuccess;  // nothing to write (and sumsq may be null)
    err = cudaMemsetAsync(a.sumsq, 0, sizeof(float) * a.batch * s.E, stream);
    if (err != cudaSuccess) return err;
    // Enough blocks to fill the GPU; each loads the weights into shared memory once.
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>((hw + kWarps - 1) / kWarps, 1024)), a.batch);
    const T* x = static_cast<const T*>(a.x);
    T* hidden = static_cast<T*>(a.hidden);
    block_pass1<T, kSharedW, kSharedTaps><<<grid, kWarps * 32, smem1, stream>>>(
        x, s, a.dw, a.dw_bias, a.ln_weight, a.ln_bias, a.w1t, a.b1, hidden, a.sumsq);
    err = cudaGetLastError();  // pass 2 must not run on an unwritten hidden map
    if (err != cudaSuccess) return err;
    block_pass2<T, kSharedW><<<grid, kWarps * 32, smem2, stream>>>(x, s, hidden, a.sumsq, a.gamma, a.beta, a.w2t, a.b2,
                                                                   static_cast<T*>(a.out));
    return cudaGetLastError();
}

template <class T>
cudaError_t launch(const ConvNeXtBlockArgs& a, cudaStream_t stream) {
    const Shape s{a.height, a.width, a.channels, a.hidden_channels, a.kernel, a.eps};
    const bool shared_w = s.C * s.E <= kBlockSharedWeights && scalar_smem1(s, true) <= shared_limit() &&
                          scalar_smem2(s, true) <= shared_limit();
    if (shared_w) return launch<T, true, true>(a, stream);
    // the depthwise taps in shared memory where they fit (every sm_80+ device: see kBlockMaxTaps),
    // else read from global memory (sm_75's 64 KB and L2's 86.5 KB of taps)
    return scalar_smem1(s, false, true) <= shared_limit() ? launch<T, false, true>(a, stream)
                                                          : launch<T, false, false>(a, stream);
}

cudaError_t convnext_block(const ConvNeXtBlockArgs& a, cudaStream_t stream) {
    if (a.batch < 0 || a.height < 0 || a.width < 0 || a.channels < 1 || a.channels > kBlockMaxChannels ||
        a.hidden_channels < 1 || a.hidden_channels > kBlockMaxHidden || a.kernel < 1 || a.kernel % 2 == 0 ||
        a.kernel > kBlockMaxKernel || a.kernel * a.kernel * a.channels > kBlockMaxTaps || a.batch > 65535)
        return cudaErrorInvalidValue;
    switch (tc_variant(a)) {
        case 2: return launch_tc<true>(a, stream);
        case 1: return launch_tc<false>(a, stream);
        default: break;
    }
    return a.type == DType::kFloat16 ? launch<__half>(a, stream) : launch<float>(a, stream);
}

// ---- weights in PyTorch's layouts (both front ends) ---------------------------------------------

// dw [k*k, C] <- dw_weight [C, k*k]; w1t [C, E] <- w1 [E, C]; w2t [E, C] <- w2 [C, E]. fp16 data
// (w1h, w2h non-null): W1/W2 round to fp16, and w1t/w2t hold the rounded values, as cuda.cpp.
__global__ void rearrange_weights(int32_t C, int32_t E, int32_t taps, const float* __restrict__ dw_weight,
                                  const float* __restrict__ w1, const float* __restrict__ w2, float* __restrict__ dw,
                                  float* __restrict__ w1t, float* __restrict__ w2t, __half* __restrict__ w1h,
                                  __half* __restrict__ w2h) {
    const int32_t n = max(taps * C, C * E);
    for (int32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (i < taps * C) dw[i] = dw_weight[(i % C) * taps + i / C];
        if (i < C * E) {
            float v1 = w1[(i % E) * C + i / E];  // w1t[c, e] = w1[e, c], i = c * E + e
            float v2 = w2[(i % C) * E + i / C];  // w2t[e, c] = w2[c, e], i = e * C + c
            if (w1h != nullptr) {
                const __half h1 = __float2half_rn(v1), h2 = __float2half_rn(v2);
                w1h[i] = h1;
                w2h[i] = h2;
                v1 = __half2float(h1);
                v2 = __half2float(h2);
            }
            w1t[i] = v1;
            w2t[i] = v2;
        }
    }
}

size_t aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

// The workspace's pieces, in order: h, sumsq, dw, w1t, w2t, w1t_half, w2t_half (fp16 data only).
struct WorkspaceLayout {
    size_t hidden, sumsq, dw, w1t, w2t, half, total;
    WorkspaceLayout(DType type, int64_t B, int64_t H, int64_t W, int64_t C, int64_t E, int64_t k)
        : hidden(aligned(static_cast<size_t>(B * H * W * E) * dtype_size(type))),
          sumsq(aligned(sizeof(float) * static_cast<size_t>(B * E))),
          dw(aligned(sizeof(float) * static_cast<size_t>(k * k * C))),
          w1t(aligned(sizeof(float) * static_cast<size_t>(C * E))),
          w2t(w1t),
          half(type == DType::kFloat16 ? aligned(sizeof(__half) * static_cast<size_t>(C * E)) : 0),
          total(hidden + sumsq + dw + w1t + w2t + 2 * half) {}
};

}  // namespace

size_t convnext_block_workspace_size(DType type, int64_t batch, int64_t height, int64_t width, int64_t channels,
                                     int64_t hidden_channels, int64_t kernel) {
    return WorkspaceLayout(type, batch, height, width, channels, hidden_channels, kernel).total;
}

cudaError_t convnext_block_from_torch_layout(const ConvNeXtBlockTorchArgs& t, void* workspace, cudaStream_t stream) {
    ConvNeXtBlockArgs a{};
    a.x = t.x;
    a.out = t.out;
    a.type = t.type;
    a.batch = t.batch;
    a.height = t.height;
    a.width = t.width;
    a.channels = t.channels;
    a.hidden_channels = t.hidden_channels;
    a.kernel = t.kernel;
    a.eps = t.eps;
    if (a.channels < 1 || a.channels > kBlockMaxChannels || a.hidden_channels < 1 ||
        a.hidden_channels > kBlockMaxHidden || a.kernel < 1 || a.kernel > kBlockMaxKernel || workspace == nullptr)
        return cudaErrorInvalidValue;
    const WorkspaceLayout w(t.type, t.batch, t.height, t.width, t.channels, t.hidden_channels, t.kernel);
    char* p = static_cast<char*>(workspace);
    a.hidden = p;
    p += w.hidden;
    a.sumsq = reinterpret_cast<float*>(p);
    p += w.sumsq;
    float* dw = reinterpret_cast<float*>(p);
    p += w.dw;
    float* w1t = reinterpret_cast<float*>(p);
    p += w.w1t;
    float* w2t = reinterpret_cast<float*>(p);
    p += w.w2t;
    __half* w1h = nullptr;
    __half* w2h = nullptr;
    if (t.type == DType::kFloat16) {
        w1h = reinterpret_cast<__half*>(p);
        w2h = reinterpret_cast<__half*>(p + w.half);
    }
    const int32_t taps = t.kernel * t.kernel;
    const int32_t n = std::max(taps * t.channels, t.channels * t.hidden_channels);
    rearrange_weights<<<(n + 255) / 256, 256, 0, stream>>>(t.channels, t.hidden_channels, taps, t.dw_weight, t.w1,
                                                          t.w2, dw, w1t, w2t, w1h, w2h);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    a.dw = dw;
    a.dw_bias = t.dw_bias;
    a.ln_weight = t.ln_weight;
    a.ln_bias = t.ln_bias;
    a.w1t = w1t;
    a.b1 = t.b1;
    a.gamma = t.gamma;
    a.beta = t.beta;
    a.w2t = w2t;
    a.b2 = t.b2;
    a.w1t_half = w1h;
    a.w2t_half = w2h;
    return convnext_block(a, stream);
}

}  // namespace cuda
}  // namespace eventspd
