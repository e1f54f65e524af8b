// eventspd_run: runs EventSPD's two TensorRT engines on a sequence of event windows.
//
//   eventspd_run ARTIFACTS_DIR EVENTS_FILE [--plugins PATH] [--device N] [--print N]
//                [--save-depths FILE] [--allow-other-gpu-model]
//
// ARTIFACTS_DIR holds precompute.engine, decoder.engine, libeventspd_plugins.so and
// eventspd.manifest.json (what `eventspd-export trt` writes); EVENTS_FILE is written by
// `eventspd-export write-events`. The program
//   1. reads the manifest and refuses engines built with the other TensorRT flavour, another
//      version, or for a GPU outside their targets, and files whose sha256 differs from the
//      manifest's, with a message saying what to do;
//   2. loads the plugin library (dlopen: its creators register themselves under their namespace,
//      plugins/common/registration.cpp) and checks that TensorRT's keyed lookup getCreator(name,
//      version, namespace), the one a plan's plugin layers are deserialised through, finds every
//      creator the manifest's plugin_ops name -- still before any GPU is needed;
//   3. deserialises both engines and checks their I/O against the manifest's I/O tables;
//   4. allocates every device buffer once: precompute's shared outputs ARE decoder's inputs (the
//      same device pointers: no copy, no host round trip), and two state buffers that swap roles
//      after every window (hidden -> hidden_out -> hidden ...);
//   5. per window: events to the device, precompute, decoder on the fixed query list, depths back
//      to the host; prints depths and per-stage times measured with CUDA events.
// Exit codes: 0 done, 2 the inputs cannot be used here (message on stderr), 1 a CUDA/TensorRT
// failure while running. An error after the start unwinds: contexts, engines and the runtime are
// destroyed in that order, CUDA objects are released, and no partial --save-depths file is left.
#include <NvInfer.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "event_file.h"
#include "manifest.h"

// The flavour this program is linked against: CMakeLists.txt defines EVENTSPD_TENSORRT_RTX when
// TENSORRT_LIBRARY is TensorRT-RTX's libtensorrt_rtx (same nvinfer1 API and 11.x headers).
#ifdef EVENTSPD_TENSORRT_RTX
constexpr char const* kFlavour = "tensorrt-rtx";
#else
constexpr char const* kFlavour = "tensorrt";
#endif

namespace {

// An error that ends the run: thrown, so that the objects alive (execution contexts, engines, the
// runtime, device memory, streams) are destroyed in order on the way out of run(), which
// std::exit would skip; main() prints it and returns its code.
struct Failure {
    std::string message;
    int code;
};

[[noreturn]] void fatal(std::string const& msg, int code = 2) { throw Failure{msg, code}; }

void cudaCheck(cudaError_t err, char const* what) {
    if (err != cudaSuccess) fatal(std::string(what) + ": " + cudaGetErrorString(err), 1);
}
#define CUDA_CHECK(call) cudaCheck((call), #call)

class Logger : public nvinfer1::ILogger {
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg);
    }
};

struct Options {
    std::string dir, events, plugins, saveDepths;
    int device = 0;
    int print = 8;
    bool allowOtherModel = false;
};

[[noreturn]] void usage(char const* prog) {
    std::fprintf(stderr,
                 "usage: %s ARTIFACTS_DIR EVENTS_FILE [--plugins PATH] [--device N] [--print N]\n"
                 "          [--save-depths FILE] [--allow-other-gpu-model]\n",
                 prog);
    std::exit(2);
}

