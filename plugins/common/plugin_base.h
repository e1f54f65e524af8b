// Shared TensorRT boilerplate for the EventSPD plugins: one base class implementing
// IPluginV3 with its core/build/runtime capabilities, a creator template, field parsing and
// logging. Each plugin (<op>/plugin.h, <op>/plugin.cpp) states its own name, version, fields,
// shapes, types and enqueue. Torch-free.
#pragma once

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace eventspd {
namespace trt {

using namespace nvinfer1;

// Must match model_def.ops.PLUGIN_SPECS / PLUGIN_NAMESPACE (what the ONNX exporter writes).
constexpr char const* kPluginNamespace = "eventspd";

void log(ILogger::Severity severity, std::string const& message) noexcept;
// True where `problem` (a shape check's answer, "" for none) is one, after logging it as an error
// of `plugin`: configurePlugin (at build time) and enqueue then return -1.
bool reported(std::string const& problem, char const* plugin) noexcept;
void setLoggerFinder(ILoggerFinder* finder) noexcept;

// ---- PluginField parsing (ONNX INT -> kINT32; kINT64 and kFLOAT64 are accepted too) ----------
std::vector<int32_t> fieldInts(PluginField const& f);
float fieldFloat(PluginField const& f);
int32_t fieldInt(PluginField const& f);

// Calls visit(name, field) for every field of `fc`; throws when a required name is missing.
template <class Visit>
void readFields(PluginFieldCollection const* fc, std::vector<std::string> const& required, Visit visit) {
    if (fc == nullptr) throw std::invalid_argument("no plugin fields given");
    std::vector<bool> seen(required.size(), false);
    for (int32_t i = 0; i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        if (f.name == nullptr) continue;
        std::string const name(f.name);
        for (size_t j = 0; j < required.size(); ++j) {
            if (name == required[j]) {
                if (f.data == nullptr || f.length < 1) throw std::invalid_argument("field '" + name + "' is empty");
                visit(name, f);
                seen[j] = true;
            }
        }
    }
    for (size_t j = 0; j < required.size(); ++j)
        if (!seen[j]) throw std::invalid_argument("missing plugin field '" + required[j] + "'");
}

// ---- plugin base ---------------------------------------------------------------------------
class PluginBase : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
public:
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
            case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
            case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
            case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    int32_t configurePlugin(DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*,
                            int32_t) noexcept override {
        return 0;
    }

    int32_t onShapeChange(PluginTensorDesc const*, int32_t, PluginTensorDesc const*, int32_t) noexcept override {
        return 0;
    }

    IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override {
        try {
            mSerialFields.clear();
            addFields(mSerialFields);
        } catch (...) {  // out of memory for a few fields: TensorRT reports the null
            return nullptr;
        }
        mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialCollection.fields = mSerialFields.data();
        return &mSerialCollection;
    }

protected:
    PluginBase() = default;
    PluginBase(PluginBase const&) : mSerialFields(), mSerialCollection() {}
    // Appends this plugin's fields, pointing at its members (valid while the plugin lives).
    virtual void addFields(std::vector<PluginField>& fields) = 0;

    static bool linear(PluginTensorDesc const& d) { return d.format == TensorFormat::kLINEAR; }
    static bool floatOrHalf(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF; }

    // Reports a failed launch and returns TensorRT's error code for enqueue.
    int32_t launchStatus(cudaError_t err, char const* what) const noexcept {
        if (err == cudaSuccess) return 0;
        log(ILogger::Severity::kERROR, std::string(what) + ": " + cudaGetErrorString(err));
        return -1;
    }

private:
    std::vector<PluginField> mSerialFields;
    PluginFieldCollection mSerialCollection{};
};

// ---- creator -------------------------------------------------------------------------------
// Plugin must provide: static constexpr kName, kVersion; static std::vector<PluginField>
// fieldNames(); static IPluginV3* create(PluginFieldCollection const*) (throws on bad fields).
template <class Plugin>
class Creator : public IPluginCreatorV3One {
public:
    Creator() : mFields(Plugin::fieldNames()) {
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
    }

    char const* getPluginName() const noexcept override { return Plugin::kName; }
    char const* getPluginVersion() const noexcept override { return Plugin::kVersion; }
    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &mCollection; }

    IPluginV3* createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase) noexcept override {
        try {
            return Plugin::create(fc);
        } catch (std::exception const& e) {
            try {  // (the message itself may not find the memory; no exception may reach TensorRT)
                log(ILogger::Severity::kERROR, std::string(Plugin::kName) + " (" + (name ? name : "?") + "): " + e.what());
            } catch (...) {
            }
        } catch (...) {
        }
        return nullptr;
    }

private:
    std::vector<PluginField> mFields;
    PluginFieldCollection mCollection{};
};

}  // namespace trt
}  // namespace eventspd
