// Each CUDA kernel against the CPU kernel of the same op on random shapes, bit for bit (GPU; skipped without one).
#include "cuda/cuda_kernels.h"
#include "cuda_gpu_util.h"
#include "igemm_cases.h"

#include <cmath>
#include <limits>

namespace {

using namespace qatml::cuda;
using namespace qatml_test;

// NCHW -> channels-last ([n][hw][c]) bytes, or back.
std::vector<uint8_t> relayout(const std::vector<uint8_t>& v, int64_t n, int64_t c, int64_t hw, bool to_channels_last) {
    std::vector<uint8_t> out(v.size());
    for (int64_t i = 0; i < n; ++i)
        for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t q = 0; q < hw; ++q) {
                const size_t nchw = static_cast<size_t>((i * c + ch) * hw + q), cl = static_cast<size_t>((i * hw + q) * c + ch);
                out[to_channels_last ? cl : nchw] = v[to_channels_last ? nchw : cl];
            }
    return out;
}
std::vector<uint8_t> to_cl(const std::vector<uint8_t>& v, int64_t n, int64_t c, int64_t hw) { return relayout(v, n, c, hw, true); }
std::vector<uint8_t> from_cl(const std::vector<uint8_t>& v, int64_t n, int64_t c, int64_t hw) { return relayout(v, n, c, hw, false); }

std::vector<uint8_t> random_bytes(size_t n, std::mt19937& rng) {
    std::uniform_int_distribution<int> byte(0, 255);
    std::vector<uint8_t> v(n);
    for (auto& x : v) x = static_cast<uint8_t>(byte(rng));
    return v;
}

// The case on the GPU in every tile configuration and in the one the runner would choose.
void check_on_gpu(const IgemmCase& t, const IgemmDeviceInfo& info) {
    SCOPED_TRACE(t.name);
    DeviceBuffer a(t.a), b(t.b), coladd(t.coladd), mult(t.mult), ktab(t.ktab), c(t.want.size());
    IgemmParams p = t.p;
    p.a = a.as<uint8_t>();
    p.b = b.as<int8_t>();
    p.coladd = coladd.as<int32_t>();
    p.mult = mult.as<float>();
    p.ktab = ktab.as<KTap>();
    p.c = c.ptr;
    const int chosen = choose_tile(p.m, p.n, info.sms, info.blocks_per_sm);
    for (int config = 0; config <= kTileConfigs; ++config) {
        const int use = config == kTileConfigs ? chosen : config;
        SCOPED_TRACE("tile config " + std::to_string(use) + (config == kTileConfigs ? " (chosen)" : ""));
        ASSERT_EQ(cudaMemset(c.ptr, 0xEE, c.bytes), cudaSuccess);
        ASSERT_EQ(launch_igemm(p, use, nullptr), cudaSuccess);
        EXPECT_EQ(c.download<uint8_t>(), t.want);
    }
}

// Every case of `cases` (ConvCase or GemmCase) through check_on_gpu.
template <typename Case>
void check_cases(const std::vector<Case>& cases, unsigned seed) {
    IgemmDeviceInfo info;
    ASSERT_EQ(igemm_device_info(&info), cudaSuccess);
    std::mt19937 rng(seed);
    for (const Case& c : cases) {
        IgemmCase t;
        make_case(c, rng, &t);
        check_on_gpu(t, info);
    }
}

TEST(CudaKernels, ImplicitGemmConvolutionsMatchTheCpu) {
    QATML_REQUIRE_GPU();
    std::vector<ConvCase> cases = small_conv_cases();
    // Larger: many tiles and more K tiles than pipeline stages (ResNet-like layers).
    cases.push_back({2, 64, 28, 28, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_UINT8});
    cases.push_back({2, 128, 14, 14, 256, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, QATML_TYPE_INT8, QATML_TYPE_INT4, QATML_TYPE_INT8});
    cases.push_back({2, 3, 56, 56, 64, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_UINT8});
    check_cases(cases, 11);
}

TEST(CudaKernels, ImplicitGemmMatricesMatchTheCpu) {
    QATML_REQUIRE_GPU();
    std::vector<GemmCase> cases = small_gemm_cases();
    cases.push_back({1000, 1024, 1, 1, 520, true, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_INT32});
    cases.push_back({257, 4096, 1, 1, 384, false, QATML_TYPE_INT8, QATML_TYPE_INT4, QATML_TYPE_UINT8});
    cases.push_back({64, 512, 7, 7, 100, true, QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_INT8});  // channels-last input
    check_cases(cases, 12);
}