Options parseArgs(int argc, char** argv) {
    Options o;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(argv[0]);
            return argv[++i];
        };
        // a whole non-negative number, all of the argument (atoi took "abc" as 0 and "-1" as a device)
        auto count = [&](char const* option) {
            std::string const text = value();
            char* end = nullptr;
            errno = 0;
            long const n = std::strtol(text.c_str(), &end, 10);
            if (text.empty() || *end != '\0' || errno != 0 || n < 0 || n > INT32_MAX)
                fatal(std::string(option) + " takes a whole number >= 0, not '" + text + "'");
            return static_cast<int>(n);
        };
        if (a == "--plugins") o.plugins = value();
        else if (a == "--device") o.device = count("--device");
        else if (a == "--print") o.print = count("--print");
        else if (a == "--save-depths") o.saveDepths = value();
        else if (a == "--allow-other-gpu-model") o.allowOtherModel = true;
        else if (a == "-h" || a == "--help") usage(argv[0]);
        else if (!a.empty() && a[0] == '-') usage(argv[0]);
        else positional.push_back(a);
    }
    if (positional.size() != 2) usage(argv[0]);
    o.dir = positional[0];
    o.events = positional[1];
    return o;
}

std::vector<char> readBinary(std::string const& path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    std::streamoff const size = in ? static_cast<std::streamoff>(in.tellg()) : -1;
    if (size < 0) fatal("cannot read " + path);
    std::vector<char> data(static_cast<size_t>(size));
    in.seekg(0);
    if (!in.read(data.data(), static_cast<std::streamsize>(size))) fatal("cannot read " + path + " (read error)");
    return data;
}

// One cudaMalloc'd block, freed on scope exit.
class DeviceBuffer {
public:
    explicit DeviceBuffer(size_t bytes) : bytes_(std::max<size_t>(bytes, 16)) { CUDA_CHECK(cudaMalloc(&ptr_, bytes_)); }
    ~DeviceBuffer() { cudaFree(ptr_); }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
    void* get() const { return ptr_; }
    size_t bytes() const { return bytes_; }

private:
    void* ptr_ = nullptr;
    size_t bytes_;
};

class PinnedBuffer {
public:
    explicit PinnedBuffer(size_t bytes) { CUDA_CHECK(cudaMallocHost(&ptr_, std::max<size_t>(bytes, 16))); }
    ~PinnedBuffer() { cudaFreeHost(ptr_); }
    PinnedBuffer(PinnedBuffer const&) = delete;
    PinnedBuffer& operator=(PinnedBuffer const&) = delete;
    float* get() const { return static_cast<float*>(ptr_); }

private:
    void* ptr_ = nullptr;
};

// A CUDA handle made by `create` and released by `destroy` on scope exit: the stream and the
// events that time its stages.
template <class Handle, cudaError_t (*create)(Handle*), cudaError_t (*destroy)(Handle)>
class CudaHandle {
public:
    CudaHandle() { cudaCheck(create(&handle_), "creating a CUDA stream or event"); }
    ~CudaHandle() { destroy(handle_); }
    CudaHandle(CudaHandle const&) = delete;
    CudaHandle& operator=(CudaHandle const&) = delete;
    Handle get() const { return handle_; }

private:
    Handle handle_ = nullptr;
};
using Stream = CudaHandle<cudaStream_t, cudaStreamCreate, cudaStreamDestroy>;
using Event = CudaHandle<cudaEvent_t, cudaEventCreate, cudaEventDestroy>;

// --save-depths: written to FILE.partial and renamed to FILE when every window is done, so a run
// that stops early leaves no file that looks complete (the partial one is removed).
class DepthFile {
public:
    explicit DepthFile(std::string path) : path_(std::move(path)), partial_(path_ + ".partial") {
        if (path_.empty()) return;
        if ((file_ = std::fopen(partial_.c_str(), "wb")) == nullptr)
            fatal("cannot write " + partial_ + ": " + std::strerror(errno));
        std::remove(path_.c_str());  // an earlier run's FILE must not outlive a run that fails
    }
    ~DepthFile() {
        if (file_ == nullptr) return;
        std::fclose(file_);
        std::remove(partial_.c_str());
    }
    DepthFile(DepthFile const&) = delete;
    DepthFile& operator=(DepthFile const&) = delete;
    void write(float const* values, size_t n) {
        if (file_ && std::fwrite(values, sizeof(float), n, file_) != n) fatal("cannot write " + partial_);
    }
    void commit() {
        if (file_ == nullptr) return;
        std::FILE* f = file_;
        file_ = nullptr;
        bool const closed = std::fclose(f) == 0;
        if (!closed || std::rename(partial_.c_str(), path_.c_str()) != 0) {
            std::remove(partial_.c_str());
            fatal("cannot write " + path_ + ": " + std::strerror(errno));
        }
    }

private:
    std::string path_, partial_;
    std::FILE* file_ = nullptr;
};

