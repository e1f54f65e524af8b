// Included first by every kernel.cu of plugins/ that plugins/emulation compiles as C++: the
// standard headers the kernels use come in before __CUDACC__ is defined (so they see a plain
// host compiler), then the device-language emulation. __CUDA_ARCH__ is 900: the emulated device
// is an H100/H200, so sm_90-only paths (the splat's vector atomics) are the ones that run.
#pragma once

#include <math.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#define __CUDACC__ 1
#define __CUDA_ARCH__ 900

#include "cuda_runtime_api.h"
#include "emu/device.h"
#include "cuda_fp16.h"
#include "mma.h"
