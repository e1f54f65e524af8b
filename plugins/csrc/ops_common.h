// Argument checks shared by the CPU and CUDA torch front ends (ValueError, like the
// reference ops).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "eventspd/splat.h"

namespace eventspd {

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

inline void check_deform_read(const at::Tensor& v2, const at::Tensor& v3, const at::Tensor& v4,
                              const at::Tensor& anchors, const at::Tensor& offsets, const at::Tensor& logits,
                              at::IntArrayRef strides) {
    TORCH_CHECK_VALUE(offsets.dim() == 7 && offsets.size(6) == 2,
                      "deform_read: offsets must be [B, K, R, heads, levels, points, 2], got ", offsets.sizes());
    const int64_t B = offsets.size(0), K = offsets.size(1), R = offsets.size(2), Hh = offsets.size(3);
    const int64_t L = offsets.size(4), M = offsets.size(5);
    TORCH_CHECK_VALUE(L == 3 && strides.size() == 3, "deform_read: ", L, " offset levels, 3 value maps, ",
                      strides.size(), " strides");
    for (const auto* v : {&v2, &v3, &v4}) {
        TORCH_CHECK_VALUE(v->dim() == 4 && v->size(0) == B && v->size(1) == v2.size(1),
                          "deform_read: value maps must be [B, C, H, W] with the same B and C, got ", v->sizes());
        TORCH_CHECK_VALUE(v->scalar_type() == v2.scalar_type(), "deform_read: value maps have different dtypes");
        TORCH_CHECK_VALUE(v->size(2) * v->size(3) < INT32_MAX, "deform_read: map too large for int32 indices");
    }
    TORCH_CHECK_VALUE(v2.scalar_type() == at::kFloat || v2.scalar_type() == at::kDouble ||
                          v2.scalar_type() == at::kHalf,
                      "deform_read: value maps must be float32, float64 or float16, got ", v2.scalar_type());
    const int64_t C = v2.size(1);
    TORCH_CHECK_VALUE(Hh >= 1 && C % Hh == 0, "deform_read: ", C, " channels do not split into ", Hh, " heads");
    TORCH_CHECK_VALUE(anchors.dim() == 4 && anchors.size(0) == B && anchors.size(1) == K && anchors.size(2) == R &&
                          anchors.size(3) == 2,
                      "deform_read: anchors must be [B, K, R, 2], got ", anchors.sizes());
    TORCH_CHECK_VALUE(logits.dim() == 6 && logits.size(0) == B && logits.size(1) == K && logits.size(2) == R &&
                          logits.size(3) == Hh && logits.size(4) == L && logits.size(5) == M,
                      "deform_read: logits must be [B, K, R, heads, levels, points], got ", logits.sizes());
    TORCH_CHECK_VALUE(M >= 1, "deform_read: no sampling points");
    for (auto s : strides) TORCH_CHECK_VALUE(s > 0 && s < INT32_MAX, "deform_read: strides must be positive");
}

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
    TORCH_CHECK_VALUE(std::isfinite(time_scale) && time_scale >= 0.0,
                      "event_splat: time_scale must be finite and >= 0, got ", time_scale);
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
