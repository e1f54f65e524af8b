#include "common/plugin_base.h"

#include <cstdio>
#include <mutex>

namespace eventspd {
namespace trt {
namespace {
std::mutex gLoggerMutex;
ILoggerFinder* gLoggerFinder = nullptr;
}  // namespace

void setLoggerFinder(ILoggerFinder* finder) noexcept {
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    if (gLoggerFinder == nullptr) gLoggerFinder = finder;
}

bool reported(std::string const& problem, char const* plugin) noexcept {
    if (problem.empty()) return false;
    try {
        log(ILogger::Severity::kERROR, std::string(plugin) + ": " + problem);
    } catch (...) {  // (out of memory for the message: the error code still says it)
    }
    return true;
}

void log(ILogger::Severity severity, std::string const& message) noexcept {
    try {  // findLogger is not noexcept, the text needs memory: nothing may escape to TensorRT
        ILogger* logger = nullptr;
        {
            std::lock_guard<std::mutex> lock(gLoggerMutex);
            if (gLoggerFinder != nullptr) logger = gLoggerFinder->findLogger();
        }
        std::string const text = "[eventspd plugins] " + message;
        if (logger != nullptr) {
            logger->log(severity, text.c_str());
        } else if (severity <= ILogger::Severity::kWARNING) {
            std::fprintf(stderr, "%s\n", text.c_str());
        }
    } catch (...) {
        if (severity <= ILogger::Severity::kWARNING) std::fprintf(stderr, "[eventspd plugins] %s\n", message.c_str());
    }
}

std::vector<int32_t> fieldInts(PluginField const& f) {
    std::vector<int32_t> out(static_cast<size_t>(f.length));
    for (int32_t i = 0; i < f.length; ++i) {
        if (f.type == PluginFieldType::kINT32) {
            out[i] = static_cast<int32_t const*>(f.data)[i];
        } else if (f.type == PluginFieldType::kINT64) {
            int64_t const v = static_cast<int64_t const*>(f.data)[i];
            if (v < INT32_MIN || v > INT32_MAX) throw std::invalid_argument(std::string("field '") + f.name + "' overflows int32");
            out[i] = static_cast<int32_t>(v);
        } else {
            throw std::invalid_argument(std::string("field '") + f.name + "' must be INT32");
        }
    }
    return out;
}

int32_t fieldInt(PluginField const& f) {
    if (f.length != 1) throw std::invalid_argument(std::string("field '") + f.name + "' must be one integer");
    return fieldInts(f)[0];
}

float fieldFloat(PluginField const& f) {
    if (f.length != 1) throw std::invalid_argument(std::string("field '") + f.name + "' must be one float");
    if (f.type == PluginFieldType::kFLOAT32) return *static_cast<float const*>(f.data);
    if (f.type == PluginFieldType::kFLOAT64) return static_cast<float>(*static_cast<double const*>(f.data));
    throw std::invalid_argument(std::string("field '") + f.name + "' must be FLOAT32");
}

}  // namespace trt
}  // namespace eventspd
