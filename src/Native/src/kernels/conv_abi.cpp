// The validating entry points of the convolution kernels (qatml_kernels.h): every argument is checked here, then
// the internal API (kernel_api.h) packs, prepares and runs, with scratch allocated per call.
#include "kernels/conv_internal.h"

using namespace qatml;
using namespace qatml::kernels;

namespace qatml {
namespace kernels {

qatml_status check_conv_scratch(const char* fn, const qatml_conv2d_params& p, int64_t cpg, int64_t kh, int64_t kw, int64_t oh) {
    const int64_t span_h = p.height + p.pad_top + p.pad_bottom + p.stride_h, span_w = p.width + p.pad_left + p.pad_right + p.stride_w;
    int64_t t = 0;
    const int lim = kMaxScratchLog2;
    if (!checked_mul(fn, "C/g (in 4s) * (H + pads + stride)", round_up(cpg, 4), span_h, &t, lim) ||
        !checked_mul(fn, "C/g (in 4s) * (H + pads + stride) * (W + pads + stride)", t, span_w, &t, lim) ||
        !checked_mul(fn, "kH*kW * OH", kh * kw, oh, &t, lim) || !checked_mul(fn, "kH*kW * OH * (W + pads + stride)", t, span_w, &t, lim))
        return QATML_INVALID_ARGUMENT;
    return QATML_OK;
}

}  // namespace kernels
}  // namespace qatml

extern "C" {

QATML_API qatml_status qatml_conv_pack_weights(const qatml_context* ctx, const void* w, int32_t w_type,
                                               int64_t out_channels, int64_t in_channels_per_group,
                                               int64_t kernel_h, int64_t kernel_w, int64_t groups,
                                               const int32_t* w_zero_points, qatml_packed_weights** out_packed) {
    static const char* fn = "qatml_conv_pack_weights";
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_NOT_NULL(out_packed, fn);
        *out_packed = nullptr;
        qatml_status st = check_context(ctx, fn);
        if (st != QATML_OK) return st;
        QATML_CHECK_NOT_NULL(w, fn);
        QATML_CHECK_ALIGNED(w_zero_points, 4, fn);
        QATML_CHECK_POSITIVE(out_channels, fn);
        QATML_CHECK_POSITIVE(in_channels_per_group, fn);
        QATML_CHECK_POSITIVE(kernel_h, fn);
        QATML_CHECK_POSITIVE(kernel_w, fn);
        QATML_CHECK_POSITIVE(groups, fn);
        if (w_type != QATML_TYPE_INT8 && w_type != QATML_TYPE_INT4)
            return fail(QATML_INVALID_ARGUMENT, "%s: w_type %d must be INT8 or INT4", fn, w_type);
        if (out_channels % groups != 0)
            return fail(QATML_INVALID_ARGUMENT, "%s: out_channels %lld is not a multiple of groups %lld", fn,
                        (long long)out_channels, (long long)groups);
        int64_t khw = 0, kg = 0, total = 0;
        if (!checked_mul(fn, "kH*kW", kernel_h, kernel_w, &khw) || !checked_mul(fn, "C/g*kH*kW", khw, in_channels_per_group, &kg) ||
            !checked_mul(fn, "M*C/g*kH*kW", kg, out_channels, &total))
            return QATML_INVALID_ARGUMENT;
        int32_t zlo = 0, zhi = 0;
        type_range(w_type, &zlo, &zhi);
        bool has_zw = false;
        if (w_zero_points)
            for (int64_t i = 0; i < out_channels; ++i) {
                if (w_zero_points[i] < zlo || w_zero_points[i] > zhi)
                    return fail(QATML_INVALID_ARGUMENT, "%s: w_zero_points[%lld] = %d is outside the %s range", fn,
                                (long long)i, w_zero_points[i], type_name(w_type));
                has_zw |= w_zero_points[i] != 0;
            }
        qatml_isa isa = QATML_ISA_SCALAR;
        if (!active_isa(&isa, fn)) return QATML_INVALID_ARGUMENT;

        auto pw = conv_pack(w, w_type, out_channels, in_channels_per_group, kernel_h, kernel_w, groups, has_zw ? w_zero_points : nullptr,
                            isa);
        pw->device = context_device(ctx);
        register_handle(pw.get(), HandleKind::PackedWeights);
        *out_packed = pw.release();
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_conv2d_output_size(const qatml_conv2d_params* p, int64_t kernel_h, int64_t kernel_w,
                                                int64_t* out_h, int64_t* out_w) {
    static const char* fn = "qatml_conv2d_output_size";
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_NOT_NULL(p, fn);
        QATML_CHECK_NOT_NULL(out_h, fn);
        QATML_CHECK_NOT_NULL(out_w, fn);
        QATML_CHECK_POSITIVE(kernel_h, fn);
        QATML_CHECK_POSITIVE(kernel_w, fn);
        QATML_CHECK_POSITIVE(p->height, fn);
        QATML_CHECK_POSITIVE(p->width, fn);
        QATML_CHECK_POSITIVE(p->stride_h, fn);
        QATML_CHECK_POSITIVE(p->stride_w, fn);
        QATML_CHECK_POSITIVE(p->dilation_h, fn);
        QATML_CHECK_POSITIVE(p->dilation_w, fn);
        if (p->pad_top < 0 || p->pad_left < 0 || p->pad_bottom < 0 || p->pad_right < 0 || p->pad_top > (1 << 20) ||
            p->pad_left > (1 << 20) || p->pad_bottom > (1 << 20) || p->pad_right > (1 << 20))
            return fail(QATML_INVALID_ARGUMENT, "%s: pads must be in 0..2^20", fn);
        if (kernel_h > (1 << 20) || kernel_w > (1 << 20) || p->dilation_h > (1 << 20) || p->dilation_w > (1 << 20))
            return fail(QATML_INVALID_ARGUMENT, "%s: kernel and dilation must be <= 2^20", fn);
        const int64_t eh = p->dilation_h * (kernel_h - 1) + 1, ew = p->dilation_w * (kernel_w - 1) + 1;
        const int64_t hh = p->height + p->pad_top + p->pad_bottom, ww = p->width + p->pad_left + p->pad_right;
        if (hh < eh || ww < ew)
            return fail(QATML_INVALID_ARGUMENT, "%s: the %lldx%lld (dilated) kernel does not fit the padded %lldx%lld input",
                        fn, (long long)eh, (long long)ew, (long long)hh, (long long)ww);
        *out_h = (hh - eh) / p->stride_h + 1;
        *out_w = (ww - ew) / p->stride_w + 1;
        return QATML_OK;
    });
}

