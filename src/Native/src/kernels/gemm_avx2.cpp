// GEMM driver for AVX2 without VNNI. vpmaddubsw saturates its int16 pair sums (2 * 255 * 128 >
// 32767), so the u8 operand is split into its low 7 bits and its top bit: (a & 0x7f) * b pair sums
// stay within +-32512 and (a >> 7) * b within +-256, both exact; the top-bit half is weighted by 128
// in vpmaddwd. Bit-exact for the whole s8 weight range. Compiled with -mavx2 -mfma.
#include "kernels/kernel_common.h"
#include "qatml/qatml.h"

#include <immintrin.h>

namespace qatml {
namespace kernels {
namespace {
__attribute__((always_inline)) inline __m256i dot4(__m256i acc, __m256i ulo, __m256i uhi, __m256i s) {
    const __m256i ones = _mm256_set1_epi16(1), w128 = _mm256_set1_epi16(128);
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ulo, s), ones));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(uhi, s), w128));
}
__attribute__((always_inline)) inline __m256i lo7(__m256i u) { return _mm256_and_si256(u, _mm256_set1_epi8(0x7f)); }
__attribute__((always_inline)) inline __m256i hi1(__m256i u) {
    return _mm256_and_si256(_mm256_srli_epi16(u, 7), _mm256_set1_epi8(1));
}
}  // namespace

#define QATML_YMM_PREP_VEC(BS, v0, v1)                                   \
    __m256i v0l, v0h, v1l, v1h;                                          \
    if (BS) {                                                            \
        v0l = lo7(v0); v0h = hi1(v0); v1l = lo7(v1); v1h = hi1(v1);      \
    } else {                                                             \
        v0l = v0h = v1l = v1h = _mm256_setzero_si256();                  \
    }
#define QATML_YMM_DP_VU(acc, idx, b) (acc) = (idx) ? dot4((acc), v1l, v1h, (b)) : dot4((acc), v0l, v0h, (b))
#define QATML_YMM_DP_BU(accr, b, v0, v1)                  \
    do {                                                  \
        const __m256i bl = lo7(b), bh = hi1(b);           \
        (accr)[0] = dot4((accr)[0], bl, bh, (v0));        \
        (accr)[1] = dot4((accr)[1], bl, bh, (v1));        \
    } while (0)

#include "kernels/gemm_ymm.inc"

void gemm_avx2(const GemmCall& call) {
    if (call.bc_signed) run<true>(call); else run<false>(call);
}

}  // namespace kernels
}  // namespace qatml
