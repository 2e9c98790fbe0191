// Implicit-GEMM convolution driver for AVX-512 VNNI: register tile 8 output channels x 48 pixels
// (24 zmm accumulators); the pixel operand is loaded straight from the channel-interleaved input
// (no im2col), the output is stored NCHW with compressed masked stores. Compiled with
// -mavx512f -mavx512bw -mavx512vl -mavx512vnni; called only when the CPU has them. No standard
// library here (see kernel_common.h).
#include "kernels/kernel_common.h"
#include "qatml/qatml.h"

// GCC 12 warns inside its own AVX-512 intrinsics (their deliberately undefined pass-through operand, GCC
// PR 105593, fixed in GCC 13) once they are inlined into the fully unrolled lane tiles.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#  pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

namespace qatml {
namespace kernels {
namespace {

constexpr int kMR = kConvMR;
constexpr int kMaxNV = 3;  // vectors of 16 pixels per tile

struct Epi {
    __m512 lo_f, hi_f;
    __m512i zp;
};

// Compresses the real pixels of x to the front and stores them at `dst` (consecutive in the output).
__attribute__((always_inline)) inline void store_pixels(const ConvCall& c, const Epi& e, __m512i x, __mmask16 mask,
                                                        int64_t dst, float mult) {
    const __mmask16 head = static_cast<__mmask16>((1u << __builtin_popcount(mask)) - 1u);
    if (c.out_type == QATML_TYPE_INT32) {
        _mm512_mask_storeu_epi32(static_cast<int32_t*>(c.out) + dst, head, _mm512_maskz_compress_epi32(mask, x));
        return;
    }
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(x), _mm512_set1_ps(mult));
    f = _mm512_min_ps(_mm512_max_ps(f, e.lo_f), e.hi_f);
    const __m512i y = _mm512_add_epi32(_mm512_cvtps_epi32(f), e.zp);
    // vpmovdb to a register, then a masked byte store: the masked memory form of vpmovdb is slow on Zen 4/5.
    _mm_mask_storeu_epi8(static_cast<int8_t*>(c.out) + dst, head, _mm512_cvtepi32_epi8(_mm512_maskz_compress_epi32(mask, y)));
}

template <int MR, int NV>
__attribute__((noinline)) void tile(const ConvCall& c, const Epi& e, const uint8_t* w, int64_t r0, int64_t q0) {
    __m512i acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
        for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_setzero_si512();
    const uint8_t* in = c.input + q0 * 4;
    const int64_t* off = c.k_offsets;
    for (int64_t k = 0; k < c.k4; ++k) {
        const uint8_t* p = in + off[k];
        __m512i v[NV];
#pragma GCC unroll 3
        for (int j = 0; j < NV; ++j) v[j] = _mm512_loadu_si512(p + 64 * j);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
            int32_t word;
            __builtin_memcpy(&word, w + 4 * r, 4);
            const __m512i b = _mm512_set1_epi32(word);
#pragma GCC unroll 3
            for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], v[j], b);
        }
        w += 4 * kConvPack;  // weights are packed kConvPack rows wide
    }
#pragma GCC unroll 3
    for (int j = 0; j < NV; ++j) {
        const int64_t vi = q0 / 16 + j;
        const __mmask16 mask = c.store_mask[vi];
        if (!mask) continue;
        const int64_t first = c.store_index[vi];
        __m512i cs = _mm512_setzero_si512();
        if (c.rowmul) cs = _mm512_loadu_si512(c.colsum + q0 + 16 * j);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
            const int64_t row = r0 + r;
            __m512i x = _mm512_add_epi32(acc[r][j], _mm512_set1_epi32(c.rowadd[row]));
            if (c.rowmul) x = _mm512_add_epi32(x, _mm512_mullo_epi32(_mm512_set1_epi32(c.rowmul[row]), cs));
            store_pixels(c, e, x, mask, row * c.out_row_stride + first, c.out_type == QATML_TYPE_INT32 ? 0.0f : c.mult[row]);
        }
    }
}

