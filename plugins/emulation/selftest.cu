// Kernels with deliberate defects, one per check of the CPU emulation, and one correct kernel that
// uses everything the checks watch (barriers, shuffles, shared memory, WMMA, vector loads): the
// emulation must reject every defect and pass the correct one (tests/plugins/test_emulation.py).
// Compiled only into the emulation (plugins/emulation), through the same rewrite as the kernels.
#include <cuda_fp16.h>
#include <mma.h>

#include <cstring>

#include "emu/selftest.h"

namespace {

__device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// c[16, 16] = a[16, 16] b[16, 16] (row-major fp16, fp32 result) on the tensor cores; whole warp.
__device__ void tile_product(const __half* a, const __half* b, float* c) {
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc;
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> fa;
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __half, nvcuda::wmma::row_major> fb;
    nvcuda::wmma::fill_fragment(acc, 0.f);
    nvcuda::wmma::load_matrix_sync(fa, a, 16);
    nvcuda::wmma::load_matrix_sync(fb, b, 16);
    nvcuda::wmma::mma_sync(acc, fa, fb, acc);
    nvcuda::wmma::store_matrix_sync(c, acc, 16, nvcuda::wmma::mem_row_major);
}

// Correct: out[0] = sum of 0..63 (shuffles + shared + barrier), out[8..263] = a 16x16x16 WMMA of
// ones (every element 16; out + 8 is 32-byte aligned), out[264] = a float4 read of in[4..7] (4).
__global__ void correct(const float* in, float* out) {
    __shared__ float partial[2];
    extern __shared__ float dyn[];
    const int t = threadIdx.x, lane = t % 32, warp = t / 32;
    const float s = warp_sum(static_cast<float>(t));
    if (lane == 0) partial[warp] = s;
    __syncthreads();
    if (t == 0) out[0] = partial[0] + partial[1];
    if (warp == 0) {
        __half* a = reinterpret_cast<__half*>(dyn);  // 16 x 16 fp16 ones, 32-byte aligned
        for (int i = lane; i < 256; i += 32) a[i] = __float2half_rn(1.f);
        __syncwarp();
        tile_product(a, a, out + 8);
    }
    if (t == 0) out[264] = (*reinterpret_cast<const float4*>(in + 4)).x;
}

// Lanes 16..31 leave, the rest still reduce over the whole warp.
__global__ void shuffle_after_exit(float* out) {
    if (threadIdx.x >= 16) return;
    out[threadIdx.x] = warp_sum(1.f);
}

// Half of each warp waits at __syncthreads, the other half at __syncwarp.
__global__ void divergent_barrier(float* out) {
    if (threadIdx.x % 2)
        __syncthreads();
    else
        __syncwarp();
    out[threadIdx.x] = 1.f;
}

// A lane reads its neighbour's shared-memory slot without the __syncwarp that would order it:
// lock-step execution is not guaranteed since Volta; here the neighbour has not written yet.
__global__ void unsynced_shared_read(float* out) {
    extern __shared__ float s[];
    s[threadIdx.x] = static_cast<float>(threadIdx.x);
    out[threadIdx.x] = s[(threadIdx.x + 1) % 32];
}

__global__ void misaligned_vector_load(const float* in, float* out) {
    out[threadIdx.x] = (*reinterpret_cast<const float4*>(in + 1 + 4 * threadIdx.x)).x;
}

__global__ void index_out_of_bounds(float* out) {
    float a[4] = {1.f, 2.f, 3.f, 4.f};
    out[threadIdx.x] = a[threadIdx.x % 5];
}

__global__ void misaligned_wmma_tile(float* out) {
    extern __shared__ float dyn[];
    __half* a = reinterpret_cast<__half*>(dyn) + 8;  // 16 bytes off the 32-byte alignment
    for (int i = threadIdx.x; i < 256; i += 32) a[i] = __float2half_rn(1.f);
    __syncwarp();
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> fa;
    nvcuda::wmma::load_matrix_sync(fa, a, 16);
    out[threadIdx.x] = 0.f;
}

// Odd lanes load the A tile one row further down than even lanes: WMMA's arguments must be
// warp-uniform (on a GPU the fragment is spread over the lanes; here each holds a copy).
__global__ void nonuniform_wmma_load(float* out) {
    extern __shared__ float dyn[];
    __half* a = reinterpret_cast<__half*>(dyn);  // 17 x 16 fp16: row r holds r
    for (int i = threadIdx.x; i < 17 * 16; i += 32) a[i] = __float2half_rn(static_cast<float>(i / 16));
    __syncwarp();
    tile_product(a + (threadIdx.x % 2) * 16, a, out + 8);
}

// Reads the WMMA result without the __syncwarp after store_matrix_sync: each lane has written
// only its share of the tile when lane 0 reads it all.
__global__ void read_tile_before_syncwarp(float* out) {
    extern __shared__ float dyn[];
    __half* a = reinterpret_cast<__half*>(dyn);
    float* tile = dyn + 128;  // 512 bytes in: 32-byte aligned
    for (int i = threadIdx.x; i < 256; i += 32) a[i] = __float2half_rn(1.f);
    for (int i = threadIdx.x; i < 256; i += 32) tile[i] = 0.f;
    __syncwarp();
    tile_product(a, a, tile);
    if (threadIdx.x == 0)
        for (int i = 0; i < 256; ++i) out[8 + i] = tile[i];
}

// Half of the warp at __syncwarp, the other half in a shuffle.
__global__ void mismatched_warp_barriers(float* out) {
    float v = 1.f;
    if (threadIdx.x % 2)
        __syncwarp();
    else
        v = __shfl_xor_sync(0xffffffffu, v, 2);
    out[threadIdx.x] = v;
}

// An int32 index that overflows (in[2] = 2 added to INT_MAX - 1).
__global__ void signed_overflow(const float* in, float* out) {
    const int big = 2147483646 - static_cast<int>(threadIdx.x);
    const int idx = big + static_cast<int>(in[2]);
    out[threadIdx.x] = static_cast<float>(idx);
}

__global__ void plain(float* out) { out[threadIdx.x] = 1.f; }

// Thread 0 of each block reads a static __shared__ variable before writing it: block 1 would see
// what block 0 left (a static is zero once, then keeps its value) where a GPU gives each block fresh,
// undefined shared memory; the emulation poisons it per block, so both reads give NaN.
__global__ void static_shared_read_before_write(float* out) {
    __shared__ float slot;
    if (threadIdx.x == 0) {
        out[blockIdx.x] = slot;
        slot = static_cast<float>(blockIdx.x + 1);
        out[2 + blockIdx.x] = slot;
    }
}

// Launched with more threads than its __launch_bounds__ allow (ptxas caps its registers for 64).
__global__ void __launch_bounds__(64) bounded(float* out) { out[threadIdx.x % 272] = 1.f; }

// Computes 128 values in a chain and consumes them last to first, so all are live at once: more
// registers per thread (ptxas: over 128) than a block of 1024 threads can have (64 each), so such a
// launch fails on a GPU ("too many resources requested for launch").
__global__ void register_hungry(const float* in, float* out) {
    float v[128];
    float x = in[threadIdx.x % 256];
#pragma unroll
    for (int i = 0; i < 128; ++i) v[i] = x = x * 1.0001f + static_cast<float>(i);
    float s = v[127];
#pragma unroll
    for (int i = 0; i < 127; ++i) s = s * v[126 - i] + v[i];
    out[threadIdx.x % 272] = s;
}

// 32 KB of static shared memory: with 20 KB of dynamic shared memory it is over the 48 KB that a
// launch without cudaFuncSetAttribute gets, and the opt-in limit itself is too much dynamic memory.
__global__ void static_shared(float* out) {
    __shared__ float big[8192];
    big[threadIdx.x] = static_cast<float>(threadIdx.x);
    __syncthreads();
    out[threadIdx.x] = big[31 - threadIdx.x];
}

// Reads in[256..287], past the end of its 256 floats: silent in the plain build (a host read
// past a tensor is not checked), a heap-buffer-overflow report in the AddressSanitizer build.
__global__ void read_past_the_end(const float* in, float* out) { out[threadIdx.x] = in[256 + threadIdx.x]; }

}  // namespace

