// CPU emulation of the cuda_fp16.h subset the EventSPD kernels use (plugins/emulation): __half
// and __half2 as IEEE binary16 bit patterns; conversions go through the compiler's _Float16,
// which rounds to nearest even as __float2half_rn does. No half arithmetic: the kernels widen
// to float first.
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda_runtime_api.h"
#include "emu/device.h"

struct __half {
    uint16_t bits;
};
struct alignas(4) __half2 {
    __half x, y;
};

inline __half __float2half_rn(float f) {
    const _Float16 h = static_cast<_Float16>(f);
    __half r;
    std::memcpy(&r.bits, &h, sizeof(r.bits));
    return r;
}
namespace emu {
// Every fp16 value as float, once: the compiler's _Float16 -> float is a library call without
// F16C, and the emulated WMMA tiles widen 256 values per load.
struct HalfToFloat {
    float v[65536];
    HalfToFloat() {
        for (uint32_t i = 0; i < 65536; ++i) {
            const uint16_t bits = static_cast<uint16_t>(i);
            _Float16 h;
            std::memcpy(&h, &bits, sizeof(h));
            v[i] = static_cast<float>(h);
        }
    }
};
inline const HalfToFloat& half_to_float() {
    static const HalfToFloat table;
    return table;
}
}  // namespace emu

inline float __half2float(__half h) { return emu::half_to_float().v[h.bits]; }
inline __half2 __halves2half2(__half lo, __half hi) { return __half2{lo, hi}; }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__float2half_rn(lo), __float2half_rn(hi)}; }
inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
