// The TensorRT plugins of plugins/ (<op>/plugin.cpp, common/plugin_base.cpp, common/registration.cpp)
// driven through their IPluginV3 lifecycle the way TensorRT drives it, with their kernels in the
// CPU emulation: torch.ops.eventspd_emu.plugin_run. Built into the emulation library only when
// TensorRT 10/11 headers are given (plugins/emulation/__init__.py); no TensorRT library is linked, so
// everything TensorRT itself would provide (the expression builder, the logger, the resource
// context, format negotiation, the serialisation round trip, workspace planning) is done here.
//
// One call = one single-layer "engine" built and run:
//   build:   getCreators() -> the creator of (name, version, namespace); the node's attributes
//            that the creator lists in getFieldNames() become PluginFields (as TensorRT's ONNX
//            parser does); createPlugin(kBUILD); getNbOutputs, getOutputDataTypes,
//            getOutputShapes (folded expressions, the dynamic dimensions non-constant, evaluated at
//            the run's shape and at the profile maximum); a format for every position (kLINEAR,
//            else kHWC, else kHWC8 with padded channels: the first that supportsFormatCombination
//            accepts, position by position; TensorRT would time the candidates instead);
//            configurePlugin; getWorkspaceSize at the profile maximum; getFieldsToSerialize,
//            copied byte for byte.
//   runtime: createPlugin(kRUNTIME) from the copied fields; attachToContext; onShapeChange;
//            enqueue with inputs in the negotiated formats, outputs filled with a poison value
//            (NaN / 0x7FA57FA5) and a poisoned workspace of exactly the planned size.
// A refusal at any of these steps fails the op with a message naming the plugin, the phase and what
// the plugin logged. Not emulated: TensorRT's tactic timing (setTactic, the build-phase
// onShapeChange/enqueue), min/opt shapes (min = opt = the run's shape), INT8 scales.
#include <ATen/ATen.h>
#include <NvInferRuntime.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "emu/control.h"

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

