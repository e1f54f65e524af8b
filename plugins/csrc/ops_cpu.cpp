// PyTorch extension: schemas of torch.ops.eventspd_plugins.* and their CPU kernels.
//
// The CPU kernels follow the reference ops of model_def/ops.py loop by loop, with all index
// and coordinate arithmetic taken from plugins/include/eventspd/*.h (shared with CUDA).
// They are the CI check of that arithmetic on machines without a GPU.
#include <Python.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <type_traits>
#include <vector>

#include "eventspd/deform.h"
#include "eventspd/splat.h"
#include "eventspd/topr.h"
#include "ops_common.h"

namespace eventspd {

template <>
struct Arith<c10::Half> {
    using acc = float;
    static float widen(c10::Half x) { return static_cast<float>(x); }
    static c10::Half narrow(float x) { return c10::Half(x); }
};

namespace {

// ---- topr_route --------------------------------------------------------------------------
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

// ---- deform_read -------------------------------------------------------------------------
// Computes in F (float, or double for double value maps), in the reference's order: per
// level, per bilinear corner, the sum over points, added to the head's accumulator.
template <class F>
void deform_read_cpu_impl(const std::vector<at::Tensor>& values, const at::Tensor& anchors,
                          const at::Tensor& offsets, const at::Tensor& logits,
                          const std::vector<int64_t>& strides, at::Tensor& out) {
    const int64_t B = offsets.size(0), K = offsets.size(1), R = offsets.size(2), Hh = offsets.size(3);
    const int64_t L = offsets.size(4), M = offsets.size(5);
    const int64_t C = values[0].size(1), Ch = C / Hh;
    std::vector<const F*> vptr;
    std::vector<int32_t> Hs, Ws;
    for (const auto& v : values) {
        vptr.push_back(v.data_ptr<F>());
        Hs.push_back(static_cast<int32_t>(v.size(2)));
        Ws.push_back(static_cast<int32_t>(v.size(3)));
    }
    const F* anc = anchors.data_ptr<F>();
    const F* off = offsets.data_ptr<F>();
    const F* lg = logits.data_ptr<F>();
    F* o = out.data_ptr<F>();
    const int64_t LM = L * M;
    at::parallel_for(0, B * K * R, 1, [&](int64_t p0, int64_t p1) {
        std::vector<F> a(LM), acc(Ch), s(Ch);
        std::vector<Corners<F>> corners(M);
        for (int64_t p = p0; p < p1; ++p) {  // p = (b, k, r)
            const int64_t b = p / (K * R);
            const F u = anc[p * 2], v = anc[p * 2 + 1];
            for (int64_t h = 0; h < Hh; ++h) {
                const int64_t ph = p * Hh + h;
                const F* lgh = lg + ph * LM;
                const auto st = softmax_stats<F>(static_cast<int32_t>(LM), [&](int32_t i) { return lgh[i]; });
                for (int64_t i = 0; i < LM; ++i) a[i] = softmax_weight(lgh[i], st);
                std::fill(acc.begin(), acc.end(), F(0));
                for (int64_t l = 0; l < L; ++l) {
                    const int32_t H = Hs[l], W = Ws[l];
                    for (int64_t m = 0; m < M; ++m) {
                        const F* om = off + ((ph * L + l) * M + m) * 2;
                        corners[m] = bilinear_corners(level_coord(u, static_cast<int32_t>(strides[l]), om[0]),
                                                      level_coord(v, static_cast<int32_t>(strides[l]), om[1]), H, W);
                    }
                    const F* vh = vptr[l] + (b * C + h * Ch) * int64_t(H) * W;
                    for (int k = 0; k < 4; ++k) {
                        std::fill(s.begin(), s.end(), F(0));
                        for (int64_t m = 0; m < M; ++m) {
                            const int32_t idx = corners[m].index[k];
                            if (idx < 0) continue;  // outside the map: contributes zero
                            const F coef = a[l * M + m] * corners[m].weight[k];
                            for (int64_t c = 0; c < Ch; ++c) s[c] += coef * vh[c * int64_t(H) * W + idx];
                        }
                        for (int64_t c = 0; c < Ch; ++c) acc[c] += s[c];
                    }
                }
                std::copy(acc.begin(), acc.end(), o + p * C + h * Ch);
            }
        }
    });
}

at::Tensor deform_read_cpu(const at::Tensor& v2, const at::Tensor& v3, const at::Tensor& v4,
                           const at::Tensor& anchors, const at::Tensor& offsets, const at::Tensor& logits,
                           at::IntArrayRef strides) {
    check_deform_read(v2, v3, v4, anchors, offsets, logits, strides);
    const auto ctype = v2.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    std::vector<at::Tensor> values;
    for (const auto* v : {&v2, &v3, &v4}) values.push_back(v->to(ctype).contiguous());
    const auto anc = anchors.to(ctype).contiguous();
    const auto off = offsets.to(ctype).contiguous();
    const auto lg = logits.to(ctype).contiguous();
    auto out = at::empty({offsets.size(0), offsets.size(1), offsets.size(2), v2.size(1)}, v2.options().dtype(ctype));
    std::vector<int64_t> st(strides.begin(), strides.end());
    if (ctype == at::kDouble) {
        deform_read_cpu_impl<double>(values, anc, off, lg, st, out);
    } else {
        deform_read_cpu_impl<float>(values, anc, off, lg, st, out);
    }
    return out.to(v2.scalar_type());
}

// ---- event_splat -------------------------------------------------------------------------
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

TORCH_LIBRARY(eventspd_plugins, m) {
    m.def("topr_route(Tensor attn, int top_r, int grid_w, int grid_h, int stride) -> (Tensor, Tensor)");
    m.def("deform_read(Tensor v2, Tensor v3, Tensor v4, Tensor anchors, Tensor offsets, Tensor logits, "
          "int[] strides) -> Tensor");
    m.def("event_splat(Tensor events, Tensor table, int width, int height, int[] resolutions, "
          "float time_scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(eventspd_plugins, CPU, m) {
    m.impl("topr_route", &eventspd::topr_route_cpu);
    m.impl("deform_read", &eventspd::deform_read_cpu);
    m.impl("event_splat", &eventspd::event_splat_cpu);
}

// A Python module so that `import plugins._C` loads the library (and runs the registrations
// above); the ops themselves live in torch.ops.eventspd_plugins.
static PyModuleDef eventspd_module = {PyModuleDef_HEAD_INIT, "_C",
                                      "EventSPD plugin kernels: see torch.ops.eventspd_plugins", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
    PyObject* m = PyModule_Create(&eventspd_module);
    if (m == nullptr) return nullptr;
#ifdef EVENTSPD_WITH_CUDA
    PyModule_AddIntConstant(m, "with_cuda", 1);
#else
    PyModule_AddIntConstant(m, "with_cuda", 0);
#endif
    return m;
}
