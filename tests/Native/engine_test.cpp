// The INT8 engine: a small network against the kernels called one by one, threads and concurrent
// runs, argument validation, and a fuzz run of the plan loader (random and mutated plans).
#include "qatml/qatml.h"
#include "engine_plans.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using qatml_test::seed;

// The network of engine_plans.h and the same computation through the kernel ABI, op by op.
struct Net : qatml_test::EngineNet {
    std::vector<float> reference(const std::vector<float>& x, int64_t n) const {
        std::vector<uint8_t> q(x.size()), conv(static_cast<size_t>(n * 144)), pool(static_cast<size_t>(n * 36)),
            lutted(pool.size()), sum(pool.size());
        std::vector<int8_t> fc(static_cast<size_t>(n * 5));
        std::vector<float> out(fc.size());
        float s = 0.02f;
        int32_t z = 128;
        EXPECT_EQ(qatml_quantize_linear(nullptr, x.data(), 1, 1, static_cast<int64_t>(x.size()), &s, &z, QATML_TYPE_UINT8, q.data()), QATML_OK);
        qatml_packed_weights* cw = nullptr;
        EXPECT_EQ(qatml_conv_pack_weights(nullptr, conv_w.data(), QATML_TYPE_INT8, 4, 2, 3, 3, 1, nullptr, &cw), QATML_OK);
        std::vector<float> cm;
        for (float ws : conv_s) cm.push_back((0.02f * ws) / 0.05f);
        qatml_epilogue ep;
        std::memset(&ep, 0, sizeof ep);
        ep.out_type = QATML_TYPE_UINT8;
        ep.bias = conv_b.data();
        ep.multipliers = cm.data();
        ep.multiplier_count = 4;
        qatml_conv2d_params p{n, 2, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1};
        EXPECT_EQ(qatml_conv2d(nullptr, &p, q.data(), QATML_TYPE_UINT8, 128, cw, &ep, conv.data()), QATML_OK);
        qatml_packed_weights_destroy(cw);
        qatml_conv2d_params pp{n, 4, 6, 6, 2, 2, 0, 0, 0, 0, 1, 1};
        EXPECT_EQ(qatml_pool2d(nullptr, QATML_POOL_MAX, &pp, 2, 2, 0, conv.data(), QATML_TYPE_UINT8, 0.05f, 0, 0.05f, 0, pool.data()), QATML_OK);
        for (size_t i = 0; i < pool.size(); ++i) lutted[i] = lut[pool[i]];
        EXPECT_EQ(qatml_add(nullptr, lutted.data(), 0.05f, 0, lutted.data(), 0.05f, 0, QATML_TYPE_UINT8, static_cast<int64_t>(sum.size()), 0.09f, 3, sum.data()), QATML_OK);
        qatml_packed_weights* fw = nullptr;
        EXPECT_EQ(qatml_gemm_pack_b(nullptr, fc_w4.data(), QATML_TYPE_INT4, 36, 5, 1, nullptr, &fw), QATML_OK);
        std::vector<float> fm;
        for (float ws : fc_s) fm.push_back((0.09f * ws) / 0.3f);
        ep.out_type = QATML_TYPE_INT8;
        ep.bias = fc_b.data();
        ep.multipliers = fm.data();
        ep.multiplier_count = 5;
        ep.out_zero_point = -5;
        EXPECT_EQ(qatml_gemm(nullptr, n, sum.data(), QATML_TYPE_UINT8, 36, 3, fw, &ep, fc.data(), 5), QATML_OK);
        qatml_packed_weights_destroy(fw);
        float os = 0.3f;
        int32_t oz = -5;
        EXPECT_EQ(qatml_dequantize_linear(nullptr, fc.data(), QATML_TYPE_INT8, 1, 1, static_cast<int64_t>(fc.size()), &os, &oz, out.data()), QATML_OK);
        return out;
    }
};

std::vector<float> random_input(int64_t n, unsigned s) {
    std::mt19937 r(s);
    std::uniform_real_distribution<float> d(-3.0f, 3.0f);
    std::vector<float> x(static_cast<size_t>(n * 72));
    for (float& v : x) v = d(r);
    return x;
}

std::vector<float> run(const qatml_engine* e, const qatml_context* ctx, const std::vector<float>& x, int64_t n) {
    std::vector<float> y(static_cast<size_t>(n * 5)), unused(static_cast<size_t>(n));
    const float* in[] = {x.data()};
    float* out[] = {y.data()};
    EXPECT_EQ(qatml_engine_run(e, ctx, n, in, 1, out, 1), QATML_OK) << qatml_last_error();
    return y;
}

}  // namespace

