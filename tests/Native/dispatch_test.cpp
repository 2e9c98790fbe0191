// Dispatch by the CPU's feature set: each path names the features it executes, a cap picks the best
// supported path at or below it, and feature masks emulate smaller CPUs (a Zen 4 or Cascade Lake, with
// AVX-512 VNNI but no AVX-VNNI, on a Zen 5 or Sapphire Rapids) in this process and in child processes.
#include "qatml/qatml.h"
#include "isa_paths.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <strings.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

using qatml_test::FeatureMask;
using qatml_test::IsaCap;
using qatml_test::missing_features;

struct Packed {
    qatml_packed_weights* p = nullptr;
    ~Packed() { qatml_packed_weights_destroy(p); }
};

constexpr uint32_t kAvx512 = QATML_CPU_AVX512F | QATML_CPU_AVX512BW | QATML_CPU_AVX512VL | QATML_CPU_AVX512_VNNI |
                             QATML_CPU_AVX512_BF16;

// Feature sets of real CPUs, as masks over this one (a mask only removes).
struct Profile {
    const char* name;
    uint32_t keep;
};
const Profile kProfiles[] = {
    {"this CPU", 0xFFFFFFFFu},
    {"Zen 4 / Ice Lake / Cascade Lake (AVX-512 VNNI, no AVX-VNNI)", ~uint32_t(QATML_CPU_AVX_VNNI)},
    {"Alder Lake (AVX-VNNI, no AVX-512)", ~kAvx512},
    {"Haswell (AVX2 + FMA only)", QATML_CPU_AVX2 | QATML_CPU_FMA},
    {"AVX-512 without FMA (no real CPU: every SIMD path needs FMA)", ~uint32_t(QATML_CPU_FMA)},
    {"no SIMD", 0},
};

// Without a programmatic cap, QATML_MAX_ISA is the cap when the environment sets it (the suite also runs so).
int environment_cap() {
    const char* env = std::getenv("QATML_MAX_ISA");
    if (env == nullptr || env[0] == '\0') return QATML_ISA_AVX512_VNNI;
    for (int isa = QATML_ISA_SCALAR; isa <= QATML_ISA_AVX512_VNNI; ++isa)
        if (strcasecmp(env, qatml_isa_name(isa)) == 0) return isa;
    ADD_FAILURE() << "QATML_MAX_ISA=" << env << " names no path";
    return QATML_ISA_SCALAR;
}

int32_t active() {
    int32_t isa = -1;
    EXPECT_EQ(qatml_cpu_active_isa(&isa), QATML_OK) << qatml_last_error();
    return isa;
}

uint32_t required(int isa) {
    uint32_t f = 0;
    EXPECT_EQ(qatml_isa_required_features(isa, &f), QATML_OK);
    return f;
}