// Groups, depthwise and weight zero points take the direct kernel.
TEST(CudaKernels, DirectConvolutionMatchesTheCpu) {
    QATML_REQUIRE_GPU();
    struct Case {
        int64_t n, c, h, w, m, groups, kh, kw, s, pad, d;
        bool zero_points;
        int32_t x_type;
    };
    const Case cases[] = {
        {2, 16, 9, 9, 12, 2, 3, 3, 1, 1, 1, false, QATML_TYPE_UINT8},
        {1, 16, 10, 11, 16, 16, 3, 3, 2, 1, 1, false, QATML_TYPE_INT8},  // depthwise
        {2, 5, 7, 6, 7, 1, 3, 3, 1, 2, 2, true, QATML_TYPE_UINT8},       // weight zero points, dilation
    };
    std::mt19937 rng(13);
    for (const Case& cc : cases) {
        SCOPED_TRACE("groups " + std::to_string(cc.groups) + " C " + std::to_string(cc.c) + " M " + std::to_string(cc.m));
        const int64_t cpg = cc.c / cc.groups;
        const std::vector<uint8_t> x = random_bytes(static_cast<size_t>(cc.n * cc.c * cc.h * cc.w), rng);
        const std::vector<uint8_t> raw = random_weights(cc.m * cpg * cc.kh * cc.kw, QATML_TYPE_INT8, rng);
        std::vector<int32_t> bias, zps;
        std::vector<float> mult;
        random_epilogue(cc.m, rng, &bias, &mult);
        if (cc.zero_points)
            for (int64_t i = 0; i < cc.m; ++i) zps.push_back(static_cast<int32_t>(i % 7) - 3);
        const int32_t xz = cc.x_type == QATML_TYPE_INT8 ? 4 : 120, yz = 17;
        qatml_conv2d_params prm{cc.n, cc.c, cc.h, cc.w, cc.s, cc.s, cc.pad, cc.pad, cc.pad, cc.pad, cc.d, cc.d};
        int64_t oh = 0, ow = 0;
        ASSERT_EQ(qatml_conv2d_output_size(&prm, cc.kh, cc.kw, &oh, &ow), QATML_OK);
        qatml_packed_weights* pw = nullptr;
        ASSERT_EQ(qatml_conv_pack_weights(nullptr, raw.data(), QATML_TYPE_INT8, cc.m, cpg, cc.kh, cc.kw, cc.groups,
                                          zps.empty() ? nullptr : zps.data(), &pw),
                  QATML_OK);
        const qatml_epilogue ep = epilogue(QATML_TYPE_UINT8, bias, mult, yz);
        std::vector<uint8_t> want(static_cast<size_t>(cc.n * cc.m * oh * ow));
        ASSERT_EQ(qatml_conv2d(nullptr, &prm, x.data(), cc.x_type, xz, pw, &ep, want.data()), QATML_OK) << qatml_last_error();
        qatml_packed_weights_destroy(pw);

        DeviceBuffer dx(to_cl(x, cc.n, cc.c, cc.h * cc.w)), dw(conv_weights_direct(raw.data(), QATML_TYPE_INT8, cc.m, cpg, cc.kh, cc.kw)),
            dzp(zps), dbias(bias), dmult(mult), dy(want.size());
        DirectConvParams p{};
        p.x = dx.as<uint8_t>();
        p.g = ConvGeom{int32_t(cc.h), int32_t(cc.w), int32_t(cc.c), int32_t(oh), int32_t(ow), int32_t(cc.kh), int32_t(cc.kw), int32_t(cc.s),
                       int32_t(cc.s), int32_t(cc.pad), int32_t(cc.pad), int32_t(cc.d), int32_t(cc.d), int32_t(cpg)};
        p.pixels = cc.n * oh * ow;
        p.m = static_cast<int32_t>(cc.m);
        p.groups = static_cast<int32_t>(cc.groups);
        p.mpg = static_cast<int32_t>(cc.m / cc.groups);
        p.w = dw.as<int8_t>();
        p.w_zp = zps.empty() ? nullptr : dzp.as<int32_t>();
        p.bias = dbias.as<int32_t>();
        p.mult = dmult.as<float>();
        p.x_signed = cc.x_type == QATML_TYPE_INT8;
        p.xz = xz;
        p.y = dy.ptr;
        p.out_zp = yz;
        p.lo = 0;
        p.hi = 255;
        ASSERT_EQ(launch_direct_conv(p, nullptr), cudaSuccess);
        EXPECT_EQ(from_cl(dy.download<uint8_t>(), cc.n, cc.m, oh * ow), want);
    }
}