TEST(Engine, SmallNetworkMatchesTheKernelsOpByOp) {
    Net net;
    std::vector<uint8_t> plan = net.plan();
    qatml_engine* e = nullptr;
    ASSERT_EQ(qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << qatml_last_error();
    qatml_engine_info info{};
    ASSERT_EQ(qatml_engine_get_info(e, &info), QATML_OK);
    EXPECT_EQ(info.op_count, 8);
    EXPECT_GT(info.weight_bytes, 0);
    EXPECT_LT(info.arena_bytes_per_row, info.naive_bytes_per_row);  // reuse by liveness
    int64_t rows = 0;
    ASSERT_EQ(qatml_engine_io_row_size(e, 1, 0, &rows), QATML_OK);
    EXPECT_EQ(rows, 5);
    for (int64_t n : {1, 3, 17}) {
        std::vector<float> x = random_input(n, static_cast<unsigned>(n));
        EXPECT_EQ(run(e, nullptr, x, n), net.reference(x, n)) << "batch " << n;
    }
    // Thread counts give identical results; concurrent runs on one engine too.
    std::vector<float> x = random_input(23, 99);
    std::vector<float> one = run(e, nullptr, x, 23);
    qatml_device cpu{QATML_DEVICE_CPU, 0};
    qatml_context* ctx = nullptr;
    ASSERT_EQ(qatml_context_create(&cpu, 3, &ctx), QATML_OK);
    EXPECT_EQ(run(e, ctx, x, 23), one);
    std::vector<std::thread> threads;
    std::vector<int> same(4, 0);
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            bool ok = true;
            for (int i = 0; i < 20; ++i) ok &= run(e, t % 2 ? ctx : nullptr, x, 23) == one;
            same[static_cast<size_t>(t)] = ok;
        });
    for (auto& t : threads) t.join();
    EXPECT_EQ(same, std::vector<int>(4, 1));
    qatml_context_destroy(ctx);
    ASSERT_EQ(qatml_engine_destroy(e), QATML_OK);
    EXPECT_EQ(qatml_engine_destroy(e), QATML_INVALID_HANDLE);
}

// A convolution whose only reader is a 2x2 stride-2 max pool runs as one fused op, with the same results;
// the full-size convolution output is never allocated.
TEST(Engine, FusesConvolutionAndMaxPool) {
    Net net;
    std::vector<uint8_t> fused_plan = net.plan(false), plain_plan = net.plan(true);
    qatml_engine *fused = nullptr, *plain = nullptr;
    ASSERT_EQ(qatml_engine_create(nullptr, fused_plan.data(), static_cast<int64_t>(fused_plan.size()), &fused), QATML_OK) << qatml_last_error();
    ASSERT_EQ(qatml_engine_create(nullptr, plain_plan.data(), static_cast<int64_t>(plain_plan.size()), &plain), QATML_OK) << qatml_last_error();
    qatml_engine_info fi{}, pi{};
    ASSERT_EQ(qatml_engine_get_info(fused, &fi), QATML_OK);
    ASSERT_EQ(qatml_engine_get_info(plain, &pi), QATML_OK);
    EXPECT_EQ(fi.op_count, 6);  // 7 in the plan
    EXPECT_EQ(pi.op_count, 8);  // the second reader keeps CONV and MAXPOOL apart
    EXPECT_LT(fi.arena_bytes_per_row, pi.arena_bytes_per_row);
    for (int64_t n : {1, 5}) {
        std::vector<float> x = random_input(n, 40u + static_cast<unsigned>(n));
        EXPECT_EQ(run(fused, nullptr, x, n), net.reference(x, n)) << "batch " << n;
    }
    qatml_engine_destroy(fused);
    qatml_engine_destroy(plain);
}

TEST(Engine, ValidatesArguments) {
    Net net;
    std::vector<uint8_t> plan = net.plan();
    qatml_engine* e = nullptr;
    EXPECT_EQ(qatml_engine_create(nullptr, nullptr, 10, &e), QATML_INVALID_ARGUMENT);
    EXPECT_EQ(qatml_engine_create(nullptr, plan.data(), 0, &e), QATML_INVALID_ARGUMENT);
    EXPECT_EQ(qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()) - 1, &e), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("truncated"), std::string::npos) << qatml_last_error();
    std::vector<uint8_t> longer = plan;
    longer.push_back(0);
    EXPECT_EQ(qatml_engine_create(nullptr, longer.data(), static_cast<int64_t>(longer.size()), &e), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("trailing"), std::string::npos) << qatml_last_error();
    std::vector<uint8_t> bad = plan;
    bad[0] = 'X';
    EXPECT_EQ(qatml_engine_create(nullptr, bad.data(), static_cast<int64_t>(bad.size()), &e), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("magic"), std::string::npos);
    EXPECT_EQ(e, nullptr);
    ASSERT_EQ(qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK);
    std::vector<float> x(72), y(5);
    const float* in[] = {x.data()};
    float* out[] = {y.data()};
    float* null_out[] = {nullptr};
    EXPECT_EQ(qatml_engine_run(e, nullptr, 0, in, 1, out, 1), QATML_INVALID_ARGUMENT);
    EXPECT_EQ(qatml_engine_run(e, nullptr, 1, in, 2, out, 1), QATML_INVALID_ARGUMENT);
    EXPECT_EQ(qatml_engine_run(e, nullptr, 1, in, 1, null_out, 1), QATML_INVALID_ARGUMENT);
    EXPECT_EQ(qatml_engine_run(e, nullptr, 1, in, 1, out, 1), QATML_OK);
    int dummy = 0;
    EXPECT_EQ(qatml_engine_run(reinterpret_cast<qatml_engine*>(&dummy), nullptr, 1, in, 1, out, 1), QATML_INVALID_HANDLE);
    qatml_engine_destroy(e);
}

