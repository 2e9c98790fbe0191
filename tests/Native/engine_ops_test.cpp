// The engine's ops for wider models, each in a small plan against a reference
// written here: float functions, broadcasting binary ops (float, and 8-bit
// QLinearAdd / QLinearMul on every path the CPU has), concat, strided copies,
// padding, resize, softmax, layer normalisation, reduce mean, matmul; a plan
// with all of them agreeing across paths, batches and threads; and the loader's
// refusals of inconsistent payloads.
#include "engine_plans.h"
#include "isa_paths.h"
#include "qatml/qatml.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using qatml_test::PlanWriter;

std::vector<float> random_floats(size_t n, unsigned s, float lo = -4.0f, float hi = 4.0f) {
    std::mt19937 r(s);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = d(r);
    return v;
}

// Runs a plan of float inputs and outputs (sizes per row) at `rows`, on `ctx`.
std::vector<std::vector<float>> run_plan(const std::vector<uint8_t>& plan, int64_t rows, const std::vector<std::vector<float>>& inputs,
                                         const qatml_context* ctx = nullptr) {
    qatml_engine* e = nullptr;
    EXPECT_EQ(qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << qatml_last_error();
    if (!e) return {};
    qatml_engine_info info{};
    EXPECT_EQ(qatml_engine_get_info(e, &info), QATML_OK);
    std::vector<std::vector<float>> out(static_cast<size_t>(info.output_count));
    std::vector<float*> outs;
    for (int32_t i = 0; i < info.output_count; ++i) {
        int64_t n = 0;
        EXPECT_EQ(qatml_engine_io_row_size(e, 1, i, &n), QATML_OK);
        out[static_cast<size_t>(i)].resize(static_cast<size_t>(n * rows));
        outs.push_back(out[static_cast<size_t>(i)].data());
    }
    std::vector<const float*> ins;
    for (const auto& v : inputs) ins.push_back(v.data());
    EXPECT_EQ(qatml_engine_run(e, ctx, rows, ins.data(), static_cast<int32_t>(ins.size()), outs.data(), static_cast<int32_t>(outs.size())),
              QATML_OK)
        << qatml_last_error();
    qatml_engine_destroy(e);
    return out;
}

// The loader's verdict and message on a plan.
std::string load_error(const std::vector<uint8_t>& plan) {
    qatml_engine* e = nullptr;
    const qatml_status st = qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &e);
    qatml_engine_destroy(e);
    return st == QATML_OK ? "" : qatml_last_error();
}

float unary_ref(uint32_t f, float x, float alpha, float beta) {
    switch (f) {
        case QATML_UNARY_RELU: return x > 0 ? x : 0.0f;
        case QATML_UNARY_SIGMOID: return 1.0f / (1.0f + std::exp(-x));
        case QATML_UNARY_TANH: return std::tanh(x);
        case QATML_UNARY_HARD_SIGMOID: return std::max(0.0f, std::min(1.0f, alpha * x + beta));
        case QATML_UNARY_HARD_SWISH: return x * std::max(0.0f, std::min(1.0f, (1.0f / 6.0f) * x + 0.5f));
        case QATML_UNARY_LEAKY_RELU: return x < 0 ? alpha * x : x;
        case QATML_UNARY_CLIP: return std::min(std::max(x, alpha), beta);
        case QATML_UNARY_ERF: return std::erf(x);
        case QATML_UNARY_GELU: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
        case QATML_UNARY_EXP: return std::exp(x);
        case QATML_UNARY_LOG: return std::log(x);
        case QATML_UNARY_SQRT: return std::sqrt(x);
        case QATML_UNARY_NEG: return -x;
        case QATML_UNARY_ABS: return std::fabs(x);
        case QATML_UNARY_RECIPROCAL: return 1.0f / x;
        case QATML_UNARY_SOFTPLUS: return std::log(std::exp(x) + 1.0f);
        default: return x;
    }
}

float binary_ref(uint32_t f, float a, float b) {
    switch (f) {
        case QATML_BINARY_ADD: return a + b;
        case QATML_BINARY_SUB: return a - b;
        case QATML_BINARY_MUL: return a * b;
        case QATML_BINARY_DIV: return a / b;
        case QATML_BINARY_POW: return std::pow(a, b);
        case QATML_BINARY_MAX: return std::max(a, b);
        default: return std::min(a, b);
    }
}

// QLinearAdd (the engine's ADD formula) and QLinearMul (MLAS on x86) of one
// pair.
int32_t qadd_ref(int32_t a, int32_t b, float sa, int32_t za, float sb, int32_t zb, float sy, int32_t zy, int32_t lo, int32_t hi) {
    const float pa = static_cast<float>(a - za) * (sa / sy), pb = static_cast<float>(b - zb) * (sb / sy);
    float v = pa + pb;
    v = std::min(std::max(v, static_cast<float>(lo - zy)), static_cast<float>(hi - zy));
    return static_cast<int32_t>(std::nearbyint(v)) + zy;
}
int32_t qmul_ref(int32_t a, int32_t b, float sa, int32_t za, float sb, int32_t zb, float sy, int32_t zy, int32_t lo, int32_t hi) {
    const float ratio = (sa * sb) / sy;
    const float prod = static_cast<float>((a - za) * (b - zb));
    const float f = prod * ratio + static_cast<float>(zy);
    const int32_t q = f >= -2147483648.0f && f < 2147483648.0f ? static_cast<int32_t>(std::nearbyint(f)) : INT32_MIN;
    return std::min(std::max(q, lo), hi);
}

// Index of y element (i0, i1, i2) in an operand of dims d (right-aligned
// against [2, 3, 4]-like y dims).
int64_t broadcast_index(const std::vector<int64_t>& d, const int64_t y[3], const std::vector<int64_t>& yd) {
    int64_t idx = 0, stride = 1;
    for (int i = static_cast<int>(d.size()) - 1, j = static_cast<int>(yd.size()) - 1; i >= 0; --i, --j) {
        if (d[static_cast<size_t>(i)] != 1) idx += y[j] * stride;
        stride *= d[static_cast<size_t>(i)];
    }
    return idx;
}

}  // namespace

