// u8 x s8 -> s32 GEMM on weights packed once, with the fused epilogue; shared ABI helpers.
#include "kernels/abi_util.h"

#include <algorithm>
#include <cstring>

#include <emmintrin.h>  // SSE2: part of baseline x86-64

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
        case QATML_TYPE_UINT8: *lo = 0; *hi = 255; return true;
        case QATML_TYPE_INT8: *lo = -128; *hi = 127; return true;
        case QATML_TYPE_UINT4: *lo = 0; *hi = 15; return true;
        case QATML_TYPE_INT4: *lo = -8; *hi = 7; return true;
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

void isa_tile(int isa, int* mr, int* nr) {
    switch (isa) {
        case QATML_ISA_AVX512_VNNI: *mr = 12; *nr = 32; return;
        case QATML_ISA_AVX_VNNI:
        case QATML_ISA_AVX2: *mr = 6; *nr = 16; return;
        default: *mr = 1; *nr = 1; return;
    }
}

void run_gemm(int isa, const GemmCall& call) {
    switch (isa) {
        case QATML_ISA_AVX512_VNNI: gemm_avx512vnni(call); return;
        case QATML_ISA_AVX_VNNI: gemm_avxvnni(call); return;
        default: gemm_avx2(call); return;
    }
}

qatml_status check_packed_isa(const qatml_packed_weights* w, const char* fn) {
    if (isa_supported(static_cast<qatml_isa>(w->isa))) return QATML_OK;
    return fail(QATML_UNSUPPORTED, "%s: the weights were packed for the %s path, which this CPU's features (feature mask) "
                "no longer include; pack them again", fn, qatml_isa_name(w->isa));
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

namespace {

// Reads weights of type INT8 or INT4 (packed) as int8, element index i.
inline int8_t weight_at(const void* w, int32_t type, int64_t i) {
    if (type == QATML_TYPE_INT8) return static_cast<const int8_t*>(w)[i];
    const uint8_t byte = static_cast<const uint8_t*>(w)[i >> 1];
    const int v = (i & 1) ? (byte >> 4) : (byte & 0x0f);
    return static_cast<int8_t>(v >= 8 ? v - 16 : v);
}

qatml_status check_weight_zp(const int32_t* zps, int64_t n, int32_t type, const char* fn, bool* has) {
    *has = false;
    if (!zps) return QATML_OK;
    int32_t lo = 0, hi = 0;
    type_range(type, &lo, &hi);
    for (int64_t i = 0; i < n; ++i) {
        if (zps[i] < lo || zps[i] > hi)
            return fail(QATML_INVALID_ARGUMENT, "%s: weight zero point [%lld] = %d is outside the %s range", fn,
                        static_cast<long long>(i), zps[i], type_name(type));
        if (zps[i] != 0) *has = true;
    }
    return QATML_OK;
}

int current_isa(const char* fn, qatml_status* st) {
    qatml_isa isa = QATML_ISA_SCALAR;
    if (!active_isa(&isa, fn)) {
        *st = QATML_INVALID_ARGUMENT;
        return -1;
    }
    *st = QATML_OK;
    return isa;
}

}  // namespace

// Packs a row-major byte matrix src[rows, cols] (element (r, k) at src[r * ld + k], k < kk) into
// broadcast tiles [ceil(rows/mr)][k4][mr][4], XOR-ing every byte with `flip` (0x80 turns s8 into u8).
// Padding (rows beyond `rows`, k beyond kk) is 0. Optional row sums of the flipped bytes.
void pack_bc_tiles(const uint8_t* src, int64_t rows, int64_t kk, int64_t ld, int mr, int64_t k4, uint8_t flip,
                   uint8_t* dst, int32_t* rowsum) {
    const int64_t tiles = (rows + mr - 1) / mr;
    const __m128i fl = _mm_set1_epi8(static_cast<char>(flip));
    for (int64_t t = 0; t < tiles; ++t) {
        uint8_t* tile = dst + t * k4 * mr * 4;
        const int64_t full_rows = std::min<int64_t>(mr, rows - t * mr);
        int64_t g_done = 0;
        if (mr % 4 == 0 && full_rows == mr) {
            // 4 rows x 4 words at a time: a 4x4 transpose of 32-bit words (SSE2, baseline x86-64).
            const int64_t g16 = kk / 16 * 4;  // groups fully covered by 16-byte loads
            for (int q = 0; q < mr; q += 4) {
                const uint8_t* s0 = src + (t * mr + q) * ld;
                for (int64_t g = 0; g < g16; g += 4) {
                    const __m128i a = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s0 + g * 4)), fl);
                    const __m128i b = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s0 + ld + g * 4)), fl);
                    const __m128i c = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s0 + 2 * ld + g * 4)), fl);
                    const __m128i d = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s0 + 3 * ld + g * 4)), fl);
                    const __m128i ab0 = _mm_unpacklo_epi32(a, b), ab1 = _mm_unpackhi_epi32(a, b);
                    const __m128i cd0 = _mm_unpacklo_epi32(c, d), cd1 = _mm_unpackhi_epi32(c, d);
                    uint8_t* o = tile + (g * mr + q) * 4;
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm_unpacklo_epi64(ab0, cd0));
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + mr * 4), _mm_unpackhi_epi64(ab0, cd0));
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 2 * mr * 4), _mm_unpacklo_epi64(ab1, cd1));
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 3 * mr * 4), _mm_unpackhi_epi64(ab1, cd1));
                }
            }
            g_done = g16;
        }
        for (int r = 0; r < mr; ++r) {
            const int64_t row = t * mr + r;
            if (row >= rows) break;  // rows of a partial tile past `rows` are never read
            const uint8_t* s = src + row * ld;
            const uint32_t fl4 = 0x01010101u * flip;
            int64_t g = g_done;
            for (; g < kk / 4; ++g) {
                uint32_t word;
                std::memcpy(&word, s + g * 4, 4);
                word ^= fl4;
                std::memcpy(tile + (g * mr + r) * 4, &word, 4);
            }
            for (; g < k4; ++g) {
                uint8_t* d = tile + (g * mr + r) * 4;
                const int64_t k0 = g * 4;
                for (int q = 0; q < 4; ++q) d[q] = k0 + q < kk ? static_cast<uint8_t>(s[k0 + q] ^ flip) : 0;
            }
            if (rowsum) {
                int32_t sum = 0;
                for (int64_t k = 0; k < kk; ++k) sum += static_cast<uint8_t>(s[k] ^ flip);
                rowsum[row] = sum;
            }
        }
    }
}

}  // namespace kernels
}  // namespace qatml

