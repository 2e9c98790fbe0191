// The engine's CPU passes on residual networks: activations kept channels-last
// between convolutions (padding for readers of different pads, strided readers,
// a whole-plane average reading them) and residual additions fused into a
// convolution's epilogue (the convolution as either input of the addition);
// results equal the kernels called op by op, at several batches and thread
// counts, on every path the CPU has.
#include "engine_plans.h"
#include "isa_paths.h"
#include "qatml/qatml.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace {

using qatml_test::PlanWriter;

struct ConvSpec {
    int64_t c, m, k, stride;
    int64_t pads[4];
    float xs, ys;
    int32_t xz, yz;
    std::vector<int8_t> w;
    std::vector<float> ws;
    std::vector<int32_t> bias;
};

ConvSpec make_conv(std::mt19937& r, int64_t c, int64_t m, int64_t k, int64_t stride, std::initializer_list<int64_t> pads, float xs,
                   int32_t xz, float ys, int32_t yz) {
    ConvSpec s{c, m, k, stride, {0, 0, 0, 0}, xs, ys, xz, yz, {}, {}, {}};
    std::copy(pads.begin(), pads.end(), s.pads);
    std::uniform_int_distribution<int> w8(-60, 60), b(-2000, 2000);
    std::uniform_real_distribution<float> sc(0.002f, 0.006f);
    for (int64_t i = 0; i < m * c * k * k; ++i) s.w.push_back(static_cast<int8_t>(w8(r)));
    for (int64_t i = 0; i < m; ++i) s.ws.push_back(sc(r)), s.bias.push_back(b(r));
    return s;
}

// float [8, 10, 10] -> quantize u8 (t1) -> conv a 3x3 p1 (t2, 16 ch) -> conv b
// 3x3 p1 on t2 (t3) and conv c 1x1 p0 on t2 (t4) -> add(t3, t4) (t5: conv b
// fused, t4 the residual) -> conv d 3x3 s2 p1,1,0,0 (t6, 24 x 5 x 5) -> conv e
// 3x3 p1 (t7) -> add(t6, t7) (t8: conv e fused as the add's second input, t6
// the residual, also read by conv e) -> global average pool (t9) -> dequantize
// (output 0). `observe_t5`: a DEQUANTIZE of t5 as output 1 (a reader that needs
// the plain layout: the fusion producing t5 is undone and the results stay the
// same).
struct ResidualNet {
    std::vector<ConvSpec> convs;
    bool observe_t5;
    explicit ResidualNet(bool observe) : observe_t5(observe) {
        std::mt19937 r(qatml_test::seed() + 5);
        convs.push_back(make_conv(r, 8, 16, 3, 1, {1, 1, 1, 1}, 0.03f, 128, 0.05f, 10));   // a
        convs.push_back(make_conv(r, 16, 16, 3, 1, {1, 1, 1, 1}, 0.05f, 10, 0.04f, 120));  // b
        convs.push_back(make_conv(r, 16, 16, 1, 1, {0, 0, 0, 0}, 0.05f, 10, 0.06f, 100));  // c
        convs.push_back(make_conv(r, 16, 24, 3, 2, {1, 1, 0, 0}, 0.07f, 30, 0.05f,
                                  40));  // d (reads t5)
        convs.push_back(make_conv(r, 24, 24, 3, 1, {1, 1, 1, 1}, 0.05f, 40, 0.03f,
                                  90));  // e (reads t6)
    }

