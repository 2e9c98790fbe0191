// Vectorised elementwise, pooling and depthwise loops for AVX2: 8 int32 lanes, 32 byte lanes.
// Compiled with -mavx2 -mfma (no contraction: -ffp-contract=off); used when the active ISA is AVX2
// or AVX-VNNI. No standard library here (see kernel_common.h).
#include "kernels/simd_kernels.h"
#include "qatml/qatml.h"

#include <immintrin.h>

namespace qatml {
namespace kernels {
namespace {

constexpr int64_t L = 8, LB = 32;
using VI = __m256i;
using VF = __m256;
using VB = __m256i;
constexpr bool kMaskedTails = false;  // no byte masks: tails overlap or go scalar

#define QATML_SIMD inline __attribute__((always_inline))
QATML_SIMD VI i_set1(int32_t v) { return _mm256_set1_epi32(v); }
QATML_SIMD VF f_set1(float v) { return _mm256_set1_ps(v); }
QATML_SIMD VI i_load(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
QATML_SIMD void i_store(int32_t* p, VI v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
QATML_SIMD VF f_load(const float* p) { return _mm256_loadu_ps(p); }
QATML_SIMD void f_store(float* p, VF v) { _mm256_storeu_ps(p, v); }
QATML_SIMD VI i_load_u8(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
QATML_SIMD VI i_load_s8(const uint8_t* p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
// The low byte of each lane (values are within the 8-bit range already), as 8 bytes in lane order.
QATML_SIMD __m128i low_bytes(VI v) {
    const __m256i w = _mm256_packus_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0xff)), _mm256_setzero_si256());
    const __m256i b = _mm256_packus_epi16(w, _mm256_setzero_si256());  // bytes 0-3 of each 128-bit half
    return _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
}
QATML_SIMD void i_store_bytes(uint8_t* p, VI v) { _mm_storel_epi64(reinterpret_cast<__m128i*>(p), low_bytes(v)); }
// Partial vectors (count < lanes): nothing past p + count is read or written.
QATML_SIMD __m256i head_mask(int64_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
QATML_SIMD VI i_load_n(const int32_t* p, int64_t count) { return _mm256_maskload_epi32(p, head_mask(count)); }
QATML_SIMD VF f_load_n(const float* p, int64_t count) { return _mm256_maskload_ps(p, head_mask(count)); }
QATML_SIMD void f_store_n(float* p, VF v, int64_t count) { _mm256_maskstore_ps(p, head_mask(count), v); }
QATML_SIMD VI i_load_bytes_n(const uint8_t* p, int64_t count, bool is_signed) {
    alignas(16) uint8_t tmp[16] = {};
    for (int64_t i = 0; i < count; ++i) tmp[i] = p[i];
    const __m128i b = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
    return is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
}
QATML_SIMD VB b_load_n(const uint8_t* p, int64_t count) {
    alignas(32) uint8_t tmp[32] = {};
    for (int64_t i = 0; i < count; ++i) tmp[i] = p[i];
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp));
}
QATML_SIMD void b_store_n(uint8_t* p, VB v, int64_t count) {
    alignas(32) uint8_t tmp[32];
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), v);
    for (int64_t i = 0; i < count; ++i) p[i] = tmp[i];
}
QATML_SIMD void i_store_partial(int32_t* p, VI v, int64_t count) {
    alignas(32) int32_t tmp[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), v);
    for (int64_t i = 0; i < count; ++i) p[i] = tmp[i];
}
QATML_SIMD void i_store_bytes_partial(uint8_t* p, VI v, int64_t count) {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), low_bytes(v));
    for (int64_t i = 0; i < count; ++i) p[i] = tmp[i];
}
QATML_SIMD VI i_add(VI a, VI b) { return _mm256_add_epi32(a, b); }
QATML_SIMD VI i_sub(VI a, VI b) { return _mm256_sub_epi32(a, b); }
QATML_SIMD VI i_mullo(VI a, VI b) { return _mm256_mullo_epi32(a, b); }
QATML_SIMD VI i_min(VI a, VI b) { return _mm256_min_epi32(a, b); }
QATML_SIMD VI i_max(VI a, VI b) { return _mm256_max_epi32(a, b); }
// 2L consecutive bytes as L pairs: the even bytes and the odd bytes, each widened to int32 (u8 or s8).
QATML_SIMD void i_load_pairs(const uint8_t* p, bool is_signed, VI& even, VI& odd) {
    const VI v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    if (is_signed) {
        even = _mm256_srai_epi32(_mm256_slli_epi32(v, 24), 24);
        odd = _mm256_srai_epi32(_mm256_slli_epi32(v, 16), 24);
    } else {
        even = _mm256_and_si256(v, _mm256_set1_epi32(0xFF));
        odd = _mm256_srli_epi32(v, 8);
    }
}
QATML_SIMD VF i_to_f(VI v) { return _mm256_cvtepi32_ps(v); }
QATML_SIMD VI f_to_i(VF v) { return _mm256_cvtps_epi32(v); }  // MXCSR rounding: nearest even, as nearbyint
QATML_SIMD VF f_add(VF a, VF b) { return _mm256_add_ps(a, b); }
QATML_SIMD VF f_mul(VF a, VF b) { return _mm256_mul_ps(a, b); }
QATML_SIMD VF f_div(VF a, VF b) { return _mm256_div_ps(a, b); }
QATML_SIMD VF f_min(VF a, VF b) { return _mm256_min_ps(a, b); }
QATML_SIMD VF f_max(VF a, VF b) { return _mm256_max_ps(a, b); }
QATML_SIMD VB b_set1(int v) { return _mm256_set1_epi8(static_cast<char>(v)); }
QATML_SIMD VB b_load(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
QATML_SIMD void b_store(uint8_t* p, VB v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
QATML_SIMD VB b_xor(VB a, VB b) { return _mm256_xor_si256(a, b); }
QATML_SIMD VB b_max_u8(VB a, VB b) { return _mm256_max_epu8(a, b); }
QATML_SIMD VB b_max_s8(VB a, VB b) { return _mm256_max_epi8(a, b); }
QATML_SIMD VI b_sad_accumulate(VI acc64, VB v) { return _mm256_add_epi64(acc64, _mm256_sad_epu8(v, _mm256_setzero_si256())); }
QATML_SIMD int64_t i64_hsum(VI acc64) {
    const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(acc64), _mm256_extracti128_si256(acc64, 1));
    return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}
#undef QATML_SIMD

}  // namespace

