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

// The block with its weights in PyTorch's layouts, as the TensorRT plugin receives them (all fp32
// and contiguous): dw_weight [C, 1, k, k], w1 [E, C], w2 [C, E], the vectors as above.
// convnext_block_from_torch_layout rearranges the weights into `workspace` with one small kernel
// (the transposes cuda.cpp does with torch; fp16 data: W1 and W2 also in fp16, rounded the same
// way), carves h and sumsq out of it, and runs convnext_block. The workspace holds
// convnext_block_workspace_size bytes (256-byte aligned pieces).
struct ConvNeXtBlockTorchArgs {
    const void* x;
    void* out;
    DType type;
    int32_t batch, height, width, channels, hidden_channels, kernel;
    float eps;
    const float *dw_weight, *dw_bias, *ln_weight, *ln_bias, *w1, *b1, *gamma, *beta, *w2, *b2;
};
size_t convnext_block_workspace_size(DType type, int64_t batch, int64_t height, int64_t width, int64_t channels,
                                     int64_t hidden_channels, int64_t kernel);
cudaError_t convnext_block_from_torch_layout(const ConvNeXtBlockTorchArgs& a, void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace eventspd
