// The CUDA kernels of the wider ops on the CPU (no GPU needed): every element function of src/cuda/wide_ops.h runs
// over random one-op plans' tensors, stored as the device runner stores them (packing.h tensor_layout: 8-bit [C, H, W]
// channels-last), against the CPU engine, bit for bit. On the host the transcendentals are libm's, so every op is
// exact here; the GPU suite checks the device's own functions.
#include "cuda/packing.h"
#include "cuda/wide_ops.h"
#include "token_op_cases.h"
#include "wide_op_cases.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

using namespace qatml::cuda;
using namespace qatml_test;

namespace {

std::vector<std::vector<float>> run_cpu(const WideCase& c) {
    const std::vector<uint8_t> plan = c.plan();
    qatml_engine* e = nullptr;
    EXPECT_EQ(qatml_engine_create(nullptr, plan.data(), static_cast<int64_t>(plan.size()), &e), QATML_OK) << c.name << ": " << qatml_last_error();
    std::vector<std::vector<float>> out;
    if (!e) return out;
    std::vector<const float*> in;
    for (const auto& v : c.inputs) in.push_back(v.data());
    std::vector<float*> outp;
    for (int64_t size : c.out_sizes) out.emplace_back(static_cast<size_t>(size * c.rows));
    for (auto& o : out) outp.push_back(o.data());
    EXPECT_EQ(qatml_engine_run(e, nullptr, c.rows, in.data(), static_cast<int32_t>(in.size()), outp.data(), static_cast<int32_t>(outp.size())),
              QATML_OK)
        << qatml_last_error();
    qatml_engine_destroy(e);
    return out;
}

// A tensor of the case in device storage: rows of its elements, each row in its device layout.
struct Stored {
    Layout layout;
    std::vector<uint8_t> bytes;
    int64_t elems = 0, esz = 1;
};

Stored store(const WideTensor& t, int64_t rows) {
    Stored s;
    s.layout = tensor_layout(static_cast<int32_t>(t.type), static_cast<int>(t.dims.size()), t.dims.data());
    s.elems = t.elems();
    s.esz = t.elem_bytes();
    s.bytes.assign(static_cast<size_t>(rows * s.elems * s.esz), 0xab);
    if (t.data.empty()) return s;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t e = 0; e < s.elems; ++e)
            std::memcpy(&s.bytes[static_cast<size_t>((r * s.elems + storage_index(s.layout, e)) * s.esz)], &t.data[static_cast<size_t>((r * s.elems + e) * s.esz)],
                        static_cast<size_t>(s.esz));
    return s;
}

// The plan output as the engine gives it: float values, or 8-bit values dequantized with the output's zero point.
std::vector<float> read_back(const WideTensor& t, const Stored& s, int64_t rows) {
    std::vector<float> out(static_cast<size_t>(rows * s.elems));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t e = 0; e < s.elems; ++e) {
            const size_t at = static_cast<size_t>((r * s.elems + storage_index(s.layout, e)) * s.esz);
            float v;
            if (t.type == QATML_TYPE_FLOAT32)
                std::memcpy(&v, &s.bytes[at], 4);
            else
                v = static_cast<float>((t.type == QATML_TYPE_INT8 ? int32_t(int8_t(s.bytes[at])) : int32_t(s.bytes[at])) - t.zp) * kIoScale;
            out[static_cast<size_t>(r * s.elems + e)] = v;
        }
    return out;
}

// NumPy strides of dims (right-aligned against rank `rank`) broadcast to y: 0 where the dim is 1.
void broadcast_strides(const std::vector<int64_t>& dims, size_t rank, int64_t* strides) {
    int64_t n = 1;
    for (size_t i = 0; i < rank; ++i) {
        const size_t d = rank - 1 - i;
        const int64_t size = i < dims.size() ? dims[dims.size() - 1 - i] : 1;
        strides[d] = size == 1 ? 0 : n;
        n *= size;
    }
}

// The tensors of a one-input op whose arguments name them x / lx and y / ly.
template <typename Args>
Args one_input(const Stored& x, Stored& y, int64_t rows) {
    Args a{};
    a.x = x.bytes.data();
    a.y = y.bytes.data();
    a.lx = x.layout;
    a.ly = y.layout;
    a.rows = rows;
    return a;
}

