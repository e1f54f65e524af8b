// EventSPDConvNeXtBlock: x [B, C, H, W] (fp32 in TensorRT's kHWC format, or fp16 in kHWC8 with C a
// multiple of 8: both are plain NHWC memory, what the kernels read; TensorRT reformats around the
// layer), dw_weight [C, 1, k, k], dw_bias [C], ln_weight [C], ln_bias [C], w1 [E, C], b1 [E],
// gamma [E numbers], beta [E numbers], w2 [C, E], b2 [C] (fp32, linear) -> out like x.
// Fields: channels (INT32, = C, the ONNX function body's depthwise group count), eps (FLOAT32,
// LayerNorm's). See README.md.
#include "convnext_block/plugin.h"

#include <cmath>
#include <string>

#include "convnext_block/launch.h"

namespace eventspd {
namespace trt {

ConvNeXtBlockPlugin::ConvNeXtBlockPlugin(int32_t channels, float eps) : mChannels(channels), mEps(eps) {
    if (channels < 1 || channels > kBlockMaxChannels)
        throw std::invalid_argument("channels must be 1.." + std::to_string(kBlockMaxChannels));
    if (!(std::isfinite(eps) && eps > 0.0f)) throw std::invalid_argument("eps must be finite and > 0");
}

std::vector<PluginField> ConvNeXtBlockPlugin::fieldNames() {
    return {PluginField("channels", nullptr, PluginFieldType::kINT32, 1),
            PluginField("eps", nullptr, PluginFieldType::kFLOAT32, 1)};
}

IPluginV3* ConvNeXtBlockPlugin::create(PluginFieldCollection const* fc) {
    int32_t channels = 0;
    float eps = 0.0f;
    readFields(fc, {"channels", "eps"}, [&](std::string const& name, PluginField const& f) {
        if (name == "channels") channels = fieldInt(f);
        if (name == "eps") eps = fieldFloat(f);
    });
    return new ConvNeXtBlockPlugin(channels, eps);
}

void ConvNeXtBlockPlugin::addFields(std::vector<PluginField>& fields) {
    fields.emplace_back("channels", &mChannels, PluginFieldType::kINT32, 1);
    fields.emplace_back("eps", &mEps, PluginFieldType::kFLOAT32, 1);
}

IPluginV3* ConvNeXtBlockPlugin::clone() noexcept {
    try {
        return new ConvNeXtBlockPlugin(*this);
    } catch (...) {
        return nullptr;
    }
}

int32_t ConvNeXtBlockPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                                                int32_t nbInputs) const noexcept {
    if (nbInputs != kInputs || nbOutputs != 1 || !floatOrHalf(inputTypes[0])) return -1;
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t ConvNeXtBlockPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
                                             DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept {
    if (nbInputs != kInputs || nbOutputs != 1 || inputs[0].nbDims != 4) return -1;
    outputs[0] = inputs[0];
    return 0;
}

bool ConvNeXtBlockPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                                    int32_t nbInputs, int32_t nbOutputs) noexcept {
    if (nbInputs != kInputs || nbOutputs != 1 || pos < 0 || pos > kInputs) return false;
    PluginTensorDesc const& d = inOut[pos].desc;
    if (pos == 0) {  // x: channel-last memory without padding
        if (d.dims.nbDims != 4) return false;
        if (d.type == DataType::kFLOAT) return d.format == TensorFormat::kHWC;
        return d.type == DataType::kHALF && d.format == TensorFormat::kHWC8 && d.dims.d[1] % 8 == 0;
    }
    if (pos == kInputs) return d.type == inOut[0].desc.type && d.format == inOut[0].desc.format;  // out
    return d.type == DataType::kFLOAT && linear(d);                                              // weights
}

namespace {
// The kernel's shape from the input dimensions (x [B, C, H, W], dw_weight [C, 1, k, k], w1 [E, C],
// w2 [C, E], the vectors' sizes); an empty string when it fits, else what is wrong.
std::string fillShape(Dims const* dims, int32_t channels, cuda::ConvNeXtBlockTorchArgs& a) {
    Dims const& x = dims[0];
    Dims const& dw = dims[1];
    Dims const& w1 = dims[5];
    Dims const& w2 = dims[9];
    if (x.nbDims != 4 || dw.nbDims != 4 || w1.nbDims != 2 || w2.nbDims != 2) return "x, dw_weight, w1, w2 ranks";
    a.batch = static_cast<int32_t>(x.d[0]);
    a.channels = static_cast<int32_t>(x.d[1]);
    a.height = static_cast<int32_t>(x.d[2]);
    a.width = static_cast<int32_t>(x.d[3]);
    a.hidden_channels = static_cast<int32_t>(w1.d[0]);
    a.kernel = static_cast<int32_t>(dw.d[3]);
    const int64_t C = a.channels, E = a.hidden_channels, k = a.kernel;
    if (C != channels) return "x has " + std::to_string(C) + " channels, the node says " + std::to_string(channels);
    if (C > kBlockMaxChannels || E < 1 || E > kBlockMaxHidden || k % 2 == 0 || k > kBlockMaxKernel ||
        k * k * C > kBlockMaxTaps)
        return "C " + std::to_string(C) + ", E " + std::to_string(E) + ", k " + std::to_string(k) +
               " exceed the kernels' limits (C <= " + std::to_string(kBlockMaxChannels) + ", E <= " +
               std::to_string(kBlockMaxHidden) + ", odd k <= " + std::to_string(kBlockMaxKernel) +
               ", k*k*C <= " + std::to_string(kBlockMaxTaps) + ")";
    if (dw.d[0] != C || dw.d[1] != 1 || dw.d[2] != k || w1.d[1] != C || w2.d[0] != C || w2.d[1] != E)
        return "dw_weight, w1 or w2 do not match x's channels";
    int64_t const vector_sizes[] = {C, C, C, E, E, E, C};  // dw_bias, ln_weight, ln_bias, b1, gamma, beta, b2
    int32_t const vector_inputs[] = {2, 3, 4, 6, 7, 8, 10};
    for (int i = 0; i < 7; ++i) {
        int64_t n = 1;
        for (int j = 0; j < dims[vector_inputs[i]].nbDims; ++j) n *= dims[vector_inputs[i]].d[j];
        if (n != vector_sizes[i]) return "input " + std::to_string(vector_inputs[i]) + " does not hold " +
                                         std::to_string(vector_sizes[i]) + " numbers";
    }
    if (a.batch < 0 || a.batch > 65535) return "batch must be 0..65535";
    return "";
}

// fillShape from the build-time maxima (configurePlugin, getWorkspaceSize) or the run's dimensions.
std::string shapeOf(DynamicPluginTensorDesc const* in, int32_t channels, cuda::ConvNeXtBlockTorchArgs& a) {
    Dims dims[ConvNeXtBlockPlugin::kInputs];
    for (int i = 0; i < ConvNeXtBlockPlugin::kInputs; ++i) dims[i] = in[i].max;
    return fillShape(dims, channels, a);
}
std::string shapeOf(PluginTensorDesc const* in, int32_t channels, cuda::ConvNeXtBlockTorchArgs& a) {
    Dims dims[ConvNeXtBlockPlugin::kInputs];
    for (int i = 0; i < ConvNeXtBlockPlugin::kInputs; ++i) dims[i] = in[i].dims;
    return fillShape(dims, channels, a);
}

}  // namespace

int32_t ConvNeXtBlockPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                             DynamicPluginTensorDesc const*, int32_t) noexcept {
    cuda::ConvNeXtBlockTorchArgs a{};
    return nbInputs == kInputs && !reported(shapeOf(in, mChannels, a), kName) ? 0 : -1;
}

