// The CUDA kernels of the engine's wider ops (UNARY .. FLOAT_CONV, GATHER, CAST, FLOAT_GEMM; wide_ops.cu): their parameters and the work of one
// output element (or one softmax column, one layer-norm group), written once for the device and the host. Plain C++
// outside nvcc: the CPU tests run these very functions over every element against the CPU engine.
//
// Every kernel walks the logical (plan-order) elements of its output row by row and reads and writes through the
// tensors' layouts (ops.h storage_index): the device runner keeps 8-bit [C, H, W] tensors channels-last, and these
// ops index in plan order, so a channels-last input or output costs an index map, not a copy. Float tensors are always
// stored in plan order. Arithmetic: kernels/op_math.h, the CPU kernels' own.
#pragma once

#include "cuda/igemm.h"
#include "cuda/ops.h"
#include "kernels/kernel_api.h"
#include "kernels/op_math.h"
#include "qatml/qatml.h"

namespace qatml {
namespace cuda {

// Element `e` of a row of `row` elements in layout l: its offset from the tensor's start.
QATML_HD int64_t element_at(const Layout& l, int64_t row, int64_t row_elems, int64_t e) { return row * row_elems + storage_index(l, e); }

// One element of 1 or 4 bytes.
QATML_HD void copy_element(const void* x, int64_t xi, void* y, int64_t yi, int32_t elem) {
    if (elem == 4)
        static_cast<uint32_t*>(y)[yi] = static_cast<const uint32_t*>(x)[xi];
    else
        static_cast<uint8_t*>(y)[yi] = static_cast<const uint8_t*>(x)[xi];
}

QATML_HD int32_t byte_value(const void* p, int64_t i, int32_t is_signed) {
    return is_signed ? int32_t(static_cast<const int8_t*>(p)[i]) : int32_t(static_cast<const uint8_t*>(p)[i]);
}

// ---- UNARY: float32, any shape ----------------------------------------------------------------------------------
struct UnaryArgs {
    const float* x;
    float* y;
    int64_t count;  // rows * elements
    int32_t func;
    float alpha, beta;
};
QATML_HD void unary_element(const UnaryArgs& p, int64_t i) { p.y[i] = math::unary_value(p.func, p.alpha, p.beta, p.x[i]); }

// ---- BINARY: NumPy broadcasting over merged dims (kernels::BinaryPlan's) ----------------------------------------
struct BinaryArgs {
    const void* a;
    const void* b;
    void* y;
    Layout la, lb, ly;
    int64_t rows;
    kernels::BinaryPlan plan;  // the CPU's: merged dims (the last fastest), strides and rows in elements, 8-bit constants
};
QATML_HD void binary_element(const BinaryArgs& p, int64_t i) {
    const kernels::BinaryPlan& q = p.plan;
    const int64_t row = i / q.y_row;
    int64_t e = i - row * q.y_row, ai = 0, bi = 0;
    for (int32_t d = q.rank - 1; d >= 0; --d) {
        const int64_t t = e / q.dims[d], idx = e - t * q.dims[d];
        ai += idx * q.a_strides[d];
        bi += idx * q.b_strides[d];
        e = t;
    }
    const int64_t ao = element_at(p.la, row, q.a_row, ai), bo = element_at(p.lb, row, q.b_row, bi);
    const int64_t yo = element_at(p.ly, row, q.y_row, i - row * q.y_row);
    if (q.type == QATML_TYPE_FLOAT32) {
        static_cast<float*>(p.y)[yo] = math::binary_value(q.func, static_cast<const float*>(p.a)[ao], static_cast<const float*>(p.b)[bo]);
        return;
    }
    const kernels::AddParams& c = q.add;
    const int32_t sg = q.type == QATML_TYPE_INT8, av = byte_value(p.a, ao, sg), bv = byte_value(p.b, bo, sg);
    const int32_t v = q.func == QATML_BINARY_ADD ? math::add_q8(av, bv, c.za, c.zb, c.ra, c.rb, c.zy, c.lo, c.hi)
                                                 : math::mul_q8(av, bv, c.za, c.zb, q.mul_ratio, c.zy, c.lo, c.hi);
    static_cast<uint8_t*>(p.y)[yo] = static_cast<uint8_t>(v);
}

// ---- CONCAT: one launch per input, which fills its part of every outer block of y -------------------------------
struct ConcatArgs {
    const void* x;
    void* y;
    Layout lx, ly;
    int64_t rows, x_row, y_row;    // elements per row
    int64_t part, y_block, start;  // elements of x per outer block; of y per block; x's first element in a block
    int32_t elem;
    const uint8_t* table;  // 8-bit requantization table (256 bytes) or NULL
};
QATML_HD void concat_element(const ConcatArgs& p, int64_t i) {
    const int64_t row = i / p.x_row, t = i - row * p.x_row, o = t / p.part;
    const int64_t xo = element_at(p.lx, row, p.x_row, t), yo = element_at(p.ly, row, p.y_row, o * p.y_block + p.start + (t - o * p.part));
    if (p.table)
        static_cast<uint8_t*>(p.y)[yo] = p.table[static_cast<const uint8_t*>(p.x)[xo]];
    else
        copy_element(p.x, xo, p.y, yo, p.elem);
}

// ---- COPY: y (dense in dims' order) = x[offset + sum i_k strides[k]] ----------------------------------------------
struct CopyArgs {
    const void* x;
    void* y;
    Layout lx, ly;
    int64_t rows;
    kernels::CopyPlan plan;  // the CPU's: dims, strides, offset and rows in elements
};
QATML_HD void copy_op_element(const CopyArgs& p, int64_t i) {
    const kernels::CopyPlan& q = p.plan;
    const int64_t row = i / q.y_row, ye = i - row * q.y_row;
    int64_t e = ye, src = q.offset;
    for (int32_t d = q.rank - 1; d >= 0; --d) {
        const int64_t t = e / q.dims[d];
        src += (e - t * q.dims[d]) * q.strides[d];
        e = t;
    }
    copy_element(p.x, element_at(p.lx, row, q.x_row, src), p.y, element_at(p.ly, row, q.y_row, ye), static_cast<int32_t>(q.elem));
}

// ---- PAD: y element o comes from x element (o - begin) / step of each dim when that lands on one, else `value` ----
struct PadArgs {
    const void* x;
    void* y;
    Layout lx, ly;
    int64_t rows, x_row, y_row;
    int64_t x_dims[4], y_dims[4], begins[4], steps[4];  // rank 4, leading 1s
    int32_t elem;
    uint32_t value;  // one element's bytes (8-bit: the low byte)
};
QATML_HD void pad_element(const PadArgs& p, int64_t i) {
    const int64_t row = i / p.y_row, ye = i - row * p.y_row;
    int64_t e = ye, src = 0, scale = 1;
    bool inside = true;
    for (int32_t d = 3; d >= 0; --d) {
        const int64_t q = e / p.y_dims[d], t = e - q * p.y_dims[d] - p.begins[d];
        e = q;
        if (t < 0 || t % p.steps[d] != 0 || t / p.steps[d] >= p.x_dims[d]) {
            inside = false;
            break;
        }
        src += (t / p.steps[d]) * scale;
        scale *= p.x_dims[d];
    }
    const int64_t yo = element_at(p.ly, row, p.y_row, ye);
    if (inside)
        copy_element(p.x, element_at(p.lx, row, p.x_row, src), p.y, yo, p.elem);
    else if (p.elem == 4)
        static_cast<uint32_t*>(p.y)[yo] = p.value;
    else
        static_cast<uint8_t*>(p.y)[yo] = static_cast<uint8_t>(p.value);
}

// ---- RESIZE of [C, H, W] rows: nearest (y0, x0) or bilinear (y0, y1, dy; x0, x1, dx) -----------------------------
struct ResizeArgs {
    const void* x;
    void* y;
    Layout lx, ly;
    int64_t rows, c, h, w, oh, ow;
    int32_t bilinear, type;  // type: FLOAT32, UINT8 or INT8
    const int32_t *y0, *y1, *x0, *x1;
    const float *dy, *dx;
};
QATML_HD float resize_load(const ResizeArgs& p, int64_t row, int64_t ch, int64_t yy, int64_t xx) {
    const int64_t at = element_at(p.lx, row, p.c * p.h * p.w, (ch * p.h + yy) * p.w + xx);
    if (p.type == QATML_TYPE_FLOAT32) return static_cast<const float*>(p.x)[at];
    return static_cast<float>(byte_value(p.x, at, p.type == QATML_TYPE_INT8));
}
QATML_HD void resize_element(const ResizeArgs& p, int64_t i) {
    const int64_t y_row = p.c * p.oh * p.ow, row = i / y_row, ye = i - row * y_row;
    const int64_t ch = ye / (p.oh * p.ow), oy = (ye / p.ow) % p.oh, ox = ye % p.ow;
    const int64_t yo = element_at(p.ly, row, y_row, ye);
    if (!p.bilinear) {
        copy_element(p.x, element_at(p.lx, row, p.c * p.h * p.w, (ch * p.h + p.y0[oy]) * p.w + p.x0[ox]), p.y, yo, p.type == QATML_TYPE_FLOAT32 ? 4 : 1);
        return;
    }
    const float v = math::bilinear_value(p.dy[oy], p.dx[ox], resize_load(p, row, ch, p.y0[oy], p.x0[ox]), resize_load(p, row, ch, p.y0[oy], p.x1[ox]),
                                         resize_load(p, row, ch, p.y1[oy], p.x0[ox]), resize_load(p, row, ch, p.y1[oy], p.x1[ox]));
    if (p.type == QATML_TYPE_FLOAT32)
        static_cast<float*>(p.y)[yo] = v;
    else
        static_cast<uint8_t*>(p.y)[yo] = static_cast<uint8_t>(math::saturate_round(v, p.type == QATML_TYPE_INT8 ? -128 : 0, p.type == QATML_TYPE_INT8 ? 127 : 255));
}

// ---- SOFTMAX / REDUCE_MEAN (one column of n values, inner apart) and LAYERNORM (one group of n) -------------------
struct AxisArgs {
    const float* x;
    float* y;
    int64_t groups, n, inner;  // groups: rows * outer
    float epsilon;
    const float *scale, *bias;  // LAYERNORM
};
QATML_HD void softmax_column(const AxisArgs& p, int64_t i) {
    const int64_t g = i / p.inner, j = i - g * p.inner, at = g * p.n * p.inner + j;
    math::softmax_values(p.x + at, p.y + at, p.n, p.inner);
}
QATML_HD void reduce_mean_column(const AxisArgs& p, int64_t i) {
    const int64_t g = i / p.inner, j = i - g * p.inner;
    p.y[i] = math::mean_of(p.x + g * p.n * p.inner + j, p.n, p.inner);
}
QATML_HD void layernorm_group(const AxisArgs& p, int64_t g) { math::layernorm_values(p.x + g * p.n, p.y + g * p.n, p.n, p.epsilon, p.scale, p.bias); }

// ---- MATMUL of two activations: per row, count products [M, K] x [K, N] ------------------------------------------
struct MatMulArgs {
    const void* a;
    const void* b;
    void* y;
    Layout la, lb, ly;
    int64_t rows;
    kernels::MatMulPlan plan;  // the CPU's: count products [M, K] x [K, N] per row (b_shared: one [K, N]), types, constants
};
// Float: the products added in K order from 0 (the CPU kernel's order); 8-bit: the exact sum of (a - za)(b - zb),
// requantized once.
QATML_HD void matmul_element(const MatMulArgs& p, int64_t i) {
    const kernels::MatMulPlan& q = p.plan;
    const int64_t mn = q.m * q.n, y_row = q.count * mn, row = i / y_row, ye = i - row * y_row;
    const int64_t c = ye / mn, r = (ye / q.n) % q.m, col = ye % q.n;
    const int64_t a_row = q.count * q.m * q.k, b_row = q.b_shared ? q.k * q.n : q.count * q.k * q.n;
    const int64_t a0 = (c * q.m + r) * q.k, b0 = (q.b_shared ? 0 : c * q.k * q.n) + col;
    const int64_t yo = element_at(p.ly, row, y_row, ye);
    if (q.y_type == QATML_TYPE_FLOAT32) {
        const float* a = static_cast<const float*>(p.a) + row * a_row + a0;
        const float* b = static_cast<const float*>(p.b) + row * b_row + b0;
        float acc = 0.0f;
        for (int64_t kk = 0; kk < q.k; ++kk) acc += a[kk] * b[kk * q.n];
        static_cast<float*>(p.y)[yo] = acc;
        return;
    }
    uint32_t acc = 0;  // wraps like the CPU's int32 sum
    for (int64_t kk = 0; kk < q.k; ++kk) {
        const int32_t av = byte_value(p.a, element_at(p.la, row, a_row, a0 + kk), q.a_type == QATML_TYPE_INT8) - q.za;
        const int32_t bv = byte_value(p.b, element_at(p.lb, row, b_row, b0 + kk * q.n), q.b_type == QATML_TYPE_INT8) - q.zb;
        acc += static_cast<uint32_t>(av * bv);
    }
    static_cast<uint8_t*>(p.y)[yo] = static_cast<uint8_t>(requant(static_cast<int32_t>(acc), q.mult, q.zy, q.lo, q.hi));
}

// ---- FLOAT_CONV: direct, the bias then every (channel, ky, kx) tap in the CPU kernel's order ------------------------
struct FloatConvArgs {
    const float* x;
    float* y;
    int64_t rows, c, h, w, m, cpg, mpg, kh, kw, oh, ow, sh, sw, pt, pl, dh, dw;
    const float* weights;  // [M, C/g, kH, kW]
    const float* bias;     // M or NULL
};
// The CPU's vector kernels' order (float_body.inc): taps in (ci, ky, kx) order fused-multiply-added onto 0, padding as
// 0 * w (so even the sign of a zero sum agrees), the bias added last.
QATML_HD void float_conv_element(const FloatConvArgs& p, int64_t i) {
    const int64_t plane = p.oh * p.ow, img = i / (p.m * plane), co = (i / plane) % p.m, oy = (i % plane) / p.ow, ox = i % p.ow;
    const int64_t g = co / p.mpg;
    float acc = 0.0f;
    for (int64_t ci = 0; ci < p.cpg; ++ci) {
        const float* xp = p.x + (img * p.c + g * p.cpg + ci) * p.h * p.w;
        const float* wk = p.weights + (co * p.cpg + ci) * p.kh * p.kw;
        for (int64_t ky = 0; ky < p.kh; ++ky) {
            const int64_t iy = oy * p.sh - p.pt + ky * p.dh;
            for (int64_t kx = 0; kx < p.kw; ++kx) {
                const int64_t ix = ox * p.sw - p.pl + kx * p.dw;
                const float xv = iy < 0 || iy >= p.h || ix < 0 || ix >= p.w ? 0.0f : xp[iy * p.w + ix];
                acc = math::fma_of(wk[ky * p.kw + kx], xv, acc);
            }
        }
    }
    p.y[i] = acc + (p.bias ? p.bias[co] : 0.0f);
}

// ---- integer inputs (token ids, masks): GATHER, CAST; FLOAT_GEMM ---------------------------------------------------
// INT32 / INT64 tensors and float tensors are stored in plan order; only an 8-bit GATHER output may be channels-last.

// No index outside a table (what a run's error slots start as: every byte 0x7f).
constexpr int64_t kNoBadIndex = 0x7f7f7f7f7f7f7f7fLL;

// Index i of an INT32 / INT64 tensor.
QATML_HD int64_t index_value(const void* p, int32_t type, int64_t i) {
    return type == QATML_TYPE_INT32 ? int64_t(static_cast<const int32_t*>(p)[i]) : static_cast<const int64_t*>(p)[i];
}

// The table row index i names (ONNX: -rows..rows-1, negative from the end), or -1 outside the table.
QATML_HD int64_t table_row(int64_t i, int64_t rows) {
    if (i < -rows || i >= rows) return -1;
    return i < 0 ? i + rows : i;
}

struct GatherArgs {
    const void* indices;   // INT32 / INT64 tensor [rows][count], or NULL with fixed
    const int64_t* fixed;  // constant indices (count, checked at load), or NULL
    const void* table;     // [table_rows][row_elems] of y's type
    void* y;
    Layout ly;
    int64_t rows, count, table_rows, row_elems;
    int32_t index_type, elem;  // elem: bytes of y's type (1 or 4)
    // Error slot: [0] the first flat position (row * count + i) whose index is outside the table, kNoBadIndex if
    // none; [1] that index (gather_report). Outside the table nothing is read or written.
    int64_t* bad;
};
QATML_HD void gather_element(const GatherArgs& p, int64_t i) {
    const int64_t y_row = p.count * p.row_elems, row = i / y_row, e = i - row * y_row, pos = e / p.row_elems, j = e - pos * p.row_elems;
    const int64_t flat = row * p.count + pos;
    const int64_t src = table_row(p.fixed ? p.fixed[pos] : index_value(p.indices, p.index_type, flat), p.table_rows);
    if (src >= 0) {
        copy_element(p.table, src * p.row_elems + j, p.y, element_at(p.ly, row, y_row, e), p.elem);
        return;
    }
#if defined(__CUDA_ARCH__)
    atomicMin(reinterpret_cast<unsigned long long*>(p.bad), static_cast<unsigned long long>(flat));
#else
    if (flat < p.bad[0]) p.bad[0] = flat;
#endif
}
// After the gather (one element): the bad index itself, while the indices tensor still holds it.
QATML_HD void gather_report(const GatherArgs& p, int64_t) {
    if (p.bad[0] != kNoBadIndex) p.bad[1] = index_value(p.indices, p.index_type, p.bad[0]);
}

struct CastArgs {
    const void* x;
    void* y;
    int64_t count;           // rows * elements
    int32_t x_type, y_type;  // x INT32 / INT64; y FLOAT32, INT32 or INT64
};
// kernels::cast_run of one element: int64 -> float rounds to nearest even, int64 -> int32 keeps the low 32 bits.
QATML_HD void cast_element(const CastArgs& p, int64_t i) {
    const int64_t v = index_value(p.x, p.x_type, i);
    if (p.y_type == QATML_TYPE_FLOAT32)
        static_cast<float*>(p.y)[i] = static_cast<float>(v);
    else if (p.y_type == QATML_TYPE_INT32)
        static_cast<int32_t*>(p.y)[i] = static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(v)));
    else
        static_cast<int64_t*>(p.y)[i] = v;
}

struct FloatGemmArgs {
    const float* x;  // [vectors][k]
    float* y;        // [vectors][n]
    int64_t vectors, k, n;
    const float* weights;  // [k][n]
    const float* bias;     // n or NULL
};
// The CPU's vector kernels' order (float_body.inc's gemm_tile): the products fused-multiply-added onto 0 in K order,
// then the bias (+0 without one, which also turns an underflowed -0 into +0).
QATML_HD void float_gemm_element(const FloatGemmArgs& p, int64_t i) {
    const int64_t v = i / p.n, j = i - v * p.n;
    const float* xv = p.x + v * p.k;
    float acc = 0.0f;
    for (int64_t kk = 0; kk < p.k; ++kk) acc = math::fma_of(xv[kk], p.weights[kk * p.n + j], acc);
    p.y[i] = acc + (p.bias ? p.bias[j] : 0.0f);
}

}  // namespace cuda
}  // namespace qatml