// Sum of the input bytes each virtual pixel reads (the weight zero point correction), by vpdpbusd
// with all-ones weights.
void column_sums(const ConvCall& c) {
    const __m512i ones = _mm512_set1_epi8(1);
    for (int64_t q0 = 0; q0 < c.cols; q0 += 16) {
        __m512i acc = _mm512_setzero_si512();
        for (int64_t k = 0; k < c.k4; ++k)
            acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(c.input + q0 * 4 + c.k_offsets[k]), ones);
        _mm512_storeu_si512(c.colsum + q0, acc);
    }
}

template <int NV>
void row_tile(const ConvCall& c, const Epi& e, int64_t r0, int64_t q0) {
    const uint8_t* w = c.weights + (r0 / kConvPack) * (c.k4 * kConvPack * 4) + (r0 % kConvPack) * 4;
    switch (c.rows - r0 >= kMR ? kMR : c.rows - r0) {
        case 8: tile<8, NV>(c, e, w, r0, q0); break;
        case 7: tile<7, NV>(c, e, w, r0, q0); break;
        case 6: tile<6, NV>(c, e, w, r0, q0); break;
        case 5: tile<5, NV>(c, e, w, r0, q0); break;
        case 4: tile<4, NV>(c, e, w, r0, q0); break;
        case 3: tile<3, NV>(c, e, w, r0, q0); break;
        case 2: tile<2, NV>(c, e, w, r0, q0); break;
        default: tile<1, NV>(c, e, w, r0, q0); break;
    }
}

// Pixel blocks of 3 vectors; a remainder of 4 runs as 2 + 2 (a 1-vector tile does one vpdpbusd per
// broadcast, half the rate of the wider tiles; a 7x7 output plane is 4 vectors).
inline int64_t block_vectors(int64_t left) { return left == 4 ? 2 : left < kMaxNV ? left
                                                                                  : kMaxNV; }

void block(const ConvCall& c, const Epi& e, int64_t r0, int64_t v0, int64_t nv) {
    if (nv == 3)
        row_tile<3>(c, e, r0, v0 * 16);
    else if (nv == 2)
        row_tile<2>(c, e, r0, v0 * 16);
    else
        row_tile<1>(c, e, r0, v0 * 16);
}

// ---- output channels in lanes ----

constexpr int kLanesPX = 6;  // pixels per tile
constexpr int kLanesNV = 4;  // vectors of 16 channels per tile

// `pf` .. `pf_end`: lines of the next row block's weights this tile pulls into L2, one per K step (the
// first pass over a row block otherwise waits on them: deep layers' weights come from L3 or memory).
// POOL: the pixels are 2x2 windows (4 consecutive entries each); one output per window, the max of its
// four int32 results (requantization is monotonic: the caller checks the multipliers are > 0).
template <int PX, int NV, bool POOL = false, bool RES = false>
__attribute__((noinline)) void lanes_tile(const ConvLanesCall& c, const Epi& e, int64_t r0, int64_t p0, const uint8_t* pf,
                                          const uint8_t* pf_end) {
    __m512i acc[PX][NV];
#pragma GCC unroll 16
    for (int i = 0; i < PX; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_si512();
    const int64_t block = c.k4 * kConvPack * 4;  // bytes per 16 packed rows
    const uint8_t* w = c.weights + (r0 / kConvPack) * block;
    const uint8_t* in[PX];
#pragma GCC unroll 16
    for (int i = 0; i < PX; ++i) in[i] = c.input + c.pixel_offsets[p0 + i];
    const int64_t* off = c.k_offsets;
    for (int64_t k = 0; k < c.k4; ++k, w += 64, pf += 64) {
        if (pf < pf_end) _mm_prefetch(reinterpret_cast<const char*>(pf), _MM_HINT_T1);
        const int64_t o = off[k];
        __m512i wv[NV];
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) wv[j] = _mm512_loadu_si512(w + j * block);
#pragma GCC unroll 16
        for (int i = 0; i < PX; ++i) {
            int32_t word;
            __builtin_memcpy(&word, in[i] + o, 4);
            const __m512i b = _mm512_set1_epi32(word);
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], b, wv[j]);
        }
    }
    // Through memory: indexing the accumulators in this loop made GCC 12 keep a stack copy of them
    // in the K loop.
    alignas(64) int32_t sums[PX][NV][16];
