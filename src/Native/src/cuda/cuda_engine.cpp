// The plan runner on a CUDA GPU: the engine's validated plan (engine_internal.h) with its weights uploaded once in
// the kernels' layouts, 8-bit [C, H, W] activations channels-last, the CPU engine's per-row arena plan reused on
// the device (an intermediate at offset * batch), and one synchronised call per batch on the context's stream.
#include "cuda/cuda_context.h"
#include "cuda/packing.h"
#include "engine/cpu_program.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <memory>

namespace qatml {

using plan::Op;
using plan::Tensor;
using namespace cuda;

namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// An op ready to launch: parameters with every constant pointer set; tensor pointers and rows are set per run.
struct DeviceOp {
    int kind = 0;
    bool igemm = false;         // CONV / GEMM on the tensor cores, else the direct kernel
    bool to_scratch = false;    // CONV + fused pool, or a GEMM whose output is channels-last: compute into scratch first
    bool from_scratch = false;  // a GEMM over vectors of a channels-last input: `relayout` copies it to plan order first
    int64_t scratch_in = 0;     // from_scratch: bytes per row of that copy (the output's scratch follows it)
    LutParams relayout{};
    IgemmParams gemm{};
    DirectConvParams direct{};
    int64_t rows_per_row = 1;  // GEMM rows (pixels) per batch row
    PoolParams pool{};         // MAXPOOL / AVGPOOL, or the pool fused after a CONV
    QuantizeParams quantize{};
    DequantizeParams dequantize{};
    AddParams add{};
    LutParams lut{};  // LUT, or the layout change after a GEMM into scratch
    GlobalPoolParams gpool{};
    // The wider ops (wide_ops.h): arguments in plan order, built from the CPU's kernel plan of the op.
    UnaryArgs unary{};
    BinaryArgs binary{};
    std::vector<ConcatArgs> concat;  // one per input
    CopyArgs copy{};
    PadArgs pad{};
    ResizeArgs resize{};
    AxisArgs axis{};
    int64_t axis_outer = 1;  // SOFTMAX / LAYERNORM / REDUCE_MEAN: groups per row
    MatMulArgs matmul{};
    FloatConvArgs fconv{};
    GatherArgs gather{};
    int32_t gather_slot = -1;  // GATHER of tensor indices: its error slot in the run's memory
    CastArgs cast{};
    FloatGemmArgs fgemm{};
};

// Constants of every op, laid out on the host, then uploaded in one copy. Offsets start past a reserved block, so
// that an offset stored in a pointer is never NULL.
struct Blob {
    std::vector<uint8_t> bytes = std::vector<uint8_t>(kAlign, 0);
    template <typename T>
    size_t add(const T* data, size_t count) {
        const size_t at = align_up(bytes.size());
        bytes.resize(at + align_up(count * sizeof(T)), 0);
        if (count) std::memcpy(bytes.data() + at, data, count * sizeof(T));
        return at;
    }
    template <typename T>
    size_t add(const std::vector<T>& v) {
        return add(v.data(), v.size());
    }
};

int32_t type_lo(int32_t t) { return t == QATML_TYPE_INT8 ? -128 : 0; }
int32_t type_hi(int32_t t) { return t == QATML_TYPE_INT8 ? 127 : 255; }

int32_t i32(int64_t v) { return static_cast<int32_t>(v); }

// The LUT of a pure layout change.
const std::array<uint8_t, 256>& identity_table() {
    static const std::array<uint8_t, 256> table = [] {
        std::array<uint8_t, 256> t{};
        for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
        return t;
    }();
    return table;
}

// Geometry of a window op (convolution or pool) over x [C, H, W] with output plane oh x ow.
ConvGeom window_geometry(const Op& op, const Tensor& x, int64_t oh, int64_t ow) {
    const qatml_conv2d_params& q = op.p;
    return ConvGeom{i32(x.dims[1]), i32(x.dims[2]), i32(x.dims[0]), i32(oh), i32(ow),
                    i32(op.kh), i32(op.kw), i32(q.stride_h), i32(q.stride_w), i32(q.pad_top),
                    i32(q.pad_left), i32(q.dilation_h), i32(q.dilation_w), i32(op.cpg)};
}

// Output size of a window op (qatml_conv2d_output_size's formula; the loader has validated it).
int64_t out_size(int64_t in, int64_t pad0, int64_t pad1, int64_t k, int64_t d, int64_t s) { return (in + pad0 + pad1 - d * (k - 1) - 1) / s + 1; }

}  // namespace

struct DeviceEngine {
    int device = 0;
    void* weights = nullptr;  // every op's constants
    size_t weight_bytes = 0;
    std::vector<DeviceOp> ops;
    std::vector<Layout> layouts;  // per tensor
    int64_t scratch_per_row = 0;  // bytes per row after the arena (fused pools, GEMM layout changes)
    int32_t gather_slots = 0;     // GATHER ops of tensor indices (an error slot each, after the scratch)
    ~DeviceEngine() {
        if (weights) {
            DeviceGuard guard(device);
            cudaFree(weights);
        }
    }
};

