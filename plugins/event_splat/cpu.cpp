// torch.ops.eventspd_plugins.event_splat: schema and CPU kernel.
//
// The CPU kernel follows the reference op of model_def/ops.py loop by loop, with all index
// and coordinate arithmetic taken from event_splat/arith.h (shared with the CUDA kernel). It is
// the CI check of that arithmetic on machines without a GPU.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "event_splat/arith.h"
#include "event_splat/check.h"

namespace eventspd {

namespace {

// Coordinates and weights in Fe (fp64 for fp64 events, else fp32), features and the grid in
// Ft (fp64 for an fp64 table, else fp32), as the reference. Events are accumulated in input
// order, as the reference's index_add_ does on the CPU, so sums round the same way.
template <class Fe, class Ft>
void event_splat_cpu_impl(const at::Tensor& ev, const at::Tensor& tb, int64_t width, int64_t height,
                          const F3Level* levels, int32_t L, double time_scale, at::Tensor& grid) {
    const int64_t N = ev.size(0), HW = height * width;
    const Fe* e = ev.data_ptr<Fe>();
    const Ft* t = tb.data_ptr<Ft>();
    Ft* g = grid.data_ptr<Ft>();
    const Fe ts = static_cast<Fe>(time_scale);
    int32_t rows[8];
    Fe w[8];
    for (int64_t n = 0; n < N; ++n) {
        F3Event<Fe> fe;
        if (!f3_event<Fe>(e[4 * n], e[4 * n + 1], e[4 * n + 2], static_cast<int32_t>(width),
                          static_cast<int32_t>(height), ts, &fe))
            continue;
        Ft* gp = g + int64_t(fe.py) * width + fe.px;
        for (int32_t l = 0; l < L; ++l) {
            f3_corners(fe, levels[l], rows, w);
            Ft p0[8], p1[8];
            for (int k = 0; k < 8; ++k) {
                const Ft wk = static_cast<Ft>(w[k]);
                p0[k] = t[2 * int64_t(rows[k])] * wk;
                p1[k] = t[2 * int64_t(rows[k]) + 1] * wk;
            }
            gp[(2 * l) * HW] += f3_sum8(p0);
            gp[(2 * l + 1) * HW] += f3_sum8(p1);
        }
    }
}

at::Tensor event_splat_cpu(const at::Tensor& events, const at::Tensor& table, int64_t width, int64_t height,
                           at::IntArrayRef resolutions, double time_scale) {
    F3Level levels[kMaxF3Levels];
    const int32_t L = check_event_splat(events, table, width, height, resolutions, time_scale, levels);
    const auto etype = events.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const auto ttype = table.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const auto ev = events.to(etype).contiguous();
    const auto tb = table.to(ttype).contiguous();
    auto grid = at::zeros({1, 2 * L, height, width}, events.options().dtype(ttype));
    if (etype == at::kDouble && ttype == at::kDouble) {
        event_splat_cpu_impl<double, double>(ev, tb, width, height, levels, L, time_scale, grid);
    } else if (etype == at::kDouble) {
        event_splat_cpu_impl<double, float>(ev, tb, width, height, levels, L, time_scale, grid);
    } else if (ttype == at::kDouble) {
        event_splat_cpu_impl<float, double>(ev, tb, width, height, levels, L, time_scale, grid);
    } else {
        event_splat_cpu_impl<float, float>(ev, tb, width, height, levels, L, time_scale, grid);
    }
    return grid;
}

}  // namespace
}  // namespace eventspd

TORCH_LIBRARY_FRAGMENT(eventspd_plugins, m) {
    m.def(eventspd::kEventSplatSchema);
}

TORCH_LIBRARY_IMPL(eventspd_plugins, CPU, m) {
    m.impl("event_splat", &eventspd::event_splat_cpu);
}
