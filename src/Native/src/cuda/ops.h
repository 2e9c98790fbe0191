// Parameters of the CUDA kernels other than the implicit GEMM (ops.cu), and the activation layouts they share with
// the plan runner. Plain C++ outside nvcc (the CPU tests check the layout math).
//
// Layouts: the device runner stores every 8-bit rank-3 tensor [C, H, W] with C > 1 and H * W > 1 channels-last
// ([H, W, C] per row, what the implicit GEMM and the pools read); everything else in the plan's logical order.
// Elementwise ops map logical element e of a row to its storage index, so views across layouts cost one pass.
#pragma once

#include "cuda/igemm.h"

namespace qatml {
namespace cuda {

struct Layout {
    int64_t c = 1, hw = 1;  // channels and pixels of a channels-last tensor
    int32_t channels_last = 0;
};

// Storage index of logical (C, H, W)-order element e within a row.
QATML_HD int64_t storage_index(const Layout& l, int64_t e) {
    if (!l.channels_last) return e;
    const int64_t ch = e / l.hw;
    return (e - ch * l.hw) * l.c + ch;
}

inline bool same_layout(const Layout& a, const Layout& b) {
    return a.channels_last == b.channels_last && (!a.channels_last || (a.c == b.c && a.hw == b.hw));
}

// Elementwise ops over `rows` rows of `elems` elements. map = 0: every tensor is stored alike (flat loop).
struct QuantizeParams {  // float -> u8/s8: saturate(round_half_even(x / scale)) + zp, NaN -> zp
    const float* x;
    void* y;
    Layout lx, ly;
    int64_t rows, elems;
    int32_t map;
    float scale;
    int32_t zp, lo, hi, y_signed;
};
struct DequantizeParams {  // u8/s8 -> float: float(x - zp) * scale
    const void* x;
    float* y;
    Layout lx, ly;
    int64_t rows, elems;
    int32_t map;
    float scale;
    int32_t zp, x_signed;
};
struct AddParams {  // saturate(round_half_even(float(a - za) * ra + float(b - zb) * rb) + zy), no FMA
    const void* a;
    const void* b;
    void* y;
    Layout la, lb, ly;
    int64_t rows, elems;
    int32_t map;
    float ra, rb;  // a_scale / y_scale, b_scale / y_scale (computed by the caller as the CPU kernel does)
    int32_t za, zb, zy, lo, hi, is_signed;
};
struct LutParams {  // y = table[x byte]
    const uint8_t* x;
    uint8_t* y;
    Layout lx, ly;
    int64_t rows, elems;
    int32_t map;
    const uint8_t* table;  // 256 bytes, device memory
};

// MaxPool / QLinearAveragePool over channels-last [rows][H][W][C] -> [rows][OH][OW][C] (qatml_pool2d's numbers).
// The window is g's (g.cpg unused) with the bottom and right pads, which ONNX counts for count_include_pad.
struct PoolParams {
    const void* x;
    void* y;
    int64_t rows;
    ConvGeom g;
    int32_t pb, pr;
    int32_t is_max, count_include_pad, is_signed;
    float x_scale, y_scale;
    int32_t xz, yz, lo, hi;
};
// QLinearGlobalAveragePool over channels-last [rows][spatial][C] -> [rows][C].
struct GlobalPoolParams {
    const void* x;
    void* y;
    int64_t rows;
    int32_t c, spatial, is_signed;
    float mult;  // x_scale / (y_scale * spatial), computed by the caller as the CPU kernel does
    int32_t xz, yz, lo, hi;
};

// Direct convolution on the CUDA cores, channels-last in and out, any groups and weight zero points (what the
// tensor-core path does not take). A GEMM is the 1x1 convolution of a 1x1 image with C = K.
struct DirectConvParams {
    const uint8_t* x;
    ConvGeom g;              // g.c: all input channels; g.cpg: per group
    int64_t pixels;          // rows * oh * ow
    int32_t m, groups, mpg;  // output channels, groups, output channels per group
    const int8_t* w;         // [m][kh][kw][cpg]
    const int32_t* w_zp;     // m values or NULL
    const int32_t* bias;     // m values or NULL
    const float* mult;       // m values
    int32_t x_signed, xz;
    void* y;  // [pixels][m]: 8-bit, or float (out_float: float(acc) * mult, a GEMM's MatMulIntegerToFloat output)
    int32_t out_zp, lo, hi;
    int32_t out_float;
};

}  // namespace cuda
}  // namespace qatml