template <typename Args, typename Fn>
void each(const Args& a, int64_t count, Fn fn) {
    for (int64_t i = 0; i < count; ++i) fn(a, i);
}

// Runs the case's op through the device kernel's element function on host memory; returns the op output's bytes.
std::vector<float> emulate(const WideCase& c) {
    std::vector<Stored> st;
    for (const WideTensor& t : c.ops) st.push_back(store(t, c.rows));
    const WideTensor& yt = c.ops.back();
    Stored& y = st.back();
    const int64_t rows = c.rows;
    switch (c.kind) {
        case QATML_ENGINE_OP_UNARY: {
            const UnaryArgs a{reinterpret_cast<const float*>(st[0].bytes.data()), reinterpret_cast<float*>(y.bytes.data()), rows * y.elems,
                              static_cast<int32_t>(c.ints[0]), c.floats[0], c.floats[1]};
            each(a, a.count, unary_element);
            break;
        }
        case QATML_ENGINE_OP_BINARY: {
            const bool constant = c.ints[1] != 0;
            const WideTensor &at = c.ops[0], &bt = c.ops[1];
            Stored b = st[1];
            if (constant) {  // the constant, in plan order, shared by every row
                b.layout = Layout{};
                b.bytes = c.blobs[0];
            }
            BinaryArgs a{};
            a.a = st[0].bytes.data();
            a.b = b.bytes.data();
            a.y = y.bytes.data();
            a.la = st[0].layout;
            a.lb = b.layout;
            a.ly = y.layout;
            a.rows = rows;
            qatml::kernels::BinaryPlan& q = a.plan;
            q.a_row = st[0].elems;
            q.b_row = constant ? 0 : b.elems;
            q.y_row = y.elems;
            q.rank = static_cast<int>(yt.dims.size());
            for (size_t d = 0; d < yt.dims.size(); ++d) q.dims[d] = yt.dims[d];
            broadcast_strides(at.dims, yt.dims.size(), q.a_strides);
            broadcast_strides(bt.dims, yt.dims.size(), q.b_strides);
            q.func = static_cast<int32_t>(c.ints[0]);
            q.type = static_cast<int32_t>(yt.type);
            q.add.za = at.zp;
            q.add.zb = bt.zp;
            q.add.zy = yt.zp;
            q.add.lo = yt.type == QATML_TYPE_INT8 ? -128 : 0;
            q.add.hi = q.add.lo + 255;
            q.add.ra = q.add.rb = kIoScale / kIoScale;
            q.mul_ratio = (kIoScale * kIoScale) / c.floats[0];
            each(a, rows * y.elems, binary_element);
            break;
        }
        case QATML_ENGINE_OP_CONCAT: {
            const size_t axis = static_cast<size_t>(c.ints[0]);
            int64_t inner = 1, start = 0;
            for (size_t d = axis + 1; d < yt.dims.size(); ++d) inner *= yt.dims[d];
            for (size_t i = 0; i + 1 < c.ops.size(); ++i) {
                ConcatArgs a{};
                a.x = st[i].bytes.data();
                a.y = y.bytes.data();
                a.lx = st[i].layout;
                a.ly = y.layout;
                a.rows = rows;
                a.x_row = st[i].elems;
                a.y_row = y.elems;
                a.part = c.ops[i].dims[axis] * inner;
                a.y_block = yt.dims[axis] * inner;
                a.start = start;
                a.elem = static_cast<int32_t>(y.esz);
                a.table = c.blobs[i].empty() ? nullptr : c.blobs[i].data();
                start += a.part;
                each(a, rows * a.x_row, concat_element);
            }
            break;
        }
        case QATML_ENGINE_OP_COPY: {
            CopyArgs a = one_input<CopyArgs>(st[0], y, rows);
            qatml::kernels::CopyPlan& q = a.plan;
            q.x_row = st[0].elems;
            q.y_row = y.elems;
            q.rank = static_cast<int>(yt.dims.size());
            q.elem = y.esz;
            for (int d = 0; d < q.rank; ++d) {
                q.dims[d] = c.ints[static_cast<size_t>(d)];
                q.strides[d] = c.ints[static_cast<size_t>(q.rank + d)];
            }
            q.offset = c.ints.back();
            each(a, rows * y.elems, copy_op_element);
            break;
        }
        case QATML_ENGINE_OP_PAD: {
            PadArgs a = one_input<PadArgs>(st[0], y, rows);
            a.x_row = st[0].elems;
            a.y_row = y.elems;
            a.x_dims[0] = a.y_dims[0] = 1;
            a.begins[0] = 0;
            a.steps[0] = 1;
            for (int d = 0; d < 3; ++d) {
                a.x_dims[d + 1] = c.ops[0].dims[static_cast<size_t>(d)];
                a.y_dims[d + 1] = yt.dims[static_cast<size_t>(d)];
                a.begins[d + 1] = c.ints[static_cast<size_t>(d)];
                a.steps[d + 1] = c.ints[static_cast<size_t>(6 + d)];
            }
            a.elem = static_cast<int32_t>(y.esz);
            a.value = static_cast<uint32_t>(c.ints.back());
            each(a, rows * y.elems, pad_element);
            break;
        }
        case QATML_ENGINE_OP_RESIZE: {
            ResizeArgs a = one_input<ResizeArgs>(st[0], y, rows);
            a.c = c.ops[0].dims[0];
            a.h = c.ops[0].dims[1];
            a.w = c.ops[0].dims[2];
            a.oh = yt.dims[1];
            a.ow = yt.dims[2];
            a.bilinear = static_cast<int32_t>(c.ints[0]);
            a.type = static_cast<int32_t>(yt.type);
            a.y0 = reinterpret_cast<const int32_t*>(c.blobs[0].data());
            a.y1 = reinterpret_cast<const int32_t*>(c.blobs[1].data());
            a.dy = reinterpret_cast<const float*>(c.blobs[2].data());
            a.x0 = reinterpret_cast<const int32_t*>(c.blobs[3].data());
            a.x1 = reinterpret_cast<const int32_t*>(c.blobs[4].data());
            a.dx = reinterpret_cast<const float*>(c.blobs[5].data());
            each(a, rows * y.elems, resize_element);
            break;
        }
        case QATML_ENGINE_OP_SOFTMAX:
        case QATML_ENGINE_OP_REDUCE_MEAN:
        case QATML_ENGINE_OP_LAYERNORM: {
            const std::vector<int64_t>& xd = c.ops[0].dims;
            const int64_t axis = c.ints[0], count = c.kind == QATML_ENGINE_OP_LAYERNORM ? 3 - axis : c.ints[1];
            AxisArgs a{};
            a.x = reinterpret_cast<const float*>(st[0].bytes.data());
            a.y = reinterpret_cast<float*>(y.bytes.data());
            int64_t outer = 1;
            a.n = a.inner = 1;
            for (int64_t d = 0; d < 3; ++d) (d < axis ? outer : d < axis + count ? a.n : a.inner) *= xd[static_cast<size_t>(d)];
            a.groups = rows * outer;
            if (c.kind == QATML_ENGINE_OP_LAYERNORM) {
                a.epsilon = c.floats[0];
                a.scale = reinterpret_cast<const float*>(c.blobs[0].data());
                a.bias = c.blobs[1].empty() ? nullptr : reinterpret_cast<const float*>(c.blobs[1].data());
                each(a, a.groups, layernorm_group);
            } else {
                each(a, a.groups * a.inner, c.kind == QATML_ENGINE_OP_SOFTMAX ? softmax_column : reduce_mean_column);
            }
            break;
        }
        case QATML_ENGINE_OP_MATMUL: {
            const WideTensor &at = c.ops[0], &bt = c.ops[1];
            MatMulArgs a{};
            a.a = st[0].bytes.data();
            a.b = st[1].bytes.data();
            a.y = y.bytes.data();
            a.la = st[0].layout;
            a.lb = st[1].layout;
            a.ly = y.layout;
            a.rows = rows;
            qatml::kernels::MatMulPlan& q = a.plan;
            q.count = at.dims[0];
            q.m = at.dims[1];
            q.k = at.dims[2];
            q.n = yt.dims[2];
            q.b_shared = bt.dims.size() == 2 && q.count > 1;
            q.a_type = static_cast<int32_t>(at.type);
            q.b_type = static_cast<int32_t>(bt.type);
            q.y_type = static_cast<int32_t>(yt.type);
            q.za = at.zp;
            q.zb = bt.zp;
            q.zy = yt.zp;
            q.lo = yt.type == QATML_TYPE_INT8 ? -128 : 0;
            q.hi = q.lo + 255;
            q.mult = (kIoScale * kIoScale) / 2.0f;
            each(a, rows * y.elems, matmul_element);
            break;
        }
        default: {  // FLOAT_CONV
            const int64_t groups = c.ints[0], cpg = c.ints[1], mpg = c.ints[2], k = c.ints[3], stride = c.ints[4], dil = c.ints[5];
            const FloatConvArgs a{reinterpret_cast<const float*>(st[0].bytes.data()), reinterpret_cast<float*>(y.bytes.data()), rows,
                                  groups * cpg, c.ops[0].dims[1], c.ops[0].dims[2], groups * mpg, cpg, mpg, k, k, yt.dims[1], yt.dims[2], stride, stride,
                                  c.ints[6], c.ints[7], dil, dil, reinterpret_cast<const float*>(c.blobs[0].data()),
                                  c.blobs[1].empty() ? nullptr : reinterpret_cast<const float*>(c.blobs[1].data())};
            each(a, rows * y.elems, float_conv_element);
            break;
        }
    }
    return read_back(yt, y, rows);
}

