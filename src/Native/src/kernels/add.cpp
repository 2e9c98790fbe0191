// QLinearAdd of two same-shape u8/s8 tensors: the active ISA's vectorised loop, then the scalar
// reference for the tail.
#include "kernels/abi_util.h"

using namespace qatml;
using namespace qatml::kernels;

extern "C" {

QATML_API qatml_status qatml_add(const qatml_context* ctx, const void* a, float a_scale, int32_t a_zero_point,
                                 const void* b, float b_scale, int32_t b_zero_point, int32_t type, int64_t count,
                                 float y_scale, int32_t y_zero_point, void* y) {
    static const char* fn = "qatml_add";
    return guarded(fn, [&]() -> qatml_status {
        qatml_status s = check_context(ctx, fn);
        if (s != QATML_OK) return s;
        QATML_CHECK_NOT_NULL(a, fn);
        QATML_CHECK_NOT_NULL(b, fn);
        QATML_CHECK_NOT_NULL(y, fn);
        QATML_CHECK_POSITIVE(count, fn);
        int32_t lo = 0, hi = 0;
        if ((type != QATML_TYPE_UINT8 && type != QATML_TYPE_INT8) || !type_range(type, &lo, &hi))
            return fail(QATML_INVALID_ARGUMENT, "%s: type %d must be UINT8 or INT8", fn, type);
        for (float sc : {a_scale, b_scale, y_scale})
            if (!(sc > 0.0f) || !std::isfinite(sc))
                return fail(QATML_INVALID_ARGUMENT, "%s: scale %g must be finite and > 0", fn, double(sc));
        for (int32_t z : {a_zero_point, b_zero_point, y_zero_point})
            if (z < lo || z > hi)
                return fail(QATML_INVALID_ARGUMENT, "%s: zero point %d is outside the %s range", fn, z, type_name(type));
        if ((s = check_scale_ratio(fn, "a_scale", a_scale, "y_scale", y_scale)) != QATML_OK ||
            (s = check_scale_ratio(fn, "b_scale", b_scale, "y_scale", y_scale)) != QATML_OK)
            return s;
        const float ra = a_scale / y_scale, rb = b_scale / y_scale;
        const float lf = static_cast<float>(lo - y_zero_point), hf = static_cast<float>(hi - y_zero_point);
        const bool sg = type == QATML_TYPE_INT8;
        const SimdKernels* simd = active_simd(fn, &s);
        if (s != QATML_OK) return s;
        int64_t i = 0;
        if (simd)
            i = simd->add(static_cast<const uint8_t*>(a), static_cast<const uint8_t*>(b), count, sg, a_zero_point,
                          b_zero_point, ra, rb, y_zero_point, lo, hi, static_cast<uint8_t*>(y));
        for (; i < count; ++i) {
            const int32_t av = sg ? int32_t(static_cast<const int8_t*>(a)[i]) : int32_t(static_cast<const uint8_t*>(a)[i]);
            const int32_t bv = sg ? int32_t(static_cast<const int8_t*>(b)[i]) : int32_t(static_cast<const uint8_t*>(b)[i]);
            const float pa = static_cast<float>(av - a_zero_point) * ra;  // no FMA: kernels build with -ffp-contract=off
            const float pb = static_cast<float>(bv - b_zero_point) * rb;
            float v = pa + pb;
            v = v < lf ? lf : v;
            v = v > hf ? hf : v;
            const int32_t q = static_cast<int32_t>(std::nearbyint(v)) + y_zero_point;
            if (sg) static_cast<int8_t*>(y)[i] = static_cast<int8_t>(q); else static_cast<uint8_t*>(y)[i] = static_cast<uint8_t>(q);
        }
        return QATML_OK;
    });
}

}  // extern "C"
