// Implicit-GEMM test cases shared by the CPU emulation (cuda_layout_test.cpp) and the GPU tests: random operands of
// a convolution or GEMM, prepared for the CUDA kernel as the plan runner prepares them (channels-last input, packed
// B, column offsets), with what the CPU kernels compute for them rearranged into C's layout.
#pragma once

#include "cuda/igemm.h"
#include "cuda/packing.h"
#include "qatml/qatml.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace qatml_test {

using namespace qatml::cuda;

struct ConvCase {
    int64_t n, c, h, w, m, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw;
    int32_t x_type, w_type, out_type;
};

struct GemmCase {
    int64_t m, c, h, w, n;  // K = c * h * w: an 8-bit [C, H, W] input is stored channels-last when h * w > 1
    bool trans_b;
    int32_t a_type, w_type, out_type;
};

// Operands on the host (p points into the vectors; p.c is the caller's) and the expected C.
struct IgemmCase {
    std::string name;
    IgemmParams p{};
    std::vector<uint8_t> a;
    std::vector<int8_t> b;
    std::vector<int32_t> coladd;
    std::vector<float> mult;
    std::vector<KTap> ktab;
    std::vector<uint8_t> want;
    IgemmCase() = default;
    IgemmCase(const IgemmCase&) = delete;  // p points into the vectors
    IgemmCase& operator=(const IgemmCase&) = delete;
};

// Random int8 or int4 weights in the plan's raw form (int4 packed two per byte).
inline std::vector<uint8_t> random_weights(int64_t count, int32_t w_type, std::mt19937& rng) {
    std::uniform_int_distribution<int> w8(-128, 127), w4(-8, 7);
    std::vector<int8_t> v(static_cast<size_t>(count));
    for (auto& x : v) x = static_cast<int8_t>(w_type == QATML_TYPE_INT4 ? w4(rng) : w8(rng));
    std::vector<uint8_t> raw(static_cast<size_t>(w_type == QATML_TYPE_INT4 ? (count + 1) / 2 : count));
    if (w_type == QATML_TYPE_INT4) qatml_int4_pack(v.data(), count, 1, raw.data());
    else std::memcpy(raw.data(), v.data(), raw.size());
    return raw;
}

inline qatml_epilogue epilogue(int32_t out_type, const std::vector<int32_t>& bias, const std::vector<float>& mult, int32_t zp) {
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    ep.out_type = out_type;
    ep.bias = bias.data();
    ep.multipliers = mult.data();
    ep.multiplier_count = static_cast<int64_t>(mult.size());
    ep.out_zero_point = zp;
    return ep;
}

inline void random_epilogue(int64_t n, std::mt19937& rng, std::vector<int32_t>* bias, std::vector<float>* mult) {
    std::uniform_int_distribution<int> bias_d(-3000, 3000);
    std::uniform_real_distribution<float> scale_d(0.0005f, 0.004f);
    bias->resize(static_cast<size_t>(n));
    mult->resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) (*bias)[static_cast<size_t>(i)] = bias_d(rng), (*mult)[static_cast<size_t>(i)] = scale_d(rng);
}

// The epilogue fields and constants every case shares.
inline void finish_case(IgemmCase* t, int64_t n, const std::vector<int32_t>& bias, const std::vector<float>& mult, int32_t a_type,
                        int32_t az, int32_t out_type, int32_t yz) {
    IgemmParams& p = t->p;
    const int64_t n_pad = (n + kNPad - 1) / kNPad * kNPad;
    t->coladd = column_offsets(t->b.data(), n, n_pad, p.k_pad, bias.data(), az);
    t->mult = expand_multipliers(mult, n, n_pad);
    t->ktab = k_table(p.g, p.k_pad);
    p.a = t->a.data();
    p.b = t->b.data();
    p.coladd = t->coladd.data();
    p.mult = t->mult.data();
    p.ktab = t->ktab.data();
    p.n = static_cast<int32_t>(n);
    p.ldc = n;
    p.a_signed = a_type == QATML_TYPE_INT8;
    p.a_zero_point = az;
    p.out_type = out_type;
    p.out_zp = yz;
    p.lo = out_type == QATML_TYPE_INT8 ? -128 : 0;
    p.hi = out_type == QATML_TYPE_INT8 ? 127 : 255;
}

inline std::string describe(const ConvCase& c) {
    char b[256];
    std::snprintf(b, sizeof b, "conv N%lld C%lld %lldx%lld M%lld k%lldx%lld s%lld,%lld p%lld,%lld,%lld,%lld d%lld,%lld x%d w%d y%d", (long long)c.n,
                  (long long)c.c, (long long)c.h, (long long)c.w, (long long)c.m, (long long)c.kh, (long long)c.kw, (long long)c.sh,
                  (long long)c.sw, (long long)c.pt, (long long)c.pl, (long long)c.pb, (long long)c.pr, (long long)c.dh, (long long)c.dw,
                  c.x_type, c.w_type, c.out_type);
    return b;
}

