// Registration of the EventSPD creators: static (REGISTER_TENSORRT_PLUGIN, for
// `trtexec --staticPlugins` / `polygraphy --plugins`, which only dlopen the library) and the
// plugin-library entry points (getCreators / setLoggerFinder, for
// IPluginRegistry::loadLibrary and `trtexec --dynamicPlugins`).
#include "convnext_block/plugin.h"
#include "deform_read/plugin.h"
#include "event_splat/plugin.h"
#include "topr_route/plugin.h"

using eventspd::trt::ConvNeXtBlockCreator;
using eventspd::trt::DeformReadCreator;
using eventspd::trt::EventSplatCreator;
using eventspd::trt::ToprRouteCreator;

#if !defined(EVENTSPD_CUDA_EMULATION)
// (The CPU emulation, plugins/emulation/plugin_runtime.cpp, links no TensorRT library and so has no
// registry to register into; it finds the creators through getCreators, as loadLibrary does.)
REGISTER_TENSORRT_PLUGIN(ToprRouteCreator);
REGISTER_TENSORRT_PLUGIN(DeformReadCreator);
REGISTER_TENSORRT_PLUGIN(EventSplatCreator);
REGISTER_TENSORRT_PLUGIN(ConvNeXtBlockCreator);
#endif

extern "C" TENSORRTAPI nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static ToprRouteCreator sTopr;
    static DeformReadCreator sDeform;
    static EventSplatCreator sSplat;
    static ConvNeXtBlockCreator sBlock;
    static nvinfer1::IPluginCreatorInterface* const kCreators[] = {&sTopr, &sDeform, &sSplat, &sBlock};
    nbCreators = 4;
    return kCreators;
}

extern "C" TENSORRTAPI void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    eventspd::trt::setLoggerFinder(finder);
}
