// Argument checks of torch.ops.eventspd_plugins.convnext_block, shared by its CPU (cpu.cpp) and
// CUDA (cuda.cpp) front ends (ValueError, naming the tensor, its shape and what was expected).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "convnext_block/arith.h"

namespace eventspd {

// The op's schema, in one place: cpu.cpp defines it in torch.ops.eventspd_plugins, the CPU
// emulation of the CUDA kernels (plugins/emulation) in torch.ops.eventspd_emu.
constexpr const char* kConvNeXtBlockSchema =
    "convnext_block(Tensor x, Tensor dw_weight, Tensor dw_bias, Tensor ln_weight, Tensor ln_bias, Tensor w1, "
    "Tensor b1, Tensor gamma, Tensor beta, Tensor w2, Tensor b2, float eps) -> Tensor";

struct BlockShape {
    int64_t B, C, H, W, E, k;
};

inline void check_vector(const at::Tensor& t, const char* name, int64_t n) {
    TORCH_CHECK_VALUE(t.is_floating_point() && t.numel() == n, "convnext_block: ", name, " must hold ", n,
                      " floating-point numbers, got shape ", t.sizes(), " ", t.scalar_type());
}

inline BlockShape check_convnext_block(const at::Tensor& x, const at::Tensor& dw_weight, const at::Tensor& dw_bias,
                                       const at::Tensor& ln_weight, const at::Tensor& ln_bias, const at::Tensor& w1,
                                       const at::Tensor& b1, const at::Tensor& gamma, const at::Tensor& beta,
                                       const at::Tensor& w2, const at::Tensor& b2, double eps) {
    TORCH_CHECK_VALUE(x.dim() == 4 && x.is_floating_point(), "convnext_block: x must be a floating-point [B, C, H, W] map, got ",
                      x.sizes(), " ", x.scalar_type());
    BlockShape s{x.size(0), x.size(1), x.size(2), x.size(3), w1.dim() == 2 ? w1.size(0) : -1,
                 dw_weight.dim() == 4 ? dw_weight.size(3) : -1};
    TORCH_CHECK_VALUE(s.C >= 1 && s.C <= kBlockMaxChannels, "convnext_block: x has ", s.C, " channels, the kernels take 1..",
                      kBlockMaxChannels);
    TORCH_CHECK_VALUE(s.B * s.H * s.W < INT32_MAX / 4, "convnext_block: x ", x.sizes(), " has too many pixels");
    TORCH_CHECK_VALUE(dw_weight.dim() == 4 && dw_weight.size(0) == s.C && dw_weight.size(1) == 1 &&
                          dw_weight.size(2) == s.k && s.k % 2 == 1 && s.k <= kBlockMaxKernel,
                      "convnext_block: dw_weight must be [", s.C, ", 1, k, k] with k odd and <= ", kBlockMaxKernel,
                      ", got ", dw_weight.sizes());
    TORCH_CHECK_VALUE(w1.dim() == 2 && w1.size(1) == s.C && s.E >= 1 && s.E <= kBlockMaxHidden,
                      "convnext_block: w1 must be [E, ", s.C, "] with E <= ", kBlockMaxHidden, ", got ", w1.sizes());
    TORCH_CHECK_VALUE(s.k * s.k * s.C <= kBlockMaxTaps, "convnext_block: k * k * C = ", s.k, " * ", s.k, " * ", s.C,
                      " exceeds ", kBlockMaxTaps, " (the CUDA kernels hold the depthwise taps in shared memory)");
    TORCH_CHECK_VALUE(w2.dim() == 2 && w2.size(0) == s.C && w2.size(1) == s.E, "convnext_block: w2 must be [", s.C,
                      ", ", s.E, "], got ", w2.sizes());
    check_vector(dw_bias, "dw_bias", s.C);
    check_vector(ln_weight, "ln_weight", s.C);
    check_vector(ln_bias, "ln_bias", s.C);
    check_vector(b2, "b2", s.C);
    check_vector(b1, "b1", s.E);
    check_vector(gamma, "gamma", s.E);
    check_vector(beta, "beta", s.E);
    TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0, "convnext_block: eps must be finite and > 0, got ", eps);
    return s;
}

}  // namespace eventspd
