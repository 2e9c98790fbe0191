// The ABI skeleton: versions, last-error, CPU dispatch and its override, handle validation.
#include "qatml/qatml.h"
#include "isa_paths.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <thread>

namespace {

struct IsaEnvGuard {  // restores QATML_MAX_ISA and the programmatic cap after each test
    std::string saved;
    bool had;
    IsaEnvGuard() {
        const char* v = std::getenv("QATML_MAX_ISA");
        had = v != nullptr;
        if (had) saved = v;
    }
    ~IsaEnvGuard() {
        if (had) setenv("QATML_MAX_ISA", saved.c_str(), 1); else unsetenv("QATML_MAX_ISA");
        qatml_cpu_set_max_isa(-1);
    }
};

int32_t active() {
    int32_t isa = -1;
    EXPECT_EQ(qatml_cpu_active_isa(&isa), QATML_OK) << qatml_last_error();
    return isa;
}

}  // namespace

TEST(Abi, VersionsAreReported) {
    EXPECT_EQ(qatml_abi_version(), QATML_ABI_VERSION);
    EXPECT_STRNE(qatml_version_string(), "");
}

TEST(Cpu, DetectedIsaIsTheBestPathTheFeaturesSupport) {
    uint32_t f = 0;
    int32_t isa = -1;
    ASSERT_EQ(qatml_cpu_features(&f), QATML_OK);
    ASSERT_EQ(qatml_cpu_detected_isa(&isa), QATML_OK);
    EXPECT_EQ(qatml_test::missing_features(isa), 0u) << qatml_isa_name(isa);
    for (int better = isa + 1; better <= QATML_ISA_AVX512_VNNI; ++better)
        EXPECT_NE(qatml_test::missing_features(better), 0u) << qatml_isa_name(better);
    if (isa == QATML_ISA_AVX512_VNNI) EXPECT_TRUE(f & QATML_CPU_AVX512_VNNI);
    if (isa == QATML_ISA_AVX_VNNI) EXPECT_TRUE(f & QATML_CPU_AVX_VNNI);
    if (isa >= QATML_ISA_AVX2) EXPECT_TRUE(f & QATML_CPU_AVX2);
    EXPECT_NE(qatml_isa_name(isa), nullptr);
}

TEST(Cpu, EnvironmentOverrideLowersTheActiveIsa) {
    IsaEnvGuard guard;
    int32_t detected = -1;
    ASSERT_EQ(qatml_cpu_detected_isa(&detected), QATML_OK);
    unsetenv("QATML_MAX_ISA");
    EXPECT_EQ(active(), detected);
    setenv("QATML_MAX_ISA", "scalar", 1);
    EXPECT_EQ(active(), QATML_ISA_SCALAR);
    setenv("QATML_MAX_ISA", "AVX2", 1);  // case-insensitive
    EXPECT_EQ(active(), qatml_test::missing_features(QATML_ISA_AVX2) == 0 ? QATML_ISA_AVX2 : QATML_ISA_SCALAR);
    setenv("QATML_MAX_ISA", "avx512_vnni", 1);  // cannot raise above the CPU
    EXPECT_EQ(active(), detected);
}

TEST(Cpu, UnknownEnvironmentValueIsAClearError) {
    IsaEnvGuard guard;
    setenv("QATML_MAX_ISA", "sse9", 1);
    int32_t isa = -1;
    EXPECT_EQ(qatml_cpu_active_isa(&isa), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("QATML_MAX_ISA='sse9'"), std::string::npos) << qatml_last_error();
}

TEST(Cpu, ProgrammaticCapTakesPrecedenceOverEnvironment) {
    IsaEnvGuard guard;
    setenv("QATML_MAX_ISA", "avx512_vnni", 1);
    ASSERT_EQ(qatml_cpu_set_max_isa(QATML_ISA_SCALAR), QATML_OK);
    EXPECT_EQ(active(), QATML_ISA_SCALAR);
    ASSERT_EQ(qatml_cpu_set_max_isa(-1), QATML_OK);
    EXPECT_NE(qatml_cpu_set_max_isa(7), QATML_OK);
    EXPECT_NE(std::string(qatml_last_error()).find("isa 7"), std::string::npos);
}

