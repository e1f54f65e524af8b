// CUDA front end of torch.ops.eventspd_plugins: argument checks, output allocation and the
// current stream; the kernels themselves are in plugins/kernels/*.cu (torch-free, shared with
// the TensorRT plugins). Compiled only when the extension is built with CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launch.h"
#include "ops_common.h"

namespace eventspd {
namespace {

void check(cudaError_t err, const char* op) {
    TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

void check_no_double(const at::Tensor& t, const char* op) {
    TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf, op,
                      ": the CUDA kernels take float32 or float16 data (float64 is CPU-only), got ", t.scalar_type());
}

cuda::DType dtype_of(const at::Tensor& t) {
    return t.scalar_type() == at::kHalf ? cuda::DType::kFloat16 : cuda::DType::kFloat32;
}

void check_device(const at::Tensor& t, const at::Tensor& ref, const char* op) {
    TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": all tensors must be on ", ref.device(), ", got ", t.device());
}

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
    check(cuda::topr_route(args, c10::cuda::getCurrentCUDAStream().stream()), "topr_route");
    return {indices, anchors};
}

at::Tensor deform_read_cuda(const at::Tensor& v2, const at::Tensor& v3, const at::Tensor& v4,
                            const at::Tensor& anchors, const at::Tensor& offsets, const at::Tensor& logits,
                            at::IntArrayRef strides) {
    check_deform_read(v2, v3, v4, anchors, offsets, logits, strides);
    check_no_double(v2, "deform_read");
    for (const auto* t : {&v3, &v4, &anchors, &offsets, &logits}) check_device(*t, v2, "deform_read");
    TORCH_CHECK_VALUE(v2.size(0) <= 65535, "deform_read: batch must be <= 65535 on CUDA");
    const c10::cuda::CUDAGuard guard(v2.device());
    const at::Tensor vals[3] = {v2.contiguous(), v3.contiguous(), v4.contiguous()};
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
    check(cuda::deform_read(args, workspace.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()), "deform_read");
    return out;
}

at::Tensor event_splat_cuda(const at::Tensor& events, const at::Tensor& table, int64_t width, int64_t height,
                            at::IntArrayRef resolutions, double time_scale) {
    cuda::EventSplatArgs args{};
    args.num_levels = check_event_splat(events, table, width, height, resolutions, time_scale, args.levels);
    check_device(table, events, "event_splat");
    check_no_double(events, "event_splat");
    check_no_double(table, "event_splat");
    const c10::cuda::CUDAGuard guard(events.device());
    auto ev = events.to(at::kFloat).contiguous();
    if (reinterpret_cast<uintptr_t>(ev.data_ptr()) % 16 != 0) ev = ev.clone();  // rows are read as float4
    const auto tb = table.scalar_type() == at::kHalf ? table.contiguous() : table.to(at::kFloat).contiguous();
    auto grid = at::empty({1, 2 * args.num_levels, height, width}, events.options().dtype(at::kFloat));
    args.events = ev.data_ptr<float>();
    args.num_events = ev.size(0);
    args.table = tb.data_ptr();
    args.table_type = dtype_of(tb);
    args.width = static_cast<int32_t>(width);
    args.height = static_cast<int32_t>(height);
    args.time_scale = static_cast<float>(time_scale);
    args.grid = grid.data_ptr<float>();
    check(cuda::event_splat(args, c10::cuda::getCurrentCUDAStream().stream()), "event_splat");
    return grid;
}

}  // namespace
}  // namespace eventspd

TORCH_LIBRARY_IMPL(eventspd_plugins, CUDA, m) {
    m.impl("topr_route", &eventspd::topr_route_cuda);
    m.impl("deform_read", &eventspd::deform_read_cuda);
    m.impl("event_splat", &eventspd::event_splat_cuda);
}
