// Host-side launcher of the topr_route CUDA kernel (kernel.cu). Torch-free and TensorRT-free.
#pragma once

#include "common/launch.h"

namespace eventspd {
namespace cuda {

// attn [BK, heads, T] (fp32 or fp16) -> indices [BK, R] int32, anchors [BK, R, 2] fp32.
struct ToprRouteArgs {
    const void* attn;
    DType attn_type;
    int64_t queries;  // B * K
    int32_t heads, tokens, top_r, grid_w, stride;
    int32_t* indices;
    float* anchors;
};
cudaError_t topr_route(const ToprRouteArgs& a, cudaStream_t stream);

}  // namespace cuda
}  // namespace eventspd