#pragma GCC unroll 16
    for (int i = 0; i < PX; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) _mm512_store_si512(sums[i][j], acc[i][j]);
    __m512 res_rc, res_rr, res_lf, res_hf;
    __m512i res_zc, res_zr, res_zy;
    if (RES) {
        res_rc = _mm512_set1_ps(c.res_rc);
        res_rr = _mm512_set1_ps(c.res_rr);
        res_lf = _mm512_set1_ps(static_cast<float>(c.res_lo - c.res_zy));
        res_hf = _mm512_set1_ps(static_cast<float>(c.res_hi - c.res_zy));
        res_zc = _mm512_set1_epi32(c.res_zc);
        res_zr = _mm512_set1_epi32(c.res_zr);
        res_zy = _mm512_set1_epi32(c.res_zy);
    }
    for (int j = 0; j < NV; ++j) {
        const int64_t r = r0 + 16 * j;
        const __m512i add = _mm512_loadu_si512(c.rowadd + r);
        const __m512 mult = _mm512_loadu_ps(c.mult + r);
        constexpr int kOut = POOL ? PX / 4 : PX;
        for (int i = 0; i < kOut; ++i) {
            __m512i x;
            if (POOL) {
                x = _mm512_max_epi32(_mm512_max_epi32(_mm512_add_epi32(_mm512_load_si512(sums[4 * i][j]), add),
                                                      _mm512_add_epi32(_mm512_load_si512(sums[4 * i + 1][j]), add)),
                                     _mm512_max_epi32(_mm512_add_epi32(_mm512_load_si512(sums[4 * i + 2][j]), add),
                                                      _mm512_add_epi32(_mm512_load_si512(sums[4 * i + 3][j]), add)));
            } else {
                x = _mm512_add_epi32(_mm512_load_si512(sums[i][j]), add);
            }
            __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(x), mult);
            f = _mm512_min_ps(_mm512_max_ps(f, e.lo_f), e.hi_f);
            __m512i y = _mm512_add_epi32(_mm512_cvtps_epi32(f), e.zp);
            const int64_t at = c.out_offsets[POOL ? p0 / 4 + i : p0 + i] + r;
            if (RES) {  // QLinearAdd with the residual, in the order of the scalar add (add_one)
                const __m128i rb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c.residual + at));
                const __m512i rv = c.residual_signed ? _mm512_cvtepi8_epi32(rb) : _mm512_cvtepu8_epi32(rb);
                const __m512 pc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(y, res_zc)), res_rc);
                const __m512 pr = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(rv, res_zr)), res_rr);
                __m512 v = _mm512_add_ps(pc, pr);
                v = _mm512_min_ps(_mm512_max_ps(v, res_lf), res_hf);
                y = _mm512_add_epi32(_mm512_cvtps_epi32(v), res_zy);
            }
            _mm_storeu_si128(reinterpret_cast<__m128i*>(c.out + at), _mm512_cvtepi32_epi8(y));
        }
    }
}

// Pixels in balanced tiles of at most kLanesPX (49 pixels: 4 x 6 + 5 x 5, not 8 x 6 + a 1-pixel tile
// that runs at a quarter of the rate).
template <int NV, bool RES>
void lanes_row_block(const ConvLanesCall& c, const Epi& e, int64_t r0) {
    const int64_t tiles = (c.pixels + kLanesPX - 1) / kLanesPX, small = c.pixels / tiles, big = c.pixels % tiles;
    const int64_t block = c.k4 * kConvPack * 4;
    const int64_t next = r0 + 16 * NV, next_blocks = c.rows - next < 16 * kLanesNV ? (c.rows - next) / 16 : kLanesNV;
    const uint8_t* pf = c.weights + (next / kConvPack) * block;
    const uint8_t* pf_end = next < c.rows ? pf + next_blocks * block : pf;
    if (!RES && c.pool) {  // windows of 4 pixels: tiles of 2 windows (1 when 64 channels: 4 x 4 accumulators)
        constexpr int kWin = NV <= 2 ? 2 : 1;
        for (int64_t p0 = 0; p0 < c.pixels; p0 += 4 * kWin) {
            if (kWin == 2 && p0 + 8 <= c.pixels)
                lanes_tile<8, NV, true>(c, e, r0, p0, pf, pf_end);
            else
                lanes_tile<4, NV, true>(c, e, r0, p0, pf, pf_end);
            pf += c.k4 * 64;
        }
        return;
    }
    for (int64_t t = 0, p0 = 0; t < tiles; ++t) {
        const int64_t px = small + (t < big ? 1 : 0);
        switch (px) {
            case 6: lanes_tile<6, NV, false, RES>(c, e, r0, p0, pf, pf_end); break;
            case 5: lanes_tile<5, NV, false, RES>(c, e, r0, p0, pf, pf_end); break;
            case 4: lanes_tile<4, NV, false, RES>(c, e, r0, p0, pf, pf_end); break;
            case 3: lanes_tile<3, NV, false, RES>(c, e, r0, p0, pf, pf_end); break;
            case 2: lanes_tile<2, NV, false, RES>(c, e, r0, p0, pf, pf_end); break;
            default: lanes_tile<1, NV, false, RES>(c, e, r0, p0, pf, pf_end); break;
        }
        p0 += px;
        pf += c.k4 * 64;
    }
}

}  // namespace

