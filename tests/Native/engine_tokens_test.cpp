// Plans with integer inputs (a transformer's token ids, segments and attention mask): GATHER of uint8, int8 and float
// tables by tensor and constant indices, CAST, GEMM over [.., K] vectors with an 8-bit and a float output, FLOAT_GEMM,
// against references written here on every path the CPU has, at several batches and threads; indices outside the
// table fail the run with a message; the loader refuses inconsistent payloads.
#include "engine_plans.h"
#include "isa_paths.h"
#include "qatml/qatml.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace {

using qatml_test::PlanWriter;
using qatml_test::TokenNet;

struct Inputs {
    std::vector<int64_t> ids;
    std::vector<int32_t> segments, mask;
};

Inputs token_inputs(int64_t rows) {
    Inputs in;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t p = 0; p < 5; ++p) {
            in.ids.push_back((r * 5 + p) % 9 - 2);  // -2 and -1 count from the table's end
            in.segments.push_back(static_cast<int32_t>((r + p) % 2));
            in.mask.push_back(p < 5 - r % 3 ? 1 : 0);
        }
    return in;
}

// The outputs of TokenNet written out from the op definitions (qatml_engine.h).
std::vector<std::vector<float>> reference(const TokenNet& net, const Inputs& in, int64_t rows) {
    std::vector<std::vector<float>> out(6);
    auto at = [](int64_t i, int64_t n) { return i < 0 ? i + n : i; };
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t p = 0; p < 5; ++p) {
            const int64_t word = at(in.ids[static_cast<size_t>(r * 5 + p)], 7), seg = in.segments[static_cast<size_t>(r * 5 + p)];
            const int64_t pos = at(net.position_ids[static_cast<size_t>(p)], 6);
            std::vector<int32_t> tok(4);
            for (int64_t e = 0; e < 4; ++e) {
                tok[static_cast<size_t>(e)] = net.words[static_cast<size_t>(word * 4 + e)];
                out[0].push_back(static_cast<float>(tok[static_cast<size_t>(e)] - 128) * 0.02f);
                out[1].push_back(net.segments[static_cast<size_t>(seg * 4 + e)]);
                out[2].push_back(static_cast<float>(int8_t(net.positions[static_cast<size_t>(pos * 4 + e)]) + 3) * 0.03f);
            }
            out[3].push_back(static_cast<float>(in.mask[static_cast<size_t>(r * 5 + p)]));
            std::vector<float> gf(3);
            for (int64_t j = 0; j < 3; ++j) {
                int32_t acc = 0;
                for (int64_t k = 0; k < 4; ++k) acc += (tok[static_cast<size_t>(k)] - 128) * net.gw[static_cast<size_t>(k * 3 + j)];
                const float mult = (0.02f * 0.01f) / 0.05f;
                const float q = std::min(255.0f, std::max(0.0f, std::nearbyint(static_cast<float>(acc) * mult) + 100.0f));
                out[4].push_back((q - 100.0f) * 0.05f);
                gf[static_cast<size_t>(j)] = static_cast<float>(acc) * ((0.02f * 0.01f) / 1.0f);
            }
            for (int64_t j = 0; j < 2; ++j) {
                float y = 0.0f;
                for (int64_t k = 0; k < 3; ++k) y += gf[static_cast<size_t>(k)] * net.fg_w[static_cast<size_t>(k * 2 + j)];
                out[5].push_back(y + net.fg_b[static_cast<size_t>(j)]);
            }
        }
    return out;
}

// Runs the token plan; returns the status and fills `out`.
qatml_status run_tokens(const std::vector<uint8_t>& plan, int64_t rows, const Inputs& in, const qatml_context* ctx,
                        std::vector<std::vector<float>>* out) {
    qatml_engine* e = nullptr;
    EXPECT_EQ(qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << qatml_last_error();
    if (!e) return QATML_INTERNAL;
    const int64_t sizes[] = {20, 20, 20, 5, 15, 10};
    out->assign(6, {});
    std::vector<float*> outs;
    for (int i = 0; i < 6; ++i) {
        (*out)[static_cast<size_t>(i)].resize(static_cast<size_t>(sizes[i] * rows));
        outs.push_back((*out)[static_cast<size_t>(i)].data());
    }
    const float* ins[] = {reinterpret_cast<const float*>(in.ids.data()), reinterpret_cast<const float*>(in.segments.data()),
                          reinterpret_cast<const float*>(in.mask.data())};
    const qatml_status st = qatml_engine_run(e, ctx, rows, ins, 3, outs.data(), 6);
    qatml_engine_destroy(e);
    return st;
}

std::string load_error(const std::vector<uint8_t>& plan) {
    qatml_engine* e = nullptr;
    const qatml_status st = qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &e);
    qatml_engine_destroy(e);
    return st == QATML_OK ? "" : qatml_last_error();
}

}  // namespace

