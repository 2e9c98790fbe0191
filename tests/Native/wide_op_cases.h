// Random one-op plans of the engine's wider ops (UNARY .. FLOAT_CONV) for the CUDA tests: the CPU suite runs the CUDA
// kernels' element functions (src/cuda/wide_ops.h) on the host over each case's tensors, stored as the device runner
// stores them (8-bit [C, H, W] channels-last), against the CPU engine; the GPU suite runs the same plans on the GPU.
//
// An 8-bit operand enters as a float plan input quantized with scale 0.25 (its values are exact multiples, so the
// bytes are known), and an 8-bit result leaves dequantized with scale 0.25 (so the bytes can be read back exactly).
#pragma once

#include "engine_plans.h"
#include "kernels/op_math.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

namespace qatml_test {

constexpr float kIoScale = 0.25f;

struct WideTensor {
    uint32_t id = 0;
    uint32_t type = 0;
    std::vector<int64_t> dims;
    int32_t zp = 0;           // 8-bit: the zero point of its quantization
    std::vector<uint8_t> data;  // op inputs: the logical bytes of every row (floats as their bytes)
    int64_t elems() const {
        int64_t n = 1;
        for (int64_t d : dims) n *= d;
        return n;
    }
    int64_t elem_bytes() const { return type == QATML_TYPE_FLOAT32 ? 4 : 1; }
};

// What the emulation needs to run the op: the op's tensors in the test's order (inputs, then the output).
struct WideCase {
    std::string name;
    uint32_t kind = 0;
    PlanWriter w;
    int64_t rows = 3;
    bool transcendental = false;  // GPU results may differ from the CPU's by a few ulp
    std::vector<WideTensor> ops;  // the op's inputs, then its output (last)
    std::vector<std::vector<float>> inputs;  // plan inputs, rows each
    std::vector<int64_t> out_sizes;
    // Op parameters the emulation builds its arguments from (meaning per kind; see the generators).
    std::vector<int64_t> ints;
    std::vector<float> floats;
    std::vector<std::vector<uint8_t>> blobs;  // constants, tables, maps
    std::vector<uint8_t> plan() const { return w.bytes(); }
};

class WideCaseBuilder {
public:
    explicit WideCaseBuilder(unsigned seed) : r_(seed) {}
    std::mt19937& rng() { return r_; }
    int64_t pick(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(r_); }
    uint32_t q8_type() { return pick(0, 1) ? QATML_TYPE_UINT8 : QATML_TYPE_INT8; }

