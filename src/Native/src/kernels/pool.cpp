// MaxPool, QLinearAveragePool and QLinearGlobalAveragePool over NCHW u8/s8 (portable code).
#include "kernels/abi_util.h"

#include <algorithm>

using namespace qatml;
using namespace qatml::kernels;

namespace {
inline int32_t ld(const void* x, bool s, int64_t i) {
    return s ? int32_t(static_cast<const int8_t*>(x)[i]) : int32_t(static_cast<const uint8_t*>(x)[i]);
}
inline void st(void* y, bool s, int64_t i, int32_t v) {
    if (s) static_cast<int8_t*>(y)[i] = static_cast<int8_t>(v); else static_cast<uint8_t*>(y)[i] = static_cast<uint8_t>(v);
}
qatml_status check_qparams(const char* fn, int32_t type, float xs, int32_t xz, float ys, int32_t yz, int32_t* lo, int32_t* hi) {
    if ((type != QATML_TYPE_UINT8 && type != QATML_TYPE_INT8) || !type_range(type, lo, hi))
        return fail(QATML_INVALID_ARGUMENT, "%s: type %d must be UINT8 or INT8", fn, type);
    if (!(xs > 0.0f) || !std::isfinite(xs) || !(ys > 0.0f) || !std::isfinite(ys))
        return fail(QATML_INVALID_ARGUMENT, "%s: scales must be finite and > 0 (x %g, y %g)", fn, double(xs), double(ys));
    if (xz < *lo || xz > *hi || yz < *lo || yz > *hi)
        return fail(QATML_INVALID_ARGUMENT, "%s: zero points %d, %d must be in the %s range", fn, xz, yz, type_name(type));
    return QATML_OK;
}
}  // namespace

