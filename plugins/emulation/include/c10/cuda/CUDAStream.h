// CPU emulation (plugins/emulation): the CUDA front ends' current stream. The emulated launches
// run synchronously, so every stream is the same null token.
#pragma once

#include "cuda_runtime_api.h"

namespace c10 {
namespace cuda {
struct CUDAStream {
    cudaStream_t stream() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream() { return {}; }
}  // namespace cuda
}  // namespace c10