TEST(EngineOps, UnaryFunctionsFollowTheirDefinitions) {
    for (uint32_t f = QATML_UNARY_RELU; f <= QATML_UNARY_IDENTITY; ++f) {
        const float alpha = f == QATML_UNARY_CLIP ? -1.5f : 0.2f, beta = f == QATML_UNARY_CLIP ? 2.0f : 0.5f;
        PlanWriter w;
        const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {3, 7}), y = w.tensor(QATML_TYPE_FLOAT32, {3, 7});
        w.inputs = {x};
        w.outputs = {y};
        qatml_test::unary_op(w, x, y, f, alpha, beta);
        const bool positive = f == QATML_UNARY_LOG || f == QATML_UNARY_SQRT;
        std::vector<float> in = random_floats(42, f, positive ? 0.1f : -5.0f, 5.0f);
        in[0] = 0.0f;
        const auto out = run_plan(w.bytes(), 2, {in});
        ASSERT_EQ(out.size(), 1u);
        for (size_t i = 0; i < in.size(); ++i)
            EXPECT_EQ(out[0][i], unary_ref(f, in[i], alpha, beta)) << "function " << f << ", element " << i;
    }
}

TEST(EngineOps, FloatBinaryOpsBroadcastLikeNumPy) {
    const std::vector<int64_t> yd = {2, 3, 4};
    for (uint32_t f = QATML_BINARY_ADD; f <= QATML_BINARY_MIN; ++f)
        for (int variant = 0; variant < 3; ++variant) {
            // b: constant [3, 1], constant [4], or the activation [1, 3, 4] of a
            // second input.
            const std::vector<int64_t> bd = variant == 0 ? std::vector<int64_t>{3, 1}
                : variant == 1                           ? std::vector<int64_t>{4}
                                                         : std::vector<int64_t>{1, 3, 4};
            PlanWriter w;
            const uint32_t a = w.tensor(QATML_TYPE_FLOAT32, yd), y = w.tensor(QATML_TYPE_FLOAT32, yd);
            int64_t bn = 1;
            for (int64_t d : bd) bn *= d;
            std::vector<float> bvals = random_floats(static_cast<size_t>(bn), 50u + f, 0.5f, 2.5f);
            uint32_t b = 0;
            if (variant == 2) {
                b = w.tensor(QATML_TYPE_FLOAT32, bd);
                w.inputs = {a, b};
                qatml_test::binary_op(w, a, b, y, f);
            } else {
                w.inputs = {a};
                qatml_test::binary_op(w, a, 0, y, f, bd, qatml_test::bytes_of(bvals));
            }
            w.outputs = {y};
            const int64_t rows = 2;
            std::vector<float> av = random_floats(static_cast<size_t>(rows * 24), 7u + f, 0.25f, 3.0f);
            std::vector<float> bin =
                variant == 2 ? random_floats(static_cast<size_t>(rows * bn), 9u + f, 0.5f, 2.5f) : std::vector<float>{};
            const auto out = variant == 2 ? run_plan(w.bytes(), rows, {av, bin}) : run_plan(w.bytes(), rows, {av});
            ASSERT_EQ(out.size(), 1u);
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t i0 = 0; i0 < 2; ++i0)
                    for (int64_t i1 = 0; i1 < 3; ++i1)
                        for (int64_t i2 = 0; i2 < 4; ++i2) {
                            const int64_t yi[3] = {i0, i1, i2};
                            const int64_t o = ((i0 * 3) + i1) * 4 + i2;
                            const float bv = variant == 2 ? bin[static_cast<size_t>(r * bn + broadcast_index(bd, yi, yd))]
                                                          : bvals[static_cast<size_t>(broadcast_index(bd, yi, yd))];
                            EXPECT_EQ(out[0][static_cast<size_t>(r * 24 + o)], binary_ref(f, av[static_cast<size_t>(r * 24 + o)], bv))
                                << "function " << f << ", variant " << variant;
                        }
        }
}

TEST(EngineOps, QuantizedAddAndMulBroadcastOnEveryPath) {
    std::vector<int> isas = qatml_test::fast_isas();
    isas.insert(isas.begin(), QATML_ISA_SCALAR);
    const std::vector<int64_t> yd = {3, 5, 40};
    for (int isa : isas) {
        qatml_test::IsaCap cap(isa);
        for (uint32_t type : {QATML_TYPE_UINT8, QATML_TYPE_INT8})
            for (uint32_t f : {QATML_BINARY_ADD, QATML_BINARY_MUL})
                for (int variant = 0; variant < 3; ++variant) {
                    const bool sg = type == QATML_TYPE_INT8;
                    const int32_t lo = sg ? -128 : 0, hi = sg ? 127 : 255;
                    const float sa = 0.05f, sb = 0.03f, sy = f == QATML_BINARY_MUL ? 0.02f : 0.06f;
                    const int32_t za = sg ? 3 : 131, zb = sg ? -7 : 120, zy = sg ? 1 : 128;
                    // b: the activation [3, 5, 40], a per-channel constant [3, 1, 1], or
                    // a constant row [40].
                    const std::vector<int64_t> bd = variant == 0 ? yd
                        : variant == 1                           ? std::vector<int64_t>{3, 1, 1}
                                                                 : std::vector<int64_t>{40};
                    int64_t bn = 1;
                    for (int64_t d : bd) bn *= d;
                    std::mt19937 r(static_cast<unsigned>(isa * 100 + variant * 10 + f));
                    std::uniform_int_distribution<int> byte(0, 255);
                    std::vector<uint8_t> bconst(static_cast<size_t>(bn));
                    for (uint8_t& v : bconst) v = static_cast<uint8_t>(byte(r));
                    PlanWriter w;
                    const uint32_t in = w.tensor(QATML_TYPE_FLOAT32, yd), a = w.tensor(type, yd), y = w.tensor(type, yd);
                    const uint32_t out = w.tensor(QATML_TYPE_FLOAT32, yd);
                    uint32_t b = 0;
                    w.inputs = {in};
                    w.outputs = {out};
                    qatml_test::quantize_op(w, in, a, sa, za);
                    if (variant == 0) {
                        b = w.tensor(type, yd);
                        qatml_test::quantize_op(w, in, b, sb, zb);  // b from the same input at another scale
                        qatml_test::binary_op(w, a, b, y, f, {}, {}, {{sa, za}, {sb, zb}, {sy, zy}});
                    } else {
                        qatml_test::binary_op(w, a, 0, y, f, bd, bconst, {{sa, za}, {sb, zb}, {sy, zy}});
                    }
                    qatml_test::quantize_op(w, y, out, sy, zy, true);
                    const int64_t rows = 3;
                    std::vector<float> x =
                        random_floats(static_cast<size_t>(rows * 600), 77u + static_cast<unsigned>(variant), -7.0f, 7.0f);
                    const auto got = run_plan(w.bytes(), rows, {x});
                    ASSERT_EQ(got.size(), 1u);
                    auto quant = [&](float v, float s, int32_t z) {
                        float q = v / s;
                        q = std::min(std::max(q, static_cast<float>(lo - z)), static_cast<float>(hi - z));
                        return static_cast<int32_t>(std::nearbyint(q)) + z;
                    };
                    int mismatches = 0;
                    for (int64_t rr = 0; rr < rows; ++rr)
                        for (int64_t i = 0; i < 600; ++i) {
                            const int64_t yi[3] = {i / 200, (i / 40) % 5, i % 40};
                            const int32_t av = quant(x[static_cast<size_t>(rr * 600 + i)], sa, za);
                            int32_t bv;
                            if (variant == 0)
                                bv = quant(x[static_cast<size_t>(rr * 600 + i)], sb, zb);
                            else {
                                const uint8_t raw = bconst[static_cast<size_t>(broadcast_index(bd, yi, yd))];
                                bv = sg ? int32_t(int8_t(raw)) : int32_t(raw);
                            }
                            const int32_t expect = f == QATML_BINARY_ADD ? qadd_ref(av, bv, sa, za, sb, zb, sy, zy, lo, hi)
                                                                         : qmul_ref(av, bv, sa, za, sb, zb, sy, zy, lo, hi);
                            mismatches += got[0][static_cast<size_t>(rr * 600 + i)] != static_cast<float>(expect - zy) * sy;
                        }
                    EXPECT_EQ(mismatches, 0) << qatml_isa_name(isa) << (sg ? " int8 " : " uint8 ")
                                             << (f == QATML_BINARY_ADD ? "add" : "mul") << ", variant " << variant;
                }
    }
}

