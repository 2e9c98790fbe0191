// The engine on a GPU against the CPU engine, bit for bit: the plan fixtures of real models (FmnistNet, and
// ResNet18 where QATML_PLAN_FIXTURES names a folder holding them), and a plan that takes every path of the device
// runner (GPU; skipped without one).
#include "cuda_gpu_util.h"
#include "igemm_cases.h"
#include "plan_fixtures.h"
#include "token_op_cases.h"
#include "wide_op_cases.h"
#include "qatml/qatml.h"

#include <cmath>
#include <memory>
#include <thread>

namespace {

using qatml_test::PlanFixture;

struct Contexts {
    qatml_context* gpu = nullptr;
    Contexts() {
        qatml_device d{QATML_DEVICE_CUDA, 0};
        EXPECT_EQ(qatml_context_create(&d, 0, &gpu), QATML_OK) << qatml_last_error();
    }
    ~Contexts() { qatml_context_destroy(gpu); }
};

// Runs `rows` rows of every input through `e` on `ctx` (NULL: the CPU); outputs concatenated per output.
std::vector<std::vector<float>> run(const qatml_engine* e, const qatml_context* ctx, const std::vector<std::vector<float>>& inputs,
                                    const std::vector<int64_t>& out_sizes, int64_t rows) {
    std::vector<const float*> in;
    for (const auto& v : inputs) in.push_back(v.data());
    std::vector<std::vector<float>> out;
    std::vector<float*> outp;
    for (int64_t size : out_sizes) out.emplace_back(static_cast<size_t>(size * rows), -7.0f);
    for (auto& o : out) outp.push_back(o.data());
    EXPECT_EQ(qatml_engine_run(e, ctx, rows, in.data(), static_cast<int32_t>(in.size()), outp.data(), static_cast<int32_t>(outp.size())),
              QATML_OK)
        << qatml_last_error();
    return out;
}

// The same through qatml_engine_run_device: inputs already on the device, outputs into device buffers, downloaded.
std::vector<std::vector<float>> run_device(const qatml_engine* e, const qatml_context* gpu, const std::vector<const float*>& device_inputs,
                                           const std::vector<int64_t>& out_sizes, int64_t rows) {
    std::vector<std::unique_ptr<qatml_test::DeviceBuffer>> douts;
    std::vector<float*> dptrs;
    for (int64_t size : out_sizes) {
        douts.push_back(std::make_unique<qatml_test::DeviceBuffer>(static_cast<size_t>(size * rows) * sizeof(float)));
        dptrs.push_back(douts.back()->as<float>());
    }
    EXPECT_EQ(qatml_engine_run_device(e, gpu, rows, device_inputs.data(), static_cast<int32_t>(device_inputs.size()), dptrs.data(),
                                      static_cast<int32_t>(dptrs.size())),
              QATML_OK)
        << qatml_last_error();
    std::vector<std::vector<float>> got;
    for (const auto& d : douts) got.push_back(d->download<float>());
    return got;
}

bool same_bits(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0) return false;
    return true;
}

// Inputs of `rows` rows: the fixture's rows repeated.
std::vector<std::vector<float>> repeat_rows(const PlanFixture& fx, int64_t rows) {
    std::vector<std::vector<float>> in;
    for (size_t i = 0; i < fx.inputs.size(); ++i) {
        const size_t row = static_cast<size_t>(fx.input_sizes[i]);
        std::vector<float> v(row * static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r)
            std::copy_n(fx.inputs[i].begin() + static_cast<std::ptrdiff_t>((r % fx.rows) * row), row, v.begin() + static_cast<std::ptrdiff_t>(r * row));
        in.push_back(std::move(v));
    }
    return in;
}

