// CUDA front end of torch.ops.eventspd_plugins.convnext_block: argument checks, output and
// workspace allocation, the current stream; the weights' rearrangement and the kernels are in
// kernel.cu (torch-free), shared with the TensorRT plugin. Compiled only when the extension is built with CUDA.
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
    // The weights go in as they are (fp32, contiguous): convnext_block_from_torch_layout rearranges
    // them into the workspace, as the TensorRT plugin's enqueue does, so this op's GPU tests cover
    // the plugin's arithmetic too (the transposes, fp16 W1/W2 for fp16 data, h and sumsq).
    auto f32 = [](const at::Tensor& t) { return t.to(at::kFloat).contiguous(); };
    const auto dw = f32(dw_weight), dwb = f32(dw_bias), lnw = f32(ln_weight), lnb = f32(ln_bias), ww1 = f32(w1),
               bb1 = f32(b1), gm = f32(gamma), bt = f32(beta), ww2 = f32(w2), bb2 = f32(b2);
    const auto xh = x.permute({0, 2, 3, 1}).contiguous();  // NHWC (no copy for a channels-last x)
    auto out = at::empty_like(xh);
    cuda::ConvNeXtBlockTorchArgs a{};
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
    a.dw_weight = dw.data_ptr<float>();
    a.dw_bias = dwb.data_ptr<float>();
    a.ln_weight = lnw.data_ptr<float>();
    a.ln_bias = lnb.data_ptr<float>();
    a.w1 = ww1.data_ptr<float>();
    a.b1 = bb1.data_ptr<float>();
    a.gamma = gm.data_ptr<float>();
    a.beta = bt.data_ptr<float>();
    a.w2 = ww2.data_ptr<float>();
    a.b2 = bb2.data_ptr<float>();
    // the caching allocator's blocks are 512-byte aligned: the workspace's pieces keep their 256
    const size_t bytes = cuda::convnext_block_workspace_size(a.type, s.B, s.H, s.W, s.C, s.E, s.k);
    auto workspace = at::empty({static_cast<int64_t>(bytes)}, xh.options().dtype(at::kByte));
    check_launch(cuda::convnext_block_from_torch_layout(a, workspace.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()),
                 "convnext_block");
    return out.permute({0, 3, 1, 2});  // [B, C, H, W] in channels-last memory
}

}  // namespace
}  // namespace eventspd

EVENTSPD_CUDA_IMPL(m) {
    m.impl("convnext_block", &eventspd::convnext_block_cuda);
}
