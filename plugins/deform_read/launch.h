// Host-side launcher of the deform_read CUDA kernel (kernel.cu). Torch-free and TensorRT-free.
#pragma once

#include "common/launch.h"

namespace eventspd {
namespace cuda {

constexpr int32_t kDeformLevels = 3;  // v2, v3, v4

// values[l] [B, C, H_l, W_l] (fp32 or fp16, all the same type), anchors [B, K, R, 2] fp32,
// offsets [B, K, R, heads, L, M, 2] and logits [B, K, R, heads, L, M] (fp32 or fp16, the same
// type) -> out [B, K, R, C] in the value type. The workspace holds channel-last copies of the
// value maps (deform_read_workspace_size bytes, 256-byte aligned). With values_channels_last
// the maps are already [B, H_l, W_l, C] in memory and are read in place: no copy, no workspace.
struct DeformReadArgs {
    const void* values[kDeformLevels];
    int32_t height[kDeformLevels], width[kDeformLevels], stride[kDeformLevels];
    DType value_type;
    bool values_channels_last;
    const float* anchors;
    const void* offsets;
    const void* logits;
    DType param_type;
    int32_t batch, queries, top_r, channels, heads, points;  // B, K, R, C, heads, M
    void* out;
};
size_t deform_read_workspace_size(const DeformReadArgs& a);
cudaError_t deform_read(const DeformReadArgs& a, void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace eventspd
