// Argument checks of torch.ops.eventspd_plugins.deform_read, shared by its CPU (cpu.cpp) and
// CUDA (cuda.cpp) front ends (ValueError, like the reference op).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace eventspd {

// The op's schema, in one place: cpu.cpp defines it in torch.ops.eventspd_plugins, the CPU
// emulation of the CUDA kernels (plugins/emulation) in torch.ops.eventspd_emu.
constexpr const char* kDeformReadSchema =
    "deform_read(Tensor v2, Tensor v3, Tensor v4, Tensor anchors, Tensor offsets, Tensor logits, "
    "int[] strides) -> Tensor";

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

}  // namespace eventspd
