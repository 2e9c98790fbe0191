// Engine plans for the tests and the plan-loader fuzzer: a little-endian plan
// writer and a small network that uses most op kinds (qatml_engine.h describes
// the format).
#pragma once

#include "qatml/qatml.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <random>
#include <vector>

namespace qatml_test {

inline unsigned seed() {
    return std::getenv("QATML_TEST_SEED") ? unsigned(std::strtoul(std::getenv("QATML_TEST_SEED"), nullptr, 10)) : 777u;
}

struct Plan {
    std::vector<uint8_t> b;
    template <typename T>
    void put(T v) {
        const auto* p = reinterpret_cast<const uint8_t*>(&v);
        b.insert(b.end(), p, p + sizeof(T));
    }
    void q(float s, int32_t z) {
        put(s);
        put(z);
    }
    void i64s(std::initializer_list<int64_t> v) {
        for (int64_t x : v) put(x);
    }
};

// Builds the body of one op payload, then frames it with kind and size.
struct OpBuilder {
    Plan body;
    void finish(Plan& plan, uint32_t kind) {
        plan.put(kind);
        plan.put(static_cast<uint32_t>(body.b.size()));
        plan.b.insert(plan.b.end(), body.b.begin(), body.b.end());
    }
};

// A plan assembled tensor by tensor and op by op (the header, tensor table,
// inputs and outputs written last).
struct PlanWriter {
    struct TensorDesc {
        uint32_t type;
        std::vector<int64_t> dims;
    };
    std::vector<TensorDesc> tensors;
    std::vector<uint32_t> inputs, outputs;
    Plan ops;
    uint32_t op_count = 0;

    uint32_t tensor(uint32_t type, std::vector<int64_t> dims) {
        tensors.push_back(TensorDesc{type, std::move(dims)});
        return static_cast<uint32_t>(tensors.size() - 1);
    }
    void op(uint32_t kind, OpBuilder& o) {
        o.finish(ops, kind);
        ++op_count;
    }
    std::vector<uint8_t> bytes() const {
        Plan p;
        p.b.insert(p.b.end(), {'Q', 'E', 'P', '1'});
        for (uint32_t v : {1u, static_cast<uint32_t>(tensors.size()), op_count, static_cast<uint32_t>(inputs.size()),
                           static_cast<uint32_t>(outputs.size())})
            p.put(v);
        for (const TensorDesc& t : tensors) {
            p.put(t.type);
            p.put(static_cast<uint32_t>(t.dims.size()));
            for (int64_t d : t.dims) p.put(d);
        }
        for (uint32_t i : inputs) p.put(i);
        for (uint32_t o : outputs) p.put(o);
        p.b.insert(p.b.end(), ops.b.begin(), ops.b.end());
        return p.b;
    }
};

// A CONV payload: int8 weights [m, cpg, kh, kw], per-channel scales, int32
// bias; pads top, left, bottom, right.
inline void conv_op(PlanWriter& w, uint32_t x, uint32_t y, float xs, int32_t xz, float ys, int32_t yz, int64_t m, int64_t cpg, int64_t kh,
                    int64_t kw, int64_t stride, std::initializer_list<int64_t> pads, const std::vector<int8_t>& weights,
                    const std::vector<float>& scales, const std::vector<int32_t>& bias, int64_t groups = 1) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    o.body.q(xs, xz);
    o.body.q(ys, yz);
    o.body.i64s({m, cpg, kh, kw, groups, stride, stride});
    for (int64_t p : pads) o.body.put(p);
    o.body.i64s({1, 1});
    o.body.put<uint32_t>(QATML_TYPE_INT8);
    o.body.put<uint32_t>(0);
    o.body.put<uint32_t>(1);
    for (float s : scales) o.body.put(s);
    for (int32_t b : bias) o.body.put(b);
    for (int8_t v : weights) o.body.put(v);
    w.op(QATML_ENGINE_OP_CONV, o);
}