TEST(CudaEngine, PlanFixturesMatchTheCpuEngine) {
    QATML_REQUIRE_GPU();
    Contexts c;
    qatml_test::for_each_fixture([&](const PlanFixture& fx) {
        qatml_engine* e = nullptr;
        ASSERT_EQ(qatml_engine_create(c.gpu, fx.plan.data(), static_cast<int64_t>(fx.plan.size()), &e), QATML_OK) << qatml_last_error();
        EXPECT_TRUE(same_bits(run(e, c.gpu, fx.inputs, fx.output_sizes, fx.rows), fx.outputs)) << "stored CPU outputs";
        EXPECT_TRUE(same_bits(run(e, nullptr, fx.inputs, fx.output_sizes, fx.rows), fx.outputs)) << "the same engine on the CPU";
        for (int64_t rows : {int64_t(1), int64_t(37)}) {
            const auto in = repeat_rows(fx, rows);
            EXPECT_TRUE(same_bits(run(e, c.gpu, in, fx.output_sizes, rows), run(e, nullptr, in, fx.output_sizes, rows))) << rows << " rows";
        }
        qatml_engine_destroy(e);
    });
}

// ---- a plan through every path of the device runner --------------------------------------------------------------

struct Bytes {
    std::vector<uint8_t> b;
    template <typename T>
    Bytes& put(T v) {
        const auto* p = reinterpret_cast<const uint8_t*>(&v);
        b.insert(b.end(), p, p + sizeof(T));
        return *this;
    }
    Bytes& q(float s, int32_t z) { return put(s).put(z); }
    Bytes& i64s(std::initializer_list<int64_t> v) {
        for (int64_t x : v) put(x);
        return *this;
    }
    Bytes& raw(const std::vector<uint8_t>& v) {
        b.insert(b.end(), v.begin(), v.end());
        return *this;
    }
};

struct PlanBuilder {
    Bytes tensors, ops;
    uint32_t tensor_count = 0, op_count = 0;
    std::vector<uint32_t> inputs, outputs;
    std::mt19937 rng{21};
    uint32_t tensor(uint32_t type, std::initializer_list<int64_t> dims) {
        tensors.put(type).put(static_cast<uint32_t>(dims.size()));
        for (int64_t d : dims) tensors.put(d);
        return tensor_count++;
    }
    void op(uint32_t kind, const Bytes& payload) {
        ops.put(kind).put(static_cast<uint32_t>(payload.b.size())).raw(payload.b);
        ++op_count;
    }
    // Weight scales, optional zero points, bias and weights of m channels and `count` weights.
    void constants(Bytes& p, int64_t m, int64_t count, uint32_t w_type, bool zero_points) {
        for (int64_t i = 0; i < m; ++i) p.put(0.002f + 0.0003f * static_cast<float>(i % 5));
        if (zero_points)
            for (int64_t i = 0; i < m; ++i) p.put(static_cast<int32_t>(i % 5) - 2);
        for (int64_t i = 0; i < m; ++i) p.put(static_cast<int32_t>((i * 577) % 2001) - 1000);
        p.raw(qatml_test::random_weights(count, w_type, rng));
    }
    void conv(uint32_t x, uint32_t y, float xs, int32_t xz, float ys, int32_t yz, int64_t m, int64_t cpg, int64_t k, int64_t groups,
              int64_t s, int64_t pad, uint32_t w_type, bool zero_points) {
        Bytes p;
        p.put(x).put(y).q(xs, xz).q(ys, yz).i64s({m, cpg, k, k, groups, s, s, pad, pad, pad, pad, 1, 1});
        p.put(w_type).put(uint32_t(zero_points)).put(uint32_t(1));
        constants(p, m, m * cpg * k * k, w_type, zero_points);
        op(QATML_ENGINE_OP_CONV, p);
    }
    void gemm(uint32_t x, uint32_t y, float xs, int32_t xz, float ys, int32_t yz, int64_t k, int64_t n, bool trans_b, uint32_t w_type,
              bool zero_points) {
        Bytes p;
        p.put(x).put(y).q(xs, xz).q(ys, yz).i64s({k, n});
        p.put(uint32_t(trans_b)).put(w_type).put(uint32_t(zero_points)).put(uint32_t(1)).put(static_cast<uint32_t>(n));
        constants(p, n, k * n, w_type, zero_points);
        op(QATML_ENGINE_OP_GEMM, p);
    }
    void pool(uint32_t kind, uint32_t x, uint32_t y, float xs, int32_t xz, float ys, int32_t yz, int64_t k, int64_t s, int64_t pad, uint32_t cip) {
        Bytes p;
        p.put(x).put(y).q(xs, xz).q(ys, yz).i64s({k, k, s, s, pad, pad, pad, pad, 1, 1}).put(cip);
        op(kind, p);
    }
    std::vector<uint8_t> bytes() const {
        Bytes p;
        p.b = {'Q', 'E', 'P', '1'};
        p.put(uint32_t(1)).put(tensor_count).put(op_count).put(static_cast<uint32_t>(inputs.size())).put(static_cast<uint32_t>(outputs.size()));
        p.raw(tensors.b);
        for (uint32_t i : inputs) p.put(i);
        for (uint32_t o : outputs) p.put(o);
        p.raw(ops.b);
        return p.b;
    }
};