extern "C" {

QATML_API qatml_status qatml_pool2d(const qatml_context* ctx, int32_t kind, const qatml_conv2d_params* p,
                                    int64_t kernel_h, int64_t kernel_w, int32_t count_include_pad, const void* x,
                                    int32_t type, float x_scale, int32_t x_zero_point, float y_scale,
                                    int32_t y_zero_point, void* y) {
    static const char* fn = "qatml_pool2d";
    return guarded(fn, [&]() -> qatml_status {
        qatml_status s = check_context(ctx, fn);
        if (s != QATML_OK) return s;
        QATML_CHECK_NOT_NULL(p, fn);
        QATML_CHECK_NOT_NULL(x, fn);
        QATML_CHECK_NOT_NULL(y, fn);
        if (kind != QATML_POOL_MAX && kind != QATML_POOL_AVERAGE)
            return fail(QATML_INVALID_ARGUMENT, "%s: kind %d must be QATML_POOL_MAX or QATML_POOL_AVERAGE", fn, kind);
        QATML_CHECK_POSITIVE(p->batch, fn);
        QATML_CHECK_POSITIVE(p->channels, fn);
        int64_t oh = 0, ow = 0, t = 0;
        if ((s = qatml_conv2d_output_size(p, kernel_h, kernel_w, &oh, &ow)) != QATML_OK) return s;
        if (!checked_mul(fn, "N*C", p->batch, p->channels, &t) || !checked_mul(fn, "N*C*H", t, p->height, &t) ||
            !checked_mul(fn, "N*C*H*W", t, p->width, &t) || !checked_mul(fn, "N*C*OH", p->batch * p->channels, oh, &t) ||
            !checked_mul(fn, "N*C*OH*OW", t, ow, &t))
            return QATML_INVALID_ARGUMENT;
        int32_t lo = 0, hi = 0;
        if (kind == QATML_POOL_MAX) {
            if ((type != QATML_TYPE_UINT8 && type != QATML_TYPE_INT8) || !type_range(type, &lo, &hi))
                return fail(QATML_INVALID_ARGUMENT, "%s: type %d must be UINT8 or INT8", fn, type);
        } else if ((s = check_qparams(fn, type, x_scale, x_zero_point, y_scale, y_zero_point, &lo, &hi)) != QATML_OK) {
            return s;
        }
        const bool sg = type == QATML_TYPE_INT8;
        const int64_t H = p->height, W = p->width;
        for (int64_t nc = 0; nc < p->batch * p->channels; ++nc) {
            const int64_t in0 = nc * H * W;
            for (int64_t oy = 0; oy < oh; ++oy)
                for (int64_t ox = 0; ox < ow; ++ox) {
                    int32_t best = INT32_MIN, sum = 0;
                    int64_t valid = 0, cells = 0;
                    for (int64_t ky = 0; ky < kernel_h; ++ky) {
                        const int64_t iy = oy * p->stride_h - p->pad_top + ky * p->dilation_h;
                        for (int64_t kx = 0; kx < kernel_w; ++kx) {
                            const int64_t ix = ox * p->stride_w - p->pad_left + kx * p->dilation_w;
                            // ONNX counts pad cells inside the padded input only (not beyond the pads).
                            if (iy >= -p->pad_top && iy < H + p->pad_bottom && ix >= -p->pad_left && ix < W + p->pad_right)
                                ++cells;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            const int32_t v = ld(x, sg, in0 + iy * W + ix);
                            best = std::max(best, v);
                            sum += v - x_zero_point;
                            ++valid;
                        }
                    }
                    const int64_t oi = (nc * oh + oy) * ow + ox;
                    if (kind == QATML_POOL_MAX) {
                        st(y, sg, oi, valid ? best : lo);
                    } else {
                        const int64_t count = count_include_pad ? cells : valid;
                        if (count == 0) { st(y, sg, oi, y_zero_point); continue; }
                        const float m = x_scale / (y_scale * static_cast<float>(count));
                        st(y, sg, oi, requant_one(sum, m, y_zero_point, lo, hi));
                    }
                }
        }
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_global_average_pool(const qatml_context* ctx, const void* x, int32_t type,
                                                 int64_t batch, int64_t channels, int64_t spatial, float x_scale,
                                                 int32_t x_zero_point, float y_scale, int32_t y_zero_point,
                                                 void* y) {
    static const char* fn = "qatml_global_average_pool";
    return guarded(fn, [&]() -> qatml_status {
        qatml_status s = check_context(ctx, fn);
        if (s != QATML_OK) return s;
        QATML_CHECK_NOT_NULL(x, fn);
        QATML_CHECK_NOT_NULL(y, fn);
        QATML_CHECK_POSITIVE(batch, fn);
        QATML_CHECK_POSITIVE(channels, fn);
        QATML_CHECK_POSITIVE(spatial, fn);
        int64_t t = 0;
        if (!checked_mul(fn, "N*C", batch, channels, &t) || !checked_mul(fn, "N*C*HW", t, spatial, &t))
            return QATML_INVALID_ARGUMENT;
        if (spatial > (int64_t(1) << 23))
            return fail(QATML_INVALID_ARGUMENT, "%s: spatial %lld exceeds 2^23 (int32 sum)", fn, (long long)spatial);
        int32_t lo = 0, hi = 0;
        if ((s = check_qparams(fn, type, x_scale, x_zero_point, y_scale, y_zero_point, &lo, &hi)) != QATML_OK) return s;
        const bool sg = type == QATML_TYPE_INT8;
        const float m = x_scale / (y_scale * static_cast<float>(spatial));
        for (int64_t nc = 0; nc < batch * channels; ++nc) {
            int32_t sum = 0;
            for (int64_t i = 0; i < spatial; ++i) sum += ld(x, sg, nc * spatial + i);
            sum -= static_cast<int32_t>(spatial) * x_zero_point;
            st(y, sg, nc, requant_one(sum, m, y_zero_point, lo, hi));
        }
        return QATML_OK;
    });
}

}  // extern "C"