// Payloads of the other op kinds (qatml_engine.h), one helper each.
inline void quantize_op(PlanWriter& w, uint32_t x, uint32_t y, float s, int32_t z, bool dequantize = false) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    o.body.q(s, z);
    w.op(dequantize ? QATML_ENGINE_OP_DEQUANTIZE : QATML_ENGINE_OP_QUANTIZE, o);
}
inline void unary_op(PlanWriter& w, uint32_t x, uint32_t y, uint32_t func, float alpha = 0.0f, float beta = 0.0f) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    o.body.put(func);
    o.body.put(alpha);
    o.body.put(beta);
    w.op(QATML_ENGINE_OP_UNARY, o);
}
// b_dims empty: b is the tensor b; else a constant of those dims with `values`
// (floats, or bytes for 8-bit). q: a, b, y quantization for 8-bit outputs
// (ignored for float).
inline void binary_op(PlanWriter& w, uint32_t a, uint32_t b, uint32_t y, uint32_t func, const std::vector<int64_t>& b_dims = {},
                      const std::vector<uint8_t>& values = {}, std::initializer_list<std::pair<float, int32_t>> q = {}) {
    OpBuilder o;
    o.body.put(a);
    o.body.put(b);
    o.body.put(y);
    o.body.put(func);
    o.body.put<uint32_t>(b_dims.empty() ? 0 : 1);
    if (!b_dims.empty()) {
        o.body.put(static_cast<uint32_t>(b_dims.size()));
        for (int64_t d : b_dims) o.body.put(d);
        o.body.b.insert(o.body.b.end(), values.begin(), values.end());
    }
    for (const auto& v : q) o.body.q(v.first, v.second);
    w.op(QATML_ENGINE_OP_BINARY, o);
}
template <typename T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
    std::vector<uint8_t> b(v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
    return b;
}
// Inputs with their table (empty: copied as they are).
inline void concat_op(PlanWriter& w, uint32_t y, uint32_t axis, const std::vector<std::pair<uint32_t, std::vector<uint8_t>>>& inputs) {
    OpBuilder o;
    o.body.put(y);
    o.body.put(axis);
    o.body.put(static_cast<uint32_t>(inputs.size()));
    for (const auto& in : inputs) {
        o.body.put(in.first);
        o.body.put<uint32_t>(in.second.empty() ? 0 : 1);
        o.body.b.insert(o.body.b.end(), in.second.begin(), in.second.end());
    }
    w.op(QATML_ENGINE_OP_CONCAT, o);
}
inline void copy_op(PlanWriter& w, uint32_t x, uint32_t y, const std::vector<int64_t>& dims, int64_t offset,
                    const std::vector<int64_t>& strides) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    o.body.put(static_cast<uint32_t>(dims.size()));
    for (int64_t d : dims) o.body.put(d);
    o.body.put(offset);
    for (int64_t s : strides) o.body.put(s);
    w.op(QATML_ENGINE_OP_COPY, o);
}
// steps empty: 1 for every dim (plain padding).
inline void pad_op(PlanWriter& w, uint32_t x, uint32_t y, const std::vector<int64_t>& pads, uint32_t value,
                   std::vector<int64_t> steps = {}) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    for (int64_t p : pads) o.body.put(p);
    if (steps.empty()) steps.assign(pads.size() / 2, 1);
    for (int64_t s : steps) o.body.put(s);
    o.body.put(value);
    w.op(QATML_ENGINE_OP_PAD, o);
}
// A FLOAT_CONV payload: weights [m, cpg, k, k] and bias as floats; pads top, left, bottom, right.
inline void float_conv_op(PlanWriter& w, uint32_t x, uint32_t y, int64_t m, int64_t cpg, int64_t k, int64_t stride,
                          std::initializer_list<int64_t> pads, const std::vector<float>& weights, const std::vector<float>& bias,
                          int64_t groups = 1, int64_t dilation = 1) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    o.body.i64s({m, cpg, k, k, groups, stride, stride});
    for (int64_t p : pads) o.body.put(p);
    o.body.i64s({dilation, dilation});
    o.body.put<uint32_t>(bias.empty() ? 0 : 1);
    for (float v : weights) o.body.put(v);
    for (float v : bias) o.body.put(v);
    w.op(QATML_ENGINE_OP_FLOAT_CONV, o);
}
// Nearest: rows / cols hold one source index each; bilinear: (y0, y1, dy) /
// (x0, x1, dx) triples (weights as floats).
struct ResizeMap {
    std::vector<int32_t> i0, i1;
    std::vector<float> w;
};
inline void resize_op(PlanWriter& w, uint32_t x, uint32_t y, bool bilinear, const ResizeMap& rows, const ResizeMap& cols) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    o.body.put<uint32_t>(bilinear ? 2 : 1);
    for (const ResizeMap* m : {&rows, &cols})
        for (size_t i = 0; i < m->i0.size(); ++i) {
            o.body.put(m->i0[i]);
            if (bilinear) {
                o.body.put(m->i1[i]);
                o.body.put(m->w[i]);
            }
        }
    w.op(QATML_ENGINE_OP_RESIZE, o);
}
inline void axis_op(PlanWriter& w, uint32_t kind, uint32_t x, uint32_t y, uint32_t axis, uint32_t count = 1) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    o.body.put(axis);
    if (kind == QATML_ENGINE_OP_REDUCE_MEAN) o.body.put(count);
    w.op(kind, o);
}
inline void layernorm_op(PlanWriter& w, uint32_t x, uint32_t y, uint32_t axis, float epsilon, const std::vector<float>& scale,
                         const std::vector<float>& bias) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    o.body.put(axis);
    o.body.put(epsilon);
    o.body.put<uint32_t>(bias.empty() ? 0 : 1);
    for (float v : scale) o.body.put(v);
    for (float v : bias) o.body.put(v);
    w.op(QATML_ENGINE_OP_LAYERNORM, o);
}
inline void matmul_op(PlanWriter& w, uint32_t a, uint32_t b, uint32_t y, std::initializer_list<std::pair<float, int32_t>> q = {}) {
    OpBuilder o;
    o.body.put(a);
    o.body.put(b);
    o.body.put(y);
    for (const auto& v : q) o.body.q(v.first, v.second);
    w.op(QATML_ENGINE_OP_MATMUL, o);
}

