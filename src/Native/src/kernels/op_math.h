// The per-element arithmetic of the engine's wider ops, written once for the CPU kernels (ops_*.cpp, their scalar
// paths) and the CUDA kernels (src/cuda/wide_ops.cu): elementwise functions, 8-bit QLinearAdd / QLinearMul, the
// bilinear blend, softmax, reduce mean and layer normalisation of one group. Plain C++ outside nvcc.
//
// Numbers: every float step is one IEEE operation rounded to nearest even on both sides (the CPU kernels build with
// -ffp-contract=off, the CUDA build with -fmad=false; CUDA's float division and square root are IEEE by default), so
// the results are bit-identical, except for the transcendentals (exp, tanh, erf, log, pow), which call libm on the
// CPU and CUDA's own functions on the GPU: those differ by a few ulp (docs/cuda.md states the tolerance).
#pragma once

#include <stdint.h>

#include <cmath>

#include "qatml/qatml.h"

#if !defined(QATML_HD)
#  if defined(__CUDACC__)
#    define QATML_HD __host__ __device__ __forceinline__
#  else
#    define QATML_HD inline
#  endif
#endif

namespace qatml {
namespace math {

// std::max / std::min exactly (the CPU kernels' semantics for NaN operands).
QATML_HD float max_of(float a, float b) { return a < b ? b : a; }
QATML_HD float min_of(float a, float b) { return b < a ? b : a; }

// Round half to even of a float inside the int32 range.
QATML_HD int32_t round_even(float f) {
#if defined(__CUDA_ARCH__)
    return __float2int_rn(f);
#else
    return static_cast<int32_t>(std::nearbyint(f));
#endif
}

// The transcendentals: libm on the CPU, CUDA's functions on the GPU (a few ulp apart).
QATML_HD float exp_of(float x) {
#if defined(__CUDA_ARCH__)
    return expf(x);
#else
    return std::exp(x);
#endif
}
QATML_HD float log_of(float x) {
#if defined(__CUDA_ARCH__)
    return logf(x);
#else
    return std::log(x);
#endif
}
QATML_HD float tanh_of(float x) {
#if defined(__CUDA_ARCH__)
    return tanhf(x);
#else
    return std::tanh(x);
#endif
}
QATML_HD float erf_of(float x) {
#if defined(__CUDA_ARCH__)
    return erff(x);
#else
    return std::erf(x);
#endif
}
QATML_HD float pow_of(float x, float y) {
#if defined(__CUDA_ARCH__)
    return powf(x, y);
#else
    return std::pow(x, y);
#endif
}
QATML_HD float abs_of(float x) {
#if defined(__CUDA_ARCH__)
    return fabsf(x);
#else
    return std::fabs(x);
#endif
}
// a * b + c rounded once, as the CPU's vector FMA (the float convolution's accumulation).
QATML_HD float fma_of(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
    return __fmaf_rn(a, b, c);
#else
    return std::fma(a, b, c);
#endif
}
// Correctly rounded on both sides.
QATML_HD float sqrt_of(float x) {
#if defined(__CUDA_ARCH__)
    return __fsqrt_rn(x);
#else
    return std::sqrt(x);
#endif
}
QATML_HD double sqrt_of(double x) {
#if defined(__CUDA_ARCH__)
    return __dsqrt_rn(x);
#else
    return std::sqrt(x);
#endif
}

// Whether a function calls a transcendental (its GPU result may differ from the CPU's by a few ulp).
QATML_HD bool unary_is_transcendental(int32_t func) {
    return func == QATML_UNARY_SIGMOID || func == QATML_UNARY_TANH || func == QATML_UNARY_ERF || func == QATML_UNARY_GELU ||
        func == QATML_UNARY_EXP || func == QATML_UNARY_LOG || func == QATML_UNARY_SOFTPLUS;
}

// UNARY.
QATML_HD float unary_value(int32_t func, float alpha, float beta, float x) {
    switch (func) {
        case QATML_UNARY_RELU: return x > 0.0f ? x : 0.0f;
        case QATML_UNARY_SIGMOID: return 1.0f / (1.0f + exp_of(-x));
        case QATML_UNARY_TANH: return tanh_of(x);
        case QATML_UNARY_HARD_SIGMOID: return max_of(0.0f, min_of(1.0f, alpha * x + beta));
        case QATML_UNARY_HARD_SWISH: return x * max_of(0.0f, min_of(1.0f, (1.0f / 6.0f) * x + 0.5f));
        case QATML_UNARY_LEAKY_RELU: return x < 0.0f ? alpha * x : x;
        case QATML_UNARY_CLIP: return min_of(max_of(x, alpha), beta);
        case QATML_UNARY_ERF: return erf_of(x);
        case QATML_UNARY_GELU: return 0.5f * x * (1.0f + erf_of(x * 0.70710678118654752f));
        case QATML_UNARY_EXP: return exp_of(x);
        case QATML_UNARY_LOG: return log_of(x);
        case QATML_UNARY_SQRT: return sqrt_of(x);
        case QATML_UNARY_NEG: return -x;
        case QATML_UNARY_ABS: return abs_of(x);
        case QATML_UNARY_RECIPROCAL: return 1.0f / x;
        case QATML_UNARY_SOFTPLUS: return log_of(exp_of(x) + 1.0f);
        default: return x;  // IDENTITY
    }
}

// BINARY on floats.
QATML_HD float binary_value(int32_t func, float a, float b) {
    switch (func) {
        case QATML_BINARY_ADD: return a + b;
        case QATML_BINARY_SUB: return a - b;
        case QATML_BINARY_MUL: return a * b;
        case QATML_BINARY_DIV: return a / b;
        case QATML_BINARY_POW: return pow_of(a, b);
        case QATML_BINARY_MAX: return max_of(a, b);
        default: return min_of(a, b);  // MIN
    }
}

// QLinearAdd of one pair: float(a - za) * ra + float(b - zb) * rb, clamped to the type's range around zy, rounded
// half to even.
QATML_HD int32_t add_q8(int32_t a, int32_t b, int32_t za, int32_t zb, float ra, float rb, int32_t zy, int32_t lo, int32_t hi) {
    const float pa = static_cast<float>(a - za) * ra;
    const float pb = static_cast<float>(b - zb) * rb;
    float v = pa + pb;
    const float lf = static_cast<float>(lo - zy), hf = static_cast<float>(hi - zy);
    v = v < lf ? lf : v;
    v = v > hf ? hf : v;
    return round_even(v) + zy;
}

// QLinearMul of one pair, as ONNX Runtime's MLAS computes it on x86: the exact product, float(product) * ratio + zy,
// rounded (out of range and NaN give INT_MIN, as cvtps2dq), clamped.
QATML_HD int32_t mul_q8(int32_t a, int32_t b, int32_t za, int32_t zb, float ratio, int32_t zy, int32_t lo, int32_t hi) {
    const float f = static_cast<float>((a - za) * (b - zb)) * ratio + static_cast<float>(zy);
    const int32_t q = f >= -2147483648.0f && f < 2147483648.0f ? round_even(f) : INT32_MIN;
    return q < lo ? lo : (q > hi ? hi : q);
}

// Bilinear blend of four values (the RESIZE op's order of operations), and its 8-bit store.
QATML_HD float bilinear_value(float dy, float dx, float v00, float v01, float v10, float v11) {
    return (1.0f - dy) * (1.0f - dx) * v00 + (1.0f - dy) * dx * v01 + dy * (1.0f - dx) * v10 + dy * dx * v11;
}
QATML_HD int32_t saturate_round(float v, int32_t lo, int32_t hi) {
    return round_even(min_of(max_of(v, static_cast<float>(lo)), static_cast<float>(hi)));
}

// Softmax over n values of x (stride apart) into y: the maximum subtracted, exponentials summed in order.
QATML_HD void softmax_values(const float* x, float* y, int64_t n, int64_t stride) {
    float m = x[0];
    for (int64_t i = 1; i < n; ++i) m = max_of(m, x[i * stride]);
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
        const float e = exp_of(x[i * stride] - m);
        y[i * stride] = e;
        sum += e;
    }
    for (int64_t i = 0; i < n; ++i) y[i * stride] /= sum;
}

// The mean of n values of x (stride apart), summed in order.
QATML_HD float mean_of(const float* x, int64_t n, int64_t stride) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) sum += x[i * stride];
    return sum / static_cast<float>(n);
}

// Layer normalisation of n contiguous values: mean and variance from double sums (long rows keep their precision).
QATML_HD void layernorm_values(const float* x, float* y, int64_t n, float epsilon, const float* scale, const float* bias) {
    double sum = 0.0, squares = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        sum += x[i];
        squares += static_cast<double>(x[i]) * x[i];
    }
    const double mean = sum / static_cast<double>(n);
    const double v = squares / static_cast<double>(n) - mean * mean;
    const double variance = 0.0 < v ? v : 0.0;  // std::max(0.0, v)
    const float inv = static_cast<float>(1.0 / sqrt_of(variance + static_cast<double>(epsilon)));
    const float fm = static_cast<float>(mean);
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - fm) * inv * scale[i] + (bias ? bias[i] : 0.0f);
}

}  // namespace math
}  // namespace qatml
