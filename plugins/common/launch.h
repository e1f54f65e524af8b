// Host-side launcher basics shared by the EventSPD CUDA kernels. Torch-free and TensorRT-free:
// each op's <op>/launch.h declares its launcher (arguments struct + function), which the
// PyTorch extension (<op>/cuda.cpp) and the TensorRT plugin (<op>/plugin.cpp) both call with
// raw device pointers and a stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace eventspd {
namespace cuda {

enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1 };

inline size_t dtype_size(DType t) { return t == DType::kFloat16 ? 2 : 4; }

}  // namespace cuda
}  // namespace eventspd
