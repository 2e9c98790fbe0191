// MaxPool, QLinearAveragePool and QLinearGlobalAveragePool over NCHW u8/s8. The scalar ISA runs
// the per-pixel reference; the fast ISAs pool separably on a padded plane with the vectorised loops
// of simd_kernels.h (a window's max / sum is the max / sum over its columns of the column's
// max / sum over the window's rows).
#include "kernels/kernel_api.h"

#include <algorithm>
#include <cstring>

using namespace qatml;
using namespace qatml::kernels;

namespace {
inline int32_t ld(const void* x, bool s, int64_t i) {
    return s ? int32_t(static_cast<const int8_t*>(x)[i]) : int32_t(static_cast<const uint8_t*>(x)[i]);
}
inline void st(void* y, bool s, int64_t i, int32_t v) {
    if (s)
        static_cast<int8_t*>(y)[i] = static_cast<int8_t>(v);
    else
        static_cast<uint8_t*>(y)[i] = static_cast<uint8_t>(v);
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

// Average pooling: the multiplier of each output pixel (its count depends on the borders only) and the pixels
// whose window counts no cell.
void average_multipliers(PoolPlan& p) {
    auto valid = [](int64_t o, int64_t s, int64_t pad, int64_t d, int64_t k, int64_t n) {
        int64_t c = 0;
        for (int64_t t = 0; t < k; ++t) c += (o * s - pad + t * d >= 0 && o * s - pad + t * d < n);
        return c;
    };
    auto cells = [](int64_t o, int64_t s, int64_t pad, int64_t padb, int64_t d, int64_t k, int64_t n) {
        int64_t c = 0;  // ONNX counts pad cells inside the padded input only (not beyond the pads)
        for (int64_t t = 0; t < k; ++t) c += (o * s - pad + t * d >= -pad && o * s - pad + t * d < n + padb);
        return c;
    };
    p.mult.resize(static_cast<size_t>(p.oh * p.ow));
    p.empty.clear();
    for (int64_t oy = 0; oy < p.oh; ++oy)
        for (int64_t ox = 0; ox < p.ow; ++ox) {
            const int64_t count = p.count_include_pad ? cells(oy, p.sh, p.pt, p.pb, p.dh, p.kh, p.h) * cells(ox, p.sw, p.pl, p.pr, p.dw, p.kw, p.w)
                                                      : valid(oy, p.sh, p.pt, p.dh, p.kh, p.h) * valid(ox, p.sw, p.pl, p.dw, p.kw, p.w);
            if (count == 0) p.empty.push_back(oy * p.ow + ox);
            p.mult[static_cast<size_t>(oy * p.ow + ox)] = count == 0 ? 1.0f : p.x_scale / (p.y_scale * static_cast<float>(count));
        }
}

// Separable path: padding holds the type's minimum (max pooling: never above a real cell; a window of padding only
// gives the minimum, as the reference) or the input zero point (average pooling: contributes x_zp, removed with
// kh * kw * x_zp).
void pool_separable(const PoolPlan& g, int64_t planes, const uint8_t* x, uint8_t* y, uint8_t* scratch) {
    const SimdKernels& simd = *g.simd;
    const bool sg = g.is_signed;
    const int64_t nh = (g.ow - 1) * g.sw + 1;  // horizontal positions at stride 1 (every sw-th is an output)
    uint8_t* padded = scratch + g.s_padded;
    uint8_t* colmax = scratch + g.s_colmax;
    uint8_t* rowmax = scratch + g.s_rowmax;
    int32_t* colsum = reinterpret_cast<int32_t*>(scratch + g.s_colsum);
    int32_t* rowsum = reinterpret_cast<int32_t*>(scratch + g.s_rowsum);
    int32_t* acc = reinterpret_cast<int32_t*>(scratch + g.s_acc);
    const uint8_t pad = static_cast<uint8_t>(g.is_max ? g.lo : g.xz);
    const int32_t window_pad = static_cast<int32_t>(static_cast<uint32_t>(g.kh * g.kw) * static_cast<uint32_t>(g.xz));
    for (int64_t plane = 0; plane < planes; ++plane) {
        const uint8_t* src = x + plane * g.h * g.w;
        uint8_t* out = y + plane * g.oh * g.ow;
        std::memset(padded, pad, static_cast<size_t>(g.hp * g.wp));
        for (int64_t iy = 0; iy < g.h; ++iy) std::memcpy(padded + (iy + g.pt) * g.wp + g.pl, src + iy * g.w, static_cast<size_t>(g.w));
        for (int64_t oy = 0; oy < g.oh; ++oy) {
            const uint8_t* top = padded + oy * g.sh * g.wp;
            uint8_t* orow = out + oy * g.ow;
            if (g.is_max) {
                int64_t i = simd.max_taps(top, g.kh, g.dh * g.wp, g.wp, sg, colmax);
                max_taps_tail(top, g.kh, g.dh * g.wp, i, g.wp, sg, colmax);
                uint8_t* h = g.sw == 1 ? orow : rowmax;
                i = simd.max_taps(colmax, g.kw, g.dw, nh, sg, h);
                max_taps_tail(colmax, g.kw, g.dw, i, nh, sg, h);
                if (g.sw != 1)
                    for (int64_t ox = 0; ox < g.ow; ++ox) orow[ox] = rowmax[ox * g.sw];
                continue;
            }
            int64_t i = simd.sum_taps_bytes(top, g.kh, g.dh * g.wp, g.wp, sg, colsum);
            if (sg)
                sum_taps_tail(reinterpret_cast<const int8_t*>(top), g.kh, g.dh * g.wp, i, g.wp, colsum);
            else
                sum_taps_tail(top, g.kh, g.dh * g.wp, i, g.wp, colsum);
            i = simd.sum_taps_int32(colsum, g.kw, g.dw, nh, rowsum);
            sum_taps_tail(colsum, g.kw, g.dw, i, nh, rowsum);
            for (int64_t ox = 0; ox < g.ow; ++ox) acc[ox] = rowsum[ox * g.sw] - window_pad;
            const float* m = g.mult.data() + oy * g.ow;
            i = simd.requantize_each(acc, m, g.ow, g.yz, g.lo, g.hi, orow);
            for (; i < g.ow; ++i) st(orow, sg, i, requant_one(acc[i], m[i], g.yz, g.lo, g.hi));
        }
        for (int64_t e : g.empty) st(out, sg, e, g.yz);
    }
}

// The per-pixel reference (the scalar path).
void pool_reference(const PoolPlan& p, int64_t planes, const uint8_t* x, uint8_t* y) {
    const bool sg = p.is_signed;
    for (int64_t nc = 0; nc < planes; ++nc) {
        const int64_t in0 = nc * p.h * p.w;
        for (int64_t oy = 0; oy < p.oh; ++oy)
            for (int64_t ox = 0; ox < p.ow; ++ox) {
                int32_t best = INT32_MIN, sum = 0;
                int64_t valid = 0;
                for (int64_t ky = 0; ky < p.kh; ++ky) {
                    const int64_t iy = oy * p.sh - p.pt + ky * p.dh;
                    for (int64_t kx = 0; kx < p.kw; ++kx) {
                        const int64_t ix = ox * p.sw - p.pl + kx * p.dw;
                        if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) continue;
                        const int32_t v = ld(x, sg, in0 + iy * p.w + ix);
                        best = std::max(best, v);
                        sum += v - p.xz;
                        ++valid;
                    }
                }
                const int64_t oi = (nc * p.oh + oy) * p.ow + ox;
                if (p.is_max)
                    st(y, sg, oi, valid ? best : p.lo);
                else
                    st(y, sg, oi, requant_one(sum, p.mult[static_cast<size_t>(oy * p.ow + ox)], p.yz, p.lo, p.hi));
            }
        if (!p.is_max)
            for (int64_t e : p.empty) st(y, sg, nc * p.oh * p.ow + e, p.yz);
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

void pool_prepare(PoolPlan& plan, const SimdKernels* simd, bool is_max, const qatml_conv2d_params& p, int64_t kh, int64_t kw,
                  int32_t count_include_pad, int32_t type, float x_scale, int32_t xz, float y_scale, int32_t yz) {
    PoolPlan& g = plan;
    g.simd = simd;
    g.is_max = is_max;
    g.is_signed = type == QATML_TYPE_INT8;
    type_range(type, &g.lo, &g.hi);
    g.channels = p.channels;
    g.h = p.height;
    g.w = p.width;
    g.kh = kh;
    g.kw = kw;
    g.sh = p.stride_h;
    g.sw = p.stride_w;
    g.dh = p.dilation_h;
    g.dw = p.dilation_w;
    g.pt = p.pad_top;
    g.pl = p.pad_left;
    g.pb = p.pad_bottom;
    g.pr = p.pad_right;
    g.hp = g.h + g.pt + g.pb;
    g.wp = g.w + g.pl + g.pr;
    g.oh = (g.hp - (g.dh * (kh - 1) + 1)) / g.sh + 1;
    g.ow = (g.wp - (g.dw * (kw - 1) + 1)) / g.sw + 1;
    g.count_include_pad = count_include_pad;
    g.x_scale = x_scale;
    g.y_scale = y_scale;
    g.xz = xz;
    g.yz = yz;
    const bool no_pads = g.pt == 0 && g.pl == 0 && g.pb == 0 && g.pr == 0, dense = g.dh == 1 && g.dw == 1;
    if (simd && is_max && kh == 2 && kw == 2 && g.sh == 2 && g.sw == 2 && no_pads && dense) {
        g.path = PoolPlan::Path::Max2x2;  // the common 2x2 stride-2 MaxPool: one pass, no padded copy
    } else if (!is_max && kh == g.h && kw == g.w && no_pads && g.h * g.w <= kMaxAverageCells) {
        // One window over the whole plane (ResNet's final 7x7 AveragePool): the same sum and multiplier
        // x_scale / (y_scale * H * W) as the general path, through the per-plane sums.
        g.path = PoolPlan::Path::WholePlane;
        g.scratch_bytes = g.channels * 4;
    } else if (simd && simd->max_pool_3x3s2 && is_max && kh == 3 && kw == 3 && g.sh == 2 && g.sw == 2 && g.pt <= 1 && g.pl <= 1 &&
               dense && 2 * g.ow + 66 <= (int64_t(1) << 20)) {
        g.path = PoolPlan::Path::Max3x3Stride2;  // ResNet's stem MaxPool: one pass, no padded plane
    } else {
        g.path = simd ? PoolPlan::Path::Separable : PoolPlan::Path::Reference;
        if (!is_max) average_multipliers(g);
        if (simd) {
            const int64_t nh = (g.ow - 1) * g.sw + 1;
            ScratchLayout s;
            g.s_padded = s.take(g.hp * g.wp);
            g.s_colmax = s.take(g.wp);
            g.s_rowmax = s.take(nh);
            g.s_colsum = s.take(is_max ? 0 : g.wp * 4);
            g.s_rowsum = s.take(is_max ? 0 : nh * 4);
            g.s_acc = s.take(is_max ? 0 : g.ow * 4);
            g.scratch_bytes = s.bytes;
        }
    }
}

void pool_run(const PoolPlan& g, int64_t batch, const uint8_t* x, uint8_t* y, uint8_t* scratch) {
    const int64_t planes = batch * g.channels;
    switch (g.path) {
        case PoolPlan::Path::Max2x2: g.simd->max_pool_2x2(x, planes, g.h, g.w, g.oh, g.ow, g.is_signed, y); return;
        case PoolPlan::Path::Max3x3Stride2:
            g.simd->max_pool_3x3s2(x, planes, g.h, g.w, g.oh, g.ow, g.pt, g.pl, g.is_signed, y);
            return;
        case PoolPlan::Path::WholePlane: {
            GlobalPoolPlan gp;
            global_pool_prepare(gp, g.simd, g.is_signed ? QATML_TYPE_INT8 : QATML_TYPE_UINT8, g.channels, g.h * g.w, g.x_scale, g.xz,
                                g.y_scale, g.yz);
            gp.x_layout = g.x_layout;
            gp.h = g.h;
            gp.w = g.w;
            global_pool_run(gp, batch, x, y, scratch);
            return;
        }
        case PoolPlan::Path::Separable: pool_separable(g, planes, x, y, scratch); return;
        case PoolPlan::Path::Reference: pool_reference(g, planes, x, y); return;
    }
}

void global_pool_prepare(GlobalPoolPlan& plan, const SimdKernels* simd, int32_t type, int64_t channels, int64_t spatial, float x_scale,
                         int32_t xz, float y_scale, int32_t yz) {
    plan.simd = simd;
    plan.is_signed = type == QATML_TYPE_INT8;
    type_range(type, &plan.lo, &plan.hi);
    plan.channels = channels;
    plan.spatial = spatial;
    plan.mult = x_scale / (y_scale * static_cast<float>(spatial));
    plan.xz = xz;
    plan.yz = yz;
    plan.scratch_bytes = channels * 4;
}

void global_pool_run(const GlobalPoolPlan& g, int64_t batch, const uint8_t* x, uint8_t* y, uint8_t* scratch) {
    const bool sg = g.is_signed;
    int32_t* sums = reinterpret_cast<int32_t*>(scratch);
    const ActivationLayout& l = g.x_layout;
    for (int64_t n = 0; n < batch; ++n) {
        if (l.channels_last) {  // the interior pixels of each channel (vectorised by the compiler over channels)
            const uint8_t* img = x + n * l.image_bytes;
            std::memset(sums, 0, static_cast<size_t>(g.channels * 4));
            for (int64_t yy = 0; yy < g.h; ++yy)
                for (int64_t xx = 0; xx < g.w; ++xx) {
                    const uint8_t* px = img + ((yy + l.pt) * l.wp + xx + l.pl) * l.cs;
                    if (sg)
                        for (int64_t c = 0; c < g.channels; ++c) sums[c] += static_cast<int8_t>(px[c]);
                    else
                        for (int64_t c = 0; c < g.channels; ++c) sums[c] += px[c];
                }
            for (int64_t c = 0; c < g.channels; ++c)
                st(y, sg, n * g.channels + c, requant_one(sums[c] - static_cast<int32_t>(g.spatial) * g.xz, g.mult, g.yz, g.lo, g.hi));
            continue;
        }
        const uint8_t* img = x + n * g.channels * g.spatial;
        if (g.simd) g.simd->sum_planes(img, g.channels, g.spatial, sg, sums);
        for (int64_t c = 0; c < g.channels; ++c) {
            int32_t sum = 0;
            if (g.simd)
                sum = sums[c];
            else
                for (int64_t i = 0; i < g.spatial; ++i) sum += ld(img, sg, c * g.spatial + i);
            sum -= static_cast<int32_t>(g.spatial) * g.xz;
            st(y, sg, n * g.channels + c, requant_one(sum, g.mult, g.yz, g.lo, g.hi));
        }
    }
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
        const SimdKernels* simd = active_simd(fn, &s);
        if (s != QATML_OK) return s;
        PoolPlan plan;
        qatml_conv2d_params one = *p;
        one.batch = 1;
        pool_prepare(plan, simd, kind == QATML_POOL_MAX, one, kernel_h, kernel_w, count_include_pad, type, x_scale, x_zero_point, y_scale,
                     y_zero_point);
        AlignedBuffer scratch(plan.scratch_bytes);
        pool_run(plan, p->batch, static_cast<const uint8_t*>(x), static_cast<uint8_t*>(y), scratch.data);
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
        const SimdKernels* simd = active_simd(fn, &s);
        if (s != QATML_OK) return s;
        GlobalPoolPlan plan;
        global_pool_prepare(plan, simd, type, channels, spatial, x_scale, x_zero_point, y_scale, y_zero_point);
        AlignedBuffer scratch(plan.scratch_bytes);
        global_pool_run(plan, batch, static_cast<const uint8_t*>(x), static_cast<uint8_t*>(y), scratch.data);
        return QATML_OK;
    });
}

}  // extern "C"