// One GEMM and one convolution at the active path, against the scalar path; returns the packed paths.
void expect_kernels_match_scalar(int32_t* gemm_isa, int32_t* conv_isa, const std::string& what) {
    const int64_t m = 4, k = 45, n = 35;
    std::vector<uint8_t> a(m * k), x(2 * 3 * 9 * 9);
    std::vector<int8_t> b(k * n), w(16 * 3 * 3 * 3);
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i * 41 + 3);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<int8_t>(i * 29 + 1);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<uint8_t>(i * 13 + 5);
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<int8_t>(i * 7 + 2);
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    const float mult = 1.0f / 512;
    ep.out_type = QATML_TYPE_UINT8;
    ep.multipliers = &mult;
    ep.multiplier_count = 1;
    ep.out_zero_point = 9;
    qatml_conv2d_params p{};
    p.batch = 2;
    p.channels = 3;
    p.height = p.width = 9;
    p.stride_h = p.stride_w = 1;
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = 1;
    p.dilation_h = p.dilation_w = 1;
    auto run = [&](std::vector<uint8_t>* gemm_out, std::vector<uint8_t>* conv_out, int32_t* gi, int32_t* ci) {
        Packed gw, cw;
        ASSERT_EQ(qatml_gemm_pack_b(nullptr, b.data(), QATML_TYPE_INT8, k, n, 0, nullptr, &gw.p), QATML_OK) << qatml_last_error();
        ASSERT_EQ(qatml_conv_pack_weights(nullptr, w.data(), QATML_TYPE_INT8, 16, 3, 3, 3, 1, nullptr, &cw.p), QATML_OK)
            << qatml_last_error();
        ASSERT_EQ(qatml_packed_weights_info(gw.p, gi, nullptr, nullptr, nullptr), QATML_OK);
        ASSERT_EQ(qatml_packed_weights_info(cw.p, ci, nullptr, nullptr, nullptr), QATML_OK);
        gemm_out->assign(m * n, 0);
        conv_out->assign(2 * 16 * 9 * 9, 0);
        ASSERT_EQ(qatml_gemm(nullptr, m, a.data(), QATML_TYPE_UINT8, k, 7, gw.p, &ep, gemm_out->data(), n), QATML_OK)
            << qatml_last_error();
        ASSERT_EQ(qatml_conv2d(nullptr, &p, x.data(), QATML_TYPE_UINT8, 100, cw.p, &ep, conv_out->data()), QATML_OK)
            << qatml_last_error();
    };
    std::vector<uint8_t> g, c, g_ref, c_ref;
    run(&g, &c, gemm_isa, conv_isa);
    int32_t ri = -1, rc = -1;
    {
        IsaCap scalar(QATML_ISA_SCALAR);
        run(&g_ref, &c_ref, &ri, &rc);
    }
    EXPECT_EQ(g, g_ref) << what;
    EXPECT_EQ(c, c_ref) << what;
}

}  // namespace

TEST(CpuDispatch, EveryPathNamesTheFeaturesItExecutes) {
    const uint32_t avx2 = QATML_CPU_AVX2 | QATML_CPU_FMA;
    const uint32_t avx512 = QATML_CPU_AVX512F | QATML_CPU_AVX512BW | QATML_CPU_AVX512VL | QATML_CPU_AVX512_VNNI;
    EXPECT_EQ(required(QATML_ISA_SCALAR), 0u);
    EXPECT_EQ(required(QATML_ISA_AVX2), avx2);
    EXPECT_EQ(required(QATML_ISA_AVX_VNNI), avx2 | QATML_CPU_AVX_VNNI);  // VEX vpdpbusd: no AVX-512 needed
    EXPECT_EQ(required(QATML_ISA_AVX512_VNNI), avx2 | avx512);            // EVEX vpdpbusd: no AVX-VNNI needed
    uint32_t f = 0;
    EXPECT_EQ(qatml_isa_required_features(4, &f), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("isa 4"), std::string::npos) << qatml_last_error();
    EXPECT_EQ(qatml_isa_required_features(-1, &f), QATML_INVALID_ARGUMENT);
    EXPECT_EQ(qatml_isa_required_features(QATML_ISA_AVX2, nullptr), QATML_INVALID_ARGUMENT);
    EXPECT_EQ(qatml_cpu_get_feature_mask(nullptr), QATML_INVALID_ARGUMENT);
}

