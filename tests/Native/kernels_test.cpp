// INT8 kernels: every fast path bit-exact against the scalar path on random shapes, the ONNX integer
// operators on hand-made cases, and argument validation at the ABI.
#include "qatml/qatml.h"
#include "isa_paths.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using qatml_test::fast_isas;  // every SIMD path the CPU supports; prints the ones it skips
using qatml_test::IsaCap;

struct Packed {
    qatml_packed_weights* p = nullptr;
    ~Packed() { qatml_packed_weights_destroy(p); }
};

std::mt19937& rng() {  // QATML_TEST_SEED varies the random shapes (default 12345)
    static std::mt19937 r(std::getenv("QATML_TEST_SEED") ? unsigned(std::strtoul(std::getenv("QATML_TEST_SEED"), nullptr, 10))
                                                         : 12345u);
    return r;
}
int rnd(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng()); }

template <typename T>
std::vector<T> random_vec(size_t n, int lo, int hi) {
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(rnd(lo, hi));
    return v;
}

struct GemmCase {
    int64_t m, n, k;
    int32_t a_type, out_type;
    int32_t za;
    bool wzp, bias, trans, int4, clamp, per_channel;
};

// Runs one GEMM with the ISA capped at `isa`; returns the output bytes.
std::vector<uint8_t> run_gemm(int isa, const GemmCase& c, const std::vector<uint8_t>& a, int64_t lda,
                              const std::vector<int8_t>& b, const std::vector<int32_t>& zb,
                              const std::vector<int32_t>& bias, const std::vector<float>& mult, int64_t ldc) {
    IsaCap cap(isa);
    Packed pw;
    std::vector<uint8_t> b4;
    const void* bp = b.data();
    if (c.int4) {
        b4.resize((b.size() + 1) / 2);
        EXPECT_EQ(qatml_int4_pack(b.data(), static_cast<int64_t>(b.size()), 1, b4.data()), QATML_OK);
        bp = b4.data();
    }
    EXPECT_EQ(qatml_gemm_pack_b(nullptr, bp, c.int4 ? QATML_TYPE_INT4 : QATML_TYPE_INT8, c.k, c.n, c.trans ? 1 : 0,
                                c.wzp ? zb.data() : nullptr, &pw.p),
              QATML_OK)
        << qatml_last_error();
    int32_t got_isa = -1;
    EXPECT_EQ(qatml_packed_weights_info(pw.p, &got_isa, nullptr, nullptr, nullptr), QATML_OK);
    EXPECT_EQ(got_isa, isa);
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    ep.out_type = c.out_type;
    ep.bias = c.bias ? bias.data() : nullptr;
    ep.multipliers = mult.data();
    ep.multiplier_count = c.per_channel ? c.n : 1;
    ep.out_zero_point = c.out_type == QATML_TYPE_UINT8 ? 7 : -3;
    ep.has_clamp = c.clamp;
    ep.clamp_min = ep.out_zero_point;
    ep.clamp_max = 100;
    const int64_t es = c.out_type == QATML_TYPE_INT32 ? 4 : 1;
    std::vector<uint8_t> out(static_cast<size_t>(c.m * ldc * es), 0xCD);
    EXPECT_EQ(qatml_gemm(nullptr, c.m, a.data(), c.a_type, lda, c.za, pw.p, &ep, out.data(), ldc), QATML_OK)
        << qatml_last_error();
    return out;
}

}  // namespace

TEST(KernelsGemm, ScalarMatchesInt64Reference) {
    const int64_t m = 5, n = 7, k = 13;
    auto a = random_vec<uint8_t>(m * k, 0, 255);
    auto b = random_vec<int8_t>(k * n, -128, 127);
    std::vector<int32_t> zb(n), bias(n);
    for (int j = 0; j < n; ++j) zb[j] = rnd(-5, 5), bias[j] = rnd(-1000, 1000);
    GemmCase c{m, n, k, QATML_TYPE_UINT8, QATML_TYPE_INT32, 17, true, true, false, false, false, false};
    std::vector<float> mult{1.0f};
    auto out = run_gemm(QATML_ISA_SCALAR, c, a, k, b, zb, bias, mult, n);
    const int32_t* o = reinterpret_cast<const int32_t*>(out.data());
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            int64_t s = bias[j];
            for (int64_t kk = 0; kk < k; ++kk) s += int64_t(a[i * k + kk] - 17) * (b[kk * n + j] - zb[j]);
            ASSERT_EQ(o[i * n + j], s);
        }
}