size_t ConvNeXtBlockPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                                             DynamicPluginTensorDesc const*, int32_t) const noexcept {
    cuda::ConvNeXtBlockTorchArgs a{};
    if (nbInputs != kInputs || !shapeOf(inputs, mChannels, a).empty()) return 0;
    return cuda::convnext_block_workspace_size(
        inputs[0].desc.type == DataType::kHALF ? cuda::DType::kFloat16 : cuda::DType::kFloat32, a.batch, a.height,
        a.width, a.channels, a.hidden_channels, a.kernel);
}

int32_t ConvNeXtBlockPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
                                     void const* const* inputs, void* const* outputs, void* workspace,
                                     cudaStream_t stream) noexcept {
    cuda::ConvNeXtBlockTorchArgs a{};
    if (reported(shapeOf(inputDesc, mChannels, a), kName)) return -1;
    a.type = inputDesc[0].type == DataType::kHALF ? cuda::DType::kFloat16 : cuda::DType::kFloat32;
    a.eps = mEps;
    a.x = inputs[0];
    a.out = outputs[0];
    float const* const* w = reinterpret_cast<float const* const*>(inputs);
    a.dw_weight = w[1];
    a.dw_bias = w[2];
    a.ln_weight = w[3];
    a.ln_bias = w[4];
    a.w1 = w[5];
    a.b1 = w[6];
    a.gamma = w[7];
    a.beta = w[8];
    a.w2 = w[9];
    a.b2 = w[10];
    return launchStatus(cuda::convnext_block_from_torch_layout(a, workspace, stream), kName);
}

}  // namespace trt
}  // namespace eventspd