// The Zen 4 crash: a cap of avx_vnni on a CPU with AVX-512 VNNI but no AVX-VNNI selected the
// AVX-VNNI kernel (SIGILL). Under every emulated feature set, every cap selects the best supported path at
// or below it, and the GEMM and convolution packed there match the scalar path.
TEST(CpuDispatch, CapAboveOrBesideTheCpuNeverSelectsAnUnsupportedPath) {
    uint32_t real = 0;
    ASSERT_EQ(qatml_cpu_features(&real), QATML_OK);
    for (const Profile& profile : kProfiles) {
        FeatureMask mask(profile.keep);
        uint32_t have = 0;
        ASSERT_EQ(qatml_cpu_features(&have), QATML_OK);
        EXPECT_EQ(have, real & profile.keep) << profile.name;
        for (int cap = -1; cap <= QATML_ISA_AVX512_VNNI; ++cap) {
            IsaCap capped(cap);
            const int effective = cap < 0 ? environment_cap() : cap;
            int expected = QATML_ISA_SCALAR;
            for (int isa = effective; isa > QATML_ISA_SCALAR && expected == QATML_ISA_SCALAR; --isa)
                if ((have & required(isa)) == required(isa)) expected = isa;
            const std::string what = std::string(profile.name) + ", cap " + (cap < 0 ? "none" : qatml_isa_name(cap));
            const int32_t got = active();
            EXPECT_EQ(got, expected) << what;
            EXPECT_EQ(missing_features(got), 0u) << what;
            EXPECT_LE(got, effective) << what;
            if (profile.keep == ~uint32_t(QATML_CPU_AVX_VNNI) && effective == QATML_ISA_AVX_VNNI)
                EXPECT_EQ(got, missing_features(QATML_ISA_AVX2) == 0 ? QATML_ISA_AVX2 : QATML_ISA_SCALAR) << what;
            int32_t gemm_isa = -1, conv_isa = -1;
            expect_kernels_match_scalar(&gemm_isa, &conv_isa, what);
            EXPECT_EQ(gemm_isa, got) << what;
            EXPECT_EQ(conv_isa, got) << what;
        }
        if (profile.keep != 0xFFFFFFFFu) {
            int32_t detected = -1;
            ASSERT_EQ(qatml_cpu_detected_isa(&detected), QATML_OK);
            EXPECT_EQ(missing_features(detected), 0u) << profile.name;
        }
    }
}

TEST(CpuDispatch, WeightsPackedForAPathTheMaskRemovedAreRefused) {
    const std::vector<int> fast = qatml_test::fast_isas();
    if (fast.empty()) GTEST_SKIP() << "this CPU (or feature mask) has no SIMD path a mask could remove";
    IsaCap cap(fast.back());
    const std::vector<int8_t> b(8 * 16, 3);
    const std::vector<uint8_t> a(2 * 8, 4);
    Packed pw, cw;
    ASSERT_EQ(qatml_gemm_pack_b(nullptr, b.data(), QATML_TYPE_INT8, 8, 16, 0, nullptr, &pw.p), QATML_OK);
    ASSERT_EQ(qatml_conv_pack_weights(nullptr, b.data(), QATML_TYPE_INT8, 16, 8, 1, 1, 1, nullptr, &cw.p), QATML_OK);
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    ep.out_type = QATML_TYPE_INT32;
    std::vector<int32_t> c(2 * 16);
    qatml_conv2d_params p{};
    p.batch = 1;
    p.channels = 8;
    p.height = 1;
    p.width = 2;
    p.stride_h = p.stride_w = p.dilation_h = p.dilation_w = 1;
    FeatureMask none(0);
    EXPECT_EQ(qatml_gemm(nullptr, 2, a.data(), QATML_TYPE_UINT8, 8, 0, pw.p, &ep, c.data(), 16), QATML_UNSUPPORTED);
    EXPECT_NE(std::string(qatml_last_error()).find(qatml_isa_name(fast.back())), std::string::npos) << qatml_last_error();
    EXPECT_EQ(qatml_conv2d(nullptr, &p, a.data(), QATML_TYPE_UINT8, 0, cw.p, &ep, c.data()), QATML_UNSUPPORTED);
    EXPECT_NE(std::string(qatml_last_error()).find("pack them again"), std::string::npos) << qatml_last_error();
}

