// Reader of the event file that `eventspd-export write-events` writes (layout in
// eventspd_export/data/event_file.py): little-endian header (magic "ESPDEVT\0", version 1, width,
// height, window count), then per window uint32 N + N*4 float32 (x, y, t, p), then uint32 K +
// K*2 float32 queries (u, v). Validated like the Python reader: truncation and trailing bytes
// are errors.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace eventspd {

struct EventFile {
    uint32_t width = 0;
    uint32_t height = 0;
    std::vector<std::vector<float>> windows;  // each N*4 floats
    std::vector<float> queries;               // K*2 floats
    size_t numQueries() const { return queries.size() / 2; }
};

namespace detail {
inline bool littleEndianHost() {
    uint16_t one = 1;
    uint8_t first;
    std::memcpy(&first, &one, 1);
    return first == 1;
}
}  // namespace detail

inline EventFile readEventFile(std::string const& path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) throw std::runtime_error("cannot open event file " + path);
    if (!detail::littleEndianHost()) throw std::runtime_error("this reader needs a little-endian host");
    std::streamoff size = in.tellg();
    in.seekg(0);
    std::streamoff pos = 0;
    // every count is checked against the file's size before anything of that size is allocated
    auto need = [&](std::streamoff n, char const* what) {
        if (pos + n > size)
            throw std::runtime_error(path + ": truncated in " + what + " (needs " + std::to_string(n) +
                                     " bytes at offset " + std::to_string(pos) + ", the file has " +
                                     std::to_string(size) + ")");
    };
    auto take = [&](void* dst, std::streamoff n, char const* what) {
        need(n, what);
        if (!in.read(static_cast<char*>(dst), n))
            throw std::runtime_error(path + ": read error in " + what + " at offset " + std::to_string(pos));
        pos += n;
    };
    char magic[8];
    uint32_t header[4];
    take(magic, 8, "the header");
    if (std::memcmp(magic, "ESPDEVT\0", 8) != 0) throw std::runtime_error(path + ": not an EventSPD event file");
    take(header, sizeof(header), "the header");
    if (header[0] != 1) throw std::runtime_error(path + ": event file version " + std::to_string(header[0]) +
                                                 "; this reader knows version 1");
    EventFile f;
    f.width = header[1];
    f.height = header[2];
    need(static_cast<std::streamoff>(header[3]) * 4, "the event counts");  // at least a count per window
    f.windows.resize(header[3]);
    for (uint32_t w = 0; w < header[3]; ++w) {
        uint32_t n = 0;
        take(&n, 4, "an event count");
        need(static_cast<std::streamoff>(n) * 16, "the events");
        f.windows[w].resize(static_cast<size_t>(n) * 4);
        take(f.windows[w].data(), static_cast<std::streamoff>(n) * 16, "the events");
    }
    uint32_t k = 0;
    take(&k, 4, "the query count");
    if (k == 0) throw std::runtime_error(path + ": query count is 0");
    need(static_cast<std::streamoff>(k) * 8, "the queries");
    f.queries.resize(static_cast<size_t>(k) * 2);
    take(f.queries.data(), static_cast<std::streamoff>(k) * 8, "the queries");
    if (pos != size) throw std::runtime_error(path + ": " + std::to_string(size - pos) +
                                              " unexpected bytes after the queries");
    return f;
}

}  // namespace eventspd
