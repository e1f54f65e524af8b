// TensorRT plugin (IPluginV3) of deform_read: EventSPDDeformRead, namespace "eventspd".
// Name and version are this plugin's own (kName, kVersion below); they and the fields of
// plugin.cpp must match model_def.ops.PLUGIN_SPECS["deform_read"] (tests/test_plugin_sources.py
// checks). A change of fields or semantics bumps kVersion here, the version in PLUGIN_SPECS
// and the changelog of README.md.
#pragma once

#include <vector>

#include "common/plugin_base.h"

namespace eventspd {
namespace trt {

class DeformReadPlugin final : public PluginBase {
public:
    static constexpr char const* kName = "EventSPDDeformRead";
    static constexpr char const* kVersion = "1";
    static std::vector<PluginField> fieldNames();
    static IPluginV3* create(PluginFieldCollection const* fc);  // throws on bad fields

    explicit DeformReadPlugin(std::vector<int32_t> const& strides);

    char const* getPluginName() const noexcept override { return kName; }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    IPluginV3* clone() noexcept override;
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* shapeInputs,
                            int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out,
                            int32_t nbOutputs) noexcept override;
    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc, void const* const* inputs,
                    void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

protected:
    void addFields(std::vector<PluginField>& fields) override;

private:
    int32_t mStrides[3];
};

using DeformReadCreator = Creator<DeformReadPlugin>;

}  // namespace trt
}  // namespace eventspd
