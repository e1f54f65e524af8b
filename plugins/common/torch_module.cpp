// The Python module plugins._C: importing it loads this library, which runs the registrations
// of every op's schema and kernels (<op>/cpu.cpp, and <op>/cuda.cpp in a CUDA build); the ops
// themselves live in torch.ops.eventspd_plugins.
#include <Python.h>

#include "convnext_block/arith.h"

static PyModuleDef eventspd_module = {PyModuleDef_HEAD_INIT, "_C",
                                      "EventSPD plugin kernels: see torch.ops.eventspd_plugins", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
    PyObject* m = PyModule_Create(&eventspd_module);
    if (m == nullptr) return nullptr;
#ifdef EVENTSPD_WITH_CUDA
    PyModule_AddIntConstant(m, "with_cuda", 1);
#else
    PyModule_AddIntConstant(m, "with_cuda", 0);
#endif
    // The fused ConvNeXt-V2 block's shape limits, so Python routes only blocks the kernels take.
    PyModule_AddIntConstant(m, "convnext_max_channels", eventspd::kBlockMaxChannels);
    PyModule_AddIntConstant(m, "convnext_max_hidden", eventspd::kBlockMaxHidden);
    PyModule_AddIntConstant(m, "convnext_max_kernel", eventspd::kBlockMaxKernel);
    PyModule_AddIntConstant(m, "convnext_max_taps", eventspd::kBlockMaxTaps);
    return m;
}
