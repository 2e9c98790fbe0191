// Host-side preparation of the CUDA kernels' operands from a plan's raw weights: the implicit GEMM's B matrix and
// column offsets, the K table of byte gathers, the direct convolution's weights, the activation layouts and the
// choice of A loader. Header-only plain C++: the plan runner (cuda_engine.cpp) and the CPU tests share it.
#pragma once

#include "cuda/igemm.h"
#include "cuda/ops.h"
#include "qatml/qatml.h"

#include <cstring>
#include <vector>

namespace qatml {
namespace cuda {

// Weight element i of a plan's INT8 or packed INT4 weights (first element in the low nibble).
inline int8_t weight_value(const uint8_t* raw, uint32_t type, int64_t i) {
    if (type == QATML_TYPE_INT8) return static_cast<int8_t>(raw[i]);
    const int v = (i & 1) ? (raw[i >> 1] >> 4) : (raw[i >> 1] & 0x0f);
    return static_cast<int8_t>(v >= 8 ? v - 16 : v);
}

// Layout the device runner stores a tensor in (ops.h): channels-last for 8-bit [C, H, W] with C > 1 and H * W > 1.
inline Layout tensor_layout(int32_t dtype, int rank, const int64_t* dims) {
    Layout l;
    if ((dtype == QATML_TYPE_UINT8 || dtype == QATML_TYPE_INT8) && rank == 3 && dims[0] > 1 && dims[1] * dims[2] > 1) {
        l.channels_last = 1;
        l.c = dims[0];
        l.hw = dims[1] * dims[2];
    }
    return l;
}

// B of a convolution (groups = 1): [n_pad][k_pad] with k = (ky * kW + kx) * C + ci, from ONNX [M, C, kH, kW].
inline std::vector<int8_t> conv_weights_igemm(const uint8_t* raw, uint32_t type, int64_t m, int64_t c, int64_t kh, int64_t kw,
                                              int32_t k_pad) {
    const int64_t n_pad = (m + kNPad - 1) / kNPad * kNPad;
    std::vector<int8_t> b(static_cast<size_t>(n_pad * k_pad), 0);
    for (int64_t o = 0; o < m; ++o)
        for (int64_t ci = 0; ci < c; ++ci)
            for (int64_t y = 0; y < kh; ++y)
                for (int64_t x = 0; x < kw; ++x)
                    b[static_cast<size_t>(o * k_pad + (y * kw + x) * c + ci)] = weight_value(raw, type, ((o * c + ci) * kh + y) * kw + x);
    return b;
}

// B of a GEMM: [n_pad][k_pad] from [K, N] (or [N, K] when trans_b), its K in the storage order of the input: a
// channels-last input stores logical element e = ch * hw + pixel at pixel * c + ch.
inline std::vector<int8_t> gemm_weights_igemm(const uint8_t* raw, uint32_t type, int64_t k, int64_t n, bool trans_b, const Layout& lx,
                                              int32_t k_pad) {
    const int64_t n_pad = (n + kNPad - 1) / kNPad * kNPad;
    std::vector<int8_t> b(static_cast<size_t>(n_pad * k_pad), 0);
    for (int64_t col = 0; col < n; ++col)
        for (int64_t e = 0; e < k; ++e)
            b[static_cast<size_t>(col * k_pad + storage_index(lx, e))] = weight_value(raw, type, trans_b ? col * k + e : e * n + col);
    return b;
}

// coladd[col] = bias[col] - a_zero_point * sum_k B[col][k] (wrapping int32), padded to n_pad with zeros.
inline std::vector<int32_t> column_offsets(const int8_t* b, int64_t n, int64_t n_pad, int32_t k_pad, const int32_t* bias,
                                           int32_t a_zero_point) {
    std::vector<int32_t> out(static_cast<size_t>(n_pad), 0);
    for (int64_t col = 0; col < n; ++col) {
        uint32_t sum = 0;
        for (int32_t k = 0; k < k_pad; ++k) sum += static_cast<uint32_t>(int32_t(b[col * k_pad + k]));
        const uint32_t v = (bias ? static_cast<uint32_t>(bias[col]) : 0u) - static_cast<uint32_t>(a_zero_point) * sum;
        out[static_cast<size_t>(col)] = static_cast<int32_t>(v);
    }
    return out;
}

// Multipliers (1 = per tensor, or one per channel) expanded to n_pad entries.
inline std::vector<float> expand_multipliers(const std::vector<float>& mult, int64_t n, int64_t n_pad) {
    std::vector<float> out(static_cast<size_t>(n_pad), 1.0f);
    for (int64_t col = 0; col < n; ++col) out[static_cast<size_t>(col)] = mult[mult.size() == 1 ? 0 : static_cast<size_t>(col)];
    return out;
}

// kConvBytes: the tap and channel of every reduction index (entries past K are never read for data).
inline std::vector<KTap> k_table(const ConvGeom& g, int32_t k_pad) {
    std::vector<KTap> t(static_cast<size_t>(k_pad), KTap{0, 0, 0, 0});
    const int32_t k = g.kh * g.kw * g.cpg;
    for (int32_t i = 0; i < k; ++i) {
        const int32_t tap = i / g.cpg;
        t[static_cast<size_t>(i)] = KTap{(tap / g.kw) * g.dh, (tap % g.kw) * g.dw, i % g.cpg, 0};
    }
    return t;
}

// The loader for A: 16-byte copies when every 16-byte chunk of K is contiguous and aligned in memory.
inline AMode conv_mode(const ConvGeom& g) { return g.cpg % 16 == 0 && g.c % 16 == 0 ? kConvVec : kConvBytes; }
inline AMode gemm_mode(int64_t k) { return k % 16 == 0 ? kDense : kConvBytes; }

// A GEMM of K-element rows read byte-wise: the 1x1 convolution of a 1x1 image with K channels.
inline ConvGeom gemm_geometry(int32_t k) { return ConvGeom{1, 1, k, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, k}; }

// Direct convolution weights [M][kH][kW][C/g] from ONNX [M, C/g, kH, kW].
inline std::vector<int8_t> conv_weights_direct(const uint8_t* raw, uint32_t type, int64_t m, int64_t cpg, int64_t kh, int64_t kw) {
    std::vector<int8_t> w(static_cast<size_t>(m * cpg * kh * kw));
    for (int64_t o = 0; o < m; ++o)
        for (int64_t ci = 0; ci < cpg; ++ci)
            for (int64_t y = 0; y < kh; ++y)
                for (int64_t x = 0; x < kw; ++x)
                    w[static_cast<size_t>(((o * kh + y) * kw + x) * cpg + ci)] = weight_value(raw, type, ((o * cpg + ci) * kh + y) * kw + x);
    return w;
}

}  // namespace cuda
}  // namespace qatml
