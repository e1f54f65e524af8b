// Argument checks of torch.ops.eventspd_plugins.event_splat, shared by its CPU (cpu.cpp) and
// CUDA (cuda.cpp) front ends (ValueError, like the reference op).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "event_splat/arith.h"

namespace eventspd {

// The op's schema, in one place: cpu.cpp defines it in torch.ops.eventspd_plugins, the CPU
// emulation of the CUDA kernels (plugins/emulation) in torch.ops.eventspd_emu.
constexpr const char* kEventSplatSchema =
    "event_splat(Tensor events, Tensor table, int width, int height, int[] resolutions, "
    "float time_scale) -> Tensor";

// Returns the number of levels and fills `levels`.
inline int32_t check_event_splat(const at::Tensor& events, const at::Tensor& table, int64_t width, int64_t height,
                                 at::IntArrayRef resolutions, double time_scale, F3Level* levels) {
    TORCH_CHECK_VALUE(events.dim() == 2 && events.size(1) == 4, "event_splat: events must be [N, 4], got ",
                      events.sizes());
    TORCH_CHECK_VALUE(events.is_floating_point() && table.is_floating_point(),
                      "event_splat: events and table must be floating point");
    TORCH_CHECK_VALUE(width > 0 && height > 0 && width * height * 16 < INT32_MAX,
                      "event_splat: width and height must be positive and fit int32 indices");
    TORCH_CHECK_VALUE(resolutions.size() % 3 == 0,
                      "resolutions must be (Rx, Ry, Rt) triples, got ", resolutions.size(), " numbers");
    // <= FLT_MAX: the kernels and the TensorRT plugin's field are fp32, where a larger value is inf
    // (and t = 0 then gives 0 * inf = NaN)
    TORCH_CHECK_VALUE(std::isfinite(time_scale) && time_scale >= 0.0 && time_scale <= FLT_MAX,
                      "event_splat: time_scale must be finite, >= 0 and at most FLT_MAX (a float32), got ", time_scale);
    const int32_t L = static_cast<int32_t>(resolutions.size() / 3);
    const int64_t rows = f3_levels(resolutions.data(), L, levels);
    TORCH_CHECK_VALUE(rows >= 0, "event_splat: resolutions must be at most ", kMaxF3Levels,
                      " triples of positive numbers, got ", resolutions);
    TORCH_CHECK_VALUE(table.dim() == 2 && table.size(0) == rows && table.size(1) == 2,
                      "event_splat: table has shape ", table.sizes(), ", expected (", rows, ", 2) for resolutions ",
                      resolutions);
    return L;
}

}  // namespace eventspd
