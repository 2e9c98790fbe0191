// MaxPool, QLinearAveragePool and QLinearGlobalAveragePool over NCHW u8/s8. The scalar ISA runs
// the per-pixel reference; the fast ISAs pool separably on a padded plane with the vectorised loops
// of simd_kernels.h (a window's max / sum is the max / sum over its columns of the column's
// max / sum over the window's rows).
#include "kernels/abi_util.h"

#include <algorithm>
#include <cstring>

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
    return check_scale_ratio(fn, "x_scale", xs, "y_scale", ys);
}

// Scalar tails of the vectorised loops (the same integer operations).
void max_taps_tail(const uint8_t* src, int64_t taps, int64_t stride, int64_t from, int64_t n, bool sg, uint8_t* dst) {
    for (int64_t i = from; i < n; ++i) {
        int32_t m = ld(src, sg, i);
        for (int64_t t = 1; t < taps; ++t) m = std::max(m, ld(src, sg, i + t * stride));
        st(dst, sg, i, m);
    }
}
template <typename T>
void sum_taps_tail(const T* src, int64_t taps, int64_t stride, int64_t from, int64_t n, int32_t* dst) {
    for (int64_t i = from; i < n; ++i) {
        int32_t s = 0;
        for (int64_t t = 0; t < taps; ++t) s += static_cast<int32_t>(src[i + t * stride]);
        dst[i] = s;
    }
}

struct PoolGeometry {
    int64_t h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, hp, wp;
};

// Fast path of qatml_pool2d. Padding holds the type's minimum (max pooling: never above a real
// cell; a window of padding only gives the minimum, as the reference) or the input zero point
// (average pooling: contributes x_zp, removed with kh * kw * x_zp).
void pool2d_simd(const SimdKernels& simd, bool is_max, const PoolGeometry& g, int64_t planes, int32_t count_include_pad,
                 const uint8_t* x, bool sg, float x_scale, int32_t xz, float y_scale, int32_t yz, int32_t lo, int32_t hi,
                 uint8_t* y) {
    const int64_t nh = (g.ow - 1) * g.sw + 1;  // horizontal positions at stride 1 (every sw-th is an output)
    std::vector<uint8_t> padded(static_cast<size_t>(g.hp * g.wp)), colmax(static_cast<size_t>(g.wp)),
        rowmax(static_cast<size_t>(nh));
    std::vector<int32_t> colsum(static_cast<size_t>(is_max ? 0 : g.wp)), rowsum(static_cast<size_t>(is_max ? 0 : nh)),
        acc(static_cast<size_t>(is_max ? 0 : g.ow));
    // Average: the multiplier of each output pixel (its count depends on the borders only).
    std::vector<float> mult(static_cast<size_t>(is_max ? 0 : g.oh * g.ow));
    std::vector<int64_t> empty;  // pixels whose window has no cell to count: y_zero_point
    if (!is_max) {
        auto valid = [](int64_t o, int64_t s, int64_t p, int64_t d, int64_t k, int64_t n) {
            int64_t c = 0;
            for (int64_t t = 0; t < k; ++t) c += (o * s - p + t * d >= 0 && o * s - p + t * d < n);
            return c;
        };
        for (int64_t oy = 0; oy < g.oh; ++oy)
            for (int64_t ox = 0; ox < g.ow; ++ox) {
                const int64_t count = count_include_pad ? g.kh * g.kw
                                                        : valid(oy, g.sh, g.pt, g.dh, g.kh, g.h) * valid(ox, g.sw, g.pl, g.dw, g.kw, g.w);
                if (count == 0) empty.push_back(oy * g.ow + ox);
                mult[static_cast<size_t>(oy * g.ow + ox)] =
                    count == 0 ? 1.0f : x_scale / (y_scale * static_cast<float>(count));
            }
    }
    const uint8_t pad = static_cast<uint8_t>(is_max ? lo : xz);
    const int32_t window_pad = static_cast<int32_t>(static_cast<uint32_t>(g.kh * g.kw) * static_cast<uint32_t>(xz));
    for (int64_t plane = 0; plane < planes; ++plane) {
        const uint8_t* src = x + plane * g.h * g.w;
        uint8_t* out = y + plane * g.oh * g.ow;
        std::memset(padded.data(), pad, padded.size());
        for (int64_t iy = 0; iy < g.h; ++iy)
            std::memcpy(padded.data() + (iy + g.pt) * g.wp + g.pl, src + iy * g.w, static_cast<size_t>(g.w));
        for (int64_t oy = 0; oy < g.oh; ++oy) {
            const uint8_t* top = padded.data() + oy * g.sh * g.wp;
            uint8_t* orow = out + oy * g.ow;
            if (is_max) {
                int64_t i = simd.max_taps(top, g.kh, g.dh * g.wp, g.wp, sg, colmax.data());
                max_taps_tail(top, g.kh, g.dh * g.wp, i, g.wp, sg, colmax.data());
                uint8_t* h = g.sw == 1 ? orow : rowmax.data();
                i = simd.max_taps(colmax.data(), g.kw, g.dw, nh, sg, h);
                max_taps_tail(colmax.data(), g.kw, g.dw, i, nh, sg, h);
                if (g.sw != 1)
                    for (int64_t ox = 0; ox < g.ow; ++ox) orow[ox] = rowmax[static_cast<size_t>(ox * g.sw)];
                continue;
            }
            int64_t i = simd.sum_taps_bytes(top, g.kh, g.dh * g.wp, g.wp, sg, colsum.data());
            if (sg) sum_taps_tail(reinterpret_cast<const int8_t*>(top), g.kh, g.dh * g.wp, i, g.wp, colsum.data());
            else sum_taps_tail(top, g.kh, g.dh * g.wp, i, g.wp, colsum.data());
            i = simd.sum_taps_int32(colsum.data(), g.kw, g.dw, nh, rowsum.data());
            sum_taps_tail(colsum.data(), g.kw, g.dw, i, nh, rowsum.data());
            for (int64_t ox = 0; ox < g.ow; ++ox) acc[static_cast<size_t>(ox)] = rowsum[static_cast<size_t>(ox * g.sw)] - window_pad;
            const float* m = mult.data() + oy * g.ow;
            i = simd.requantize_each(acc.data(), m, g.ow, yz, lo, hi, orow);
            for (; i < g.ow; ++i) st(orow, sg, i, requant_one(acc[static_cast<size_t>(i)], m[i], yz, lo, hi));
        }
        for (int64_t e : empty) st(out, sg, e, yz);
    }
}
}  // namespace

