// CPU feature detection and the ISA the kernels dispatch to.
#include "internal.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define QATML_X86 1
#endif

namespace {

std::atomic<int32_t> g_max_isa{-1};  // programmatic cap; -1 = none

#if QATML_X86
uint64_t read_xcr0() {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<uint64_t>(edx) << 32) | eax;
}

uint32_t detect_features() {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    const bool osxsave = (ecx & bit_OSXSAVE) != 0;
    const bool fma = (ecx & bit_FMA) != 0;
    if (!osxsave) return 0;
    const uint64_t xcr0 = read_xcr0();
    const bool ymm_enabled = (xcr0 & 0x6) == 0x6;          // SSE + AVX state
    const bool zmm_enabled = (xcr0 & 0xE6) == 0xE6;        // + opmask, ZMM_Hi256, Hi16_ZMM
    if (!ymm_enabled) return 0;

    uint32_t f = 0;
    unsigned int max_leaf = __get_cpuid_max(0, nullptr);
    if (max_leaf < 7) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const unsigned int ebx7 = ebx, ecx7 = ecx;
    if (ebx7 & bit_AVX2) f |= QATML_CPU_AVX2;
    if (fma) f |= QATML_CPU_FMA;
    if (zmm_enabled) {
        if (ebx7 & bit_AVX512F) f |= QATML_CPU_AVX512F;
        if (ebx7 & bit_AVX512BW) f |= QATML_CPU_AVX512BW;
        if (ebx7 & bit_AVX512VL) f |= QATML_CPU_AVX512VL;
        if (ecx7 & (1u << 11)) f |= QATML_CPU_AVX512_VNNI;
    }
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    if (eax & (1u << 4)) f |= QATML_CPU_AVX_VNNI;
    if (zmm_enabled && (eax & (1u << 5))) f |= QATML_CPU_AVX512_BF16;
    return f;
}
#else
uint32_t detect_features() { return 0; }
#endif

const char* const kIsaNames[] = {"scalar", "avx2", "avx_vnni", "avx512_vnni"};

}  // namespace

namespace qatml {

uint32_t cpu_features() {
    static const uint32_t features = detect_features();
    return features;
}

qatml_isa detected_isa() {
    const uint32_t f = cpu_features();
    const uint32_t avx512 = QATML_CPU_AVX512F | QATML_CPU_AVX512BW | QATML_CPU_AVX512VL | QATML_CPU_AVX512_VNNI;
    if ((f & avx512) == avx512) return QATML_ISA_AVX512_VNNI;
    if ((f & (QATML_CPU_AVX2 | QATML_CPU_AVX_VNNI)) == (QATML_CPU_AVX2 | QATML_CPU_AVX_VNNI)) return QATML_ISA_AVX_VNNI;
    if ((f & (QATML_CPU_AVX2 | QATML_CPU_FMA)) == (QATML_CPU_AVX2 | QATML_CPU_FMA)) return QATML_ISA_AVX2;
    return QATML_ISA_SCALAR;
}

bool parse_isa_name(const char* name, qatml_isa* out) {
    for (int i = 0; i < 4; ++i) {
        if (strcasecmp(name, kIsaNames[i]) == 0) {
            *out = static_cast<qatml_isa>(i);
            return true;
        }
    }
    return false;
}

bool active_isa(qatml_isa* out, const char* function) {
    qatml_isa isa = detected_isa();
    int32_t cap = g_max_isa.load(std::memory_order_relaxed);
    if (cap < 0) {
        const char* env = std::getenv("QATML_MAX_ISA");
        if (env != nullptr && env[0] != '\0') {
            qatml_isa parsed;
            if (!parse_isa_name(env, &parsed)) {
                fail(QATML_INVALID_ARGUMENT,
                     "%s: environment variable QATML_MAX_ISA='%s' is not one of scalar, avx2, avx_vnni, avx512_vnni",
                     function, env);
                return false;
            }
            cap = parsed;
        }
    }
    if (cap >= 0 && cap < isa) isa = static_cast<qatml_isa>(cap);
    *out = isa;
    return true;
}

}  // namespace qatml

extern "C" {

QATML_API qatml_status qatml_cpu_features(uint32_t* out_features) {
    QATML_CHECK_NOT_NULL(out_features, "qatml_cpu_features");
    *out_features = qatml::cpu_features();
    return QATML_OK;
}

QATML_API qatml_status qatml_cpu_detected_isa(int32_t* out_isa) {
    QATML_CHECK_NOT_NULL(out_isa, "qatml_cpu_detected_isa");
    *out_isa = qatml::detected_isa();
    return QATML_OK;
}

QATML_API qatml_status qatml_cpu_active_isa(int32_t* out_isa) {
    QATML_CHECK_NOT_NULL(out_isa, "qatml_cpu_active_isa");
    qatml_isa isa;
    if (!qatml::active_isa(&isa, "qatml_cpu_active_isa")) return QATML_INVALID_ARGUMENT;
    *out_isa = isa;
    return QATML_OK;
}

QATML_API qatml_status qatml_cpu_set_max_isa(int32_t isa) {
    if (isa < -1 || isa > QATML_ISA_AVX512_VNNI)
        return qatml::fail(QATML_INVALID_ARGUMENT,
                           "qatml_cpu_set_max_isa: isa %d is not -1 (no cap) or a qatml_isa value (0..3)", isa);
    g_max_isa.store(isa, std::memory_order_relaxed);
    return QATML_OK;
}

QATML_API const char* qatml_isa_name(int32_t isa) {
    return (isa >= 0 && isa < 4) ? kIsaNames[isa] : nullptr;
}

}  // extern "C"