// A plan with every op kind of wider models (a float segment, 8-bit
// broadcasting, concat, copies, padding, resizes, softmax, layer normalisation,
// matmuls, reduce mean, a zero insertion and a float convolution): a seed for the fuzzers, and a run every path
// must agree on. float [4, 6, 6] in; outputs float [8, 12], [8, 6, 6] and [4, 9, 9]. softmax = false puts an ABS in the
// softmax's place (no transcendental anywhere: a GPU run is then bit-identical to the CPU's).
inline std::vector<uint8_t> wide_ops_plan(bool softmax = true) {
    PlanWriter w;
    const uint32_t t0 = w.tensor(QATML_TYPE_FLOAT32, {4, 6, 6}), t1 = w.tensor(QATML_TYPE_UINT8, {4, 6, 6});
    const uint32_t t2 = w.tensor(QATML_TYPE_UINT8, {4, 6, 6}), t3 = w.tensor(QATML_TYPE_UINT8, {4, 6, 6});
    const uint32_t t4 = w.tensor(QATML_TYPE_UINT8, {4, 12, 12}), t5 = w.tensor(QATML_TYPE_UINT8, {4, 14, 14});
    const uint32_t t6 = w.tensor(QATML_TYPE_UINT8, {4, 12, 12}), t7 = w.tensor(QATML_TYPE_UINT8, {8, 12, 12});
    const uint32_t t8 = w.tensor(QATML_TYPE_FLOAT32, {8, 12, 12}), t9 = w.tensor(QATML_TYPE_FLOAT32, {8, 12, 12});
    const uint32_t t10 = w.tensor(QATML_TYPE_FLOAT32, {8, 12, 12}), t11 = w.tensor(QATML_TYPE_FLOAT32, {8, 12, 12});
    const uint32_t t12 = w.tensor(QATML_TYPE_FLOAT32, {8, 12, 12}), t13 = w.tensor(QATML_TYPE_FLOAT32, {8, 12, 12});
    const uint32_t t14 = w.tensor(QATML_TYPE_FLOAT32, {8, 12}), t15 = w.tensor(QATML_TYPE_FLOAT32, {8, 6, 6});
    const uint32_t t16 = w.tensor(QATML_TYPE_UINT8, {8, 6, 6}), t17 = w.tensor(QATML_TYPE_UINT8, {8, 6, 6});
    const uint32_t t18 = w.tensor(QATML_TYPE_FLOAT32, {8, 6, 6});
    w.inputs = {t0};
    w.outputs = {t14, t18};
    quantize_op(w, t0, t1, 0.05f, 128);
    binary_op(w, t1, 0, t2, QATML_BINARY_MUL, {4, 1, 1}, {200, 3, 128, 77}, {{0.05f, 128}, {0.01f, 100}, {0.04f, 120}});
    binary_op(w, t2, t1, t3, QATML_BINARY_ADD, {}, {}, {{0.04f, 120}, {0.05f, 128}, {0.07f, 125}});
    ResizeMap up_rows, up_cols;
    for (int i = 0; i < 12; ++i) up_rows.i0.push_back(i / 2), up_cols.i0.push_back((i + 1) / 2 < 6 ? (i + 1) / 2 : 5);
    resize_op(w, t3, t4, false, up_rows, up_cols);
    pad_op(w, t4, t5, {0, 1, 1, 0, 1, 1}, 125);
    copy_op(w, t5, t6, {4, 12, 12}, 14 + 1, {196, 14, 1});
    std::vector<uint8_t> table(256);
    for (int i = 0; i < 256; ++i) table[static_cast<size_t>(i)] = static_cast<uint8_t>(255 - i);
    concat_op(w, t7, 0, {{t6, {}}, {t4, table}});
    quantize_op(w, t7, t8, 0.07f, 125, true);
    unary_op(w, t8, t9, QATML_UNARY_HARD_SWISH);
    std::vector<float> shift(12);
    for (int i = 0; i < 12; ++i) shift[static_cast<size_t>(i)] = 0.25f * static_cast<float>(i) - 1.0f;
    binary_op(w, t9, 0, t10, QATML_BINARY_SUB, {12}, bytes_of(shift));
    if (softmax)
        axis_op(w, QATML_ENGINE_OP_SOFTMAX, t10, t11, 2);
    else
        unary_op(w, t10, t11, QATML_UNARY_ABS);
    std::vector<float> scale(12, 1.5f), bias(12, -0.25f);
    layernorm_op(w, t11, t12, 2, 1e-5f, scale, bias);
    matmul_op(w, t12, t11, t13);
    axis_op(w, QATML_ENGINE_OP_REDUCE_MEAN, t13, t14, 1, 1);
    ResizeMap down_rows, down_cols;
    for (int i = 0; i < 6; ++i) {
        for (ResizeMap* m : {&down_rows, &down_cols}) {
            m->i0.push_back(2 * i);
            m->i1.push_back(2 * i + 1);
            m->w.push_back(0.25f + 0.1f * static_cast<float>(i % 3));
        }
    }
    resize_op(w, t13, t15, true, down_rows, down_cols);
    const uint32_t t19 = w.tensor(QATML_TYPE_FLOAT32, {8, 11, 11}), t20 = w.tensor(QATML_TYPE_FLOAT32, {4, 9, 9});
    w.outputs.push_back(t20);
    pad_op(w, t15, t19, {0, 0, 0, 0, 0, 0}, 0, {1, 2, 2});
    std::vector<float> cw(4 * 8 * 9), cb = {0.5f, -0.5f, 0.25f, 0.0f};
    for (size_t i = 0; i < cw.size(); ++i) cw[i] = static_cast<float>(static_cast<int>(i % 7) - 3) * 0.125f;
    float_conv_op(w, t19, t20, 4, 8, 3, 1, {0, 0, 0, 0}, cw, cb);
    quantize_op(w, t15, t16, 0.02f, 100);
    matmul_op(w, t16, t16, t17, {{0.02f, 100}, {0.02f, 100}, {0.05f, 30}});
    quantize_op(w, t17, t18, 0.05f, 30, true);
    return w.bytes();
}

