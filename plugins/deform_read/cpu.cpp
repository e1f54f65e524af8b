// torch.ops.eventspd_plugins.deform_read: schema and CPU kernel.
//
// The CPU kernel follows the reference op of model_def/ops.py loop by loop, with all index
// and coordinate arithmetic taken from deform_read/arith.h (shared with the CUDA kernel). It is
// the CI check of that arithmetic on machines without a GPU.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "deform_read/arith.h"
#include "deform_read/check.h"

namespace eventspd {

namespace {

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

}  // namespace
}  // namespace eventspd

TORCH_LIBRARY_FRAGMENT(eventspd_plugins, m) {
    m.def(eventspd::kDeformReadSchema);
}

TORCH_LIBRARY_IMPL(eventspd_plugins, CPU, m) {
    m.impl("deform_read", &eventspd::deform_read_cpu);
}
