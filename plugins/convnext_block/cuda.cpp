// CUDA front end of torch.ops.eventspd_plugins.convnext_block: argument checks, the weights in
// the kernels' layouts, output and scratch allocation, the current stream; the kernels are in
// kernel.cu (torch-free). Compiled only when the extension is built with CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/ops_common.h"
#include "convnext_block/check.h"
#include "convnext_block/launch.h"

namespace eventspd {
namespace {

at::Tensor convnext_block_cuda(const at::Tensor& x, const at::Tensor& dw_weight, const at::Tensor& dw_bias,
                               const at::Tensor& ln_weight, const at::Tensor& ln_bias, const at::Tensor& w1,
                               const at::Tensor& b1, const at::Tensor& gamma, const at::Tensor& beta, const at::Tensor& w2,
                               const at::Tensor& b2, double eps) {
    const BlockShape s = check_convnext_block(x, dw_weight, dw_bias, ln_weight, ln_bias, w1, b1, gamma, beta, w2, b2, eps);
    check_no_double(x, "convnext_block");
    for (const at::Tensor* t : {&dw_weight, &dw_bias, &ln_weight, &ln_bias, &w1, &b1, &gamma, &beta, &w2, &b2})
        check_device(*t, x, "convnext_block");
    TORCH_CHECK_VALUE(s.B <= 65535, "convnext_block: batch must be <= 65535 on CUDA, got ", s.B);
    const c10::cuda::CUDAGuard guard(x.device());
    auto f32 = [](const at::Tensor& t) { return t.to(at::kFloat).reshape({-1}).contiguous(); };
    const auto dw = dw_weight.to(at::kFloat).reshape({s.C, s.k * s.k}).t().contiguous();
    // fp16 data: the GEMM weights round to fp16 on every path (the tensor-core kernels read them
    // in fp16; the scalar ones get the same rounded values in fp32), as autocast rounds them.
    const bool half = x.scalar_type() == at::kHalf;
    auto gemm_weight = [half](const at::Tensor& w) {
        const auto t = w.to(at::kFloat).t().contiguous();
        return half ? t.to(at::kHalf).to(at::kFloat) : t;
    };
    const auto w1t = gemm_weight(w1);
    const auto w2t = gemm_weight(w2);
    const auto dwb = f32(dw_bias), lnw = f32(ln_weight), lnb = f32(ln_bias), bb1 = f32(b1), gm = f32(gamma),
               bt = f32(beta), bb2 = f32(b2);
    const auto xh = x.permute({0, 2, 3, 1}).contiguous();  // NHWC (no copy for a channels-last x)
    auto out = at::empty_like(xh);
    auto hidden = at::empty({s.B, s.H, s.W, s.E}, xh.options());
    auto sumsq = at::empty({s.B, s.E}, xh.options().dtype(at::kFloat));
    cuda::ConvNeXtBlockArgs a{};
    a.x = xh.data_ptr();
    a.out = out.data_ptr();
    a.type = dtype_of(xh);
    a.batch = static_cast<int32_t>(s.B);
    a.height = static_cast<int32_t>(s.H);
    a.width = static_cast<int32_t>(s.W);
    a.channels = static_cast<int32_t>(s.C);
    a.hidden_channels = static_cast<int32_t>(s.E);
    a.kernel = static_cast<int32_t>(s.k);
    a.eps = static_cast<float>(eps);
    a.dw = dw.data_ptr<float>();
    a.dw_bias = dwb.data_ptr<float>();
    a.ln_weight = lnw.data_ptr<float>();
    a.ln_bias = lnb.data_ptr<float>();
    a.w1t = w1t.data_ptr<float>();
    a.b1 = bb1.data_ptr<float>();
    a.gamma = gm.data_ptr<float>();
    a.beta = bt.data_ptr<float>();
    a.w2t = w2t.data_ptr<float>();
    a.b2 = bb2.data_ptr<float>();
    a.hidden = hidden.data_ptr();
    a.sumsq = sumsq.data_ptr<float>();
    at::Tensor w1t_half, w2t_half;  // the tensor-core path's fp16 weights (fp16 data only)
    if (half) {
        w1t_half = w1t.to(at::kHalf);
        w2t_half = w2t.to(at::kHalf);
        a.w1t_half = w1t_half.data_ptr();
        a.w2t_half = w2t_half.data_ptr();
    }
    check_launch(cuda::convnext_block(a, c10::cuda::getCurrentCUDAStream().stream()), "convnext_block");
    return out.permute({0, 3, 1, 2});  // [B, C, H, W] in channels-last memory
}

}  // namespace
}  // namespace eventspd

TORCH_LIBRARY_IMPL(eventspd_plugins, CUDA, m) {
    m.impl("convnext_block", &eventspd::convnext_block_cuda);
}
