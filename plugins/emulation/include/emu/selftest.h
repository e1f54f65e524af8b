// The CPU emulation's self-test kernels (plugins/emulation/selftest.cu).
#pragma once

#include "cuda_runtime_api.h"

namespace emu {
// Launches the self-test kernel `name` on in [256] -> out [272] floats; returns its launch error
// (cudaErrorInvalidValue for an unknown name).
cudaError_t selftest(const char* name, const float* in, float* out);
bool selftest_exists(const char* name);
// The emulated device's opt-in shared memory per block (runtime.cpp; declared here too so that nvcc,
// which compiles selftest.cu for plugins/kernel_resources.py, sees it).
int shared_optin_bytes();
}  // namespace emu
