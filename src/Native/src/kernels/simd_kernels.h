// Vectorised inner loops of the elementwise, pooling and depthwise kernels, one table per ISA
// (simd_avx512.cpp: 16 int32 lanes; simd_avx2.cpp: 8 lanes; shared body simd_body.inc).
// Every loop uses the same integer and float32 operations in the same order as the scalar reference
// (no FMA, division where the reference divides), so its results are bit-identical to it.
// Loops that return an int64_t process a prefix [0, done) and return `done` (today every loop
// finishes its range with a partial vector, so done == n); the caller runs the scalar reference on
// [done, n), which keeps a loop free to leave a tail.
// Declarations only (see kernel_common.h for why ISA translation units get no inline code).
#pragma once

#include <stdint.h>

namespace qatml {
namespace kernels {

// Depthwise convolution of one channel plane (groups == C == M); see depthwise_channel in simd_body.inc.
struct DepthwiseCall {
    const uint8_t* x;          // H x W input plane
    bool x_signed;
    int32_t x_zero_point;
    int64_t h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl;
    int64_t hp, wq;            // padded rows; columns per stride phase of the padded row
    int32_t* plane;            // scratch: hp * sw * wq + 64 int32
    const int32_t* taps;       // kh * kw weights minus the weight zero point
    const int64_t* tap_offsets;  // kh * kw: plane offset of tap (ky, kx) for output (0, 0)
    int32_t bias;
    float mult;                // 8-bit outputs
    int out_type;              // QATML_TYPE_INT32 / UINT8 / INT8
    int32_t zp, lo, hi;
    void* out;                 // OH x OW outputs of the plane
};

struct SimdKernels {
    // y = saturate(round_half_even(x / scale) + zp) in [lo, hi], NaN -> lo; y stores the low byte.
    int64_t (*quantize)(const float* x, int64_t n, float scale, int32_t zp, int32_t lo, int32_t hi, uint8_t* y);
    // y = float(x - zp) * scale for x of type UINT8, INT8 or INT32 (wrapping subtraction).
    int64_t (*dequantize)(const void* x, int32_t type, int64_t n, int32_t zp, float scale, float* y);
    // y = requant(x + bias) with one multiplier (see requant_one).
    int64_t (*requantize)(const int32_t* x, int64_t n, int32_t bias, float mult, int32_t zp, int32_t lo, int32_t hi,
                          uint8_t* y);
    // y = requant(x[i]) with a multiplier per element.
    int64_t (*requantize_each)(const int32_t* x, const float* mult, int64_t n, int32_t zp, int32_t lo, int32_t hi,
                               uint8_t* y);
    // QLinearAdd: y = clamp(round(float(a - za) * ra + float(b - zb) * rb) + zy).
    int64_t (*add)(const uint8_t* a, const uint8_t* b, int64_t n, bool is_signed, int32_t za, int32_t zb, float ra,
                   float rb, int32_t zy, int32_t lo, int32_t hi, uint8_t* y);
    // QLinearMul: y = clamp(cvt(float((a - za) * (b - zb)) * ratio + float(zy))) (see simd_body.inc).
    int64_t (*mul)(const uint8_t* a, const uint8_t* b, int64_t n, bool is_signed, int32_t za, int32_t zb, float ratio, int32_t zy,
                   int32_t lo, int32_t hi, uint8_t* y);
    // dst[i] = max over t < taps of src[i + t * tap_stride] (u8 or s8 order).
    int64_t (*max_taps)(const uint8_t* src, int64_t taps, int64_t tap_stride, int64_t n, bool is_signed, uint8_t* dst);
    // dst[i] = sum over t < taps of src[i + t * tap_stride] (raw u8 or s8 bytes; int32 elements).
    int64_t (*sum_taps_bytes)(const uint8_t* src, int64_t taps, int64_t tap_stride, int64_t n, bool is_signed,
                              int32_t* dst);
    int64_t (*sum_taps_int32)(const int32_t* src, int64_t taps, int64_t tap_stride, int64_t n, int32_t* dst);
    // sums[p] = sum of the raw bytes of plane p (planes of `spatial` <= 2^23 bytes, one after another).
    void (*sum_planes)(const uint8_t* x, int64_t planes, int64_t spatial, bool is_signed, int32_t* sums);
    void (*depthwise_channel)(const DepthwiseCall& call);
    // MaxPool 2x2, stride 2, no padding, dilation 1 over `planes` H x W planes: y is planes x OH x OW with
    // OH = H / 2, OW = W / 2 (floor). Every output, no scalar tail.
    void (*max_pool_2x2)(const uint8_t* x, int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow, bool is_signed,
                         uint8_t* y);
    // MaxPool 3x3, stride 2, dilation 1, pad_top / pad_left 0 or 1 (bottom / right: whatever the output size
    // implies; padding never wins): y is planes x OH x OW. Null where an ISA has none (the separable path runs).
    void (*max_pool_3x3s2)(const uint8_t* x, int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t pad_top,
                           int64_t pad_left, bool is_signed, uint8_t* y);
};

extern const SimdKernels kSimdAvx512;
extern const SimdKernels kSimdAvx2;

}  // namespace kernels
}  // namespace qatml
