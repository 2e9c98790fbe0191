// Float kernels of the engine's float segments: elementwise functions, softmax, layer normalisation, reduce mean.
// Plain loops over float32 as ONNX defines the ops (the compiler vectorises the simple ones); the per-element and
// per-group arithmetic is op_math.h, shared with the CUDA kernels.
#include "kernels/kernel_api.h"
#include "kernels/op_math.h"

#include <algorithm>
#include <cmath>

namespace qatml {
namespace kernels {

float unary_one(const UnaryParams& p, float x) { return math::unary_value(p.func, p.alpha, p.beta, x); }

void unary_f32(const UnaryParams& p, const float* x, int64_t n, float* y) {
    switch (p.func) {  // the common cheap ones as plain loops the compiler vectorises
        case QATML_UNARY_RELU:
            for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
            return;
        case QATML_UNARY_CLIP:
            for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], p.alpha), p.beta);
            return;
        case QATML_UNARY_HARD_SWISH:
            for (int64_t i = 0; i < n; ++i) y[i] = x[i] * std::max(0.0f, std::min(1.0f, (1.0f / 6.0f) * x[i] + 0.5f));
            return;
        case QATML_UNARY_HARD_SIGMOID:
            for (int64_t i = 0; i < n; ++i) y[i] = std::max(0.0f, std::min(1.0f, p.alpha * x[i] + p.beta));
            return;
        default:
            for (int64_t i = 0; i < n; ++i) y[i] = unary_one(p, x[i]);
            return;
    }
}

void softmax_f32(const AxisPlan& p, int64_t rows, const float* x, float* y) {
    const int64_t groups = rows * p.outer;
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t j = 0; j < p.inner; ++j) math::softmax_values(x + g * p.n * p.inner + j, y + g * p.n * p.inner + j, p.n, p.inner);
}

void reduce_mean_f32(const AxisPlan& p, int64_t rows, const float* x, float* y) {
    const int64_t groups = rows * p.outer;
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t j = 0; j < p.inner; ++j) y[g * p.inner + j] = math::mean_of(x + g * p.n * p.inner + j, p.n, p.inner);
}

void layernorm_f32(const AxisPlan& p, float epsilon, const float* scale, const float* bias, int64_t rows, const float* x, float* y) {
    const int64_t groups = rows * p.outer;
    for (int64_t g = 0; g < groups; ++g) math::layernorm_values(x + g * p.n, y + g * p.n, p.n, epsilon, scale, bias);
}

void float_conv_reference(const FloatConvPlan& p, int64_t rows, const float* x, float* y) {
    const int64_t in_plane = p.h * p.w, out_plane = p.oh * p.ow, taps = p.kh * p.kw;
    for (int64_t row = 0; row < rows; ++row)
        for (int64_t co = 0; co < p.m; ++co) {
            const int64_t g = co / p.mpg;
            float* out = y + (row * p.m + co) * out_plane;
            const float b = p.bias ? p.bias[co] : 0.0f;
            for (int64_t i = 0; i < out_plane; ++i) out[i] = b;
            for (int64_t ci = 0; ci < p.cpg; ++ci) {
                const float* plane = x + (row * p.c + g * p.cpg + ci) * in_plane;
                const float* wk = p.weights + (co * p.cpg + ci) * taps;
                for (int64_t ky = 0; ky < p.kh; ++ky)
                    for (int64_t kx = 0; kx < p.kw; ++kx) {
                        const float wv = wk[ky * p.kw + kx];
                        // Output columns whose input column ox * sw - pl + kx * dw lies inside the row.
                        const int64_t off = kx * p.dw - p.pl;
                        const int64_t ox0 = off >= 0 ? 0 : (-off + p.sw - 1) / p.sw;
                        const int64_t ox1 = std::min(p.ow, off >= p.w ? 0 : (p.w - 1 - off) / p.sw + 1);
                        for (int64_t oy = 0; oy < p.oh; ++oy) {
                            const int64_t iy = oy * p.sh - p.pt + ky * p.dh;
                            if (iy < 0 || iy >= p.h) continue;
                            // Input and output never overlap (separate tensors): restrict lets the compiler vectorise.
                            const float* __restrict xr = plane + iy * p.w + off;
                            float* __restrict yr = out + oy * p.ow;
                            if (p.sw == 1)
                                for (int64_t ox = ox0; ox < ox1; ++ox) yr[ox] += wv * xr[ox];
                            else
                                for (int64_t ox = ox0; ox < ox1; ++ox) yr[ox] += wv * xr[ox * p.sw];
                        }
                    }
            }
        }
}

}  // namespace kernels
}  // namespace qatml
