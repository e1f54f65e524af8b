// Per-pixel arithmetic of the fused ConvNeXt-V2 block (F^3's conv stack), shared by the CPU
// kernel (cpu.cpp) and the CUDA kernels (kernel.cu). Torch-free and TensorRT-free.
//
// The block (model_def/layers.py ConvNeXtV2Block, GRN with the RMS spatial statistic):
//   y  = dwconv_kxk(x) + b_dw                  (zero padding k/2, per channel)
//   yn = LayerNorm_C(y) * w_ln + b_ln          (biased variance, eps)
//   h  = GELU(W1 yn + b1)                      (exact erf GELU, E = expansion * C outputs)
//   gx = sqrt(mean_HW h^2), nx = gx / (mean_E gx + 1e-6)     (GRN: needs all pixels first)
//   out = x + W2 (gamma * h * nx + beta + h) + b2
// so the op runs in two passes: pass 1 writes h and the per-(batch, channel) sums of h^2;
// pass 2 turns the sums into nx and finishes each pixel.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/common.h"

namespace eventspd {

// Limits of the CUDA kernels (per-lane register arrays, shared memory); the CPU kernel checks
// the same so both front ends accept the same shapes. The model's blocks: F^3 C 64, E 128, k 7;
// L1 C 64, E 256, k 7; L2 C 128, E 512, k 13.
constexpr int32_t kBlockMaxChannels = 256;   // C
constexpr int32_t kBlockMaxHidden = 512;     // E = expansion * C (E / 32 sums per lane)
constexpr int32_t kBlockMaxKernel = 13;      // k (odd)
constexpr int32_t kBlockMaxTaps = 22528;     // k * k * C: the depthwise taps in shared memory (88 KB):
                                             // with the largest E and C, the kernels that read W1/W2
                                             // from global memory still fit every sm_80+ device (99 KB);
                                             // on sm_75 (64 KB) the scalar pass 1 reads taps that do
                                             // not fit from global memory instead (L2's)
constexpr int32_t kBlockSharedWeights = 16384;  // C * E up to which W1 / W2 are staged in shared
                                                // memory too (64 KB); larger ones are read through
                                                // the read-only cache (L2's 128 x 512)
constexpr double kGrnEps = 1e-6;             // GRN's guard, as model_def/layers.py GRN

template <class A>
EVENTSPD_HD A gelu_erf(A v) {
    // torch.nn.functional.gelu(approximate="none"): 0.5 * v * (1 + erf(v / sqrt(2)))
    return A(0.5) * v * (A(1) + erf(v * A(0.70710678118654752440)));
}

// GRN's per-channel factor from the sum of squares over the HW pixels of one batch item:
// nx[e] = gx[e] / (mean_e gx + 1e-6), gx = sqrt(sum / HW).
template <class A>
EVENTSPD_HD void grn_factors(const A* sumsq, int32_t E, int64_t hw, A* nx) {
    A mean = A(0);
    for (int32_t e = 0; e < E; ++e) {
        nx[e] = sqrt(sumsq[e] / static_cast<A>(hw));
        mean += nx[e];
    }
    mean = mean / static_cast<A>(E) + static_cast<A>(kGrnEps);
    for (int32_t e = 0; e < E; ++e) nx[e] = nx[e] / mean;
}

}  // namespace eventspd