namespace {

// The arguments of a wider op (wide_ops.h) from the CPU's kernel plan of it (the same shapes, strides and constants),
// with the device layouts of its tensors; constants go to `blob`.
void prepare_wide_op(const qatml_engine* e, const Op& op, DeviceOp& d, DeviceEngine& de, Blob& blob) {
    engine::Step s;
    engine::prepare_wider_op(*e, op, s, nullptr);
    const Tensor& tx = e->tensors[op.x];
    const Tensor& ty = e->tensors[op.y];
    const Layout lx = de.layouts[op.x], ly = de.layouts[op.y];
    auto at = [](size_t offset) { return reinterpret_cast<const uint8_t*>(offset); };  // rebased after the upload
    switch (op.kind) {
        case QATML_ENGINE_OP_UNARY: d.unary = UnaryArgs{nullptr, nullptr, tx.elems, s.unary.func, s.unary.alpha, s.unary.beta}; return;
        case QATML_ENGINE_OP_BINARY: {
            BinaryArgs& a = d.binary;
            a.la = lx;
            a.lb = op.b_const ? Layout{} : de.layouts[op.b];
            a.ly = ly;
            a.plan = s.binary;
            if (op.b_const) a.b = at(blob.add(op.data));
            return;
        }
        case QATML_ENGINE_OP_CONCAT: {
            const kernels::ConcatPlan& c = s.concat;
            const int64_t esz = kernels::elem_size(ty.dtype);
            int64_t start = 0;
            for (size_t i = 0; i < op.inputs.size(); ++i) {
                ConcatArgs a{};
                a.lx = de.layouts[op.inputs[i]];
                a.ly = ly;
                a.x_row = c.x_row[i] / esz;
                a.y_row = c.y_row / esz;
                a.part = c.part_bytes[i] / esz;
                a.y_block = c.y_block / esz;
                a.start = start;
                a.elem = static_cast<int32_t>(esz);
                if (c.tables[i]) a.table = at(blob.add(c.tables[i], 256));
                start += a.part;
                d.concat.push_back(a);
            }
            return;
        }
        case QATML_ENGINE_OP_COPY: d.copy = CopyArgs{nullptr, nullptr, lx, ly, 0, s.copy}; return;
        case QATML_ENGINE_OP_PAD: {
            const kernels::PadPlan& c = s.pad;
            PadArgs& a = d.pad;
            a.lx = lx;
            a.ly = ly;
            a.x_row = c.x_row;
            a.y_row = c.y_row;
            for (int i = 0; i < 4; ++i) {
                a.x_dims[i] = c.x_dims[i];
                a.y_dims[i] = c.y_dims[i];
                a.begins[i] = c.begins[i];
                a.steps[i] = c.steps[i];
            }
            a.elem = static_cast<int32_t>(c.elem);
            std::memcpy(&a.value, c.value, 4);
            return;
        }
        case QATML_ENGINE_OP_RESIZE: {
            const kernels::ResizePlan& r = s.resize;
            ResizeArgs& a = d.resize;
            a.lx = lx;
            a.ly = ly;
            a.c = r.c;
            a.h = r.h;
            a.w = r.w;
            a.oh = r.oh;
            a.ow = r.ow;
            a.bilinear = r.bilinear ? 1 : 0;
            a.type = r.type;
            a.y0 = reinterpret_cast<const int32_t*>(at(blob.add(r.y0)));
            a.x0 = reinterpret_cast<const int32_t*>(at(blob.add(r.x0)));
            if (r.bilinear) {
                a.y1 = reinterpret_cast<const int32_t*>(at(blob.add(r.y1)));
                a.x1 = reinterpret_cast<const int32_t*>(at(blob.add(r.x1)));
                a.dy = reinterpret_cast<const float*>(at(blob.add(r.dy)));
                a.dx = reinterpret_cast<const float*>(at(blob.add(r.dx)));
            }
            return;
        }
        case QATML_ENGINE_OP_SOFTMAX:
        case QATML_ENGINE_OP_LAYERNORM:
        case QATML_ENGINE_OP_REDUCE_MEAN: {
            d.axis_outer = s.axis.outer;
            d.axis.n = s.axis.n;
            d.axis.inner = s.axis.inner;
            d.axis.epsilon = s.epsilon;
            if (s.norm_scale) d.axis.scale = reinterpret_cast<const float*>(at(blob.add(s.norm_scale, static_cast<size_t>(s.axis.n))));
            if (s.norm_bias) d.axis.bias = reinterpret_cast<const float*>(at(blob.add(s.norm_bias, static_cast<size_t>(s.axis.n))));
            return;
        }
        case QATML_ENGINE_OP_MATMUL: d.matmul = MatMulArgs{nullptr, nullptr, nullptr, lx, de.layouts[op.b], ly, 0, s.matmul}; return;
        case QATML_ENGINE_OP_GATHER: {
            const kernels::GatherPlan& g = s.gather;
            GatherArgs& a = d.gather;
            a.ly = ly;
            a.count = g.count;
            a.table_rows = g.rows;
            a.elem = static_cast<int32_t>(kernels::elem_size(ty.dtype));
            a.row_elems = g.row_bytes / a.elem;
            a.index_type = g.index_type;
            a.table = at(blob.add(g.table, static_cast<size_t>(g.rows * g.row_bytes)));
            if (g.fixed)
                a.fixed = reinterpret_cast<const int64_t*>(at(blob.add(g.fixed, static_cast<size_t>(g.count))));
            else
                d.gather_slot = de.gather_slots++;
            return;
        }
        case QATML_ENGINE_OP_CAST: d.cast = CastArgs{nullptr, nullptr, tx.elems, s.type, s.zp}; return;
        case QATML_ENGINE_OP_FLOAT_GEMM: {
            const kernels::FloatGemmPlan& f = s.float_gemm;
            d.fgemm = FloatGemmArgs{nullptr, nullptr, s.vectors, f.k, f.n, nullptr, nullptr};
            d.fgemm.weights = reinterpret_cast<const float*>(at(blob.add(f.weights, static_cast<size_t>(f.k * f.n))));
            if (f.bias) d.fgemm.bias = reinterpret_cast<const float*>(at(blob.add(f.bias, static_cast<size_t>(f.n))));
            return;
        }
        default: {  // FLOAT_CONV
            const kernels::FloatConvPlan& f = s.float_conv;
            FloatConvArgs& a = d.fconv;
            a = FloatConvArgs{nullptr, nullptr, 0, f.c, f.h, f.w, f.m, f.cpg, f.mpg, f.kh, f.kw, f.oh, f.ow, f.sh, f.sw, f.pt, f.pl, f.dh, f.dw,
                              nullptr, nullptr};
            a.weights = reinterpret_cast<const float*>(at(blob.add(f.weights, static_cast<size_t>(f.m * f.cpg * f.kh * f.kw))));
            if (f.bias) a.bias = reinterpret_cast<const float*>(at(blob.add(f.bias, static_cast<size_t>(f.m))));
            return;
        }
    }
}

// Fills `d` for op `op` (constants appended to `blob`, offsets recorded in the pointers, rebased after upload).
qatml_status prepare_op(const qatml_engine* e, const Op& op, int index, DeviceOp& d, DeviceEngine& de, Blob& blob, const char* fn) {
    const Tensor& tx = e->tensors[op.x];
    const Tensor& ty = e->tensors[op.y];
    const Layout lx = de.layouts[op.x], ly = de.layouts[op.y];
    d.kind = op.kind;
    auto offset_ptr = [](size_t at) { return reinterpret_cast<void*>(at); };  // rebased after the upload
    switch (op.kind) {
        case QATML_ENGINE_OP_QUANTIZE:
            d.quantize = QuantizeParams{nullptr, nullptr, lx, ly, 0, tx.elems, !same_layout(lx, ly), op.qy.scale, op.qy.zp,
                                        type_lo(ty.dtype), type_hi(ty.dtype), ty.dtype == QATML_TYPE_INT8};
            return QATML_OK;
        case QATML_ENGINE_OP_DEQUANTIZE:
            d.dequantize = DequantizeParams{nullptr, nullptr, lx, ly, 0, tx.elems, !same_layout(lx, ly), op.qx.scale, op.qx.zp,
                                            tx.dtype == QATML_TYPE_INT8};
            return QATML_OK;
        case QATML_ENGINE_OP_ADD: {
            const Layout lb = de.layouts[op.b];
            const bool map = !same_layout(lx, ly) || !same_layout(lb, ly);
            // The CPU kernel's ratios, computed the same way (float32 divisions).
            const float ra = op.qx.scale / op.qy.scale, rb = op.qb.scale / op.qy.scale;
            d.add = AddParams{nullptr, nullptr, nullptr, lx, lb, ly, 0, tx.elems, map, ra, rb, op.qx.zp, op.qb.zp, op.qy.zp,
                              type_lo(ty.dtype), type_hi(ty.dtype), ty.dtype == QATML_TYPE_INT8};
            return QATML_OK;
        }
        case QATML_ENGINE_OP_LUT:
            d.lut = LutParams{nullptr, nullptr, lx, ly, 0, tx.elems, !same_layout(lx, ly),
                              static_cast<const uint8_t*>(offset_ptr(blob.add(op.lut, 256)))};
            return QATML_OK;
        case QATML_ENGINE_OP_MAXPOOL:
        case QATML_ENGINE_OP_AVGPOOL: {
            PoolParams& p = d.pool;
            p.g = window_geometry(op, tx, ty.dims[1], ty.dims[2]);
            p.pb = i32(op.p.pad_bottom);
            p.pr = i32(op.p.pad_right);
            p.is_max = op.kind == QATML_ENGINE_OP_MAXPOOL;
            p.count_include_pad = op.count_include_pad;
            p.is_signed = tx.dtype == QATML_TYPE_INT8;
            p.x_scale = op.qx.scale;
            p.y_scale = op.qy.scale;
            p.xz = op.qx.zp;
            p.yz = op.qy.zp;
            p.lo = type_lo(ty.dtype);
            p.hi = type_hi(ty.dtype);
            return QATML_OK;
        }
        case QATML_ENGINE_OP_GLOBAL_AVGPOOL: {
            const int64_t spatial = tx.dims[1] * tx.dims[2];
            if (spatial > (int64_t(1) << 23))
                return fail(QATML_UNSUPPORTED, "%s: op %d (GLOBAL_AVGPOOL): %lld pixels exceed 2^23", fn, index, (long long)spatial);
            // The CPU kernel's multiplier, computed the same way.
            const float mult = op.qx.scale / (op.qy.scale * static_cast<float>(spatial));
            d.gpool = GlobalPoolParams{nullptr, nullptr, 0, i32(tx.dims[0]), i32(spatial),
                                       tx.dtype == QATML_TYPE_INT8, mult, op.qx.zp, op.qy.zp, type_lo(ty.dtype), type_hi(ty.dtype)};
            return QATML_OK;
        }
        case QATML_ENGINE_OP_CONV:
            break;
        case QATML_ENGINE_OP_GEMM:
            // One K-vector per row and an 8-bit output; [.., K] rows and float outputs (transformers) run on the CPU.
            if (tx.elems != op.k || ty.dtype == QATML_TYPE_FLOAT32)
                return fail(QATML_UNSUPPORTED, "%s: op %d (GEMM) over [.., K] rows or with a float output has no CUDA kernel yet; load the plan without a CUDA context to run it on the CPU", fn, index);
            break;
        case QATML_ENGINE_OP_UNARY:
        case QATML_ENGINE_OP_BINARY:
        case QATML_ENGINE_OP_CONCAT:
        case QATML_ENGINE_OP_COPY:
        case QATML_ENGINE_OP_PAD:
        case QATML_ENGINE_OP_RESIZE:
        case QATML_ENGINE_OP_SOFTMAX:
        case QATML_ENGINE_OP_LAYERNORM:
        case QATML_ENGINE_OP_MATMUL:
        case QATML_ENGINE_OP_REDUCE_MEAN:
        case QATML_ENGINE_OP_FLOAT_CONV:
        case QATML_ENGINE_OP_GATHER:
        case QATML_ENGINE_OP_CAST:
        case QATML_ENGINE_OP_FLOAT_GEMM: prepare_wide_op(e, op, d, de, blob); return QATML_OK;
        default:
            return fail(QATML_UNSUPPORTED, "%s: op %d (kind %d) has no CUDA kernel yet; load the plan without a CUDA context to run it on the CPU", fn, index, op.kind);
    }

    // CONV / GEMM: geometry of the reduction and of the output.
    const bool conv = op.kind == QATML_ENGINE_OP_CONV;
    ConvGeom g{};
    int64_t n = 0, k = 0, oh = 1, ow = 1;
    if (conv) {
        oh = out_size(tx.dims[1], op.p.pad_top, op.p.pad_bottom, op.kh, op.p.dilation_h, op.p.stride_h);
        ow = out_size(tx.dims[2], op.p.pad_left, op.p.pad_right, op.kw, op.p.dilation_w, op.p.stride_w);
        g = window_geometry(op, tx, oh, ow);
        n = op.n;
        k = op.kh * op.kw * op.cpg;
    } else {
        n = op.n;
        k = op.k;
        g = gemm_geometry(i32(k));
    }
    // A GEMM runs over x's vectors of K ([.., K] rows), in plan order: a channels-last x of several vectors is copied
    // to plan order in scratch first (one vector reads its K in storage order through the weights' order instead).
    const int64_t vectors = conv ? 1 : tx.elems / k;
    Layout lk = lx;
    if (vectors > 1 && lx.channels_last) {
        d.from_scratch = true;
        d.scratch_in = static_cast<int64_t>(align_up(static_cast<size_t>(tx.elems)));
        d.relayout = LutParams{nullptr, nullptr, lx, Layout{}, 0, tx.elems, 1, static_cast<const uint8_t*>(offset_ptr(blob.add(identity_table().data(), 256)))};
        lk = Layout{};
    }
    if (k > (int64_t(1) << 24) || n > (int64_t(1) << 24) || tx.elems > (int64_t(1) << 30))
        return fail(QATML_UNSUPPORTED, "%s: op %d (%s): K %lld / N %lld exceed the CUDA kernels' limits", fn, index,
                    conv ? "CONV" : "GEMM", (long long)k, (long long)n);
    d.rows_per_row = conv ? oh * ow : vectors;
    const int32_t out_lo = type_lo(ty.dtype), out_hi = type_hi(ty.dtype);
    const bool has_wzp = std::any_of(op.w_zero_points.begin(), op.w_zero_points.end(), [](int32_t z) { return z != 0; });
    d.igemm = !has_wzp && op.groups == 1;
    if (d.igemm) {
        IgemmParams& p = d.gemm;
        p.k = i32(k);
        p.k_pad = round_up32(p.k, kBK);
        p.n = i32(n);
        const int64_t n_pad = (n + kNPad - 1) / kNPad * kNPad;
        const std::vector<int8_t> b =
            conv ? conv_weights_igemm(op.raw_weights, op.w_type, n, op.cpg, op.kh, op.kw, p.k_pad)
                 : gemm_weights_igemm(op.raw_weights, op.w_type, k, n, op.trans_b != 0, lk, p.k_pad);
        p.b = static_cast<const int8_t*>(offset_ptr(blob.add(b)));
        p.coladd = static_cast<const int32_t*>(
            offset_ptr(blob.add(column_offsets(b.data(), n, n_pad, p.k_pad, op.bias.empty() ? nullptr : op.bias.data(), op.qx.zp))));
        p.mult = static_cast<const float*>(offset_ptr(blob.add(expand_multipliers(op.mult, n, n_pad))));
        p.g = g;
        p.mode = conv ? conv_mode(g) : gemm_mode(k);
        if (p.mode == kConvBytes) p.ktab = static_cast<const KTap*>(offset_ptr(blob.add(k_table(g, p.k_pad))));
        p.lda = k;
        p.ldc = n;
        p.a_signed = tx.dtype == QATML_TYPE_INT8;
        p.a_zero_point = op.qx.zp;
        p.out_type = ty.dtype;
        p.out_zp = op.qy.zp;
        p.lo = out_lo;
        p.hi = out_hi;
    } else {
        DirectConvParams& p = d.direct;
        p.g = g;
        p.m = i32(n);
        p.groups = i32(conv ? op.groups : 1);
        p.mpg = i32(n / p.groups);
        const std::vector<int8_t> w = conv ? conv_weights_direct(op.raw_weights, op.w_type, n, op.cpg, op.kh, op.kw)
                                           : gemm_weights_igemm(op.raw_weights, op.w_type, k, n, op.trans_b != 0, lk, i32(k));
        p.w = static_cast<const int8_t*>(offset_ptr(blob.add(w)));
        if (has_wzp) p.w_zp = static_cast<const int32_t*>(offset_ptr(blob.add(op.w_zero_points)));
        if (!op.bias.empty()) p.bias = static_cast<const int32_t*>(offset_ptr(blob.add(op.bias)));
        p.mult = static_cast<const float*>(offset_ptr(blob.add(expand_multipliers(op.mult, n, n))));
        p.x_signed = tx.dtype == QATML_TYPE_INT8;
        p.xz = op.qx.zp;
        p.out_zp = op.qy.zp;
        p.lo = out_lo;
        p.hi = out_hi;
        p.out_float = ty.dtype == QATML_TYPE_FLOAT32;
    }
    if (conv && op.pool) {  // the max pool fused at load: convolution into scratch, then the pool
        d.to_scratch = true;
        PoolParams& p = d.pool;
        const int64_t* pads = op.pool_pads;  // top, left, bottom, right
        p.g = ConvGeom{i32(oh), i32(ow), i32(n), i32(ty.dims[1]), i32(ty.dims[2]), op.pool, op.pool, 2, 2, i32(pads[0]), i32(pads[1]), 1, 1, 0};
        p.pb = i32(pads[2]);
        p.pr = i32(pads[3]);
        p.is_max = 1;
        p.is_signed = ty.dtype == QATML_TYPE_INT8;
        p.x_scale = p.y_scale = 1.0f;
        p.lo = out_lo;
        p.hi = out_hi;
    } else if (!conv && ly.channels_last) {  // a GEMM writes logical order: into scratch, then a layout change
        d.to_scratch = true;
        d.lut = LutParams{nullptr, nullptr, Layout{}, ly, 0, ty.elems, 1, static_cast<const uint8_t*>(offset_ptr(blob.add(identity_table().data(), 256)))};
    }
    const int64_t scratch_out = d.to_scratch ? static_cast<int64_t>(align_up(static_cast<size_t>(conv ? n * oh * ow : ty.elems))) : 0;
    de.scratch_per_row = std::max<int64_t>(de.scratch_per_row, d.scratch_in + scratch_out);
    return QATML_OK;
}

template <typename T>
void rebase(T*& p, uint8_t* base) {
    if (p) p = reinterpret_cast<T*>(base + reinterpret_cast<uintptr_t>(p));
}

void rebase_op(DeviceOp& d, uint8_t* base) {
    rebase(d.gemm.b, base);
    rebase(d.gemm.coladd, base);
    rebase(d.gemm.mult, base);
    rebase(d.gemm.ktab, base);
    rebase(d.direct.w, base);
    rebase(d.direct.w_zp, base);
    rebase(d.direct.bias, base);
    rebase(d.direct.mult, base);
    rebase(d.lut.table, base);
    rebase(d.relayout.table, base);
    rebase(d.gather.table, base);
    rebase(d.gather.fixed, base);
    rebase(d.fgemm.weights, base);
    rebase(d.fgemm.bias, base);
    if (d.kind == QATML_ENGINE_OP_BINARY) rebase(d.binary.b, base);  // a constant b (tensors are bound per run)
    for (ConcatArgs& c : d.concat) rebase(c.table, base);
    rebase(d.resize.y0, base);
    rebase(d.resize.y1, base);
    rebase(d.resize.x0, base);
    rebase(d.resize.x1, base);
    rebase(d.resize.dy, base);
    rebase(d.resize.dx, base);
    rebase(d.axis.scale, base);
    rebase(d.axis.bias, base);
    rebase(d.fconv.weights, base);
    rebase(d.fconv.bias, base);
}

// Device pointers of a run.
struct RunMemory {
    uint8_t* arena;
    uint8_t* scratch;
    const float* const* inputs;  // each of its input's type (float32, int32, int64)
    float* const* outputs;
    int64_t batch;
    int64_t* gather_errors;  // two int64 per GATHER slot (wide_ops.h GatherArgs::bad)
};

void* tensor_ptr(const qatml_engine* e, uint32_t id, const RunMemory& mem) {
    const Tensor& t = e->tensors[id];
    if (t.input_index >= 0) return const_cast<float*>(mem.inputs[t.input_index]);
    if (t.output_index >= 0) return mem.outputs[t.output_index];
    return mem.arena + t.offset * mem.batch;
}

// The op's parameters with its input, output and row count set.
template <typename P>
P bind(P p, void* x, void* y, int64_t rows) {
    p.x = static_cast<decltype(p.x)>(x);
    p.y = static_cast<decltype(p.y)>(y);
    p.rows = rows;
    return p;
}

// The op's arguments with its input and output set and its per-row `count` field multiplied by the rows.
template <typename P>
P bind_scaled(P p, void* x, void* y, int64_t P::*count, int64_t rows) {
    p.x = static_cast<decltype(p.x)>(x);
    p.y = static_cast<decltype(p.y)>(y);
    p.*count *= rows;
    return p;
}

// A wider op's launch(es) with its tensors bound.
cudaError_t launch_wide_op(const qatml_engine* e, const Op& op, const DeviceOp& d, const RunMemory& mem, void* x, void* y, cudaStream_t s) {
    const int64_t n = mem.batch;
    switch (d.kind) {
        case QATML_ENGINE_OP_UNARY: return launch_unary(bind_scaled(d.unary, x, y, &UnaryArgs::count, n), s);
        case QATML_ENGINE_OP_BINARY: {
            BinaryArgs a = d.binary;
            a.a = x;
            if (!op.b_const) a.b = tensor_ptr(e, op.b, mem);
            a.y = y;
            a.rows = n;
            return launch_binary(a, s);
        }
        case QATML_ENGINE_OP_CONCAT:
            for (size_t i = 0; i < d.concat.size(); ++i) {
                ConcatArgs a = d.concat[i];
                a.x = tensor_ptr(e, op.inputs[i], mem);
                a.y = y;
                a.rows = n;
                const cudaError_t err = launch_concat_part(a, s);
                if (err != cudaSuccess) return err;
            }
            return cudaSuccess;
        case QATML_ENGINE_OP_COPY: return launch_copy(bind(d.copy, x, y, n), s);
        case QATML_ENGINE_OP_PAD: return launch_pad(bind(d.pad, x, y, n), s);
        case QATML_ENGINE_OP_RESIZE: return launch_resize(bind(d.resize, x, y, n), s);
        case QATML_ENGINE_OP_SOFTMAX:
        case QATML_ENGINE_OP_LAYERNORM:
        case QATML_ENGINE_OP_REDUCE_MEAN: {
            AxisArgs a = d.axis;
            a.x = static_cast<const float*>(x);
            a.y = static_cast<float*>(y);
            a.groups = d.axis_outer * n;
            return d.kind == QATML_ENGINE_OP_SOFTMAX ? launch_softmax(a, s) : d.kind == QATML_ENGINE_OP_LAYERNORM ? launch_layernorm(a, s)
                                                                                                                  : launch_reduce_mean(a, s);
        }
        case QATML_ENGINE_OP_MATMUL: {
            MatMulArgs a = d.matmul;
            a.a = x;
            a.b = tensor_ptr(e, op.b, mem);
            a.y = y;
            a.rows = n;
            return launch_matmul(a, s);
        }
        case QATML_ENGINE_OP_GATHER: {
            GatherArgs a = d.gather;
            a.indices = a.fixed ? nullptr : x;
            a.y = y;
            a.rows = n;
            a.bad = a.fixed ? nullptr : mem.gather_errors + 2 * d.gather_slot;
            return launch_gather(a, s);
        }
        case QATML_ENGINE_OP_CAST: return launch_cast(bind_scaled(d.cast, x, y, &CastArgs::count, n), s);
        case QATML_ENGINE_OP_FLOAT_GEMM: return launch_float_gemm(bind_scaled(d.fgemm, x, y, &FloatGemmArgs::vectors, n), s);
        default: return launch_float_conv(bind(d.fconv, x, y, n), s);  // FLOAT_CONV
    }
}

cudaError_t launch_op(const qatml_engine* e, const Op& op, const DeviceOp& d, const RunMemory& mem, const IgemmDeviceInfo& info,
                      cudaStream_t s) {
    const int64_t n = mem.batch;
    void* x = tensor_ptr(e, op.x, mem);
    void* y = tensor_ptr(e, op.y, mem);
    switch (d.kind) {
        case QATML_ENGINE_OP_QUANTIZE: return launch_quantize(bind(d.quantize, x, y, n), s);
        case QATML_ENGINE_OP_DEQUANTIZE: return launch_dequantize(bind(d.dequantize, x, y, n), s);
        case QATML_ENGINE_OP_LUT: return launch_lut(bind(d.lut, x, y, n), s);
        case QATML_ENGINE_OP_MAXPOOL:
        case QATML_ENGINE_OP_AVGPOOL: return launch_pool(bind(d.pool, x, y, n), s);
        case QATML_ENGINE_OP_GLOBAL_AVGPOOL: return launch_global_avgpool(bind(d.gpool, x, y, n), s);
        case QATML_ENGINE_OP_ADD: {
            AddParams p = d.add;
            p.a = x;
            p.b = tensor_ptr(e, op.b, mem);
            p.y = y;
            p.rows = n;
            return launch_add(p, s);
        }
        case QATML_ENGINE_OP_CONV:
        case QATML_ENGINE_OP_GEMM: break;
        default: return launch_wide_op(e, op, d, mem, x, y, s);
    }
    // CONV / GEMM
    void* out = d.to_scratch ? mem.scratch + d.scratch_in * n : y;
    cudaError_t err;
    if (d.from_scratch) {
        if ((err = launch_lut(bind(d.relayout, x, mem.scratch, n), s)) != cudaSuccess) return err;
        x = mem.scratch;
    }
    if (d.igemm) {
        IgemmParams p = d.gemm;
        p.a = static_cast<const uint8_t*>(x);
        p.c = out;
        p.m = n * d.rows_per_row;
        err = launch_igemm(p, choose_tile(p.m, p.n, info.sms, info.blocks_per_sm), s);
    } else {
        DirectConvParams p = d.direct;
        p.x = static_cast<const uint8_t*>(x);
        p.y = out;
        p.pixels = n * d.rows_per_row;
        err = launch_direct_conv(p, s);
    }
    if (err != cudaSuccess || !d.to_scratch) return err;
    if (d.kind == QATML_ENGINE_OP_CONV) return launch_pool(bind(d.pool, out, y, n), s);
    return launch_lut(bind(d.lut, out, y, n), s);
}

}  // namespace