// Quantize then dequantize, per tensor, converting a plain [2, 5, 4, 3] float tensor to channels-last bytes and back.
TEST(CudaKernels, QuantizeAndDequantizeMatchTheCpu) {
    QATML_REQUIRE_GPU();
    const int64_t rows = 2, c = 5, hw = 12, elems = c * hw;
    std::mt19937 rng(14);
    std::uniform_real_distribution<float> value(-3.0f, 3.0f);
    for (int32_t type : {QATML_TYPE_UINT8, QATML_TYPE_INT8}) {
        const float scale = 0.0173f;
        const int32_t zp = type == QATML_TYPE_INT8 ? -3 : 121;
        std::vector<float> x(static_cast<size_t>(rows * elems));
        for (size_t i = 0; i < x.size(); ++i) x[i] = value(rng);
        // Ties (k + 0.5) * scale, NaN, infinities, saturation.
        x[0] = 2.5f * scale;
        x[1] = -3.5f * scale;
        x[2] = std::numeric_limits<float>::quiet_NaN();
        x[3] = std::numeric_limits<float>::infinity();
        x[4] = -std::numeric_limits<float>::infinity();
        x[5] = 1e30f;
        std::vector<uint8_t> want(x.size());
        ASSERT_EQ(qatml_quantize_linear(nullptr, x.data(), 1, 1, static_cast<int64_t>(x.size()), &scale, &zp, type, want.data()), QATML_OK);
        std::vector<float> back(x.size());
        ASSERT_EQ(qatml_dequantize_linear(nullptr, want.data(), type, 1, 1, static_cast<int64_t>(x.size()), &scale, &zp, back.data()), QATML_OK);

        const Layout cl{c, hw, 1};
        DeviceBuffer dx(x), dq(x.size()), dback(x.size() * sizeof(float));
        const int32_t lo = type == QATML_TYPE_INT8 ? -128 : 0, hi = type == QATML_TYPE_INT8 ? 127 : 255;
        ASSERT_EQ(launch_quantize(QuantizeParams{dx.as<float>(), dq.ptr, Layout{}, cl, rows, elems, 1, scale, zp, lo, hi,
                                                 type == QATML_TYPE_INT8},
                                  nullptr),
                  cudaSuccess);
        EXPECT_EQ(from_cl(dq.download<uint8_t>(), rows, c, hw), want);
        ASSERT_EQ(launch_dequantize(DequantizeParams{dq.ptr, dback.as<float>(), cl, Layout{}, rows, elems, 1, scale, zp, type == QATML_TYPE_INT8},
                                    nullptr),
                  cudaSuccess);
        const std::vector<float> got = dback.download<float>();
        EXPECT_EQ(0, std::memcmp(got.data(), back.data(), back.size() * sizeof(float)));
        // The flat path (same layout on both sides).
        ASSERT_EQ(launch_quantize(QuantizeParams{dx.as<float>(), dq.ptr, Layout{}, Layout{}, rows, elems, 0, scale, zp, lo, hi,
                                                 type == QATML_TYPE_INT8},
                                  nullptr),
                  cudaSuccess);
        EXPECT_EQ(dq.download<uint8_t>(), want);
    }
}

TEST(CudaKernels, AddAndLutMatchTheCpu) {
    QATML_REQUIRE_GPU();
    const int64_t rows = 3, c = 6, hw = 10, elems = c * hw;
    std::mt19937 rng(15);
    for (int32_t type : {QATML_TYPE_UINT8, QATML_TYPE_INT8}) {
        const bool sg = type == QATML_TYPE_INT8;
        const std::vector<uint8_t> a = random_bytes(static_cast<size_t>(rows * elems), rng), b = random_bytes(a.size(), rng);
        const float sa = 0.031f, sb = 0.017f, sy = 0.043f;
        const int32_t za = sg ? 3 : 130, zb = sg ? -9 : 101, zy = sg ? 1 : 125;
        std::vector<uint8_t> want(a.size());
        ASSERT_EQ(qatml_add(nullptr, a.data(), sa, za, b.data(), sb, zb, type, static_cast<int64_t>(a.size()), sy, zy, want.data()), QATML_OK);
        // a plain, b and y channels-last: every element through the layout map.
        const Layout cl{c, hw, 1};
        DeviceBuffer da(a), db(to_cl(b, rows, c, hw)), dy(a.size());
        ASSERT_EQ(launch_add(AddParams{da.ptr, db.ptr, dy.ptr, Layout{}, cl, cl, rows, elems, 1, sa / sy, sb / sy, za, zb, zy, sg ? -128 : 0,
                                       sg ? 127 : 255, sg},
                             nullptr),
                  cudaSuccess);
        EXPECT_EQ(from_cl(dy.download<uint8_t>(), rows, c, hw), want);

        std::vector<uint8_t> table(256);
        for (int i = 0; i < 256; ++i) table[static_cast<size_t>(i)] = static_cast<uint8_t>((i * 7 + 3) & 0xff);
        std::vector<uint8_t> looked(a.size());
        for (size_t i = 0; i < a.size(); ++i) looked[i] = table[a[i]];
        DeviceBuffer dt(table);
        ASSERT_EQ(launch_lut(LutParams{da.as<uint8_t>(), dy.as<uint8_t>(), Layout{}, cl, rows, elems, 1, dt.as<uint8_t>()}, nullptr), cudaSuccess);
        EXPECT_EQ(from_cl(dy.download<uint8_t>(), rows, c, hw), looked);
    }
}

