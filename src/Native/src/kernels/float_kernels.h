// Float32 kernels of the engine's float segments, one table per ISA (float_avx512.cpp: AVX-512F, 16 lanes;
// float_avx2.cpp: AVX2 + FMA, 8 lanes; shared body float_body.inc). The drivers (float_conv.cpp) stay baseline code
// and pick a table once, when an op is prepared; the kernels check nothing.
// Every output is one fixed chain of FMAs in K order from 0, then + bias: the AVX2 and AVX-512 tables give identical
// results, and an output never depends on its position in a tile or a chunk (so not on the batch or the threads).
// Declarations only (see kernel_common.h for why ISA translation units get no inline code).
#pragma once

#include <stdint.h>

namespace qatml {
namespace kernels {

// C[r, j] = sum_k A[r, k] B[k, j] + bias[r] (or + col_bias[j]) for one panel of `cols` <= nr columns and all m rows.
// The convolution packs its weights as A (rows: output channels); the float MatMul packs its weights as panels B and
// its input vectors as A (rows: vectors), with a bias per column.
struct FloatGemmCall {
    const float* a;  // packed rows: [ceil(m / mr)][k][mr], rows past m zero
    const float* b;  // one panel: [k][nr], columns past cols zero
    int64_t m, k, cols;
    const float* bias;      // m values or nullptr (then + 0)
    const float* col_bias;  // nr values of this panel (zero past cols) added instead of bias, or nullptr
    float* c;               // row r at c + r * ldc
    int64_t ldc;
};

// Depthwise rows: y[oy, ox] = sum_t w[t] x[base(oy) + tap_offsets[t] + ox] + bias over a zero-padded plane whose
// columns are split into stride phases (so every tap reads consecutive floats).
struct FloatDepthwiseCall {
    const float* plane;
    int64_t row_step;            // floats between the windows of consecutive output rows
    const int64_t* tap_offsets;  // taps
    const float* w;              // taps weights
    int64_t taps, oh, ow;
    float bias;
    float* y;  // oh x ow
};

struct FloatKernels {
    int mr, nr;  // register tile: mr rows (weights broadcast) x nr columns (two vectors)
    void (*gemm)(const FloatGemmCall& call);
    // panel[k][j] = src[k * ld + j] for j < cols (<= nr), 0 for cols <= j < nr.
    void (*pack_panel)(const float* src, int64_t ld, int64_t k, int64_t cols, float* panel);
    void (*depthwise)(const FloatDepthwiseCall& call);
    // dst[i] = src[2i] for i < count (stride-2 columns; reads nothing past src[2 count - 2]).
    void (*take_even)(const float* src, int64_t count, float* dst);
};

// The table of an engine path (isa: QATML_ISA_*), or nullptr below AVX2 (the scalar reference loops).
const FloatKernels* float_kernels_for(int isa);

extern const FloatKernels kFloatAvx512;
extern const FloatKernels kFloatAvx2;

}  // namespace kernels
}  // namespace qatml
