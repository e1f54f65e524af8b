// Host-side launcher of the fused ConvNeXt-V2 block's CUDA kernels (kernel.cu). Torch-free
// and TensorRT-free: the PyTorch extension (cuda.cpp) and the TensorRT plugin (plugin.cpp) both
// call it with raw device pointers.
#pragma once

#include "common/launch.h"
#include "convnext_block/arith.h"

namespace eventspd {
namespace cuda {

// x, out [B, H, W, C] (NHWC, fp32 or fp16, same type); the weights fp32 and contiguous, in
// PyTorch's layouts: dw_weight [C, 1, k, k], dw_bias/ln_weight/ln_bias/b2 [C], w1 [E, C],
// b1/gamma/beta [E numbers], w2 [C, E]. convnext_block_from_torch_layout rearranges the weights
// into `workspace` with one small kernel (dw tap-major [k*k, C], W1 and W2 transposed; fp16 data:
// W1 and W2 rounded to fp16, as autocast rounds them), carves h [B, H, W, E] and sumsq [B, E] out
// of it, and runs pass 1, then pass 2, on `stream`. The workspace holds
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
