// Registration of the EventSPD creators: static (at dlopen, for `trtexec --staticPlugins` /
// `polygraphy --plugins`, which only dlopen the library, and the C++ example) and the
// plugin-library entry points (getCreators / setLoggerFinder, for
// IPluginRegistry::loadLibrary and `trtexec --dynamicPlugins`). loadLibrary works on a runtime's
// or builder's own registry; on the global one it returns null, because the dlopen it makes has
// registered these creators there already (measured with TensorRT-RTX 1.7.1, README).
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
namespace {
// REGISTER_TENSORRT_PLUGIN's registrar, but under the creators' own namespace (kPluginNamespace):
// TensorRT's macro registers under "", and then the registry's keyed lookup getCreator(name,
// version, "eventspd") -- the one a plan's plugin layers are deserialised through -- finds nothing
// after a plain dlopen (measured with TensorRT-RTX 1.7: only getAllCreators listed them).
template <typename Creator>
class NamespacedRegistrar {
public:
    NamespacedRegistrar() { getPluginRegistry()->registerCreator(instance_, eventspd::trt::kPluginNamespace); }

private:
    Creator instance_{};
};

// (not const: TensorRT calls the registered creators' non-const methods)
NamespacedRegistrar<ToprRouteCreator> sToprRegistrar;
NamespacedRegistrar<DeformReadCreator> sDeformRegistrar;
NamespacedRegistrar<EventSplatCreator> sSplatRegistrar;
NamespacedRegistrar<ConvNeXtBlockCreator> sBlockRegistrar;
}  // namespace
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