void conv_avx512vnni_lanes(const ConvLanesCall& c) {
    Epi e;
    e.lo_f = _mm512_set1_ps(static_cast<float>(c.lo - c.zp));
    e.hi_f = _mm512_set1_ps(static_cast<float>(c.hi - c.zp));
    e.zp = _mm512_set1_epi32(c.zp);
    for (int64_t r0 = 0; r0 < c.rows; r0 += 16 * kLanesNV) {
        const bool res = c.residual != nullptr;
        switch ((c.rows - r0) / 16) {
            case 1: res ? lanes_row_block<1, true>(c, e, r0) : lanes_row_block<1, false>(c, e, r0); break;
            case 2: res ? lanes_row_block<2, true>(c, e, r0) : lanes_row_block<2, false>(c, e, r0); break;
            case 3: res ? lanes_row_block<3, true>(c, e, r0) : lanes_row_block<3, false>(c, e, r0); break;
            default: res ? lanes_row_block<4, true>(c, e, r0) : lanes_row_block<4, false>(c, e, r0); break;
        }
    }
}

namespace {
// First `count` bytes (0..64) of a 64-byte vector.
__attribute__((always_inline)) inline __mmask64 byte_mask(int64_t count) {
    return count >= 64 ? ~__mmask64(0) : count <= 0 ? __mmask64(0)
                                                    : (__mmask64(1) << count) - 1;
}

// 64 pixels of 4 byte planes -> 4 x 4 bytes per pixel: bytes, then words, interleaved within 128-bit lanes
// (o[k] lane L holds pixels 16 L + 4 k .. + 3), then a 4 x 4 transpose of the lanes: out[L] = pixels 16 L .. 16 L + 15.
__attribute__((always_inline)) inline void interleave_planes(const __m512i v[4], __m512i out[4]) {
    const __m512i t0 = _mm512_unpacklo_epi8(v[0], v[1]), t1 = _mm512_unpackhi_epi8(v[0], v[1]);
    const __m512i t2 = _mm512_unpacklo_epi8(v[2], v[3]), t3 = _mm512_unpackhi_epi8(v[2], v[3]);
    const __m512i o0 = _mm512_unpacklo_epi16(t0, t2), o1 = _mm512_unpackhi_epi16(t0, t2);
    const __m512i o2 = _mm512_unpacklo_epi16(t1, t3), o3 = _mm512_unpackhi_epi16(t1, t3);
    const __m512i u0 = _mm512_shuffle_i64x2(o0, o1, 0x44), u1 = _mm512_shuffle_i64x2(o2, o3, 0x44);
    const __m512i u2 = _mm512_shuffle_i64x2(o0, o1, 0xEE), u3 = _mm512_shuffle_i64x2(o2, o3, 0xEE);
    out[0] = _mm512_shuffle_i64x2(u0, u1, 0x88);
    out[1] = _mm512_shuffle_i64x2(u0, u1, 0xDD);
    out[2] = _mm512_shuffle_i64x2(u2, u3, 0x88);
    out[3] = _mm512_shuffle_i64x2(u2, u3, 0xDD);
}
}  // namespace

