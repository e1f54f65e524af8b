// torch.ops.eventspd_emu: the CUDA front ends of plugins/ (<op>/cuda.cpp) with their kernels
// (<op>/kernel.cu) compiled for the CPU emulation, under the same schemas as
// torch.ops.eventspd_plugins, plus the emulated device's controls.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include <string>

#include "convnext_block/check.h"
#include "deform_read/check.h"
#include "emu/control.h"
#include "emu/selftest.h"
#include "event_splat/check.h"
#include "topr_route/check.h"

namespace {
void reset(int64_t shared_optin_bytes, int64_t schedule_seed) {
    emu::reset(static_cast<int>(shared_optin_bytes), static_cast<uint64_t>(schedule_seed));
}
std::string launch_log() { return emu::launch_log(); }
std::string kernel_resources() { return emu::kernel_resources(); }
int64_t occupancy(const std::string& kernel, int64_t threads, int64_t dynamic_shared) {
    TORCH_CHECK(threads > 0 && threads <= 1 << 20 && dynamic_shared >= 0 && dynamic_shared <= 1 << 30,
                "occupancy: threads ", threads, " or dynamic_shared ", dynamic_shared, " out of range");
    const int blocks = emu::occupancy_of(kernel, static_cast<int>(threads), static_cast<int>(dynamic_shared));
    TORCH_CHECK(blocks >= 0, "occupancy: no single registered kernel named ", kernel);
    return blocks;
}

// One of selftest.cu's kernels on in = 0, 1, ..., 255: its output [272] (NaN where it wrote
// nothing), or the RuntimeError of its launch.
at::Tensor selftest(const std::string& name) {
    const auto in = at::arange(256, at::kFloat);
    auto out = at::full({272}, NAN, at::kFloat);
    const cudaError_t err = emu::selftest(name.c_str(), in.data_ptr<float>(), out.data_ptr<float>());
    TORCH_CHECK(err != cudaErrorInvalidValue || emu::selftest_exists(name.c_str()), "selftest: no kernel named ", name);
    TORCH_CHECK(err == cudaSuccess, "selftest ", name, ": ", cudaGetErrorString(err));
    return out;
}
}  // namespace

TORCH_LIBRARY(eventspd_emu, m) {
    m.def(eventspd::kToprRouteSchema);
    m.def(eventspd::kDeformReadSchema);
    m.def(eventspd::kEventSplatSchema);
    m.def(eventspd::kConvNeXtBlockSchema);
    m.def("reset(int shared_optin_bytes=0, int schedule_seed=0) -> ()", &reset);
    m.def("launch_log() -> str", &launch_log);
    m.def("kernel_resources() -> str", &kernel_resources);
    m.def("occupancy(str kernel, int threads, int dynamic_shared) -> int", &occupancy);
    m.def("selftest(str name) -> Tensor", &selftest);
}
