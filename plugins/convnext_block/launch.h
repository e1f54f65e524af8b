// Host-side launcher of the fused ConvNeXt-V2 block's CUDA kernels (kernel.cu). Torch-free
// and TensorRT-free: the PyTorch extension (cuda.cpp) calls it with raw device pointers.
#pragma once

#include "common/launch.h"
#include "convnext_block/arith.h"

namespace eventspd {
namespace cuda {

// x, out [B, H, W, C] (NHWC, fp32 or fp16, same type); the weights fp32: dw [k*k, C] (tap-major,
// transposed from torch's [C, 1, k, k]), dw_bias/ln_weight/ln_bias/b2 [C], w1t [C, E] (W1
// transposed), b1/gamma/beta [E], w2t [E, C] (W2 transposed). Scratch: hidden [B, H, W, E] of the
// data type, sumsq [B, E] fp32 (zeroed here). Pass 1, then pass 2, on `stream`.
// convnext_block_uses_tensor_cores says which kernels a call takes.
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
cudaError_t convnext_block(const ConvNeXtBlockArgs& a, cudaStream_t stream);
bool convnext_block_uses_tensor_cores(const ConvNeXtBlockArgs& a);

}  // namespace cuda
}  // namespace eventspd