// The network: float [2, 6, 6] -> quantize u8 -> conv 3x3 pad 1 (2 -> 4, int8
// weights, bias) -> u8
// -> maxpool 2x2 -> [4, 3, 3] -> LUT (identity + 1 saturating) -> add with
// itself -> gemm (36 -> 5, int4 weights, per-channel) -> dequantize.
struct EngineNet {
    std::vector<int8_t> conv_w;
    std::vector<int32_t> conv_b;
    std::vector<float> conv_s;
    std::vector<int8_t> fc_w;    // [5, 36] values in -8..7
    std::vector<uint8_t> fc_w4;  // packed
    std::vector<float> fc_s;
    std::vector<int32_t> fc_b;
    uint8_t lut[256];
    EngineNet() {
        std::mt19937 r(seed());
        std::uniform_int_distribution<int> w8(-127, 127), w4(-8, 7), bias(-500, 500);
        for (int i = 0; i < 4 * 2 * 9; ++i) conv_w.push_back(static_cast<int8_t>(w8(r)));
        for (int i = 0; i < 4; ++i) conv_b.push_back(bias(r)), conv_s.push_back(0.01f + 0.003f * i);
        for (int i = 0; i < 5 * 36; ++i) fc_w.push_back(static_cast<int8_t>(w4(r)));
        fc_w4.resize(90);
        qatml_int4_pack(fc_w.data(), 180, 1, fc_w4.data());
        for (int i = 0; i < 5; ++i) fc_s.push_back(0.05f + 0.01f * i), fc_b.push_back(bias(r));
        for (int i = 0; i < 256; ++i) lut[i] = static_cast<uint8_t>(i == 255 ? 255 : i + 1);
    }
    // second_reader: a DEQUANTIZE also reads the convolution's output (which
    // keeps the engine from fusing the convolution with its max pool).
    std::vector<uint8_t> plan(bool second_reader = true) const {
        Plan p;
        p.b.insert(p.b.end(), {'Q', 'E', 'P', '1'});
        p.put<uint32_t>(1);
        p.put<uint32_t>(second_reader ? 9 : 8);  // tensors
        p.put<uint32_t>(second_reader ? 8 : 7);  // ops
        p.put<uint32_t>(1);
        p.put<uint32_t>(1);
        auto tensor = [&](uint32_t type, std::initializer_list<int64_t> dims) {
            p.put(type);
            p.put(static_cast<uint32_t>(dims.size()));
            for (int64_t d : dims) p.put(d);
        };
        tensor(QATML_TYPE_FLOAT32, {2, 6, 6});                     // 0 input
        tensor(QATML_TYPE_UINT8, {2, 6, 6});                       // 1
        tensor(QATML_TYPE_UINT8, {4, 6, 6});                       // 2 conv
        tensor(QATML_TYPE_UINT8, {4, 3, 3});                       // 3 pool
        tensor(QATML_TYPE_UINT8, {4, 3, 3});                       // 4 lut
        tensor(QATML_TYPE_UINT8, {36});                            // 5 add
        tensor(QATML_TYPE_INT8, {5});                              // 6 gemm
        tensor(QATML_TYPE_FLOAT32, {5});                           // 7 output
        if (second_reader) tensor(QATML_TYPE_FLOAT32, {4, 6, 6});  // 8 read by nobody
        p.put<uint32_t>(0);
        p.put<uint32_t>(7);
        {
            OpBuilder o;
            o.body.put<uint32_t>(0);
            o.body.put<uint32_t>(1);
            o.body.q(0.02f, 128);
            o.finish(p, QATML_ENGINE_OP_QUANTIZE);
        }
        {
            OpBuilder o;
            o.body.put<uint32_t>(1);
            o.body.put<uint32_t>(2);
            o.body.q(0.02f, 128);
            o.body.q(0.05f, 0);
            o.body.i64s({4, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1});
            o.body.put<uint32_t>(QATML_TYPE_INT8);
            o.body.put<uint32_t>(0);
            o.body.put<uint32_t>(1);
            for (float s : conv_s) o.body.put(s);
            for (int32_t v : conv_b) o.body.put(v);
            for (int8_t v : conv_w) o.body.put(v);
            o.finish(p, QATML_ENGINE_OP_CONV);
        }
        {
            OpBuilder o;
            o.body.put<uint32_t>(2);
            o.body.put<uint32_t>(3);
            o.body.q(0.05f, 0);
            o.body.q(0.05f, 0);
            o.body.i64s({2, 2, 2, 2, 0, 0, 0, 0, 1, 1});
            o.body.put<uint32_t>(0);
            o.finish(p, QATML_ENGINE_OP_MAXPOOL);
        }
        {
            OpBuilder o;
            o.body.put<uint32_t>(3);
            o.body.put<uint32_t>(4);
            for (uint8_t v : lut) o.body.put(v);
            o.finish(p, QATML_ENGINE_OP_LUT);
        }
        {
            OpBuilder o;
            o.body.put<uint32_t>(4);
            o.body.put<uint32_t>(4);
            o.body.put<uint32_t>(5);
            o.body.q(0.05f, 0);
            o.body.q(0.05f, 0);
            o.body.q(0.09f, 3);
            o.finish(p, QATML_ENGINE_OP_ADD);
        }
        {
            OpBuilder o;
            o.body.put<uint32_t>(5);
            o.body.put<uint32_t>(6);
            o.body.q(0.09f, 3);
            o.body.q(0.3f, -5);
            o.body.i64s({36, 5});
            o.body.put<uint32_t>(1);
            o.body.put<uint32_t>(QATML_TYPE_INT4);
            o.body.put<uint32_t>(0);
            o.body.put<uint32_t>(1);
            o.body.put<uint32_t>(5);
            for (float s : fc_s) o.body.put(s);
            for (int32_t v : fc_b) o.body.put(v);
            for (uint8_t v : fc_w4) o.body.put(v);
            o.finish(p, QATML_ENGINE_OP_GEMM);
        }
        {
            OpBuilder o;
            o.body.put<uint32_t>(6);
            o.body.put<uint32_t>(7);
            o.body.q(0.3f, -5);
            o.finish(p, QATML_ENGINE_OP_DEQUANTIZE);
        }
        if (second_reader) {  // a second reader of tensor 2 keeps it alive:
                              // exercises the planner
            OpBuilder o;
            o.body.put<uint32_t>(2);
            o.body.put<uint32_t>(8);
            o.body.q(0.05f, 0);
            o.finish(p, QATML_ENGINE_OP_DEQUANTIZE);
        }
        return p.b;
    }
};