// Concats and slices of a few bytes per block (detection heads: 2-4 bytes), copied inline rather than by memcpy calls:
// float parts of 4, 8, 12 and 20 bytes, 8-bit parts of 11 bytes, slices of 8 (float) and 3 (8-bit) bytes.
TEST(EngineOps, ShortConcatPartsAndSlices) {
    PlanWriter w;
    const int64_t widths[4] = {1, 2, 3, 5};
    std::vector<uint32_t> in;
    for (int64_t k : widths) in.push_back(w.tensor(QATML_TYPE_FLOAT32, {3, k}));
    const uint32_t cat = w.tensor(QATML_TYPE_FLOAT32, {3, 11}), slice = w.tensor(QATML_TYPE_FLOAT32, {3, 2});
    const uint32_t q = w.tensor(QATML_TYPE_UINT8, {3, 11}), qcat = w.tensor(QATML_TYPE_UINT8, {3, 22});
    const uint32_t qslice = w.tensor(QATML_TYPE_UINT8, {3, 3}), dcat = w.tensor(QATML_TYPE_FLOAT32, {3, 22});
    const uint32_t dslice = w.tensor(QATML_TYPE_FLOAT32, {3, 3});
    w.inputs = in;
    w.outputs = {cat, slice, dcat, dslice};
    qatml_test::concat_op(w, cat, 1, {{in[0], {}}, {in[1], {}}, {in[2], {}}, {in[3], {}}});
    qatml_test::copy_op(w, cat, slice, {3, 2}, 1, {11, 1});
    qatml_test::quantize_op(w, cat, q, 1.0f, 0);
    qatml_test::concat_op(w, qcat, 1, {{q, {}}, {q, {}}});
    qatml_test::copy_op(w, qcat, qslice, {3, 3}, 4, {22, 1});
    qatml_test::quantize_op(w, qcat, dcat, 1.0f, 0, true);
    qatml_test::quantize_op(w, qslice, dslice, 1.0f, 0, true);
    const int64_t rows = 2;
    std::vector<std::vector<float>> xs;
    for (size_t i = 0; i < 4; ++i) {
        std::vector<float> v(static_cast<size_t>(rows * 3 * widths[i]));
        for (size_t j = 0; j < v.size(); ++j) v[j] = static_cast<float>((37 * (j + 11 * i)) % 250);  // integers: quantize exactly
        xs.push_back(v);
    }
    const auto out = run_plan(w.bytes(), rows, xs);
    ASSERT_EQ(out.size(), 4u);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < 3; ++i) {
            std::vector<float> line;
            for (size_t t = 0; t < 4; ++t)
                for (int64_t j = 0; j < widths[t]; ++j) line.push_back(xs[t][static_cast<size_t>((r * 3 + i) * widths[t] + j)]);
            for (int64_t j = 0; j < 11; ++j) {
                EXPECT_EQ(out[0][static_cast<size_t>((r * 3 + i) * 11 + j)], line[static_cast<size_t>(j)]);
                EXPECT_EQ(out[2][static_cast<size_t>((r * 3 + i) * 22 + j)], line[static_cast<size_t>(j)]);
                EXPECT_EQ(out[2][static_cast<size_t>((r * 3 + i) * 22 + 11 + j)], line[static_cast<size_t>(j)]);
            }
            for (int64_t j = 0; j < 2; ++j) EXPECT_EQ(out[1][static_cast<size_t>((r * 3 + i) * 2 + j)], line[static_cast<size_t>(1 + j)]);
            for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(out[3][static_cast<size_t>((r * 3 + i) * 3 + j)], line[static_cast<size_t>(4 + j)]);
        }
}

