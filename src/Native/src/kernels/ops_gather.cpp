// Ops of models with integer inputs (token ids, attention masks): the gather of embedding rows, integer casts, the
// float output of an integer GEMM and a float MatMul with constant weights. Plain loops: gathers are row copies,
// casts and scales are vectorised by the compiler, and the float GEMM reads each row of W once per block of vectors.
#include "kernels/kernel_api.h"

#include <algorithm>
#include <cstring>

namespace qatml {
namespace kernels {

int64_t gather_index(const uint8_t* indices, int32_t type, int64_t i) {
    if (type == QATML_TYPE_INT32) {
        int32_t v;
        std::memcpy(&v, indices + i * 4, 4);
        return v;
    }
    int64_t v;
    std::memcpy(&v, indices + i * 8, 8);
    return v;
}

int64_t gather_run(const GatherPlan& plan, int64_t rows, const uint8_t* indices, uint8_t* y) {
    const int64_t total = rows * plan.count;
    for (int64_t p = 0; p < total; ++p) {
        int64_t i = plan.fixed ? plan.fixed[p % plan.count] : gather_index(indices, plan.index_type, p);
        if (i < -plan.rows || i >= plan.rows) return p;
        if (i < 0) i += plan.rows;
        std::memcpy(y + p * plan.row_bytes, plan.table + i * plan.row_bytes, static_cast<size_t>(plan.row_bytes));
    }
    return -1;
}

void cast_run(int32_t x_type, int32_t y_type, int64_t count, const uint8_t* x, uint8_t* y) {
    for (int64_t i = 0; i < count; ++i) {
        const int64_t v = gather_index(x, x_type, i);
        if (y_type == QATML_TYPE_FLOAT32) {
            const float f = static_cast<float>(v);
            std::memcpy(y + i * 4, &f, 4);
        } else if (y_type == QATML_TYPE_INT32) {
            const int32_t w = static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(v)));
            std::memcpy(y + i * 4, &w, 4);
        } else {
            std::memcpy(y + i * 8, &v, 8);
        }
    }
}

void int32_to_scaled_float(const float* scale, int64_t vectors, int64_t n, uint8_t* y) {
    for (int64_t v = 0; v < vectors; ++v) {
        uint8_t* row = y + v * n * 4;
        for (int64_t j = 0; j < n; ++j) {
            int32_t acc;
            std::memcpy(&acc, row + j * 4, 4);
            const float f = static_cast<float>(acc) * scale[j];
            std::memcpy(row + j * 4, &f, 4);
        }
    }
}

void float_gemm_reference(const FloatGemmPlan& plan, int64_t vectors, const float* x, float* y) {
    const int64_t k = plan.k, n = plan.n;
    // Blocks of vectors whose outputs stay in L2 (about 256 KiB): each row of W is read once per block, not once per
    // vector (W of a transformer's feed-forward layer is megabytes). Each output sums in k order, then adds the bias.
    const int64_t block = std::max<int64_t>(1, 65536 / n);
    for (int64_t v0 = 0; v0 < vectors; v0 += block) {
        const int64_t count = std::min(block, vectors - v0);
        float* __restrict yb = y + v0 * n;
        std::fill(yb, yb + count * n, 0.0f);
        for (int64_t kk = 0; kk < k; ++kk) {
            const float* __restrict w = plan.weights + kk * n;
            for (int64_t v = 0; v < count; ++v) {
                const float a = x[(v0 + v) * k + kk];
                float* __restrict yv = yb + v * n;
                for (int64_t j = 0; j < n; ++j) yv[j] += a * w[j];
            }
        }
        if (plan.bias)
            for (int64_t v = 0; v < count; ++v)
                for (int64_t j = 0; j < n; ++j) yb[v * n + j] += plan.bias[j];
    }
}

}  // namespace kernels
}  // namespace qatml
