// Shared host/device arithmetic for the EventSPD kernels (CPU C++, CUDA, TensorRT).
//
// Everything here is torch-free and TensorRT-free. The *_rn helpers spell out each rounding
// step so that nvcc cannot contract a multiply and an add into one FMA: the coordinate and
// weight arithmetic then rounds exactly like the PyTorch reference ops (model_def/ops.py),
// on the CPU and on the GPU.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define EVENTSPD_HD __host__ __device__ __forceinline__
#define EVENTSPD_UNROLL _Pragma("unroll")
#else
#define EVENTSPD_HD inline
#define EVENTSPD_UNROLL
#endif

namespace eventspd {

// ---- correctly rounded arithmetic, never fused ------------------------------------------
EVENTSPD_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
EVENTSPD_HD double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}
EVENTSPD_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
EVENTSPD_HD double sub_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dsub_rn(a, b);
#else
    return a - b;
#endif
}
EVENTSPD_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
EVENTSPD_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}
EVENTSPD_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
EVENTSPD_HD double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __ddiv_rn(a, b);
#else
    return a / b;
#endif
}

EVENTSPD_HD float floor_(float x) {
#if defined(__CUDA_ARCH__)
    return floorf(x);
#else
    return std::floor(x);
#endif
}
EVENTSPD_HD double floor_(double x) {
#if defined(__CUDA_ARCH__)
    return ::floor(x);
#else
    return std::floor(x);
#endif
}
EVENTSPD_HD float exp_(float x) {
#if defined(__CUDA_ARCH__)
    return expf(x);
#else
    return std::exp(x);
#endif
}
EVENTSPD_HD double exp_(double x) {
#if defined(__CUDA_ARCH__)
    return ::exp(x);
#else
    return std::exp(x);
#endif
}

template <class F>
EVENTSPD_HD bool is_nan(F x) {
    return x != x;
}

template <class F>
EVENTSPD_HD bool is_finite(F x) {
#if defined(__CUDA_ARCH__)
    return isfinite(x);
#else
    return std::isfinite(x);
#endif
}

EVENTSPD_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    uint32_t u;
    std::memcpy(&u, &x, sizeof(u));
    return u;
#endif
}

// PyTorch's clamp(x, lo, hi) = min(max(x, lo), hi); NaN never reaches it here.
template <class F>
EVENTSPD_HD F clamp_(F x, F lo, F hi) {
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

// ---- storage-type arithmetic ------------------------------------------------------------
// Arith<T>: how a storage type T widens to its compute type and rounds back. PyTorch computes
// half arithmetic in float and rounds each result to half; the kernels do the same. The CPU
// build specialises Arith<c10::Half> next to its torch glue.
template <class T>
struct Arith;

template <>
struct Arith<float> {
    using acc = float;
    EVENTSPD_HD static float widen(float x) { return x; }
    EVENTSPD_HD static float narrow(float x) { return x; }
};

template <>
struct Arith<double> {
    using acc = double;
    EVENTSPD_HD static double widen(double x) { return x; }
    EVENTSPD_HD static double narrow(double x) { return x; }
};

#if defined(__CUDACC__)
template <>
struct Arith<__half> {
    using acc = float;
    EVENTSPD_HD static float widen(__half x) { return __half2float(x); }
    EVENTSPD_HD static __half narrow(float x) { return __float2half_rn(x); }
};
#endif

}  // namespace eventspd