TEST(EngineOps, ConcatCopyPadAndResizeMoveTheRightElements) {
    // Concat of [2, 2, 4], [2, 3, 4], [2, 1, 4] along axis 1 (float), then a
    // transpose [2, 6, 4] -> [4, 2, 6] by a copy.
    {
        PlanWriter w;
        const uint32_t a = w.tensor(QATML_TYPE_FLOAT32, {2, 2, 4}), b = w.tensor(QATML_TYPE_FLOAT32, {2, 3, 4}),
                       c = w.tensor(QATML_TYPE_FLOAT32, {2, 1, 4});
        const uint32_t cat = w.tensor(QATML_TYPE_FLOAT32, {2, 6, 4}), t = w.tensor(QATML_TYPE_FLOAT32, {4, 2, 6});
        w.inputs = {a, b, c};
        w.outputs = {cat, t};
        qatml_test::concat_op(w, cat, 1, {{a, {}}, {b, {}}, {c, {}}});
        qatml_test::copy_op(w, cat, t, {4, 2, 6}, 0, {1, 24, 4});
        const auto av = random_floats(2 * 16, 1), bv = random_floats(2 * 24, 2), cv = random_floats(2 * 8, 3);
        const auto out = run_plan(w.bytes(), 2, {av, bv, cv});
        ASSERT_EQ(out.size(), 2u);
        for (int64_t r = 0; r < 2; ++r)
            for (int64_t i = 0; i < 2; ++i)
                for (int64_t j = 0; j < 6; ++j)
                    for (int64_t k = 0; k < 4; ++k) {
                        const float v = j < 2 ? av[static_cast<size_t>(r * 16 + (i * 2 + j) * 4 + k)]
                            : j < 5           ? bv[static_cast<size_t>(r * 24 + (i * 3 + j - 2) * 4 + k)]
                                              : cv[static_cast<size_t>(r * 8 + i * 4 + k)];
                        EXPECT_EQ(out[0][static_cast<size_t>(r * 48 + (i * 6 + j) * 4 + k)], v);
                        EXPECT_EQ(out[1][static_cast<size_t>(r * 48 + (k * 2 + i) * 6 + j)], v);
                    }
    }
    // 8-bit concat through a table, padding with a value, nearest and bilinear
    // resize of u8 and float.
    {
        PlanWriter w;
        const uint32_t in = w.tensor(QATML_TYPE_FLOAT32, {2, 3, 5}), q = w.tensor(QATML_TYPE_UINT8, {2, 3, 5});
        const uint32_t cat = w.tensor(QATML_TYPE_UINT8, {4, 3, 5}), pad = w.tensor(QATML_TYPE_UINT8, {4, 6, 7});
        const uint32_t near = w.tensor(QATML_TYPE_UINT8, {4, 4, 3}), lin = w.tensor(QATML_TYPE_UINT8, {4, 2, 3});
        const uint32_t flin = w.tensor(QATML_TYPE_FLOAT32, {2, 2, 3});
        const uint32_t o_pad = w.tensor(QATML_TYPE_FLOAT32, {4, 6, 7}), o_near = w.tensor(QATML_TYPE_FLOAT32, {4, 4, 3});
        const uint32_t o_lin = w.tensor(QATML_TYPE_FLOAT32, {4, 2, 3});
        w.inputs = {in};
        w.outputs = {o_pad, o_near, o_lin, flin};
        qatml_test::quantize_op(w, in, q, 1.0f, 0);
        std::vector<uint8_t> table(256);
        for (int i = 0; i < 256; ++i) table[static_cast<size_t>(i)] = static_cast<uint8_t>((i * 7) & 0xFF);
        qatml_test::concat_op(w, cat, 0, {{q, {}}, {q, table}});
        qatml_test::pad_op(w, cat, pad, {0, 2, 1, 0, 1, 1}, 201);
        qatml_test::ResizeMap nr{{0, 2, 1, 1}, {}, {}}, nc{{4, 0, 2}, {}, {}};
        qatml_test::resize_op(w, cat, near, false, nr, nc);
        qatml_test::ResizeMap lr{{0, 1}, {1, 2}, {0.25f, 0.5f}}, lc{{0, 2, 3}, {1, 3, 4}, {0.0f, 0.75f, 1.0f}};
        qatml_test::resize_op(w, cat, lin, true, lr, lc);
        qatml_test::resize_op(w, in, flin, true, lr, lc);
        qatml_test::quantize_op(w, pad, o_pad, 1.0f, 0, true);
        qatml_test::quantize_op(w, near, o_near, 1.0f, 0, true);
        qatml_test::quantize_op(w, lin, o_lin, 1.0f, 0, true);
        std::vector<float> x(30);
        for (int i = 0; i < 30; ++i) x[static_cast<size_t>(i)] = static_cast<float>((i * 37) % 256);
        const auto out = run_plan(w.bytes(), 1, {x});
        ASSERT_EQ(out.size(), 4u);
        auto catv = [&](int64_t c, int64_t h, int64_t ww) {
            const float v = x[static_cast<size_t>(((c % 2) * 3 + h) * 5 + ww)];
            return c < 2 ? v : static_cast<float>(table[static_cast<size_t>(v)]);
        };
        for (int64_t c = 0; c < 4; ++c) {
            for (int64_t h = 0; h < 6; ++h)
                for (int64_t ww = 0; ww < 7; ++ww) {
                    const bool inside = h >= 2 && h < 5 && ww >= 1 && ww < 6;
                    EXPECT_EQ(out[0][static_cast<size_t>((c * 6 + h) * 7 + ww)], inside ? catv(c, h - 2, ww - 1) : 201.0f);
                }
            for (int64_t h = 0; h < 4; ++h)
                for (int64_t ww = 0; ww < 3; ++ww)
                    EXPECT_EQ(out[1][static_cast<size_t>((c * 4 + h) * 3 + ww)],
                              catv(c, nr.i0[static_cast<size_t>(h)], nc.i0[static_cast<size_t>(ww)]));
            for (int64_t h = 0; h < 2; ++h)
                for (int64_t ww = 0; ww < 3; ++ww) {
                    const float dy = lr.w[static_cast<size_t>(h)], dx = lc.w[static_cast<size_t>(ww)];
                    auto at = [&](int64_t yy, int64_t xx) { return catv(c, yy, xx); };
                    const int64_t y0 = lr.i0[static_cast<size_t>(h)], y1 = lr.i1[static_cast<size_t>(h)];
                    const int64_t x0 = lc.i0[static_cast<size_t>(ww)], x1 = lc.i1[static_cast<size_t>(ww)];
                    const float v = (1.0f - dy) * (1.0f - dx) * at(y0, x0) + (1.0f - dy) * dx * at(y0, x1) + dy * (1.0f - dx) * at(y1, x0) +
                        dy * dx * at(y1, x1);
                    EXPECT_EQ(out[2][static_cast<size_t>((c * 2 + h) * 3 + ww)], std::nearbyint(std::min(std::max(v, 0.0f), 255.0f)));
                    if (c < 2) EXPECT_EQ(out[3][static_cast<size_t>((c * 2 + h) * 3 + ww)], v);
                }
        }
    }
}

