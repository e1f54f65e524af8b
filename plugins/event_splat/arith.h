// event_splat: event validity, pixel, F^3 grid normalisation, corner rows and weights.
#pragma once

#include "common/common.h"

namespace eventspd {

constexpr int32_t kMaxF3Levels = 8;  // 16 output channels at most

struct F3Level {
    int32_t rx, ry, rt;  // grid resolution (cells) per axis
    int32_t row_offset;  // first table row of this level; the level has (rx+1)(ry+1)(rt+1) rows
};

// An event is kept when x, y, t are finite, 0 <= x < width and 0 <= y < height. Then
// (px, py) = floor(x, y), xn = px / width, yn = py / height,
// tn = min(clamp(t, 0, 1) * time_scale, 1). In F = the events' compute type (fp32, or fp64
// for fp64 events), as the reference.
template <class F>
struct F3Event {
    int32_t px, py;
    F xn, yn, tn;
};

template <class F>
EVENTSPD_HD bool f3_event(F x, F y, F t, int32_t width, int32_t height, F time_scale, F3Event<F>* e) {
    const bool keep = is_finite(x) && is_finite(y) && is_finite(t) && x >= F(0) &&
                      x < static_cast<F>(width) && y >= F(0) && y < static_cast<F>(height);
    if (!keep) return false;
    e->px = static_cast<int32_t>(floor_(x));
    e->py = static_cast<int32_t>(floor_(y));
    e->xn = div_rn(static_cast<F>(e->px), static_cast<F>(width));
    e->yn = div_rn(static_cast<F>(e->py), static_cast<F>(height));
    const F ts = mul_rn(clamp_(t, F(0), F(1)), time_scale);
    e->tn = ts > F(1) ? F(1) : ts;
    return true;
}

// s = coord * res, i0 = min(floor(s), res - 1), f = s - i0.
template <class F>
EVENTSPD_HD void f3_axis(F coord, int32_t res, int32_t* i0, F* f) {
    const F s = mul_rn(coord, static_cast<F>(res));
    F fl = floor_(s);
    const F last = static_cast<F>(res - 1);
    fl = fl > last ? last : fl;
    *i0 = static_cast<int32_t>(fl);
    *f = sub_rn(s, fl);
}

// The 8 corners (dt, dy, dx) in {0,1}^3, dx fastest: table row
// offset + (ix+dx) + (rx+1) * ((iy+dy) + (ry+1) * (it+dt)) and weight (wx * wy) * wt with
// w = 1 - f (d = 0) or f (d = 1).
template <class F>
EVENTSPD_HD void f3_corners(const F3Event<F>& e, const F3Level& lv, int32_t rows[8], F w[8]) {
    int32_t ix, iy, it;
    F fx, fy, ft;
    f3_axis(e.xn, lv.rx, &ix, &fx);
    f3_axis(e.yn, lv.ry, &iy, &fy);
    f3_axis(e.tn, lv.rt, &it, &ft);
    const F gx = sub_rn(F(1), fx), gy = sub_rn(F(1), fy), gt = sub_rn(F(1), ft);
    EVENTSPD_UNROLL
    for (int k = 0; k < 8; ++k) {
        const int32_t dx = k & 1, dy = (k >> 1) & 1, dt = k >> 2;
        rows[k] = lv.row_offset + (ix + dx) + (lv.rx + 1) * ((iy + dy) + (lv.ry + 1) * (it + dt));
        w[k] = mul_rn(mul_rn(dx ? fx : gx, dy ? fy : gy), dt ? ft : gt);
    }
}

// Sum of the 8 corner products in the order of the reference's `.sum(dim=2)` on the CPU
// (torch 2.13 reduces a dim of 8 with four partial sums: ((p0+p4) + (p1+p5)) + (p2+p6)) +
// (p3+p7)); the kernels use the same order so CPU results are bit-identical.
template <class F>
EVENTSPD_HD F f3_sum8(const F p[8]) {
    return add_rn(add_rn(add_rn(add_rn(p[0], p[4]), add_rn(p[1], p[5])), add_rn(p[2], p[6])), add_rn(p[3], p[7]));
}

// Fills `levels` from flat (rx, ry, rt) triples; returns the table row count, or -1 when a
// resolution is < 1 or there are more than kMaxF3Levels levels.
inline int64_t f3_levels(const int64_t* flat, int32_t n_levels, F3Level* levels) {
    if (n_levels < 0 || n_levels > kMaxF3Levels) return -1;
    int64_t offset = 0;
    for (int32_t l = 0; l < n_levels; ++l) {
        const int64_t rx = flat[3 * l], ry = flat[3 * l + 1], rt = flat[3 * l + 2];
        if (rx < 1 || ry < 1 || rt < 1) return -1;
        levels[l] = {static_cast<int32_t>(rx), static_cast<int32_t>(ry), static_cast<int32_t>(rt),
                     static_cast<int32_t>(offset)};
        offset += (rx + 1) * (ry + 1) * (rt + 1);
        if (offset > INT32_MAX) return -1;
    }
    return offset;
}

}  // namespace eventspd
