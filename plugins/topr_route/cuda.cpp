// CUDA front end of torch.ops.eventspd_plugins.topr_route: argument checks, output
// allocation and the current stream; the kernel itself is in kernel.cu (torch-free, shared
// with the TensorRT plugin). Compiled only when the extension is built with CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/ops_common.h"
#include "topr_route/check.h"
#include "topr_route/launch.h"

namespace eventspd {
namespace {

std::tuple<at::Tensor, at::Tensor> topr_route_cuda(const at::Tensor& attn, int64_t top_r, int64_t grid_w,
                                                   int64_t grid_h, int64_t stride) {
    check_topr_route(attn, top_r, grid_w, grid_h, stride);
    check_no_double(attn, "topr_route");
    const c10::cuda::CUDAGuard guard(attn.device());
    const auto a = attn.contiguous();
    const int64_t B = a.size(0), K = a.size(1);
    auto indices = at::empty({B, K, top_r}, a.options().dtype(at::kInt));
    auto anchors = at::empty({B, K, top_r, 2}, a.options().dtype(at::kFloat));
    cuda::ToprRouteArgs args{};
    args.attn = a.data_ptr();
    args.attn_type = dtype_of(a);
    args.queries = B * K;
    args.heads = static_cast<int32_t>(a.size(2));
    args.tokens = static_cast<int32_t>(a.size(3));
    args.top_r = static_cast<int32_t>(top_r);
    args.grid_w = static_cast<int32_t>(grid_w);
    args.stride = static_cast<int32_t>(stride);
    args.indices = indices.data_ptr<int32_t>();
    args.anchors = anchors.data_ptr<float>();
    check_launch(cuda::topr_route(args, c10::cuda::getCurrentCUDAStream().stream()), "topr_route");
    return {indices, anchors};
}

}  // namespace
}  // namespace eventspd

EVENTSPD_CUDA_IMPL(m) {
    m.impl("topr_route", &eventspd::topr_route_cuda);
}