TEST(EngineOps, SoftmaxLayerNormReduceMeanAndMatMul) {
    PlanWriter w;
    const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {3, 4, 5}), sm = w.tensor(QATML_TYPE_FLOAT32, {3, 4, 5});
    const uint32_t ln = w.tensor(QATML_TYPE_FLOAT32, {3, 4, 5}), rm = w.tensor(QATML_TYPE_FLOAT32, {3, 5});
    const uint32_t b = w.tensor(QATML_TYPE_FLOAT32, {3, 5, 2}), mm = w.tensor(QATML_TYPE_FLOAT32, {3, 4, 2});
    const uint32_t qa = w.tensor(QATML_TYPE_UINT8, {3, 4, 5}), qb = w.tensor(QATML_TYPE_INT8, {3, 5, 2}),
                   qm = w.tensor(QATML_TYPE_UINT8, {3, 4, 2});
    const uint32_t out_q = w.tensor(QATML_TYPE_FLOAT32, {3, 4, 2});
    w.inputs = {x, b};
    w.outputs = {sm, ln, rm, mm, out_q};
    qatml_test::axis_op(w, QATML_ENGINE_OP_SOFTMAX, x, sm, 1);
    std::vector<float> scale = {1.0f, 0.5f, 2.0f, -1.0f, 0.25f}, bias = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
    qatml_test::layernorm_op(w, x, ln, 2, 1e-3f, scale, bias);
    qatml_test::axis_op(w, QATML_ENGINE_OP_REDUCE_MEAN, x, rm, 1, 1);
    qatml_test::matmul_op(w, x, b, mm);
    qatml_test::quantize_op(w, x, qa, 0.04f, 128);
    qatml_test::quantize_op(w, b, qb, 0.03f, -3);
    qatml_test::matmul_op(w, qa, qb, qm, {{0.04f, 128}, {0.03f, -3}, {0.05f, 110}});
    qatml_test::quantize_op(w, qm, out_q, 0.05f, 110, true);
    const int64_t rows = 2;
    const auto xv = random_floats(static_cast<size_t>(rows * 60), 21), bv = random_floats(static_cast<size_t>(rows * 30), 22);
    const auto out = run_plan(w.bytes(), rows, {xv, bv});
    ASSERT_EQ(out.size(), 5u);
    auto X = [&](int64_t r, int64_t i, int64_t j, int64_t k) { return xv[static_cast<size_t>(r * 60 + (i * 4 + j) * 5 + k)]; };
    auto q8 = [](float v, float s, int32_t z, int32_t lo, int32_t hi) {
        return static_cast<int32_t>(std::nearbyint(std::min(std::max(v / s, static_cast<float>(lo - z)), static_cast<float>(hi - z)))) + z;
    };
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < 3; ++i) {
            for (int64_t k = 0; k < 5; ++k) {  // softmax over axis 1 (4 values, stride 5); mean over it
                float m = X(r, i, 0, k), sum = 0.0f, total = 0.0f;
                for (int64_t j = 1; j < 4; ++j) m = std::max(m, X(r, i, j, k));
                float e[4];
                for (int64_t j = 0; j < 4; ++j) sum += (e[j] = std::exp(X(r, i, j, k) - m));
                for (int64_t j = 0; j < 4; ++j) {
                    EXPECT_EQ(out[0][static_cast<size_t>(r * 60 + (i * 4 + j) * 5 + k)], e[j] / sum);
                    total += X(r, i, j, k);
                }
                EXPECT_EQ(out[2][static_cast<size_t>(r * 15 + i * 5 + k)], total / 4.0f);
            }
            for (int64_t j = 0; j < 4; ++j) {  // layer norm over the last 5
                double s = 0, sq = 0;
                for (int64_t k = 0; k < 5; ++k) s += X(r, i, j, k), sq += double(X(r, i, j, k)) * X(r, i, j, k);
                const double mean = s / 5, var = std::max(0.0, sq / 5 - mean * mean);
                const float inv = static_cast<float>(1.0 / std::sqrt(var + 1e-3)), fm = static_cast<float>(mean);
                for (int64_t k = 0; k < 5; ++k)
                    EXPECT_EQ(out[1][static_cast<size_t>(r * 60 + (i * 4 + j) * 5 + k)],
                              (X(r, i, j, k) - fm) * inv * scale[static_cast<size_t>(k)] + bias[static_cast<size_t>(k)]);
                for (int64_t n = 0; n < 2; ++n) {  // matmul [4, 5] x [5, 2], float and 8-bit
                    float acc = 0.0f;
                    int32_t iacc = 0;
                    for (int64_t k = 0; k < 5; ++k) {
                        const float bval = bv[static_cast<size_t>(r * 30 + (i * 5 + k) * 2 + n)];
                        acc += X(r, i, j, k) * bval;
                        iacc += (q8(X(r, i, j, k), 0.04f, 128, 0, 255) - 128) * (q8(bval, 0.03f, -3, -128, 127) + 3);
                    }
                    EXPECT_EQ(out[3][static_cast<size_t>(r * 24 + (i * 4 + j) * 2 + n)], acc);
                    const float mult = (0.04f * 0.03f) / 0.05f;
                    float f = static_cast<float>(iacc) * mult;
                    f = std::min(std::max(f, static_cast<float>(0 - 110)), static_cast<float>(255 - 110));
                    const int32_t qv = static_cast<int32_t>(std::nearbyint(f)) + 110;
                    EXPECT_EQ(out[4][static_cast<size_t>(r * 24 + (i * 4 + j) * 2 + n)], static_cast<float>(qv - 110) * 0.05f);
                }
            }
        }
}