namespace {
// qatml_conv2d, and with fp.kernel != 0 the fused max pool of its 8-bit output (qatml_conv2d_maxpool).
qatml_status conv2d_impl(const char* fn, const qatml_context* ctx, const qatml_conv2d_params* params, const void* x,
                         int32_t x_type, int32_t x_zero_point, const qatml_packed_weights* w, const qatml_epilogue* epilogue,
                         void* y, FusedPool fp) {
    qatml_status st = check_context(ctx, fn);
    if (st != QATML_OK) return st;
    QATML_CHECK_NOT_NULL(params, fn);
    QATML_CHECK_HANDLE(w, HandleKind::PackedWeights, fn);
    if (w->role != 2) return fail(QATML_INVALID_ARGUMENT, "%s: packed weights are GEMM B, not convolution weights", fn);
    QATML_CHECK_NOT_NULL(x, fn);
    QATML_CHECK_NOT_NULL(y, fn);
    QATML_CHECK_POSITIVE(params->batch, fn);
    QATML_CHECK_POSITIVE(params->channels, fn);
    if (params->channels != w->cpg * w->groups)
        return fail(QATML_INVALID_ARGUMENT, "%s: input has %lld channels but the weights expect %lld (%lld groups x %lld)",
                    fn, (long long)params->channels, (long long)(w->cpg * w->groups), (long long)w->groups,
                    (long long)w->cpg);
    Geometry g{};
    if ((st = qatml_conv2d_output_size(params, w->kh, w->kw, &g.oh, &g.ow)) != QATML_OK) return st;
    int64_t t = 0, in_elems = 0, out_elems = 0;
    if (!checked_mul(fn, "N*C", params->batch, params->channels, &t) || !checked_mul(fn, "N*C*H", t, params->height, &t) ||
        !checked_mul(fn, "N*C*H*W", t, params->width, &in_elems) || !checked_mul(fn, "N*M", params->batch, w->n, &t) ||
        !checked_mul(fn, "N*M*OH", t, g.oh, &t) || !checked_mul(fn, "N*M*OH*OW", t, g.ow, &out_elems))
        return QATML_INVALID_ARGUMENT;
    int32_t xlo = 0, xhi = 0;
    if ((x_type != QATML_TYPE_UINT8 && x_type != QATML_TYPE_INT8) || !type_range(x_type, &xlo, &xhi))
        return fail(QATML_INVALID_ARGUMENT, "%s: x_type %d must be UINT8 or INT8", fn, x_type);
    if (x_zero_point < xlo || x_zero_point > xhi)
        return fail(QATML_INVALID_ARGUMENT, "%s: x_zero_point %d is outside the %s range", fn, x_zero_point,
                    type_name(x_type));
    Epilogue ep;
    if ((st = check_epilogue(epilogue, w->n, &ep, fn)) != QATML_OK) return st;
    if (ep.out_type == QATML_TYPE_INT32) QATML_CHECK_ALIGNED(y, 4, fn);
    if (context_device(ctx).kind != w->device.kind)
        return fail(QATML_INVALID_ARGUMENT, "%s: packed weights belong to another device", fn);
    if ((st = check_packed_isa(w, fn)) != QATML_OK) return st;
    if (fp.kernel != 0) {
        if (ep.out_type == QATML_TYPE_INT32)
            return fail(QATML_INVALID_ARGUMENT, "%s: the max pool needs an 8-bit output (UINT8 or INT8), not INT32", fn);
        if (g.oh + fp.pt + fp.pb < fp.kernel || g.ow + fp.pl + fp.pr < fp.kernel)
            return fail(QATML_INVALID_ARGUMENT, "%s: the %lldx%lld convolution output is smaller than the %dx%d pool window", fn,
                        (long long)g.oh, (long long)g.ow, fp.kernel, fp.kernel);
    }
    if ((st = check_conv_scratch(fn, *params, w->cpg, w->kh, w->kw, g.oh)) != QATML_OK) return st;
    ConvPlanPtr plan = conv_prepare(*params, x_type, x_zero_point, w, ep, fp);
    AlignedBuffer scratch(conv_scratch_bytes(*plan));
    conv_run(*plan, params->batch, static_cast<const uint8_t*>(x), static_cast<uint8_t*>(y), scratch.data);
    return QATML_OK;
}
}  // namespace

