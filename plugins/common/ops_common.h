// Helpers shared by the CUDA front ends of torch.ops.eventspd_plugins (<op>/cuda.cpp): launch
// status, dtype and device checks. Each op's own argument checks are in <op>/check.h.
// Included only in a CUDA build of the extension.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "common/launch.h"

// Where the CUDA front ends register: torch.ops.eventspd_plugins' CUDA kernels, or, in the CPU
// emulation of the CUDA kernels (plugins/emulation builds cuda.cpp with EVENTSPD_CUDA_EMULATION),
// the CPU kernels of torch.ops.eventspd_emu, whose ops take CPU tensors as "device" memory.
#ifdef EVENTSPD_CUDA_EMULATION
#define EVENTSPD_CUDA_IMPL(m) TORCH_LIBRARY_IMPL(eventspd_emu, CPU, m)
#else
#define EVENTSPD_CUDA_IMPL(m) TORCH_LIBRARY_IMPL(eventspd_plugins, CUDA, m)
#endif

namespace eventspd {

inline void check_launch(cudaError_t err, const char* op) {
    TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

inline void check_no_double(const at::Tensor& t, const char* op) {
    TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf, op,
                      ": the CUDA kernels take float32 or float16 data (float64 is CPU-only), got ", t.scalar_type());
}

inline cuda::DType dtype_of(const at::Tensor& t) {
    return t.scalar_type() == at::kHalf ? cuda::DType::kFloat16 : cuda::DType::kFloat32;
}

inline void check_device(const at::Tensor& t, const at::Tensor& ref, const char* op) {
    TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": all tensors must be on ", ref.device(), ", got ", t.device());
}

}  // namespace eventspd
