// Host-side launcher of the event_splat CUDA kernel (kernel.cu). Torch-free and TensorRT-free.
#pragma once

#include "common/launch.h"
#include "event_splat/arith.h"

namespace eventspd {
namespace cuda {

// events [N, 4] fp32, table [rows, 2] (fp32 or fp16) -> grid [1, 2L, height, width] fp32
// (every element written). The events are scatter-added into `workspace`, a [height, width, 2L]
// fp32 scratch grid of event_splat_workspace_size() bytes, 16-byte aligned (kernel.cu says why).
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
size_t event_splat_workspace_size(int32_t num_levels, int32_t width, int32_t height);
cudaError_t event_splat(const EventSplatArgs& a, void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace eventspd
