// The kernel paths a test can run on this CPU: those whose required features the CPU has (after any
// test feature mask, e.g. QATML_CPU_FEATURE_MASK=~0x40 for a Zen 4). Skipped paths are printed with
// the features they lack, once per test.
#pragma once

#include "qatml/qatml.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>
#include <vector>

namespace qatml_test {

inline std::string feature_names(uint32_t bits) {
    static const char* const names[] = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16"};
    std::string s;
    for (int i = 0; i < 8; ++i)
        if (bits & (1u << i)) s += (s.empty() ? "" : " ") + std::string(names[i]);
    return s.empty() ? "none" : s;
}

// Features path `isa` needs that this CPU lacks (0: it runs here).
inline uint32_t missing_features(int isa) {
    uint32_t have = 0, need = 0;
    EXPECT_EQ(qatml_cpu_features(&have), QATML_OK) << qatml_last_error();
    EXPECT_EQ(qatml_isa_required_features(isa, &need), QATML_OK) << qatml_last_error();
    return need & ~have;
}

// Every SIMD path this CPU supports, lowest first.
inline std::vector<int> fast_isas() {
    static std::set<std::string> reported;
    const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
    const std::string test = t ? std::string(t->test_suite_name()) + "." + t->name() : "";
    const bool report = reported.insert(test).second;
    std::vector<int> v;
    for (int isa = QATML_ISA_AVX2; isa <= QATML_ISA_AVX512_VNNI; ++isa) {
        const uint32_t missing = missing_features(isa);
        if (missing == 0)
            v.push_back(isa);
        else if (report)
            // Not gtest's "[  SKIPPED ]" marker: CTest would report the whole test as skipped.
            std::printf("[ not run  ] path %s in %s: this CPU lacks %s\n", qatml_isa_name(isa), test.c_str(),
                        feature_names(missing).c_str());
    }
    return v;
}

// The scalar path, then every SIMD path this CPU supports.
inline std::vector<int> every_isa() {
    std::vector<int> v = fast_isas();
    v.insert(v.begin(), QATML_ISA_SCALAR);
    return v;
}

// Sets the programmatic cap for one scope.
struct IsaCap {
    explicit IsaCap(int isa) { EXPECT_EQ(qatml_cpu_set_max_isa(isa), QATML_OK); }
    ~IsaCap() { qatml_cpu_set_max_isa(-1); }
};

// Sets the test feature mask for one scope (bits kept).
struct FeatureMask {
    explicit FeatureMask(uint32_t keep) { EXPECT_EQ(qatml_cpu_set_feature_mask(keep), QATML_OK); }
    ~FeatureMask() { qatml_cpu_set_feature_mask(0xFFFFFFFFu); }
};

}  // namespace qatml_test
