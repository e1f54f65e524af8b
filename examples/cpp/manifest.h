// What the example needs from eventspd.manifest.json, and the checks it makes before touching
// TensorRT: the engines' TensorRT version and GPU, the sha256 of every file, the tensor roles
// (from the I/O tables, never hard-coded), the event file against the configuration and the
// optimisation profiles. TensorRT-free, so `eventspd_preflight` (and the CPU tests) run it too.
#pragma once

#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "event_file.h"
#include "json.h"
#include "sha256.h"

namespace eventspd {

struct TensorInfo {
    std::string name;
    std::string dtype;
    std::vector<int64_t> dims;  // -1 where the dimension is dynamic (named in the manifest)
};

struct EngineInfo {
    std::string graph, file, sha256, precision, onnxFile;
    std::string flavour = "tensorrt";  // "tensorrt" | "tensorrt-rtx" (eventspd_export/runtime/trt_flavour.py)
    std::string trtVersion;
    int trtMajor = 0, trtMinor = 0, trtPatch = 0;
    std::vector<std::string> targetCapabilities;  // what the engine runs on ("8.6", ...)
    std::string gpuName, gpuCapability;  // the build GPU (TensorRT); empty for TensorRT-RTX's AOT builds
    std::string pluginFile, pluginSha256;
    std::vector<TensorInfo> inputs, outputs;
    int64_t kMin = 1, kMax = 0, eventsMin = 0, eventsMax = 0;
};

struct PluginOp {
    std::string name, version, nameSpace;
};

struct Manifest {
    std::string dir;
    std::string configName;
    uint32_t width = 0, height = 0;
    EngineInfo precompute, decoder;
    std::vector<PluginOp> pluginOps;
};

// Which tensor is which, derived from the two I/O tables (the contract of model_def/contract.py):
// the precompute input with a dynamic dimension carries the events, the other one the recurrent
// state; the precompute output that the decoder does not read is the new state; the decoder
// input that precompute does not produce is the query list; every other precompute output is a
// decoder input with the same name (bound to the same device buffer).
struct Roles {
    std::string events, hidden, hiddenOut, queries;
    std::vector<std::string> shared;
    std::vector<std::string> outputs;  // decoder outputs, first = depth
};

inline std::string readText(std::string const& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

namespace detail {

inline std::vector<TensorInfo> tensors(json::Value const& list) {
    std::vector<TensorInfo> out;
    for (auto const& t : list.items()) {
        TensorInfo info;
        info.name = t["name"].asString();
        info.dtype = t["dtype"].asString();
        for (auto const& d : t["shape"].items()) info.dims.push_back(d.isNumber() ? d.asInt(0, INT64_MAX, "a dimension") : -1);
        out.push_back(info);
    }
    return out;
}

inline EngineInfo engine(std::string const& graph, json::Value const& e) {
    EngineInfo info;
    info.graph = graph;
    info.file = e["file"].asString();
    info.sha256 = e["sha256"].asString();
    info.precision = e["precision"].asString();
    info.onnxFile = e["onnx"]["file"].asString();
    auto const& trt = e["tensorrt"];
    if (trt.has("flavour")) info.flavour = trt["flavour"].asString();
    info.trtVersion = trt["version"].asString();
    info.trtMajor = static_cast<int>(trt["major"].asInt(0, INT32_MAX, "tensorrt.major"));
    info.trtMinor = static_cast<int>(trt["minor"].asInt(0, INT32_MAX, "tensorrt.minor"));
    info.trtPatch = static_cast<int>(trt["patch"].asInt(0, INT32_MAX, "tensorrt.patch"));
    if (e.has("gpu") && !e["gpu"].isNull()) {
        info.gpuName = e["gpu"]["name"].asString();
        info.gpuCapability = e["gpu"]["compute_capability"].asString();
    }
    if (e.has("target"))
        for (auto const& c : e["target"]["compute_capabilities"].items()) info.targetCapabilities.push_back(c.asString());
    else if (!info.gpuCapability.empty())
        info.targetCapabilities.push_back(info.gpuCapability);
    info.pluginFile = e["plugin_library"]["file"].asString();
    info.pluginSha256 = e["plugin_library"]["sha256"].asString();
    info.inputs = tensors(e["inputs"]);
    info.outputs = tensors(e["outputs"]);
    auto const& axes = e["dynamic_axes"];
    if (axes.has("num_queries")) {
        info.kMin = axes["num_queries"]["min"].asInt(0, INT64_MAX, "num_queries.min");
        info.kMax = axes["num_queries"]["max"].asInt(0, INT64_MAX, "num_queries.max");
    }
    if (axes.has("num_events")) {
        info.eventsMin = axes["num_events"]["min"].asInt(0, INT64_MAX, "num_events.min");
        info.eventsMax = axes["num_events"]["max"].asInt(0, INT64_MAX, "num_events.max");
    }
    return info;
}

}  // namespace detail

// Throws std::runtime_error with the file and the missing key when the manifest has no engines.
inline Manifest loadManifest(std::string const& dir) {
    std::string path = dir + "/eventspd.manifest.json";
    json::Value root;
    try {
        root = json::parse(readText(path));
    } catch (std::exception const& e) {
        throw std::runtime_error(path + ": " + e.what() + " (export with `eventspd-export onnx`)");
    }
    Manifest m;
    m.dir = dir;
    try {
        auto const& cfg = root["config"];
        m.configName = cfg["name"].asString();
        m.width = static_cast<uint32_t>(cfg["width"].asInt(1, UINT32_MAX, "config.width"));
        m.height = static_cast<uint32_t>(cfg["height"].asInt(1, UINT32_MAX, "config.height"));
        if (!root.has("engines"))
            throw std::runtime_error("no \"engines\" entry: build the engines with `eventspd-export trt --out " + dir + "`");
        m.precompute = detail::engine("precompute", root["engines"]["precompute"]);
        m.decoder = detail::engine("decoder", root["engines"]["decoder"]);
        if (root.has("plugin_ops"))
            for (auto const& op : root["plugin_ops"].items())
                m.pluginOps.push_back({op["plugin_name"].asString(), op["plugin_version"].asString(),
                                       op["plugin_namespace"].asString()});
    } catch (json::ParseError const&) {
        throw;
    } catch (std::exception const& e) {
        throw std::runtime_error(path + ": " + e.what());
    }
    return m;
}

inline Roles deriveRoles(Manifest const& m) {
    Roles r;
    // the tensor of that name in a table, or nullptr
    auto find = [](std::vector<TensorInfo> const& list, std::string const& name) -> TensorInfo const* {
        for (auto const& t : list)
            if (t.name == name) return &t;
        return nullptr;
    };
    for (auto const& t : m.precompute.inputs) {
        bool dynamic = false;
        for (auto d : t.dims) dynamic |= d < 0;
        (dynamic ? r.events : r.hidden) = t.name;
    }
    int stateOutputs = 0, queryInputs = 0;
    for (auto const& t : m.precompute.outputs) {
        if (find(m.decoder.inputs, t.name)) {
            r.shared.push_back(t.name);
        } else {
            r.hiddenOut = t.name;
            ++stateOutputs;
        }
    }
    for (auto const& t : m.decoder.inputs)
        if (!find(m.precompute.outputs, t.name)) {
            r.queries = t.name;
            ++queryInputs;
        }
    for (auto const& t : m.decoder.outputs) r.outputs.push_back(t.name);
    if (r.events.empty() || r.hidden.empty() || stateOutputs != 1 || queryInputs != 1 || r.shared.empty() ||
        r.outputs.empty() || m.precompute.inputs.size() != 2)
        throw std::runtime_error("the manifest's I/O tables do not have the precompute/decoder contract "
                                 "(events + state in, shared tensors + new state out; shared tensors + queries in)");
    // one device buffer serves both sides of each pair, sized from the first: they must agree
    // (model_def/contract.py: same name, dtype and shape), else a silent overrun on the device
    auto text = [](TensorInfo const& t) {
        std::string s = t.name + " (" + t.dtype + " [";
        for (size_t i = 0; i < t.dims.size(); ++i) s += (i ? "," : "") + std::to_string(t.dims[i]);
        return s + "])";
    };
    auto same = [&](TensorInfo const& a, char const* side_a, TensorInfo const& b, char const* side_b) {
        if (a.dtype != b.dtype || a.dims != b.dims)
            throw std::runtime_error("the manifest's " + std::string(side_a) + " " + text(a) + " and " + side_b + " " +
                                     text(b) + " must have one dtype and shape: the engines are not from one build");
    };
    // (every name below was found in both tables above)
    for (auto const& name : r.shared) {
        TensorInfo const& t = *find(m.precompute.outputs, name);
        same(t, "precompute output", *find(m.decoder.inputs, name), "decoder input");
        // allocated once by the dims: a dynamic one (-1) would make a negative size
        for (auto d : t.dims)
            if (d < 0)
                throw std::runtime_error("the manifest's shared tensor " + text(t) +
                                         " has a dynamic dimension: the contract makes the shared tensors static");
    }
    same(*find(m.precompute.inputs, r.hidden), "state input", *find(m.precompute.outputs, r.hiddenOut), "state output");
    return r;
}

inline std::string flavourTitle(std::string const& flavour) {
    return flavour == "tensorrt-rtx" ? "TensorRT-RTX" : "TensorRT";
}

inline std::string joined(std::vector<std::string> const& items) {
    std::string out;
    for (auto const& s : items) out += (out.empty() ? "" : ", ") + s;
    return out;
}

// The compute capabilities TensorRT-RTX 1.7 can build for (trt_flavour.RTX_COMPUTE_CAPABILITIES).
inline bool rtxHasTarget(std::string const& capability) {
    for (char const* c : {"7.5", "8.0", "8.6", "8.9", "12.0", "12.1"})
        if (capability == c) return true;
    return false;
}

// Why these engines cannot run with this TensorRT (empty: they can), before any GPU is looked at;
// the same rules as eventspd_export/runtime/trt_flavour.py engine_problems with gpu=None. An engine runs
// only on the flavour that built it (TensorRT or TensorRT-RTX) and needs the exact version (build
// number aside).
inline std::vector<std::string> runtimeProblems(Manifest const& m, std::string const& flavour, int trtMajor,
                                                int trtMinor, int trtPatch) {
    std::vector<std::string> problems;
    std::string here = flavourTitle(flavour) + " " + std::to_string(trtMajor) + "." + std::to_string(trtMinor) + "." +
                       std::to_string(trtPatch);
    for (EngineInfo const* e : {&m.precompute, &m.decoder}) {
        std::string built = flavourTitle(e->flavour) + " " + e->trtVersion;
        if (e->flavour != flavour)
            problems.push_back(e->file + " was built with " + built + ", this program runs " + here +
                               ": rebuild the engines with `eventspd-export trt --runtime " + flavour +
                               "`, or build this program against " + flavourTitle(e->flavour) +
                               " (an engine runs only on the flavour that built it)");
        else if (e->trtMajor != trtMajor || e->trtMinor != trtMinor || e->trtPatch != trtPatch)
            problems.push_back(e->file + " was built with " + built + ", this program runs " + here +
                               ": rebuild the engines with `eventspd-export trt` against " + here +
                               " (or run with the version they were built with)");
    }
    if (m.decoder.precision != m.precompute.precision)
        problems.push_back("the engines have different precisions (" + m.precompute.precision + ", " +
                           m.decoder.precision + "): rebuild both with one `eventspd-export trt` run");
    return problems;
}

// Why these engines cannot run on this GPU (empty: they can): its compute capability must be
// among the engine's targets; TensorRT also tuned them for the GPU model they were built on, so
// another model of the same architecture is refused unless allowOtherModel.
inline std::vector<std::string> gpuProblems(Manifest const& m, std::string const& flavour, std::string const& gpuName,
                                            std::string const& gpuCapability, bool allowOtherModel) {
    std::vector<std::string> problems;
    for (EngineInfo const* e : {&m.precompute, &m.decoder}) {
        bool targeted = false;
        for (auto const& c : e->targetCapabilities) targeted |= c == gpuCapability;
        if (!targeted) {
            std::string what = e->gpuName.empty() ? "compute capabilities " + joined(e->targetCapabilities)
                                                  : e->gpuName + " (compute capability " + e->gpuCapability + ")";
            std::string fix;
            if (flavour != "tensorrt-rtx")
                fix = ": rebuild the engines on this GPU with `eventspd-export trt`";
            else if (rtxHasTarget(gpuCapability))
                fix = ": rebuild them with `eventspd-export trt --runtime tensorrt-rtx --compute-capability " +
                      gpuCapability + "`";
            else
                fix = "; TensorRT-RTX has no target for it: build with enterprise TensorRT on this GPU";
            problems.push_back(e->file + " was built for " + what + ", this GPU is " + gpuName +
                               " (compute capability " + gpuCapability + ")" + fix);
        } else if (!e->gpuName.empty() && e->gpuName != gpuName && !allowOtherModel) {
            problems.push_back(e->file + " was built on " + e->gpuName + ", this GPU is " + gpuName +
                               " (same compute capability " + gpuCapability +
                               "): rebuild the engines on this GPU, or pass --allow-other-gpu-model to run them "
                               "anyway (TensorRT tuned them for the other model)");
        }
    }
    return problems;
}

// Both of the above.
inline std::vector<std::string> compatibilityProblems(Manifest const& m, std::string const& flavour, int trtMajor,
                                                      int trtMinor, int trtPatch, std::string const& gpuName,
                                                      std::string const& gpuCapability, bool allowOtherModel) {
    std::vector<std::string> problems = runtimeProblems(m, flavour, trtMajor, trtMinor, trtPatch);
    for (auto const& p : gpuProblems(m, flavour, gpuName, gpuCapability, allowOtherModel)) problems.push_back(p);
    return problems;
}

// sha256 of both engines and of the plugin library against the manifest.
inline std::vector<std::string> fileProblems(Manifest const& m, std::string const& pluginPath) {
    std::vector<std::string> problems;
    auto check = [&](std::string const& path, std::string const& want, char const* what) {
        std::string got;
        try {
            got = sha256::ofFile(path);
        } catch (std::exception const&) {
            problems.push_back(std::string(what) + " " + path + " not found");
            return;
        }
        if (got != want)
            problems.push_back(std::string(what) + " " + path + " is not the file the manifest describes (sha256 " +
                               got.substr(0, 12) + "..., expected " + want.substr(0, 12) +
                               "...): rebuild with `eventspd-export trt`, or use the files of that build");
    };
    check(m.dir + "/" + m.precompute.file, m.precompute.sha256, "engine");
    check(m.dir + "/" + m.decoder.file, m.decoder.sha256, "engine");
    check(pluginPath, m.decoder.pluginSha256, "plugin library");
    if (m.precompute.pluginSha256 != m.decoder.pluginSha256)
        problems.push_back("the manifest's two engines were built with different plugin libraries (sha256 " +
                           m.precompute.pluginSha256.substr(0, 12) + "... and " + m.decoder.pluginSha256.substr(0, 12) +
                           "...): rebuild both with one `eventspd-export trt`");
    return problems;
}

// The event file against the configuration and the profiles.
inline std::vector<std::string> inputProblems(Manifest const& m, EventFile const& f) {
    std::vector<std::string> problems;
    if (f.width != m.width || f.height != m.height)
        problems.push_back("the event file is for a " + std::to_string(f.width) + "x" + std::to_string(f.height) +
                           " sensor, the engines for " + std::to_string(m.width) + "x" + std::to_string(m.height) +
                           " (config " + m.configName + "): write it with `eventspd-export write-events --config " +
                           m.configName + "`");
    int64_t k = static_cast<int64_t>(f.numQueries());
    if (k < m.decoder.kMin || k > m.decoder.kMax)
        problems.push_back("the event file has K=" + std::to_string(k) + " queries, the decoder engine's profile allows " +
                           std::to_string(m.decoder.kMin) + ".." + std::to_string(m.decoder.kMax) +
                           ": rebuild with `eventspd-export trt --k-max` or write fewer queries");
    for (size_t w = 0; w < f.windows.size(); ++w) {
        int64_t n = static_cast<int64_t>(f.windows[w].size() / 4);
        if (n > m.precompute.eventsMax || n < m.precompute.eventsMin) {
            problems.push_back("window " + std::to_string(w) + " has " + std::to_string(n) +
                               " events, the precompute engine's profile allows " +
                               std::to_string(m.precompute.eventsMin) + ".." + std::to_string(m.precompute.eventsMax) +
                               (n < m.precompute.eventsMin ? ": rebuild with `eventspd-export trt` (its profiles start at 0 events)"
                                                           : ": rebuild with `eventspd-export trt --events-max`"));
            break;
        }
    }
    return problems;
}

inline int64_t volume(std::vector<int64_t> const& dims) {
    int64_t v = 1;
    for (auto d : dims) v *= d;
    return v;
}

}  // namespace eventspd