// A PAD with steps (zero insertion, as ConvTranspose lowers) and a float convolution (stride 2, pads, groups,
// dilation) against direct loops.
TEST(EngineOps, ZeroInsertionAndFloatConvolution) {
    for (int variant = 0; variant < 3; ++variant) {
        const int64_t groups = variant == 2 ? 2 : 1, stride = variant == 1 ? 2 : 1, dil = variant == 2 ? 2 : 1, c = 4, m = 6, k = 3;
        // The padded input: pads (2, 1) before, (1, 0) after, steps 2 and 3 between the elements.
        const int64_t h = 5, wd = 7, ph = 2 + (h - 1) * 2 + 1 + 1, pw = 1 + (wd - 1) * 3 + 1 + 0;
        const int64_t pads[4] = {1, 0, 2, 1};  // the convolution's
        const int64_t oh = (ph + pads[0] + pads[2] - (dil * (k - 1) + 1)) / stride + 1;
        const int64_t ow = (pw + pads[1] + pads[3] - (dil * (k - 1) + 1)) / stride + 1;
        PlanWriter w;
        const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {c, h, wd}), padded = w.tensor(QATML_TYPE_FLOAT32, {c, ph, pw});
        const uint32_t y = w.tensor(QATML_TYPE_FLOAT32, {m, oh, ow});
        w.inputs = {x};
        w.outputs = {padded, y};
        const float fill = 0.5f;
        uint32_t bits;
        std::memcpy(&bits, &fill, 4);
        qatml_test::pad_op(w, x, padded, {0, 2, 1, 0, 1, 0}, bits, {1, 2, 3});
        const auto weights = random_floats(static_cast<size_t>(m * (c / groups) * k * k), 61u + static_cast<unsigned>(variant));
        const auto bias = random_floats(static_cast<size_t>(m), 62);
        qatml_test::float_conv_op(w, padded, y, m, c / groups, k, stride, {pads[0], pads[1], pads[2], pads[3]}, weights, bias, groups, dil);
        const auto xv = random_floats(static_cast<size_t>(2 * c * h * wd), 63);
        const auto out = run_plan(w.bytes(), 2, {xv});
        ASSERT_EQ(out.size(), 2u);
        for (int64_t r = 0; r < 2; ++r) {
            auto P = [&](int64_t ch, int64_t yy, int64_t xx) {  // the padded input, from its definition
                const int64_t sy = yy - 2, sx = xx - 1;
                if (sy < 0 || sx < 0 || sy % 2 || sx % 3 || sy / 2 >= h || sx / 3 >= wd) return fill;
                return xv[static_cast<size_t>(((r * c + ch) * h + sy / 2) * wd + sx / 3)];
            };
            for (int64_t ch = 0; ch < c; ++ch)
                for (int64_t yy = 0; yy < ph; ++yy)
                    for (int64_t xx = 0; xx < pw; ++xx)
                        EXPECT_EQ(out[0][static_cast<size_t>(((r * c + ch) * ph + yy) * pw + xx)], P(ch, yy, xx));
            for (int64_t co = 0; co < m; ++co)
                for (int64_t oy = 0; oy < oh; ++oy)
                    for (int64_t ox = 0; ox < ow; ++ox) {
                        const int64_t g = co / (m / groups);
                        double acc = bias[static_cast<size_t>(co)];
                        for (int64_t ci = 0; ci < c / groups; ++ci)
                            for (int64_t ky = 0; ky < k; ++ky)
                                for (int64_t kx = 0; kx < k; ++kx) {
                                    const int64_t iy = oy * stride - pads[0] + ky * dil, ix = ox * stride - pads[1] + kx * dil;
                                    if (iy < 0 || iy >= ph || ix < 0 || ix >= pw) continue;
                                    acc += double(weights[static_cast<size_t>(((co * (c / groups) + ci) * k + ky) * k + kx)]) *
                                        P(g * (c / groups) + ci, iy, ix);
                                }
                        EXPECT_NEAR(out[1][static_cast<size_t>(((r * m + co) * oh + oy) * ow + ox)], acc, 1e-4 * (1 + std::fabs(acc)))
                            << "variant " << variant;
                    }
        }
    }
}

// Runs a one-input, one-output float plan on every path: each output within bound[i] of exact[i], row 1 of `rows`
// equal to that row alone, the SIMD paths equal to each other, and (given a context) its threads equal to one.
void expect_every_path_within_bound(const std::vector<uint8_t>& plan, int64_t rows, const std::vector<float>& xv, int64_t per_row, int64_t out_row,
                                    const std::vector<double>& exact, const std::vector<double>& bound, const std::string& what,
                                    const qatml_context* threads = nullptr) {
    std::vector<std::vector<float>> by_path;
    for (int isa : qatml_test::every_isa()) {
        qatml_test::IsaCap cap(isa);
        const auto out = run_plan(plan, rows, {xv});
        ASSERT_EQ(out.size(), 1u);
        size_t beyond = 0;
        for (size_t i = 0; i < exact.size(); ++i) beyond += std::fabs(double(out[0][i]) - exact[i]) > bound[i];
        EXPECT_EQ(beyond, 0u) << what << ", path " << qatml_isa_name(isa);
        const std::vector<float> row1(xv.begin() + per_row, xv.begin() + 2 * per_row);
        const auto one = run_plan(plan, 1, {row1});
        ASSERT_EQ(one.size(), 1u);
        EXPECT_TRUE(std::equal(one[0].begin(), one[0].end(), out[0].begin() + out_row)) << what << ", path " << qatml_isa_name(isa);
        if (threads) EXPECT_EQ(run_plan(plan, rows, {xv}, threads), out) << what << ", path " << qatml_isa_name(isa) << ", 3 threads";
        if (isa != QATML_ISA_SCALAR) by_path.push_back(out[0]);
    }
    for (size_t p = 1; p < by_path.size(); ++p) EXPECT_EQ(by_path[p], by_path[0]) << what << ": SIMD paths differ";
}

