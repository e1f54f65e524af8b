// torch.ops.eventspd_plugins.convnext_block: schema and CPU kernel.
//
// One ConvNeXt-V2 block of F^3 (convnext_block/arith.h) fused into two passes over NHWC memory.
// The CPU kernel is the reference of the CUDA kernels' arithmetic on machines without a GPU
// (it follows the same loops) and is tested against the PyTorch block (model_def/layers.py).
// Data fp32, fp16 (computed in fp32, rounded once at the end) or fp64 (computed in fp64).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "convnext_block/arith.h"
#include "convnext_block/check.h"

namespace eventspd {

namespace {

struct BlockWeights {
    at::Tensor dw, dw_bias, ln_weight, ln_bias, w1t, b1, gamma, beta, w2t, b2;  // compute dtype, contiguous
};

// The weights in the kernels' layouts: dw [k*k, C] tap-major, W1 and W2 transposed.
// fp16 data (half_gemm): W1 and W2 round to fp16, as on the GPU and under autocast.
BlockWeights block_weights(const BlockShape& s, at::ScalarType ct, bool half_gemm, const at::Tensor& dw_weight,
                           const at::Tensor& dw_bias, const at::Tensor& ln_weight, const at::Tensor& ln_bias,
                           const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& gamma, const at::Tensor& beta,
                           const at::Tensor& w2, const at::Tensor& b2) {
    auto flat = [ct](const at::Tensor& t) { return t.to(ct).reshape({-1}).contiguous(); };
    auto gemm = [ct, half_gemm](const at::Tensor& w) {
        const auto t = w.to(ct).t().contiguous();
        return half_gemm ? t.to(at::kHalf).to(ct) : t;
    };
    return {dw_weight.to(ct).reshape({s.C, s.k * s.k}).t().contiguous(), flat(dw_bias), flat(ln_weight), flat(ln_bias),
            gemm(w1), flat(b1), flat(gamma), flat(beta), gemm(w2), flat(b2)};
}

// v rounded to the storage type T and held in the compute type A (a no-op unless T is fp16).
template <class T, class A>
inline A round_to(A v) {
    return static_cast<A>(static_cast<T>(v));
}

// T: storage type of x/out/hidden; A: compute type (double for double data, else float).
template <class T, class A>
void convnext_block_cpu_impl(const BlockShape& s, double eps, const T* x, const BlockWeights& wt, T* out) {
    const int64_t C = s.C, E = s.E, H = s.H, W = s.W, k = s.k, pad = k / 2;
    const A* dw = wt.dw.data_ptr<A>();
    const A* dwb = wt.dw_bias.data_ptr<A>();
    const A* lnw = wt.ln_weight.data_ptr<A>();
    const A* lnb = wt.ln_bias.data_ptr<A>();
    const A* w1t = wt.w1t.data_ptr<A>();
    const A* b1 = wt.b1.data_ptr<A>();
    const A* gamma = wt.gamma.data_ptr<A>();
    const A* beta = wt.beta.data_ptr<A>();
    const A* w2t = wt.w2t.data_ptr<A>();
    const A* b2 = wt.b2.data_ptr<A>();
    // h between the passes: rounded to T (fp16 data: fp16, as the CUDA kernel stores it), held in A.
    std::vector<A> hidden(static_cast<size_t>(s.B * H * W * E));
    // One row of partial sums per image row, reduced in row order afterwards: the result does
    // not depend on how rows are split across threads.
    std::vector<A> row_sumsq(static_cast<size_t>(s.B * H * E), A(0));

    at::parallel_for(0, s.B * H, 1, [&](int64_t begin, int64_t end) {
        std::vector<A> y(C);
        for (int64_t r = begin; r < end; ++r) {
            const int64_t b = r / H, py = r % H;
            A* sq = row_sumsq.data() + r * E;
            for (int64_t px = 0; px < W; ++px) {
                for (int64_t c = 0; c < C; ++c) y[c] = dwb[c];
                for (int64_t i = 0; i < k; ++i) {
                    const int64_t yy = py + i - pad;
                    if (yy < 0 || yy >= H) continue;
                    for (int64_t j = 0; j < k; ++j) {
                        const int64_t xx = px + j - pad;
                        if (xx < 0 || xx >= W) continue;
                        const T* xp = x + ((b * H + yy) * W + xx) * C;
                        const A* wp = dw + (i * k + j) * C;
                        for (int64_t c = 0; c < C; ++c) y[c] += wp[c] * static_cast<A>(xp[c]);
                    }
                }
                A mean = 0, var = 0;
                for (int64_t c = 0; c < C; ++c) mean += y[c];
                mean /= static_cast<A>(C);
                for (int64_t c = 0; c < C; ++c) var += (y[c] - mean) * (y[c] - mean);
                const A rstd = A(1) / std::sqrt(var / static_cast<A>(C) + static_cast<A>(eps));
                // fp16 data: the GEMM inputs (yn here, g in pass 2) round to fp16, as the GPU's
                // tensor-core path and autocast's fp16 GEMMs round them
                for (int64_t c = 0; c < C; ++c) y[c] = round_to<T, A>((y[c] - mean) * rstd * lnw[c] + lnb[c]);
                A* h = hidden.data() + ((b * H + py) * W + px) * E;
                for (int64_t e = 0; e < E; ++e) h[e] = b1[e];
                for (int64_t c = 0; c < C; ++c) {
                    const A* wr = w1t + c * E;
                    for (int64_t e = 0; e < E; ++e) h[e] += wr[e] * y[c];
                }
                for (int64_t e = 0; e < E; ++e) {
                    const A v = gelu_erf(h[e]);
                    sq[e] += v * v;
                    h[e] = round_to<T, A>(v);  // stored in T between the passes, as on the GPU
                }
            }
        }
    });

    std::vector<A> nx(static_cast<size_t>(s.B * E));
    for (int64_t b = 0; b < s.B; ++b) {
        std::vector<A> sum(E, A(0));
        for (int64_t r = 0; r < H; ++r)
            for (int64_t e = 0; e < E; ++e) sum[e] += row_sumsq[(b * H + r) * E + e];
        grn_factors(sum.data(), static_cast<int32_t>(E), H * W, nx.data() + b * E);
    }

    at::parallel_for(0, s.B * H * W, 64, [&](int64_t begin, int64_t end) {
        std::vector<A> g(E), o(C);
        for (int64_t p = begin; p < end; ++p) {
            const int64_t b = p / (H * W);
            const A* h = hidden.data() + p * E;
            const A* n = nx.data() + b * E;
            for (int64_t e = 0; e < E; ++e) g[e] = round_to<T, A>(gamma[e] * (h[e] * n[e]) + beta[e] + h[e]);
            for (int64_t c = 0; c < C; ++c) o[c] = b2[c];
            for (int64_t e = 0; e < E; ++e) {
                const A* wr = w2t + e * C;
                for (int64_t c = 0; c < C; ++c) o[c] += wr[c] * g[e];
            }
            const T* xp = x + p * C;
            T* op = out + p * C;
            for (int64_t c = 0; c < C; ++c) op[c] = static_cast<T>(static_cast<A>(xp[c]) + o[c]);
        }
    });
}

at::Tensor convnext_block_cpu(const at::Tensor& x, const at::Tensor& dw_weight, const at::Tensor& dw_bias,
                              const at::Tensor& ln_weight, const at::Tensor& ln_bias, const at::Tensor& w1,
                              const at::Tensor& b1, const at::Tensor& gamma, const at::Tensor& beta, const at::Tensor& w2,
                              const at::Tensor& b2, double eps) {
    const BlockShape s = check_convnext_block(x, dw_weight, dw_bias, ln_weight, ln_bias, w1, b1, gamma, beta, w2, b2, eps);
    const auto dtype = x.scalar_type();
    TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kDouble,
                      "convnext_block: x must be float32, float16 or float64, got ", dtype);
    const auto ct = dtype == at::kDouble ? at::kDouble : at::kFloat;
    const auto wt = block_weights(s, ct, dtype == at::kHalf, dw_weight, dw_bias, ln_weight, ln_bias, w1, b1, gamma, beta,
                                  w2, b2);
    const auto xh = x.permute({0, 2, 3, 1}).contiguous();  // NHWC (no copy for a channels-last x)
    auto out = at::empty_like(xh);
    if (dtype == at::kDouble) {
        convnext_block_cpu_impl<double, double>(s, eps, xh.data_ptr<double>(), wt, out.data_ptr<double>());
    } else if (dtype == at::kFloat) {
        convnext_block_cpu_impl<float, float>(s, eps, xh.data_ptr<float>(), wt, out.data_ptr<float>());
    } else {
        convnext_block_cpu_impl<at::Half, float>(s, eps, xh.data_ptr<at::Half>(), wt, out.data_ptr<at::Half>());
    }
    return out.permute({0, 3, 1, 2});  // [B, C, H, W] in channels-last memory
}

}  // namespace
}  // namespace eventspd

TORCH_LIBRARY_FRAGMENT(eventspd_plugins, m) {
    m.def(eventspd::kConvNeXtBlockSchema);
}

TORCH_LIBRARY_IMPL(eventspd_plugins, CPU, m) {
    m.impl("convnext_block", &eventspd::convnext_block_cpu);
}
