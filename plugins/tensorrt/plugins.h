// The three EventSPD TensorRT plugins (IPluginV3). Names, versions and fields match
// model_def.ops.PLUGIN_SPECS; the namespace is "eventspd".
#pragma once

#include "eventspd/splat.h"
#include "plugin_base.h"

namespace eventspd {
namespace trt {

// Declares the per-plugin members every plugin overrides.
#define EVENTSPD_PLUGIN_COMMON(Class, Name)                                                                          \
public:                                                                                                               \
    static constexpr char const* kName = Name;                                                                        \
    static constexpr char const* kVersion = "1";                                                                      \
    static std::vector<PluginField> fieldNames();                                                                     \
    static IPluginV3* create(PluginFieldCollection const* fc);                                                        \
    char const* getPluginName() const noexcept override { return kName; }                                            \
    char const* getPluginVersion() const noexcept override { return kVersion; }                                      \
    IPluginV3* clone() noexcept override;                                                                             \
    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,                  \
                               int32_t nbInputs) const noexcept override;                                            \
    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs,                  \
                            int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,                              \
                            IExprBuilder& exprBuilder) noexcept override;                                             \
    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,               \
                                   int32_t nbOutputs) noexcept override;                                              \
    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs, \
                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;                    \
                                                                                                                      \
protected:                                                                                                            \
    void addFields(std::vector<PluginField>& fields) override;

class ToprRoutePlugin final : public PluginBase {
    EVENTSPD_PLUGIN_COMMON(ToprRoutePlugin, "EventSPDTopRRoute")
public:
    ToprRoutePlugin(int32_t topR, int32_t gridW, int32_t gridH, int32_t stride);
    int32_t getNbOutputs() const noexcept override { return 2; }

private:
    int32_t mTopR, mGridW, mGridH, mStride;
};

class DeformReadPlugin final : public PluginBase {
    EVENTSPD_PLUGIN_COMMON(DeformReadPlugin, "EventSPDDeformRead")
public:
    explicit DeformReadPlugin(std::vector<int32_t> const& strides);
    int32_t getNbOutputs() const noexcept override { return 1; }
    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

private:
    int32_t mStrides[3];
};

class EventSplatPlugin final : public PluginBase {
    EVENTSPD_PLUGIN_COMMON(EventSplatPlugin, "EventSPDEventSplat")
public:
    EventSplatPlugin(int32_t width, int32_t height, std::vector<int32_t> const& resolutions, float timeScale);
    int32_t getNbOutputs() const noexcept override { return 1; }

private:
    int32_t mWidth, mHeight;
    std::vector<int32_t> mResolutions;
    float mTimeScale;
    int32_t mNumLevels = 0;
    int64_t mTableRows = 0;
    F3Level mLevels[kMaxF3Levels];
};

#undef EVENTSPD_PLUGIN_COMMON

using ToprRouteCreator = Creator<ToprRoutePlugin>;
using DeformReadCreator = Creator<DeformReadPlugin>;
using EventSplatCreator = Creator<EventSplatPlugin>;

}  // namespace trt
}  // namespace eventspd