namespace {
using namespace nvinfer1;

// ---- what TensorRT would provide -----------------------------------------------------------
class Logger final : public ILogger {
public:
    void log(Severity severity, char const* msg) noexcept override {
        static char const* const kNames[] = {"INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"};
        lines.push_back(std::string(kNames[static_cast<int>(severity)]) + ": " + (msg ? msg : ""));
    }
    std::vector<std::string> lines;
};

class LoggerFinder final : public ILoggerFinder {
public:
    ILogger* findLogger() noexcept override { return &logger; }
    Logger logger;
};

LoggerFinder& loggerFinder() {
    static LoggerFinder finder;
    static bool const installed = (setLoggerFinder(&finder), true);  // the library's entry point
    (void)installed;
    return finder;
}

// A dimension expression: its value, and whether TensorRT would call it a build-time constant. A
// dynamic axis is not one (getConstantValue() then returns INT64_MIN, as TensorRT's does), nor is
// anything computed from one; the builder still folds every value, so the harness can read the
// output shapes that the plugin's expressions stand for at a given shape.
class Expr final : public IDimensionExpr {
public:
    Expr(int64_t value, bool constant) : mState(value, constant) { mImpl = &mState; }
    int64_t value() const { return mState.value; }
    bool constant() const { return mState.constant; }

private:
    struct Impl final : apiv::VDimensionExpr {
        Impl(int64_t v, bool c) : value(v), constant(c) {}
        bool isConstant() const override { return constant; }
        int64_t getConstantValue() const override { return constant ? value : std::numeric_limits<int64_t>::min(); }
        bool isSizeTensor() const override { return false; }
        int64_t value;
        bool constant;
    } mState;
};

// Every IDimensionExpr a plugin sees here was made by this builder, so each is an Expr.
Expr const& expr(IDimensionExpr const& e) { return static_cast<Expr const&>(e); }

class FoldingBuilder final : public IExprBuilder {
public:
    FoldingBuilder() : mBuilderImpl(*this) { mImpl = &mBuilderImpl; }
    IDimensionExpr const* make(int64_t v, bool constant) {
        mExprs.push_back(std::make_unique<Expr>(v, constant));
        return mExprs.back().get();
    }
    std::string problem;  // set when a plugin asked for something TensorRT would reject

private:
    struct Impl final : apiv::VExprBuilder {
        explicit Impl(FoldingBuilder& b) : builder(b) {}
        IDimensionExpr const* constant(int64_t value) override { return builder.make(value, true); }
        IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& first,
                                        IDimensionExpr const& second) override {
            int64_t const a = expr(first).value(), b = expr(second).value();
            bool const c = expr(first).constant() && expr(second).constant();
            switch (op) {
                case DimensionOperation::kSUM: return builder.make(a + b, c);
                case DimensionOperation::kPROD: return builder.make(a * b, c);
                case DimensionOperation::kMAX: return builder.make(a > b ? a : b, c);
                case DimensionOperation::kMIN: return builder.make(a < b ? a : b, c);
                case DimensionOperation::kSUB: return builder.make(a - b, c);
                case DimensionOperation::kEQUAL: return builder.make(a == b, c);
                case DimensionOperation::kLESS: return builder.make(a < b, c);
                case DimensionOperation::kFLOOR_DIV:
                case DimensionOperation::kCEIL_DIV: {
                    if (b == 0) {
                        builder.problem = "a dimension expression divides by zero";
                        return nullptr;
                    }
                    auto floorDiv = [](int64_t n, int64_t d) { return n / d - (n % d != 0 && (n < 0) != (d < 0)); };
                    return builder.make(op == DimensionOperation::kFLOOR_DIV ? floorDiv(a, b) : -floorDiv(-a, b), c);
                }
            }
            return nullptr;
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override {
            builder.problem = "size tensors are not emulated";
            return nullptr;
        }
        FoldingBuilder& builder;
    } mBuilderImpl;
    std::deque<std::unique_ptr<Expr>> mExprs;
};

class ResourceContext final : public IPluginResourceContext {
public:
    IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
};

struct PluginDeleter {
    void operator()(IPluginV3* p) const { delete p; }
};
using PluginPtr = std::unique_ptr<IPluginV3, PluginDeleter>;

// ---- tensors <-> TensorRT descriptors ------------------------------------------------------
DataType trtType(at::ScalarType t, std::string const& what) {
    switch (t) {
        case at::kFloat: return DataType::kFLOAT;
        case at::kHalf: return DataType::kHALF;
        case at::kBFloat16: return DataType::kBF16;
        case at::kInt: return DataType::kINT32;
        case at::kLong: return DataType::kINT64;
        case at::kChar: return DataType::kINT8;
        case at::kByte: return DataType::kUINT8;
        case at::kBool: return DataType::kBOOL;
        default: TORCH_CHECK(false, what, ": dtype ", t, " has no TensorRT DataType");
    }
}

at::ScalarType torchType(DataType t) {
    switch (t) {
        case DataType::kFLOAT: return at::kFloat;
        case DataType::kHALF: return at::kHalf;
        case DataType::kBF16: return at::kBFloat16;
        case DataType::kINT32: return at::kInt;
        case DataType::kINT64: return at::kLong;
        case DataType::kINT8: return at::kChar;
        case DataType::kUINT8: return at::kByte;
        case DataType::kBOOL: return at::kBool;
        default: TORCH_CHECK(false, "the plugin declared an output DataType ", static_cast<int>(t), " that is not emulated");
    }
}

char const* formatName(TensorFormat f) {
    switch (f) {
        case TensorFormat::kLINEAR: return "LINEAR";
        case TensorFormat::kHWC: return "HWC";
        case TensorFormat::kHWC8: return "HWC8";
        default: return "other";
    }
}

Dims dimsOf(std::vector<int64_t> const& sizes) {
    Dims d{};
    TORCH_CHECK(sizes.size() <= static_cast<size_t>(Dims::MAX_DIMS), "a tensor of rank ", sizes.size(),
                " exceeds TensorRT's ", Dims::MAX_DIMS);
    d.nbDims = static_cast<int32_t>(sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) d.d[i] = sizes[i];
    return d;
}

std::vector<int64_t> sizesOf(Dims const& d) { return std::vector<int64_t>(d.d, d.d + d.nbDims); }

std::string dimsText(Dims const& d) {
    std::string s = "[";
    for (int i = 0; i < d.nbDims; ++i) s += (i ? ", " : "") + std::to_string(d.d[i]);
    return s + "]";
}

// The formats offered for a tensor, as TensorRT offers them: kHWC for a rank-4 fp32/fp16 tensor
// (channels-last), kHWC8 for a rank-4 fp16 one (channels-last with the channels padded to a
// multiple of 8; the padding is zero on input and cut off the output).
bool offered(TensorFormat f, DataType t, Dims const& d) {
    if (f == TensorFormat::kLINEAR) return true;
    if (d.nbDims != 4) return false;
    if (f == TensorFormat::kHWC) return t == DataType::kFLOAT || t == DataType::kHALF;
    return f == TensorFormat::kHWC8 && t == DataType::kHALF;
}

// The channel count a format's memory holds for C logical channels.
int64_t paddedChannels(TensorFormat f, int64_t c) { return f == TensorFormat::kHWC8 ? (c + 7) / 8 * 8 : c; }

// A tensor's memory in format f: contiguous (kLINEAR), or [N, H, W, C'] channels-last with C' padded.
at::Tensor inFormat(at::Tensor const& t, TensorFormat f) {
    if (f == TensorFormat::kLINEAR) return t.contiguous();
    at::Tensor nhwc = t.permute({0, 2, 3, 1});
    int64_t const c = t.size(1), cp = paddedChannels(f, c);
    if (cp == c) return nhwc.contiguous();
    at::Tensor out = at::zeros({t.size(0), t.size(2), t.size(3), cp}, t.options());
    out.narrow(3, 0, c).copy_(nhwc);
    return out;
}

// The logical [N, C, H, W] view of memory written in format f.
at::Tensor fromFormat(at::Tensor const& memory, TensorFormat f, int64_t channels) {
    if (f == TensorFormat::kLINEAR) return memory;
    at::Tensor nchw = memory.narrow(3, 0, channels).permute({0, 3, 1, 2});
    return nchw.is_contiguous(at::MemoryFormat::ChannelsLast) ? nchw : nchw.contiguous(at::MemoryFormat::ChannelsLast);
}

// Outputs start as emu::poison's bytes (NaN as fp32, fp16 and bf16, a huge int32 / int64); a bool
// has no poison value and starts true.
void poison(at::Tensor& t) {
    if (t.scalar_type() == at::kBool) {
        t.fill_(true);
    } else if (t.numel() > 0) {
        emu::poison(t.data_ptr(), t.nbytes());
    }
}

// The serialised fields of a plugin, copied out of the plugin (TensorRT writes them into the plan).
struct FieldCopy {
    std::deque<std::string> names;
    std::deque<std::vector<uint8_t>> data;
    std::vector<PluginField> fields;
    PluginFieldCollection collection{};
};

// Bytes per element of a field type, or 0 for the types this emulation does not copy (sub-byte,
// fp8, bf16 and Dims fields: none of our plugins writes them).
size_t fieldBytes(PluginFieldType t) {
    switch (t) {
        case PluginFieldType::kFLOAT16: return 2;
        case PluginFieldType::kFLOAT32: return 4;
        case PluginFieldType::kFLOAT64: return 8;
        case PluginFieldType::kINT8: return 1;
        case PluginFieldType::kINT16: return 2;
        case PluginFieldType::kINT32: return 4;
        case PluginFieldType::kCHAR: return 1;
        case PluginFieldType::kINT64: return 8;
        case PluginFieldType::kUNKNOWN: return 1;
        default: return 0;
    }
}

struct Failure {
    std::string prefix;
    std::vector<std::string> const& log;
    [[noreturn]] void operator()(std::string const& what) const {
        std::string msg = prefix + ": " + what;
        for (auto const& line : log) msg += "\n  plugin log: " + line;
        TORCH_CHECK(false, msg);
    }
};


// What the plugins logged during the last plugin_run, and one "[emulation]" line with the
// negotiated formats and the workspace size.
std::vector<std::string> plugin_log() { return loggerFinder().logger.lines; }

std::vector<at::Tensor> plugin_run(std::string const& name, std::string const& version, std::string const& ns,
                                   std::vector<std::string> const& attribute_names,
                                   std::vector<at::Tensor> const& attribute_values,
                                   std::vector<at::Tensor> const& inputs, std::vector<int64_t> const& max_dims,
                                   std::vector<int64_t> const& dynamic_dims, int64_t num_outputs,
                                   int64_t workspace_shortfall) {
    auto& log = loggerFinder().logger.lines;
    log.clear();
    std::string const label = name + " v" + version + " (namespace '" + ns + "')";
    Failure const fail{label, log};

    // ---- the creator, from the library's own entry point ------------------------------------
    int32_t nbCreators = 0;
    IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    IPluginCreatorV3One* creator = nullptr;
    std::string known;
    for (int32_t i = 0; i < nbCreators; ++i) {
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        TORCH_CHECK(std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0,
                    "getCreators() returned a creator that is not an IPluginCreatorV3One");
        known += std::string(known.empty() ? "" : ", ") + c->getPluginName() + " v" + c->getPluginVersion();
        if (name == c->getPluginName() && version == c->getPluginVersion() && ns == c->getPluginNamespace())
            creator = c;
    }
    if (creator == nullptr) fail("no creator of that name, version and namespace (the library has " + known + ")");

    // ---- attributes -> PluginFields, as the ONNX parser maps them -----------------------------
    TORCH_CHECK(attribute_names.size() == attribute_values.size(), "attribute names and values differ in number");
    PluginFieldCollection const* listed = creator->getFieldNames();
    std::vector<at::Tensor> attrs;
    std::vector<PluginField> fields;
    for (size_t i = 0; i < attribute_names.size(); ++i) {
        bool wanted = false;
        for (int32_t j = 0; listed && j < listed->nbFields; ++j)
            wanted = wanted || (listed->fields[j].name && attribute_names[i] == listed->fields[j].name);
        if (!wanted) continue;
        at::Tensor const v = attribute_values[i].contiguous();
        PluginFieldType type;
        switch (v.scalar_type()) {
            case at::kInt: type = PluginFieldType::kINT32; break;
            case at::kLong: type = PluginFieldType::kINT64; break;
            case at::kFloat: type = PluginFieldType::kFLOAT32; break;
            case at::kDouble: type = PluginFieldType::kFLOAT64; break;
            case at::kByte: type = PluginFieldType::kCHAR; break;
            default: fail("attribute '" + attribute_names[i] + "' has a dtype with no PluginFieldType");
        }
        attrs.push_back(v);
        fields.emplace_back(attribute_names[i].c_str(), v.data_ptr(), type, static_cast<int32_t>(v.numel()));
    }
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};

