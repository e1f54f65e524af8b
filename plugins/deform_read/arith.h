// deform_read: pixel -> level coordinate, bilinear corners with zero padding, softmax.
#pragma once

#include "common/common.h"

namespace eventspd {

// Level-l sampling coordinate of an anchor pixel plus an offset in level-l cells (eq. 17):
// x = (u + 0.5) / stride - 0.5 + offset (align_corners=False pixel centres).
template <class F>
EVENTSPD_HD F level_coord(F anchor, int32_t stride, F offset) {
    return add_rn(sub_rn(div_rn(add_rn(anchor, F(0.5)), static_cast<F>(stride)), F(0.5)), offset);
}

// The four bilinear corners of (x, y) on an H x W map, in the order (dy, dx) = (0,0), (0,1),
// (1,0), (1,1). A corner outside the map gets index -1 and weight 0 (zero padding, as
// grid_sample padding_mode="zeros"). Non-finite coordinates read nothing: they are moved to
// (-2, -2). Coordinates are clamped to [-2, W+1] x [-2, H+1] first: every in-map result is
// unchanged, far-away points land where all four corners are outside, and floor() cannot
// overflow the int32 conversion.
template <class F>
struct Corners {
    int32_t index[4];
    F weight[4];
};

template <class F>
EVENTSPD_HD Corners<F> bilinear_corners(F x, F y, int32_t H, int32_t W) {
    if (!(is_finite(x) && is_finite(y))) {
        x = F(-2);
        y = F(-2);
    }
    x = clamp_(x, F(-2), static_cast<F>(W) + F(1));
    y = clamp_(y, F(-2), static_cast<F>(H) + F(1));
    const F x0f = floor_(x);
    const F y0f = floor_(y);
    const F fx = sub_rn(x, x0f);
    const F fy = sub_rn(y, y0f);
    const F gx = sub_rn(F(1), fx);
    const F gy = sub_rn(F(1), fy);
    const int32_t x0 = static_cast<int32_t>(x0f);
    const int32_t y0 = static_cast<int32_t>(y0f);
    Corners<F> c;
    const F w[4] = {mul_rn(gx, gy), mul_rn(fx, gy), mul_rn(gx, fy), mul_rn(fx, fy)};
EVENTSPD_UNROLL
    for (int k = 0; k < 4; ++k) {
        const int32_t xi = x0 + (k & 1);
        const int32_t yi = y0 + (k >> 1);
        const bool inside = xi >= 0 && xi < W && yi >= 0 && yi < H;
        c.index[k] = inside ? yi * W + xi : -1;
        c.weight[k] = inside ? w[k] : F(0);
    }
    return c;
}

// Softmax statistics over n logits (eq. 19): max and sum of exp(x - max), in F. The weight
// of entry i is exp(x_i - max) / sum. NaN propagates like torch.softmax.
template <class F>
struct SoftmaxStats {
    F max;
    F sum;
};

template <class F, class Load>
EVENTSPD_HD SoftmaxStats<F> softmax_stats(int32_t n, Load load) {
    F mx = load(0);
    for (int32_t i = 1; i < n; ++i) {
        const F v = load(i);
        mx = (v > mx || is_nan(v)) ? v : mx;
    }
    F sum = F(0);
    for (int32_t i = 0; i < n; ++i) sum = add_rn(sum, exp_(sub_rn(load(i), mx)));
    return {mx, sum};
}

template <class F>
EVENTSPD_HD F softmax_weight(F logit, SoftmaxStats<F> st) {
    return div_rn(exp_(sub_rn(logit, st.max)), st.sum);
}

}  // namespace eventspd