QATML_API qatml_status qatml_conv2d(const qatml_context* ctx, const qatml_conv2d_params* params, const void* x,
                                    int32_t x_type, int32_t x_zero_point, const qatml_packed_weights* w,
                                    const qatml_epilogue* epilogue, void* y) {
    static const char* fn = "qatml_conv2d";
    return guarded(fn, [&] { return conv2d_impl(fn, ctx, params, x, x_type, x_zero_point, w, epilogue, y, FusedPool{}); });
}

QATML_API qatml_status qatml_conv2d_maxpool(const qatml_context* ctx, const qatml_conv2d_params* params, const void* x,
                                            int32_t x_type, int32_t x_zero_point, const qatml_packed_weights* w,
                                            const qatml_epilogue* epilogue, int64_t pool_kernel, const int64_t* pool_pads,
                                            void* y) {
    static const char* fn = "qatml_conv2d_maxpool";
    return guarded(fn, [&]() -> qatml_status {
        FusedPool fp;
        fp.kernel = static_cast<int>(pool_kernel);
        if (pool_pads) {
            fp.pt = pool_pads[0];
            fp.pl = pool_pads[1];
            fp.pb = pool_pads[2];
            fp.pr = pool_pads[3];
        }
        const int64_t max_pad = pool_kernel == 3 ? 1 : 0;
        if ((pool_kernel != 2 && pool_kernel != 3) || fp.pt < 0 || fp.pl < 0 || fp.pb < 0 || fp.pr < 0 || fp.pt > max_pad ||
            fp.pl > max_pad || fp.pb > max_pad || fp.pr > max_pad)
            return fail(QATML_INVALID_ARGUMENT,
                        "%s: pool_kernel %lld with pads %lld,%lld,%lld,%lld: supported are 2 (no padding) and 3 (pads 0 or 1)", fn,
                        (long long)pool_kernel, (long long)fp.pt, (long long)fp.pl, (long long)fp.pb, (long long)fp.pr);
        return conv2d_impl(fn, ctx, params, x, x_type, x_zero_point, w, epilogue, y, fp);
    });
}

}  // extern "C"
