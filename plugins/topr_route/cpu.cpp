// torch.ops.eventspd_plugins.topr_route: schema and CPU kernel.
//
// The CPU kernel follows the reference op of model_def/ops.py loop by loop, with all index
// and coordinate arithmetic taken from topr_route/arith.h (shared with the CUDA kernel). It is
// the CI check of that arithmetic on machines without a GPU.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <type_traits>
#include <vector>

#include "topr_route/arith.h"
#include "topr_route/check.h"

namespace eventspd {

template <>
struct Arith<c10::Half> {
    using acc = float;
    static float widen(c10::Half x) { return static_cast<float>(x); }
    static c10::Half narrow(float x) { return c10::Half(x); }
};

namespace {

template <class T>
void topr_route_cpu_impl(const at::Tensor& attn, int64_t R, int64_t grid_w, int64_t stride,
                         at::Tensor& indices, at::Tensor& anchors) {
    const int64_t B = attn.size(0), K = attn.size(1), Hh = attn.size(2), Tn = attn.size(3);
    const T* a = attn.data_ptr<T>();
    int32_t* out_i = indices.data_ptr<int32_t>();
    float* out_a = anchors.data_ptr<float>();
    at::parallel_for(0, B * K, 1, [&](int64_t q0, int64_t q1) {
        std::vector<T> score(Tn);
        std::vector<uint64_t> keys(Tn);
        std::vector<int32_t> order(Tn);
        for (int64_t q = q0; q < q1; ++q) {
            const T* aq = a + q * Hh * Tn;
            for (int64_t t = 0; t < Tn; ++t) score[t] = topr_score<T>(aq + t, Tn, static_cast<int32_t>(Hh));
            int32_t* oi = out_i + q * R;
            if constexpr (std::is_same_v<T, double>) {
                // doubles do not fit the 64-bit key: sort indices with the comparator
                std::iota(order.begin(), order.end(), 0);
                std::partial_sort(order.begin(), order.begin() + R, order.end(),
                                  [&](int32_t i, int32_t j) { return topr_before(score[i], i, score[j], j); });
                std::copy(order.begin(), order.begin() + R, oi);
            } else {
                for (int64_t t = 0; t < Tn; ++t)
                    keys[t] = topr_key(static_cast<float>(score[t]), static_cast<int32_t>(t));
                std::partial_sort(keys.begin(), keys.begin() + R, keys.end());
                for (int64_t r = 0; r < R; ++r) oi[r] = topr_key_index(keys[r]);
            }
            for (int64_t r = 0; r < R; ++r) {
                topr_anchor(oi[r], static_cast<int32_t>(grid_w), static_cast<int32_t>(stride),
                            out_a + (q * R + r) * 2, out_a + (q * R + r) * 2 + 1);
            }
        }
    });
}

std::tuple<at::Tensor, at::Tensor> topr_route_cpu(const at::Tensor& attn, int64_t top_r, int64_t grid_w,
                                                  int64_t grid_h, int64_t stride) {
    check_topr_route(attn, top_r, grid_w, grid_h, stride);
    const auto a = attn.contiguous();
    const int64_t B = a.size(0), K = a.size(1);
    auto indices = at::empty({B, K, top_r}, a.options().dtype(at::kInt));
    auto anchors = at::empty({B, K, top_r, 2}, a.options().dtype(at::kFloat));
    if (a.scalar_type() == at::kDouble) {
        topr_route_cpu_impl<double>(a, top_r, grid_w, stride, indices, anchors);
    } else if (a.scalar_type() == at::kFloat) {
        topr_route_cpu_impl<float>(a, top_r, grid_w, stride, indices, anchors);
    } else {
        topr_route_cpu_impl<c10::Half>(a, top_r, grid_w, stride, indices, anchors);
    }
    return {indices, anchors};
}

}  // namespace
}  // namespace eventspd

TORCH_LIBRARY_FRAGMENT(eventspd_plugins, m) {
    m.def(eventspd::kToprRouteSchema);
}

TORCH_LIBRARY_IMPL(eventspd_plugins, CPU, m) {
    m.impl("topr_route", &eventspd::topr_route_cpu);
}
