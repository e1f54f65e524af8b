// EventSPDDeformRead: v2, v3, v4 [B, C, H_l, W_l] (fp32/fp16, same type), anchors [B, K, R, 2]
// fp32, offsets [B, K, R, heads, 3, M, 2] and logits [B, K, R, heads, 3, M] (fp32/fp16, same
// type) -> [B, K, R, C] in the value type. Field: strides (INT32[3]). See README.md.
#include "deform_read/plugin.h"

#include "deform_read/launch.h"

namespace eventspd {
namespace trt {

DeformReadPlugin::DeformReadPlugin(std::vector<int32_t> const& strides) {
    if (strides.size() != 3) throw std::invalid_argument("strides must hold 3 values (L2, L3, L4)");
    for (int l = 0; l < 3; ++l) {
        if (strides[l] < 1) throw std::invalid_argument("strides must be positive");
        mStrides[l] = strides[l];
    }
}

std::vector<PluginField> DeformReadPlugin::fieldNames() {
    return {PluginField("strides", nullptr, PluginFieldType::kINT32, 3)};
}

IPluginV3* DeformReadPlugin::create(PluginFieldCollection const* fc) {
    std::vector<int32_t> strides;
    readFields(fc, {"strides"}, [&](std::string const&, PluginField const& f) { strides = fieldInts(f); });
    return new DeformReadPlugin(strides);
}

void DeformReadPlugin::addFields(std::vector<PluginField>& fields) {
    fields.emplace_back("strides", mStrides, PluginFieldType::kINT32, 3);
}

IPluginV3* DeformReadPlugin::clone() noexcept {
    try {
        return new DeformReadPlugin(*this);
    } catch (...) {
        return nullptr;
    }
}

int32_t DeformReadPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                                             int32_t nbInputs) const noexcept {
    if (nbInputs != 6 || nbOutputs != 1 || !floatOrHalf(inputTypes[0])) return -1;
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t DeformReadPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
                                          DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept {
    if (nbInputs != 6 || nbOutputs != 1 || inputs[0].nbDims != 4 || inputs[4].nbDims != 7) return -1;
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[4].d[0];
    outputs[0].d[1] = inputs[4].d[1];
    outputs[0].d[2] = inputs[4].d[2];
    outputs[0].d[3] = inputs[0].d[1];
    return 0;
}

bool DeformReadPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                                 int32_t nbOutputs) noexcept {
    if (nbInputs != 6 || nbOutputs != 1 || pos < 0 || pos > 6) return false;
    PluginTensorDesc const& d = inOut[pos].desc;
    if (!linear(d)) return false;
    switch (pos) {
        case 0: return floatOrHalf(d.type);                              // v2
        case 1: case 2: case 6: return d.type == inOut[0].desc.type;     // v3, v4, output
        case 3: return d.type == DataType::kFLOAT;                       // anchors (pixels need fp32)
        case 4: return floatOrHalf(d.type);                              // offsets
        case 5: return d.type == inOut[4].desc.type;                     // logits
    }
    return false;
}

namespace {
// Fills the kernel arguments from the six input descriptors (shapes and types only).
bool fillArgs(Dims const* dims, DataType valueType, DataType paramType, int32_t const* strides,
              cuda::DeformReadArgs& a) {
    for (int l = 0; l < 3; ++l) {
        if (dims[l].nbDims != 4) return false;
        a.height[l] = static_cast<int32_t>(dims[l].d[2]);
        a.width[l] = static_cast<int32_t>(dims[l].d[3]);
        a.stride[l] = strides[l];
    }
    Dims const& off = dims[4];
    if (off.nbDims != 7 || off.d[4] != 3 || off.d[6] != 2) return false;
    a.value_type = valueType == DataType::kHALF ? cuda::DType::kFloat16 : cuda::DType::kFloat32;
    a.param_type = paramType == DataType::kHALF ? cuda::DType::kFloat16 : cuda::DType::kFloat32;
    a.batch = static_cast<int32_t>(off.d[0]);
    a.queries = static_cast<int32_t>(off.d[1]);
    a.top_r = static_cast<int32_t>(off.d[2]);
    a.heads = static_cast<int32_t>(off.d[3]);
    a.points = static_cast<int32_t>(off.d[5]);
    a.channels = static_cast<int32_t>(dims[0].d[1]);
    return a.heads > 0 && a.channels % a.heads == 0;
}

// fillArgs at the profile's maxima (build time: configurePlugin, getWorkspaceSize).
bool fillArgsAtMax(DynamicPluginTensorDesc const* in, int32_t const* strides, cuda::DeformReadArgs& a) {
    Dims dims[6];
    for (int i = 0; i < 6; ++i) dims[i] = in[i].max;
    return fillArgs(dims, in[0].desc.type, in[4].desc.type, strides, a);
}

constexpr char const* kBadShapes = "unexpected input shapes";
}  // namespace

size_t DeformReadPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                                          DynamicPluginTensorDesc const*, int32_t) const noexcept {
    cuda::DeformReadArgs a{};
    if (nbInputs != 6 || !fillArgsAtMax(inputs, mStrides, a)) return 0;
    return cuda::deform_read_workspace_size(a);
}

// The shapes are judged when the engine is built (at the profile's maxima), not only at the first
// enqueue on a GPU.
int32_t DeformReadPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                          DynamicPluginTensorDesc const*, int32_t) noexcept {
    cuda::DeformReadArgs a{};
    return nbInputs == 6 && !reported(fillArgsAtMax(in, mStrides, a) ? "" : kBadShapes, kName) ? 0 : -1;
}

int32_t DeformReadPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
                                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept {
    Dims dims[6];
    for (int i = 0; i < 6; ++i) dims[i] = inputDesc[i].dims;
    cuda::DeformReadArgs a{};
    if (reported(fillArgs(dims, inputDesc[0].type, inputDesc[4].type, mStrides, a) ? "" : kBadShapes, kName))
        return -1;
    for (int l = 0; l < 3; ++l) a.values[l] = inputs[l];
    a.anchors = static_cast<float const*>(inputs[3]);
    a.offsets = inputs[4];
    a.logits = inputs[5];
    a.out = outputs[0];
    return launchStatus(cuda::deform_read(a, workspace, stream), "EventSPDDeformRead");
}

}  // namespace trt
}  // namespace eventspd
