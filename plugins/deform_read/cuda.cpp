// CUDA front end of torch.ops.eventspd_plugins.deform_read: argument checks, output
// allocation and the current stream; the kernel itself is in kernel.cu (torch-free, shared
// with the TensorRT plugin). Compiled only when the extension is built with CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/ops_common.h"
#include "deform_read/check.h"
#include "deform_read/launch.h"

namespace eventspd {
namespace {

at::Tensor deform_read_cuda(const at::Tensor& v2, const at::Tensor& v3, const at::Tensor& v4,
                            const at::Tensor& anchors, const at::Tensor& offsets, const at::Tensor& logits,
                            at::IntArrayRef strides) {
    check_deform_read(v2, v3, v4, anchors, offsets, logits, strides);
    check_no_double(v2, "deform_read");
    for (const auto* t : {&v3, &v4, &anchors, &offsets, &logits}) check_device(*t, v2, "deform_read");
    TORCH_CHECK_VALUE(v2.size(0) <= 65535, "deform_read: batch must be <= 65535 on CUDA");
    const c10::cuda::CUDAGuard guard(v2.device());
    // Maps already channels-last in memory are read in place (no per-call copy into the
    // workspace); any other layout is made NCHW-contiguous and copied channel-last by the kernel.
    const bool channels_last = v2.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                               v3.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                               v4.is_contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor vals[3] = {channels_last ? v2 : v2.contiguous(), channels_last ? v3 : v3.contiguous(),
                                channels_last ? v4 : v4.contiguous()};
    const auto anc = anchors.to(at::kFloat).contiguous();
    // offsets and logits keep fp16 when both are fp16; anything else is read as fp32
    const auto ptype = offsets.scalar_type() == at::kHalf && logits.scalar_type() == at::kHalf ? at::kHalf : at::kFloat;
    const auto off = offsets.to(ptype).contiguous();
    const auto lg = logits.to(ptype).contiguous();
    const int64_t B = offsets.size(0), K = offsets.size(1), R = offsets.size(2);
    auto out = at::empty({B, K, R, v2.size(1)}, v2.options());
    cuda::DeformReadArgs args{};
    for (int l = 0; l < 3; ++l) {
        args.values[l] = vals[l].data_ptr();
        args.height[l] = static_cast<int32_t>(vals[l].size(2));
        args.width[l] = static_cast<int32_t>(vals[l].size(3));
        args.stride[l] = static_cast<int32_t>(strides[l]);
    }
    args.value_type = dtype_of(v2);
    args.values_channels_last = channels_last;
    args.anchors = anc.data_ptr<float>();
    args.offsets = off.data_ptr();
    args.logits = lg.data_ptr();
    args.param_type = ptype == at::kHalf ? cuda::DType::kFloat16 : cuda::DType::kFloat32;
    args.batch = static_cast<int32_t>(B);
    args.queries = static_cast<int32_t>(K);
    args.top_r = static_cast<int32_t>(R);
    args.channels = static_cast<int32_t>(v2.size(1));
    args.heads = static_cast<int32_t>(offsets.size(3));
    args.points = static_cast<int32_t>(offsets.size(5));
    args.out = out.data_ptr();
    auto workspace = at::empty({static_cast<int64_t>(cuda::deform_read_workspace_size(args)) + 256},
                               v2.options().dtype(at::kByte));
    check_launch(cuda::deform_read(args, workspace.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()),
                 "deform_read");
    return out;
}

}  // namespace
}  // namespace eventspd

EVENTSPD_CUDA_IMPL(m) {
    m.impl("deform_read", &eventspd::deform_read_cuda);
}