// The float convolution on every path against a double-precision reference, within the error bound of any float32
// summation order, (K + 2) * 2^-24 * (sum |w x| + |bias|) per output (the paths sum in different orders: the scalar
// loop from the bias, multiply then add; the SIMD kernels FMA chains from 0, then the bias). AVX2 and AVX-512 run the
// same chains, so they agree exactly; a row's outputs do not depend on the batch. Shapes: the GEMM with row and column
// tails and several im2col chunks, 1x1 convolutions read directly, a 7x7 stride-2 stem, grouped, and depthwise with
// strides, dilation and a channel multiplier.
TEST(EngineOps, FloatConvolutionOnEveryPathWithinTheSummationBound) {
    struct Shape {
        int64_t c, h, w, m, k, stride, groups, dil;
        std::vector<int64_t> pads;
    };
    const std::vector<Shape> shapes = {
        {5, 9, 11, 13, 3, 1, 1, 1, {1, 1, 1, 1}},   {64, 13, 15, 7, 3, 1, 1, 1, {1, 0, 2, 1}}, {16, 10, 7, 30, 1, 1, 1, 1, {0, 0, 0, 0}},
        {8, 9, 9, 12, 1, 2, 1, 1, {0, 0, 0, 0}},    {3, 31, 29, 20, 7, 2, 1, 1, {3, 3, 3, 3}}, {6, 8, 10, 9, 3, 2, 3, 2, {2, 1, 0, 2}},
        {12, 17, 37, 12, 3, 1, 12, 1, {1, 1, 1, 1}}, {6, 20, 45, 6, 3, 2, 6, 1, {1, 1, 1, 1}}, {4, 12, 40, 8, 5, 3, 4, 2, {2, 3, 1, 0}},
        {8, 11, 70, 8, 3, 2, 8, 1, {0, 2, 1, 1}},
    };
    for (size_t si = 0; si < shapes.size(); ++si) {
        const Shape& s = shapes[si];
        const int64_t cpg = s.c / s.groups, ext = s.dil * (s.k - 1) + 1;
        const int64_t oh = (s.h + s.pads[0] + s.pads[2] - ext) / s.stride + 1, ow = (s.w + s.pads[1] + s.pads[3] - ext) / s.stride + 1;
        PlanWriter w;
        const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {s.c, s.h, s.w}), y = w.tensor(QATML_TYPE_FLOAT32, {s.m, oh, ow});
        w.inputs = {x};
        w.outputs = {y};
        const auto weights = random_floats(static_cast<size_t>(s.m * cpg * s.k * s.k), 70u + static_cast<unsigned>(si), -1.0f, 1.0f);
        const auto bias = random_floats(static_cast<size_t>(s.m), 80u + static_cast<unsigned>(si));
        qatml_test::float_conv_op(w, x, y, s.m, cpg, s.k, s.stride, {s.pads[0], s.pads[1], s.pads[2], s.pads[3]}, weights, bias, s.groups, s.dil);
        const int64_t rows = 3, per_row = s.c * s.h * s.w, out_row = s.m * oh * ow;
        const auto xv = random_floats(static_cast<size_t>(rows * per_row), 90u + static_cast<unsigned>(si));
        std::vector<double> exact(static_cast<size_t>(rows * out_row)), bound(exact.size());
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t co = 0; co < s.m; ++co)
                for (int64_t oy = 0; oy < oh; ++oy)
                    for (int64_t ox = 0; ox < ow; ++ox) {
                        const int64_t g = co / (s.m / s.groups);
                        double acc = bias[static_cast<size_t>(co)], mag = std::fabs(acc);
                        for (int64_t ci = 0; ci < cpg; ++ci)
                            for (int64_t ky = 0; ky < s.k; ++ky)
                                for (int64_t kx = 0; kx < s.k; ++kx) {
                                    const int64_t iy = oy * s.stride - s.pads[0] + ky * s.dil, ix = ox * s.stride - s.pads[1] + kx * s.dil;
                                    if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                                    const double v = double(weights[static_cast<size_t>(((co * cpg + ci) * s.k + ky) * s.k + kx)]) *
                                                     xv[static_cast<size_t>(r * per_row + ((g * cpg + ci) * s.h + iy) * s.w + ix)];
                                    acc += v;
                                    mag += std::fabs(v);
                                }
                        const size_t i = static_cast<size_t>(((r * s.m + co) * oh + oy) * ow + ox);
                        exact[i] = acc;
                        bound[i] = double(cpg * s.k * s.k + 2) * std::ldexp(1.0, -24) * mag;
                    }
        expect_every_path_within_bound(w.bytes(), rows, xv, per_row, out_row, exact, bound, "shape " + std::to_string(si));
    }
}

// The float MatMul with constant weights (FLOAT_GEMM) on every path against a double-precision reference within the
// same summation bound, (K + 2) * 2^-24 * (sum |x w| + |bias|) per output. The SIMD paths (the convolution's kernels,
// the vectors of all rows as the tile's rows) agree exactly, and a vector's outputs depend neither on the batch nor on
// the threads. Shapes: tiny, row and column tails on both tile sizes, no bias, and a K long enough for several chunks
// of packed vectors.
TEST(EngineOps, FloatGemmOnEveryPathWithinTheSummationBound) {
    struct Shape {
        int64_t vectors, k, n;
        bool bias;
    };
    const std::vector<Shape> shapes = {{5, 3, 2, true}, {7, 37, 45, true}, {13, 64, 96, false}, {11, 384, 70, true}, {20, 2000, 17, true}};
    qatml_device cpu{QATML_DEVICE_CPU, 0};
    qatml_context* ctx = nullptr;
    ASSERT_EQ(qatml_context_create(&cpu, 3, &ctx), QATML_OK);
    for (size_t si = 0; si < shapes.size(); ++si) {
        const Shape& s = shapes[si];
        PlanWriter w;
        const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {s.vectors, s.k}), y = w.tensor(QATML_TYPE_FLOAT32, {s.vectors, s.n});
        w.inputs = {x};
        w.outputs = {y};
        const auto weights = random_floats(static_cast<size_t>(s.k * s.n), 100u + static_cast<unsigned>(si), -1.0f, 1.0f);
        const auto bias = s.bias ? random_floats(static_cast<size_t>(s.n), 110u + static_cast<unsigned>(si)) : std::vector<float>{};
        qatml_test::float_gemm_op(w, x, y, s.k, s.n, weights, bias);
        const int64_t rows = 3, per_row = s.vectors * s.k, out_row = s.vectors * s.n;
        const auto xv = random_floats(static_cast<size_t>(rows * per_row), 120u + static_cast<unsigned>(si));
        std::vector<double> exact(static_cast<size_t>(rows * out_row)), bound(exact.size());
        for (int64_t v = 0; v < rows * s.vectors; ++v)
            for (int64_t j = 0; j < s.n; ++j) {
                double acc = s.bias ? bias[static_cast<size_t>(j)] : 0.0, mag = std::fabs(acc);
                for (int64_t kk = 0; kk < s.k; ++kk) {
                    const double p = double(xv[static_cast<size_t>(v * s.k + kk)]) * weights[static_cast<size_t>(kk * s.n + j)];
                    acc += p;
                    mag += std::fabs(p);
                }
                exact[static_cast<size_t>(v * s.n + j)] = acc;
                bound[static_cast<size_t>(v * s.n + j)] = double(s.k + 2) * std::ldexp(1.0, -24) * mag;
            }
        expect_every_path_within_bound(w.bytes(), rows, xv, per_row, out_row, exact, bound, "shape " + std::to_string(si), ctx);
    }
    qatml_context_destroy(ctx);
}