qatml_status cuda_engine_attach(qatml_engine* e, const qatml_context* ctx, const char* fn) {
    CudaContextState* cs = context_cuda_state(ctx);
    if (!cs) return fail(QATML_INTERNAL, "%s: CUDA context without device state", fn);
    auto de = std::make_unique<DeviceEngine>();
    de->device = cs->device;
    de->layouts.reserve(e->tensors.size());
    for (const Tensor& t : e->tensors) de->layouts.push_back(tensor_layout(t.dtype, t.rank, t.dims));
    de->ops.resize(e->ops.size());
    Blob blob;
    for (size_t i = 0; i < e->ops.size(); ++i) {
        qatml_status st = prepare_op(e, e->ops[i], static_cast<int>(i), de->ops[i], *de, blob, fn);
        if (st != QATML_OK) return st;
    }
    DeviceGuard guard(cs->device);
    if (guard.status() != cudaSuccess) return cuda_fail(guard.status(), fn, "selecting the device");
    de->weight_bytes = blob.bytes.size();
    cudaError_t err = cudaMalloc(&de->weights, de->weight_bytes);
    if (err != cudaSuccess) {
        de->weights = nullptr;
        cudaGetLastError();
        return cuda_fail(err, fn, "allocating device memory for the weights");
    }
    if ((err = cudaMemcpy(de->weights, blob.bytes.data(), blob.bytes.size(), cudaMemcpyHostToDevice)) != cudaSuccess)
        return cuda_fail(err, fn, "uploading the weights");
    for (DeviceOp& d : de->ops) rebase_op(d, static_cast<uint8_t*>(de->weights));
    e->device_engine = de.release();
    return QATML_OK;
}