// A second network: float [3, 5, 5] -> quantize s8 -> average pool 3x3 stride 2
// pad 1 (count_include_pad)
// -> [3, 3, 3] -> global average pool -> [3] -> dequantize. `global_y_scale`:
// the global pool's output scale; `avg_pad`: the average pool's pads (the
// tensors follow: [3, OH, OW]).
inline std::vector<uint8_t> pooling_plan(float global_y_scale = 0.05f, int64_t avg_pad = 1) {
    const int64_t pooled = (5 + 2 * avg_pad - 3) / 2 + 1;
    Plan p;
    p.b.insert(p.b.end(), {'Q', 'E', 'P', '1'});
    for (uint32_t v : {1u, 5u, 4u, 1u, 1u}) p.put(v);  // version, tensors, ops, inputs, outputs
    auto tensor = [&](uint32_t type, std::initializer_list<int64_t> dims) {
        p.put(type);
        p.put(static_cast<uint32_t>(dims.size()));
        for (int64_t d : dims) p.put(d);
    };
    tensor(QATML_TYPE_FLOAT32, {3, 5, 5});
    tensor(QATML_TYPE_INT8, {3, 5, 5});
    tensor(QATML_TYPE_INT8, {3, pooled, pooled});
    tensor(QATML_TYPE_INT8, {3});
    tensor(QATML_TYPE_FLOAT32, {3});
    p.put<uint32_t>(0);
    p.put<uint32_t>(4);
    OpBuilder q, avg, global, dq;
    q.body.put<uint32_t>(0);
    q.body.put<uint32_t>(1);
    q.body.q(0.1f, -3);
    q.finish(p, QATML_ENGINE_OP_QUANTIZE);
    avg.body.put<uint32_t>(1);
    avg.body.put<uint32_t>(2);
    avg.body.q(0.1f, -3);
    avg.body.q(0.07f, 2);
    avg.body.i64s({3, 3, 2, 2, avg_pad, avg_pad, avg_pad, avg_pad, 1, 1});
    avg.body.put<uint32_t>(1);
    avg.finish(p, QATML_ENGINE_OP_AVGPOOL);
    global.body.put<uint32_t>(2);
    global.body.put<uint32_t>(3);
    global.body.q(0.07f, 2);
    global.body.q(global_y_scale, 0);
    global.finish(p, QATML_ENGINE_OP_GLOBAL_AVGPOOL);
    dq.body.put<uint32_t>(3);
    dq.body.put<uint32_t>(4);
    dq.body.q(global_y_scale, 0);
    dq.finish(p, QATML_ENGINE_OP_DEQUANTIZE);
    return p.b;
}

