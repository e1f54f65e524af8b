// CPU emulation of the nvcuda::wmma subset the EventSPD tensor-core kernels use
// (plugins/emulation): 16x16x16 tiles, fp16 A/B, fp32 accumulator, row-major.
//
// The element-to-lane mapping of a real fragment is unspecified, so kernels may only treat
// fragments as a whole (load, fill, mma, store); here every lane holds the whole tile and does
// the operation (mma_sync once per warp, see there), except store_matrix_sync, where each lane
// writes only its share of the tile, so a reader that skips the __syncwarp after a store sees
// unwritten elements. Each operation is warp-collective, as on the GPU: all 32 lanes must reach
// it (a barrier of the warp before it; lanes elsewhere or exited are reported), and it checks
// WMMA's pointer (32-byte) and leading-dimension (16-byte multiple) requirements. mma_sync accumulates
// in fp32 in k order; tensor cores may round the partial sums differently (the GPU tests'
// fp16 tolerance covers that).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda_fp16.h"
#include "emu/device.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K>
struct tile_shape;
template <int M, int N, int K>
struct tile_shape<matrix_a, M, N, K> {
    static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct tile_shape<matrix_b, M, N, K> {
    static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct tile_shape<accumulator, M, N, K> {
    static constexpr int rows = M, cols = N;
};

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static constexpr int rows = tile_shape<Use, M, N, K>::rows, cols = tile_shape<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    // row-major [rows, cols], the whole tile in every lane (see above), widened to float once on
    // load (fp16 values are exact in float), so mma_sync converts nothing
    float x[num_elements];
};

namespace detail {
inline float widen(float v) { return v; }
inline float widen(__half v) { return __half2float(v); }

template <class T>
void check_tile(const T* p, unsigned ldm, const char* op) {
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0) ::emu::fail(op, "the tile pointer is not 32-byte aligned");
    if ((ldm * sizeof(T)) % 16 != 0) ::emu::fail(op, "the leading dimension is not a multiple of 16 bytes");
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, T v) {
    ::emu::warp_barrier(::emu::WarpOp::kWmma);
    for (auto& e : f.x) e = detail::widen(v);
}

// A or B, row-major in memory: element (r, c) at p[r * ldm + c].
template <class Use, int M, int N, int K, class T>
void load_matrix_sync(fragment<Use, M, N, K, T, row_major>& f, const T* p, unsigned ldm) {
    ::emu::warp_barrier(::emu::WarpOp::kWmma);
    detail::check_tile(p, ldm, "wmma::load_matrix_sync");
    using F = fragment<Use, M, N, K, T, row_major>;
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = detail::widen(p[static_cast<size_t>(r) * ldm + c]);
}

// d = a b + c. Every lane holds the same fragments (the loads' arguments are warp-uniform), so the
// first lane past the barrier computes the product into its warp's scratch and the others copy it,
// after checking that their fragments are the ones it used (a lane with others is an error, the
// lanes' loads were not uniform). out[i][j] = c[i][j] + a[i][0] b[0][j] + ... in k order, fp32.
template <int M, int N, int K, class TC, class TA, class TB>
void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, row_major>& a,
              const fragment<matrix_b, M, N, K, TB, row_major>& b, const fragment<accumulator, M, N, K, TC>& c) {
    struct Shared {
        uint64_t call;
        float a[M * K], b[K * N], c[M * N], d[M * N];
    };
    static_assert(sizeof(Shared) <= ::emu::kWarpScratchBytes, "WMMA tile too large for the warp scratch");
    ::emu::warp_barrier(::emu::WarpOp::kWmma);
    auto* w = static_cast<Shared*>(::emu::warp_scratch());
    const uint64_t call = ::emu::next_collective();
    if (w->call != call) {
        std::memcpy(w->a, a.x, sizeof(w->a));
        std::memcpy(w->b, b.x, sizeof(w->b));
        std::memcpy(w->c, c.x, sizeof(w->c));
        for (int i = 0; i < M * N; ++i) w->d[i] = c.x[i];
        for (int i = 0; i < M; ++i)
            for (int k = 0; k < K; ++k)
                for (int j = 0; j < N; ++j) w->d[i * N + j] += a.x[i * K + k] * b.x[k * N + j];
        w->call = call;
    } else if (std::memcmp(w->a, a.x, sizeof(w->a)) || std::memcmp(w->b, b.x, sizeof(w->b)) ||
               std::memcmp(w->c, c.x, sizeof(w->c))) {
        ::emu::fail("wmma::mma_sync", "the lanes' fragments differ (their loads' arguments were not warp-uniform)");
    }
    std::memcpy(d.x, w->d, sizeof(w->d));
}

template <int M, int N, int K, class T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) {
    static_assert(std::is_same_v<T, float>, "fp32 accumulators only (the kernels' WMMA)");
    ::emu::warp_barrier(::emu::WarpOp::kWmma);
    detail::check_tile(p, ldm, "wmma::store_matrix_sync");
    const int lane = static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32;
    for (int e = lane; e < M * N; e += 32) {  // this lane's share only (see above)
        const int r = e / N, c = e % N;
        const size_t at = layout == mem_row_major ? static_cast<size_t>(r) * ldm + c : static_cast<size_t>(c) * ldm + r;
        p[at] = f.x[e];
    }
}

}  // namespace wmma
}  // namespace nvcuda