void cuda_engine_release(DeviceEngine* d) { delete d; }

qatml_status cuda_engine_run(const qatml_engine* e, const qatml_context* ctx, int64_t batch, const float* const* inputs,
                             float* const* outputs, bool device_pointers, const char* fn) {
    const DeviceEngine* de = e->device_engine;
    CudaContextState* cs = context_cuda_state(ctx);
    if (!de)
        return fail(QATML_INVALID_ARGUMENT, "%s: the engine was loaded for the CPU; create it with a CUDA context to run it on a GPU", fn);
    if (!cs || cs->device != de->device)
        return fail(QATML_INVALID_ARGUMENT, "%s: the engine was loaded on CUDA device %d, the context is on device %d", fn, de->device,
                    cs ? cs->device : -1);
    std::lock_guard<std::mutex> lock(cs->mutex);
    DeviceGuard guard(cs->device);
    if (guard.status() != cudaSuccess) return cuda_fail(guard.status(), fn, "selecting the device");

    // Device memory: the activation arena of the CPU plan (offset * batch), then the scratch, then the GATHER error slots.
    const size_t arena_bytes = align_up(static_cast<size_t>(e->arena_per_row * batch));
    const size_t scratch_bytes = align_up(static_cast<size_t>(de->scratch_per_row * batch));
    const size_t error_bytes = static_cast<size_t>(de->gather_slots) * 2 * sizeof(int64_t);
    cudaError_t err = cs->arena.reserve(std::max<size_t>(arena_bytes + scratch_bytes + align_up(error_bytes), kAlign));
    if (err != cudaSuccess) return cuda_fail(err, fn, "allocating the activation arena");

    std::vector<const float*> in(e->inputs.size());
    std::vector<float*> out(e->outputs.size());
    std::vector<size_t> in_at(e->inputs.size()), out_at(e->outputs.size());
    size_t io_bytes = 0;
    auto row_bytes = [&](uint32_t id) { return static_cast<size_t>(e->tensors[id].bytes * batch); };
    if (device_pointers) {
        for (size_t i = 0; i < in.size(); ++i) in[i] = inputs[i];
        for (size_t i = 0; i < out.size(); ++i) out[i] = outputs[i];
    } else {
        for (size_t i = 0; i < in.size(); ++i) {
            in_at[i] = io_bytes;
            io_bytes += align_up(row_bytes(e->inputs[i]));
        }
        const size_t in_bytes = io_bytes;
        for (size_t i = 0; i < out.size(); ++i) {
            out_at[i] = io_bytes;
            io_bytes += align_up(row_bytes(e->outputs[i]));
        }
        if ((err = cs->io.reserve(io_bytes)) != cudaSuccess) return cuda_fail(err, fn, "allocating device input and output buffers");
        if ((err = cs->staging.reserve(io_bytes)) != cudaSuccess) return cuda_fail(err, fn, "allocating pinned staging memory");
        uint8_t* io = static_cast<uint8_t*>(cs->io.data);
        uint8_t* staging = static_cast<uint8_t*>(cs->staging.data);
        for (size_t i = 0; i < in.size(); ++i) {
            std::memcpy(staging + in_at[i], inputs[i], row_bytes(e->inputs[i]));
            in[i] = reinterpret_cast<const float*>(io + in_at[i]);
        }
        for (size_t i = 0; i < out.size(); ++i) out[i] = reinterpret_cast<float*>(io + out_at[i]);
        if ((err = cudaMemcpyAsync(io, staging, in_bytes, cudaMemcpyHostToDevice, cs->stream)) != cudaSuccess)
            return cuda_fail(err, fn, "copying the inputs to the device");
    }

    uint8_t* arena = static_cast<uint8_t*>(cs->arena.data);
    int64_t* gather_errors = reinterpret_cast<int64_t*>(arena + arena_bytes + scratch_bytes);
    if (error_bytes && (err = cudaMemsetAsync(gather_errors, 0x7f, error_bytes, cs->stream)) != cudaSuccess)  // every slot kNoBadIndex
        return cuda_fail(err, fn, "clearing the index checks");
    const RunMemory mem{arena, arena + arena_bytes, in.data(), out.data(), batch, gather_errors};
    for (size_t i = 0; i < e->ops.size(); ++i) {
        if ((err = launch_op(e, e->ops[i], de->ops[i], mem, cs->igemm, cs->stream)) != cudaSuccess) {
            cudaStreamSynchronize(cs->stream);
            char what[64];
            std::snprintf(what, sizeof what, "launching op %zu", i);
            return cuda_fail(err, fn, what);
        }
    }
    if (!device_pointers && !out.empty()) {
        const size_t first = out_at[0];
        if ((err = cudaMemcpyAsync(static_cast<uint8_t*>(cs->staging.data) + first, static_cast<uint8_t*>(cs->io.data) + first,
                                   io_bytes - first, cudaMemcpyDeviceToHost, cs->stream)) != cudaSuccess)
            return cuda_fail(err, fn, "copying the outputs from the device");
    }
    if ((err = cudaStreamSynchronize(cs->stream)) != cudaSuccess) return cuda_fail(err, fn, "running the plan");
    if (error_bytes) {
        std::vector<int64_t> errors(error_bytes / sizeof(int64_t));
        if ((err = cudaMemcpy(errors.data(), gather_errors, error_bytes, cudaMemcpyDeviceToHost)) != cudaSuccess)
            return cuda_fail(err, fn, "reading the index checks");
        for (size_t i = 0; i < e->ops.size(); ++i) {  // the first failing GATHER in plan order, as the CPU runner stops there
            const DeviceOp& d = de->ops[i];
            if (d.gather_slot < 0 || errors[2 * static_cast<size_t>(d.gather_slot)] == kNoBadIndex) continue;
            const int64_t flat = errors[2 * static_cast<size_t>(d.gather_slot)], count = d.gather.count, rows = d.gather.table_rows;
            return fail(QATML_INVALID_ARGUMENT, "%s: op %zu (GATHER): index %lld at row %lld, position %lld is outside the table's rows -%lld..%lld", fn, i,
                        (long long)errors[2 * static_cast<size_t>(d.gather_slot) + 1], (long long)(flat / count), (long long)(flat % count),
                        (long long)rows, (long long)(rows - 1));
        }
    }
    if (!device_pointers)
        for (size_t i = 0; i < out.size(); ++i)
            std::memcpy(outputs[i], static_cast<uint8_t*>(cs->staging.data) + out_at[i], row_bytes(e->outputs[i]));
    return QATML_OK;
}

}  // namespace qatml
