// eventspd_preflight: the checks eventspd_run makes before it loads anything, without TensorRT or
// a GPU -- run it on the build machine, or to see why eventspd_run refused the artifacts.
//
//   eventspd_preflight ARTIFACTS_DIR EVENTS_FILE [--plugins PATH] [--runtime tensorrt|tensorrt-rtx]
//                      [--tensorrt X.Y.Z --gpu NAME --capability M.m [--allow-other-gpu-model]]
//
// Reads the manifest and the event file, derives the tensor roles from the I/O tables, checks
// the sha256 of both engines and of the plugin library, the event file against the configuration
// and the profiles, and -- when the target's TensorRT version and GPU are given -- whether the
// engines can run there. Prints a summary; exit 0 when all holds, 2 otherwise (one line per
// problem on stderr).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "event_file.h"
#include "manifest.h"

int main(int argc, char** argv) {
    std::vector<std::string> positional;
    std::string plugins, tensorrt, gpu, capability, flavour = "tensorrt";
    bool allowOtherModel = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "error: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--plugins") plugins = value();
        else if (a == "--tensorrt") tensorrt = value();
        else if (a == "--runtime") flavour = value();
        else if (a == "--gpu") gpu = value();
        else if (a == "--capability") capability = value();
        else if (a == "--allow-other-gpu-model") allowOtherModel = true;
        else positional.push_back(a);
    }
    if (positional.size() != 2 || (!tensorrt.empty() && (gpu.empty() || capability.empty())) ||
        (flavour != "tensorrt" && flavour != "tensorrt-rtx")) {
        std::fprintf(stderr, "usage: %s ARTIFACTS_DIR EVENTS_FILE [--plugins PATH] [--runtime tensorrt|tensorrt-rtx] "
                             "[--tensorrt X.Y.Z --gpu NAME --capability M.m [--allow-other-gpu-model]]\n", argv[0]);
        return 2;
    }
    std::vector<std::string> problems;
    try {
        eventspd::Manifest m = eventspd::loadManifest(positional[0]);
        eventspd::Roles roles = eventspd::deriveRoles(m);
        eventspd::EventFile f = eventspd::readEventFile(positional[1]);
        std::string pluginPath = plugins.empty() ? m.dir + "/" + m.decoder.pluginFile : plugins;
        problems = eventspd::inputProblems(m, f);
        for (auto const& p : eventspd::fileProblems(m, pluginPath)) problems.push_back(p);
        if (!tensorrt.empty()) {
            int v[3] = {0, 0, 0};
            std::sscanf(tensorrt.c_str(), "%d.%d.%d", &v[0], &v[1], &v[2]);
            for (auto const& p : eventspd::compatibilityProblems(m, flavour, v[0], v[1], v[2], gpu, capability,
                                                                 allowOtherModel))
                problems.push_back(p);
        }
        size_t events = 0;
        for (auto const& w : f.windows) events += w.size() / 4;
        std::string where = m.precompute.gpuName.empty() ? "" : m.precompute.gpuName + ", ";
        std::printf("config %s %ux%u; engines %s, %s (%s %s, %ssm %s)\n", m.configName.c_str(), m.width, m.height,
                    m.precompute.precision.c_str(), m.decoder.file.c_str(),
                    eventspd::flavourTitle(m.precompute.flavour).c_str(), m.precompute.trtVersion.c_str(), where.c_str(),
                    eventspd::joined(m.precompute.targetCapabilities).c_str());
        std::printf("roles: events=%s hidden=%s hidden_out=%s queries=%s shared=%zu outputs=%s",
                    roles.events.c_str(), roles.hidden.c_str(), roles.hiddenOut.c_str(), roles.queries.c_str(),
                    roles.shared.size(), roles.outputs[0].c_str());
        for (size_t i = 1; i < roles.outputs.size(); ++i) std::printf(",%s", roles.outputs[i].c_str());
        std::printf("\nprofiles: K %lld..%lld, events %lld..%lld\n", static_cast<long long>(m.decoder.kMin),
                    static_cast<long long>(m.decoder.kMax), static_cast<long long>(m.precompute.eventsMin),
                    static_cast<long long>(m.precompute.eventsMax));
        std::printf("event file: %zu windows, %zu events, K=%zu, sensor %ux%u\n", f.windows.size(), events,
                    f.numQueries(), f.width, f.height);
        if (!f.windows.empty() && !f.windows[0].empty())
            std::printf("first event: %.3f %.3f %.6f %.1f\n", f.windows[0][0], f.windows[0][1], f.windows[0][2],
                        f.windows[0][3]);
    } catch (std::exception const& e) {
        problems.push_back(e.what());
    }
    for (auto const& p : problems) std::fprintf(stderr, "error: %s\n", p.c_str());
    if (problems.empty()) std::printf("ok\n");
    return problems.empty() ? 0 : 2;
}
