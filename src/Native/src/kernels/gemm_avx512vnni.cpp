// GEMM driver for AVX-512 VNNI: vpdpbusd on zmm, register tile 12 x 32 (24 accumulators).
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni (see CMakeLists.txt); called only
// when the CPU has them. No standard library here (see kernel_common.h).
#include "kernels/kernel_common.h"
#include "qatml/qatml.h"

#include <immintrin.h>

namespace qatml {
namespace kernels {
namespace {

constexpr int kMR = 12;
constexpr int kNR = 32;

struct Epi {
    __m512 lo_f, hi_f;
    __m512i zp;
};

__attribute__((always_inline)) inline void store_vec(const GemmCall& c, const Epi& e, __m512i x, int64_t r,
                                                     int64_t col, __mmask16 mask, __m512 mult) {
    if (c.out_type == QATML_TYPE_INT32) {
        _mm512_mask_storeu_epi32(static_cast<int32_t*>(c.out) + r * c.ldc + col, mask, x);
        return;
    }
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(x), mult);
    f = _mm512_min_ps(_mm512_max_ps(f, e.lo_f), e.hi_f);
    __m512i y = _mm512_add_epi32(_mm512_cvtps_epi32(f), e.zp);
    _mm_mask_storeu_epi8(static_cast<int8_t*>(c.out) + r * c.ldc + col, mask, _mm512_cvtepi32_epi8(y));  // not vpmovdb m{k} (slow on Zen)
}

template <int MR, bool BS>
__attribute__((noinline)) void tile(const GemmCall& c, const uint8_t* bc, const uint8_t* vec, int64_t r0,
                                    int64_t c0, const Epi& e, int64_t k4, bool first, bool last) {
    __m512i acc[MR][2];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
    if (last) {  // start the output lines' ownership requests now so the epilogue's stores do not stall
        const int64_t es = c.out_type == QATML_TYPE_INT32 ? 4 : 1;
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
            const char* o = static_cast<const char*>(c.out) + ((r0 + r) * c.ldc + c0) * es;
            __builtin_prefetch(o, 1, 3);
            __builtin_prefetch(o + 32 * es - 1, 1, 3);
        }
    }
    int64_t k = 0;
    if constexpr (MR <= 2) {
        // Matrix-vector shapes: a second accumulator set breaks the vpdpbusd latency chain.
        __m512i acc2[MR][2];
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) acc2[r][0] = acc2[r][1] = _mm512_setzero_si512();
        for (; k + 2 <= k4; k += 2) {
            const __m512i v0 = _mm512_loadu_si512(vec), v1 = _mm512_loadu_si512(vec + 64);
            const __m512i w0 = _mm512_loadu_si512(vec + 128), w1 = _mm512_loadu_si512(vec + 192);
            vec += 256;
#pragma GCC unroll 16
            for (int r = 0; r < MR; ++r) {
                int32_t x0, x1;
                __builtin_memcpy(&x0, bc + 4 * r, 4);
                __builtin_memcpy(&x1, bc + 4 * kMR + 4 * r, 4);
                const __m512i b0 = _mm512_set1_epi32(x0), b1 = _mm512_set1_epi32(x1);
                if (BS) {
                    acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], v0, b0);
                    acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], v1, b0);
                    acc2[r][0] = _mm512_dpbusd_epi32(acc2[r][0], w0, b1);
                    acc2[r][1] = _mm512_dpbusd_epi32(acc2[r][1], w1, b1);
                } else {
                    acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], b0, v0);
                    acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], b0, v1);
                    acc2[r][0] = _mm512_dpbusd_epi32(acc2[r][0], b1, w0);
                    acc2[r][1] = _mm512_dpbusd_epi32(acc2[r][1], b1, w1);
                }
            }
            bc += 8 * kMR;
        }
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
            acc[r][0] = _mm512_add_epi32(acc[r][0], acc2[r][0]);
            acc[r][1] = _mm512_add_epi32(acc[r][1], acc2[r][1]);
        }
    }
    for (; k < k4; ++k) {
        const __m512i v0 = _mm512_loadu_si512(vec);
        const __m512i v1 = _mm512_loadu_si512(vec + 64);
        vec += 128;
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
            int32_t word;
            __builtin_memcpy(&word, bc + 4 * r, 4);
            const __m512i b = _mm512_set1_epi32(word);
            if (BS) {
                acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], v0, b);
                acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], v1, b);
            } else {
                acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], b, v0);
                acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], b, v1);
            }
        }
        bc += 4 * kMR;  // tiles are always packed kMR wide
    }
    if (!first || !last) {
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
            int32_t* srow = c.scratch + (r0 + r) * c.scratch_ld + c0;
            if (!first) {
                acc[r][0] = _mm512_add_epi32(acc[r][0], _mm512_loadu_si512(srow));
                acc[r][1] = _mm512_add_epi32(acc[r][1], _mm512_loadu_si512(srow + 16));
            }
            if (!last) {
                _mm512_storeu_si512(srow, acc[r][0]);
                _mm512_storeu_si512(srow + 16, acc[r][1]);
            }
        }
        if (!last) return;
    }
    // Epilogue.
    const int64_t left = c.cols - c0;
    const __mmask16 m0 = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
    const __mmask16 m1 = left >= 32 ? (__mmask16)0xFFFF : left <= 16 ? (__mmask16)0 : (__mmask16)((1u << (left - 16)) - 1u);
    const __m512i ca0 = _mm512_loadu_si512(c.coladd + c0), ca1 = _mm512_loadu_si512(c.coladd + c0 + 16);
    __m512i cm0 = _mm512_setzero_si512(), cm1 = _mm512_setzero_si512();
    if (c.rowmul) {
        cm0 = _mm512_loadu_si512(c.colmul + c0);
        cm1 = _mm512_loadu_si512(c.colmul + c0 + 16);
    }
    __m512 mc0 = _mm512_setzero_ps(), mc1 = _mm512_setzero_ps();
    if (!c.mult_per_row && c.out_type != QATML_TYPE_INT32) {
        mc0 = _mm512_loadu_ps(c.mult + c0);
        mc1 = _mm512_loadu_ps(c.mult + c0 + 16);
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
        const int64_t row = r0 + r;
        if (row >= c.rows) break;
        const __m512i ra = _mm512_set1_epi32(c.rowadd[row]);
        __m512i x0 = _mm512_add_epi32(_mm512_add_epi32(acc[r][0], ra), ca0);
        __m512i x1 = _mm512_add_epi32(_mm512_add_epi32(acc[r][1], ra), ca1);
        if (c.rowmul) {
            const __m512i rm = _mm512_set1_epi32(c.rowmul[row]);
            x0 = _mm512_add_epi32(x0, _mm512_mullo_epi32(rm, cm0));
            x1 = _mm512_add_epi32(x1, _mm512_mullo_epi32(rm, cm1));
        }
        __m512 f0 = mc0, f1 = mc1;
        if (c.mult_per_row && c.out_type != QATML_TYPE_INT32) f0 = f1 = _mm512_set1_ps(c.mult[row]);
        store_vec(c, e, x0, row, c0, m0, f0);
        if (m1) store_vec(c, e, x1, row, c0 + 16, m1, f1);
    }
}