    std::vector<uint8_t> plan() const {
        PlanWriter w;
        const uint32_t t0 = w.tensor(QATML_TYPE_FLOAT32, {8, 10, 10});
        const uint32_t t1 = w.tensor(QATML_TYPE_UINT8, {8, 10, 10});
        const uint32_t t2 = w.tensor(QATML_TYPE_UINT8, {16, 10, 10});
        const uint32_t t3 = w.tensor(QATML_TYPE_UINT8, {16, 10, 10});
        const uint32_t t4 = w.tensor(QATML_TYPE_UINT8, {16, 10, 10});
        const uint32_t t5 = w.tensor(QATML_TYPE_UINT8, {16, 10, 10});
        const uint32_t t6 = w.tensor(QATML_TYPE_UINT8, {24, 5, 5});
        const uint32_t t7 = w.tensor(QATML_TYPE_UINT8, {24, 5, 5});
        const uint32_t t8 = w.tensor(QATML_TYPE_UINT8, {24, 5, 5});
        const uint32_t t9 = w.tensor(QATML_TYPE_UINT8, {24});
        const uint32_t out = w.tensor(QATML_TYPE_FLOAT32, {24});
        w.inputs = {t0};
        w.outputs = {out};
        uint32_t out5 = 0;
        if (observe_t5) {
            out5 = w.tensor(QATML_TYPE_FLOAT32, {16, 10, 10});
            w.outputs.push_back(out5);
        }
        qatml_test::OpBuilder q;
        q.body.put(t0);
        q.body.put(t1);
        q.body.q(0.03f, 128);
        w.op(QATML_ENGINE_OP_QUANTIZE, q);
        auto conv = [&](const ConvSpec& s, uint32_t x, uint32_t y) {
            qatml_test::conv_op(w, x, y, s.xs, s.xz, s.ys, s.yz, s.m, s.c, s.k, s.k, s.stride, {s.pads[0], s.pads[1], s.pads[2], s.pads[3]},
                                s.w, s.ws, s.bias);
        };
        auto add = [&](uint32_t a, float as, int32_t az, uint32_t b, float bs, int32_t bz, uint32_t y, float ys, int32_t yz) {
            qatml_test::OpBuilder o;
            o.body.put(a);
            o.body.put(b);
            o.body.put(y);
            o.body.q(as, az);
            o.body.q(bs, bz);
            o.body.q(ys, yz);
            w.op(QATML_ENGINE_OP_ADD, o);
        };
        conv(convs[0], t1, t2);
        conv(convs[1], t2, t3);
        conv(convs[2], t2, t4);
        add(t3, 0.04f, 120, t4, 0.06f, 100, t5, 0.07f, 30);
        conv(convs[3], t5, t6);
        conv(convs[4], t6, t7);
        add(t6, 0.05f, 40, t7, 0.03f, 90, t8, 0.08f, 5);
        qatml_test::OpBuilder g;
        g.body.put(t8);
        g.body.put(t9);
        g.body.q(0.08f, 5);
        g.body.q(0.02f, 7);
        w.op(QATML_ENGINE_OP_GLOBAL_AVGPOOL, g);
        qatml_test::OpBuilder dq;
        dq.body.put(t9);
        dq.body.put(out);
        dq.body.q(0.02f, 7);
        w.op(QATML_ENGINE_OP_DEQUANTIZE, dq);
        if (observe_t5) {
            qatml_test::OpBuilder d5;
            d5.body.put(t5);
            d5.body.put(out5);
            d5.body.q(0.07f, 30);
            w.op(QATML_ENGINE_OP_DEQUANTIZE, d5);
        }
        return w.bytes();
    }

    // The same computation through the kernel ABI, op by op (NCHW throughout).
    static std::vector<uint8_t> conv_ref(const ConvSpec& s, const std::vector<uint8_t>& x, int64_t n, int64_t h, int64_t w) {
        qatml_packed_weights* pw = nullptr;
        EXPECT_EQ(qatml_conv_pack_weights(nullptr, s.w.data(), QATML_TYPE_INT8, s.m, s.c, s.k, s.k, 1, nullptr, &pw), QATML_OK);
        std::vector<float> mult;
        for (float ws : s.ws) mult.push_back((s.xs * ws) / s.ys);
        qatml_epilogue ep;
        std::memset(&ep, 0, sizeof ep);
        ep.out_type = QATML_TYPE_UINT8;
        ep.bias = s.bias.data();
        ep.multipliers = mult.data();
        ep.multiplier_count = s.m;
        ep.out_zero_point = s.yz;
        qatml_conv2d_params p{n, s.c, h, w, s.stride, s.stride, s.pads[0], s.pads[1], s.pads[2], s.pads[3], 1, 1};
        int64_t oh = 0, ow = 0;
        EXPECT_EQ(qatml_conv2d_output_size(&p, s.k, s.k, &oh, &ow), QATML_OK);
        std::vector<uint8_t> y(static_cast<size_t>(n * s.m * oh * ow));
        EXPECT_EQ(qatml_conv2d(nullptr, &p, x.data(), QATML_TYPE_UINT8, s.xz, pw, &ep, y.data()), QATML_OK) << qatml_last_error();
        qatml_packed_weights_destroy(pw);
        return y;
    }
    static std::vector<uint8_t> add_ref(const std::vector<uint8_t>& a, float as, int32_t az, const std::vector<uint8_t>& b, float bs,
                                        int32_t bz, float ys, int32_t yz) {
        std::vector<uint8_t> y(a.size());
        EXPECT_EQ(
            qatml_add(nullptr, a.data(), as, az, b.data(), bs, bz, QATML_TYPE_UINT8, static_cast<int64_t>(a.size()), ys, yz, y.data()),
            QATML_OK);
        return y;
    }
    std::vector<std::vector<float>> reference(const std::vector<float>& x, int64_t n) const {
        std::vector<uint8_t> t1(x.size());
        float s = 0.03f;
        int32_t z = 128;
        EXPECT_EQ(qatml_quantize_linear(nullptr, x.data(), 1, 1, static_cast<int64_t>(x.size()), &s, &z, QATML_TYPE_UINT8, t1.data()),
                  QATML_OK);
        const std::vector<uint8_t> t2 = conv_ref(convs[0], t1, n, 10, 10);
        const std::vector<uint8_t> t3 = conv_ref(convs[1], t2, n, 10, 10), t4 = conv_ref(convs[2], t2, n, 10, 10);
        const std::vector<uint8_t> t5 = add_ref(t3, 0.04f, 120, t4, 0.06f, 100, 0.07f, 30);
        const std::vector<uint8_t> t6 = conv_ref(convs[3], t5, n, 10, 10);
        const std::vector<uint8_t> t7 = conv_ref(convs[4], t6, n, 5, 5);
        const std::vector<uint8_t> t8 = add_ref(t6, 0.05f, 40, t7, 0.03f, 90, 0.08f, 5);
        std::vector<uint8_t> t9(static_cast<size_t>(n * 24));
        EXPECT_EQ(qatml_global_average_pool(nullptr, t8.data(), QATML_TYPE_UINT8, n, 24, 25, 0.08f, 5, 0.02f, 7, t9.data()), QATML_OK);
        std::vector<std::vector<float>> out(observe_t5 ? 2 : 1);
        out[0].resize(t9.size());
        float os = 0.02f;
        int32_t oz = 7;
        EXPECT_EQ(
            qatml_dequantize_linear(nullptr, t9.data(), QATML_TYPE_UINT8, 1, 1, static_cast<int64_t>(t9.size()), &os, &oz, out[0].data()),
            QATML_OK);
        if (observe_t5) {
            out[1].resize(t5.size());
            float s5 = 0.07f;
            int32_t z5 = 30;
            EXPECT_EQ(qatml_dequantize_linear(nullptr, t5.data(), QATML_TYPE_UINT8, 1, 1, static_cast<int64_t>(t5.size()), &s5, &z5,
                                              out[1].data()),
                      QATML_OK);
        }
        return out;
    }
};

