// Elementwise binary ops with NumPy broadcasting: float32 (every function) and 8-bit QLinearAdd / QLinearMul. The
// dims of a row are merged where both operands stay contiguous, so the inner runs are long; an 8-bit operand that is
// constant along the inner run is replicated into scratch once per run and the path's vector loop does the rest.
#include "kernels/kernel_api.h"
#include "kernels/op_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace qatml {
namespace kernels {
namespace {

float binary_one(int32_t func, float a, float b) { return math::binary_value(func, a, b); }

void float_run(int32_t func, const float* a, int64_t as, const float* b, int64_t bs, int64_t n, float* y) {
    if (as == 1 && bs == 1) {  // the common shapes as plain loops the compiler vectorises
        if (func == QATML_BINARY_ADD) {
            for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
            return;
        }
        if (func == QATML_BINARY_MUL) {
            for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
            return;
        }
    } else if (as == 1 && bs == 0) {
        const float v = b[0];
        if (func == QATML_BINARY_ADD) {
            for (int64_t i = 0; i < n; ++i) y[i] = a[i] + v;
            return;
        }
        if (func == QATML_BINARY_MUL) {
            for (int64_t i = 0; i < n; ++i) y[i] = a[i] * v;
            return;
        }
    }
    for (int64_t i = 0; i < n; ++i) y[i] = binary_one(func, a[i * as], b[i * bs]);
}

void byte_run(const BinaryPlan& p, const uint8_t* a, int64_t as, const uint8_t* b, int64_t bs, int64_t n, uint8_t* y, uint8_t* scratch) {
    if (as == 0) {
        std::memset(scratch, a[0], static_cast<size_t>(n));
        a = scratch;
    }
    if (bs == 0) {
        std::memset(scratch + n, b[0], static_cast<size_t>(n));
        b = scratch + n;
    }
    const bool sg = p.add.is_signed;
    if (p.func == QATML_BINARY_ADD) {
        add_8bit(p.simd, p.add, a, b, n, y);
        return;
    }
    int64_t i = p.simd ? p.simd->mul(a, b, n, sg, p.add.za, p.add.zb, p.mul_ratio, p.add.zy, p.add.lo, p.add.hi, y) : 0;
    for (; i < n; ++i) {
        const int32_t av = sg ? int32_t(int8_t(a[i])) : int32_t(a[i]), bv = sg ? int32_t(int8_t(b[i])) : int32_t(b[i]);
        y[i] = static_cast<uint8_t>(mul_one(av, bv, p.add.za, p.add.zb, p.mul_ratio, p.add.zy, p.add.lo, p.add.hi));
    }
}

}  // namespace

int32_t mul_one(int32_t a, int32_t b, int32_t za, int32_t zb, float ratio, int32_t zy, int32_t lo, int32_t hi) {
    return math::mul_q8(a, b, za, zb, ratio, zy, lo, hi);
}

void binary_prepare(BinaryPlan& p, int32_t func, int32_t type, const int64_t* a_dims, int a_rank, const int64_t* b_dims, int b_rank,
                    const int64_t* y_dims, int y_rank, bool b_per_row, const SimdKernels* simd) {
    p.func = func;
    p.type = type;
    p.simd = simd;
    int64_t yd[4] = {1, 1, 1, 1}, ad[4] = {1, 1, 1, 1}, bd[4] = {1, 1, 1, 1};
    for (int i = 0; i < y_rank; ++i) yd[4 - y_rank + i] = y_dims[i];
    for (int i = 0; i < a_rank; ++i) ad[4 - a_rank + i] = a_dims[i];
    for (int i = 0; i < b_rank; ++i) bd[4 - b_rank + i] = b_dims[i];
    int64_t as[4], bs[4], an = 1, bn = 1;
    for (int i = 3; i >= 0; --i) {
        as[i] = ad[i] == 1 ? 0 : an;
        bs[i] = bd[i] == 1 ? 0 : bn;
        an *= ad[i];
        bn *= bd[i];
    }
    p.a_row = an;
    p.b_row = b_per_row ? bn : 0;
    p.y_row = yd[0] * yd[1] * yd[2] * yd[3];
    // Merge dim i into i + 1 where both operands are contiguous across them; drop dims of size 1.
    int64_t md[4], ma[4], mb[4];
    int r = 0;
    for (int i = 0; i < 4; ++i) {
        if (yd[i] == 1) continue;
        if (r > 0 && ma[r - 1] == as[i] * yd[i] && mb[r - 1] == bs[i] * yd[i]) {
            md[r - 1] *= yd[i];
            ma[r - 1] = as[i];
            mb[r - 1] = bs[i];
            continue;
        }
        md[r] = yd[i];
        ma[r] = as[i];
        mb[r] = bs[i];
        ++r;
    }
    if (r == 0) {
        md[0] = 1;
        ma[0] = mb[0] = 0;
        r = 1;
    }
    p.rank = r;
    for (int i = 0; i < 4; ++i) {
        p.dims[i] = i < r ? md[i] : 1;
        p.a_strides[i] = i < r ? ma[i] : 0;
        p.b_strides[i] = i < r ? mb[i] : 0;
    }
    const int last = r - 1;
    p.scratch_bytes = type != QATML_TYPE_FLOAT32 && (p.a_strides[last] == 0 || p.b_strides[last] == 0) ? 2 * p.dims[last] : 0;
}

void binary_run(const BinaryPlan& p, int64_t rows, const void* a, const void* b, void* y, uint8_t* scratch) {
    const int last = p.rank - 1;
    const int64_t esz = p.type == QATML_TYPE_FLOAT32 ? 4 : 1, run = p.dims[last];
    int64_t outer[3] = {1, 1, 1}, oa[3] = {0, 0, 0}, ob[3] = {0, 0, 0};
    for (int i = 0; i < last; ++i) {
        outer[3 - last + i] = p.dims[i];
        oa[3 - last + i] = p.a_strides[i];
        ob[3 - last + i] = p.b_strides[i];
    }
    for (int64_t row = 0; row < rows; ++row) {
        const uint8_t* ar = static_cast<const uint8_t*>(a) + row * p.a_row * esz;
        const uint8_t* br = static_cast<const uint8_t*>(b) + row * p.b_row * esz;
        uint8_t* yr = static_cast<uint8_t*>(y) + row * p.y_row * esz;
        for (int64_t i0 = 0; i0 < outer[0]; ++i0)
            for (int64_t i1 = 0; i1 < outer[1]; ++i1)
                for (int64_t i2 = 0; i2 < outer[2]; ++i2) {
                    const int64_t ai = i0 * oa[0] + i1 * oa[1] + i2 * oa[2], bi = i0 * ob[0] + i1 * ob[1] + i2 * ob[2];
                    uint8_t* yo = yr + ((i0 * outer[1] + i1) * outer[2] + i2) * run * esz;
                    if (esz == 4)
                        float_run(p.func, reinterpret_cast<const float*>(ar) + ai, p.a_strides[last], reinterpret_cast<const float*>(br) + bi,
                                  p.b_strides[last], run, reinterpret_cast<float*>(yo));
                    else
                        byte_run(p, ar + ai, p.a_strides[last], br + bi, p.b_strides[last], run, yo, scratch);
                }
    }
}

}  // namespace kernels
}  // namespace qatml
