// MatMul of two activations (attention scores and context): 8-bit x 8-bit with an exact int32 sum of
// (a - za)(b - zb), requantized once, or float32. B is transposed into scratch as 16-bit differences per matrix,
// so every output is one dot product of two contiguous int16 rows (the compiler vectorises it with pmaddwd).
#include "kernels/kernel_api.h"

#include <cstring>

namespace qatml {
namespace kernels {
namespace {
inline int32_t byte_value(const uint8_t* p, int64_t i, bool is_signed) { return is_signed ? int32_t(int8_t(p[i])) : int32_t(p[i]); }
}  // namespace

void matmul_prepare(MatMulPlan& p) {
    p.scratch_bytes = p.y_type == QATML_TYPE_FLOAT32 ? 0 : round_up((p.n + 1) * p.k * 2, 64);
    if (p.y_type != QATML_TYPE_FLOAT32) type_range(p.y_type, &p.lo, &p.hi);
}

void matmul_run(const MatMulPlan& p, int64_t rows, const uint8_t* a, const uint8_t* b, uint8_t* y, uint8_t* scratch) {
    const int64_t mk = p.m * p.k, kn = p.k * p.n, mn = p.m * p.n;
    const int64_t b_per_row = p.b_shared ? kn : p.count * kn;
    if (p.y_type == QATML_TYPE_FLOAT32) {
        for (int64_t row = 0; row < rows; ++row)
            for (int64_t c = 0; c < p.count; ++c) {
                const float* am = reinterpret_cast<const float*>(a) + (row * p.count + c) * mk;
                const float* bm = reinterpret_cast<const float*>(b) + row * b_per_row + (p.b_shared ? 0 : c * kn);
                float* ym = reinterpret_cast<float*>(y) + (row * p.count + c) * mn;
                for (int64_t i = 0; i < p.m; ++i) {
                    float* yr = ym + i * p.n;
                    for (int64_t j = 0; j < p.n; ++j) yr[j] = 0.0f;
                    for (int64_t kk = 0; kk < p.k; ++kk) {
                        const float v = am[i * p.k + kk];
                        const float* br = bm + kk * p.n;
                        for (int64_t j = 0; j < p.n; ++j) yr[j] += v * br[j];
                    }
                }
            }
        return;
    }
    const bool as = p.a_type == QATML_TYPE_INT8, bs = p.b_type == QATML_TYPE_INT8, ys = p.y_type == QATML_TYPE_INT8;
    int16_t* bt = reinterpret_cast<int16_t*>(scratch);  // [N][K]
    int16_t* ar = bt + p.n * p.k;                       // [K]
    for (int64_t row = 0; row < rows; ++row)
        for (int64_t c = 0; c < p.count; ++c) {
            const uint8_t* am = a + (row * p.count + c) * mk;
            const uint8_t* bm = b + row * b_per_row + (p.b_shared ? 0 : c * kn);
            uint8_t* ym = y + (row * p.count + c) * mn;
            if (c == 0 || !p.b_shared)  // a shared B is transposed once per row
                for (int64_t kk = 0; kk < p.k; ++kk)
                    for (int64_t j = 0; j < p.n; ++j) bt[j * p.k + kk] = static_cast<int16_t>(byte_value(bm, kk * p.n + j, bs) - p.zb);
            for (int64_t i = 0; i < p.m; ++i) {
                for (int64_t kk = 0; kk < p.k; ++kk) ar[kk] = static_cast<int16_t>(byte_value(am, i * p.k + kk, as) - p.za);
                for (int64_t j = 0; j < p.n; ++j) {
                    const int16_t* bc = bt + j * p.k;
                    int32_t acc = 0;
                    for (int64_t kk = 0; kk < p.k; ++kk) acc += int32_t(ar[kk]) * int32_t(bc[kk]);
                    const int32_t v = requant_one(acc, p.mult, p.zy, p.lo, p.hi);
                    ym[i * p.n + j] = ys ? static_cast<uint8_t>(static_cast<int8_t>(v)) : static_cast<uint8_t>(v);
                }
            }
        }
}

}  // namespace kernels
}  // namespace qatml