namespace {

// Runs the probe (cpu_probe.cpp) with `env` added to this environment; returns its output, one query a line.
std::string run_probe(const std::vector<std::string>& env) {
    std::vector<std::string> storage;
    for (char** e = environ; *e; ++e)
        if (std::strncmp(*e, "QATML_CPU_FEATURE_MASK=", 23) != 0 && std::strncmp(*e, "QATML_MAX_ISA=", 14) != 0)
            storage.emplace_back(*e);
    storage.insert(storage.end(), env.begin(), env.end());
    std::vector<char*> envp;
    for (std::string& s : storage) envp.push_back(&s[0]);
    envp.push_back(nullptr);
    int out[2];
    if (pipe(out) != 0) return "pipe failed";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    char path[] = QATML_CPU_PROBE;
    char* argv[] = {path, nullptr};
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, path, &actions, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    std::string text;
    char buf[512];
    ssize_t got = 0;
    while (rc == 0 && (got = read(out[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(got));
    close(out[0]);
    int status = 0;
    if (rc != 0) return "spawn failed";
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) text += "exit status " + std::to_string(status);
    return text;
}

bool has_line(const std::string& text, const std::string& line) { return ("\n" + text).find("\n" + line + "\n") != std::string::npos; }

}  // namespace

// As a user would: only environment variables, in a fresh process.
TEST(CpuDispatch, EnvironmentFeatureMaskEmulatesAZen4AndCapsStayWithinIt) {
    // The CPU's own features, from a child without any mask (this process may run under one).
    const std::string plain = run_probe({});
    unsigned real = 0;
    ASSERT_EQ(std::sscanf(plain.c_str(), "features 0x%x", &real), 1) << plain;
    EXPECT_TRUE(has_line(plain, "mask 0xffffffff")) << plain;
    const bool avx2 = (real & required(QATML_ISA_AVX2)) == required(QATML_ISA_AVX2);
    char line[64];

    const std::string zen4 = run_probe({"QATML_CPU_FEATURE_MASK=~0x40", "QATML_MAX_ISA=avx_vnni"});
    std::snprintf(line, sizeof line, "features 0x%x", real & ~uint32_t(QATML_CPU_AVX_VNNI));
    EXPECT_TRUE(has_line(zen4, line)) << zen4;
    EXPECT_TRUE(has_line(zen4, "mask 0xffffffbf")) << zen4;
    EXPECT_TRUE(has_line(zen4, std::string("active ") + (avx2 ? "avx2" : "scalar"))) << zen4;
    EXPECT_TRUE(has_line(zen4, std::string("gemm ") + (avx2 ? "avx2" : "scalar") + " equal")) << zen4;

    const std::string haswell = run_probe({"QATML_CPU_FEATURE_MASK=0x3"});
    std::snprintf(line, sizeof line, "features 0x%x", real & 0x3u);
    EXPECT_TRUE(has_line(haswell, line)) << haswell;
    EXPECT_TRUE(has_line(haswell, std::string("detected ") + (avx2 ? "avx2" : "scalar"))) << haswell;
    EXPECT_TRUE(has_line(haswell, std::string("gemm ") + (avx2 ? "avx2" : "scalar") + " equal")) << haswell;

    const std::string bad = run_probe({"QATML_CPU_FEATURE_MASK=zen4"});
    const char* const queries[][2] = {{"features", "qatml_cpu_features"}, {"mask", "qatml_cpu_get_feature_mask"},
                                      {"detected", "qatml_cpu_detected_isa"}, {"active", "qatml_cpu_active_isa"},
                                      {"gemm", "qatml_gemm_pack_b"}};
    for (const auto& q : queries)
        EXPECT_TRUE(has_line(bad, std::string(q[0]) + " error " + q[1] +
                                      ": environment variable QATML_CPU_FEATURE_MASK='zen4' is not a feature mask (the "
                                      "qatml_cpu_features bits kept, e.g. 0x3, or ~ and the bits removed, e.g. ~0x40)"))
            << q[0] << ":\n" << bad;
}