TEST(EngineTokens, GatherCastAndGemmOverVectorsMatchTheReferenceOnEveryPath) {
    const TokenNet net;
    const std::vector<uint8_t> plan = net.plan();
    qatml_device cpu{QATML_DEVICE_CPU, 0};
    qatml_context* ctx = nullptr;
    ASSERT_EQ(qatml_context_create(&cpu, 3, &ctx), QATML_OK);
    for (int isa : qatml_test::every_isa()) {
        qatml_test::IsaCap cap(isa);
        for (int64_t rows : {1, 3, 7}) {
            const Inputs in = token_inputs(rows);
            const auto expected = reference(net, in, rows);
            std::vector<std::vector<float>> out;
            ASSERT_EQ(run_tokens(plan, rows, in, nullptr, &out), QATML_OK) << qatml_last_error();
            for (size_t o = 0; o < 6; ++o) EXPECT_EQ(out[o], expected[o]) << qatml_isa_name(isa) << ", " << rows << " rows, output " << o;
            std::vector<std::vector<float>> threaded;
            ASSERT_EQ(run_tokens(plan, rows, in, ctx, &threaded), QATML_OK) << qatml_last_error();
            EXPECT_EQ(threaded, out) << qatml_isa_name(isa) << ", 3 threads";
        }
    }
    qatml_context_destroy(ctx);
}

