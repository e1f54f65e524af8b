// EventSPDTopRRoute: attn [B, K, heads, T] (fp32/fp16) -> indices [B, K, R] int32,
// anchors [B, K, R, 2] fp32. Fields: top_r, grid_w, grid_h, stride (INT32). See README.md.
#include "topr_route/plugin.h"

#include "topr_route/launch.h"

namespace eventspd {
namespace trt {

ToprRoutePlugin::ToprRoutePlugin(int32_t topR, int32_t gridW, int32_t gridH, int32_t stride)
    : mTopR(topR), mGridW(gridW), mGridH(gridH), mStride(stride) {
    if (topR < 0 || gridW < 1 || gridH < 1 || stride < 1 || topR > gridW * gridH)
        throw std::invalid_argument("need 0 <= top_r <= grid_w * grid_h and positive grid_w, grid_h, stride");
}

std::vector<PluginField> ToprRoutePlugin::fieldNames() {
    return {PluginField("top_r", nullptr, PluginFieldType::kINT32, 1),
            PluginField("grid_w", nullptr, PluginFieldType::kINT32, 1),
            PluginField("grid_h", nullptr, PluginFieldType::kINT32, 1),
            PluginField("stride", nullptr, PluginFieldType::kINT32, 1)};
}

IPluginV3* ToprRoutePlugin::create(PluginFieldCollection const* fc) {
    int32_t topR = 0, gridW = 0, gridH = 0, stride = 0;
    readFields(fc, {"top_r", "grid_w", "grid_h", "stride"}, [&](std::string const& name, PluginField const& f) {
        int32_t const v = fieldInt(f);
        if (name == "top_r") topR = v;
        if (name == "grid_w") gridW = v;
        if (name == "grid_h") gridH = v;
        if (name == "stride") stride = v;
    });
    return new ToprRoutePlugin(topR, gridW, gridH, stride);
}

void ToprRoutePlugin::addFields(std::vector<PluginField>& fields) {
    fields.emplace_back("top_r", &mTopR, PluginFieldType::kINT32, 1);
    fields.emplace_back("grid_w", &mGridW, PluginFieldType::kINT32, 1);
    fields.emplace_back("grid_h", &mGridH, PluginFieldType::kINT32, 1);
    fields.emplace_back("stride", &mStride, PluginFieldType::kINT32, 1);
}

IPluginV3* ToprRoutePlugin::clone() noexcept {
    try {
        return new ToprRoutePlugin(*this);
    } catch (...) {
        return nullptr;
    }
}

int32_t ToprRoutePlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                                            int32_t nbInputs) const noexcept {
    if (nbInputs != 1 || nbOutputs != 2 || !floatOrHalf(inputTypes[0])) return -1;
    outputTypes[0] = DataType::kINT32;
    outputTypes[1] = DataType::kFLOAT;
    return 0;
}

int32_t ToprRoutePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
                                         DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept {
    if (nbInputs != 1 || nbOutputs != 2 || inputs[0].nbDims != 4) return -1;
    outputs[0].nbDims = 3;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = inputs[0].d[1];
    outputs[0].d[2] = exprBuilder.constant(mTopR);
    outputs[1].nbDims = 4;
    outputs[1].d[0] = inputs[0].d[0];
    outputs[1].d[1] = inputs[0].d[1];
    outputs[1].d[2] = exprBuilder.constant(mTopR);
    outputs[1].d[3] = exprBuilder.constant(2);
    return 0;
}

bool ToprRoutePlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                                int32_t nbOutputs) noexcept {
    if (nbInputs != 1 || nbOutputs != 2 || pos < 0 || pos > 2) return false;
    PluginTensorDesc const& d = inOut[pos].desc;
    if (!linear(d)) return false;
    if (pos == 0) return floatOrHalf(d.type);
    return d.type == (pos == 1 ? DataType::kINT32 : DataType::kFLOAT);
}

std::string ToprRoutePlugin::shapeProblem(Dims const& attn) const {
    int64_t const tokens = static_cast<int64_t>(mGridW) * mGridH;
    if (attn.nbDims != 4) return "the attention weights must be [B, K, heads, T]";
    if (attn.d[3] >= 0 && attn.d[3] != tokens)
        return "the attention weights have " + std::to_string(attn.d[3]) + " tokens, grid_w * grid_h = " +
               std::to_string(tokens);
    return "";
}

// The shapes are judged when the engine is built, not only at its first enqueue on a GPU.
int32_t ToprRoutePlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                         DynamicPluginTensorDesc const*, int32_t) noexcept {
    if (nbInputs != 1) return -1;
    return reported(shapeProblem(in[0].desc.dims), kName) ? -1 : 0;
}

int32_t ToprRoutePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
                                 void* const* outputs, void*, cudaStream_t stream) noexcept {
    Dims const& d = inputDesc[0].dims;
    if (reported(shapeProblem(d), kName)) return -1;
    cuda::ToprRouteArgs a{};
    a.attn = inputs[0];
    a.attn_type = inputDesc[0].type == DataType::kHALF ? cuda::DType::kFloat16 : cuda::DType::kFloat32;
    a.queries = d.d[0] * d.d[1];
    a.heads = static_cast<int32_t>(d.d[2]);
    a.tokens = static_cast<int32_t>(d.d[3]);
    a.top_r = mTopR;
    a.grid_w = mGridW;
    a.stride = mStride;
    a.indices = static_cast<int32_t*>(outputs[0]);
    a.anchors = static_cast<float*>(outputs[1]);
    return launchStatus(cuda::topr_route(a, stream), "EventSPDTopRRoute");
}

}  // namespace trt
}  // namespace eventspd