TEST(CudaKernels, PoolsMatchTheCpu) {
    QATML_REQUIRE_GPU();
    struct Case {
        int32_t kind;
        int64_t kh, kw, s, pt, pl, pb, pr, d;
        int32_t cip;
    };
    const Case cases[] = {
        {QATML_POOL_MAX, 3, 3, 2, 1, 1, 1, 1, 1, 0},  {QATML_POOL_MAX, 2, 2, 2, 0, 0, 0, 0, 1, 0},
        {QATML_POOL_MAX, 3, 2, 1, 0, 1, 2, 0, 2, 0},  {QATML_POOL_AVERAGE, 3, 3, 1, 1, 1, 1, 1, 1, 0},
        {QATML_POOL_AVERAGE, 3, 3, 1, 1, 1, 1, 1, 1, 1}, {QATML_POOL_AVERAGE, 2, 3, 2, 0, 1, 1, 0, 1, 0},
    };
    const int64_t n = 2, c = 7, h = 11, w = 9;
    std::mt19937 rng(16);
    for (int32_t type : {QATML_TYPE_UINT8, QATML_TYPE_INT8}) {
        const bool sg = type == QATML_TYPE_INT8;
        const std::vector<uint8_t> x = random_bytes(static_cast<size_t>(n * c * h * w), rng);
        DeviceBuffer dx(to_cl(x, n, c, h * w));
        for (const Case& pc : cases) {
            SCOPED_TRACE("kind " + std::to_string(pc.kind) + " k" + std::to_string(pc.kh) + "x" + std::to_string(pc.kw) + " cip " +
                         std::to_string(pc.cip) + " type " + std::to_string(type));
            qatml_conv2d_params prm{n, c, h, w, pc.s, pc.s, pc.pt, pc.pl, pc.pb, pc.pr, pc.d, pc.d};
            int64_t oh = 0, ow = 0;
            ASSERT_EQ(qatml_conv2d_output_size(&prm, pc.kh, pc.kw, &oh, &ow), QATML_OK);
            const bool max = pc.kind == QATML_POOL_MAX;
            const float xs = 0.02f, ys = max ? 0.02f : 0.013f;
            const int32_t xz = sg ? -5 : 118, yz = max ? xz : (sg ? 2 : 127);
            std::vector<uint8_t> want(static_cast<size_t>(n * c * oh * ow));
            ASSERT_EQ(qatml_pool2d(nullptr, pc.kind, &prm, pc.kh, pc.kw, pc.cip, x.data(), type, xs, xz, ys, yz, want.data()), QATML_OK)
                << qatml_last_error();
            DeviceBuffer dy(want.size());
            const ConvGeom g{int32_t(h), int32_t(w), int32_t(c), int32_t(oh), int32_t(ow), int32_t(pc.kh), int32_t(pc.kw), int32_t(pc.s),
                             int32_t(pc.s), int32_t(pc.pt), int32_t(pc.pl), int32_t(pc.d), int32_t(pc.d), 0};
            PoolParams p{dx.ptr, dy.ptr, n, g, int32_t(pc.pb), int32_t(pc.pr), max, pc.cip, sg, xs, ys, xz, yz, sg ? -128 : 0, sg ? 127 : 255};
            ASSERT_EQ(launch_pool(p, nullptr), cudaSuccess);
            EXPECT_EQ(from_cl(dy.download<uint8_t>(), n, c, oh * ow), want);
        }
        // Global average pooling, with the CPU kernel's multiplier.
        const float xs = 0.02f, ys = 0.011f;
        const int32_t xz = sg ? -5 : 118, yz = sg ? 3 : 120;
        std::vector<uint8_t> want(static_cast<size_t>(n * c));
        ASSERT_EQ(qatml_global_average_pool(nullptr, x.data(), type, n, c, h * w, xs, xz, ys, yz, want.data()), QATML_OK);
        DeviceBuffer dy(want.size());
        const float mult = xs / (ys * static_cast<float>(h * w));
        ASSERT_EQ(launch_global_avgpool(GlobalPoolParams{dx.ptr, dy.ptr, n, int32_t(c), int32_t(h * w), sg, mult, xz, yz, sg ? -128 : 0, sg ? 127 : 255},
                                        nullptr),
                  cudaSuccess);
        EXPECT_EQ(dy.download<uint8_t>(), want);
    }
}

}  // namespace
