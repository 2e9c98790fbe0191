// QuantizeLinear / DequantizeLinear / requantization (per tensor or per channel) and int4 packing.
// 8-bit and int32 data run the vectorised loops of the active ISA (simd_kernels.h) on each row of
// `inner` elements and finish the row with the scalar reference; 4-bit data use the reference only.
#include "kernels/kernel_api.h"

using namespace qatml;
using namespace qatml::kernels;

namespace {

qatml_status check_shape(const char* fn, int64_t outer, int64_t channels, int64_t inner, int64_t* total) {
    QATML_CHECK_POSITIVE(outer, fn);
    QATML_CHECK_POSITIVE(channels, fn);
    QATML_CHECK_POSITIVE(inner, fn);
    int64_t t = 0;
    if (!checked_mul(fn, "outer*channels", outer, channels, &t) || !checked_mul(fn, "outer*channels*inner", t, inner, total))
        return QATML_INVALID_ARGUMENT;
    return QATML_OK;
}

qatml_status check_scales(const char* fn, const float* scales, int64_t channels) {
    QATML_CHECK_NOT_NULL(scales, fn);
    QATML_CHECK_ALIGNED(scales, 4, fn);
    for (int64_t c = 0; c < channels; ++c)
        if (!(scales[c] > 0.0f) || !std::isfinite(scales[c]))
            return fail(QATML_INVALID_ARGUMENT, "%s: scales[%lld] = %g must be finite and > 0", fn, (long long)c,
                        static_cast<double>(scales[c]));
    return QATML_OK;
}

qatml_status check_zps(const char* fn, const int32_t* zps, int64_t channels, int32_t type) {
    QATML_CHECK_ALIGNED(zps, 4, fn);
    if (!zps) return QATML_OK;
    int32_t lo = 0, hi = 0;
    type_range(type, &lo, &hi);
    for (int64_t c = 0; c < channels; ++c)
        if (zps[c] < lo || zps[c] > hi)
            return fail(QATML_INVALID_ARGUMENT, "%s: zero_points[%lld] = %d is outside the %s range", fn, (long long)c,
                        zps[c], type_name(type));
    return QATML_OK;
}

inline void put(void* y, int32_t type, int64_t i, int32_t v) {
    switch (type) {
        case QATML_TYPE_UINT8: static_cast<uint8_t*>(y)[i] = static_cast<uint8_t>(v); break;
        case QATML_TYPE_INT8: static_cast<int8_t*>(y)[i] = static_cast<int8_t>(v); break;
        default: {  // 4-bit: callers zero the tail nibble first
            uint8_t* b = static_cast<uint8_t*>(y) + (i >> 1);
            const uint8_t nib = static_cast<uint8_t>(v) & 0x0f;
            *b = (i & 1) ? static_cast<uint8_t>((*b & 0x0f) | (nib << 4)) : static_cast<uint8_t>((*b & 0xf0) | nib);
        }
    }
}

inline int32_t get(const void* x, int32_t type, int64_t i) {
    switch (type) {
        case QATML_TYPE_UINT8: return static_cast<const uint8_t*>(x)[i];
        case QATML_TYPE_INT8: return static_cast<const int8_t*>(x)[i];
        case QATML_TYPE_INT32: return static_cast<const int32_t*>(x)[i];
        case QATML_TYPE_UINT4: {
            const uint8_t b = static_cast<const uint8_t*>(x)[i >> 1];
            return (i & 1) ? (b >> 4) : (b & 0x0f);
        }
        default: {
            const uint8_t b = static_cast<const uint8_t*>(x)[i >> 1];
            const int v = (i & 1) ? (b >> 4) : (b & 0x0f);
            return v >= 8 ? v - 16 : v;
        }
    }
}

}  // namespace

namespace qatml {
namespace kernels {

void quantize_8bit(const SimdKernels* simd, const float* x, int64_t n, float scale, int32_t zp, int32_t type, void* y) {
    int32_t lo = 0, hi = 0;
    type_range(type, &lo, &hi);
    int64_t i = simd ? simd->quantize(x, n, scale, zp, lo, hi, static_cast<uint8_t*>(y)) : 0;
    const float lf = static_cast<float>(lo - zp), hf = static_cast<float>(hi - zp);
    for (; i < n; ++i) {
        float v = x[i] / scale;
        v = v >= lf ? v : lf;  // NaN fails the comparison: the type's minimum, as ONNX Runtime gives
        v = v > hf ? hf : v;
        put(y, type, i, static_cast<int32_t>(std::nearbyint(v)) + zp);
    }
}

void dequantize_values(const SimdKernels* simd, const void* x, int32_t type, int64_t n, float scale, int32_t zp, float* y) {
    int64_t i = simd ? simd->dequantize(x, type, n, zp, scale, y) : 0;
    for (; i < n; ++i)
        y[i] = static_cast<float>(static_cast<int32_t>(static_cast<uint32_t>(get(x, type, i)) - static_cast<uint32_t>(zp))) * scale;
}

}  // namespace kernels
}  // namespace qatml

