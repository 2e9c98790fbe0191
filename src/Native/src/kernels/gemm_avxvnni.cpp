// GEMM driver for AVX-VNNI (VEX vpdpbusd on ymm). Compiled with -mavx2 -mfma -mavxvnni.
#include "kernels/kernel_common.h"
#include "qatml/qatml.h"

#include <immintrin.h>

namespace qatml {
namespace kernels {

#define QATML_YMM_PREP_VEC(BS, v0, v1)
// vector operand u8 (v0/v1 selected by index), broadcast s8
#define QATML_YMM_DP_VU(acc, idx, b) (acc) = _mm256_dpbusd_avx_epi32((acc), (idx) ? v1 : v0, (b))
// broadcast u8, vector s8
#define QATML_YMM_DP_BU(accr, b, v0, v1)                     \
    do {                                                     \
        (accr)[0] = _mm256_dpbusd_avx_epi32((accr)[0], (b), (v0)); \
        (accr)[1] = _mm256_dpbusd_avx_epi32((accr)[1], (b), (v1)); \
    } while (0)

#include "kernels/gemm_ymm.inc"

void gemm_avxvnni(const GemmCall& call) {
    if (call.bc_signed) run<true>(call); else run<false>(call);
}

}  // namespace kernels
}  // namespace qatml