// Every op kind in one plan: each path, batch and thread count gives the same
// outputs, and rows do not interact.
TEST(EngineOps, WideOpsPlanAgreesAcrossPathsBatchesAndThreads) {
    const std::vector<uint8_t> plan = qatml_test::wide_ops_plan();
    const int64_t rows = 4;
    const std::vector<float> x = random_floats(static_cast<size_t>(rows * 144), 31, -6.0f, 6.0f);
    const auto first = run_plan(plan, rows, {x});
    ASSERT_EQ(first.size(), 3u);
    qatml_device cpu{QATML_DEVICE_CPU, 0};
    qatml_context* ctx = nullptr;
    ASSERT_EQ(qatml_context_create(&cpu, 3, &ctx), QATML_OK);
    for (int isa : qatml_test::every_isa()) {
        qatml_test::IsaCap cap(isa);
        const auto reference = run_plan(plan, rows, {x});
        ASSERT_EQ(reference.size(), 3u);
        // Integer and elementwise results agree exactly across paths; the float convolution's (output 2) sums in
        // another order on the SIMD paths (FloatConvolutionOnEveryPathWithinTheSummationBound).
        EXPECT_EQ(reference[0], first[0]) << qatml_isa_name(isa);
        EXPECT_EQ(reference[1], first[1]) << qatml_isa_name(isa);
        for (size_t i = 0; i < first[2].size(); ++i)
            EXPECT_NEAR(reference[2][i], first[2][i], 1e-5f * (1.0f + std::fabs(first[2][i]))) << qatml_isa_name(isa) << ", value " << i;
        EXPECT_EQ(run_plan(plan, rows, {x}, ctx), reference) << qatml_isa_name(isa) << ", 3 threads";
        const std::vector<float> row2(x.begin() + 2 * 144, x.begin() + 3 * 144);
        const auto one = run_plan(plan, 1, {row2});
        ASSERT_EQ(one.size(), 3u);
        EXPECT_TRUE(std::equal(one[0].begin(), one[0].end(), reference[0].begin() + 2 * 96)) << qatml_isa_name(isa);
        EXPECT_TRUE(std::equal(one[1].begin(), one[1].end(), reference[1].begin() + 2 * 288)) << qatml_isa_name(isa);
        EXPECT_TRUE(std::equal(one[2].begin(), one[2].end(), reference[2].begin() + 2 * 324)) << qatml_isa_name(isa);
    }
    qatml_context_destroy(ctx);
}

TEST(EngineOps, LoaderRefusesInconsistentPayloads) {
    struct Case {
        const char* expect;
        std::vector<uint8_t> plan;
    };
    std::vector<Case> cases;
    auto simple = [](auto build) {
        PlanWriter w;
        build(w);
        return w.bytes();
    };
    cases.push_back({"dim 0 is 2", simple([](PlanWriter& w) {
                         const uint32_t a = w.tensor(QATML_TYPE_FLOAT32, {2, 3}), y = w.tensor(QATML_TYPE_FLOAT32, {2, 3});
                         w.inputs = {a};
                         w.outputs = {y};
                         qatml_test::binary_op(w, a, 0, y, QATML_BINARY_ADD, {2}, qatml_test::bytes_of(std::vector<float>{1, 2}));
                     })});
    cases.push_back({"ADD and MUL only", simple([](PlanWriter& w) {
                         const uint32_t in = w.tensor(QATML_TYPE_FLOAT32, {4}), a = w.tensor(QATML_TYPE_UINT8, {4}),
                                        y = w.tensor(QATML_TYPE_UINT8, {4});
                         const uint32_t o = w.tensor(QATML_TYPE_FLOAT32, {4});
                         w.inputs = {in};
                         w.outputs = {o};
                         qatml_test::quantize_op(w, in, a, 1.0f, 0);
                         qatml_test::binary_op(w, a, a, y, QATML_BINARY_DIV, {}, {}, {{1.0f, 0}, {1.0f, 0}, {1.0f, 0}});
                         qatml_test::quantize_op(w, y, o, 1.0f, 0, true);
                     })});
    cases.push_back({"reads past a row", simple([](PlanWriter& w) {
                         const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {2, 3}), y = w.tensor(QATML_TYPE_FLOAT32, {3, 2});
                         w.inputs = {x};
                         w.outputs = {y};
                         qatml_test::copy_op(w, x, y, {3, 2}, 1, {1, 3});
                     })});
    cases.push_back({"add up to", simple([](PlanWriter& w) {
                         const uint32_t a = w.tensor(QATML_TYPE_FLOAT32, {2, 3}), y = w.tensor(QATML_TYPE_FLOAT32, {5, 3});
                         w.inputs = {a};
                         w.outputs = {y};
                         qatml_test::concat_op(w, y, 0, {{a, {}}, {a, {}}});
                     })});
    cases.push_back({"outside 0..", simple([](PlanWriter& w) {
                         const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {1, 2, 2}), y = w.tensor(QATML_TYPE_FLOAT32, {1, 2, 2});
                         w.inputs = {x};
                         w.outputs = {y};
                         qatml_test::resize_op(w, x, y, false, {{0, 2}, {}, {}}, {{0, 1}, {}, {}});
                     })});
    cases.push_back({"does not give the output", simple([](PlanWriter& w) {
                         const uint32_t a = w.tensor(QATML_TYPE_FLOAT32, {2, 3}), b = w.tensor(QATML_TYPE_FLOAT32, {4, 2}),
                                        y = w.tensor(QATML_TYPE_FLOAT32, {2, 2});
                         w.inputs = {a, b};
                         w.outputs = {y};
                         qatml_test::matmul_op(w, a, b, y);
                     })});
    cases.push_back({"unknown function", simple([](PlanWriter& w) {
                         const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {3}), y = w.tensor(QATML_TYPE_FLOAT32, {3});
                         w.inputs = {x};
                         w.outputs = {y};
                         qatml_test::unary_op(w, x, y, 99);
                     })});
    cases.push_back({"output dim", simple([](PlanWriter& w) {
                         const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {2, 2}), y = w.tensor(QATML_TYPE_FLOAT32, {3, 3});
                         w.inputs = {x};
                         w.outputs = {y};
                         qatml_test::pad_op(w, x, y, {1, 0, 1, 0}, 0);
                     })});
    // axis + count wraps around 2^32 to a small number (a libFuzzer finding): still outside the rank.
    cases.push_back({"outside the rank", simple([](PlanWriter& w) {
                         const uint32_t x = w.tensor(QATML_TYPE_FLOAT32, {2, 3}), y = w.tensor(QATML_TYPE_FLOAT32, {2});
                         w.inputs = {x};
                         w.outputs = {y};
                         qatml_test::axis_op(w, QATML_ENGINE_OP_REDUCE_MEAN, x, y, 0xFF000001u, 0x01000000u);
                     })});
    for (const Case& c : cases) {
        const std::string error = load_error(c.plan);
        EXPECT_NE(error.find(c.expect), std::string::npos) << "expected '" << c.expect << "', got '" << error << "'";
    }
}
