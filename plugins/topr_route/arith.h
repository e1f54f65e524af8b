// topr_route: score, ranking rule and anchor pixel of one token (model_def/ops.py).
#pragma once

#include "common/common.h"

namespace eventspd {

// score[t] = (attn[0,t] + attn[1,t] + ... + attn[Hh-1,t]) / Hh, summed sequentially in the
// storage type T (each partial sum rounded to T, as PyTorch does), then divided in T.
// `a` points at attn[..., 0, t]; heads are `head_stride` elements apart.
template <class T>
EVENTSPD_HD T topr_score(const T* a, int64_t head_stride, int32_t heads) {
    using A = Arith<T>;
    using F = typename A::acc;
    T s = a[0];
    for (int32_t h = 1; h < heads; ++h) {
        s = A::narrow(add_rn(A::widen(s), A::widen(a[h * head_stride])));
    }
    return A::narrow(div_rn(A::widen(s), static_cast<F>(heads)));
}

// Ranking rule (a total order): higher score first; equal scores keep ascending token index
// (ONNX TopK's rule, and torch.sort(stable=True, descending=True)); NaN ranks above every
// number (torch.sort treats NaN as the largest value), NaNs among themselves by index;
// -0.0 and +0.0 are equal.
template <class S>
EVENTSPD_HD bool topr_before(S sa, int32_t ia, S sb, int32_t ib) {
    const bool na = is_nan(sa), nb = is_nan(sb);
    if (na || nb) {
        if (na && nb) return ia < ib;
        return na;
    }
    if (sa > sb) return true;
    if (sa < sb) return false;
    return ia < ib;
}

// The same order as one unsigned 64-bit key: ascending key == ranking order. High word: the
// score mapped so that larger floats give smaller codes (NaN -> 0, -0.0 -> +0.0); low word:
// the token index. Keys of distinct tokens are distinct, so "the R smallest keys" is exact.
EVENTSPD_HD uint32_t topr_score_code(float s) {
    if (is_nan(s)) return 0u;
    if (s == 0.0f) s = 0.0f;  // -0.0 == +0.0
    const uint32_t u = float_bits(s);
    const uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ~ascending;
}

EVENTSPD_HD uint64_t topr_key(float score, int32_t index) {
    return (static_cast<uint64_t>(topr_score_code(score)) << 32) | static_cast<uint32_t>(index);
}

EVENTSPD_HD int32_t topr_key_index(uint64_t key) {
    return static_cast<int32_t>(key & 0xffffffffull);
}

// Pixel centre of L4 cell `index`: u = (index % grid_w + 0.5) * stride - 0.5, same for v with
// index // grid_w (fp32, rounded step by step as the reference does).
EVENTSPD_HD void topr_anchor(int32_t index, int32_t grid_w, int32_t stride, float* u, float* v) {
    const int32_t col = index % grid_w;
    const int32_t row = index / grid_w;
    *u = sub_rn(mul_rn(add_rn(static_cast<float>(col), 0.5f), static_cast<float>(stride)), 0.5f);
    *v = sub_rn(mul_rn(add_rn(static_cast<float>(row), 0.5f), static_cast<float>(stride)), 0.5f);
}

}  // namespace eventspd