// The engine's tensors must be the manifest's: same names, directions, float32, static dims.
void checkEngineIo(nvinfer1::ICudaEngine const& engine, eventspd::EngineInfo const& info) {
    size_t expected = info.inputs.size() + info.outputs.size();
    if (static_cast<size_t>(engine.getNbIOTensors()) != expected)
        fatal(info.file + " has " + std::to_string(engine.getNbIOTensors()) + " I/O tensors, the manifest lists " +
              std::to_string(expected) + ": the engine and the manifest are from different builds");
    auto check = [&](eventspd::TensorInfo const& t, nvinfer1::TensorIOMode mode) {
        if (engine.getTensorIOMode(t.name.c_str()) != mode)
            fatal(info.file + ": tensor " + t.name + " is missing or has the wrong direction");
        if (t.dtype != "float32" || engine.getTensorDataType(t.name.c_str()) != nvinfer1::DataType::kFLOAT)
            fatal(info.file + ": tensor " + t.name + " is not float32 as the contract says");
        nvinfer1::Dims d = engine.getTensorShape(t.name.c_str());
        bool same = d.nbDims == static_cast<int32_t>(t.dims.size());
        for (int32_t i = 0; same && i < d.nbDims; ++i) same = t.dims[i] < 0 ? d.d[i] < 0 : d.d[i] == t.dims[i];
        if (!same) fatal(info.file + ": tensor " + t.name + " has another shape than the manifest's");
    };
    for (auto const& t : info.inputs) check(t, nvinfer1::TensorIOMode::kINPUT);
    for (auto const& t : info.outputs) check(t, nvinfer1::TensorIOMode::kOUTPUT);
}

eventspd::TensorInfo const& find(std::vector<eventspd::TensorInfo> const& list, std::string const& name) {
    for (auto const& t : list)
        if (t.name == name) return t;
    fatal("tensor " + name + " is not in the manifest");
}

// The manifest's dims of a dynamic input with its dynamic dimension (-1) set to n.
nvinfer1::Dims withDynamic(eventspd::TensorInfo const& t, int64_t n) {
    nvinfer1::Dims d{};
    if (t.dims.size() > static_cast<size_t>(nvinfer1::Dims::MAX_DIMS)) fatal("tensor " + t.name + " has too many dimensions");
    d.nbDims = static_cast<int32_t>(t.dims.size());
    for (size_t i = 0; i < t.dims.size(); ++i) d.d[i] = t.dims[i] < 0 ? n : t.dims[i];
    return d;
}

struct StageTimes {
    double upload = 0, precompute = 0, decoder = 0, download = 0;
};