TEST(EngineTokens, InputTypesAreReported) {
    const std::vector<uint8_t> plan = TokenNet().plan();
    qatml_engine* e = nullptr;
    ASSERT_EQ(qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << qatml_last_error();
    int32_t types[3] = {0, 0, 0}, out = 0;
    for (int32_t i = 0; i < 3; ++i) EXPECT_EQ(qatml_engine_io_type(e, 0, i, &types[i]), QATML_OK);
    EXPECT_EQ(types[0], QATML_TYPE_INT64);
    EXPECT_EQ(types[1], QATML_TYPE_INT32);
    EXPECT_EQ(qatml_engine_io_type(e, 1, 5, &out), QATML_OK);
    EXPECT_EQ(out, QATML_TYPE_FLOAT32);
    EXPECT_EQ(qatml_engine_io_type(e, 0, 3, &out), QATML_INVALID_ARGUMENT);
    qatml_engine_destroy(e);
}

TEST(EngineTokens, AnIndexOutsideTheTableFailsTheRunWithItsPosition) {
    const std::vector<uint8_t> plan = TokenNet().plan();
    qatml_device cpu{QATML_DEVICE_CPU, 0};
    qatml_context* ctx = nullptr;
    ASSERT_EQ(qatml_context_create(&cpu, 3, &ctx), QATML_OK);
    for (int64_t bad : {int64_t(7), int64_t(-8), int64_t(1) << 40}) {
        Inputs in = token_inputs(3);
        in.ids[2 * 5 + 3] = bad;  // row 2, position 3
        std::vector<std::vector<float>> out;
        for (const qatml_context* c : {static_cast<const qatml_context*>(nullptr), static_cast<const qatml_context*>(ctx)}) {
            EXPECT_EQ(run_tokens(plan, 3, in, c, &out), QATML_INVALID_ARGUMENT);
            const std::string msg = qatml_last_error();
            EXPECT_NE(msg.find("(GATHER): index " + std::to_string(bad) + " at row 2, position 3"), std::string::npos) << msg;
            EXPECT_NE(msg.find("-7..6"), std::string::npos) << msg;
        }
    }
    // An int32 segment outside its two rows, after the CAST to int64.
    Inputs in = token_inputs(2);
    in.segments[4] = 2;
    std::vector<std::vector<float>> out;
    EXPECT_EQ(run_tokens(plan, 2, in, nullptr, &out), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("index 2 at row 0, position 4"), std::string::npos) << qatml_last_error();
    qatml_context_destroy(ctx);
}

TEST(EngineTokens, LoaderRefusesInconsistentIntegerOps) {
    auto plan = [](auto build) {
        PlanWriter w;
        build(w);
        return w.bytes();
    };
    const std::vector<uint8_t> table(12, 7);
    EXPECT_NE(load_error(plan([&](PlanWriter& w) {
                  const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {2}), y = w.tensor(QATML_TYPE_FLOAT32, {2, 3});
                  w.inputs = {x};
                  w.outputs = {y};
                  qatml_test::gather_op(w, x, y, 1, 3, qatml_test::bytes_of(std::vector<float>(3, 1.0f)));
              })).find("indices must be int32 or int64"),
              std::string::npos);
    EXPECT_NE(load_error(plan([&](PlanWriter& w) {
                  const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {2}), g = w.tensor(QATML_TYPE_UINT8, {2, 3}), y = w.tensor(QATML_TYPE_FLOAT32, {2, 3});
                  w.inputs = {x};
                  w.outputs = {y};
                  qatml_test::gather_op(w, 0, g, 4, 3, table, {0, 4});
                  qatml_test::quantize_op(w, g, y, 1.0f, 0, true);
              })).find("constant index 1 = 4 is outside -4..3"),
              std::string::npos);
    EXPECT_NE(load_error(plan([&](PlanWriter& w) {
                  const uint32_t x = w.tensor(QATML_TYPE_INT64, {2}), g = w.tensor(QATML_TYPE_UINT8, {2, 3}), y = w.tensor(QATML_TYPE_FLOAT32, {2, 3});
                  w.inputs = {x};
                  w.outputs = {y};
                  qatml_test::gather_op(w, x, g, 4, 3, std::vector<uint8_t>(11, 7));  // one byte short
                  qatml_test::quantize_op(w, g, y, 1.0f, 0, true);
              })).find("table needs 12 bytes"),
              std::string::npos);
    EXPECT_NE(load_error(plan([&](PlanWriter& w) {
                  const uint32_t x = w.tensor(QATML_TYPE_INT64, {2}), g = w.tensor(QATML_TYPE_UINT8, {2, 2}), y = w.tensor(QATML_TYPE_FLOAT32, {2, 2});
                  w.inputs = {x};
                  w.outputs = {y};
                  qatml_test::gather_op(w, x, g, 4, 3, table);  // 2 x 3 elements for a [2, 2] output
                  qatml_test::quantize_op(w, g, y, 1.0f, 0, true);
              })).find("do not make the output's 4"),
              std::string::npos);
    EXPECT_NE(load_error(plan([&](PlanWriter& w) {
                  // COPY takes any one type; integer tensors stay with GATHER and CAST.
                  const uint32_t x = w.tensor(QATML_TYPE_INT64, {2}), c = w.tensor(QATML_TYPE_INT64, {2}), y = w.tensor(QATML_TYPE_FLOAT32, {2});
                  w.inputs = {x};
                  w.outputs = {y};
                  qatml_test::copy_op(w, x, c, {2}, 0, {1});
                  qatml_test::cast_op(w, c, y);
              })).find("reads the int64 tensor 0 (only GATHER and CAST read integer tensors)"),
              std::string::npos);
    EXPECT_NE(load_error(plan([&](PlanWriter& w) {
                  const uint32_t x = w.tensor(QATML_TYPE_INT64, {2}), c = w.tensor(QATML_TYPE_INT64, {2}), y = w.tensor(QATML_TYPE_FLOAT32, {2});
                  w.inputs = {x};
                  w.outputs = {y};
                  qatml_test::cast_op(w, x, c);
                  qatml_test::cast_op(w, c, y);
              })).find("another type than the input"),
              std::string::npos);
    EXPECT_NE(load_error(plan([&](PlanWriter& w) {
                  const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {3, 4}), y = w.tensor(QATML_TYPE_FLOAT32, {4, 2});
                  w.inputs = {x};
                  w.outputs = {y};
                  qatml_test::float_gemm_op(w, x, y, 4, 2, std::vector<float>(8, 0.5f), {});
              })).find("the same vectors of N = 2"),
              std::string::npos);
    EXPECT_NE(load_error(plan([&](PlanWriter& w) {
                  const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {3, 4}), q = w.tensor(QATML_TYPE_UINT8, {3, 4}), y = w.tensor(QATML_TYPE_FLOAT32, {3, 2});
                  w.inputs = {x};
                  w.outputs = {y};
                  qatml_test::quantize_op(w, x, q, 0.1f, 0);
                  qatml_test::gemm_op(w, q, y, 0.1f, 0, 0.5f, 0, 4, 2, 0.01f, std::vector<int8_t>(8, 1));  // float output quantized 0.5
              })).find("a float32 output has quantization 1, 0"),
              std::string::npos);
}