TEST(CudaWideOpsEmulation, ElementFunctionsMatchTheCpuEngine) {
    const std::vector<WideCase> cases = wide_op_cases(qatml_test::seed(), 24);
    int channels_last = 0;
    for (const WideCase& c : cases) {
        for (const WideTensor& t : c.ops)
            if (tensor_layout(static_cast<int32_t>(t.type), static_cast<int>(t.dims.size()), t.dims.data()).channels_last) ++channels_last;
        const std::vector<std::vector<float>> cpu = run_cpu(c);
        ASSERT_EQ(cpu.size(), 1u) << c.name;
        const std::vector<float> emu = emulate(c);
        ASSERT_EQ(emu.size(), cpu[0].size()) << c.name;
        for (size_t i = 0; i < emu.size(); ++i) {
            const bool both_nan = std::isnan(emu[i]) && std::isnan(cpu[0][i]);
            ASSERT_TRUE(both_nan || std::memcmp(&emu[i], &cpu[0][i], 4) == 0) << c.name << " element " << i << ": " << emu[i] << " vs the CPU's " << cpu[0][i];
        }
    }
    EXPECT_GT(channels_last, 50) << "the cases exercise channels-last storage";
}

// ---- integer inputs: GATHER, CAST, FLOAT_GEMM -------------------------------------------------------------------

