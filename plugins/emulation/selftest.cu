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
        nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc;
        nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> fa;
        nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __half, nvcuda::wmma::row_major> fb;
        nvcuda::wmma::fill_fragment(acc, 0.f);
        nvcuda::wmma::load_matrix_sync(fa, a, 16);
        nvcuda::wmma::load_matrix_sync(fb, a, 16);
        nvcuda::wmma::mma_sync(acc, fa, fb, acc);
        nvcuda::wmma::store_matrix_sync(out + 8, acc, 16, nvcuda::wmma::mem_row_major);
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
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc;
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> fa;
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __half, nvcuda::wmma::row_major> fb;
    nvcuda::wmma::fill_fragment(acc, 0.f);
    nvcuda::wmma::load_matrix_sync(fa, a + (threadIdx.x % 2) * 16, 16);
    nvcuda::wmma::load_matrix_sync(fb, a, 16);
    nvcuda::wmma::mma_sync(acc, fa, fb, acc);
    out[threadIdx.x] = 0.f;
}

__global__ void plain(float* out) { out[threadIdx.x] = 1.f; }

// Reads in[256..287], past the end of its 256 floats: silent in the plain build (a host read
// past a tensor is not checked), a heap-buffer-overflow report in the AddressSanitizer build.
__global__ void read_past_the_end(const float* in, float* out) { out[threadIdx.x] = in[256 + threadIdx.x]; }

}  // namespace

namespace emu {

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
    } else if (!std::strcmp(name, "too_much_shared_memory")) {
        plain<<<1, 32, 64 * 1024>>>(out);  // over 48 KB without cudaFuncSetAttribute
    } else if (!std::strcmp(name, "read_past_the_end")) {
        read_past_the_end<<<1, 32>>>(in, out);
    } else if (!std::strcmp(name, "empty_grid")) {
        plain<<<0, 32>>>(out);
    } else if (!std::strcmp(name, "too_many_threads")) {
        plain<<<1, 2048>>>(out);
    } else {
        return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

}  // namespace emu
