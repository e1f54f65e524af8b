// CPU emulation (plugins/emulation): the CUDA front ends' device guard. The emulated device is
// the host, so there is no device to switch to.
#pragma once

#include <c10/core/Device.h>

namespace c10 {
namespace cuda {
struct CUDAGuard {
    explicit CUDAGuard(c10::Device) {}
};
}  // namespace cuda
}  // namespace c10