namespace emu {

bool selftest_exists(const char* name) {
    for (const char* n : {"correct", "shuffle_after_exit", "divergent_barrier", "unsynced_shared_read", "misaligned_vector_load", "index_out_of_bounds", "misaligned_wmma_tile", "nonuniform_wmma_load", "read_tile_before_syncwarp", "mismatched_warp_barriers", "signed_overflow", "over_the_optin_limit", "too_much_shared_memory", "read_past_the_end", "empty_grid", "too_many_threads", "over_its_launch_bounds", "too_many_registers", "static_and_dynamic_shared", "static_shared_and_the_optin_limit", "within_their_resources", "static_shared_read_before_write"})
        if (!std::strcmp(name, n)) return true;
    return false;
}

cudaError_t selftest(const char* name, const float* in, float* out) {
    cudaGetLastError();  // a clean slate
    if (!std::strcmp(name, "correct")) {
        correct<<<1, 64, 256 * sizeof(__half)>>>(in, out);
    } else if (!std::strcmp(name, "shuffle_after_exit")) {
        shuffle_after_exit<<<1, 32>>>(out);
    } else if (!std::strcmp(name, "divergent_barrier")) {
        divergent_barrier<<<1, 64>>>(out);
    } else if (!std::strcmp(name, "unsynced_shared_read")) {
        unsynced_shared_read<<<1, 32, 32 * sizeof(float)>>>(out);
    } else if (!std::strcmp(name, "misaligned_vector_load")) {
        misaligned_vector_load<<<1, 32>>>(in, out);
    } else if (!std::strcmp(name, "index_out_of_bounds")) {
        index_out_of_bounds<<<1, 32>>>(out);
    } else if (!std::strcmp(name, "misaligned_wmma_tile")) {
        misaligned_wmma_tile<<<1, 32, 1024>>>(out);
    } else if (!std::strcmp(name, "nonuniform_wmma_load")) {
        nonuniform_wmma_load<<<1, 32, 17 * 16 * sizeof(__half)>>>(out);
    } else if (!std::strcmp(name, "read_tile_before_syncwarp")) {
        read_tile_before_syncwarp<<<1, 32, 512 + 1024>>>(out);
    } else if (!std::strcmp(name, "mismatched_warp_barriers")) {
        mismatched_warp_barriers<<<1, 32>>>(out);
    } else if (!std::strcmp(name, "signed_overflow")) {
        signed_overflow<<<1, 32>>>(in, out);
    } else if (!std::strcmp(name, "over_the_optin_limit")) {
        return cudaFuncSetAttribute(plain, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_optin_bytes() + 1024);
    } else if (!std::strcmp(name, "too_much_shared_memory")) {
        plain<<<1, 32, 64 * 1024>>>(out);  // over 48 KB without cudaFuncSetAttribute
    } else if (!std::strcmp(name, "read_past_the_end")) {
        read_past_the_end<<<1, 32>>>(in, out);
    } else if (!std::strcmp(name, "empty_grid")) {
        plain<<<0, 32>>>(out);
    } else if (!std::strcmp(name, "too_many_threads")) {
        plain<<<1, 2048>>>(out);
    } else if (!std::strcmp(name, "static_shared_read_before_write")) {
        static_shared_read_before_write<<<2, 32>>>(out);
    } else if (!std::strcmp(name, "over_its_launch_bounds")) {
        bounded<<<1, 128>>>(out);
    } else if (!std::strcmp(name, "too_many_registers")) {
        register_hungry<<<1, 1024>>>(in, out);
    } else if (!std::strcmp(name, "static_and_dynamic_shared")) {
        static_shared<<<1, 32, 20 * 1024>>>(out);
    } else if (!std::strcmp(name, "within_their_resources")) {  // the three kernels above, launchable
        bounded<<<1, 64>>>(out);
        if (cudaGetLastError() != cudaSuccess) return cudaErrorLaunchFailure;
        register_hungry<<<1, 256>>>(in, out);
        if (cudaGetLastError() != cudaSuccess) return cudaErrorLaunchFailure;
        cudaError_t err = cudaFuncSetAttribute(static_shared, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               shared_optin_bytes() - 32 * 1024);
        if (err != cudaSuccess) return err;
        static_shared<<<1, 32, 16 * 1024>>>(out);
    } else if (!std::strcmp(name, "static_shared_and_the_optin_limit")) {
        return cudaFuncSetAttribute(static_shared, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_optin_bytes());
    } else {
        return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

}  // namespace emu
