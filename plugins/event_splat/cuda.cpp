// CUDA front end of torch.ops.eventspd_plugins.event_splat: argument checks, output
// allocation and the current stream; the kernel itself is in kernel.cu (torch-free, shared
// with the TensorRT plugin). Compiled only when the extension is built with CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/ops_common.h"
#include "event_splat/check.h"
#include "event_splat/launch.h"

namespace eventspd {
namespace {

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
    auto tb = table.scalar_type() == at::kHalf ? table.contiguous() : table.to(at::kFloat).contiguous();
    // rows are read as float2 / __half2: a contiguous view at an odd element offset (buf[1:]) is not
    // aligned for them (a misaligned-address fault, which loses the CUDA context)
    if (reinterpret_cast<uintptr_t>(tb.data_ptr()) % (2 * tb.element_size()) != 0) tb = tb.clone();
    auto grid = at::empty({1, 2 * args.num_levels, height, width}, events.options().dtype(at::kFloat));
    args.events = ev.data_ptr<float>();
    args.num_events = ev.size(0);
    args.table = tb.data_ptr();
    args.table_type = dtype_of(tb);
    args.width = static_cast<int32_t>(width);
    args.height = static_cast<int32_t>(height);
    args.time_scale = static_cast<float>(time_scale);
    args.grid = grid.data_ptr<float>();
    // The kernel's channels-last scratch grid, from PyTorch's caching allocator (256-byte aligned);
    // none when there is nothing to add (the launcher then only zeroes the grid).
    const int64_t ws_bytes = args.num_events > 0
        ? static_cast<int64_t>(cuda::event_splat_workspace_size(args.num_levels, args.width, args.height)) : 0;
    const auto workspace = at::empty({ws_bytes}, events.options().dtype(at::kByte));
    check_launch(cuda::event_splat(args, workspace.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()),
                 "event_splat");
    return grid;
}

}  // namespace
}  // namespace eventspd

EVENTSPD_CUDA_IMPL(m) {
    m.impl("event_splat", &eventspd::event_splat_cuda);
}
