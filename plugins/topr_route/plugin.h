// TensorRT plugin (IPluginV3) of topr_route: EventSPDTopRRoute, namespace "eventspd".
// Name and version are this plugin's own (kName, kVersion below); they and the fields of
// plugin.cpp must match model_def.ops.PLUGIN_SPECS["topr_route"] (tests/test_plugin_sources.py
// checks). A change of fields or semantics bumps kVersion here, the version in PLUGIN_SPECS
// and the changelog of README.md.
#pragma once

#include <vector>

#include "common/plugin_base.h"

namespace eventspd {
namespace trt {

class ToprRoutePlugin final : public PluginBase {
public:
    static constexpr char const* kName = "EventSPDTopRRoute";
    static constexpr char const* kVersion = "1";
    static std::vector<PluginField> fieldNames();
    static IPluginV3* create(PluginFieldCollection const* fc);  // throws on bad fields

    ToprRoutePlugin(int32_t topR, int32_t gridW, int32_t gridH, int32_t stride);

    char const* getPluginName() const noexcept override { return kName; }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    IPluginV3* clone() noexcept override;
    int32_t getNbOutputs() const noexcept override { return 2; }
    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs,
                            int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
                            int32_t nbOutputs) noexcept override;
    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    void addFields(std::vector<PluginField>& fields) override;

private:
    // What is wrong with the attention weights' dims for this plugin ("" if nothing); a dynamic
    // dimension (-1, at build time) is not judged
    std::string shapeProblem(Dims const& attn) const;
    int32_t mTopR, mGridW, mGridH, mStride;
};

using ToprRouteCreator = Creator<ToprRoutePlugin>;

}  // namespace trt
}  // namespace eventspd