// GATHER: rows of `table` (bytes of y's type, rows x row_elements) at the indices tensor, or at the constant indices.
inline void gather_op(PlanWriter& w, uint32_t indices, uint32_t y, int64_t rows, int64_t row_elements, const std::vector<uint8_t>& table,
                      const std::vector<int64_t>& constant = {}) {
    OpBuilder o;
    o.body.put(y);
    o.body.put<uint32_t>(constant.empty() ? 0u : 1u);
    if (constant.empty()) {
        o.body.put(indices);
    } else {
        o.body.put<int64_t>(static_cast<int64_t>(constant.size()));
        for (int64_t i : constant) o.body.put(i);
    }
    o.body.i64s({rows, row_elements});
    o.body.b.insert(o.body.b.end(), table.begin(), table.end());
    w.op(QATML_ENGINE_OP_GATHER, o);
}
inline void cast_op(PlanWriter& w, uint32_t x, uint32_t y) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    w.op(QATML_ENGINE_OP_CAST, o);
}
// GEMM of int8 weights [K, N] (per-tensor scale, no bias) over [.., K] rows; y_float: MatMulIntegerToFloat.
inline void gemm_op(PlanWriter& w, uint32_t x, uint32_t y, float xs, int32_t xz, float ys, int32_t yz, int64_t k, int64_t n, float w_scale,
                    const std::vector<int8_t>& weights) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    o.body.q(xs, xz);
    o.body.q(ys, yz);
    o.body.i64s({k, n});
    for (uint32_t v : {0u, uint32_t(QATML_TYPE_INT8), 0u, 0u, 1u}) o.body.put(v);
    o.body.put(w_scale);
    for (int8_t v : weights) o.body.put(v);
    w.op(QATML_ENGINE_OP_GEMM, o);
}
inline void float_gemm_op(PlanWriter& w, uint32_t x, uint32_t y, int64_t k, int64_t n, const std::vector<float>& weights, const std::vector<float>& bias) {
    OpBuilder o;
    o.body.put(x);
    o.body.put(y);
    o.body.i64s({k, n});
    o.body.put<uint32_t>(bias.empty() ? 0u : 1u);
    for (float v : weights) o.body.put(v);
    for (float v : bias) o.body.put(v);
    w.op(QATML_ENGINE_OP_FLOAT_GEMM, o);
}