template <bool BS>
void run(const GemmCall& c) {
    Epi e;
    e.lo_f = _mm512_set1_ps(static_cast<float>(c.lo - c.zp));
    e.hi_f = _mm512_set1_ps(static_cast<float>(c.hi - c.zp));
    e.zp = _mm512_set1_epi32(c.zp);
    const int64_t panels = (c.cols + kNR - 1) / kNR;
    const int64_t tiles = (c.rows + kMR - 1) / kMR;
    const int64_t vstride = c.k4 * kNR * 4, bstride = c.k4 * kMR * 4;
    const int64_t nkb = c.kc4 > 0 && c.kc4 < c.k4 ? (c.k4 + c.kc4 - 1) / c.kc4 : 1;
    const int64_t kc4 = (c.k4 + nkb - 1) / nkb;
    for (int64_t kb = 0; kb < c.k4; kb += kc4) {
    const int64_t kn = c.k4 - kb < kc4 ? c.k4 - kb : kc4;
    const bool first = kb == 0, last = kb + kn == c.k4;
    for (int64_t p = 0; p < panels; ++p) {
        const uint8_t* vec = c.vec + p * vstride + kb * kNR * 4;
        for (int64_t t = 0; t < tiles; ++t) {
            const int64_t r0 = t * kMR;
            const int64_t rows = c.rows - r0;
            const uint8_t* bc = c.bc + t * bstride + kb * kMR * 4;
            switch (rows >= kMR ? kMR : rows) {
                case 12: tile<12, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
                case 11: tile<11, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
                case 10: tile<10, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
                case 9: tile<9, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
                case 8: tile<8, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
                case 7: tile<7, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
                case 6: tile<6, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
                case 5: tile<5, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
                case 4: tile<4, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
                case 3: tile<3, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
                case 2: tile<2, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
                default: tile<1, BS>(c, bc, vec, r0, p * kNR, e, kn, first, last); break;
            }
        }
    }
    }
}

}  // namespace

void gemm_avx512vnni(const GemmCall& call) {
    if (call.bc_signed) run<true>(call); else run<false>(call);
}

}  // namespace kernels
}  // namespace qatml