extern "C" {

QATML_API qatml_status qatml_quantize_linear(const qatml_context* ctx, const float* x, int64_t outer,
                                             int64_t channels, int64_t inner, const float* scales,
                                             const int32_t* zero_points, int32_t out_type, void* y) {
    static const char* fn = "qatml_quantize_linear";
    return guarded(fn, [&]() -> qatml_status {
        qatml_status st = check_context(ctx, fn);
        if (st != QATML_OK) return st;
        QATML_CHECK_NOT_NULL(x, fn);
        QATML_CHECK_NOT_NULL(y, fn);
        QATML_CHECK_ALIGNED(x, 4, fn);
        int64_t total = 0;
        if ((st = check_shape(fn, outer, channels, inner, &total)) != QATML_OK) return st;
        int32_t lo = 0, hi = 0;
        if (out_type == QATML_TYPE_INT32 || !type_range(out_type, &lo, &hi))
            return fail(QATML_INVALID_ARGUMENT, "%s: out_type %d must be UINT8, INT8, UINT4 or INT4", fn, out_type);
        if ((st = check_scales(fn, scales, channels)) != QATML_OK) return st;
        if ((st = check_zps(fn, zero_points, channels, out_type)) != QATML_OK) return st;
        const SimdKernels* simd = active_simd(fn, &st);
        if (st != QATML_OK) return st;
        const bool four_bit = out_type == QATML_TYPE_UINT4 || out_type == QATML_TYPE_INT4;
        if (four_bit && (total & 1)) static_cast<uint8_t*>(y)[total >> 1] = 0;
        for (int64_t o = 0; o < outer; ++o)
            for (int64_t c = 0; c < channels; ++c) {
                const float s = scales[c];
                const int32_t zp = zero_points ? zero_points[c] : 0;
                const float lf = static_cast<float>(lo - zp), hf = static_cast<float>(hi - zp);
                const int64_t base = (o * channels + c) * inner;
                if (!four_bit) {
                    quantize_8bit(simd, x + base, inner, s, zp, out_type, static_cast<uint8_t*>(y) + base);
                    continue;
                }
                for (int64_t i = 0; i < inner; ++i) {
                    float v = x[base + i] / s;
                    v = v >= lf ? v : lf;  // NaN fails the comparison: the type's minimum, as ONNX Runtime gives
                    v = v > hf ? hf : v;
                    put(y, out_type, base + i, static_cast<int32_t>(std::nearbyint(v)) + zp);
                }
            }
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_dequantize_linear(const qatml_context* ctx, const void* x, int32_t in_type,
                                               int64_t outer, int64_t channels, int64_t inner,
                                               const float* scales, const int32_t* zero_points, float* y) {
    static const char* fn = "qatml_dequantize_linear";
    return guarded(fn, [&]() -> qatml_status {
        qatml_status st = check_context(ctx, fn);
        if (st != QATML_OK) return st;
        QATML_CHECK_NOT_NULL(x, fn);
        QATML_CHECK_NOT_NULL(y, fn);
        QATML_CHECK_ALIGNED(y, 4, fn);
        int64_t total = 0;
        if ((st = check_shape(fn, outer, channels, inner, &total)) != QATML_OK) return st;
        int32_t lo = 0, hi = 0;
        if (in_type != QATML_TYPE_INT32 && !type_range(in_type, &lo, &hi))
            return fail(QATML_INVALID_ARGUMENT, "%s: in_type %d must be UINT8, INT8, INT32, UINT4 or INT4", fn, in_type);
        if (in_type == QATML_TYPE_INT32) QATML_CHECK_ALIGNED(x, 4, fn);
        if ((st = check_scales(fn, scales, channels)) != QATML_OK) return st;
        if (in_type != QATML_TYPE_INT32 && (st = check_zps(fn, zero_points, channels, in_type)) != QATML_OK) return st;
        QATML_CHECK_ALIGNED(zero_points, 4, fn);
        const SimdKernels* simd = active_simd(fn, &st);
        if (st != QATML_OK) return st;
        const bool four_bit = in_type == QATML_TYPE_UINT4 || in_type == QATML_TYPE_INT4;
        for (int64_t o = 0; o < outer; ++o)
            for (int64_t c = 0; c < channels; ++c) {
                const float s = scales[c];
                const int32_t zp = zero_points ? zero_points[c] : 0;
                const int64_t base = (o * channels + c) * inner;
                if (!four_bit) {
                    dequantize_values(simd, static_cast<const uint8_t*>(x) + base * elem_size(in_type), in_type, inner, s, zp, y + base);
                    continue;
                }
                for (int64_t i = 0; i < inner; ++i)
                    y[base + i] = static_cast<float>(static_cast<int32_t>(
                                      static_cast<uint32_t>(get(x, in_type, base + i)) - static_cast<uint32_t>(zp))) *
                        s;
            }
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_requantize(const qatml_context* ctx, const int32_t* x, int64_t outer,
                                        int64_t channels, int64_t inner, const int32_t* bias,
                                        const float* multipliers, int32_t out_zero_point, int32_t out_type,
                                        void* y) {
    static const char* fn = "qatml_requantize";
    return guarded(fn, [&]() -> qatml_status {
        qatml_status st = check_context(ctx, fn);
        if (st != QATML_OK) return st;
        QATML_CHECK_NOT_NULL(x, fn);
        QATML_CHECK_NOT_NULL(y, fn);
        QATML_CHECK_ALIGNED(x, 4, fn);
        QATML_CHECK_ALIGNED(bias, 4, fn);
        int64_t total = 0;
        if ((st = check_shape(fn, outer, channels, inner, &total)) != QATML_OK) return st;
        int32_t lo = 0, hi = 0;
        if ((out_type != QATML_TYPE_UINT8 && out_type != QATML_TYPE_INT8) || !type_range(out_type, &lo, &hi))
            return fail(QATML_INVALID_ARGUMENT, "%s: out_type %d must be UINT8 or INT8", fn, out_type);
        if ((st = check_scales(fn, multipliers, channels)) != QATML_OK) return st;
        if (out_zero_point < lo || out_zero_point > hi)
            return fail(QATML_INVALID_ARGUMENT, "%s: out_zero_point %d is outside the %s range", fn, out_zero_point,
                        type_name(out_type));
        const SimdKernels* simd = active_simd(fn, &st);
        if (st != QATML_OK) return st;
        for (int64_t o = 0; o < outer; ++o)
            for (int64_t c = 0; c < channels; ++c) {
                const int64_t base = (o * channels + c) * inner;
                const uint32_t b = bias ? static_cast<uint32_t>(bias[c]) : 0u;
                int64_t i = 0;
                if (simd)
                    i = simd->requantize(x + base, inner, static_cast<int32_t>(b), multipliers[c], out_zero_point, lo, hi,
                                         static_cast<uint8_t*>(y) + base);
                for (; i < inner; ++i) {
                    const int32_t acc = static_cast<int32_t>(static_cast<uint32_t>(x[base + i]) + b);
                    put(y, out_type, base + i, requant_one(acc, multipliers[c], out_zero_point, lo, hi));
                }
            }
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_int4_pack(const int8_t* src, int64_t count, int32_t is_signed, uint8_t* dst) {
    static const char* fn = "qatml_int4_pack";
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_NOT_NULL(src, fn);
        QATML_CHECK_NOT_NULL(dst, fn);
        QATML_CHECK_POSITIVE(count, fn);
        const int lo = is_signed ? -8 : 0, hi = is_signed ? 7 : 15;
        for (int64_t i = 0; i < count; ++i) {
            const int v = is_signed ? int(src[i]) : int(static_cast<uint8_t>(src[i]));
            if (v < lo || v > hi)
                return fail(QATML_INVALID_ARGUMENT, "%s: src[%lld] = %d is outside %d..%d", fn, (long long)i, v, lo, hi);
        }
        for (int64_t i = 0; i < count; i += 2) {
            const uint8_t a = static_cast<uint8_t>(src[i]) & 0x0f;
            const uint8_t b = i + 1 < count ? static_cast<uint8_t>(src[i + 1]) & 0x0f : 0;
            dst[i >> 1] = static_cast<uint8_t>(a | (b << 4));
        }
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_int4_unpack(const uint8_t* src, int64_t count, int32_t is_signed, int8_t* dst) {
    static const char* fn = "qatml_int4_unpack";
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_NOT_NULL(src, fn);
        QATML_CHECK_NOT_NULL(dst, fn);
        QATML_CHECK_POSITIVE(count, fn);
        for (int64_t i = 0; i < count; ++i)
            dst[i] = static_cast<int8_t>(get(src, is_signed ? QATML_TYPE_INT4 : QATML_TYPE_UINT4, i));
        return QATML_OK;
    });
}

}  // extern "C"