// Found by build/fuzz-native.sh: a GLOBAL_AVGPOOL whose x_scale / y_scale overflowed to infinity was accepted; at
// run time its multiplier was inf, a zero sum times inf is NaN, and NaN converted to int is undefined behaviour.
// The loader now refuses ratios the kernels refuse (above 2^64), naming the op.
TEST(Engine, ScaleRatiosThatWouldOverflowAreRejectedAtLoad) {
    const std::vector<uint8_t> valid = qatml_test::pooling_plan();
    qatml_engine* e = nullptr;
    ASSERT_EQ(qatml_engine_create(nullptr, valid.data(), static_cast<int64_t>(valid.size()), &e), QATML_OK) << qatml_last_error();
    std::vector<float> x(2 * 75, 0.0f), y(2 * 3, -1.0f);
    const float* in[] = {x.data()};
    float* out[] = {y.data()};
    EXPECT_EQ(qatml_engine_run(e, nullptr, 2, in, 1, out, 1), QATML_OK) << qatml_last_error();
    // x = 0 quantizes to -3, pools to 2 (0.07-scale zero point), global pool to 0: every output 0.
    EXPECT_EQ(y, std::vector<float>(6, 0.0f));
    qatml_engine_destroy(e);
    for (float global_y_scale : {1e-37f, 1e-30f}) {  // 0.07 / y_scale: 7e35 (the fuzzer's case) and 7e28
        const std::vector<uint8_t> plan = qatml_test::pooling_plan(global_y_scale);
        e = nullptr;
        EXPECT_EQ(qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_INVALID_ARGUMENT);
        EXPECT_EQ(e, nullptr);
        EXPECT_NE(std::string(qatml_last_error()).find("op 2 (GLOBAL_AVGPOOL): x_scale / y_scale"), std::string::npos) << qatml_last_error();
        EXPECT_NE(std::string(qatml_last_error()).find("exceeds 2^64"), std::string::npos) << qatml_last_error();
    }
}

// Found by build/fuzz-native.sh: an AVGPOOL with pads of 30,000 around a 5x5 input made the pooling kernel
// allocate its padded plane, 60,005^2 bytes (3.6 GB; the fuzzer's case asked 18.8 GB), from a plan of a few
// hundred bytes. Pooling and convolution scratch is now bounded by 2^31 bytes at the ABI and at load.
TEST(Engine, PoolWhosePaddedPlaneExceedsTheScratchLimitIsRejectedAtLoad) {
    const std::vector<uint8_t> plan = qatml_test::pooling_plan(0.05f, 30000);
    qatml_engine* e = nullptr;
    EXPECT_EQ(qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_INVALID_ARGUMENT);
    EXPECT_EQ(e, nullptr);
    EXPECT_NE(std::string(qatml_last_error()).find("op 1 (AVGPOOL): (H + pads) * (W + pads) = 60005 * 60005 overflows or exceeds 2^31"),
              std::string::npos)
        << qatml_last_error();
    const std::vector<uint8_t> fits = qatml_test::pooling_plan(0.05f, 2);  // pads below the kernel, as ONNX Runtime requires
    ASSERT_EQ(qatml_engine_create(nullptr, fits.data(), static_cast<int64_t>(fits.size()), &e), QATML_OK) << qatml_last_error();
    qatml_engine_destroy(e);
}