TEST(KernelsGemm, FastPathsAreBitExactOnRandomShapes) {
    auto isas = fast_isas();
    if (isas.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU";
    for (int iter = 0; iter < 60; ++iter) {
        GemmCase c;
        c.m = iter < 3 ? 1 : rnd(1, 40);
        c.n = rnd(1, 80);
        c.k = rnd(1, 70);
        if (iter % 7 == 0) c.k = rnd(200, 600);
        if (iter % 7 == 3) c.k = rnd(1025, 2600);  // several K blocks
        c.a_type = (iter & 1) ? QATML_TYPE_INT8 : QATML_TYPE_UINT8;
        const int ot = iter % 3;
        c.out_type = ot == 0 ? QATML_TYPE_INT32 : ot == 1 ? QATML_TYPE_UINT8 : QATML_TYPE_INT8;
        c.za = c.a_type == QATML_TYPE_UINT8 ? rnd(0, 255) : rnd(-128, 127);
        c.wzp = iter % 5 == 1;
        c.bias = iter % 2 == 0;
        c.trans = iter % 4 == 3;
        c.int4 = iter % 6 == 5;
        c.clamp = iter % 3 == 2;
        c.per_channel = iter % 2 == 1;
        const int64_t lda = c.k + (iter % 3), ldc = c.n + (iter % 2) * 3;
        auto a = random_vec<uint8_t>(c.m * lda, 0, 255);
        auto b = c.int4 ? random_vec<int8_t>(c.k * c.n, -8, 7) : random_vec<int8_t>(c.k * c.n, -128, 127);
        std::vector<int32_t> zb(c.n), bias(c.n);
        std::vector<float> mult(c.n);
        for (int64_t j = 0; j < c.n; ++j) {
            zb[j] = c.int4 ? rnd(-8, 7) : rnd(-128, 127);
            bias[j] = rnd(-50000, 50000);
            mult[j] = std::ldexp(1.0f + rnd(0, 1 << 20) / float(1 << 20), -rnd(8, 16));
        }
        auto ref = run_gemm(QATML_ISA_SCALAR, c, a, lda, b, zb, bias, mult, ldc);
        for (int isa : isas) {
            auto got = run_gemm(isa, c, a, lda, b, zb, bias, mult, ldc);
            ASSERT_EQ(got, ref) << "isa " << qatml_isa_name(isa) << " iter " << iter << " m=" << c.m << " n=" << c.n
                                << " k=" << c.k << " a_type=" << c.a_type << " out=" << c.out_type;
        }
    }
}

TEST(KernelsGemm, Avx2IsExactAtTheSaturationCornerOfVpmaddubsw) {
    // 255 * -128 + 255 * -128 saturates vpmaddubsw's int16 pairs if used naively.
    auto isas = fast_isas();
    if (isas.empty()) GTEST_SKIP();
    GemmCase c{3, 33, 64, QATML_TYPE_UINT8, QATML_TYPE_INT32, 0, false, false, false, false, false, false};
    std::vector<uint8_t> a(c.m * c.k, 255);
    std::vector<int8_t> b(c.k * c.n, -128);
    for (size_t i = 0; i < b.size(); i += 3) b[i] = 127;
    std::vector<int32_t> z(c.n), bias(c.n);
    std::vector<float> mult{1.0f};
    auto ref = run_gemm(QATML_ISA_SCALAR, c, a, c.k, b, z, bias, mult, c.n);
    for (int isa : isas) EXPECT_EQ(run_gemm(isa, c, a, c.k, b, z, bias, mult, c.n), ref) << qatml_isa_name(isa);
}

// ---- convolution ------------------------------------------------------------------------------

namespace {
struct ConvCase {
    qatml_conv2d_params p;
    int64_t m, kh, kw, groups;
    int32_t x_type, out_type, xz;
    bool wzp, int4;
};

// pool_kernel != 0: through qatml_conv2d_maxpool with that pool (stride 2, pool_pads top, left, bottom, right).
std::vector<uint8_t> run_conv(int isa, const ConvCase& c, const std::vector<uint8_t>& x, const std::vector<int8_t>& w,
                              const std::vector<int32_t>& zw, const std::vector<int32_t>& bias,
                              const std::vector<float>& mult, int64_t pool_kernel = 0, const int64_t* pool_pads = nullptr) {
    IsaCap cap(isa);
    Packed pw;
    std::vector<uint8_t> w4;
    const void* wp = w.data();
    if (c.int4) {
        w4.resize((w.size() + 1) / 2);
        EXPECT_EQ(qatml_int4_pack(w.data(), static_cast<int64_t>(w.size()), 1, w4.data()), QATML_OK);
        wp = w4.data();
    }
    EXPECT_EQ(qatml_conv_pack_weights(nullptr, wp, c.int4 ? QATML_TYPE_INT4 : QATML_TYPE_INT8, c.m, c.p.channels / c.groups,
                                      c.kh, c.kw, c.groups, c.wzp ? zw.data() : nullptr, &pw.p),
              QATML_OK)
        << qatml_last_error();
    int64_t oh = 0, ow = 0;
    EXPECT_EQ(qatml_conv2d_output_size(&c.p, c.kh, c.kw, &oh, &ow), QATML_OK) << qatml_last_error();
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    ep.out_type = c.out_type;
    ep.bias = bias.data();
    ep.multipliers = mult.data();
    ep.multiplier_count = c.m;
    ep.out_zero_point = c.out_type == QATML_TYPE_UINT8 ? 3 : 0;
    const int64_t es = c.out_type == QATML_TYPE_INT32 ? 4 : 1;
    if (pool_kernel != 0) {
        qatml_conv2d_params pp{c.p.batch, c.m, oh, ow, 2, 2, pool_pads[0], pool_pads[1], pool_pads[2], pool_pads[3], 1, 1};
        EXPECT_EQ(qatml_conv2d_output_size(&pp, pool_kernel, pool_kernel, &oh, &ow), QATML_OK) << qatml_last_error();
    }
    std::vector<uint8_t> y(static_cast<size_t>(c.p.batch * c.m * oh * ow * es), 0xCD);
    const qatml_status st = pool_kernel != 0
                                ? qatml_conv2d_maxpool(nullptr, &c.p, x.data(), c.x_type, c.xz, pw.p, &ep, pool_kernel, pool_pads, y.data())
                                : qatml_conv2d(nullptr, &c.p, x.data(), c.x_type, c.xz, pw.p, &ep, y.data());
    EXPECT_EQ(st, QATML_OK) << qatml_last_error();
    return y;
}

// Operands for a fixed-shape case: bytes 0..255, weights -127..127, weight zero points -20..20, biases
// +-3000, multipliers 2^-12 .. 2^-7.
struct ConvOperands {
    std::vector<uint8_t> x;
    std::vector<int8_t> w;
    std::vector<int32_t> zw, bias;
    std::vector<float> mult;
};
ConvOperands cnn_operands(const ConvCase& c) {
    ConvOperands o;
    o.x = random_vec<uint8_t>(c.p.batch * c.p.channels * c.p.height * c.p.width, 0, 255);
    o.w = random_vec<int8_t>(c.m * (c.p.channels / c.groups) * c.kh * c.kw, -127, 127);
    o.zw.resize(static_cast<size_t>(c.m));
    o.bias.resize(static_cast<size_t>(c.m));
    o.mult.resize(static_cast<size_t>(c.m));
    for (int64_t i = 0; i < c.m; ++i) {
        o.zw[i] = rnd(-20, 20);
        o.bias[i] = rnd(-3000, 3000);
        o.mult[i] = std::ldexp(1.0f + rnd(0, 1000) / 1000.0f, -rnd(8, 12));
    }
    return o;
}
}  // namespace

TEST(KernelsConv, FastPathsAreBitExactOnRandomGeometries) {
    auto isas = fast_isas();
    if (isas.empty()) GTEST_SKIP();
    for (int iter = 0; iter < 40; ++iter) {
        ConvCase c{};
        c.groups = iter % 5 == 0 ? rnd(2, 3) : 1;
        const int64_t cpg = rnd(1, 6);
        c.p.batch = rnd(1, 2);
        c.p.channels = cpg * c.groups;
        c.p.height = rnd(3, 12);
        c.p.width = rnd(3, 21);  // >= 16 exercises the 16-byte padding copies
        c.kh = rnd(1, 3);
        c.kw = rnd(1, 3);
        c.p.stride_h = rnd(1, 2);
        c.p.stride_w = rnd(1, 2);
        c.p.dilation_h = rnd(1, 2);
        c.p.dilation_w = rnd(1, 2);
        c.p.pad_top = rnd(0, 2);
        c.p.pad_left = rnd(0, 2);
        c.p.pad_bottom = rnd(0, 2);
        c.p.pad_right = rnd(0, 2);
        c.m = c.groups * rnd(1, 20);
        if (iter % 10 == 3) {  // K = C/g * kH * kW > 1024: several K blocks
            c.groups = 1;
            c.p.channels = rnd(115, 130);
            c.kh = c.kw = 3;
            c.m = rnd(1, 30);
        }
        if (iter % 8 == 7) {  // depthwise
            c.groups = c.p.channels = c.m = rnd(2, 9);
        }
        c.x_type = (iter & 1) ? QATML_TYPE_INT8 : QATML_TYPE_UINT8;
        const int ot = iter % 3;
        c.out_type = ot == 0 ? QATML_TYPE_INT32 : ot == 1 ? QATML_TYPE_UINT8 : QATML_TYPE_INT8;
        c.xz = c.x_type == QATML_TYPE_UINT8 ? rnd(0, 255) : rnd(-128, 127);
        c.wzp = iter % 6 == 1;
        c.int4 = iter % 9 == 4;
        int64_t oh = 0, ow = 0;
        if (qatml_conv2d_output_size(&c.p, c.kh, c.kw, &oh, &ow) != QATML_OK) continue;
        const int64_t wn = c.m * (c.p.channels / c.groups) * c.kh * c.kw;
        auto x = random_vec<uint8_t>(c.p.batch * c.p.channels * c.p.height * c.p.width, 0, 255);
        auto w = c.int4 ? random_vec<int8_t>(wn, -8, 7) : random_vec<int8_t>(wn, -127, 127);
        std::vector<int32_t> zw(c.m), bias(c.m);
        std::vector<float> mult(c.m);
        for (int64_t i = 0; i < c.m; ++i) {
            zw[i] = c.int4 ? rnd(-8, 7) : rnd(-20, 20);
            bias[i] = rnd(-3000, 3000);
            mult[i] = std::ldexp(1.0f + rnd(0, 1000) / 1000.0f, -rnd(6, 12));
        }
        auto ref = run_conv(QATML_ISA_SCALAR, c, x, w, zw, bias, mult);
        for (int isa : isas) {
            auto got = run_conv(isa, c, x, w, zw, bias, mult);
            ASSERT_EQ(got, ref) << "isa " << qatml_isa_name(isa) << " iter " << iter;
        }
    }
}

TEST(KernelsConv, ConvIntegerHandMadeWithPaddingAndZeroPoints) {
    // ConvInteger: x [1,1,3,3] uint8, x_zero_point 1, w [1,1,2,2] = 1, pads 1 -> y [1,1,4,4].
    // Padding holds the zero point, so it contributes 0.
    for (int isa : {int(QATML_ISA_SCALAR), -1}) {
        IsaCap cap(isa);
        std::vector<uint8_t> x{2, 3, 4, 5, 6, 7, 8, 9, 10};
        std::vector<int8_t> w{1, 1, 1, 1};
        Packed pw;
        ASSERT_EQ(qatml_conv_pack_weights(nullptr, w.data(), QATML_TYPE_INT8, 1, 1, 2, 2, 1, nullptr, &pw.p), QATML_OK);
        qatml_conv2d_params p{1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
        qatml_epilogue ep;
        std::memset(&ep, 0, sizeof ep);
        ep.out_type = QATML_TYPE_INT32;
        std::vector<int32_t> y(16);
        ASSERT_EQ(qatml_conv2d(nullptr, &p, x.data(), QATML_TYPE_UINT8, 1, pw.p, &ep, y.data()), QATML_OK)
            << qatml_last_error();
        // ONNX ConvInteger reference output for this case.
        std::vector<int32_t> expect{1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9};
        EXPECT_EQ(y, expect);
    }
}

TEST(KernelsConv, QLinearConvHandMade) {
    // x uint8 [1,2,2,2] (zp 128, scale 0.5); w int8 [2,2,1,1] per-channel scales {0.25, 0.5};
    // y uint8 scale 1, zp 10. y = round(sum((x-128)*w) * 0.5*s_w[c]) + 10.
    std::vector<uint8_t> x{130, 126, 128, 140, 132, 128, 100, 129};
    std::vector<int8_t> w{2, -1, 3, 4};
    for (int isa : {int(QATML_ISA_SCALAR), -1}) {
        IsaCap cap(isa);
        Packed pw;
        ASSERT_EQ(qatml_conv_pack_weights(nullptr, w.data(), QATML_TYPE_INT8, 2, 2, 1, 1, 1, nullptr, &pw.p), QATML_OK);
        qatml_conv2d_params p{1, 2, 2, 2, 1, 1, 0, 0, 0, 0, 1, 1};
        float mult[2] = {0.5f * 0.25f / 1.0f, 0.5f * 0.5f / 1.0f};
        qatml_epilogue ep;
        std::memset(&ep, 0, sizeof ep);
        ep.out_type = QATML_TYPE_UINT8;
        ep.multipliers = mult;
        ep.multiplier_count = 2;
        ep.out_zero_point = 10;
        std::vector<uint8_t> y(8);
        ASSERT_EQ(qatml_conv2d(nullptr, &p, x.data(), QATML_TYPE_UINT8, 128, pw.p, &ep, y.data()), QATML_OK);
        // channel 0 acc: 2*(x0-128) - (x1-128): {2*2-4, 2*-2-0, 0-(-28), 2*12-1} = {0,-4,28,23} *0.125
        // -> {0,-0.5,3.5,2.875} -> round half even {0,-0,4,3} + 10
        // channel 1 acc: 3*(x0-128)+4*(x1-128): {6+16, -6+0, 0-112, 36+4} = {22,-6,-112,40} *0.25
        // -> {5.5,-1.5,-28,10} -> {6,-2,-28,10} + 10
        std::vector<uint8_t> expect{10, 10, 14, 13, 16, 8, 0, 20};
        EXPECT_EQ(y, expect);
    }
}

// ---- GEMM hand-made ONNX cases ----------------------------------------------------------------

TEST(KernelsGemm, MatMulIntegerHandMade) {
    // ONNX MatMulInteger example: A uint8 [4,3] zp 12, B int8 [3,2] zp 0 (int8 variant).
    std::vector<uint8_t> a{11, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0};
    std::vector<int8_t> b{1, 4, 2, 5, 3, 6};
    for (int isa : {int(QATML_ISA_SCALAR), -1}) {
        IsaCap cap(isa);
        Packed pw;
        ASSERT_EQ(qatml_gemm_pack_b(nullptr, b.data(), QATML_TYPE_INT8, 3, 2, 0, nullptr, &pw.p), QATML_OK);
        qatml_epilogue ep;
        std::memset(&ep, 0, sizeof ep);
        ep.out_type = QATML_TYPE_INT32;
        std::vector<int32_t> y(8);
        ASSERT_EQ(qatml_gemm(nullptr, 4, a.data(), QATML_TYPE_UINT8, 3, 12, pw.p, &ep, y.data(), 2), QATML_OK);
        std::vector<int32_t> expect{-38, -83, -44, -98, -50, -113, -56, -128};
        EXPECT_EQ(y, expect);
    }
}

TEST(KernelsGemm, QLinearMatMulHandMade) {
    // ONNX QLinearMatMul example (uint8 A, int8 B variant): a_scale 0.0066, a_zp 113, b_scale 0.00705,
    // b_zp 0, y_scale 0.0107, y_zp 118. Expected values computed with the float32 multiplier.
    std::vector<uint8_t> a{208, 236, 0, 238, 3, 214, 255, 29};
    std::vector<int8_t> b{25, -12, 0, 127, -100, 3, 55, 33, 1, 2, 3, 4};  // [4,3]
    const float mult = 0.0066f * 0.00705f / 0.0107f;
    std::vector<uint8_t> expect(6);
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j) {
            int32_t s = 0;
            for (int k = 0; k < 4; ++k) s += (a[i * 4 + k] - 113) * b[k * 3 + j];
            float v = static_cast<float>(s) * mult;
            long q = std::lrint(v) + 118;
            expect[i * 3 + j] = static_cast<uint8_t>(q < 0 ? 0 : q > 255 ? 255 : q);
        }
    for (int isa : {int(QATML_ISA_SCALAR), -1}) {
        IsaCap cap(isa);
        Packed pw;
        ASSERT_EQ(qatml_gemm_pack_b(nullptr, b.data(), QATML_TYPE_INT8, 4, 3, 0, nullptr, &pw.p), QATML_OK);
        qatml_epilogue ep;
        std::memset(&ep, 0, sizeof ep);
        ep.out_type = QATML_TYPE_UINT8;
        ep.multipliers = &mult;
        ep.multiplier_count = 1;
        ep.out_zero_point = 118;
        std::vector<uint8_t> y(6);
        ASSERT_EQ(qatml_gemm(nullptr, 2, a.data(), QATML_TYPE_UINT8, 4, 113, pw.p, &ep, y.data(), 3), QATML_OK);
        EXPECT_EQ(y, expect);
    }
}

// ---- quantize / dequantize / requantize / int4 ------------------------------------------------

TEST(KernelsQuantize, QuantizeLinearRoundsHalfToEvenAndSaturates) {
    std::vector<float> x{0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 1000.f, -1000.f, NAN, 3.0f};
    float s = 1.0f;
    int32_t zp = 128;
    std::vector<uint8_t> y(x.size());
    ASSERT_EQ(qatml_quantize_linear(nullptr, x.data(), 1, 1, 9, &s, &zp, QATML_TYPE_UINT8, y.data()), QATML_OK);
    std::vector<uint8_t> expect{128, 130, 130, 128, 126, 255, 0, 0, 131};  // NaN -> 0, as ONNX Runtime
    EXPECT_EQ(y, expect);
    std::vector<int8_t> y8(x.size());
    ASSERT_EQ(qatml_quantize_linear(nullptr, x.data(), 1, 1, 9, &s, nullptr, QATML_TYPE_INT8, y8.data()), QATML_OK);
    std::vector<int8_t> expect8{0, 2, 2, 0, -2, 127, -128, -128, 3};
    EXPECT_EQ(y8, expect8);
}

// ONNX Runtime's QuantizeLinear (MLAS on x86: max(x / scale, lo - zp), then min(.., hi - zp); maxps returns its
// second operand for a NaN) gives NaN and -Inf the type's minimum and +Inf its maximum, whatever the zero point.
// Every path, every position in a vector and in the tails, every output type.
TEST(KernelsQuantize, NanAndInfinityQuantizeAsOnnxRuntimeOnEveryPath) {
    const uint32_t nan_bits[] = {0x7FC00000u, 0xFFC00001u, 0x7F800001u};  // quiet, negative with payload, signalling
    std::vector<int> paths = qatml_test::fast_isas();
    paths.insert(paths.begin(), QATML_ISA_SCALAR);
    const struct { int32_t type, lo, hi; std::vector<int32_t> zps; } types[] = {
        {QATML_TYPE_UINT8, 0, 255, {0, 131, 255}}, {QATML_TYPE_INT8, -128, 127, {-128, 5, 127}},
        {QATML_TYPE_UINT4, 0, 15, {0, 9, 15}},     {QATML_TYPE_INT4, -8, 7, {-8, 1, 7}}};
    for (int64_t n : {1, 7, 8, 15, 16, 17, 33, 64, 100})
        for (const auto& t : types)
            for (int32_t zp : t.zps)
                for (int path : paths) {
                    std::vector<float> x(static_cast<size_t>(n));
                    for (int64_t i = 0; i < n; ++i) {
                        switch ((i + n) % 5) {
                            case 0: { float v; std::memcpy(&v, &nan_bits[i % 3], 4); x[i] = v; break; }
                            case 1: x[i] = INFINITY; break;
                            case 2: x[i] = -INFINITY; break;
                            default: x[i] = float(i % 3) - 1.0f;  // -1, 0, 1: finite neighbours in the same vector
                        }
                    }
                    const bool four = t.type == QATML_TYPE_UINT4 || t.type == QATML_TYPE_INT4;
                    std::vector<uint8_t> y(static_cast<size_t>(four ? (n + 1) / 2 : n), 0xCD);
                    const float scale = 0.25f;
                    IsaCap cap(path);
                    ASSERT_EQ(qatml_quantize_linear(nullptr, x.data(), 1, 1, n, &scale, &zp, t.type, y.data()), QATML_OK)
                        << qatml_last_error();
                    std::vector<int8_t> q(static_cast<size_t>(n));
                    if (four) ASSERT_EQ(qatml_int4_unpack(y.data(), n, t.type == QATML_TYPE_INT4, q.data()), QATML_OK);
                    for (int64_t i = 0; i < n; ++i) {
                        const int32_t got = four ? (t.type == QATML_TYPE_INT4 ? int32_t(q[i]) : int32_t(uint8_t(q[i])))
                                                 : (t.type == QATML_TYPE_INT8 ? int32_t(int8_t(y[i])) : int32_t(y[i]));
                        const int32_t expected = std::isnan(x[i]) || x[i] == -INFINITY ? t.lo
                                                 : x[i] == INFINITY ? t.hi
                                                                    : std::min(t.hi, std::max(t.lo, int32_t(std::nearbyint(x[i] / scale)) + zp));
                        ASSERT_EQ(got, expected) << "path " << qatml_isa_name(path) << " type " << t.type << " zp " << zp << " n " << n
                                                 << " element " << i << " x " << x[i];
                    }
                }
}

TEST(KernelsQuantize, PerChannelAndInt4) {
    // x [2 channels, 3 inner], axis 0 scales {0.5, 2}, int4 output, zero points {1, -2}.
    std::vector<float> x{1.0f, -3.0f, 100.0f, 2.0f, 3.0f, -100.0f};
    float scales[2] = {0.5f, 2.0f};
    int32_t zps[2] = {1, -2};
    std::vector<uint8_t> y(3);
    ASSERT_EQ(qatml_quantize_linear(nullptr, x.data(), 1, 2, 3, scales, zps, QATML_TYPE_INT4, y.data()), QATML_OK);
    // ch0: 2+1=3, -6+1=-5, 200->7 ; ch1: 1-2=-1, 1.5->2-2=0, -50->-8
    std::vector<int8_t> unpacked(6);
    ASSERT_EQ(qatml_int4_unpack(y.data(), 6, 1, unpacked.data()), QATML_OK);
    EXPECT_EQ(unpacked, (std::vector<int8_t>{3, -5, 7, -1, 0, -8}));
    EXPECT_EQ(y[0], uint8_t((3 & 0xf) | ((-5 & 0xf) << 4)));  // first element in the low nibble
    std::vector<float> back(6);
    ASSERT_EQ(qatml_dequantize_linear(nullptr, y.data(), QATML_TYPE_INT4, 1, 2, 3, scales, zps, back.data()), QATML_OK);
    EXPECT_EQ(back, (std::vector<float>{1.0f, -3.0f, 3.0f, 2.0f, 4.0f, -12.0f}));
}

TEST(KernelsQuantize, DequantizeAndRequantize) {
    std::vector<uint8_t> x{0, 128, 255};
    float s = 0.1f;
    int32_t zp = 128;
    std::vector<float> y(3);
    ASSERT_EQ(qatml_dequantize_linear(nullptr, x.data(), QATML_TYPE_UINT8, 1, 1, 3, &s, &zp, y.data()), QATML_OK);
    EXPECT_EQ(y[0], -128 * 0.1f);
    EXPECT_EQ(y[1], 0.0f);
    EXPECT_EQ(y[2], 127 * 0.1f);
    std::vector<int32_t> acc{10, 30, 50, -1000000};
    int32_t bias[2] = {0, 10};
    float mult[2] = {0.1f, 0.05f};
    std::vector<int8_t> q(4);
    // [outer 1, channels 2, inner 2]
    ASSERT_EQ(qatml_requantize(nullptr, acc.data(), 1, 2, 2, bias, mult, 0, QATML_TYPE_INT8, q.data()), QATML_OK);
    EXPECT_EQ(q, (std::vector<int8_t>{1, 3, 3, -128}));  // 1.0, 3.0, 60*.05=3.0, saturated
}

// ---- pooling and add --------------------------------------------------------------------------

TEST(KernelsPool, MaxAverageAndGlobalAverage) {
    std::vector<uint8_t> x{1, 2, 3, 4, 5, 6, 7, 8, 9};  // [1,1,3,3]
    qatml_conv2d_params p{1, 1, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1};
    std::vector<uint8_t> y(4);
    ASSERT_EQ(qatml_pool2d(nullptr, QATML_POOL_MAX, &p, 2, 2, 0, x.data(), QATML_TYPE_UINT8, 1, 0, 1, 0, y.data()), QATML_OK);
    EXPECT_EQ(y, (std::vector<uint8_t>{5, 6, 8, 9}));
    ASSERT_EQ(qatml_pool2d(nullptr, QATML_POOL_AVERAGE, &p, 2, 2, 0, x.data(), QATML_TYPE_UINT8, 1.0f, 0, 1.0f, 0, y.data()),
              QATML_OK);
    // (1+2+4+5)/4 = 3, (2+3+5+6)/4 = 4, 6, 7
    EXPECT_EQ(y, (std::vector<uint8_t>{3, 4, 6, 7}));
    // padded average, count_include_pad: corner (1) /4 with pads 1 -> 0.25 -> 0
    qatml_conv2d_params pp{1, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1};
    std::vector<uint8_t> y2(4);
    ASSERT_EQ(qatml_pool2d(nullptr, QATML_POOL_AVERAGE, &pp, 2, 2, 1, x.data(), QATML_TYPE_UINT8, 1.0f, 0, 1.0f, 0, y2.data()),
              QATML_OK);
    EXPECT_EQ(y2, (std::vector<uint8_t>{0, 1, 3, 7}));  // 1/4, (2+3)/4, (4+7)/4, (5+6+8+9)/4
    std::vector<uint8_t> g(1);
    ASSERT_EQ(qatml_global_average_pool(nullptr, x.data(), QATML_TYPE_UINT8, 1, 1, 9, 1.0f, 0, 1.0f, 0, g.data()), QATML_OK);
    EXPECT_EQ(g[0], 5);
}

TEST(KernelsAdd, QLinearAdd) {
    std::vector<uint8_t> a{0, 128, 255}, b{128, 129, 255}, y(3);
    ASSERT_EQ(qatml_add(nullptr, a.data(), 0.5f, 128, b.data(), 0.25f, 128, QATML_TYPE_UINT8, 3, 1.0f, 128, y.data()), QATML_OK);
    // (-128*0.5 + 0) = -64 -> 64; (0 + 0.25) -> 0 -> 128; (63.5 + 31.75 = 95.25) -> 95 -> 223
    EXPECT_EQ(y, (std::vector<uint8_t>{64, 128, 223}));
}

// ---- validation -------------------------------------------------------------------------------

// Multipliers the add and average-pool kernels derive from two scales: a ratio above 2^64 made inf - inf or
// 0 * inf = NaN and an undefined NaN -> int conversion (found by fuzzing the engine); now a clear error. Windows
// whose int32 sums could overflow are refused too.
TEST(KernelsAbi, ScaleRatiosAndWindowsThatWouldOverflowAreRejected) {
    const std::vector<uint8_t> a{0, 255, 7, 200}, b{255, 0, 9, 1};
    std::vector<uint8_t> y(4, 0xCD);
    for (int path : {int(QATML_ISA_SCALAR), -1}) {
        IsaCap cap(path);
        EXPECT_EQ(qatml_add(nullptr, a.data(), 3e38f, 0, b.data(), 1.0f, 0, QATML_TYPE_UINT8, 4, 1.0f, 0, y.data()), QATML_INVALID_ARGUMENT);
        EXPECT_NE(std::string(qatml_last_error()).find("a_scale / y_scale = 3e+38 / 1 exceeds 2^64"), std::string::npos) << qatml_last_error();
        EXPECT_EQ(qatml_add(nullptr, a.data(), 1.0f, 0, b.data(), 1.0f, 0, QATML_TYPE_UINT8, 4, 1e-30f, 0, y.data()), QATML_INVALID_ARGUMENT);
        EXPECT_EQ(qatml_global_average_pool(nullptr, a.data(), QATML_TYPE_UINT8, 1, 1, 4, 0.5f, 0, 1e-30f, 0, y.data()), QATML_INVALID_ARGUMENT);
        EXPECT_NE(std::string(qatml_last_error()).find("x_scale / y_scale"), std::string::npos) << qatml_last_error();
        qatml_conv2d_params p{1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, 1};
        EXPECT_EQ(qatml_pool2d(nullptr, QATML_POOL_AVERAGE, &p, 1, 1, 0, a.data(), QATML_TYPE_UINT8, 1.0f, 0, 1e-30f, 0, y.data()),
                  QATML_INVALID_ARGUMENT);
        // At the limit: 2^64 is accepted; a ratio that large saturates every non-zero difference.
        const float limit = 18446744073709551616.0f;
        ASSERT_EQ(qatml_add(nullptr, a.data(), limit, 7, b.data(), 1.0f, 9, QATML_TYPE_UINT8, 4, 1.0f, 100, y.data()), QATML_OK)
            << qatml_last_error();
        EXPECT_EQ(y, (std::vector<uint8_t>{0, 255, 100, 255}));  // (a - 7) * 2^64 + (b - 9) + 100, saturated
        // An average window of 2^23 + 1 cells could overflow its int32 sum (pads let a tiny input have one).
        qatml_conv2d_params wide{1, 1, 1, 1, 1, 1, 1024, 2048, 1024, 2048, 1, 1};
        std::vector<uint8_t> out(4);
        EXPECT_EQ(qatml_pool2d(nullptr, QATML_POOL_AVERAGE, &wide, 2049, 4097, 1, a.data(), QATML_TYPE_UINT8, 1.0f, 0, 1.0f, 0, out.data()),
                  QATML_INVALID_ARGUMENT);
        EXPECT_NE(std::string(qatml_last_error()).find("exceeds 2^23 cells"), std::string::npos) << qatml_last_error();
    }
}

// Pads and strides of 2^20 around a one-pixel input with 2^22 channels: a 3x3 output, but the fast paths'
// padded-input scratch sizes overflowed int64 (a wrapped, too small buffer). Every path now refuses the
// geometry at the ABI with the product named; the scalar path refuses it too, so all paths agree.
TEST(KernelsAbi, ConvolutionWhoseScratchWouldOverflowIsRejected) {
    for (int64_t cpg : {int64_t(4), int64_t(1) << 22}) {
        std::vector<int8_t> w(static_cast<size_t>(cpg), 1);
        std::vector<uint8_t> x(static_cast<size_t>(cpg), 3);
        std::vector<int32_t> y(9, -1);
        const int64_t big = int64_t(1) << 20;
        qatml_conv2d_params p{1, cpg, 1, 1, big, big, big, big, big, big, 1, 1};
        int64_t oh = 0, ow = 0;
        ASSERT_EQ(qatml_conv2d_output_size(&p, 1, 1, &oh, &ow), QATML_OK);
        ASSERT_EQ(oh * ow, 9);
        qatml_epilogue ep;
        std::memset(&ep, 0, sizeof ep);
        ep.out_type = QATML_TYPE_INT32;
        std::vector<int> paths = qatml_test::fast_isas();
        paths.insert(paths.begin(), QATML_ISA_SCALAR);
        for (int path : paths) {
            IsaCap cap(path);
            Packed pw;
            ASSERT_EQ(qatml_conv_pack_weights(nullptr, w.data(), QATML_TYPE_INT8, 1, cpg, 1, 1, 1, nullptr, &pw.p), QATML_OK);
            EXPECT_EQ(qatml_conv2d(nullptr, &p, x.data(), QATML_TYPE_UINT8, 0, pw.p, &ep, y.data()), QATML_INVALID_ARGUMENT)
                << qatml_isa_name(path);
            EXPECT_NE(std::string(qatml_last_error()).find("C/g (in 4s) * (H + pads + stride)"), std::string::npos)
                << qatml_last_error();
        }
    }
}

// A one-pixel input with pads of 2^16: a pool whose padded plane is 2^34 bytes is refused on every path (the
// fast paths would allocate and fill it), and so is a convolution over it; a 2^15 plane is within the limit.
TEST(KernelsAbi, PoolAndConvolutionScratchIsBoundedBy2To31Bytes) {
    const std::vector<uint8_t> x(4, 7);
    std::vector<uint8_t> y(4);
    const int64_t pad = int64_t(1) << 16;
    qatml_conv2d_params p{1, 1, 1, 1, pad, pad, pad, pad, pad, pad, 1, 1};  // stride = pad: a 3x3 output
    for (int path : {int(QATML_ISA_SCALAR), -1}) {
        IsaCap cap(path);
        for (int32_t kind : {QATML_POOL_MAX, QATML_POOL_AVERAGE}) {
            EXPECT_EQ(qatml_pool2d(nullptr, kind, &p, 2, 2, 0, x.data(), QATML_TYPE_UINT8, 1.0f, 0, 1.0f, 0, y.data()), QATML_INVALID_ARGUMENT);
            EXPECT_NE(std::string(qatml_last_error()).find("(H + pads) * (W + pads) = 131073 * 131073 overflows or exceeds 2^31"),
                      std::string::npos)
                << qatml_last_error();
        }
        Packed pw;
        const int8_t w = 1;
        ASSERT_EQ(qatml_conv_pack_weights(nullptr, &w, QATML_TYPE_INT8, 1, 1, 1, 1, 1, nullptr, &pw.p), QATML_OK);
        qatml_epilogue ep;
        std::memset(&ep, 0, sizeof ep);
        ep.out_type = QATML_TYPE_INT32;
        std::vector<int32_t> out(9);
        EXPECT_EQ(qatml_conv2d(nullptr, &p, x.data(), QATML_TYPE_UINT8, 0, pw.p, &ep, out.data()), QATML_INVALID_ARGUMENT);
        qatml_conv2d_params small{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
        ASSERT_EQ(qatml_pool2d(nullptr, QATML_POOL_MAX, &small, 2, 2, 0, x.data(), QATML_TYPE_UINT8, 1.0f, 0, 1.0f, 0, y.data()), QATML_OK)
            << qatml_last_error();
        EXPECT_EQ(y, (std::vector<uint8_t>{7, 7, 7, 7}));  // each 2x2 window holds the one real pixel
    }
}

TEST(KernelsAbi, ValidatesArguments) {
    std::vector<int8_t> b(12, 1);
    qatml_packed_weights* pw = nullptr;
    EXPECT_EQ(qatml_gemm_pack_b(nullptr, nullptr, QATML_TYPE_INT8, 3, 4, 0, nullptr, &pw), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("'b' is NULL"), std::string::npos) << qatml_last_error();
    EXPECT_EQ(qatml_gemm_pack_b(nullptr, b.data(), QATML_TYPE_INT8, 0, 4, 0, nullptr, &pw), QATML_INVALID_ARGUMENT);
    EXPECT_EQ(qatml_gemm_pack_b(nullptr, b.data(), QATML_TYPE_INT8, int64_t(1) << 30, int64_t(1) << 30, 0, nullptr, &pw),
              QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("overflows"), std::string::npos) << qatml_last_error();
    EXPECT_EQ(qatml_gemm_pack_b(nullptr, b.data(), QATML_TYPE_UINT8, 3, 4, 0, nullptr, &pw), QATML_INVALID_ARGUMENT);
    ASSERT_EQ(qatml_gemm_pack_b(nullptr, b.data(), QATML_TYPE_INT8, 3, 4, 0, nullptr, &pw), QATML_OK);
    std::vector<uint8_t> a(6, 1);
    std::vector<int32_t> c(8 + 1);
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    ep.out_type = QATML_TYPE_INT32;
    EXPECT_EQ(qatml_gemm(nullptr, 2, a.data(), QATML_TYPE_UINT8, 2, 0, pw, &ep, c.data(), 4), QATML_INVALID_ARGUMENT);  // lda < K
    EXPECT_EQ(qatml_gemm(nullptr, 2, a.data(), QATML_TYPE_UINT8, 3, 300, pw, &ep, c.data(), 4), QATML_INVALID_ARGUMENT);
    EXPECT_EQ(qatml_gemm(nullptr, 2, a.data(), QATML_TYPE_UINT8, 3, 0, pw, &ep,
                         reinterpret_cast<uint8_t*>(c.data()) + 1, 4),
              QATML_INVALID_ARGUMENT);  // misaligned int32 output
    EXPECT_NE(std::string(qatml_last_error()).find("aligned"), std::string::npos);
    ep.out_type = QATML_TYPE_UINT8;  // no multipliers
    EXPECT_EQ(qatml_gemm(nullptr, 2, a.data(), QATML_TYPE_UINT8, 3, 0, pw, &ep, c.data(), 4), QATML_INVALID_ARGUMENT);
    ep.out_type = QATML_TYPE_INT32;
    EXPECT_EQ(qatml_gemm(nullptr, 2, a.data(), QATML_TYPE_UINT8, 3, 0, pw, &ep, c.data(), 4), QATML_OK);
    ASSERT_EQ(qatml_packed_weights_destroy(pw), QATML_OK);
    EXPECT_EQ(qatml_gemm(nullptr, 2, a.data(), QATML_TYPE_UINT8, 3, 0, pw, &ep, c.data(), 4), QATML_INVALID_HANDLE);
    EXPECT_EQ(qatml_packed_weights_destroy(pw), QATML_INVALID_HANDLE);
    EXPECT_EQ(qatml_packed_weights_destroy(nullptr), QATML_OK);
    // A context is not packed weights.
    qatml_device cpu{QATML_DEVICE_CPU, 0};
    qatml_context* ctx = nullptr;
    ASSERT_EQ(qatml_context_create(&cpu, 1, &ctx), QATML_OK);
    EXPECT_EQ(qatml_gemm(ctx, 2, a.data(), QATML_TYPE_UINT8, 3, 0, reinterpret_cast<qatml_packed_weights*>(ctx), &ep,
                         c.data(), 4),
              QATML_INVALID_HANDLE);
    float s = 0.0f;
    std::vector<float> x(4);
    std::vector<uint8_t> q(4);
    EXPECT_EQ(qatml_quantize_linear(ctx, x.data(), 1, 1, 4, &s, nullptr, QATML_TYPE_UINT8, q.data()), QATML_INVALID_ARGUMENT);
    s = 1.0f;
    EXPECT_EQ(qatml_quantize_linear(ctx, x.data(), 1, 1, 4, &s, nullptr, QATML_TYPE_UINT8, q.data()), QATML_OK);
    qatml_context_destroy(ctx);
    EXPECT_EQ(qatml_quantize_linear(ctx, x.data(), 1, 1, 4, &s, nullptr, QATML_TYPE_UINT8, q.data()), QATML_INVALID_HANDLE);
    qatml_conv2d_params p{1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, 1};
    int64_t oh, ow;
    EXPECT_EQ(qatml_conv2d_output_size(&p, 3, 3, &oh, &ow), QATML_INVALID_ARGUMENT);
    p.stride_h = 0;
    EXPECT_EQ(qatml_conv2d_output_size(&p, 1, 1, &oh, &ow), QATML_INVALID_ARGUMENT);
    std::vector<int8_t> bad{9};
    std::vector<uint8_t> packed(1);
    EXPECT_EQ(qatml_int4_pack(bad.data(), 1, 1, packed.data()), QATML_INVALID_ARGUMENT);
}

// ---- vectorised elementwise, pooling and depthwise paths: bit-exact against the scalar ISA ----

namespace {
// Runs `fn` with the ISA capped at each fast level and checks its output equals the scalar run.
template <typename Out, typename Fn>
void expect_all_isas_match(const Fn& fn, const std::string& what) {
    std::vector<Out> ref;
    {
        IsaCap cap(QATML_ISA_SCALAR);
        ref = fn();
    }
    for (int isa : fast_isas()) {
        IsaCap cap(isa);
        const std::vector<Out> got = fn();
        ASSERT_EQ(got.size(), ref.size()) << what;
        for (size_t i = 0; i < ref.size(); ++i)
            ASSERT_EQ(std::memcmp(&got[i], &ref[i], sizeof(Out)), 0)
                << "isa " << qatml_isa_name(isa) << " " << what << " element " << i << " of " << ref.size();
    }
}
float random_scale(int lo_exp, int hi_exp) { return std::ldexp(1.0f + rnd(0, 1 << 20) / float(1 << 20), rnd(lo_exp, hi_exp)); }
}  // namespace

TEST(KernelsSimd, QuantizeLinearMatchesScalar) {
    if (fast_isas().empty()) GTEST_SKIP();
    for (int iter = 0; iter < 40; ++iter) {
        const int64_t outer = rnd(1, 3), channels = iter % 2 ? rnd(2, 5) : 1, inner = rnd(1, 150);
        const int32_t type = iter % 3 == 0 ? QATML_TYPE_INT8 : QATML_TYPE_UINT8;
        const int64_t n = outer * channels * inner;
        std::vector<float> scales(channels);
        std::vector<int32_t> zps(channels);
        for (int64_t c = 0; c < channels; ++c) {
            scales[c] = random_scale(-8, 2);
            zps[c] = type == QATML_TYPE_UINT8 ? rnd(0, 255) : rnd(-128, 127);
        }
        std::vector<float> x(n);
        for (int64_t i = 0; i < n; ++i) {
            const float s = scales[(i / inner) % channels];
            switch (rnd(0, 5)) {
                case 0: x[i] = (float(rnd(-300, 300)) + 0.5f) * s; break;  // exact halves: round half to even
                case 1: x[i] = float(rnd(-100000, 100000)); break;          // saturates
                case 2: x[i] = i % 7 == 0 ? NAN : (i % 7 == 1 ? INFINITY : -INFINITY); break;
                default: x[i] = float(rnd(-(1 << 20), 1 << 20)) / float(1 << 12) * s;
            }
        }
        const bool per_tensor_zp_null = iter % 5 == 4;
        expect_all_isas_match<uint8_t>(
            [&] {
                std::vector<uint8_t> y(n, 0xCD);
                EXPECT_EQ(qatml_quantize_linear(nullptr, x.data(), outer, channels, inner, scales.data(),
                                                per_tensor_zp_null ? nullptr : zps.data(), type, y.data()),
                          QATML_OK)
                    << qatml_last_error();
                return y;
            },
            "quantize iter " + std::to_string(iter));
    }
}

TEST(KernelsSimd, DequantizeAndRequantizeMatchScalar) {
    if (fast_isas().empty()) GTEST_SKIP();
    for (int iter = 0; iter < 30; ++iter) {
        const int64_t outer = rnd(1, 3), channels = iter % 2 ? rnd(2, 5) : 1, inner = rnd(1, 150);
        const int64_t n = outer * channels * inner;
        const int32_t types[3] = {QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_INT32};
        const int32_t in_type = types[iter % 3];
        std::vector<float> scales(channels), mult(channels);
        std::vector<int32_t> zps(channels), bias(channels);
        for (int64_t c = 0; c < channels; ++c) {
            scales[c] = random_scale(-10, 3);
            mult[c] = random_scale(-16, -4);
            zps[c] = in_type == QATML_TYPE_UINT8 ? rnd(0, 255) : in_type == QATML_TYPE_INT8 ? rnd(-128, 127) : rnd(-100000, 100000);
            bias[c] = rnd(-50000, 50000);
        }
        std::vector<int32_t> x32(n);
        for (auto& v : x32) v = iter % 4 == 3 ? static_cast<int32_t>(rng()()) : rnd(-2000000, 2000000);  // full range wraps
        auto x8 = random_vec<uint8_t>(n, 0, 255);
        const void* x = in_type == QATML_TYPE_INT32 ? static_cast<const void*>(x32.data()) : x8.data();
        expect_all_isas_match<float>(
            [&] {
                std::vector<float> y(n, -1.0f);
                EXPECT_EQ(qatml_dequantize_linear(nullptr, x, in_type, outer, channels, inner, scales.data(), zps.data(),
                                                  y.data()),
                          QATML_OK)
                    << qatml_last_error();
                return y;
            },
            "dequantize iter " + std::to_string(iter));
        const int32_t out_type = iter % 2 ? QATML_TYPE_INT8 : QATML_TYPE_UINT8;
        const int32_t out_zp = out_type == QATML_TYPE_UINT8 ? rnd(0, 255) : rnd(-128, 127);
        expect_all_isas_match<uint8_t>(
            [&] {
                std::vector<uint8_t> y(n, 0xCD);
                EXPECT_EQ(qatml_requantize(nullptr, x32.data(), outer, channels, inner, iter % 3 ? bias.data() : nullptr,
                                           mult.data(), out_zp, out_type, y.data()),
                          QATML_OK)
                    << qatml_last_error();
                return y;
            },
            "requantize iter " + std::to_string(iter));
    }
}

TEST(KernelsSimd, AddMatchesScalar) {
    if (fast_isas().empty()) GTEST_SKIP();
    for (int iter = 0; iter < 30; ++iter) {
        const int64_t n = iter < 3 ? iter + 1 : rnd(1, 400);
        const int32_t type = iter % 2 ? QATML_TYPE_INT8 : QATML_TYPE_UINT8;
        auto zp = [&] { return type == QATML_TYPE_UINT8 ? rnd(0, 255) : rnd(-128, 127); };
        const int32_t za = zp(), zb = zp(), zy = zp();
        const float sa = random_scale(-8, 0), sb = random_scale(-8, 0), sy = random_scale(-8, 0);
        auto a = random_vec<uint8_t>(n, 0, 255), b = random_vec<uint8_t>(n, 0, 255);
        const bool in_place = iter % 4 == 1;  // y aliases a
        expect_all_isas_match<uint8_t>(
            [&] {
                std::vector<uint8_t> y = in_place ? a : std::vector<uint8_t>(n, 0xCD);
                EXPECT_EQ(qatml_add(nullptr, in_place ? y.data() : a.data(), sa, za, b.data(), sb, zb, type, n, sy, zy,
                                    y.data()),
                          QATML_OK)
                    << qatml_last_error();
                return y;
            },
            "add iter " + std::to_string(iter));
    }
}

TEST(KernelsSimd, PoolingMatchesScalar) {
    if (fast_isas().empty()) GTEST_SKIP();
    for (int iter = 0; iter < 60; ++iter) {
        qatml_conv2d_params p{};
        p.batch = rnd(1, 2);
        p.channels = rnd(1, 3);
        p.height = rnd(1, 20);
        p.width = iter % 3 == 0 ? rnd(60, 140) : rnd(1, 40);  // wide rows: several vectors and a tail
        const int64_t kh = rnd(1, 4), kw = rnd(1, 4);
        p.stride_h = rnd(1, 3);
        p.stride_w = rnd(1, 3);
        p.dilation_h = rnd(1, 2);
        p.dilation_w = rnd(1, 2);
        p.pad_top = rnd(0, 2);
        p.pad_left = rnd(0, 2);
        p.pad_bottom = rnd(0, 2);
        p.pad_right = rnd(0, 2);
        int64_t oh = 0, ow = 0;
        if (qatml_conv2d_output_size(&p, kh, kw, &oh, &ow) != QATML_OK) continue;
        const int32_t kind = iter % 2 ? QATML_POOL_AVERAGE : QATML_POOL_MAX;
        const int32_t type = (iter / 2) % 2 ? QATML_TYPE_INT8 : QATML_TYPE_UINT8;
        const int32_t include_pad = (iter / 4) % 2;
        const int32_t xz = type == QATML_TYPE_UINT8 ? rnd(0, 255) : rnd(-128, 127);
        const int32_t yz = type == QATML_TYPE_UINT8 ? rnd(0, 255) : rnd(-128, 127);
        const float xs = random_scale(-6, 0), ys = random_scale(-6, 0);
        auto x = random_vec<uint8_t>(p.batch * p.channels * p.height * p.width, 0, 255);
        expect_all_isas_match<uint8_t>(
            [&] {
                std::vector<uint8_t> y(p.batch * p.channels * oh * ow, 0xCD);
                EXPECT_EQ(qatml_pool2d(nullptr, kind, &p, kh, kw, include_pad, x.data(), type, xs, xz, ys, yz, y.data()),
                          QATML_OK)
                    << qatml_last_error();
                return y;
            },
            "pool iter " + std::to_string(iter));
    }
    for (int iter = 0; iter < 20; ++iter) {
        const int64_t batch = rnd(1, 2), channels = rnd(1, 4), spatial = iter < 2 ? iter + 1 : rnd(1, 700);
        const int32_t type = iter % 2 ? QATML_TYPE_INT8 : QATML_TYPE_UINT8;
        const int32_t xz = type == QATML_TYPE_UINT8 ? rnd(0, 255) : rnd(-128, 127);
        const int32_t yz = type == QATML_TYPE_UINT8 ? rnd(0, 255) : rnd(-128, 127);
        const float xs = random_scale(-6, 0), ys = random_scale(-6, 0);
        auto x = random_vec<uint8_t>(batch * channels * spatial, 0, 255);
        expect_all_isas_match<uint8_t>(
            [&] {
                std::vector<uint8_t> y(batch * channels, 0xCD);
                EXPECT_EQ(qatml_global_average_pool(nullptr, x.data(), type, batch, channels, spatial, xs, xz, ys, yz, y.data()),
                          QATML_OK)
                    << qatml_last_error();
                return y;
            },
            "global average pool iter " + std::to_string(iter));
    }
}

namespace {
// A k x k MaxPool of random bytes on every ISA equals the scalar reference.
void expect_max_pool_isas_match(const qatml_conv2d_params& p, int64_t k, int32_t type, const std::string& what) {
    int64_t oh = 0, ow = 0;
    ASSERT_EQ(qatml_conv2d_output_size(&p, k, k, &oh, &ow), QATML_OK);
    auto x = random_vec<uint8_t>(p.batch * p.channels * p.height * p.width, 0, 255);
    expect_all_isas_match<uint8_t>(
        [&] {
            std::vector<uint8_t> y(p.batch * p.channels * oh * ow, 0xCD);
            EXPECT_EQ(qatml_pool2d(nullptr, QATML_POOL_MAX, &p, k, k, 0, x.data(), type, 1.0f, 0, 1.0f, 0, y.data()), QATML_OK)
                << qatml_last_error();
            return y;
        },
        what);
}
}  // namespace

// The 2x2 stride-2 MaxPool fast path (odd and even sizes, rows of several vectors) against the scalar reference.
TEST(KernelsSimd, MaxPool2x2MatchesScalar) {
    if (fast_isas().empty()) GTEST_SKIP();
    for (int iter = 0; iter < 40; ++iter) {
        qatml_conv2d_params p{};
        p.batch = rnd(1, 3);
        p.channels = rnd(1, 5);
        p.height = rnd(2, 30);
        p.width = iter % 4 == 0 ? rnd(100, 300) : rnd(2, 70);
        p.stride_h = p.stride_w = 2;
        p.dilation_h = p.dilation_w = 1;
        expect_max_pool_isas_match(p, 2, iter % 2 ? QATML_TYPE_INT8 : QATML_TYPE_UINT8, "maxpool 2x2 iter " + std::to_string(iter));
    }
}

// The 3x3 stride-2 MaxPool fast path (pads 0 / 1 on each side, odd and even sizes, rows of several
// vectors, planes narrower than the window's reach) against the scalar reference.
TEST(KernelsSimd, MaxPool3x3Stride2MatchesScalar) {
    if (fast_isas().empty()) GTEST_SKIP();
    for (int iter = 0; iter < 60; ++iter) {
        qatml_conv2d_params p{};
        p.batch = rnd(1, 2);
        p.channels = rnd(1, 4);
        p.height = rnd(3, 30);
        p.width = iter % 5 == 0 ? rnd(100, 300) : rnd(3, 70);
        p.stride_h = p.stride_w = 2;
        p.dilation_h = p.dilation_w = 1;
        p.pad_top = rnd(0, 1);
        p.pad_left = rnd(0, 1);
        p.pad_bottom = rnd(0, 1);
        p.pad_right = rnd(0, 1);
        expect_max_pool_isas_match(p, 3, iter % 2 ? QATML_TYPE_INT8 : QATML_TYPE_UINT8,
                                   "maxpool 3x3 stride 2 iter " + std::to_string(iter));
    }
}

// An AveragePool whose window is the whole plane (no padding) runs as a global average pool: the same
// integer sum and multiplier x_scale / (y_scale * H * W) as the ONNX formula computed here.
TEST(KernelsPool, WholePlaneAveragePoolMatchesTheFormula) {
    for (int iter = 0; iter < 20; ++iter) {
        qatml_conv2d_params p{};
        p.batch = rnd(1, 3);
        p.channels = rnd(1, 40);
        p.height = rnd(1, 9);
        p.width = rnd(1, 9);
        p.stride_h = p.stride_w = rnd(1, 2);
        p.dilation_h = p.dilation_w = 1;
        const int32_t type = iter % 2 ? QATML_TYPE_INT8 : QATML_TYPE_UINT8;
        const bool sg = type == QATML_TYPE_INT8;
        const int32_t lo = sg ? -128 : 0, hi = sg ? 127 : 255;
        const int32_t xz = rnd(lo, hi), yz = rnd(lo, hi);
        const float xs = 0.01f * float(rnd(1, 100)), ys = 0.01f * float(rnd(1, 100));
        auto x = random_vec<uint8_t>(p.batch * p.channels * p.height * p.width, 0, 255);
        std::vector<uint8_t> y(static_cast<size_t>(p.batch * p.channels), 0xCD);
        ASSERT_EQ(qatml_pool2d(nullptr, QATML_POOL_AVERAGE, &p, p.height, p.width, 0, x.data(), type, xs, xz, ys, yz, y.data()),
                  QATML_OK)
            << qatml_last_error();
        const int64_t hw = p.height * p.width;
        const float m = xs / (ys * static_cast<float>(hw));
        for (int64_t nc = 0; nc < p.batch * p.channels; ++nc) {
            int32_t sum = 0;
            for (int64_t i = 0; i < hw; ++i) sum += sg ? int32_t(int8_t(x[nc * hw + i])) : int32_t(x[nc * hw + i]);
            float f = static_cast<float>(sum - static_cast<int32_t>(hw) * xz) * m;
            f = std::min(std::max(f, static_cast<float>(lo - yz)), static_cast<float>(hi - yz));
            const int32_t want = static_cast<int32_t>(std::nearbyint(f)) + yz;
            const int32_t got = sg ? int32_t(int8_t(y[nc])) : int32_t(y[nc]);
            ASSERT_EQ(got, want) << "iter " << iter << " plane " << nc;
        }
    }
}

TEST(KernelsSimd, DepthwiseConvMatchesScalar) {
    auto isas = fast_isas();
    if (isas.empty()) GTEST_SKIP();
    for (int iter = 0; iter < 40; ++iter) {
        ConvCase c{};
        c.p.batch = rnd(1, 2);
        c.groups = c.p.channels = c.m = rnd(1, 6);
        c.p.height = rnd(1, 14);
        c.p.width = iter % 3 == 0 ? rnd(30, 140) : rnd(1, 24);  // wide rows reach the 4- and 2-vector blocks
        c.kh = rnd(1, 5);
        c.kw = rnd(1, 5);
        c.p.stride_h = rnd(1, 3);
        c.p.stride_w = rnd(1, 3);
        c.p.dilation_h = rnd(1, 2);
        c.p.dilation_w = rnd(1, 2);
        c.p.pad_top = rnd(0, 2);
        c.p.pad_left = rnd(0, 2);
        c.p.pad_bottom = rnd(0, 2);
        c.p.pad_right = rnd(0, 2);
        c.x_type = (iter & 1) ? QATML_TYPE_INT8 : QATML_TYPE_UINT8;
        const int ot = iter % 3;
        c.out_type = ot == 0 ? QATML_TYPE_INT32 : ot == 1 ? QATML_TYPE_UINT8 : QATML_TYPE_INT8;
        c.xz = c.x_type == QATML_TYPE_UINT8 ? rnd(0, 255) : rnd(-128, 127);
        c.wzp = iter % 4 == 1;
        c.int4 = iter % 7 == 5;
        int64_t oh = 0, ow = 0;
        if (qatml_conv2d_output_size(&c.p, c.kh, c.kw, &oh, &ow) != QATML_OK) continue;
        const int64_t wn = c.m * c.kh * c.kw;
        auto x = random_vec<uint8_t>(c.p.batch * c.p.channels * c.p.height * c.p.width, 0, 255);
        auto w = c.int4 ? random_vec<int8_t>(wn, -8, 7) : random_vec<int8_t>(wn, -128, 127);
        std::vector<int32_t> zw(c.m), bias(c.m);
        std::vector<float> mult(c.m);
        for (int64_t i = 0; i < c.m; ++i) {
            zw[i] = c.int4 ? rnd(-8, 7) : rnd(-128, 127);
            bias[i] = rnd(-3000, 3000);
            mult[i] = std::ldexp(1.0f + rnd(0, 1000) / 1000.0f, -rnd(4, 10));
        }
        auto ref = run_conv(QATML_ISA_SCALAR, c, x, w, zw, bias, mult);
        for (int isa : isas) ASSERT_EQ(run_conv(isa, c, x, w, zw, bias, mult), ref) << "isa " << qatml_isa_name(isa) << " iter " << iter;
    }
}

// Convolution + stride-2 MaxPool (2x2, or 3x3 with pads 0 / 1) in one call equals the convolution, then
// qatml_pool2d, on every ISA (AVX-512 VNNI pools inside the channel-lane output pass; the others, and weight
// zero points, pool a scratch output). Shapes: FmnistNet's two conv + pool pairs, ResNet's stem (C = 3 over
// HWC bytes, 7x7 stride 2, then 3x3 / 2 pad 1) at a smaller size, C = 2, odd output sizes (the floor drops a
// row and a column), int8 outputs, groups, depthwise.
TEST(KernelsConv, ConvMaxPoolEqualsConvThenPool) {
    std::vector<int> isas = fast_isas();
    isas.insert(isas.begin(), QATML_ISA_SCALAR);
    const struct { int64_t n, c, m, h, w, k, s, pad, groups; bool wzp; int32_t x_type, out_type; int64_t pool, pads[4]; } shapes[] = {
        {3, 1, 32, 28, 28, 3, 1, 1, 1, false, QATML_TYPE_UINT8, QATML_TYPE_UINT8, 2, {0, 0, 0, 0}},   // FmnistNet conv1 + pool1
        {2, 32, 64, 14, 14, 3, 1, 1, 1, false, QATML_TYPE_UINT8, QATML_TYPE_UINT8, 2, {0, 0, 0, 0}},  // FmnistNet conv2 + pool2
        {1, 7, 20, 11, 13, 3, 1, 0, 1, false, QATML_TYPE_INT8, QATML_TYPE_INT8, 2, {0, 0, 0, 0}},      // 9x11 output: floor drops
        {2, 1, 18, 9, 10, 5, 1, 2, 1, false, QATML_TYPE_INT8, QATML_TYPE_UINT8, 2, {0, 0, 0, 0}},      // C = 1, 5x5
        {1, 12, 24, 16, 15, 3, 2, 1, 2, false, QATML_TYPE_UINT8, QATML_TYPE_INT8, 2, {0, 0, 0, 0}},    // stride 2, groups
        {1, 8, 16, 10, 10, 3, 1, 1, 1, true, QATML_TYPE_UINT8, QATML_TYPE_UINT8, 2, {0, 0, 0, 0}},     // weight zero points
        {1, 6, 6, 10, 10, 3, 1, 1, 6, false, QATML_TYPE_UINT8, QATML_TYPE_UINT8, 2, {0, 0, 0, 0}},     // depthwise
        {2, 3, 64, 45, 45, 7, 2, 3, 1, false, QATML_TYPE_UINT8, QATML_TYPE_UINT8, 3, {1, 1, 1, 1}},    // ResNet stem + pool
        {1, 3, 40, 30, 29, 7, 2, 3, 1, false, QATML_TYPE_INT8, QATML_TYPE_INT8, 3, {0, 0, 0, 0}},      // C = 3, pool without pads
        {1, 3, 64, 40, 40, 7, 2, 3, 1, false, QATML_TYPE_UINT8, QATML_TYPE_UINT8, 3, {1, 1, 0, 0}},    // the stem's pads (1, 1, 0, 0)
        {1, 9, 24, 15, 16, 3, 1, 1, 1, false, QATML_TYPE_INT8, QATML_TYPE_UINT8, 3, {0, 1, 1, 0}},     // other asymmetric pads
        {1, 2, 20, 17, 18, 3, 1, 1, 1, false, QATML_TYPE_UINT8, QATML_TYPE_UINT8, 3, {1, 1, 1, 1}},    // C = 2 over HWC
        {1, 6, 24, 12, 12, 3, 1, 1, 2, false, QATML_TYPE_INT8, QATML_TYPE_UINT8, 3, {1, 1, 1, 1}},     // 2 groups of C = 3
        {1, 16, 32, 13, 13, 3, 1, 1, 1, false, QATML_TYPE_UINT8, QATML_TYPE_INT8, 3, {1, 1, 1, 1}},    // channel quads, 3x3 pool
    };
    for (const auto& sh : shapes) {
        ConvCase c{};
        c.p = {sh.n, sh.c, sh.h, sh.w, sh.s, sh.s, sh.pad, sh.pad, sh.pad, sh.pad, 1, 1};
        c.m = sh.m;
        c.kh = c.kw = sh.k;
        c.groups = sh.groups;
        c.x_type = sh.x_type;
        c.out_type = sh.out_type;
        c.xz = sh.x_type == QATML_TYPE_UINT8 ? 21 : -9;
        c.wzp = sh.wzp;
        const ConvOperands o = cnn_operands(c);
        int64_t oh = 0, ow = 0;
        ASSERT_EQ(qatml_conv2d_output_size(&c.p, c.kh, c.kw, &oh, &ow), QATML_OK);
        const std::vector<uint8_t> full = run_conv(QATML_ISA_SCALAR, c, o.x, o.w, o.zw, o.bias, o.mult);
        qatml_conv2d_params pp{c.p.batch, c.m, oh, ow, 2, 2, sh.pads[0], sh.pads[1], sh.pads[2], sh.pads[3], 1, 1};
        int64_t ph = 0, pw = 0;
        ASSERT_EQ(qatml_conv2d_output_size(&pp, sh.pool, sh.pool, &ph, &pw), QATML_OK);
        std::vector<uint8_t> expected(static_cast<size_t>(c.p.batch * c.m * ph * pw));
        ASSERT_EQ(qatml_pool2d(nullptr, QATML_POOL_MAX, &pp, sh.pool, sh.pool, 0, full.data(), c.out_type, 1.0f, 0, 1.0f, 0,
                               expected.data()),
                  QATML_OK);
        for (int isa : isas)
            ASSERT_EQ(run_conv(isa, c, o.x, o.w, o.zw, o.bias, o.mult, sh.pool, sh.pads), expected)
                << "isa " << qatml_isa_name(isa) << " shape C " << sh.c << " M " << sh.m << " H " << sh.h;
    }
    // An INT32 output or an output smaller than the window is refused with a message.
    Packed pw;
    std::vector<int8_t> w1(9, 1);
    ASSERT_EQ(qatml_conv_pack_weights(nullptr, w1.data(), QATML_TYPE_INT8, 1, 1, 3, 3, 1, nullptr, &pw.p), QATML_OK);
    qatml_conv2d_params p{1, 1, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1};
    std::vector<uint8_t> x(9, 1);
    std::vector<int32_t> y(4);
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    ep.out_type = QATML_TYPE_INT32;
    EXPECT_EQ(qatml_conv2d_maxpool(nullptr, &p, x.data(), QATML_TYPE_UINT8, 0, pw.p, &ep, 2, nullptr, y.data()), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("8-bit output"), std::string::npos) << qatml_last_error();
    float one = 1.0f;
    ep.out_type = QATML_TYPE_UINT8;
    ep.multipliers = &one;
    ep.multiplier_count = 1;
    EXPECT_EQ(qatml_conv2d_maxpool(nullptr, &p, x.data(), QATML_TYPE_UINT8, 0, pw.p, &ep, 2, nullptr, y.data()), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("smaller than the 2x2 pool window"), std::string::npos) << qatml_last_error();
    const int64_t two[4] = {2, 0, 0, 0};
    EXPECT_EQ(qatml_conv2d_maxpool(nullptr, &p, x.data(), QATML_TYPE_UINT8, 0, pw.p, &ep, 3, two, y.data()), QATML_INVALID_ARGUMENT);
    EXPECT_NE(std::string(qatml_last_error()).find("pool_kernel 3 with pads 2,0,0,0"), std::string::npos) << qatml_last_error();
}

TEST(KernelsConv, ImplicitGemmMatchesScalarOnCnnShapes) {
    // Channel counts that are not multiples of 4 or 8, strides 1-2, dilation, one and two images,
    // weight zero points: the channel-quad padding, stride phases and store masks of the implicit GEMM.
    auto isas = fast_isas();
    if (isas.empty()) GTEST_SKIP();
    const struct { int64_t n, c, m, h, w, k, s, pad, dil, groups; bool wzp; int32_t x_type; } shapes[] = {
        {2, 32, 64, 14, 14, 3, 1, 1, 1, 1, false, QATML_TYPE_UINT8},   // FmnistNet conv2
        {1, 1, 32, 28, 28, 3, 1, 1, 1, 1, false, QATML_TYPE_UINT8},    // FmnistNet conv1 (C = 1)
        {1, 13, 19, 17, 23, 3, 2, 1, 1, 1, true, QATML_TYPE_INT8},     // stride 2, odd everything
        {2, 6, 10, 9, 40, 5, 1, 2, 2, 2, false, QATML_TYPE_UINT8},     // dilation, groups
        {1, 64, 128, 15, 15, 1, 2, 0, 1, 1, true, QATML_TYPE_UINT8},   // 1x1 stride-2 projection
        {1, 20, 25, 7, 7, 7, 3, 3, 1, 1, false, QATML_TYPE_INT8},      // 7x7 stride 3
        // Stride 2 at widths with whole 16-pixel steps and tails (vectorised phase split), the input's
        // last bytes, phases no tap reads (1x1 stride 2), 4-vector planes (2 + 2 pixel blocks) and
        // more output channels than virtual pixels (row tiles outer).
        {1, 3, 16, 45, 45, 7, 2, 3, 1, 1, false, QATML_TYPE_UINT8},    // ResNet conv1 (C = 3, 7x7 stride 2)
        {2, 8, 24, 38, 37, 3, 2, 1, 1, 1, true, QATML_TYPE_INT8},      // 3x3 stride 2, odd and even widths
        {1, 16, 40, 34, 34, 1, 2, 0, 1, 1, false, QATML_TYPE_INT8},    // 1x1 stride 2, unread phases
        {1, 36, 72, 7, 7, 3, 1, 1, 1, 1, true, QATML_TYPE_UINT8},      // 7x7 plane: 4 vectors, rows > pixels
        {2, 24, 203, 12, 12, 3, 1, 1, 1, 1, false, QATML_TYPE_UINT8},  // rows > pixels, row tail
        {1, 9, 20, 66, 64, 3, 2, 0, 1, 1, false, QATML_TYPE_UINT8},    // stride 2 without padding
        // Output channels in lanes (small planes, no weight zero points, 8-bit outputs): 49 pixels in
        // balanced tiles, rows padded to 16 (50 of 64 computed), stride 2 onto 7x7, groups, the
        // pixel-major staging transposed in 16 x 16 blocks with pixel and channel tails.
        {2, 64, 64, 7, 7, 3, 1, 1, 1, 1, false, QATML_TYPE_UINT8},     // ResNet18 layer4 shape, narrower
        {1, 40, 62, 14, 14, 3, 1, 1, 1, 1, false, QATML_TYPE_INT8},    // 196 pixels, 62 rows
        {1, 24, 96, 14, 14, 3, 2, 1, 1, 1, false, QATML_TYPE_UINT8},   // stride 2 onto 7x7
        {1, 16, 64, 6, 6, 3, 1, 1, 1, 2, false, QATML_TYPE_INT8},      // 2 groups of 32 channels
        {1, 70, 16, 3, 5, 1, 1, 0, 1, 1, false, QATML_TYPE_UINT8},     // 1x1 on 15 pixels
        // One input channel per group: K groups of 4 taps (stride 1 slices, other strides gathered).
        {2, 1, 24, 30, 33, 5, 2, 2, 1, 1, true, QATML_TYPE_INT8},      // C = 1, 5x5 stride 2
        {1, 2, 6, 20, 20, 3, 1, 1, 2, 2, true, QATML_TYPE_UINT8},      // groups 2 x (C/g = 1, M/g = 3), dilation
        {3, 1, 17, 13, 50, 3, 1, 0, 1, 1, false, QATML_TYPE_INT8},     // C = 1, no padding, 3 images
    };
    for (const auto& s : shapes) {
        ConvCase c{};
        c.p = {s.n, s.c, s.h, s.w, s.s, s.s, s.pad, s.pad, s.pad, s.pad, s.dil, s.dil};
        c.m = s.m;
        c.kh = c.kw = s.k;
        c.groups = s.groups;
        c.x_type = s.x_type;
        c.xz = s.x_type == QATML_TYPE_UINT8 ? 37 : -5;
        c.wzp = s.wzp;
        const ConvOperands o = cnn_operands(c);
        for (int32_t out_type : {QATML_TYPE_INT32, QATML_TYPE_UINT8, QATML_TYPE_INT8}) {
            c.out_type = out_type;
            auto ref = run_conv(QATML_ISA_SCALAR, c, o.x, o.w, o.zw, o.bias, o.mult);
            for (int isa : isas)
                ASSERT_EQ(run_conv(isa, c, o.x, o.w, o.zw, o.bias, o.mult), ref)
                    << "isa " << qatml_isa_name(isa) << " C=" << s.c << " M=" << s.m << " out " << out_type;
        }
    }
}
