// Internal interface between the ABI layer (baseline x86-64 code) and the ISA-specific GEMM drivers.
// Keep this header free of inline code and of the standard library: ISA translation units are
// compiled with -mavx512* flags, and an inline function instantiated there could be chosen by the
// linker for baseline code and execute illegal instructions on older CPUs.
#pragma once

#include <stdint.h>

namespace qatml {
namespace kernels {

// Register tile of an ISA: MR rows (broadcast operand) x NR columns (vector operand).
// Packed operands hold K in groups of 4 bytes (zero-padded), vpdpbusd order.
//   broadcast tiles: [ceil(rows/MR)][K4][MR][4]
//   vector panels:   [ceil(cols/NR)][K4][NR][4]
void isa_tile(int isa, int* mr, int* nr);

// One GEMM over packed operands: out[r, c] = epilogue(sum_k bc[r, k] * vec[c, k]).
struct GemmCall {
    const uint8_t* bc;       // broadcast operand tiles (rows)
    const uint8_t* vec;      // vector operand panels (cols)
    int64_t rows, cols, k4;  // k4 = padded K / 4
    bool bc_signed;          // true: broadcast bytes are s8 and vector bytes u8 (conv); false: the reverse
    // Epilogue: x = acc + rowadd[r] + coladd[c] (+ rowmul[r] * colmul[c] when rowmul != nullptr).
    // Arrays are padded to a multiple of MR (row arrays) / NR (column arrays).
    const int32_t* rowadd;
    const int32_t* coladd;
    const int32_t* rowmul;
    const int32_t* colmul;
    const float* mult;  // per channel (padded); channel = row if mult_per_row else column
    bool mult_per_row;
    int out_type;    // QATML_TYPE_INT32 / UINT8 / INT8
    int32_t zp;      // output zero point
    int32_t lo, hi;  // final clamp in output units (type range intersected with the clamp)
    void* out;
    int64_t ldc;  // elements
    // K blocking: the reduction runs in blocks of at most kc4 groups (0 = all of K at once); partial
    // sums go through `scratch` (int32, rows rounded up to MR x cols rounded up to NR, row stride
    // scratch_ld), which the caller allocates when kc4 < k4.
    int64_t kc4;
    int32_t* scratch;
    int64_t scratch_ld;
};

void gemm_avx512vnni(const GemmCall& call);

// Implicit-GEMM convolution (AVX-512 VNNI): out[r, pixel] = epilogue(sum_g w[r, g] . x[pixel, g]) with
// no im2col. The input of one image and group is stored as byte-interleaved channel quads
// ([quad][phase][hq][wq][4 channels], see conv_internal.h), so the 4 bytes of K group g for virtual pixel q
// sit at input + k_offsets[g] + 4 q and 16 consecutive pixels are one 64-byte load.
// Virtual pixel q = oy * wq + ox; columns ox >= OW are computed and dropped by the store masks.
struct ConvCall {
    const uint8_t* weights;    // [ceil(rows/kConvPack)][k4][kConvPack][4], s8 (a tile reads kConvMR of each 16)
    const uint8_t* input;      // u8 (s8 inputs are XOR 0x80'd by the caller)
    const int64_t* k_offsets;  // k4 byte offsets
    int64_t rows, cols, k4;    // output channels, virtual pixels, K groups
    // x = acc + rowadd[r] (+ rowmul[r] * colsum[q] when rowmul != nullptr). Row arrays padded to kConvPack.
    const int32_t* rowadd;
    const int32_t* rowmul;
    int32_t* colsum;    // per virtual pixel (cols rounded up to 16); filled by the driver
    const float* mult;  // per row (8-bit outputs)
    int out_type;       // QATML_TYPE_INT32 / UINT8 / INT8
    int32_t zp, lo, hi;
    void* out;               // output of row 0, pixel 0 (NCHW plane of the first channel)
    int64_t out_row_stride;  // elements between output channels (OH * OW)
    // Per 16 virtual pixels: which lanes are real output pixels, and the output index of the first
    // of them (the real pixels of a vector are consecutive in the output, so one compressed store).
    const uint16_t* store_mask;
    const int32_t* store_index;
};
constexpr int kConvMR = 8;     // pixel-lane register tile: 8 rows x 48 pixels (24 zmm accumulators)
constexpr int kConvPack = 16;  // packed weight rows per K step: one zmm of 16 output channels x 4 bytes
void conv_avx512vnni(const ConvCall& call);

// The same convolution with output channels in the vector lanes (for small output planes, where
// 16-pixel vectors would be partly empty): register tile 6 pixels x 64 channels, each pixel's 4 input
// bytes of a K group broadcast from the interleaved input, the weights one zmm per 16 channels.
// Writes 8-bit outputs pixel-major: out[out_offsets[p] + r] (a staging the caller transposes to NCHW, or a
// channels-last tensor).
struct ConvLanesCall {
    const uint8_t* weights;        // as ConvCall (kConvPack rows per K step)
    const uint8_t* input;          // as ConvCall
    const int64_t* k_offsets;      // as ConvCall
    const int64_t* pixel_offsets;  // per real output pixel: 4 * its virtual pixel
    int64_t rows, pixels, k4;      // rows padded to kConvPack (padded rows are computed and stored)
    const int32_t* rowadd;         // x = acc + rowadd[r]; padded to kConvPack (no weight zero points)
    const float* mult;             // per row, padded
    int32_t zp, lo, hi;            // UINT8 / INT8 output
    uint8_t* out;
    const int64_t* out_offsets;  // per output pixel (per window when pooling): where its channel 0 goes in out
    // Fused QLinearAdd (residual != nullptr, not with pool): the requantized result c and the residual byte r at the
    // same place in `residual` give clamp(round(float(c - res_zc) * res_rc + float(r - res_zr) * res_rr)) + res_zy,
    // each product and the sum rounded to float32 (no FMA), clamped to [res_lo, res_hi] - res_zy in float first.
    const uint8_t* residual;
    bool residual_signed;
    int32_t res_zc, res_zr, res_zy, res_lo, res_hi;
    float res_rc, res_rr;
    // Fused 2x2 max pool: pixel_offsets lists 2x2 windows (4 entries each, pixels a multiple of 4) and
    // the kernel writes one output per window, the max of its four int32 results, requantized once
    // (multipliers are > 0, so requantization is increasing).
    bool pool;
};
void conv_avx512vnni_lanes(const ConvLanesCall& call);

// One row of the implicit GEMM's channel-quad input: dst[4 i + j] = src[j][step * i] ^ flip for i < n,
// j < 4 (step 1 or 2; src[j] == nullptr: a channel past C, written as 0 without the flip). Reads only
// src[j][0 .. step * (n - 1)] (masked loads), writes only dst[0 .. 4 n).
void interleave4_avx512(const uint8_t* const src[4], int64_t n, int64_t step, uint8_t flip, uint8_t* dst);

// One row of 3-channel HWC bytes: dst[3 i + j] = src[j][i] ^ flip for i < n, j < 3. Reads only
// src[j][0 .. n), writes only dst[0 .. 3 n) (masked loads and stores).
void interleave3_avx512(const uint8_t* const src[3], int64_t n, uint8_t flip, uint8_t* dst);

// 3x3 stride-2 max pool of pixel-major bytes: src [oh][ow][stride] -> dst [poh][pow][stride], window (py, px)
// starting at (2 py - pt, 2 px - pl), cells outside the plane skipped (padding never wins). Separable: the
// vertical max of each output row's input rows into `row` ([ow][stride] scratch), then the horizontal one.
// dst[c * dst_stride + p] = src[p * src_stride + c] for c < 64, p < 16: one 16-pixel x 64-channel block of the
// pixel-major -> NCHW transpose (four 16 x 16 byte transposes side by side in the zmm lanes).
void transpose_16x64_avx512(const uint8_t* src, int64_t src_stride, uint8_t* dst, int64_t dst_stride);

void max_pool3_pixel_major_avx512(const uint8_t* src, int64_t oh, int64_t ow, int64_t pt, int64_t pl, int64_t poh, int64_t pow,
                                  int64_t stride, bool is_signed, uint8_t* row, uint8_t* dst);
void gemm_avxvnni(const GemmCall& call);
void gemm_avx2(const GemmCall& call);

}  // namespace kernels
}  // namespace qatml
