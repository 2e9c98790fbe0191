// Vectorised elementwise, pooling and depthwise loops for AVX-512 (F/BW/VL): 16 int32 lanes,
// 64 byte lanes. Compiled with -mavx512f -mavx512bw -mavx512vl; used only when the active ISA is
// AVX-512 VNNI. No standard library here (see kernel_common.h).
#include "kernels/simd_kernels.h"
#include "qatml/qatml.h"

#include <immintrin.h>

namespace qatml {
namespace kernels {
namespace {

constexpr int64_t L = 16, LB = 64;
using VI = __m512i;
using VF = __m512;
using VB = __m512i;
constexpr bool kMaskedTails = true;  // masked loads and stores

#define QATML_SIMD inline __attribute__((always_inline))
QATML_SIMD VI i_set1(int32_t v) { return _mm512_set1_epi32(v); }
QATML_SIMD VF f_set1(float v) { return _mm512_set1_ps(v); }
QATML_SIMD VI i_load(const int32_t* p) { return _mm512_loadu_si512(p); }
QATML_SIMD void i_store(int32_t* p, VI v) { _mm512_storeu_si512(p, v); }
QATML_SIMD VF f_load(const float* p) { return _mm512_loadu_ps(p); }
QATML_SIMD void f_store(float* p, VF v) { _mm512_storeu_ps(p, v); }
QATML_SIMD VI i_load_u8(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
QATML_SIMD VI i_load_s8(const uint8_t* p) { return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
QATML_SIMD void i_store_bytes(uint8_t* p, VI v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v)); }
QATML_SIMD __mmask16 head_mask(int64_t count) { return static_cast<__mmask16>((1u << count) - 1u); }
QATML_SIMD __mmask64 head_mask64(int64_t count) { return count >= 64 ? ~__mmask64(0) : (__mmask64(1) << count) - 1; }
// Partial vectors (count < lanes): masked, so nothing past p + count is touched.
QATML_SIMD VI i_load_n(const int32_t* p, int64_t count) { return _mm512_maskz_loadu_epi32(head_mask(count), p); }
QATML_SIMD VF f_load_n(const float* p, int64_t count) { return _mm512_maskz_loadu_ps(head_mask(count), p); }
QATML_SIMD VI i_load_bytes_n(const uint8_t* p, int64_t count, bool is_signed) {
    const __m128i b = _mm_maskz_loadu_epi8(head_mask(count), p);
    return is_signed ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
}
QATML_SIMD VB b_load_n(const uint8_t* p, int64_t count) { return _mm512_maskz_loadu_epi8(head_mask64(count), p); }
QATML_SIMD void b_store_n(uint8_t* p, VB v, int64_t count) { _mm512_mask_storeu_epi8(p, head_mask64(count), v); }
QATML_SIMD void f_store_n(float* p, VF v, int64_t count) { _mm512_mask_storeu_ps(p, head_mask(count), v); }
QATML_SIMD void i_store_partial(int32_t* p, VI v, int64_t count) { _mm512_mask_storeu_epi32(p, head_mask(count), v); }
QATML_SIMD void i_store_bytes_partial(uint8_t* p, VI v, int64_t count) {
    _mm_mask_storeu_epi8(p, head_mask(count), _mm512_cvtepi32_epi8(v));  // not vpmovdb m{k} (slow on Zen)
}
QATML_SIMD VI i_add(VI a, VI b) { return _mm512_add_epi32(a, b); }
QATML_SIMD VI i_sub(VI a, VI b) { return _mm512_sub_epi32(a, b); }
QATML_SIMD VI i_mullo(VI a, VI b) { return _mm512_mullo_epi32(a, b); }
QATML_SIMD VI i_min(VI a, VI b) { return _mm512_min_epi32(a, b); }
QATML_SIMD VI i_max(VI a, VI b) { return _mm512_max_epi32(a, b); }
// 2L consecutive bytes as L pairs: the even bytes and the odd bytes, each widened to int32 (u8 or s8).
QATML_SIMD void i_load_pairs(const uint8_t* p, bool is_signed, VI& even, VI& odd) {
    const VI v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    if (is_signed) {
        even = _mm512_srai_epi32(_mm512_slli_epi32(v, 24), 24);
        odd = _mm512_srai_epi32(_mm512_slli_epi32(v, 16), 24);
    } else {
        even = _mm512_and_si512(v, _mm512_set1_epi32(0xFF));
        odd = _mm512_srli_epi32(v, 8);
    }
}
QATML_SIMD VF i_to_f(VI v) { return _mm512_cvtepi32_ps(v); }
QATML_SIMD VI f_to_i(VF v) { return _mm512_cvtps_epi32(v); }  // MXCSR rounding: nearest even, as nearbyint
QATML_SIMD VF f_add(VF a, VF b) { return _mm512_add_ps(a, b); }
QATML_SIMD VF f_mul(VF a, VF b) { return _mm512_mul_ps(a, b); }
QATML_SIMD VF f_div(VF a, VF b) { return _mm512_div_ps(a, b); }
QATML_SIMD VF f_min(VF a, VF b) { return _mm512_min_ps(a, b); }
QATML_SIMD VF f_max(VF a, VF b) { return _mm512_max_ps(a, b); }
QATML_SIMD VB b_set1(int v) { return _mm512_set1_epi8(static_cast<char>(v)); }
QATML_SIMD VB b_load(const uint8_t* p) { return _mm512_loadu_si512(p); }
QATML_SIMD void b_store(uint8_t* p, VB v) { _mm512_storeu_si512(p, v); }
QATML_SIMD VB b_xor(VB a, VB b) { return _mm512_xor_si512(a, b); }
QATML_SIMD VB b_max_u8(VB a, VB b) { return _mm512_max_epu8(a, b); }
QATML_SIMD VB b_max_s8(VB a, VB b) { return _mm512_max_epi8(a, b); }
QATML_SIMD VI b_sad_accumulate(VI acc64, VB v) { return _mm512_add_epi64(acc64, _mm512_sad_epu8(v, _mm512_setzero_si512())); }
QATML_SIMD int64_t i64_hsum(VI acc64) {
    alignas(64) int64_t lanes[8];
    _mm512_store_si512(lanes, acc64);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}
#undef QATML_SIMD

}  // namespace

#include "kernels/simd_body.inc"

namespace {
// Two input rows -> one output row: vertical max of 64 columns, then the max of each column pair (the
// odd byte shifted onto the even one in 16-bit lanes) and vpmovwb keeps the even bytes.
void max_pool_2x2(const uint8_t* x, int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow, bool sg, uint8_t* y) {
    const int64_t cols = 2 * ow;
    for (int64_t p = 0; p < planes; ++p) {
        const uint8_t* plane = x + p * h * w;
        uint8_t* out = y + p * oh * ow;
        for (int64_t oy = 0; oy < oh; ++oy) {
            const uint8_t* r0 = plane + 2 * oy * w;
            const uint8_t* r1 = r0 + w;
            uint8_t* o = out + oy * ow;
            for (int64_t c = 0; c < cols; c += 64) {
                const int64_t n = cols - c < 64 ? cols - c : 64;
                const __mmask64 m = n == 64 ? ~0ULL : ((1ULL << n) - 1);
                const __m512i a = _mm512_maskz_loadu_epi8(m, r0 + c), b = _mm512_maskz_loadu_epi8(m, r1 + c);
                __m512i v = sg ? _mm512_max_epi8(a, b) : _mm512_max_epu8(a, b);
                const __m512i odd = _mm512_srli_epi16(v, 8);
                v = sg ? _mm512_max_epi8(v, odd) : _mm512_max_epu8(v, odd);
                const __mmask32 sm = n == 64 ? 0xffffffffu : static_cast<__mmask32>((1u << (n / 2)) - 1);
                _mm256_mask_storeu_epi8(o + c / 2, sm, _mm512_cvtepi16_epi8(v));
            }
        }
    }
}

// Per output row: the vertical max of its (up to) 3 input rows into `row` (1 byte of left padding, the
// type's minimum past the plane), then per 32 outputs one 64-byte load at the window start (even byte =
// column 2 ox - pl, odd byte = the next) and one 2 bytes later (its even byte = the third column): the
// max of the three in the low byte of each 16-bit lane, kept by vpmovwb.
void max_pool_3x3s2(const uint8_t* x, int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t pt, int64_t pl,
                    bool sg, uint8_t* y) {
    const __m512i minimum = _mm512_set1_epi8(static_cast<char>(sg ? 0x80 : 0x00));
    const int64_t span = 2 * ow + 2;   // columns the windows cover, from -pl
    const int64_t cols = span + 64;    // whole 64-byte loads from any window start
    // Written through row[cols + 62] (whole 64-byte blocks from column -1), read below row[cols].
    const int64_t bytes = cols + 64;
    alignas(64) uint8_t stack_row[1024];
    uint8_t* row = stack_row;
    uint8_t* heap = nullptr;
    if (bytes > 1024) row = heap = static_cast<uint8_t*>(__builtin_malloc(static_cast<size_t>(bytes)));
    if (row == nullptr) __builtin_trap();  // out of memory for a row of at most 2^20 + 130 bytes
    auto vmax = [sg](__m512i a, __m512i b) { return sg ? _mm512_max_epi8(a, b) : _mm512_max_epu8(a, b); };
    for (int64_t p = 0; p < planes; ++p) {
        const uint8_t* plane = x + p * h * w;
        uint8_t* out = y + p * oh * ow;
        for (int64_t oy = 0; oy < oh; ++oy) {
            const int64_t y0 = 2 * oy - pt;
            const uint8_t* rows[3];
            int nr = 0;
            for (int64_t r = y0; r < y0 + 3; ++r)
                if (r >= 0 && r < h) rows[nr++] = plane + r * w;
            // row[1 + c] = max over the rows of column c, for c in [-1, cols - 1); minimum outside the plane.
            for (int64_t c = -1; c < cols - 1; c += 64) {
                const int64_t lo = c < 0 ? 0 : c;                       // first real column of this block
                const int64_t n = w - lo <= 0 ? 0 : (w - lo < 64 ? w - lo : 64);
                const int64_t shift = lo - c;                            // 1 for the first block (the pad byte)
                __m512i v = minimum;
                if (n > 0 && nr > 0) {
                    const __mmask64 m = (n == 64 ? ~0ULL : ((1ULL << n) - 1)) << shift;
                    v = _mm512_mask_loadu_epi8(minimum, m, rows[0] + lo - shift);
                    for (int i = 1; i < nr; ++i) v = vmax(v, _mm512_mask_loadu_epi8(minimum, m, rows[i] + lo - shift));
                }
                _mm512_storeu_si512(row + 1 + c, v);
            }
            uint8_t* o = out + oy * ow;
            const uint8_t* base = row + 1 - pl;  // column 2 ox - pl of output ox
            for (int64_t ox = 0; ox < ow; ox += 32) {
                const __m512i a = _mm512_loadu_si512(base + 2 * ox), b = _mm512_loadu_si512(base + 2 * ox + 2);
                const __m512i m = vmax(vmax(a, _mm512_srli_epi16(a, 8)), b);
                const int64_t n = ow - ox < 32 ? ow - ox : 32;
                const __mmask32 sm = n == 32 ? 0xffffffffu : static_cast<__mmask32>((1u << n) - 1);
                _mm256_mask_storeu_epi8(o + ox, sm, _mm512_cvtepi16_epi8(m));
            }
        }
    }
    if (heap) __builtin_free(heap);
}
}  // namespace

const SimdKernels kSimdAvx512 = {quantize,       dequantize,     requantize,     requantize_each, add, mul,
                                 max_taps,       sum_taps_bytes, sum_taps_int32, sum_planes,      depthwise_channel,
                                 max_pool_2x2,   max_pool_3x3s2};

}  // namespace kernels
}  // namespace qatml
