// The CPU emulation's self-test kernels (plugins/emulation/selftest.cu).
#pragma once

#include "cuda_runtime_api.h"

namespace emu {
// Launches the self-test kernel `name` on in [256] -> out [272] floats; returns its launch error
// (cudaErrorInvalidValue for an unknown name).
cudaError_t selftest(const char* name, const float* in, float* out);
bool selftest_exists(const char* name);
}  // namespace emu
