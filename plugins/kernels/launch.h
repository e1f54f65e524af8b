// Host-side launchers of the EventSPD CUDA kernels. Torch-free and TensorRT-free: the
// PyTorch extension (plugins/csrc/ops_cuda.cpp) and the TensorRT plugins
// (plugins/tensorrt/*.cpp) both call these with raw device pointers and a stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "eventspd/splat.h"

namespace eventspd {
namespace cuda {

enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1 };

inline size_t dtype_size(DType t) { return t == DType::kFloat16 ? 2 : 4; }

// ---- topr_route --------------------------------------------------------------------------
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

// ---- deform_read -------------------------------------------------------------------------
constexpr int32_t kDeformLevels = 3;  // v2, v3, v4

// values[l] [B, C, H_l, W_l] (fp32 or fp16, all the same type), anchors [B, K, R, 2] fp32,
// offsets [B, K, R, heads, L, M, 2] and logits [B, K, R, heads, L, M] (fp32 or fp16, the same
// type) -> out [B, K, R, C] in the value type. The workspace holds channel-last copies of the
// value maps (deform_read_workspace_size bytes, 256-byte aligned).
struct DeformReadArgs {
    const void* values[kDeformLevels];
    int32_t height[kDeformLevels], width[kDeformLevels], stride[kDeformLevels];
    DType value_type;
    const float* anchors;
    const void* offsets;
    const void* logits;
    DType param_type;
    int32_t batch, queries, top_r, channels, heads, points;  // B, K, R, C, heads, M
    void* out;
};
size_t deform_read_workspace_size(const DeformReadArgs& a);
cudaError_t deform_read(const DeformReadArgs& a, void* workspace, cudaStream_t stream);

// ---- event_splat -------------------------------------------------------------------------
// events [N, 4] fp32, table [rows, 2] (fp32 or fp16) -> grid [1, 2L, height, width] fp32
// (zeroed here, then events are scatter-added).
struct EventSplatArgs {
    const float* events;
    int64_t num_events;
    const void* table;
    DType table_type;
    F3Level levels[kMaxF3Levels];
    int32_t num_levels, width, height;
    float time_scale;
    float* grid;
};
cudaError_t event_splat(const EventSplatArgs& a, cudaStream_t stream);

}  // namespace cuda
}  // namespace eventspd
