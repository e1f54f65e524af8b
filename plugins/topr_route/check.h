// Argument checks of torch.ops.eventspd_plugins.topr_route, shared by its CPU (cpu.cpp) and
// CUDA (cuda.cpp) front ends (ValueError, like the reference op).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace eventspd {

// The op's schema, in one place: cpu.cpp defines it in torch.ops.eventspd_plugins, the CPU
// emulation of the CUDA kernels (plugins/emulation) in torch.ops.eventspd_emu.
constexpr const char* kToprRouteSchema =
    "topr_route(Tensor attn, int top_r, int grid_w, int grid_h, int stride) -> (Tensor, Tensor)";

inline void check_topr_route(const at::Tensor& attn, int64_t top_r, int64_t grid_w, int64_t grid_h,
                             int64_t stride) {
    TORCH_CHECK_VALUE(attn.dim() == 4, "topr_route: attention must be [B, K, heads, T], got ", attn.sizes());
    TORCH_CHECK_VALUE(attn.scalar_type() == at::kFloat || attn.scalar_type() == at::kDouble ||
                          attn.scalar_type() == at::kHalf,
                      "topr_route: attention must be float32, float64 or float16, got ", attn.scalar_type());
    const int64_t T = attn.size(3);
    TORCH_CHECK_VALUE(grid_w > 0 && grid_h > 0 && T == grid_w * grid_h, "topr_route: attention has ", T,
                      " tokens, grid is ", grid_w, "x", grid_h);
    TORCH_CHECK_VALUE(top_r >= 0 && top_r <= T, "topr_route: top_r=", top_r, " exceeds the ", T, " tokens");
    TORCH_CHECK_VALUE(attn.size(2) >= 1, "topr_route: attention has no heads");
    TORCH_CHECK_VALUE(T < INT32_MAX && grid_w < INT32_MAX && stride < INT32_MAX && stride > 0,
                      "topr_route: sizes must fit int32 and stride must be positive");
}

}  // namespace eventspd