// The device element functions over the case's tensors as the device runner stores them: outputs 0-3 (the GEMMs are
// the implicit GEMM's, checked in cuda_layout_test.cpp); `bad` gets y's error slot.
std::vector<std::vector<float>> emulate(const TokenOpsCase& tc, int64_t bad[2]) {
    const int64_t rows = tc.rows, count = tc.count, a = tc.a, b = tc.b, table_rows = tc.table_rows, v = tc.v, k = tc.k, n = tc.n;
    const uint32_t y_type = tc.y_type, index_type = tc.index_type;
    const int32_t zp = tc.zp;
    const std::vector<uint8_t>& ids = tc.ids, &table = tc.table, &table2 = tc.table2;
    const std::vector<int64_t>& fixed = tc.fixed;
    const std::vector<float>& fx = tc.fx, &fw = tc.fw, &fb = tc.fb;
    const int64_t dims[3] = {count, a, b}, row_elems = a * b, y_row = count * row_elems;
    const int32_t esz = y_type == QATML_TYPE_FLOAT32 ? 4 : 1;
    const Layout ly = tensor_layout(static_cast<int32_t>(y_type), 3, dims);
    std::vector<uint8_t> y(static_cast<size_t>(rows * y_row * esz), 0xab), yc(y.size(), 0xab);
    bad[0] = bad[1] = kNoBadIndex;
    GatherArgs g{ids.data(), nullptr, table.data(), y.data(), ly, rows, count, table_rows, row_elems, static_cast<int32_t>(index_type), esz, bad};
    each(g, rows * y_row, gather_element);
    gather_report(g, 0);
    GatherArgs gc{nullptr, fixed.data(), table2.data(), yc.data(), ly, rows, count, table_rows, row_elems, static_cast<int32_t>(index_type), esz, nullptr};
    each(gc, rows * y_row, gather_element);

    const int32_t other = index_type == QATML_TYPE_INT32 ? QATML_TYPE_INT64 : QATML_TYPE_INT32;
    std::vector<uint8_t> c(static_cast<size_t>(rows * count * 8));
    std::vector<std::vector<float>> out(4);
    out[2].resize(static_cast<size_t>(rows * count));
    const CastArgs to_other{ids.data(), c.data(), rows * count, static_cast<int32_t>(index_type), other};
    each(to_other, rows * count, cast_element);
    const CastArgs to_float{c.data(), out[2].data(), rows * count, other, QATML_TYPE_FLOAT32};
    each(to_float, rows * count, cast_element);

    out[3].resize(static_cast<size_t>(rows * v * n));
    const FloatGemmArgs fg{fx.data(), out[3].data(), rows * v, k, n, fw.data(), fb.data()};
    each(fg, rows * v * n, float_gemm_element);

    for (int which = 0; which < 2; ++which) {  // plan order, 8-bit values dequantized
        const std::vector<uint8_t>& stored = which ? yc : y;
        std::vector<float>& o = out[static_cast<size_t>(which)];
        o.resize(static_cast<size_t>(rows * y_row));
        for (int64_t i = 0; i < rows * y_row; ++i) {
            const int64_t at = element_at(ly, i / y_row, y_row, i % y_row);
            if (esz == 4)
                std::memcpy(&o[static_cast<size_t>(i)], &stored[static_cast<size_t>(at * 4)], 4);
            else
                o[static_cast<size_t>(i)] = static_cast<float>(byte_value(stored.data(), at, y_type == QATML_TYPE_INT8) - zp) * kIoScale;
        }
    }
    return out;
}