namespace qatml {
namespace kernels {

qatml_status check_pool_scratch(const char* fn, const qatml_conv2d_params& p) {
    int64_t plane = 0;
    return checked_mul(fn, "(H + pads) * (W + pads)", p.height + p.pad_top + p.pad_bottom, p.width + p.pad_left + p.pad_right, &plane,
                       kMaxScratchLog2)
               ? QATML_OK
               : QATML_INVALID_ARGUMENT;
}

}  // namespace kernels
}  // namespace qatml

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
        if ((s = check_pool_scratch(fn, *p)) != QATML_OK) return s;
        int32_t lo = 0, hi = 0;
        if (kind == QATML_POOL_MAX) {
            if ((type != QATML_TYPE_UINT8 && type != QATML_TYPE_INT8) || !type_range(type, &lo, &hi))
                return fail(QATML_INVALID_ARGUMENT, "%s: type %d must be UINT8 or INT8", fn, type);
        } else if ((s = check_qparams(fn, type, x_scale, x_zero_point, y_scale, y_zero_point, &lo, &hi)) != QATML_OK) {
            return s;
        } else if (kernel_h * kernel_w > kMaxAverageCells) {
            return fail(QATML_INVALID_ARGUMENT, "%s: the %lldx%lld average window exceeds 2^23 cells (int32 sum)", fn,
                        (long long)kernel_h, (long long)kernel_w);
        }
        const bool sg = type == QATML_TYPE_INT8;
        const int64_t H = p->height, W = p->width;
        const SimdKernels* simd = active_simd(fn, &s);
        if (s != QATML_OK) return s;
        if (simd && kind == QATML_POOL_MAX && kernel_h == 2 && kernel_w == 2 && p->stride_h == 2 && p->stride_w == 2 &&
            p->pad_top == 0 && p->pad_left == 0 && p->pad_bottom == 0 && p->pad_right == 0 && p->dilation_h == 1 &&
            p->dilation_w == 1) {  // the common 2x2 stride-2 MaxPool: one pass, no padded copy
            simd->max_pool_2x2(static_cast<const uint8_t*>(x), p->batch * p->channels, H, W, oh, ow, sg, static_cast<uint8_t*>(y));
            return QATML_OK;
        }
        if (kind == QATML_POOL_AVERAGE && kernel_h == H && kernel_w == W && p->pad_top == 0 && p->pad_left == 0 &&
            p->pad_bottom == 0 && p->pad_right == 0 && H * W <= (int64_t(1) << 23)) {
            // One window over the whole plane (ResNet's final 7x7 AveragePool): the same sum and multiplier
            // x_scale / (y_scale * H * W) as the general path, through the per-plane sums.
            return qatml_global_average_pool(ctx, x, type, p->batch, p->channels, H * W, x_scale, x_zero_point, y_scale,
                                             y_zero_point, y);
        }
        if (simd && simd->max_pool_3x3s2 && kind == QATML_POOL_MAX && kernel_h == 3 && kernel_w == 3 && p->stride_h == 2 &&
            p->stride_w == 2 && p->pad_top <= 1 && p->pad_left <= 1 && p->dilation_h == 1 && p->dilation_w == 1 &&
            2 * ow + 66 <= (int64_t(1) << 20)) {  // ResNet's stem MaxPool: one pass, no padded plane
            simd->max_pool_3x3s2(static_cast<const uint8_t*>(x), p->batch * p->channels, H, W, oh, ow, p->pad_top,
                                 p->pad_left, sg, static_cast<uint8_t*>(y));
            return QATML_OK;
        }
        if (simd) {
            const PoolGeometry g{H, W, oh, ow, kernel_h, kernel_w, p->stride_h, p->stride_w, p->dilation_h, p->dilation_w,
                                 p->pad_top, p->pad_left, H + p->pad_top + p->pad_bottom, W + p->pad_left + p->pad_right};
            pool2d_simd(*simd, kind == QATML_POOL_MAX, g, p->batch * p->channels, count_include_pad,
                        static_cast<const uint8_t*>(x), sg, x_scale, x_zero_point, y_scale, y_zero_point, lo, hi,
                        static_cast<uint8_t*>(y));
            return QATML_OK;
        }
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
        if (spatial > kMaxAverageCells)
            return fail(QATML_INVALID_ARGUMENT, "%s: spatial %lld exceeds 2^23 (int32 sum)", fn, (long long)spatial);
        int32_t lo = 0, hi = 0;
        if ((s = check_qparams(fn, type, x_scale, x_zero_point, y_scale, y_zero_point, &lo, &hi)) != QATML_OK) return s;
        const bool sg = type == QATML_TYPE_INT8;
        const float m = x_scale / (y_scale * static_cast<float>(spatial));
        const SimdKernels* simd = active_simd(fn, &s);
        if (s != QATML_OK) return s;
        std::vector<int32_t> sums;
        if (simd) {
            sums.resize(static_cast<size_t>(batch * channels));
            simd->sum_planes(static_cast<const uint8_t*>(x), batch * channels, spatial, sg, sums.data());
        }
        for (int64_t nc = 0; nc < batch * channels; ++nc) {
            int32_t sum = 0;
            if (simd) sum = sums[static_cast<size_t>(nc)];
            else
                for (int64_t i = 0; i < spatial; ++i) sum += ld(x, sg, nc * spatial + i);
            sum -= static_cast<int32_t>(spatial) * x_zero_point;
            st(y, sg, nc, requant_one(sum, m, y_zero_point, lo, hi));
        }
        return QATML_OK;
    });
}

}  // extern "C"