// A transformer's front in miniature: int64 token ids [5] gather a uint8 table [7 rows x 4]; int32 segments are
// cast to int64 and gather a float table [2 x 4]; constant position ids [5] gather an int8 table [6 x 4]; the int32
// mask is cast to float. The token rows go through a GEMM over [5, 4] vectors to uint8 [5, 3] and to float
// (MatMulIntegerToFloat), then a FLOAT_GEMM [5, 3] x [3, 2] + bias. Outputs (per row): 0 tokens [5, 4] dequantized,
// 1 segments [5, 4], 2 positions [5, 4] dequantized, 3 mask [5], 4 GEMM uint8 [5, 3] dequantized, 5 FLOAT_GEMM [5, 2].
struct TokenNet {
    std::vector<uint8_t> words = std::vector<uint8_t>(28), positions = std::vector<uint8_t>(24);
    std::vector<float> segments = std::vector<float>(8), fg_w = std::vector<float>(6), fg_b = {0.25f, -0.5f};
    std::vector<int8_t> gw = std::vector<int8_t>(12);
    std::vector<int64_t> position_ids = {0, 1, 2, 3, -1};
    TokenNet() {
        std::mt19937 r(11);
        for (auto& v : words) v = static_cast<uint8_t>(r() % 256);
        for (auto& v : positions) v = static_cast<uint8_t>(r() % 256);
        for (auto& v : segments) v = static_cast<float>(static_cast<int>(r() % 41) - 20) * 0.125f;
        for (auto& v : fg_w) v = static_cast<float>(static_cast<int>(r() % 21) - 10) * 0.1f;
        for (auto& v : gw) v = static_cast<int8_t>(static_cast<int>(r() % 255) - 127);
    }
    std::vector<uint8_t> plan() const {
        PlanWriter w;
        const uint32_t ids = w.tensor(QATML_TYPE_INT64, {5}), seg = w.tensor(QATML_TYPE_INT32, {5}), mask = w.tensor(QATML_TYPE_INT32, {5});
        const uint32_t tok = w.tensor(QATML_TYPE_UINT8, {5, 4}), seg64 = w.tensor(QATML_TYPE_INT64, {5}), segv = w.tensor(QATML_TYPE_FLOAT32, {5, 4});
        const uint32_t pos = w.tensor(QATML_TYPE_INT8, {5, 4}), maskf = w.tensor(QATML_TYPE_FLOAT32, {5});
        const uint32_t g8 = w.tensor(QATML_TYPE_UINT8, {5, 3}), gf = w.tensor(QATML_TYPE_FLOAT32, {5, 3}), fg = w.tensor(QATML_TYPE_FLOAT32, {5, 2});
        const uint32_t tok_out = w.tensor(QATML_TYPE_FLOAT32, {5, 4}), pos_out = w.tensor(QATML_TYPE_FLOAT32, {5, 4}), g8_out = w.tensor(QATML_TYPE_FLOAT32, {5, 3});
        w.inputs = {ids, seg, mask};
        w.outputs = {tok_out, segv, pos_out, maskf, g8_out, fg};
        gather_op(w, ids, tok, 7, 4, words);
        cast_op(w, seg, seg64);
        gather_op(w, seg64, segv, 2, 4, bytes_of(segments));
        gather_op(w, 0, pos, 6, 4, positions, position_ids);
        cast_op(w, mask, maskf);
        gemm_op(w, tok, g8, 0.02f, 128, 0.05f, 100, 4, 3, 0.01f, gw);
        gemm_op(w, tok, gf, 0.02f, 128, 1.0f, 0, 4, 3, 0.01f, gw);
        float_gemm_op(w, gf, fg, 3, 2, fg_w, fg_b);
        quantize_op(w, tok, tok_out, 0.02f, 128, true);
        quantize_op(w, pos, pos_out, 0.03f, -3, true);
        quantize_op(w, g8, g8_out, 0.05f, 100, true);
        return w.bytes();
    }
};

}  // namespace qatml_test