// float [4, 6, 6] -> s8 -> grouped conv (direct) -> 1x1 conv with weight zero points (direct) -> 3x3 stride-2 conv
// over 16 channels (tensor cores, 16-byte loads) -> max pool stride 1 -> average pool -> LUT viewing [16, 2, 2] as [64]
// -> GEMM (dense rows) into a channels-last [8, 2, 2] -> ADD to itself into a flat [32] -> outputs; global average pool
// -> GEMM with int4 weights and zero points (direct) and a GEMM of K = 8 (byte gathers); a conv + 2x2 max pool the
// loader fuses; per-channel scales, biases, u8 and s8 everywhere.
std::vector<uint8_t> all_paths_plan(std::vector<int64_t>* out_sizes) {
    PlanBuilder b;
    const uint32_t F = QATML_TYPE_FLOAT32, U = QATML_TYPE_UINT8, S = QATML_TYPE_INT8, W8 = QATML_TYPE_INT8, W4 = QATML_TYPE_INT4;
    const uint32_t in = b.tensor(F, {4, 6, 6});
    const uint32_t t1 = b.tensor(S, {4, 6, 6}), t2 = b.tensor(S, {8, 6, 6}), t3 = b.tensor(U, {16, 6, 6}), t4 = b.tensor(U, {16, 3, 3});
    const uint32_t t5 = b.tensor(U, {16, 2, 2}), t6 = b.tensor(U, {16, 2, 2}), t7 = b.tensor(U, {64}), t8 = b.tensor(U, {8, 2, 2});
    const uint32_t t9 = b.tensor(U, {32}), t10 = b.tensor(U, {8, 1, 1}), t11 = b.tensor(S, {5}), t12 = b.tensor(U, {6});
    const uint32_t t13 = b.tensor(U, {16, 6, 6}), t14 = b.tensor(U, {16, 3, 3});
    const uint32_t o1 = b.tensor(F, {32}), o2 = b.tensor(F, {5}), o3 = b.tensor(F, {6}), o4 = b.tensor(F, {16, 3, 3});
    b.inputs = {in};
    b.outputs = {o1, o2, o3, o4};
    *out_sizes = {32, 5, 6, 144};
    b.op(QATML_ENGINE_OP_QUANTIZE, Bytes().put(in).put(t1).q(0.02f, -3));
    b.conv(t1, t2, 0.02f, -3, 0.05f, 2, 8, 2, 3, 2, 1, 1, W8, false);
    b.conv(t2, t3, 0.05f, 2, 0.04f, 100, 16, 8, 1, 1, 1, 0, W8, true);
    b.conv(t3, t4, 0.04f, 100, 0.06f, 90, 16, 16, 3, 1, 2, 1, W4, false);
    b.pool(QATML_ENGINE_OP_MAXPOOL, t4, t5, 0.06f, 90, 0.06f, 90, 2, 1, 0, 0);
    b.pool(QATML_ENGINE_OP_AVGPOOL, t5, t6, 0.06f, 90, 0.05f, 80, 3, 1, 1, 0);
    Bytes lut;
    lut.put(t6).put(t7);
    for (int i = 0; i < 256; ++i) lut.put(static_cast<uint8_t>(i < 80 ? 80 : i));  // ReLU at the zero point
    b.op(QATML_ENGINE_OP_LUT, lut);
    b.gemm(t7, t8, 0.05f, 80, 0.07f, 128, 64, 32, true, W8, false);
    b.op(QATML_ENGINE_OP_ADD, Bytes().put(t8).put(t8).put(t9).q(0.07f, 128).q(0.07f, 128).q(0.11f, 120));
    b.op(QATML_ENGINE_OP_GLOBAL_AVGPOOL, Bytes().put(t8).put(t10).q(0.07f, 128).q(0.03f, 110));
    b.gemm(t10, t11, 0.03f, 110, 0.2f, -4, 8, 5, false, W4, true);
    b.gemm(t10, t12, 0.03f, 110, 0.1f, 128, 8, 6, true, W8, false);
    b.conv(t3, t13, 0.04f, 100, 0.05f, 60, 16, 16, 3, 1, 1, 1, W8, false);
    b.pool(QATML_ENGINE_OP_MAXPOOL, t13, t14, 0.05f, 60, 0.05f, 60, 2, 2, 0, 0);
    b.op(QATML_ENGINE_OP_DEQUANTIZE, Bytes().put(t9).put(o1).q(0.11f, 120));
    b.op(QATML_ENGINE_OP_DEQUANTIZE, Bytes().put(t11).put(o2).q(0.2f, -4));
    b.op(QATML_ENGINE_OP_DEQUANTIZE, Bytes().put(t12).put(o3).q(0.1f, 128));
    b.op(QATML_ENGINE_OP_DEQUANTIZE, Bytes().put(t14).put(o4).q(0.05f, 60));
    return b.bytes();
}