    // An op input: a float plan input (type FLOAT32) or one quantized from it.
    WideTensor input(WideCase& c, uint32_t type, std::vector<int64_t> dims) {
        WideTensor t;
        t.type = type;
        t.dims = std::move(dims);
        const int64_t n = t.elems() * c.rows;
        const uint32_t f = c.w.tensor(QATML_TYPE_FLOAT32, t.dims);
        c.w.inputs.push_back(f);
        std::vector<float> in(static_cast<size_t>(n));
        if (type == QATML_TYPE_FLOAT32) {
            std::uniform_real_distribution<float> v(-3.0f, 3.0f);
            for (float& x : in) x = v(r_);
            t.id = f;
            t.data.resize(in.size() * 4);
            std::memcpy(t.data.data(), in.data(), t.data.size());
        } else {
            const int32_t lo = type == QATML_TYPE_INT8 ? -128 : 0, hi = lo + 255;
            t.zp = static_cast<int32_t>(pick(lo + 20, hi - 20));
            t.id = c.w.tensor(type, t.dims);
            quantize_op(c.w, f, t.id, kIoScale, t.zp);
            t.data.resize(in.size());
            for (size_t i = 0; i < in.size(); ++i) {
                const int32_t q = static_cast<int32_t>(pick(lo, hi));
                t.data[i] = static_cast<uint8_t>(q);
                in[i] = static_cast<float>(q - t.zp) * kIoScale;
            }
        }
        c.inputs.push_back(std::move(in));
        c.ops.push_back(t);
        return t;
    }
    // The op's output tensor (registered; `finish` adds the dequantize and the plan output).
    WideTensor output(WideCase& c, uint32_t type, std::vector<int64_t> dims) {
        WideTensor t;
        t.type = type;
        t.dims = std::move(dims);
        t.id = c.w.tensor(type, t.dims);
        if (type != QATML_TYPE_FLOAT32) t.zp = static_cast<int32_t>(pick(type == QATML_TYPE_INT8 ? -100 : 20, type == QATML_TYPE_INT8 ? 100 : 230));
        return t;
    }
    void finish(WideCase& c, const WideTensor& y) {
        c.ops.push_back(y);
        if (y.type == QATML_TYPE_FLOAT32) {
            c.w.outputs.push_back(y.id);
        } else {
            const uint32_t f = c.w.tensor(QATML_TYPE_FLOAT32, y.dims);
            quantize_op(c.w, y.id, f, kIoScale, y.zp, true);
            c.w.outputs.push_back(f);
        }
        c.out_sizes.push_back(y.elems());
    }
    std::vector<int64_t> image_dims() { return {pick(1, 6), pick(1, 7), pick(1, 7)}; }

private:
    std::mt19937 r_;
};

// Cases of every wider op kind; `per_kind` random cases each (8-bit and float where the op takes both).
inline std::vector<WideCase> wide_op_cases(unsigned seed, int per_kind) {
    WideCaseBuilder b(seed);
    std::vector<WideCase> cases;
    auto start = [&](const char* name, uint32_t kind, int i) -> WideCase& {
        cases.emplace_back();
        cases.back().name = std::string(name) + " #" + std::to_string(i);
        cases.back().kind = kind;
        cases.back().rows = b.pick(1, 3);
        return cases.back();
    };
    const uint32_t types[2] = {0, QATML_TYPE_FLOAT32};  // 0: an 8-bit type at random
    for (int i = 0; i < per_kind; ++i) {
        {  // UNARY: every function
            WideCase& c = start("UNARY", QATML_ENGINE_OP_UNARY, i);
            const uint32_t func = static_cast<uint32_t>(1 + i % 17);
            const WideTensor x = b.input(c, QATML_TYPE_FLOAT32, {b.pick(1, 40)});
            const float alpha = 0.1f * static_cast<float>(b.pick(-5, 5)), beta = alpha + 0.5f;
            const WideTensor y = b.output(c, QATML_TYPE_FLOAT32, x.dims);
            unary_op(c.w, x.id, y.id, func, alpha, beta);
            c.ints = {func};
            c.floats = {alpha, beta};
            c.transcendental = qatml::math::unary_is_transcendental(static_cast<int32_t>(func));
            b.finish(c, y);
        }
        for (uint32_t t : types) {  // BINARY with broadcasting: a tensor b or a constant
            WideCase& c = start("BINARY", QATML_ENGINE_OP_BINARY, i);
            const uint32_t type = t ? t : b.q8_type();
            const std::vector<int64_t> yd = b.image_dims();
            std::vector<int64_t> ad = yd, bd = yd;
            for (int d = 0; d < 3; ++d) {
                if (b.pick(0, 2) == 0) ad[d] = 1;
                else if (b.pick(0, 2) == 0) bd[d] = 1;
            }
            if (b.pick(0, 1)) {  // b of lower rank
                ad[0] = yd[0];
                bd.erase(bd.begin());
            }
            const uint32_t func = type == QATML_TYPE_FLOAT32 ? static_cast<uint32_t>(b.pick(1, 7)) : (b.pick(0, 1) ? QATML_BINARY_ADD : QATML_BINARY_MUL);
            const WideTensor a = b.input(c, type, ad);
            const bool constant = b.pick(0, 2) == 0;
            WideTensor bt;
            std::vector<uint8_t> values;
            if (constant) {
                int64_t n = 1;
                for (int64_t d : bd) n *= d;
                if (type == QATML_TYPE_FLOAT32) {
                    std::vector<float> v(static_cast<size_t>(n));
                    for (float& f : v) f = 0.25f * static_cast<float>(b.pick(1, 12));
                    values = bytes_of(v);
                } else {
                    for (int64_t k = 0; k < n; ++k) values.push_back(static_cast<uint8_t>(b.pick(0, 255)));
                }
                bt.type = type;
                bt.dims = bd;
                bt.zp = type == QATML_TYPE_INT8 ? -7 : 131;
            } else {
                bt = b.input(c, type, bd);
            }
            const WideTensor y = b.output(c, type, yd);
            if (type == QATML_TYPE_FLOAT32)
                binary_op(c.w, a.id, bt.id, y.id, func, constant ? bd : std::vector<int64_t>{}, values);
            else
                binary_op(c.w, a.id, bt.id, y.id, func, constant ? bd : std::vector<int64_t>{}, values,
                          {{kIoScale, a.zp}, {kIoScale, bt.zp}, {func == QATML_BINARY_MUL ? 0.5f : kIoScale, y.zp}});
            c.ints = {func, constant ? 1 : 0};
            c.floats = {func == QATML_BINARY_MUL ? 0.5f : kIoScale};
            if (constant) {
                c.blobs = {values};
                c.ops.push_back(bt);  // the constant's dims and zero point, as a pseudo input
            }
            c.transcendental = func == QATML_BINARY_POW;
            b.finish(c, y);
        }
        for (uint32_t t : types) {  // CONCAT along any axis, 8-bit inputs with or without a table
            WideCase& c = start("CONCAT", QATML_ENGINE_OP_CONCAT, i);
            const uint32_t type = t ? t : b.q8_type();
            const int64_t axis = b.pick(0, 2);
            std::vector<int64_t> yd = b.image_dims();
            yd[static_cast<size_t>(axis)] = 0;
            const int parts = static_cast<int>(b.pick(1, 3));
            std::vector<std::pair<uint32_t, std::vector<uint8_t>>> in;
            for (int p = 0; p < parts; ++p) {
                std::vector<int64_t> d = yd;
                d[static_cast<size_t>(axis)] = b.pick(1, 4);
                yd[static_cast<size_t>(axis)] += d[static_cast<size_t>(axis)];
                const WideTensor x = b.input(c, type, d);
                std::vector<uint8_t> table;
                if (type != QATML_TYPE_FLOAT32 && b.pick(0, 1))
                    for (int k = 0; k < 256; ++k) table.push_back(static_cast<uint8_t>(b.pick(0, 255)));
                in.emplace_back(x.id, table);
                c.blobs.push_back(table);
            }
            const WideTensor y = b.output(c, type, yd);
            concat_op(c.w, y.id, static_cast<uint32_t>(axis), in);
            c.ints = {axis};
            b.finish(c, y);
        }
        for (uint32_t t : types) {  // COPY: a slice of a transpose
            WideCase& c = start("COPY", QATML_ENGINE_OP_COPY, i);
            const uint32_t type = t ? t : b.q8_type();
            const std::vector<int64_t> xd = b.image_dims();
            const int64_t xs[3] = {xd[1] * xd[2], xd[2], 1};
            int perm[3] = {0, 1, 2};
            std::shuffle(perm, perm + 3, b.rng());
            std::vector<int64_t> dims, strides;
            int64_t offset = 0;
            for (int d : perm) {
                const int64_t s0 = b.pick(0, xd[static_cast<size_t>(d)] - 1);
                dims.push_back(b.pick(1, xd[static_cast<size_t>(d)] - s0));
                strides.push_back(xs[d]);
                offset += s0 * xs[d];
            }
            const WideTensor x = b.input(c, type, xd);
            const WideTensor y = b.output(c, type, dims);
            copy_op(c.w, x.id, y.id, dims, offset, strides);
            c.ints = dims;
            c.ints.insert(c.ints.end(), strides.begin(), strides.end());
            c.ints.push_back(offset);
            b.finish(c, y);
        }
        for (uint32_t t : types) {  // PAD with steps (zero insertion)
            WideCase& c = start("PAD", QATML_ENGINE_OP_PAD, i);
            const uint32_t type = t ? t : b.q8_type();
            const std::vector<int64_t> xd = b.image_dims();
            std::vector<int64_t> pads(6), steps(3), yd(3);
            for (int d = 0; d < 3; ++d) {
                pads[static_cast<size_t>(d)] = b.pick(0, 2);
                pads[static_cast<size_t>(d + 3)] = b.pick(0, 2);
                steps[static_cast<size_t>(d)] = b.pick(1, 2);
                yd[static_cast<size_t>(d)] = pads[static_cast<size_t>(d)] + (xd[static_cast<size_t>(d)] - 1) * steps[static_cast<size_t>(d)] + 1 +
                    pads[static_cast<size_t>(d + 3)];
            }
            const uint32_t value = type == QATML_TYPE_FLOAT32 ? 0x3fc00000u : static_cast<uint32_t>(b.pick(0, 255));  // 1.5f or a byte
            const WideTensor x = b.input(c, type, xd);
            const WideTensor y = b.output(c, type, yd);
            pad_op(c.w, x.id, y.id, pads, value, steps);
            c.ints = pads;
            c.ints.insert(c.ints.end(), steps.begin(), steps.end());
            c.ints.push_back(value);
            b.finish(c, y);
        }
        for (uint32_t t : types) {  // RESIZE nearest or bilinear
            WideCase& c = start("RESIZE", QATML_ENGINE_OP_RESIZE, i);
            const uint32_t type = t ? t : b.q8_type();
            const std::vector<int64_t> xd = b.image_dims();
            const std::vector<int64_t> yd = {xd[0], b.pick(1, 9), b.pick(1, 9)};
            const bool bilinear = b.pick(0, 1);
            ResizeMap rows, cols;
            for (int k = 0; k < 2; ++k) {
                ResizeMap& m = k ? cols : rows;
                const int64_t in = xd[static_cast<size_t>(1 + k)], out = yd[static_cast<size_t>(1 + k)];
                for (int64_t o = 0; o < out; ++o) {
                    m.i0.push_back(static_cast<int32_t>(b.pick(0, in - 1)));
                    m.i1.push_back(static_cast<int32_t>(b.pick(0, in - 1)));
                    m.w.push_back(static_cast<float>(b.pick(0, 1000)) / 1000.0f);
                }
            }
            const WideTensor x = b.input(c, type, xd);
            const WideTensor y = b.output(c, type, yd);
            resize_op(c.w, x.id, y.id, bilinear, rows, cols);
            c.ints = {bilinear ? 1 : 0};
            c.blobs = {bytes_of(rows.i0), bytes_of(rows.i1), bytes_of(rows.w), bytes_of(cols.i0), bytes_of(cols.i1), bytes_of(cols.w)};
            b.finish(c, y);
        }
        for (uint32_t kind : {QATML_ENGINE_OP_SOFTMAX, QATML_ENGINE_OP_REDUCE_MEAN, QATML_ENGINE_OP_LAYERNORM}) {  // float, any axis
            WideCase& c = start(kind == QATML_ENGINE_OP_SOFTMAX ? "SOFTMAX" : kind == QATML_ENGINE_OP_LAYERNORM ? "LAYERNORM" : "REDUCE_MEAN", kind, i);
            const std::vector<int64_t> xd = b.image_dims();
            const int64_t axis = b.pick(0, 2), count = kind == QATML_ENGINE_OP_REDUCE_MEAN ? b.pick(1, axis == 0 ? 2 : 1) : 1;
            std::vector<int64_t> yd = xd;
            if (kind == QATML_ENGINE_OP_REDUCE_MEAN) yd.erase(yd.begin() + axis, yd.begin() + axis + count);
            const WideTensor x = b.input(c, QATML_TYPE_FLOAT32, xd);
            const WideTensor y = b.output(c, QATML_TYPE_FLOAT32, yd);
            c.ints = {axis, count};
            if (kind == QATML_ENGINE_OP_LAYERNORM) {
                int64_t n = 1;
                for (int64_t d = axis; d < 3; ++d) n *= xd[static_cast<size_t>(d)];
                std::vector<float> scale, bias;
                for (int64_t k = 0; k < n; ++k) scale.push_back(0.5f + 0.125f * static_cast<float>(k % 5)), bias.push_back(0.0625f * static_cast<float>(k % 3));
                if (b.pick(0, 1)) bias.clear();
                layernorm_op(c.w, x.id, y.id, static_cast<uint32_t>(axis), 1e-5f, scale, bias);
                c.floats = {1e-5f};
                c.blobs = {bytes_of(scale), bytes_of(bias)};
            } else {
                axis_op(c.w, kind, x.id, y.id, static_cast<uint32_t>(axis), static_cast<uint32_t>(count));
            }
            c.transcendental = kind == QATML_ENGINE_OP_SOFTMAX;
            b.finish(c, y);
        }
        for (uint32_t t : types) {  // MATMUL: [count, M, K] x [count, K, N] or one [K, N]
            WideCase& c = start("MATMUL", QATML_ENGINE_OP_MATMUL, i);
            const bool q8 = t == 0;
            const int64_t count = b.pick(1, 4), m = b.pick(1, 6), k = b.pick(1, 40), n = b.pick(1, 6);
            const bool shared = b.pick(0, 1);
            const WideTensor a = b.input(c, q8 ? b.q8_type() : QATML_TYPE_FLOAT32, {count, m, k});
            const WideTensor bt = b.input(c, q8 ? b.q8_type() : QATML_TYPE_FLOAT32, shared ? std::vector<int64_t>{k, n} : std::vector<int64_t>{count, k, n});
            const WideTensor y = b.output(c, q8 ? b.q8_type() : QATML_TYPE_FLOAT32, {count, m, n});
            if (q8)
                matmul_op(c.w, a.id, bt.id, y.id, {{kIoScale, a.zp}, {kIoScale, bt.zp}, {2.0f, y.zp}});
            else
                matmul_op(c.w, a.id, bt.id, y.id);
            c.floats = {kIoScale * kIoScale / 2.0f};
            b.finish(c, y);
        }
        {  // FLOAT_CONV with groups, strides, padding and dilation
            WideCase& c = start("FLOAT_CONV", QATML_ENGINE_OP_FLOAT_CONV, i);
            const int64_t groups = b.pick(1, 2), cpg = b.pick(1, 3), mpg = b.pick(1, 3), k = b.pick(1, 3), stride = b.pick(1, 2), dil = b.pick(1, 2);
            const int64_t h = b.pick(k * dil, 8), w = b.pick(k * dil, 8);
            const int64_t pt = b.pick(0, k - 1), pl = b.pick(0, k - 1), pb = b.pick(0, k - 1), pr = b.pick(0, k - 1);
            const int64_t oh = (h + pt + pb - dil * (k - 1) - 1) / stride + 1, ow = (w + pl + pr - dil * (k - 1) - 1) / stride + 1;
            std::vector<float> weights(static_cast<size_t>(groups * mpg * cpg * k * k)), bias;
            for (float& v : weights) v = static_cast<float>(b.pick(-100, 100)) / 37.0f;
            if (b.pick(0, 1))
                for (int64_t o = 0; o < groups * mpg; ++o) bias.push_back(static_cast<float>(b.pick(-10, 10)) / 7.0f);
            const WideTensor x = b.input(c, QATML_TYPE_FLOAT32, {groups * cpg, h, w});
            const WideTensor y = b.output(c, QATML_TYPE_FLOAT32, {groups * mpg, oh, ow});
            float_conv_op(c.w, x.id, y.id, groups * mpg, cpg, k, stride, {pt, pl, pb, pr}, weights, bias, groups, dil);
            c.ints = {groups, cpg, mpg, k, stride, dil, pt, pl};
            c.blobs = {bytes_of(weights), bytes_of(bias)};
            b.finish(c, y);
        }
    }
    return cases;
}

}  // namespace qatml_test