    // ---- build phase -------------------------------------------------------------------------
    PluginPtr built(creator->createPlugin(name.c_str(), &fc, TensorRTPhase::kBUILD));
    if (!built) fail("createPlugin(kBUILD) returned null");
    auto* core = static_cast<IPluginV3OneCore*>(built->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(built->getCapabilityInterface(PluginCapabilityType::kBUILD));
    if (!core || !build || !built->getCapabilityInterface(PluginCapabilityType::kRUNTIME))
        fail("the plugin lacks a core, build or runtime capability");
    if (name != core->getPluginName() || version != core->getPluginVersion() || ns != core->getPluginNamespace())
        fail(std::string("the plugin calls itself ") + core->getPluginName() + " v" + core->getPluginVersion() +
             " (namespace '" + core->getPluginNamespace() + "')");

    int32_t const nbIn = static_cast<int32_t>(inputs.size());
    int32_t const nbOut = build->getNbOutputs();
    if (nbOut != num_outputs)
        fail("getNbOutputs() is " + std::to_string(nbOut) + ", the node has " + std::to_string(num_outputs));

    std::vector<DataType> inTypes(nbIn), outTypes(nbOut);
    std::vector<Dims> inDims(nbIn), inMax(nbIn);
    size_t offset = 0;
    for (int32_t i = 0; i < nbIn; ++i) {
        TORCH_CHECK(inputs[i].device().is_cpu(), label, ": input ", i, " must be a CPU tensor (emulated device memory)");
        inTypes[i] = trtType(inputs[i].scalar_type(), label + " input " + std::to_string(i));
        inDims[i] = dimsOf(inputs[i].sizes().vec());
        inMax[i] = inDims[i];
        if (!max_dims.empty()) {
            for (int j = 0; j < inDims[i].nbDims; ++j, ++offset) {
                TORCH_CHECK(offset < max_dims.size(), label, ": max_dims holds fewer values than the inputs' ranks");
                TORCH_CHECK(max_dims[offset] >= inDims[i].d[j], label, ": input ", i, " ", dimsText(inDims[i]),
                            " exceeds its profile maximum in dimension ", j, " (", max_dims[offset], ")");
                inMax[i].d[j] = max_dims[offset];
            }
        }
    }
    TORCH_CHECK(max_dims.empty() || offset == max_dims.size(), label, ": max_dims holds more values than the inputs' ranks");
    // a dynamic dimension: flagged by the caller (an axis the graph leaves open) or given a larger maximum
    std::vector<std::vector<bool>> dynamic(nbIn);
    size_t flat = 0;
    for (int32_t i = 0; i < nbIn; ++i) {
        dynamic[i].resize(inDims[i].nbDims);
        for (int j = 0; j < inDims[i].nbDims; ++j, ++flat)
            dynamic[i][j] = inMax[i].d[j] != inDims[i].d[j] || (flat < dynamic_dims.size() && dynamic_dims[flat] != 0);
    }
    TORCH_CHECK(dynamic_dims.empty() || flat == dynamic_dims.size(), label,
                ": dynamic_dims must hold one flag per input dimension (", flat, "), not ", dynamic_dims.size());
    if (build->getOutputDataTypes(outTypes.data(), nbOut, inTypes.data(), nbIn) != 0)
        fail("getOutputDataTypes refused the input types");

    // getOutputShapes over folded expressions (the dynamic dimensions non-constant, as TensorRT gives
    // them), evaluated at the run's shape and at the profile maximum
    auto outputShapes = [&](std::vector<Dims> const& in) {
        FoldingBuilder builder;
        std::vector<DimsExprs> inExprs(nbIn), outExprs(nbOut);
        for (int32_t i = 0; i < nbIn; ++i) {
            inExprs[i].nbDims = in[i].nbDims;
            for (int j = 0; j < in[i].nbDims; ++j) inExprs[i].d[j] = builder.make(in[i].d[j], !dynamic[i][j]);
        }
        if (build->getOutputShapes(inExprs.data(), nbIn, nullptr, 0, outExprs.data(), nbOut, builder) != 0)
            fail("getOutputShapes refused input shapes " + dimsText(in[0]) + ", ...");
        if (!builder.problem.empty()) fail("getOutputShapes: " + builder.problem);
        std::vector<Dims> out(nbOut);
        for (int32_t o = 0; o < nbOut; ++o) {
            out[o].nbDims = outExprs[o].nbDims;
            for (int j = 0; j < out[o].nbDims; ++j) {
                if (outExprs[o].d[j] == nullptr) fail("getOutputShapes left output " + std::to_string(o) + " dimension " + std::to_string(j) + " unset");
                out[o].d[j] = expr(*outExprs[o].d[j]).value();
                if (out[o].d[j] < 0) fail("getOutputShapes gave output " + std::to_string(o) + " a negative dimension");
            }
        }
        return out;
    };
    std::vector<Dims> const outDims = outputShapes(inDims), outMax = outputShapes(inMax);

    // descriptors: desc.dims -1 for every dynamic dimension, as TensorRT passes them (an output
    // dimension is dynamic when it differs between the run's shape and the maximum); min = opt =
    // the run's shape (none of our plugins reads them)
    std::vector<DynamicPluginTensorDesc> dyn(nbIn + nbOut);
    for (int32_t p = 0; p < nbIn + nbOut; ++p) {
        Dims const& d = p < nbIn ? inDims[p] : outDims[p - nbIn];
        Dims const& m = p < nbIn ? inMax[p] : outMax[p - nbIn];
        dyn[p].desc.type = p < nbIn ? inTypes[p] : outTypes[p - nbIn];
        dyn[p].desc.format = TensorFormat::kLINEAR;
        dyn[p].desc.scale = 1.0f;
        dyn[p].desc.dims = d;
        for (int j = 0; j < d.nbDims; ++j)
            if (d.d[j] != m.d[j] || (p < nbIn && dynamic[p][j])) dyn[p].desc.dims.d[j] = -1;
        dyn[p].min = d;
        dyn[p].opt = d;
        dyn[p].max = m;
    }
    // format negotiation, position by position (later positions stay kLINEAR while earlier ones are asked)
    std::string formats;
    for (int32_t p = 0; p < nbIn + nbOut; ++p) {
        bool found = false;
        for (TensorFormat f : {TensorFormat::kLINEAR, TensorFormat::kHWC, TensorFormat::kHWC8}) {
            if (!offered(f, dyn[p].desc.type, dyn[p].max)) continue;
            dyn[p].desc.format = f;
            if (build->supportsFormatCombination(p, dyn.data(), nbIn, nbOut)) {
                found = true;
                break;
            }
        }
        std::string const which = p < nbIn ? "input " + std::to_string(p) : "output " + std::to_string(p - nbIn);
        if (!found) fail("supportsFormatCombination accepts no format (LINEAR, HWC, HWC8) for " + which);
        formats += std::string(formats.empty() ? "" : ",") + formatName(dyn[p].desc.format);
    }
    if (build->configurePlugin(dyn.data(), nbIn, dyn.data() + nbIn, nbOut) != 0) fail("configurePlugin failed");
    size_t const workspace_bytes = build->getWorkspaceSize(dyn.data(), nbIn, dyn.data() + nbIn, nbOut);

    FieldCopy serial;
    PluginFieldCollection const* written =
        static_cast<IPluginV3OneRuntime*>(built->getCapabilityInterface(PluginCapabilityType::kRUNTIME))->getFieldsToSerialize();
    if (written == nullptr) fail("getFieldsToSerialize returned null");
    for (int32_t i = 0; i < written->nbFields; ++i) {
        PluginField const& f = written->fields[i];
        if (f.name == nullptr) fail("getFieldsToSerialize wrote a field without a name");
        if (fieldBytes(f.type) == 0)
            fail(std::string("getFieldsToSerialize wrote field '") + f.name + "' of PluginFieldType " +
                 std::to_string(static_cast<int>(f.type)) + ", which this emulation does not copy");
        size_t const bytes = fieldBytes(f.type) * static_cast<size_t>(f.length);
        if (bytes > 0 && f.data == nullptr) fail(std::string("getFieldsToSerialize wrote field '") + f.name + "' without data");
        serial.names.emplace_back(f.name);
        auto const* src = static_cast<uint8_t const*>(f.data);
        serial.data.emplace_back(src, src + bytes);
        serial.fields.emplace_back(serial.names.back().c_str(), serial.data.back().data(), f.type, f.length);
    }
    serial.collection = {static_cast<int32_t>(serial.fields.size()), serial.fields.data()};
    built.reset();  // TensorRT keeps only the plan

    // ---- runtime phase -----------------------------------------------------------------------
    PluginPtr restored(creator->createPlugin(name.c_str(), &serial.collection, TensorRTPhase::kRUNTIME));
    if (!restored) fail("createPlugin(kRUNTIME) from the serialised fields returned null");
    auto* shell = static_cast<IPluginV3OneRuntime*>(restored->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    if (!shell) fail("the deserialised plugin has no runtime capability");
    ResourceContext context;
    PluginPtr attached(shell->attachToContext(&context));
    if (!attached) fail("attachToContext returned null");
    auto* runtime = static_cast<IPluginV3OneRuntime*>(attached->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    if (!runtime) fail("the attached plugin has no runtime capability");

    std::vector<PluginTensorDesc> inDesc(nbIn), outDesc(nbOut);
    for (int32_t p = 0; p < nbIn + nbOut; ++p) {
        PluginTensorDesc& d = p < nbIn ? inDesc[p] : outDesc[p - nbIn];
        d = dyn[p].desc;
        d.dims = p < nbIn ? inDims[p] : outDims[p - nbIn];
    }
    if (runtime->onShapeChange(inDesc.data(), nbIn, outDesc.data(), nbOut) != 0) fail("onShapeChange failed");

    std::vector<at::Tensor> held(nbIn), memory(nbOut);
    std::vector<void const*> inPtrs(nbIn);
    std::vector<void*> outPtrs(nbOut);
    for (int32_t i = 0; i < nbIn; ++i) {
        held[i] = inFormat(inputs[i], inDesc[i].format);
        inPtrs[i] = held[i].numel() ? held[i].data_ptr() : nullptr;
    }
    for (int32_t o = 0; o < nbOut; ++o) {
        std::vector<int64_t> sizes = sizesOf(outDims[o]);
        if (outDesc[o].format != TensorFormat::kLINEAR)
            sizes = {sizes[0], sizes[2], sizes[3], paddedChannels(outDesc[o].format, sizes[1])};
        memory[o] = at::empty(sizes, at::TensorOptions().dtype(torchType(outTypes[o])));
        poison(memory[o]);
        outPtrs[o] = memory[o].numel() ? memory[o].data_ptr() : nullptr;
    }
    // exactly the planned bytes (less the test's shortfall), so the ASan build catches an enqueue
    // that uses more workspace than getWorkspaceSize asked for
    int64_t const given = std::max<int64_t>(0, static_cast<int64_t>(workspace_bytes) - workspace_shortfall);
    at::Tensor workspace;
    if (given > 0) {
        workspace = at::empty({given}, at::kByte);
        emu::poison(workspace.data_ptr(), static_cast<size_t>(given));
    }
    log.push_back("[emulation] formats " + formats + "; workspace " + std::to_string(workspace_bytes) + " bytes");
    cudaGetLastError();  // a stale error must not be blamed on this plugin
    int32_t const status = runtime->enqueue(inDesc.data(), outDesc.data(), inPtrs.data(), outPtrs.data(),
                                            given > 0 ? workspace.data_ptr() : nullptr, nullptr);
    cudaError_t const pending = cudaGetLastError();
    if (status != 0) fail("enqueue returned " + std::to_string(status));
    if (pending != cudaSuccess) fail(std::string("enqueue returned 0 but left a CUDA error: ") + cudaGetErrorString(pending));
    std::vector<at::Tensor> outputs(nbOut);
    for (int32_t o = 0; o < nbOut; ++o) outputs[o] = fromFormat(memory[o], outDesc[o].format, outDims[o].d[1]);
    return outputs;
}
}  // namespace

TORCH_LIBRARY_FRAGMENT(eventspd_emu, m) {
    m.def("plugin_run(str name, str version, str plugin_namespace, str[] attribute_names, Tensor[] attribute_values, "
          "Tensor[] inputs, int[] max_dims, int[] dynamic_dims, int num_outputs, int workspace_shortfall=0) -> Tensor[]",
          [](std::string name, std::string version, std::string ns, std::vector<std::string> attribute_names,
             std::vector<at::Tensor> attribute_values, std::vector<at::Tensor> inputs, std::vector<int64_t> max_dims,
             std::vector<int64_t> dynamic_dims, int64_t num_outputs, int64_t workspace_shortfall) {
              return plugin_run(name, version, ns, attribute_names, attribute_values, inputs, max_dims, dynamic_dims,
                                num_outputs, workspace_shortfall);
          });
    m.def("plugin_log() -> str[]", &plugin_log);
}
