// The float MatMul with constant weights (plan op FLOAT_GEMM) on the float convolution's kernels (float_kernels.h):
// the weights [K, N] packed once into the kernel's column panels [ceil(N / nr)][K][nr] (the bias beside them, nr
// values a panel), the input vectors of all rows of a run packed per chunk into the kernel's row tiles
// [ceil(V / mr)][K][mr] in scratch, then every panel multiplied by the chunk's vectors. Each output is the kernel's
// FMA chain in K order from 0, then + bias[j]; the scalar path is the reference loop (float_gemm_reference).
#include "kernels/float_kernels.h"
#include "kernels/kernel_api.h"

#include <algorithm>

namespace qatml {
namespace kernels {
namespace {

// Bytes of packed input vectors a chunk may fill (each panel of weights is multiplied by all of them in turn).
constexpr int64_t kVectorChunkBytes = 256 * 1024;
// Weights whose panels would exceed this run the reference loop (the plan loader bounds them far below).
constexpr int64_t kMaxPackedBytes = int64_t(1) << 31;

// dst[(v / mr) * k * mr + kk * mr + v % mr] = x[v * k + kk] for count vectors; the last tile's missing rows zero.
void pack_vectors(const float* x, int64_t count, int64_t k, int64_t mr, float* dst) {
    for (int64_t v0 = 0; v0 < count; v0 += mr) {
        const int64_t rows = std::min(mr, count - v0);
        float* tile = dst + v0 * k;
        for (int64_t kk = 0; kk < k; ++kk) {
            float* d = tile + kk * mr;
            for (int64_t r = 0; r < rows; ++r) d[r] = x[(v0 + r) * k + kk];
            for (int64_t r = rows; r < mr; ++r) d[r] = 0.0f;
        }
    }
}

}  // namespace

void float_gemm_prepare(FloatGemmPlan& p, int isa) {
    p.fast = float_kernels_for(isa);
    p.panels.clear();
    p.panel_bias.clear();
    p.chunk = 0;
    if (!p.fast) return;
    const int64_t mr = p.fast->mr, nr = p.fast->nr, count = (p.n + nr - 1) / nr;
    if (p.k > kMaxPackedBytes / (4 * nr) / count || p.k > kMaxPackedBytes / (4 * mr)) {
        p.fast = nullptr;
        return;
    }
    p.panels.assign(static_cast<size_t>(count * p.k * nr), 0.0f);
    p.panel_bias.assign(static_cast<size_t>(count * nr), 0.0f);
    for (int64_t j = 0; j < count; ++j)
        p.fast->pack_panel(p.weights + j * nr, p.n, p.k, std::min(nr, p.n - j * nr), p.panels.data() + j * p.k * nr);
    if (p.bias) std::copy(p.bias, p.bias + p.n, p.panel_bias.begin());
    p.chunk = std::max(mr, kVectorChunkBytes / (4 * p.k) / mr * mr);
}

int64_t float_gemm_scratch_bytes(const FloatGemmPlan& p, int64_t vectors) {
    if (!p.fast) return 0;
    const int64_t mr = p.fast->mr;
    return round_up(std::min(p.chunk, (vectors + mr - 1) / mr * mr) * p.k * 4, 64);
}

void float_gemm_run(const FloatGemmPlan& p, int64_t vectors, const float* x, float* y, uint8_t* scratch) {
    if (!p.fast) {
        float_gemm_reference(p, vectors, x, y);
        return;
    }
    const int64_t nr = p.fast->nr;
    float* packed = reinterpret_cast<float*>(scratch);
    FloatGemmCall call{};
    call.a = packed;
    call.k = p.k;
    call.ldc = p.n;
    for (int64_t v0 = 0; v0 < vectors; v0 += p.chunk) {
        call.m = std::min(p.chunk, vectors - v0);
        pack_vectors(x + v0 * p.k, call.m, p.k, p.fast->mr, packed);
        for (int64_t j = 0; j < p.n; j += nr) {
            call.b = p.panels.data() + j * p.k;
            call.cols = std::min(nr, p.n - j);
            call.col_bias = p.panel_bias.data() + j;
            call.c = y + v0 * p.n + j;
            p.fast->gemm(call);
        }
    }
}

}  // namespace kernels
}  // namespace qatml