TEST(CudaWideOpsEmulation, GatherCastAndFloatGemmMatchTheCpuEngine) {
    std::mt19937 r(qatml_test::seed() + 19);
    int channels_last = 0;
    for (int round = 0; round < 24; ++round) {
        const TokenOpsCase c(r, round);
        SCOPED_TRACE("round " + std::to_string(round));
        const int64_t dims[3] = {c.count, c.a, c.b};
        if (tensor_layout(static_cast<int32_t>(c.y_type), 3, dims).channels_last) ++channels_last;
        std::string error;
        const std::vector<std::vector<float>> cpu = c.run_cpu(&error);
        ASSERT_EQ(error, "");
        int64_t bad[2];
        const std::vector<std::vector<float>> emu = emulate(c, bad);
        EXPECT_EQ(bad[0], kNoBadIndex);
        ASSERT_EQ(cpu.size(), emu.size() + 2);
        for (size_t o = 0; o < emu.size(); ++o) {
            ASSERT_EQ(cpu[o].size(), emu[o].size()) << "output " << o;
            EXPECT_EQ(std::memcmp(cpu[o].data(), emu[o].data(), cpu[o].size() * 4), 0) << "output " << o;
        }
    }
    EXPECT_GT(channels_last, 2) << "the cases exercise channels-last gather outputs";
}

// The GATHER error slot holds the first flat position outside the table and its index: what the CPU engine names.
TEST(CudaWideOpsEmulation, GatherReportsTheFirstIndexOutsideTheTableAsTheCpuEngine) {
    std::mt19937 r(qatml_test::seed() + 20);
    for (int round = 0; round < 6; ++round) {
        TokenOpsCase c(r, round);
        c.rows = 3;
        c.ids.assign(static_cast<size_t>(3 * c.count * (c.index_type == QATML_TYPE_INT32 ? 4 : 8)), 0);
        c.fx.assign(static_cast<size_t>(3 * c.v * c.k), 0.5f);
        c.gx.assign(static_cast<size_t>(3 * c.g0 * c.g1 * c.gk), 0.5f);
        const int64_t first = c.count + c.count / 2, value = round % 2 ? c.table_rows : -c.table_rows - 1 - round;
        c.set_id(first, value);
        c.set_id(2 * c.count + c.count - 1, c.table_rows + 7);  // a later one
        std::string error;
        c.run_cpu(&error);
        int64_t bad[2];
        emulate(c, bad);
        EXPECT_EQ(bad[0], first);
        EXPECT_EQ(bad[1], value);
        const std::string named = "index " + std::to_string(value) + " at row 1, position " + std::to_string(first - c.count) + " is outside";
        EXPECT_NE(error.find(named), std::string::npos) << error << " (expected: " << named << ")";
    }
}

}  // namespace