inline std::string describe(const GemmCase& c) {
    char b[160];
    std::snprintf(b, sizeof b, "gemm M%lld K%lld (%lldx%lldx%lld) N%lld%s a%d w%d y%d", (long long)c.m, (long long)(c.c * c.h * c.w),
                  (long long)c.c, (long long)c.h, (long long)c.w, (long long)c.n, c.trans_b ? " transB" : "", c.a_type, c.w_type, c.out_type);
    return b;
}

// qatml_conv2d over NCHW, expected in the kernel's [pixel][channel] order; A channels-last.
inline void make_case(const ConvCase& cc, std::mt19937& rng, IgemmCase* t) {
    t->name = describe(cc);
    std::uniform_int_distribution<int> byte(0, 255);
    std::vector<uint8_t> x(static_cast<size_t>(cc.n * cc.c * cc.h * cc.w));
    for (auto& v : x) v = static_cast<uint8_t>(byte(rng));
    const int32_t xz = cc.x_type == QATML_TYPE_INT8 ? -7 : 131, yz = cc.out_type == QATML_TYPE_INT8 ? 5 : 120;
    const std::vector<uint8_t> raw = random_weights(cc.m * cc.c * cc.kh * cc.kw, cc.w_type, rng);
    std::vector<int32_t> bias;
    std::vector<float> mult;
    random_epilogue(cc.m, rng, &bias, &mult);

    qatml_conv2d_params prm{cc.n, cc.c, cc.h, cc.w, cc.sh, cc.sw, cc.pt, cc.pl, cc.pb, cc.pr, cc.dh, cc.dw};
    int64_t oh = 0, ow = 0;
    ASSERT_EQ(qatml_conv2d_output_size(&prm, cc.kh, cc.kw, &oh, &ow), QATML_OK);
    qatml_packed_weights* pw = nullptr;
    ASSERT_EQ(qatml_conv_pack_weights(nullptr, raw.data(), cc.w_type, cc.m, cc.c, cc.kh, cc.kw, 1, nullptr, &pw), QATML_OK) << qatml_last_error();
    const qatml_epilogue ep = epilogue(cc.out_type, bias, mult, yz);
    const int64_t esz = cc.out_type == QATML_TYPE_INT32 ? 4 : 1, planes = oh * ow;
    std::vector<uint8_t> nchw(static_cast<size_t>(cc.n * cc.m * planes * esz));
    ASSERT_EQ(qatml_conv2d(nullptr, &prm, x.data(), cc.x_type, xz, pw, &ep, nchw.data()), QATML_OK) << qatml_last_error();
    qatml_packed_weights_destroy(pw);
    t->want.resize(nchw.size());
    for (int64_t i = 0; i < cc.n; ++i)
        for (int64_t o = 0; o < cc.m; ++o)
            for (int64_t q = 0; q < planes; ++q)
                std::memcpy(&t->want[static_cast<size_t>(((i * planes + q) * cc.m + o) * esz)],
                            &nchw[static_cast<size_t>(((i * cc.m + o) * planes + q) * esz)], static_cast<size_t>(esz));

    t->a.resize(x.size());
    for (int64_t i = 0; i < cc.n; ++i)
        for (int64_t ch = 0; ch < cc.c; ++ch)
            for (int64_t q = 0; q < cc.h * cc.w; ++q)
                t->a[static_cast<size_t>((i * cc.h * cc.w + q) * cc.c + ch)] = x[static_cast<size_t>((i * cc.c + ch) * cc.h * cc.w + q)];
    IgemmParams& p = t->p;
    p.g = ConvGeom{int32_t(cc.h), int32_t(cc.w), int32_t(cc.c), int32_t(oh), int32_t(ow), int32_t(cc.kh), int32_t(cc.kw), int32_t(cc.sh),
                   int32_t(cc.sw), int32_t(cc.pt), int32_t(cc.pl), int32_t(cc.dh), int32_t(cc.dw), int32_t(cc.c)};
    p.k = static_cast<int32_t>(cc.kh * cc.kw * cc.c);
    p.k_pad = round_up32(p.k, kBK);
    p.mode = conv_mode(p.g);
    p.m = cc.n * planes;
    t->b = conv_weights_igemm(raw.data(), cc.w_type, cc.m, cc.c, cc.kh, cc.kw, p.k_pad);
    finish_case(t, cc.m, bias, mult, cc.x_type, xz, cc.out_type, yz);
}

