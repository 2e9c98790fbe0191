// Helpers shared by the validating qatml_* entry points of the kernels (abi_util.h).
#include "kernels/abi_util.h"

#include <algorithm>

namespace qatml {
namespace kernels {

bool checked_mul(const char* fn, const char* what, int64_t a, int64_t b, int64_t* out, int limit_log2) {
    int64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r) || r > (int64_t(1) << limit_log2)) {
        fail(QATML_INVALID_ARGUMENT, "%s: %s = %lld * %lld overflows or exceeds 2^%d", fn, what,
             static_cast<long long>(a), static_cast<long long>(b), limit_log2);
        return false;
    }
    *out = r;
    return true;
}

qatml_status check_context(const qatml_context* ctx, const char* fn) {
    if (ctx == nullptr) return QATML_OK;
    if (!is_live_handle(ctx, HandleKind::Context))
        return fail(QATML_INVALID_HANDLE, "%s: context (%p) is not a live context", fn, static_cast<const void*>(ctx));
    qatml_device d{};
    qatml_status s = qatml_context_get_device(ctx, &d);
    if (s != QATML_OK) return s;
    if (d.kind != QATML_DEVICE_CPU)
        return fail(QATML_UNSUPPORTED, "%s: no kernels for device kind %d yet (CPU only in this build)", fn, d.kind);
    return QATML_OK;
}

qatml_device context_device(const qatml_context* ctx) {
    qatml_device d{QATML_DEVICE_CPU, 0};
    if (ctx) qatml_context_get_device(ctx, &d);
    return d;
}

qatml_status check_scale_ratio(const char* fn, const char* num_name, float num, const char* den_name, float den) {
    const float ratio = num / den;
    if (ratio <= kMaxScaleRatio) return QATML_OK;
    return fail(QATML_INVALID_ARGUMENT, "%s: %s / %s = %g / %g exceeds 2^64 (the kernel's products would overflow)", fn,
                num_name, den_name, static_cast<double>(num), static_cast<double>(den));
}

bool type_range(int32_t type, int32_t* lo, int32_t* hi) {
    switch (type) {
        case QATML_TYPE_UINT8:
            *lo = 0;
            *hi = 255;
            return true;
        case QATML_TYPE_INT8:
            *lo = -128;
            *hi = 127;
            return true;
        case QATML_TYPE_UINT4:
            *lo = 0;
            *hi = 15;
            return true;
        case QATML_TYPE_INT4:
            *lo = -8;
            *hi = 7;
            return true;
        default: return false;
    }
}

const char* type_name(int32_t type) {
    switch (type) {
        case QATML_TYPE_UINT8: return "uint8";
        case QATML_TYPE_INT8: return "int8";
        case QATML_TYPE_INT32: return "int32";
        case QATML_TYPE_FLOAT32: return "float32";
        case QATML_TYPE_UINT4: return "uint4";
        case QATML_TYPE_INT4: return "int4";
        case QATML_TYPE_INT64: return "int64";
        default: return "unknown";
    }
}

qatml_status check_epilogue(const qatml_epilogue* ep, int64_t channels, Epilogue* out, const char* fn) {
    QATML_CHECK_NOT_NULL(ep, fn);
    QATML_CHECK_ALIGNED(ep->bias, 4, fn);
    QATML_CHECK_ALIGNED(ep->multipliers, 4, fn);
    out->out_type = ep->out_type;
    out->bias = ep->bias;
    if (ep->out_type == QATML_TYPE_INT32) return QATML_OK;
    int32_t lo = 0, hi = 0;
    if ((ep->out_type != QATML_TYPE_UINT8 && ep->out_type != QATML_TYPE_INT8) || !type_range(ep->out_type, &lo, &hi))
        return fail(QATML_INVALID_ARGUMENT, "%s: epilogue out_type %d must be INT32, UINT8 or INT8", fn, ep->out_type);
    if (ep->multipliers == nullptr)
        return fail(QATML_INVALID_ARGUMENT, "%s: epilogue multipliers is NULL but out_type is %s", fn,
                    type_name(ep->out_type));
    if (ep->multiplier_count != 1 && ep->multiplier_count != channels)
        return fail(QATML_INVALID_ARGUMENT, "%s: epilogue multiplier_count %lld must be 1 or %lld (channels)", fn,
                    static_cast<long long>(ep->multiplier_count), static_cast<long long>(channels));
    out->mult.resize(static_cast<size_t>(channels));
    for (int64_t c = 0; c < channels; ++c) {
        float m = ep->multipliers[ep->multiplier_count == 1 ? 0 : c];
        if (!(m > 0.0f) || !std::isfinite(m))
            return fail(QATML_INVALID_ARGUMENT, "%s: epilogue multiplier[%lld] = %g must be finite and > 0", fn,
                        static_cast<long long>(ep->multiplier_count == 1 ? 0 : c), static_cast<double>(m));
        out->mult[static_cast<size_t>(c)] = m;
    }
    if (ep->out_zero_point < lo || ep->out_zero_point > hi)
        return fail(QATML_INVALID_ARGUMENT, "%s: out_zero_point %d is outside the %s range", fn, ep->out_zero_point,
                    type_name(ep->out_type));
    if (ep->has_clamp) {
        if (ep->clamp_min > ep->clamp_max)
            return fail(QATML_INVALID_ARGUMENT, "%s: clamp_min %d > clamp_max %d", fn, ep->clamp_min, ep->clamp_max);
        lo = std::max(lo, ep->clamp_min);
        hi = std::min(hi, ep->clamp_max);
        if (lo > hi)
            return fail(QATML_INVALID_ARGUMENT, "%s: clamp [%d, %d] does not meet the %s range", fn, ep->clamp_min,
                        ep->clamp_max, type_name(ep->out_type));
    }
    out->zp = ep->out_zero_point;
    out->lo = lo;
    out->hi = hi;
    return QATML_OK;
}

qatml_status check_packed_isa(const qatml_packed_weights* w, const char* fn) {
    if (isa_supported(static_cast<qatml_isa>(w->isa))) return QATML_OK;
    return fail(QATML_UNSUPPORTED,
                "%s: the weights were packed for the %s path, which this CPU's features (feature mask) "
                "no longer include; pack them again",
                fn, qatml_isa_name(w->isa));
}

const SimdKernels* active_simd(const char* fn, qatml_status* st) {
    qatml_isa isa = QATML_ISA_SCALAR;
    if (!active_isa(&isa, fn)) {
        *st = QATML_INVALID_ARGUMENT;
        return nullptr;
    }
    *st = QATML_OK;
    return simd_for_isa(isa);
}

const SimdKernels* simd_for_isa(int isa) {
    switch (isa) {
        case QATML_ISA_AVX512_VNNI: return &kSimdAvx512;
        case QATML_ISA_AVX_VNNI:
        case QATML_ISA_AVX2: return &kSimdAvx2;
        default: return nullptr;
    }
}

}  // namespace kernels
}  // namespace qatml