TEST(CudaEngine, EveryRunnerPathMatchesTheCpuEngine) {
    QATML_REQUIRE_GPU();
    Contexts c;
    std::vector<int64_t> out_sizes;
    const std::vector<uint8_t> plan = all_paths_plan(&out_sizes);
    qatml_engine* e = nullptr;
    ASSERT_EQ(qatml_engine_create(c.gpu, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << qatml_last_error();
    qatml_engine_info info{};
    ASSERT_EQ(qatml_engine_get_info(e, &info), QATML_OK);
    EXPECT_EQ(info.op_count, 17) << "18 plan ops, the last convolution fused with its pool";
    std::mt19937 rng(22);
    std::uniform_real_distribution<float> value(-2.0f, 2.5f);
    for (int64_t rows : {int64_t(1), int64_t(5), int64_t(70)}) {
        SCOPED_TRACE(std::to_string(rows) + " rows");
        std::vector<std::vector<float>> in(1, std::vector<float>(static_cast<size_t>(144 * rows)));
        for (float& v : in[0]) v = value(rng);
        const auto cpu = run(e, nullptr, in, out_sizes, rows);
        EXPECT_TRUE(same_bits(run(e, c.gpu, in, out_sizes, rows), cpu));
        // The same through device pointers.
        qatml_test::DeviceBuffer din(in[0]);
        EXPECT_TRUE(same_bits(run_device(e, c.gpu, {din.as<float>()}, out_sizes, rows), cpu)) << "device pointers";
    }
    qatml_engine_destroy(e);
}

TEST(CudaEngine, ContextsRunOneEngineConcurrently) {
    QATML_REQUIRE_GPU();
    std::vector<int64_t> out_sizes;
    const std::vector<uint8_t> plan = all_paths_plan(&out_sizes);
    Contexts a, b;
    qatml_engine* e = nullptr;
    ASSERT_EQ(qatml_engine_create(a.gpu, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << qatml_last_error();
    const int64_t rows = 33;
    std::vector<std::vector<float>> in(1, std::vector<float>(static_cast<size_t>(144 * rows)));
    for (size_t i = 0; i < in[0].size(); ++i) in[0][i] = static_cast<float>((i * 37) % 101) / 25.0f - 2.0f;
    const auto cpu = run(e, nullptr, in, out_sizes, rows);
    std::vector<std::vector<float>> ra, rb;
    std::thread ta([&] {
        for (int i = 0; i < 20; ++i) ra = run(e, a.gpu, in, out_sizes, rows);
    });
    std::thread tb([&] {
        for (int i = 0; i < 20; ++i) rb = run(e, b.gpu, in, out_sizes, rows);
    });
    ta.join();
    tb.join();
    EXPECT_TRUE(same_bits(ra, cpu));
    EXPECT_TRUE(same_bits(rb, cpu));
    qatml_engine_destroy(e);
}

// ---- the wider ops (UNARY .. FLOAT_CONV) ---------------------------------------------------------------------------

// Bit for bit, NaN payloads aside; where a transcendental is involved (GPU expf, tanhf, erff, logf, powf differ from
// libm by a few ulp), within 1e-5 relative + 1e-6 absolute (docs/cuda.md), or one quantization step (steps[o], where an
// output is requantized downstream of one: a value near a half step may round the other way).
::testing::AssertionResult agree(const std::vector<std::vector<float>>& gpu, const std::vector<std::vector<float>>& cpu, bool transcendental,
                                 const std::vector<float>& steps = {}) {
    if (gpu.size() != cpu.size()) return ::testing::AssertionFailure() << "output counts differ";
    for (size_t o = 0; o < gpu.size(); ++o)
        for (size_t i = 0; i < gpu[o].size(); ++i) {
            const float g = gpu[o][i], c = cpu[o][i];
            if (std::memcmp(&g, &c, 4) == 0 || (std::isnan(g) && std::isnan(c))) continue;
            const float step = o < steps.size() ? steps[o] : 0.0f;
            if (transcendental && std::fabs(g - c) <= 1e-5f * std::fabs(c) + 1e-6f + step) continue;
            return ::testing::AssertionFailure() << "output " << o << " element " << i << ": GPU " << g << ", CPU " << c;
        }
    return ::testing::AssertionSuccess();
}

std::vector<std::vector<float>> run_plan(const std::vector<uint8_t>& plan, const qatml_context* gpu, const std::vector<std::vector<float>>& in,
                                         const std::vector<int64_t>& out_sizes, int64_t rows, std::vector<std::vector<float>>* cpu) {
    qatml_engine* e = nullptr;
    EXPECT_EQ(qatml_engine_create(gpu, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << qatml_last_error();
    if (!e) return {};
    auto out = run(e, gpu, in, out_sizes, rows);
    *cpu = run(e, nullptr, in, out_sizes, rows);
    qatml_engine_destroy(e);
    return out;
}

TEST(CudaEngine, WideOpsMatchTheCpuEngineOnRandomShapes) {
    QATML_REQUIRE_GPU();
    Contexts c;
    int exact = 0;
    for (const qatml_test::WideCase& wc : qatml_test::wide_op_cases(qatml_test::seed(), 40)) {
        std::vector<std::vector<float>> cpu;
        const auto gpu = run_plan(wc.plan(), c.gpu, wc.inputs, wc.out_sizes, wc.rows, &cpu);
        EXPECT_TRUE(agree(gpu, cpu, wc.transcendental)) << wc.name;
        exact += wc.transcendental ? 0 : 1;
    }
    EXPECT_GT(exact, 400);
}

TEST(CudaEngine, WideOpsPlanMatchesTheCpuEngine) {
    QATML_REQUIRE_GPU();
    Contexts c;
    const std::vector<int64_t> out_sizes = {8 * 12, 8 * 6 * 6, 4 * 9 * 9};
    for (const bool softmax : {false, true}) {  // without its softmax every op is exact
        for (const int64_t rows : {int64_t(1), int64_t(19)}) {
            std::vector<std::vector<float>> in(1, std::vector<float>(static_cast<size_t>(4 * 6 * 6 * rows)));
            for (size_t i = 0; i < in[0].size(); ++i) in[0][i] = static_cast<float>((i * 53) % 97) / 16.0f - 3.0f;
            std::vector<std::vector<float>> cpu;
            const auto gpu = run_plan(qatml_test::wide_ops_plan(softmax), c.gpu, in, out_sizes, rows, &cpu);
            // Output 1 is requantized (scale 0.05) after the softmax's float path.
            EXPECT_TRUE(agree(gpu, cpu, softmax, {0.0f, 0.05f, 0.0f})) << (softmax ? "with" : "without") << " the softmax, " << rows << " rows";
        }
    }
}

TEST(CudaEngine, MisuseFailsWithAMessage) {
    QATML_REQUIRE_GPU();
    Contexts c;
    std::vector<int64_t> out_sizes;
    const std::vector<uint8_t> plan = all_paths_plan(&out_sizes);
    qatml_engine* cpu_engine = nullptr;
    ASSERT_EQ(qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &cpu_engine), QATML_OK);
    std::vector<float> x(144), y(144);
    const float* in[] = {x.data()};
    float* out[] = {y.data(), y.data(), y.data(), y.data()};
    EXPECT_EQ(qatml_engine_run(cpu_engine, c.gpu, 1, in, 1, out, 4), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("loaded for the CPU"), std::string::npos) << qatml_last_error();
    EXPECT_EQ(qatml_engine_run_device(cpu_engine, nullptr, 1, in, 1, out, 4), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("CUDA context"), std::string::npos) << qatml_last_error();
    qatml_engine_destroy(cpu_engine);
}

// ---- integer inputs: GATHER, CAST, FLOAT_GEMM, GEMMs over vectors and with a float output --------------------------

// Random token-op plans (token_op_cases.h) on the GPU and on the CPU, bit for bit: the FLOAT_GEMM too, since the
// device adds each output's products in the CPU kernel's order (docs/cuda.md).
TEST(CudaEngine, TokenOpsMatchTheCpuEngineOnRandomShapes) {
    QATML_REQUIRE_GPU();
    Contexts c;
    std::mt19937 r(qatml_test::seed() + 21);
    int channels_last_inputs = 0;
    for (int round = 0; round < 30; ++round) {
        const qatml_test::TokenOpsCase tc(r, round);
        SCOPED_TRACE("round " + std::to_string(round));
        const int64_t gdims[3] = {tc.g0, tc.g1, tc.gk};
        if (qatml::cuda::tensor_layout(QATML_TYPE_UINT8, 3, gdims).channels_last && tc.g0 * tc.g1 > 1) ++channels_last_inputs;
        const std::vector<uint8_t> plan = tc.w.bytes();
        qatml_engine* e = nullptr;
        ASSERT_EQ(qatml_engine_create(c.gpu, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << qatml_last_error();
        std::string gpu_error, cpu_error;
        const auto gpu = tc.run(e, c.gpu, &gpu_error);
        const auto cpu = tc.run(e, nullptr, &cpu_error);
        EXPECT_EQ(gpu_error, "");
        EXPECT_EQ(cpu_error, "");
        EXPECT_TRUE(same_bits(gpu, cpu));
        qatml_engine_destroy(e);
    }
    EXPECT_GT(channels_last_inputs, 3) << "GEMMs over vectors of a channels-last input";
}

// The engine's token fixture (engine_plans.h TokenNet: int64 and int32 ids, casts, constant position ids, GEMMs over
// [5, 4] vectors to uint8 and float, a FLOAT_GEMM), host and device pointers, against the CPU engine.
TEST(CudaEngine, TokenPlanMatchesTheCpuEngine) {
    QATML_REQUIRE_GPU();
    Contexts c;
    const qatml_test::TokenNet net;
    const std::vector<uint8_t> plan = net.plan();
    qatml_engine* e = nullptr;
    ASSERT_EQ(qatml_engine_create(c.gpu, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << qatml_last_error();
    const std::vector<int64_t> out_sizes = {20, 20, 20, 5, 15, 10};
    for (const int64_t rows : {int64_t(1), int64_t(6), int64_t(300)}) {
        SCOPED_TRACE(std::to_string(rows) + " rows");
        std::vector<int64_t> ids(static_cast<size_t>(5 * rows));
        std::vector<int32_t> segments(ids.size()), mask(ids.size());
        for (size_t i = 0; i < ids.size(); ++i) {
            ids[i] = static_cast<int64_t>((i * 5) % 14) - 7;  // -7..6, negative from the end
            segments[i] = static_cast<int32_t>(i % 3) - 1;     // -1..1 of 2 rows
            mask[i] = static_cast<int32_t>((i * 7) % 5) - 2;
        }
        const float* in[] = {reinterpret_cast<const float*>(ids.data()), reinterpret_cast<const float*>(segments.data()),
                             reinterpret_cast<const float*>(mask.data())};
        std::vector<std::vector<float>> gpu, cpu;
        for (auto* out : {&gpu, &cpu}) {
            std::vector<float*> outp;
            for (int64_t size : out_sizes) out->emplace_back(static_cast<size_t>(size * rows), -7.0f);
            for (auto& o : *out) outp.push_back(o.data());
            ASSERT_EQ(qatml_engine_run(e, out == &gpu ? c.gpu : nullptr, rows, in, 3, outp.data(), 6), QATML_OK) << qatml_last_error();
        }
        EXPECT_TRUE(same_bits(gpu, cpu));
        // The same through device pointers.
        qatml_test::DeviceBuffer did(ids), dseg(segments), dmask(mask);
        EXPECT_TRUE(same_bits(run_device(e, c.gpu, {did.as<float>(), dseg.as<float>(), dmask.as<float>()}, out_sizes, rows), cpu))
            << "device pointers";
    }
    qatml_engine_destroy(e);
}

// An index outside its table fails the GPU run with the CPU engine's message (op, row, position, value), never reads
// outside the table, and leaves the engine usable.
TEST(CudaEngine, AnIndexOutsideTheTableFailsTheRunAsOnTheCpu) {
    QATML_REQUIRE_GPU();
    Contexts c;
    std::mt19937 r(qatml_test::seed() + 22);
    for (int round = 0; round < 4; ++round) {
        qatml_test::TokenOpsCase tc(r, round);
        const std::vector<uint8_t> plan = tc.w.bytes();
        qatml_engine* e = nullptr;
        ASSERT_EQ(qatml_engine_create(c.gpu, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << qatml_last_error();
        const int64_t last = tc.rows * tc.count - 1;
        tc.set_id(last, round % 2 ? tc.table_rows + 1000000 : -tc.table_rows - 1);
        std::string gpu_error, cpu_error;
        tc.run(e, c.gpu, &gpu_error);
        tc.run(e, nullptr, &cpu_error);
        EXPECT_NE(cpu_error.find("(GATHER): index"), std::string::npos) << cpu_error;
        EXPECT_EQ(gpu_error, cpu_error);
        tc.set_id(last, 0);
        std::string again;
        const auto gpu = tc.run(e, c.gpu, &again);
        EXPECT_EQ(again, "") << "the engine runs again after a failed run";
        EXPECT_TRUE(same_bits(gpu, tc.run(e, nullptr, &again)));
        qatml_engine_destroy(e);
    }
}

}  // namespace