void interleave4_avx512(const uint8_t* const src[4], int64_t n, int64_t step, uint8_t flip, uint8_t* dst) {
    const __m512i fl = _mm512_set1_epi8(static_cast<char>(flip));
    for (int64_t i = 0; i < n; i += 64) {
        const int64_t m = n - i < 64 ? n - i : 64;  // pixels this step
        __m512i v[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
            if (src[j] == nullptr) {
                v[j] = _mm512_setzero_si512();
                continue;
            }
            if (step == 1) {
                v[j] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(byte_mask(m), src[j] + i), fl);
            } else {  // even bytes of 2m - 1: the low byte of each 16-bit lane, kept by vpmovwb
                const uint8_t* p = src[j] + 2 * i;
                const __m512i lo = _mm512_maskz_loadu_epi8(byte_mask(2 * m - 1), p);
                const __m512i hi = _mm512_maskz_loadu_epi8(byte_mask(2 * m - 1 - 64), p + 64);
                const __m512i even = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi16_epi8(lo)), _mm512_cvtepi16_epi8(hi), 1);
                v[j] = _mm512_xor_si512(even, fl);
            }
        }
        __m512i out[4];
        interleave_planes(v, out);
        uint8_t* d = dst + 4 * i;
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
            const int64_t bytes = 4 * m - 64 * k;
            if (bytes <= 0) break;
            if (bytes >= 64)
                _mm512_storeu_si512(d + 64 * k, out[k]);
            else
                _mm512_mask_storeu_epi8(d + 64 * k, byte_mask(bytes), out[k]);
        }
    }
}

void interleave3_avx512(const uint8_t* const src[3], int64_t n, uint8_t flip, uint8_t* dst) {
    const __m512i fl = _mm512_set1_epi8(static_cast<char>(flip));
    // Per 128-bit lane: 4 pixels of (c0 c1 c2 0) -> their 12 bytes first; then the 4 lanes' 12 bytes together.
    const __m512i squeeze = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1));
    const __m512i gather = _mm512_setr_epi32(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 15, 15, 15, 15);
    for (int64_t i = 0; i < n; i += 64) {
        const int64_t m = n - i < 64 ? n - i : 64;
        __m512i v[4];
#pragma GCC unroll 3
        for (int j = 0; j < 3; ++j) v[j] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(byte_mask(m), src[j] + i), fl);
        v[3] = _mm512_setzero_si512();
        __m512i quads[4];
        interleave_planes(v, quads);
        uint8_t* d = dst + 3 * i;
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {  // 16 pixels -> 48 bytes
            const int64_t bytes = 3 * m - 48 * k;
            if (bytes <= 0) break;
            const __m512i packed = _mm512_permutexvar_epi32(gather, _mm512_shuffle_epi8(quads[k], squeeze));
            _mm512_mask_storeu_epi8(d + 48 * k, byte_mask(bytes < 48 ? bytes : 48), packed);
        }
    }
}

void transpose_16x64_avx512(const uint8_t* src, int64_t src_stride, uint8_t* dst, int64_t dst_stride) {
    __m512i r[16], t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(src + i * src_stride);
        // Bytes, words, dwords, qwords interleaved within each 128-bit lane (the SSE2 16 x 16 transpose, four at once).
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
        t[i] = _mm512_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
        t[i + 8] = _mm512_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
        r[i] = _mm512_unpacklo_epi16(t[2 * i], t[2 * i + 1]);
        r[i + 4] = _mm512_unpackhi_epi16(t[2 * i], t[2 * i + 1]);
        r[i + 8] = _mm512_unpacklo_epi16(t[8 + 2 * i], t[8 + 2 * i + 1]);
        r[i + 12] = _mm512_unpackhi_epi16(t[8 + 2 * i], t[8 + 2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int h = 0; h < 16; h += 4) {
        t[h] = _mm512_unpacklo_epi32(r[h], r[h + 1]);
        t[h + 1] = _mm512_unpackhi_epi32(r[h], r[h + 1]);
        t[h + 2] = _mm512_unpacklo_epi32(r[h + 2], r[h + 3]);
        t[h + 3] = _mm512_unpackhi_epi32(r[h + 2], r[h + 3]);
    }
#pragma GCC unroll 4
    for (int h = 0; h < 16; h += 4) {
        r[h] = _mm512_unpacklo_epi64(t[h], t[h + 2]);
        r[h + 1] = _mm512_unpackhi_epi64(t[h], t[h + 2]);
        r[h + 2] = _mm512_unpacklo_epi64(t[h + 1], t[h + 3]);
        r[h + 3] = _mm512_unpackhi_epi64(t[h + 1], t[h + 3]);
    }
    // r[i] lane l: channel 16 l + i, pixels 0 .. 15.
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i * dst_stride), _mm512_castsi512_si128(r[i]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (16 + i) * dst_stride), _mm512_extracti32x4_epi32(r[i], 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (32 + i) * dst_stride), _mm512_extracti32x4_epi32(r[i], 2));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (48 + i) * dst_stride), _mm512_extracti32x4_epi32(r[i], 3));
    }
}

