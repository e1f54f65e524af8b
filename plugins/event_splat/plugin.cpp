// EventSPDEventSplat: events [N, 4] fp32, table [rows, 2] fp32/fp16 -> grid [1, 2L, height,
// width] fp32. Fields: width, height (INT32), resolutions (INT32[3L]), time_scale (FLOAT32).
// See README.md.
#include "event_splat/plugin.h"

#include <cmath>

#include "event_splat/launch.h"

namespace eventspd {
namespace trt {

EventSplatPlugin::EventSplatPlugin(int32_t width, int32_t height, std::vector<int32_t> const& resolutions,
                                   float timeScale)
    : mWidth(width), mHeight(height), mResolutions(resolutions), mTimeScale(timeScale) {
    if (width < 1 || height < 1) throw std::invalid_argument("width and height must be positive");
    if (!(std::isfinite(timeScale) && timeScale >= 0.0f)) throw std::invalid_argument("time_scale must be finite, >= 0");
    if (resolutions.empty() || resolutions.size() % 3 != 0)
        throw std::invalid_argument("resolutions must be (Rx, Ry, Rt) triples");
    std::vector<int64_t> flat(resolutions.begin(), resolutions.end());
    mNumLevels = static_cast<int32_t>(resolutions.size() / 3);
    mTableRows = f3_levels(flat.data(), mNumLevels, mLevels);
    if (mTableRows < 0) throw std::invalid_argument("resolutions: at most 8 triples of positive numbers");
}

std::vector<PluginField> EventSplatPlugin::fieldNames() {
    return {PluginField("width", nullptr, PluginFieldType::kINT32, 1),
            PluginField("height", nullptr, PluginFieldType::kINT32, 1),
            PluginField("resolutions", nullptr, PluginFieldType::kINT32, 0),
            PluginField("time_scale", nullptr, PluginFieldType::kFLOAT32, 1)};
}

IPluginV3* EventSplatPlugin::create(PluginFieldCollection const* fc) {
    int32_t width = 0, height = 0;
    std::vector<int32_t> res;
    float timeScale = 0.0f;
    readFields(fc, {"width", "height", "resolutions", "time_scale"}, [&](std::string const& name, PluginField const& f) {
        if (name == "width") width = fieldInt(f);
        if (name == "height") height = fieldInt(f);
        if (name == "resolutions") res = fieldInts(f);
        if (name == "time_scale") timeScale = fieldFloat(f);
    });
    return new EventSplatPlugin(width, height, res, timeScale);
}

void EventSplatPlugin::addFields(std::vector<PluginField>& fields) {
    fields.emplace_back("width", &mWidth, PluginFieldType::kINT32, 1);
    fields.emplace_back("height", &mHeight, PluginFieldType::kINT32, 1);
    fields.emplace_back("resolutions", mResolutions.data(), PluginFieldType::kINT32,
                        static_cast<int32_t>(mResolutions.size()));
    fields.emplace_back("time_scale", &mTimeScale, PluginFieldType::kFLOAT32, 1);
}

IPluginV3* EventSplatPlugin::clone() noexcept {
    try {
        return new EventSplatPlugin(*this);
    } catch (...) {
        return nullptr;
    }
}

int32_t EventSplatPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const*,
                                             int32_t nbInputs) const noexcept {
    if (nbInputs != 2 || nbOutputs != 1) return -1;
    outputTypes[0] = DataType::kFLOAT;
    return 0;
}

int32_t EventSplatPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
                                          DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept {
    if (nbInputs != 2 || nbOutputs != 1 || inputs[0].nbDims != 2) return -1;
    outputs[0].nbDims = 4;
    outputs[0].d[0] = exprBuilder.constant(1);
    outputs[0].d[1] = exprBuilder.constant(2 * mNumLevels);
    outputs[0].d[2] = exprBuilder.constant(mHeight);
    outputs[0].d[3] = exprBuilder.constant(mWidth);
    return 0;
}

bool EventSplatPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                                 int32_t nbOutputs) noexcept {
    if (nbInputs != 2 || nbOutputs != 1 || pos < 0 || pos > 2) return false;
    PluginTensorDesc const& d = inOut[pos].desc;
    if (!linear(d)) return false;
    if (pos == 1) return floatOrHalf(d.type);  // table
    return d.type == DataType::kFLOAT;        // events (pixel coordinates need fp32), grid
}

size_t EventSplatPlugin::getWorkspaceSize(DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*,
                                          int32_t) const noexcept {
    return cuda::event_splat_workspace_size(mNumLevels, mWidth, mHeight);  // the channels-last scratch grid
}

std::string EventSplatPlugin::shapeProblem(Dims const& e, Dims const& t) const {
    auto is = [](int64_t d, int64_t expected) { return d < 0 || d == expected; };
    if (e.nbDims != 2 || !is(e.d[1], 4) || t.nbDims != 2 || !is(t.d[0], mTableRows) || !is(t.d[1], 2))
        return "events must be [N, 4] and the table [" + std::to_string(mTableRows) + ", 2] for these resolutions";
    return "";
}

// The shapes are judged when the engine is built, not only at its first enqueue on a GPU.
int32_t EventSplatPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                          DynamicPluginTensorDesc const*, int32_t) noexcept {
    if (nbInputs != 2) return -1;
    return reported(shapeProblem(in[0].desc.dims, in[1].desc.dims), kName) ? -1 : 0;
}

int32_t EventSplatPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
                                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept {
    Dims const& e = inputDesc[0].dims;
    if (reported(shapeProblem(e, inputDesc[1].dims), kName)) return -1;
    cuda::EventSplatArgs a{};
    a.events = static_cast<float const*>(inputs[0]);
    a.num_events = e.d[0];
    a.table = inputs[1];
    a.table_type = inputDesc[1].type == DataType::kHALF ? cuda::DType::kFloat16 : cuda::DType::kFloat32;
    for (int l = 0; l < mNumLevels; ++l) a.levels[l] = mLevels[l];
    a.num_levels = mNumLevels;
    a.width = mWidth;
    a.height = mHeight;
    a.time_scale = mTimeScale;
    a.grid = static_cast<float*>(outputs[0]);
    return launchStatus(cuda::event_splat(a, workspace, stream), "EventSPDEventSplat");
}

}  // namespace trt
}  // namespace eventspd