TEST(Errors, NullArgumentsAreRejectedWithAMessage) {
    EXPECT_EQ(qatml_cpu_features(nullptr), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("out_features"), std::string::npos) << qatml_last_error();
    qatml_device cpu{QATML_DEVICE_CPU, 0};
    EXPECT_EQ(qatml_context_create(&cpu, 1, nullptr), QATML_INVALID_ARGUMENT);
    EXPECT_EQ(qatml_context_create(nullptr, 1, nullptr), QATML_INVALID_ARGUMENT);
}

TEST(Errors, LastErrorIsThreadLocal) {
    EXPECT_EQ(qatml_cpu_features(nullptr), QATML_INVALID_ARGUMENT);
    std::string other;
    std::thread([&] { other = qatml_last_error(); }).join();
    EXPECT_EQ(other, "");
    EXPECT_STRNE(qatml_last_error(), "");
    qatml_clear_error();
    EXPECT_STREQ(qatml_last_error(), "");
}

TEST(Context, CpuContextLifecycle) {
    qatml_device cpu{QATML_DEVICE_CPU, 0};
    qatml_context* ctx = nullptr;
    ASSERT_EQ(qatml_context_create(&cpu, 0, &ctx), QATML_OK) << qatml_last_error();
    qatml_device got{};
    int32_t threads = 0;
    EXPECT_EQ(qatml_context_get_device(ctx, &got), QATML_OK);
    EXPECT_EQ(got.kind, QATML_DEVICE_CPU);
    EXPECT_EQ(qatml_context_get_num_threads(ctx, &threads), QATML_OK);
    EXPECT_EQ(threads, 1);
    EXPECT_EQ(qatml_context_destroy(ctx), QATML_OK);
    // The handle is now stale: every use is detected, none dereferences it.
    EXPECT_EQ(qatml_context_get_num_threads(ctx, &threads), QATML_INVALID_HANDLE);
    EXPECT_EQ(qatml_context_destroy(ctx), QATML_INVALID_HANDLE);
    EXPECT_NE(std::string(qatml_last_error()).find("not a live context"), std::string::npos);
}

TEST(Context, ForeignPointerIsAnInvalidHandle) {
    int not_a_context = 42;
    int32_t threads = 0;
    EXPECT_EQ(qatml_context_get_num_threads(reinterpret_cast<qatml_context*>(&not_a_context), &threads),
              QATML_INVALID_HANDLE);
    EXPECT_EQ(qatml_context_get_num_threads(nullptr, &threads), QATML_INVALID_HANDLE);
}

TEST(Context, BadArgumentsAndMissingDevices) {
    qatml_context* ctx = nullptr;
    qatml_device cpu{QATML_DEVICE_CPU, 0};
    EXPECT_EQ(qatml_context_create(&cpu, -1, &ctx), QATML_INVALID_ARGUMENT);
    qatml_device bogus{99, 0};
    EXPECT_EQ(qatml_context_create(&bogus, 1, &ctx), QATML_INVALID_ARGUMENT);
    qatml_device cpu1{QATML_DEVICE_CPU, 1};
    EXPECT_EQ(qatml_context_create(&cpu1, 1, &ctx), QATML_DEVICE_UNAVAILABLE);
    int32_t gpus = -1;
    ASSERT_EQ(qatml_cuda_device_count(&gpus), QATML_OK);
    qatml_device cuda{QATML_DEVICE_CUDA, gpus};  // one past the last GPU never exists
    EXPECT_EQ(qatml_context_create(&cuda, 1, &ctx), QATML_DEVICE_UNAVAILABLE);
    EXPECT_NE(std::string(qatml_last_error()).find("CUDA"), std::string::npos) << qatml_last_error();
    EXPECT_EQ(ctx, nullptr);
}