void max_pool3_pixel_major_avx512(const uint8_t* src, int64_t oh, int64_t ow, int64_t pt, int64_t pl, int64_t poh, int64_t pow,
                                  int64_t stride, bool sg, uint8_t* row, uint8_t* dst) {
    auto vmax = [sg](__m512i a, __m512i b) { return sg ? _mm512_max_epi8(a, b) : _mm512_max_epu8(a, b); };
    for (int64_t i = 0; i < stride; i += 64) {  // 64 channels at a time (a masked tail when stride is not a multiple)
        const __mmask64 m = byte_mask(stride - i);
        for (int64_t py = 0; py < poh; ++py) {
            const int64_t y0 = 2 * py - pt < 0 ? 0 : 2 * py - pt, y1 = 2 * py - pt + 3 > oh ? oh : 2 * py - pt + 3;
            for (int64_t x = 0; x < ow; ++x) {
                const uint8_t* s = src + (y0 * ow + x) * stride + i;
                __m512i v = _mm512_maskz_loadu_epi8(m, s);
                for (int64_t yy = y0 + 1; yy < y1; ++yy) v = vmax(v, _mm512_maskz_loadu_epi8(m, s + (yy - y0) * ow * stride));
                _mm512_mask_storeu_epi8(row + x * stride + i, m, v);
            }
            for (int64_t px = 0; px < pow; ++px) {
                const int64_t x0 = 2 * px - pl < 0 ? 0 : 2 * px - pl, x1 = 2 * px - pl + 3 > ow ? ow : 2 * px - pl + 3;
                __m512i v = _mm512_maskz_loadu_epi8(m, row + x0 * stride + i);
                for (int64_t xx = x0 + 1; xx < x1; ++xx) v = vmax(v, _mm512_maskz_loadu_epi8(m, row + xx * stride + i));
                _mm512_mask_storeu_epi8(dst + (py * pow + px) * stride + i, m, v);
            }
        }
    }
}

void conv_avx512vnni(const ConvCall& c) {
    Epi e;
    e.lo_f = _mm512_set1_ps(static_cast<float>(c.lo - c.zp));
    e.hi_f = _mm512_set1_ps(static_cast<float>(c.hi - c.zp));
    e.zp = _mm512_set1_epi32(c.zp);
    if (c.rowmul) column_sums(c);
    const int64_t vectors = (c.cols + 15) / 16;
    if (c.rows > c.cols) {
        // More weights than pixels (deep layers on small planes): row tiles outer, so each weight
        // panel is read once while the small input stays in L2.
        for (int64_t r0 = 0; r0 < c.rows; r0 += kMR)
            for (int64_t v0 = 0, nv = 0; v0 < vectors; v0 += nv) block(c, e, r0, v0, nv = block_vectors(vectors - v0));
        return;
    }
    // Pixel blocks outer: the block's input window stays in L1 while every row tile passes over it.
    for (int64_t v0 = 0, nv = 0; v0 < vectors; v0 += nv) {
        nv = block_vectors(vectors - v0);
        for (int64_t r0 = 0; r0 < c.rows; r0 += kMR) block(c, e, r0, v0, nv);
    }
}

}  // namespace kernels
}  // namespace qatml