int run(int argc, char** argv) {
    Options opt = parseArgs(argc, argv);

    // 1. manifest, inputs, files and TensorRT version -- before anything is loaded.
    eventspd::Manifest manifest;
    eventspd::EventFile events;
    eventspd::Roles roles;
    try {
        manifest = eventspd::loadManifest(opt.dir);
        roles = eventspd::deriveRoles(manifest);
        events = eventspd::readEventFile(opt.events);
    } catch (std::exception const& e) {
        fatal(e.what());
    }
    std::string pluginPath = opt.plugins.empty() ? opt.dir + "/" + manifest.decoder.pluginFile : opt.plugins;
    // the file hashed below is the one dlopen loads (dlopen would search the library path for a
    // name without a slash, not the current directory that the hash reads)
    if (char* resolved = realpath(pluginPath.c_str(), nullptr)) {
        pluginPath = resolved;
        std::free(resolved);
    }
    std::vector<std::string> problems = eventspd::inputProblems(manifest, events);
    for (auto const& p : eventspd::fileProblems(manifest, pluginPath)) problems.push_back(p);

    // flavour and version need no GPU: report them with the file and input problems first
    int32_t v = getInferLibVersion();  // (MAJOR * 100 + MINOR) * 100 + PATCH
    for (auto const& p : eventspd::runtimeProblems(manifest, kFlavour, v / 10000, (v / 100) % 100, v % 100))
        problems.push_back(p);

    int deviceCount = 0;
    bool const gpu = cudaGetDeviceCount(&deviceCount) == cudaSuccess && deviceCount > opt.device;

    // 2. runtime and plugins (TensorRT-RTX needs no GPU for them), once the library's sha256 is the
    //    manifest's; where a runtime cannot be made without a GPU, the missing GPU is the message
    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    if (problems.empty()) runtime.reset(nvinfer1::createInferRuntime(logger));
    if (problems.empty() && !runtime && gpu) fatal("createInferRuntime failed (see TensorRT's message above)", 1);
    if (runtime) {
        if (dlopen(pluginPath.c_str(), RTLD_NOW | RTLD_LOCAL) == nullptr)  // never closed: the registry keeps its creators
            fatal("cannot load the plugin library " + pluginPath + ": " + dlerror() +
                  " (build it with `eventspd-export build-plugins`, or pass --plugins PATH)");
        // the runtime's registry searches the global one, where the library registered
        for (auto const& op : manifest.pluginOps)
            if (runtime->getPluginRegistry().getCreator(op.name.c_str(), op.version.c_str(), op.nameSpace.c_str()) ==
                nullptr)
                problems.push_back(pluginPath + " is loaded but TensorRT finds no creator " + op.nameSpace + "::" +
                                   op.name + " version " + op.version +
                                   ": rebuild the library from this checkout with `eventspd-export build-plugins`");
    }
    // ... and then the GPU
    if (!gpu)
        problems.push_back("no CUDA GPU " + std::to_string(opt.device) +
                           " is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)");
    if (!problems.empty()) {
        for (size_t i = 0; i + 1 < problems.size(); ++i) std::fprintf(stderr, "error: %s\n", problems[i].c_str());
        fatal(problems.back());
    }
    CUDA_CHECK(cudaSetDevice(opt.device));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device));
    std::string capability = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    for (auto const& p : eventspd::gpuProblems(manifest, kFlavour, prop.name, capability, opt.allowOtherModel))
        problems.push_back(p);
    if (!problems.empty()) {
        for (size_t i = 0; i + 1 < problems.size(); ++i) std::fprintf(stderr, "error: %s\n", problems[i].c_str());
        fatal(problems.back());
    }
    std::printf("config %s (%ux%u), %s engines, %s %d.%d.%d, %s (sm %s)\n", manifest.configName.c_str(),
                manifest.width, manifest.height, manifest.precompute.precision.c_str(),
                eventspd::flavourTitle(kFlavour).c_str(), v / 10000, (v / 100) % 100, v % 100, prop.name,
                capability.c_str());

    // 3. engines
    std::unique_ptr<nvinfer1::ICudaEngine> engines[2];
    eventspd::EngineInfo const* infos[2] = {&manifest.precompute, &manifest.decoder};
    for (int i = 0; i < 2; ++i) {
        std::vector<char> blob = readBinary(opt.dir + "/" + infos[i]->file);
        sha256::Hasher hash;  // the bytes deserialised are the bytes the manifest describes
        hash.update(reinterpret_cast<uint8_t const*>(blob.data()), blob.size());
        if (hash.hexdigest() != infos[i]->sha256)
            fatal(infos[i]->file + " changed after it was checked against the manifest's sha256");
        engines[i].reset(runtime->deserializeCudaEngine(blob.data(), blob.size()));
        if (!engines[i]) fatal("TensorRT could not deserialise " + infos[i]->file + " (see its message above)", 1);
        checkEngineIo(*engines[i], *infos[i]);
    }
    nvinfer1::ICudaEngine& pre = *engines[0];
    nvinfer1::ICudaEngine& dec = *engines[1];

    // 4. device buffers, allocated once.
    size_t maxEvents = 1;
    for (auto const& w : events.windows) maxEvents = std::max(maxEvents, w.size() / 4);
    int64_t K = static_cast<int64_t>(events.numQueries());
    DeviceBuffer dEvents(maxEvents * 4 * sizeof(float));
    PinnedBuffer hEvents(maxEvents * 4 * sizeof(float));
    auto const& hiddenInfo = find(manifest.precompute.inputs, roles.hidden);
    size_t hiddenBytes = static_cast<size_t>(eventspd::volume(hiddenInfo.dims)) * sizeof(float);  // static: deriveRoles
    DeviceBuffer state0(hiddenBytes), state1(hiddenBytes);
    void* state[2] = {state0.get(), state1.get()};
    CUDA_CHECK(cudaMemset(state[0], 0, hiddenBytes));  // zeros before the first window
    std::map<std::string, std::unique_ptr<DeviceBuffer>> shared;
    for (auto const& name : roles.shared)
        shared[name] = std::make_unique<DeviceBuffer>(
            static_cast<size_t>(eventspd::volume(find(manifest.precompute.outputs, name).dims)) * sizeof(float));
    DeviceBuffer dQueries(static_cast<size_t>(K) * 2 * sizeof(float));
    PinnedBuffer hDepth(static_cast<size_t>(K) * sizeof(float));
    CUDA_CHECK(cudaMemcpy(dQueries.get(), events.queries.data(), static_cast<size_t>(K) * 2 * sizeof(float),
                          cudaMemcpyHostToDevice));

    std::unique_ptr<nvinfer1::IExecutionContext> preCtx{pre.createExecutionContext()};
    std::unique_ptr<nvinfer1::IExecutionContext> decCtx{dec.createExecutionContext()};
    if (!preCtx || !decCtx) fatal("could not create the execution contexts (out of GPU memory?)", 1);
    if (!decCtx->setInputShape(roles.queries.c_str(), withDynamic(find(manifest.decoder.inputs, roles.queries), K)))
        fatal("the decoder engine rejects K=" + std::to_string(K), 2);
    // Every decoder output needs device memory to be written to, sized by the shape the engine
    // gives it at this K; each must hold one value per query (the first, depth, is downloaded,
    // printed and saved as K floats; the others, inv_depth, stay on the GPU).
    std::vector<std::unique_ptr<DeviceBuffer>> dOut;
    for (auto const& name : roles.outputs) {
        nvinfer1::Dims const d = decCtx->getTensorShape(name.c_str());
        int64_t n = d.nbDims >= 0 ? 1 : -1;
        for (int32_t i = 0; i < d.nbDims; ++i) n = d.d[i] < 0 || n < 0 ? -1 : n * d.d[i];
        if (n != K)
            fatal(manifest.decoder.file + ": output " + name + " holds " + std::to_string(n) + " values at K=" +
                      std::to_string(K) + ", not one per query: the engine and this program disagree on the contract",
                  1);
        dOut.push_back(std::make_unique<DeviceBuffer>(static_cast<size_t>(n) * sizeof(float)));
    }
    auto bind = [](nvinfer1::IExecutionContext& ctx, std::string const& name, void* ptr) {
        if (!ctx.setTensorAddress(name.c_str(), ptr)) fatal("setTensorAddress(" + name + ") failed", 1);
    };
    bind(*preCtx, roles.events, dEvents.get());
    for (auto& kv : shared) {
        bind(*preCtx, kv.first, kv.second->get());  // precompute writes it ...
        bind(*decCtx, kv.first, kv.second->get());  // ... the decoder reads the same memory
    }
    bind(*decCtx, roles.queries, dQueries.get());
    for (size_t i = 0; i < roles.outputs.size(); ++i) bind(*decCtx, roles.outputs[i], dOut[i]->get());

    Stream streamHolder;
    cudaStream_t const stream = streamHolder.get();
    Event marks[5];

    DepthFile depthFile(opt.saveDepths);

    // 5. the windows; the state buffers swap roles after each one.
    std::vector<StageTimes> times;
    int cur = 0;
    for (size_t w = 0; w < events.windows.size(); ++w) {
        int64_t n = static_cast<int64_t>(events.windows[w].size() / 4);
        if (n > 0) std::memcpy(hEvents.get(), events.windows[w].data(), static_cast<size_t>(n) * 4 * sizeof(float));
        CUDA_CHECK(cudaEventRecord(marks[0].get(), stream));
        if (n > 0)
            CUDA_CHECK(cudaMemcpyAsync(dEvents.get(), hEvents.get(), static_cast<size_t>(n) * 4 * sizeof(float),
                                       cudaMemcpyHostToDevice, stream));
        CUDA_CHECK(cudaEventRecord(marks[1].get(), stream));
        if (!preCtx->setInputShape(roles.events.c_str(), withDynamic(find(manifest.precompute.inputs, roles.events), n)))
            fatal("the precompute engine rejects " + std::to_string(n) + " events", 2);
        bind(*preCtx, roles.hidden, state[cur]);
        bind(*preCtx, roles.hiddenOut, state[1 - cur]);
        if (!preCtx->enqueueV3(stream)) fatal("precompute enqueueV3 failed in window " + std::to_string(w), 1);
        CUDA_CHECK(cudaEventRecord(marks[2].get(), stream));
        if (!decCtx->enqueueV3(stream)) fatal("decoder enqueueV3 failed in window " + std::to_string(w), 1);
        CUDA_CHECK(cudaEventRecord(marks[3].get(), stream));
        CUDA_CHECK(cudaMemcpyAsync(hDepth.get(), dOut[0]->get(), static_cast<size_t>(K) * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream));
        CUDA_CHECK(cudaEventRecord(marks[4].get(), stream));
        CUDA_CHECK(cudaStreamSynchronize(stream));
        cur = 1 - cur;

        float ms[4];
        for (int s = 0; s < 4; ++s) CUDA_CHECK(cudaEventElapsedTime(&ms[s], marks[s].get(), marks[s + 1].get()));
        times.push_back({ms[0], ms[1], ms[2], ms[3]});
        float const* depth = hDepth.get();
        std::printf("window %zu: %lld events | upload %.3f ms, precompute %.3f ms, decoder %.3f ms (K=%lld), "
                    "download %.3f ms\n  %s:",
                    w, static_cast<long long>(n), ms[0], ms[1], ms[2], static_cast<long long>(K), ms[3],
                    roles.outputs[0].c_str());
        for (int64_t q = 0; q < std::min<int64_t>(K, opt.print); ++q) std::printf(" %.3f", depth[q]);
        std::printf("%s m\n", K > opt.print ? " ..." : "");
        depthFile.write(depth, static_cast<size_t>(K));
    }
    depthFile.commit();

    // Window 0 pays for lazy initialisation; the mean skips it when there are more.
    size_t first = times.size() > 1 ? 1 : 0;
    StageTimes mean;
    for (size_t i = first; i < times.size(); ++i) {
        mean.upload += times[i].upload;
        mean.precompute += times[i].precompute;
        mean.decoder += times[i].decoder;
        mean.download += times[i].download;
    }
    double count = static_cast<double>(times.size() - first);
    if (count > 0)
        std::printf("mean over %zu window(s)%s: upload %.3f ms, precompute %.3f ms, decoder %.3f ms, download %.3f ms, "
                    "total %.3f ms\n",
                    times.size() - first, first ? " (after the first)" : "", mean.upload / count,
                    mean.precompute / count, mean.decoder / count, mean.download / count,
                    (mean.upload + mean.precompute + mean.decoder + mean.download) / count);

    // Locals go in reverse order of construction: the depth file, events, stream, the decoder's
    // output buffers, the contexts, the other buffers, the engines, the runtime, the logger. The
    // plugin library stays loaded until exit: TensorRT may still hold its creators.
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (Failure const& f) {
        std::fprintf(stderr, "error: %s\n", f.message.c_str());
        return f.code;
    }
}