#include "kernels/simd_body.inc"

namespace {
// As the AVX-512 loop on 32 columns: pair max in 16-bit lanes, even bytes kept by packus + a qword permute.
void max_pool_2x2(const uint8_t* x, int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow, bool sg, uint8_t* y) {
    const int64_t cols = 2 * ow;
    const __m256i low = _mm256_set1_epi16(0x00ff);
    for (int64_t p = 0; p < planes; ++p) {
        const uint8_t* plane = x + p * h * w;
        uint8_t* out = y + p * oh * ow;
        for (int64_t oy = 0; oy < oh; ++oy) {
            const uint8_t* r0 = plane + 2 * oy * w;
            const uint8_t* r1 = r0 + w;
            uint8_t* o = out + oy * ow;
            for (int64_t c = 0; c < cols; c += 32) {
                const int64_t n = cols - c < 32 ? cols - c : 32;
                __m256i a, b;
                if (n == 32) {
                    a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + c));
                    b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r1 + c));
                } else {
                    alignas(32) uint8_t ta[32], tb[32];
                    for (int i = 0; i < 32; ++i) {
                        ta[i] = i < n ? r0[c + i] : 0;
                        tb[i] = i < n ? r1[c + i] : 0;
                    }
                    a = _mm256_load_si256(reinterpret_cast<const __m256i*>(ta));
                    b = _mm256_load_si256(reinterpret_cast<const __m256i*>(tb));
                }
                __m256i v = sg ? _mm256_max_epi8(a, b) : _mm256_max_epu8(a, b);
                const __m256i odd = _mm256_srli_epi16(v, 8);
                v = _mm256_and_si256(sg ? _mm256_max_epi8(v, odd) : _mm256_max_epu8(v, odd), low);
                const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(v, v), 0x08);
                const __m128i r = _mm256_castsi256_si128(packed);
                if (n == 32) {
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + c / 2), r);
                } else {
                    alignas(16) uint8_t t[16];
                    _mm_store_si128(reinterpret_cast<__m128i*>(t), r);
                    for (int64_t i = 0; i < n / 2; ++i) o[c / 2 + i] = t[i];
                }
            }
        }
    }
}
}  // namespace

const SimdKernels kSimdAvx2 = {quantize,       dequantize,     requantize,     requantize_each, add, mul,
                               max_taps,       sum_taps_bytes, sum_taps_int32, sum_planes,      depthwise_channel,
                               max_pool_2x2,   nullptr};

}  // namespace kernels
}  // namespace qatml