using namespace qatml;
using namespace qatml::kernels;

extern "C" {

QATML_API qatml_status qatml_gemm_pack_b(const qatml_context* ctx, const void* b, int32_t b_type, int64_t k,
                                         int64_t n, int32_t trans_b, const int32_t* b_zero_points,
                                         qatml_packed_weights** out_packed) {
    static const char* fn = "qatml_gemm_pack_b";
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_NOT_NULL(out_packed, fn);
        *out_packed = nullptr;
        qatml_status st = check_context(ctx, fn);
        if (st != QATML_OK) return st;
        QATML_CHECK_NOT_NULL(b, fn);
        QATML_CHECK_ALIGNED(b_zero_points, 4, fn);
        QATML_CHECK_POSITIVE(k, fn);
        QATML_CHECK_POSITIVE(n, fn);
        int64_t kn = 0;
        if (!checked_mul(fn, "K*N", k, n, &kn)) return QATML_INVALID_ARGUMENT;
        if (b_type != QATML_TYPE_INT8 && b_type != QATML_TYPE_INT4)
            return fail(QATML_INVALID_ARGUMENT, "%s: b_type %d must be INT8 or INT4", fn, b_type);
        if (trans_b != 0 && trans_b != 1) return fail(QATML_INVALID_ARGUMENT, "%s: trans_b must be 0 or 1", fn);
        bool has_zw = false;
        if ((st = check_weight_zp(b_zero_points, n, b_type, fn, &has_zw)) != QATML_OK) return st;
        const int isa = current_isa(fn, &st);
        if (st != QATML_OK) return st;

        auto pw = std::make_unique<qatml_packed_weights>();
        pw->role = 1;
        pw->device = context_device(ctx);
        pw->isa = isa;
        isa_tile(isa, &pw->mr, &pw->nr);
        pw->k = k;
        pw->n = n;
        pw->k4 = (k + 3) / 4;
        pw->has_zw = has_zw;
        pw->zw.assign(static_cast<size_t>(n), 0);
        if (has_zw) std::copy(b_zero_points, b_zero_points + n, pw->zw.begin());
        pw->wsum.assign(static_cast<size_t>(n), 0);
        // Logical [K, N] int8 copy first.
        std::vector<int8_t> plain(static_cast<size_t>(kn));
        for (int64_t kk = 0; kk < k; ++kk)
            for (int64_t j = 0; j < n; ++j) {
                const int8_t v = weight_at(b, b_type, trans_b ? j * k + kk : kk * n + j);
                plain[static_cast<size_t>(kk * n + j)] = v;
                pw->wsum[static_cast<size_t>(j)] += v;
            }
        if (isa == QATML_ISA_SCALAR) {
            pw->plain = std::move(plain);
        } else {
            const int nr = pw->nr;
            const int64_t panels = (n + nr - 1) / nr;
            pw->packed.resize(panels * pw->k4 * nr * 4);
            pw->packed.zero();
            for (int64_t p = 0; p < panels; ++p)
                for (int64_t g = 0; g < pw->k4; ++g)
                    for (int j = 0; j < nr; ++j) {
                        const int64_t col = p * nr + j;
                        uint8_t* d = pw->packed.data + ((p * pw->k4 + g) * nr + j) * 4;
                        for (int q = 0; q < 4; ++q) {
                            const int64_t kk = g * 4 + q;
                            d[q] = (col < n && kk < k) ? static_cast<uint8_t>(plain[static_cast<size_t>(kk * n + col)]) : 0;
                        }
                    }
        }
        register_handle(pw.get(), HandleKind::PackedWeights);
        *out_packed = pw.release();
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_packed_weights_destroy(qatml_packed_weights* packed) {
    static const char* fn = "qatml_packed_weights_destroy";
    return guarded(fn, [&]() -> qatml_status {
        if (packed == nullptr) return QATML_OK;
        if (!unregister_handle(packed, HandleKind::PackedWeights))
            return fail(QATML_INVALID_HANDLE, "%s: handle (%p) is not live packed weights (destroyed twice?)", fn,
                        static_cast<void*>(packed));
        delete packed;
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_packed_weights_info(const qatml_packed_weights* packed, int32_t* out_isa,
                                                 int64_t* out_k, int64_t* out_n, int64_t* out_bytes) {
    static const char* fn = "qatml_packed_weights_info";
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_HANDLE(packed, HandleKind::PackedWeights, fn);
        if (out_isa) *out_isa = packed->isa;
        if (out_k) *out_k = packed->k;
        if (out_n) *out_n = packed->n;
        if (out_bytes)
            *out_bytes = packed->packed.size + static_cast<int64_t>(packed->plain.size()) +
                         static_cast<int64_t>(8 * packed->wsum.size());
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_gemm(const qatml_context* ctx, int64_t m, const void* a, int32_t a_type, int64_t lda,
                                  int32_t a_zero_point, const qatml_packed_weights* b,
                                  const qatml_epilogue* epilogue, void* c, int64_t ldc) {
    static const char* fn = "qatml_gemm";
    return guarded(fn, [&]() -> qatml_status {
        qatml_status st = check_context(ctx, fn);
        if (st != QATML_OK) return st;
        QATML_CHECK_HANDLE(b, HandleKind::PackedWeights, fn);
        if (b->role != 1) return fail(QATML_INVALID_ARGUMENT, "%s: packed weights are convolution weights, not GEMM B", fn);
        QATML_CHECK_NOT_NULL(a, fn);
        QATML_CHECK_NOT_NULL(c, fn);
        QATML_CHECK_POSITIVE(m, fn);
        const int64_t k = b->k, n = b->n;
        if (lda < k) return fail(QATML_INVALID_ARGUMENT, "%s: lda %lld < K %lld", fn, (long long)lda, (long long)k);
        if (ldc < n) return fail(QATML_INVALID_ARGUMENT, "%s: ldc %lld < N %lld", fn, (long long)ldc, (long long)n);
        int64_t tmp = 0;
        if (!checked_mul(fn, "M*lda", m, lda, &tmp) || !checked_mul(fn, "M*ldc", m, ldc, &tmp))
            return QATML_INVALID_ARGUMENT;
        int32_t alo = 0, ahi = 0;
        if ((a_type != QATML_TYPE_UINT8 && a_type != QATML_TYPE_INT8) || !type_range(a_type, &alo, &ahi))
            return fail(QATML_INVALID_ARGUMENT, "%s: a_type %d must be UINT8 or INT8", fn, a_type);
        if (a_zero_point < alo || a_zero_point > ahi)
            return fail(QATML_INVALID_ARGUMENT, "%s: a_zero_point %d is outside the %s range", fn, a_zero_point,
                        type_name(a_type));
        Epilogue ep;
        if ((st = check_epilogue(epilogue, n, &ep, fn)) != QATML_OK) return st;
        if (ep.out_type == QATML_TYPE_INT32) QATML_CHECK_ALIGNED(c, 4, fn);
        if (context_device(ctx).kind != b->device.kind)
            return fail(QATML_INVALID_ARGUMENT, "%s: packed weights belong to another device", fn);
        if ((st = check_packed_isa(b, fn)) != QATML_OK) return st;

        const uint8_t* a8 = static_cast<const uint8_t*>(a);
        if (b->isa == QATML_ISA_SCALAR) {
            // Reference: acc = sum_k (a - za) * (b - zb[j]) + bias[j], wrapping int32.
            for (int64_t i = 0; i < m; ++i)
                for (int64_t j = 0; j < n; ++j) {
                    uint32_t acc = ep.bias ? static_cast<uint32_t>(ep.bias[j]) : 0u;
                    const int32_t zb = b->zw[static_cast<size_t>(j)];
                    for (int64_t kk = 0; kk < k; ++kk) {
                        const int32_t av = a_type == QATML_TYPE_UINT8 ? int32_t(a8[i * lda + kk])
                                                                      : int32_t(int8_t(a8[i * lda + kk]));
                        acc += wrap_mul(av - a_zero_point, b->plain[static_cast<size_t>(kk * n + j)] - zb);
                    }
                    store_out(ep, static_cast<int32_t>(acc), j, c, i * ldc + j);
                }
            return QATML_OK;
        }
        // Fast path: A packed per row block into broadcast tiles (s8 -> u8 by XOR 0x80, za += 128).
        const uint8_t flip = a_type == QATML_TYPE_INT8 ? 0x80 : 0x00;
        const int32_t za = a_type == QATML_TYPE_INT8 ? a_zero_point + 128 : a_zero_point;
        const int mr = b->mr, nr = b->nr;
        const int64_t np = round_up(n, nr), k4 = b->k4;
        std::vector<int32_t> coladd(static_cast<size_t>(np), 0), colmul(static_cast<size_t>(np), 0);
        std::vector<float> mult(static_cast<size_t>(np), 1.0f);
        for (int64_t j = 0; j < n; ++j) {
            const int32_t zb = b->zw[static_cast<size_t>(j)];
            uint32_t v = ep.bias ? static_cast<uint32_t>(ep.bias[j]) : 0u;
            v -= wrap_mul(za, b->wsum[static_cast<size_t>(j)]);
            v += wrap_mul(static_cast<int32_t>(k), 1) * static_cast<uint32_t>(za) * static_cast<uint32_t>(zb);
            coladd[static_cast<size_t>(j)] = static_cast<int32_t>(v);
            colmul[static_cast<size_t>(j)] = static_cast<int32_t>(0u - static_cast<uint32_t>(zb));
            if (ep.out_type != QATML_TYPE_INT32) mult[static_cast<size_t>(j)] = ep.mult[static_cast<size_t>(j)];
        }
        // Row block: packed A block about 256 KiB (L2), a multiple of MR rows.
        // K blocks of at most kc4 groups keep a B panel slice in L1 (32 KiB at NR = 32).
        // A single row tile reuses no B slice, so it streams all of K at once.
        const int64_t kc4 = m <= mr ? 0 : 256;
        int64_t mc = std::max<int64_t>(mr, (262144 / (std::min(k4, kc4 > 0 ? kc4 : k4) * 4)) / mr * mr);
        mc = std::min(mc, round_up(m, mr));
        AlignedBuffer apack(mc * k4 * 4);
        AlignedBuffer scratch(kc4 > 0 && k4 > kc4 ? mc * np * 4 : 0);
        std::vector<int32_t> rowadd(static_cast<size_t>(mc), 0), rowsum(static_cast<size_t>(mc), 0);
        const int64_t esz = elem_size(ep.out_type);
        for (int64_t i0 = 0; i0 < m; i0 += mc) {
            const int64_t rows = std::min(mc, m - i0);
            pack_bc_tiles(a8 + i0 * lda, rows, k, lda, mr, k4, flip, apack.data, b->has_zw ? rowsum.data() : nullptr);
            GemmCall call{};
            call.bc = apack.data;
            call.vec = b->packed.data;
            call.rows = rows;
            call.cols = n;
            call.k4 = k4;
            call.bc_signed = false;
            call.rowadd = rowadd.data();
            call.coladd = coladd.data();
            call.rowmul = b->has_zw ? rowsum.data() : nullptr;
            call.colmul = colmul.data();
            call.mult = mult.data();
            call.mult_per_row = false;
            call.out_type = ep.out_type;
            call.zp = ep.zp;
            call.lo = ep.lo;
            call.hi = ep.hi;
            call.out = static_cast<uint8_t*>(c) + i0 * ldc * esz;
            call.ldc = ldc;
            call.kc4 = kc4;
            call.scratch = reinterpret_cast<int32_t*>(scratch.data);
            call.scratch_ld = np;
            run_gemm(b->isa, call);
        }
        return QATML_OK;
    });
}

}  // extern "C"
