// CPU feature detection and the kernel path (qatml_isa) each call dispatches to.
//
// The paths are not a total order of CPUs: Zen 4, Ice Lake and Cascade Lake have AVX-512 VNNI but no
// AVX-VNNI, Alder Lake has AVX-VNNI but no AVX-512. So each path names the features its code executes
// (kIsaFeatures, the flags its translation units are compiled with), a path runs only on a CPU that has
// all of them, and a cap picks the best such path at or below it. The CPU is read once; a test-only mask
// (QATML_CPU_FEATURE_MASK, qatml_cpu_set_feature_mask) removes features to emulate smaller CPUs.
#include "internal.h"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define QATML_X86 1
#endif

namespace {

std::atomic<int32_t> g_max_isa{-1};              // programmatic cap; -1 = none
std::atomic<uint32_t> g_feature_mask{~0u};       // programmatic test mask (qatml_cpu_set_feature_mask)

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

// What each path's code executes: the -m flags of its translation units (src/Native/CMakeLists.txt).
constexpr uint32_t kAvx2Features = QATML_CPU_AVX2 | QATML_CPU_FMA;
constexpr uint32_t kIsaFeatures[] = {
    0,                                                 // scalar: baseline x86-64
    kAvx2Features,                                     // gemm_avx2, simd_avx2
    kAvx2Features | QATML_CPU_AVX_VNNI,                // gemm_avxvnni (VEX vpdpbusd) + the AVX2 tables
    kAvx2Features | QATML_CPU_AVX512F | QATML_CPU_AVX512BW | QATML_CPU_AVX512VL | QATML_CPU_AVX512_VNNI,
};

// QATML_CPU_FEATURE_MASK, read once: the feature bits kept ("0x3f", "63"), or "~" and the bits removed
// ("~0x40": no AVX-VNNI, a Zen 4 / Cascade Lake feature set on a Zen 5 or Sapphire Rapids).
struct EnvMask {
    bool valid = true;
    uint32_t mask = ~0u;
    char text[64] = "";
};

const EnvMask& env_mask() {
    static const EnvMask parsed = [] {
        EnvMask m;
        const char* env = std::getenv("QATML_CPU_FEATURE_MASK");
        if (env == nullptr || env[0] == '\0') return m;
        std::strncpy(m.text, env, sizeof m.text - 1);
        const bool invert = env[0] == '~';
        const char* digits = invert ? env + 1 : env;
        char* end = nullptr;
        errno = 0;
        const unsigned long long v = std::strtoull(digits, &end, 0);
        if (digits[0] < '0' || digits[0] > '9' || errno != 0 || end == digits || *end != '\0' || v > 0xffffffffull) {
            m.valid = false;
            m.mask = 0;  // never used: every query reports the error first
            return m;
        }
        m.mask = invert ? ~static_cast<uint32_t>(v) : static_cast<uint32_t>(v);
        return m;
    }();
    return parsed;
}

}  // namespace

namespace qatml {

uint32_t cpu_features() {
    static const uint32_t detected = detect_features();
    return detected & env_mask().mask & g_feature_mask.load(std::memory_order_relaxed);
}

bool isa_supported(qatml_isa isa) { return (cpu_features() & kIsaFeatures[isa]) == kIsaFeatures[isa]; }

qatml_isa best_isa_at_most(qatml_isa cap) {
    const uint32_t f = cpu_features();
    for (int isa = cap; isa > QATML_ISA_SCALAR; --isa)
        if ((f & kIsaFeatures[isa]) == kIsaFeatures[isa]) return static_cast<qatml_isa>(isa);
    return QATML_ISA_SCALAR;
}

qatml_isa detected_isa() { return best_isa_at_most(QATML_ISA_AVX512_VNNI); }

bool check_feature_mask(const char* function) {
    const EnvMask& m = env_mask();
    if (m.valid) return true;
    fail(QATML_INVALID_ARGUMENT,
         "%s: environment variable QATML_CPU_FEATURE_MASK='%s' is not a feature mask (the qatml_cpu_features bits "
         "kept, e.g. 0x3, or ~ and the bits removed, e.g. ~0x40)",
         function, m.text);
    return false;
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
    if (!check_feature_mask(function)) return false;
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
    *out = best_isa_at_most(cap < 0 ? QATML_ISA_AVX512_VNNI : static_cast<qatml_isa>(cap));
    return true;
}

}  // namespace qatml

extern "C" {

QATML_API qatml_status qatml_cpu_features(uint32_t* out_features) {
    QATML_CHECK_NOT_NULL(out_features, "qatml_cpu_features");
    if (!qatml::check_feature_mask("qatml_cpu_features")) return QATML_INVALID_ARGUMENT;
    *out_features = qatml::cpu_features();
    return QATML_OK;
}

QATML_API qatml_status qatml_cpu_detected_isa(int32_t* out_isa) {
    QATML_CHECK_NOT_NULL(out_isa, "qatml_cpu_detected_isa");
    if (!qatml::check_feature_mask("qatml_cpu_detected_isa")) return QATML_INVALID_ARGUMENT;
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

QATML_API qatml_status qatml_isa_required_features(int32_t isa, uint32_t* out_features) {
    QATML_CHECK_NOT_NULL(out_features, "qatml_isa_required_features");
    if (isa < QATML_ISA_SCALAR || isa > QATML_ISA_AVX512_VNNI)
        return qatml::fail(QATML_INVALID_ARGUMENT, "qatml_isa_required_features: isa %d is not a qatml_isa value (0..3)",
                           isa);
    *out_features = kIsaFeatures[isa];
    return QATML_OK;
}

QATML_API qatml_status qatml_cpu_set_feature_mask(uint32_t mask) {
    g_feature_mask.store(mask, std::memory_order_relaxed);
    return QATML_OK;
}

QATML_API qatml_status qatml_cpu_get_feature_mask(uint32_t* out_mask) {
    QATML_CHECK_NOT_NULL(out_mask, "qatml_cpu_get_feature_mask");
    if (!qatml::check_feature_mask("qatml_cpu_get_feature_mask")) return QATML_INVALID_ARGUMENT;
    *out_mask = env_mask().mask & g_feature_mask.load(std::memory_order_relaxed);
    return QATML_OK;
}

QATML_API const char* qatml_isa_name(int32_t isa) {
    return (isa >= 0 && isa < 4) ? kIsaNames[isa] : nullptr;
}

}  // extern "C"