// Random bytes, a valid plan with random mutations (bit flips, byte overwrites with boundary values,
// truncation, duplicated slices): the loader accepts or rejects with INVALID_ARGUMENT, never crashes;
// an accepted plan runs.
TEST(Engine, FuzzedPlansNeverCrash) {
    Net net;
    // The mutations start from the plan whose CONV and MAXPOOL the loader fuses, the one it does not, and the plan with
    // every op kind of wider models, and the plan with integer inputs.
    const std::vector<uint8_t> plans[4] = {net.plan(true), net.plan(false), qatml_test::wide_ops_plan(), qatml_test::TokenNet().plan()};
    std::mt19937 r(seed());
    const int iterations = std::getenv("QATML_FUZZ_ITERATIONS") ? std::atoi(std::getenv("QATML_FUZZ_ITERATIONS")) : 20000;
    int accepted = 0, rejected = 0;
    const uint8_t boundary[] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x07, 0x08, 0x09, 0x7f, 0x80, 0xfe, 0xff};
    for (int it = 0; it < iterations; ++it) {
        std::vector<uint8_t> m;
        const std::vector<uint8_t>& plan = plans[(it / 8) % 4];
        const int mode = it % 8;
        if (mode == 0) {  // random bytes, sometimes with a valid header
            m.resize(std::uniform_int_distribution<size_t>(0, 600)(r));
            for (auto& b : m) b = static_cast<uint8_t>(r());
            if (it % 16 == 0 && m.size() >= 24) std::memcpy(m.data(), plan.data(), 24);
        } else {
            m = plan;
            const int edits = std::uniform_int_distribution<int>(1, mode < 4 ? 1 : 6)(r);
            for (int k = 0; k < edits && !m.empty(); ++k) {
                const size_t at = std::uniform_int_distribution<size_t>(0, m.size() - 1)(r);
                switch (std::uniform_int_distribution<int>(0, 4)(r)) {
                    case 0: m[at] ^= static_cast<uint8_t>(1u << (r() % 8)); break;
                    case 1: m[at] = boundary[r() % sizeof boundary]; break;
                    case 2: m.resize(at); break;
                    case 3: {
                        const size_t len = std::min<size_t>(m.size() - at, 1 + r() % 16);
                        std::vector<uint8_t> slice(m.begin() + static_cast<std::ptrdiff_t>(at), m.begin() + static_cast<std::ptrdiff_t>(at + len));
                        m.insert(m.begin() + static_cast<std::ptrdiff_t>(r() % (m.size() + 1)), slice.begin(), slice.end());
                        break;
                    }
                    default:
                        if (at + 8 <= m.size()) {  // a 64-bit field set to a boundary value
                            const int64_t values[] = {0, -1, 1, INT64_MAX, INT64_MIN, int64_t(1) << 31, int64_t(1) << 40};
                            std::memcpy(&m[at], &values[r() % 7], 8);
                        }
                }
            }
        }
        qatml_engine* e = nullptr;
        const qatml_status st = qatml_engine_create(nullptr, m.empty() ? nullptr : m.data(), static_cast<int64_t>(m.size()), &e);
        if (st != QATML_OK) {
            ASSERT_TRUE(st == QATML_INVALID_ARGUMENT) << "status " << st << ": " << qatml_last_error();
            ASSERT_EQ(e, nullptr);
            ++rejected;
            continue;
        }
        ++accepted;
        qatml_engine_info info{};
        ASSERT_EQ(qatml_engine_get_info(e, &info), QATML_OK);
        if (info.arena_bytes_per_row <= (1 << 20)) {
            std::vector<std::vector<float>> ins(static_cast<size_t>(info.input_count)), outs(static_cast<size_t>(info.output_count));
            std::vector<const float*> ip;
            std::vector<float*> op;
            bool small = true;
            for (int i = 0; i < info.input_count; ++i) {
                int64_t n = 0;
                qatml_engine_io_row_size(e, 0, i, &n);
                small &= n <= (1 << 20);
                // Integer inputs (8 bytes an element at most) hold index 0, inside every table.
                int32_t type = 0;
                ASSERT_EQ(qatml_engine_io_type(e, 0, i, &type), QATML_OK);
                ins[static_cast<size_t>(i)].assign(static_cast<size_t>(small ? 4 * n : 2), type == QATML_TYPE_FLOAT32 ? 0.5f : 0.0f);
                ip.push_back(ins[static_cast<size_t>(i)].data());
            }
            for (int i = 0; i < info.output_count; ++i) {
                int64_t n = 0;
                qatml_engine_io_row_size(e, 1, i, &n);
                small &= n <= (1 << 20);
                outs[static_cast<size_t>(i)].assign(static_cast<size_t>(small ? 2 * n : 1), 0.0f);
                op.push_back(outs[static_cast<size_t>(i)].data());
            }
            if (small) {
                const qatml_status rs = qatml_engine_run(e, nullptr, 2, ip.data(), info.input_count, op.data(), info.output_count);
                EXPECT_EQ(rs, QATML_OK) << qatml_last_error();
            }
        }
        ASSERT_EQ(qatml_engine_destroy(e), QATML_OK);
    }
    std::printf("fuzz: %d plans, %d accepted, %d rejected\n", iterations, accepted, rejected);
    EXPECT_GT(rejected, iterations / 2);
    EXPECT_GT(accepted, 0);  // some mutations (weights, scales) keep a plan valid
}
