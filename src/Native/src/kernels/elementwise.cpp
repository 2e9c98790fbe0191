// QLinearAdd of two same-shape u8/s8 tensors (the path's vectorised loop, then the scalar reference for
// the tail) and 256-entry byte tables.
#include "kernels/kernel_api.h"

using namespace qatml;
using namespace qatml::kernels;

namespace qatml {
namespace kernels {

AddParams add_params(int32_t type, float a_scale, int32_t a_zp, float b_scale, int32_t b_zp, float y_scale, int32_t y_zp) {
    AddParams p;
    type_range(type, &p.lo, &p.hi);
    p.is_signed = type == QATML_TYPE_INT8;
    p.za = a_zp;
    p.zb = b_zp;
    p.zy = y_zp;
    p.ra = a_scale / y_scale;
    p.rb = b_scale / y_scale;
    return p;
}

void add_8bit(const SimdKernels* simd, const AddParams& p, const void* a, const void* b, int64_t n, void* y) {
    const uint8_t *a8 = static_cast<const uint8_t*>(a), *b8 = static_cast<const uint8_t*>(b);
    uint8_t* y8 = static_cast<uint8_t*>(y);
    int64_t i = simd ? simd->add(a8, b8, n, p.is_signed, p.za, p.zb, p.ra, p.rb, p.zy, p.lo, p.hi, y8) : 0;
    for (; i < n; ++i) {
        const int32_t av = p.is_signed ? int32_t(int8_t(a8[i])) : int32_t(a8[i]);
        const int32_t bv = p.is_signed ? int32_t(int8_t(b8[i])) : int32_t(b8[i]);
        y8[i] = static_cast<uint8_t>(add_one(p, av, bv));
    }
}

void lut_bytes(const uint8_t* table, const uint8_t* x, int64_t n, uint8_t* y) {
    for (int64_t i = 0; i < n; ++i) y[i] = table[x[i]];
}

}  // namespace kernels
}  // namespace qatml

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
        const SimdKernels* simd = active_simd(fn, &s);
        if (s != QATML_OK) return s;
        add_8bit(simd, add_params(type, a_scale, a_zero_point, b_scale, b_zero_point, y_scale, y_zero_point), a, b, count, y);
        return QATML_OK;
    });
}

}  // extern "C"
