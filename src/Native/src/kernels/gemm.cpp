// u8 x s8 -> s32 GEMM on weights packed once, with the fused epilogue: packing, the prepared GEMM of the internal
// kernel API (kernel_api.h) and the validating qatml_gemm* entry points.
#include "kernels/kernel_api.h"

#include <algorithm>
#include <cstring>

#include <emmintrin.h>  // SSE2: part of baseline x86-64

namespace qatml {
namespace kernels {

void isa_tile(int isa, int* mr, int* nr) {
    switch (isa) {
        case QATML_ISA_AVX512_VNNI:
            *mr = 12;
            *nr = 32;
            return;
        case QATML_ISA_AVX_VNNI:
        case QATML_ISA_AVX2:
            *mr = 6;
            *nr = 16;
            return;
        default:
            *mr = 1;
            *nr = 1;
            return;
    }
}

void run_gemm(int isa, const GemmCall& call) {
    switch (isa) {
        case QATML_ISA_AVX512_VNNI: gemm_avx512vnni(call); return;
        case QATML_ISA_AVX_VNNI: gemm_avxvnni(call); return;
        default: gemm_avx2(call); return;
    }
}

namespace {

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

std::unique_ptr<qatml_packed_weights> gemm_pack(const void* b, int32_t b_type, int64_t k, int64_t n, int32_t trans_b,
                                                const int32_t* b_zero_points, int isa) {
    auto pw = std::make_unique<qatml_packed_weights>();
    pw->role = 1;
    pw->isa = isa;
    isa_tile(isa, &pw->mr, &pw->nr);
    pw->k = k;
    pw->n = n;
    pw->k4 = (k + 3) / 4;
    pw->zw.assign(static_cast<size_t>(n), 0);
    if (b_zero_points) {
        std::copy(b_zero_points, b_zero_points + n, pw->zw.begin());
        pw->has_zw = std::any_of(pw->zw.begin(), pw->zw.end(), [](int32_t z) { return z != 0; });
    }
    pw->wsum.assign(static_cast<size_t>(n), 0);
    // Logical [K, N] int8 copy first (int4 widened here, once).
    std::vector<int8_t> plain(static_cast<size_t>(k * n));
    for (int64_t kk = 0; kk < k; ++kk)
        for (int64_t j = 0; j < n; ++j) {
            const int8_t v = weight_at(b, b_type, trans_b ? j * k + kk : kk * n + j);
            plain[static_cast<size_t>(kk * n + j)] = v;
            pw->wsum[static_cast<size_t>(j)] += v;
        }
    if (isa == QATML_ISA_SCALAR) {
        pw->plain = std::move(plain);
        return pw;
    }
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
    return pw;
}

void gemm_prepare(GemmPlan& plan, const qatml_packed_weights* b, int32_t a_type, int32_t a_zp, const Epilogue& ep) {
    plan.w = b;
    plan.a_type = a_type;
    plan.a_zp = a_zp;
    plan.ep = ep;
    if (b->isa == QATML_ISA_SCALAR) return;
    // Fast path: A packed per row block into broadcast tiles (s8 -> u8 by XOR 0x80, za += 128).
    plan.flip = a_type == QATML_TYPE_INT8 ? 0x80 : 0x00;
    const int32_t za = a_type == QATML_TYPE_INT8 ? a_zp + 128 : a_zp;
    const int64_t n = b->n, k = b->k, np = round_up(n, b->nr);
    plan.coladd.assign(static_cast<size_t>(np), 0);
    plan.colmul.assign(static_cast<size_t>(np), 0);
    plan.mult.assign(static_cast<size_t>(np), 1.0f);
    for (int64_t j = 0; j < n; ++j) {
        const int32_t zb = b->zw[static_cast<size_t>(j)];
        uint32_t v = ep.bias ? static_cast<uint32_t>(ep.bias[j]) : 0u;
        v -= wrap_mul(za, b->wsum[static_cast<size_t>(j)]);
        v += wrap_mul(static_cast<int32_t>(k), 1) * static_cast<uint32_t>(za) * static_cast<uint32_t>(zb);
        plan.coladd[static_cast<size_t>(j)] = static_cast<int32_t>(v);
        plan.colmul[static_cast<size_t>(j)] = static_cast<int32_t>(0u - static_cast<uint32_t>(zb));
        if (ep.out_type != QATML_TYPE_INT32) plan.mult[static_cast<size_t>(j)] = ep.mult[static_cast<size_t>(j)];
    }
}

namespace {
// Row block of the fast path: packed A block about 256 KiB (L2), a multiple of MR rows. K blocks of at most kc4
// groups keep a B panel slice in L1 (32 KiB at NR = 32); a single row tile reuses no B slice, so it streams all
// of K at once.
struct GemmBlocking {
    int64_t kc4, mc;
};
GemmBlocking gemm_blocking(const qatml_packed_weights* b, int64_t m) {
    const int mr = b->mr;
    const int64_t k4 = b->k4, kc4 = m <= mr ? 0 : 256;
    int64_t mc = std::max<int64_t>(mr, (262144 / (std::min(k4, kc4 > 0 ? kc4 : k4) * 4)) / mr * mr);
    return GemmBlocking{kc4, std::min(mc, round_up(m, mr))};
}
struct GemmScratch {
    int64_t apack, partial, rowadd, rowsum, bytes;
};
GemmScratch gemm_scratch(const GemmPlan& plan, int64_t m) {
    GemmScratch g{};
    if (plan.w->isa == QATML_ISA_SCALAR) return g;
    const GemmBlocking blk = gemm_blocking(plan.w, m);
    ScratchLayout s;
    g.apack = s.take(blk.mc * plan.w->k4 * 4);
    g.partial = s.take(blk.kc4 > 0 && plan.w->k4 > blk.kc4 ? blk.mc * round_up(plan.w->n, plan.w->nr) * 4 : 0);
    g.rowadd = s.take(blk.mc * 4);
    g.rowsum = s.take(blk.mc * 4);
    g.bytes = s.bytes;
    return g;
}
}  // namespace

int64_t gemm_scratch_bytes(const GemmPlan& plan, int64_t m) { return gemm_scratch(plan, m).bytes; }

void gemm_run(const GemmPlan& plan, int64_t m, const uint8_t* a8, int64_t lda, void* c, int64_t ldc, uint8_t* scratch) {
    const qatml_packed_weights* b = plan.w;
    const Epilogue& ep = plan.ep;
    const int64_t k = b->k, n = b->n;
    if (b->isa == QATML_ISA_SCALAR) {
        // Reference: acc = sum_k (a - za) * (b - zb[j]) + bias[j], wrapping int32.
        for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
                uint32_t acc = ep.bias ? static_cast<uint32_t>(ep.bias[j]) : 0u;
                const int32_t zb = b->zw[static_cast<size_t>(j)];
                for (int64_t kk = 0; kk < k; ++kk) {
                    const int32_t av = plan.a_type == QATML_TYPE_UINT8 ? int32_t(a8[i * lda + kk]) : int32_t(int8_t(a8[i * lda + kk]));
                    acc += wrap_mul(av - plan.a_zp, b->plain[static_cast<size_t>(kk * n + j)] - zb);
                }
                store_out(ep, static_cast<int32_t>(acc), j, c, i * ldc + j);
            }
        return;
    }
    const GemmBlocking blk = gemm_blocking(b, m);
    const GemmScratch s = gemm_scratch(plan, m);
    uint8_t* apack = scratch + s.apack;
    int32_t* rowadd = reinterpret_cast<int32_t*>(scratch + s.rowadd);
    int32_t* rowsum = reinterpret_cast<int32_t*>(scratch + s.rowsum);
    std::memset(rowadd, 0, static_cast<size_t>(blk.mc * 4));
    const int64_t esz = elem_size(ep.out_type);
    for (int64_t i0 = 0; i0 < m; i0 += blk.mc) {
        const int64_t rows = std::min(blk.mc, m - i0);
        pack_bc_tiles(a8 + i0 * lda, rows, k, lda, b->mr, b->k4, plan.flip, apack, b->has_zw ? rowsum : nullptr);
        GemmCall call{};
        call.bc = apack;
        call.vec = b->packed.data;
        call.rows = rows;
        call.cols = n;
        call.k4 = b->k4;
        call.bc_signed = false;
        call.rowadd = rowadd;
        call.coladd = plan.coladd.data();
        call.rowmul = b->has_zw ? rowsum : nullptr;
        call.colmul = plan.colmul.data();
        call.mult = plan.mult.data();
        call.mult_per_row = false;
        call.out_type = ep.out_type;
        call.zp = ep.zp;
        call.lo = ep.lo;
        call.hi = ep.hi;
        call.out = static_cast<uint8_t*>(c) + i0 * ldc * esz;
        call.ldc = ldc;
        call.kc4 = blk.kc4;
        call.scratch = reinterpret_cast<int32_t*>(scratch + s.partial);
        call.scratch_ld = round_up(n, b->nr);
        run_gemm(b->isa, call);
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

        auto pw = gemm_pack(b, b_type, k, n, trans_b, has_zw ? b_zero_points : nullptr, isa);
        pw->device = context_device(ctx);
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

        GemmPlan plan;
        gemm_prepare(plan, b, a_type, a_zero_point, ep);
        AlignedBuffer scratch(gemm_scratch_bytes(plan, m));
        gemm_run(plan, m, static_cast<const uint8_t*>(a), lda, c, ldc, scratch.data);
        return QATML_OK;
    });
}

}  // extern "C"