std::vector<std::vector<float>> run(const qatml_engine* e, const qatml_context* ctx, const std::vector<float>& x, int64_t n, bool observe) {
    std::vector<std::vector<float>> y(observe ? 2 : 1);
    y[0].resize(static_cast<size_t>(n * 24));
    if (observe) y[1].resize(static_cast<size_t>(n * 1600));
    const float* in[] = {x.data()};
    float* out[] = {y[0].data(), observe ? y[1].data() : nullptr};
    EXPECT_EQ(qatml_engine_run(e, ctx, n, in, 1, out, observe ? 2 : 1), QATML_OK) << qatml_last_error();
    return y;
}

std::vector<float> input(int64_t n, unsigned s) {
    std::mt19937 r(s);
    std::uniform_real_distribution<float> d(-3.5f, 3.5f);
    std::vector<float> x(static_cast<size_t>(n * 800));
    for (float& v : x) v = d(r);
    return x;
}

}  // namespace

TEST(EngineLayout, ResidualNetworkMatchesTheKernelsOpByOpOnEveryPath) {
    qatml_device cpu{QATML_DEVICE_CPU, 0};
    qatml_context* ctx = nullptr;
    ASSERT_EQ(qatml_context_create(&cpu, 3, &ctx), QATML_OK);
    for (int isa : qatml_test::every_isa()) {
        qatml_test::IsaCap cap(isa);
        for (bool observe : {false, true}) {
            ResidualNet net(observe);
            const std::vector<uint8_t> plan = net.plan();
            qatml_engine* e = nullptr;
            ASSERT_EQ(qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << qatml_last_error();
            qatml_engine_info info{};
            ASSERT_EQ(qatml_engine_get_info(e, &info), QATML_OK);
            // Channel lanes (AVX-512 VNNI): both additions fused, or only the second
            // when t5 is also an output.
            const int32_t plan_ops = observe ? 11 : 10;
            EXPECT_EQ(info.op_count, isa == QATML_ISA_AVX512_VNNI ? plan_ops - (observe ? 1 : 2) : plan_ops)
                << qatml_isa_name(isa) << (observe ? ", t5 observed" : "");
            for (int64_t n : {1, 3}) {
                const std::vector<float> x = input(n, 11u + static_cast<unsigned>(n));
                EXPECT_EQ(run(e, nullptr, x, n, observe), net.reference(x, n)) << qatml_isa_name(isa) << ", batch " << n;
            }
            const std::vector<float> x = input(7, 5u);
            EXPECT_EQ(run(e, ctx, x, 7, observe), net.reference(x, 7)) << qatml_isa_name(isa) << ", 3 threads";
            ASSERT_EQ(qatml_engine_destroy(e), QATML_OK);
        }
    }
    qatml_context_destroy(ctx);
}
