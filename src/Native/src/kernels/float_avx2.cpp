// Float kernels for AVX2 + FMA (8 lanes, tile 6 rows x 16 columns: 12 accumulators). Compiled with -mavx2 -mfma;
// used on the avx2 and avx_vnni paths. No standard library here (see kernel_common.h).
#include "kernels/float_kernels.h"

#include <immintrin.h>

namespace qatml {
namespace kernels {
namespace {

constexpr int64_t L = 8;
constexpr int MR = 6;
using VF = __m256;

#define QATML_FLOAT inline __attribute__((always_inline))
QATML_FLOAT __m256i head_mask(int64_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
QATML_FLOAT VF f_zero() { return _mm256_setzero_ps(); }
QATML_FLOAT VF f_set1(float v) { return _mm256_set1_ps(v); }
QATML_FLOAT VF f_load(const float* p) { return _mm256_loadu_ps(p); }
QATML_FLOAT VF f_load_n(const float* p, int64_t count) { return _mm256_maskload_ps(p, head_mask(count)); }
QATML_FLOAT void f_store(float* p, VF v) { _mm256_storeu_ps(p, v); }
QATML_FLOAT void f_store_n(float* p, VF v, int64_t count) { _mm256_maskstore_ps(p, head_mask(count), v); }
QATML_FLOAT VF f_fma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
QATML_FLOAT VF f_add(VF a, VF b) { return _mm256_add_ps(a, b); }
// Within 128-bit lanes [a0 a2 b0 b2 | a4 a6 b4 b6], then the 64-bit quarters in the order 0, 2, 1, 3.
QATML_FLOAT VF f_even(const float* p) {
    const VF pairs = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(pairs), _MM_SHUFFLE(3, 1, 2, 0)));
}

#include "kernels/float_body.inc"

}  // namespace

const FloatKernels kFloatAvx2 = {MR, static_cast<int>(NR), gemm, pack_panel, depthwise, take_even};

}  // namespace kernels
}  // namespace qatml
