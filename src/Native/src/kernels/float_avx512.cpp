// Float kernels for AVX-512F (16 lanes, tile 12 rows x 32 columns: 24 accumulators). Compiled with the AVX-512
// flags; used only on the avx512_vnni path. No standard library here (see kernel_common.h).
#include "kernels/float_kernels.h"

#include <immintrin.h>

namespace qatml {
namespace kernels {
namespace {

constexpr int64_t L = 16;
constexpr int MR = 12;
using VF = __m512;

#define QATML_FLOAT inline __attribute__((always_inline))
QATML_FLOAT __mmask16 head_mask(int64_t count) { return static_cast<__mmask16>((1u << count) - 1u); }
QATML_FLOAT VF f_zero() { return _mm512_setzero_ps(); }
QATML_FLOAT VF f_set1(float v) { return _mm512_set1_ps(v); }
QATML_FLOAT VF f_load(const float* p) { return _mm512_loadu_ps(p); }
QATML_FLOAT VF f_load_n(const float* p, int64_t count) { return _mm512_maskz_loadu_ps(head_mask(count), p); }
QATML_FLOAT void f_store(float* p, VF v) { _mm512_storeu_ps(p, v); }
QATML_FLOAT void f_store_n(float* p, VF v, int64_t count) { _mm512_mask_storeu_ps(p, head_mask(count), v); }
QATML_FLOAT VF f_fma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
QATML_FLOAT VF f_add(VF a, VF b) { return _mm512_add_ps(a, b); }
QATML_FLOAT VF f_even(const float* p) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), even, _mm512_loadu_ps(p + 16));
}

#include "kernels/float_body.inc"

}  // namespace

const FloatKernels kFloatAvx512 = {MR, static_cast<int>(NR), gemm, pack_panel, depthwise, take_even};

}  // namespace kernels
}  // namespace qatml