// qatml_gemm over logical rows; A in the runner's storage order, B permuted to match.
inline void make_case(const GemmCase& gc, std::mt19937& rng, IgemmCase* t) {
    t->name = describe(gc);
    const int64_t k = gc.c * gc.h * gc.w;
    std::uniform_int_distribution<int> byte(0, 255);
    std::vector<uint8_t> a(static_cast<size_t>(gc.m * k));
    for (auto& v : a) v = static_cast<uint8_t>(byte(rng));
    const std::vector<uint8_t> raw = random_weights(k * gc.n, gc.w_type, rng);
    std::vector<int32_t> bias;
    std::vector<float> mult;
    random_epilogue(gc.n, rng, &bias, &mult);
    const int32_t az = gc.a_type == QATML_TYPE_INT8 ? 3 : 97, yz = gc.out_type == QATML_TYPE_INT8 ? -4 : 128;

    qatml_packed_weights* pw = nullptr;
    ASSERT_EQ(qatml_gemm_pack_b(nullptr, raw.data(), gc.w_type, k, gc.n, gc.trans_b, nullptr, &pw), QATML_OK) << qatml_last_error();
    // A float output (the engine's MatMulIntegerToFloat GEMM): the CPU kernel's int32 sums, each float(sum) * mult[col].
    const bool to_float = gc.out_type == QATML_TYPE_FLOAT32;
    const qatml_epilogue ep = epilogue(to_float ? QATML_TYPE_INT32 : gc.out_type, bias, mult, yz);
    t->want.resize(static_cast<size_t>(gc.m * gc.n * (gc.out_type == QATML_TYPE_INT32 || to_float ? 4 : 1)));
    ASSERT_EQ(qatml_gemm(nullptr, gc.m, a.data(), gc.a_type, k, az, pw, &ep, t->want.data(), gc.n), QATML_OK) << qatml_last_error();
    qatml_packed_weights_destroy(pw);
    if (to_float)
        for (int64_t i = 0; i < gc.m * gc.n; ++i) {
            int32_t sum;
            std::memcpy(&sum, &t->want[static_cast<size_t>(i * 4)], 4);
            const float f = static_cast<float>(sum) * mult[static_cast<size_t>(i % gc.n)];
            std::memcpy(&t->want[static_cast<size_t>(i * 4)], &f, 4);
        }

    const int64_t dims[3] = {gc.c, gc.h, gc.w};
    const Layout lx = tensor_layout(gc.a_type, 3, dims);
    t->a.resize(a.size());
    for (int64_t r = 0; r < gc.m; ++r)
        for (int64_t e = 0; e < k; ++e) t->a[static_cast<size_t>(r * k + storage_index(lx, e))] = a[static_cast<size_t>(r * k + e)];
    IgemmParams& p = t->p;
    p.k = static_cast<int32_t>(k);
    p.k_pad = round_up32(p.k, kBK);
    p.g = gemm_geometry(p.k);
    p.mode = gemm_mode(k);
    p.lda = k;
    p.m = gc.m;
    t->b = gemm_weights_igemm(raw.data(), gc.w_type, k, gc.n, gc.trans_b, lx, p.k_pad);
    finish_case(t, gc.n, bias, mult, gc.a_type, az, gc.out_type, yz);
}

// Small shapes covering every loader, padding, strides, dilation, both activation types, int4 weights, every output
// type, tiles cut by m and n, and more than 256 columns.
inline const std::vector<ConvCase>& small_conv_cases() {
    static const std::vector<ConvCase> cases = {
        {2, 32, 9, 7, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_UINT8},
        {1, 16, 11, 10, 72, 3, 3, 2, 2, 1, 1, 1, 0, 1, 1, QATML_TYPE_INT8, QATML_TYPE_INT8, QATML_TYPE_INT8},
        {2, 48, 8, 8, 24, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, QATML_TYPE_UINT8, QATML_TYPE_INT4, QATML_TYPE_INT8},
        {3, 64, 6, 6, 130, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, QATML_TYPE_INT8, QATML_TYPE_INT8, QATML_TYPE_UINT8},
        {2, 3, 15, 13, 20, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_UINT8},
        {1, 1, 12, 12, 9, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, QATML_TYPE_UINT8, QATML_TYPE_INT4, QATML_TYPE_UINT8},
        {2, 5, 7, 9, 33, 3, 2, 1, 2, 1, 0, 2, 1, 1, 2, QATML_TYPE_INT8, QATML_TYPE_INT8, QATML_TYPE_INT32},
    };
    return cases;
}

inline const std::vector<GemmCase>& small_gemm_cases() {
    static const std::vector<GemmCase> cases = {
        {70, 64, 1, 1, 33, false, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_UINT8},   // dense rows
        {130, 48, 1, 1, 300, true, QATML_TYPE_INT8, QATML_TYPE_INT4, QATML_TYPE_INT8},    // dense, > 256 columns
        {9, 37, 1, 1, 10, true, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_INT32},     // K % 16 != 0: byte gathers
        {17, 8, 3, 3, 20, false, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_UINT8},    // channels-last input
        {5, 16, 2, 2, 12, true, QATML_TYPE_INT8, QATML_TYPE_INT8, QATML_TYPE_INT8},       // channels-last, dense rows
        {40, 24, 1, 1, 70, false, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_FLOAT32},  // float output (MatMulIntegerToFloat)
        {6, 21, 1, 1, 9, true, QATML_TYPE_INT8, QATML_TYPE_INT4, QATML_TYPE_FLOAT32},      // float output, byte gathers
    };
    return cases;
}

}  // namespace qatml_test
