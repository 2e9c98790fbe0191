// Passes over a loaded plan: the plan-level fusion of a convolution with its max pool, and the CPU program (one step
// per op with its kernel prepared: the epilogue, requantization arrays, algorithm and scratch fixed once).
#include "engine/cpu_program.h"

#include <algorithm>
#include <cstring>

using namespace qatml;
using namespace qatml::kernels;
using namespace qatml::plan;

namespace qatml {
namespace engine {

void CpuProgramDeleter::operator()(CpuProgram* p) const { delete p; }

// CONV followed directly by MAXPOOL 2x2 (no padding) or 3x3 (each pad 0 or 1), stride 2, dilation 1,
// where the pool is the only reader of the convolution's output (an intermediate) and the output is 8-bit:
// one convolution with the pool in its output pass (kernel_api.h FusedPool; bit-identical: the pool keeps the quantization, and requantization is
// monotonic), one op fewer, and the full-size intermediate is never allocated.
void fuse_conv_maxpool(qatml_engine* e) {
    std::vector<int> readers(e->tensors.size(), 0);
    for (const Op& op : e->ops)
        for (uint32_t id : op.inputs) ++readers[id];
    std::vector<Op> ops;
    ops.reserve(e->ops.size());
    for (size_t i = 0; i < e->ops.size(); ++i) {
        Op& op = e->ops[i];
        if (op.kind == QATML_ENGINE_OP_CONV && i + 1 < e->ops.size()) {
            const Op& pool = e->ops[i + 1];
            const Tensor& mid = e->tensors[op.y];
            const qatml_conv2d_params& p = pool.p;
            const int64_t max_pad = std::max(std::max(p.pad_top, p.pad_left), std::max(p.pad_bottom, p.pad_right));
            const bool fusable = (pool.kh == 2 && pool.kw == 2 && max_pad == 0) || (pool.kh == 3 && pool.kw == 3 && max_pad <= 1);
            if (pool.kind == QATML_ENGINE_OP_MAXPOOL && pool.x == op.y && readers[op.y] == 1 && mid.output_index < 0 &&
                mid.dtype != QATML_TYPE_FLOAT32 && fusable && p.stride_h == 2 && p.stride_w == 2 && p.dilation_h == 1 &&
                p.dilation_w == 1) {
                op.pool = static_cast<int>(pool.kh);
                op.pool_pads[0] = p.pad_top;
                op.pool_pads[1] = p.pad_left;
                op.pool_pads[2] = p.pad_bottom;
                op.pool_pads[3] = p.pad_right;
                op.y = pool.y;
                ops.push_back(std::move(op));
                ++i;
                continue;
            }
        }
        ops.push_back(std::move(op));
    }
    const bool fused = ops.size() != e->ops.size();
    e->ops.swap(ops);  // the ops were moved either way
    if (!fused) return;
    // Writers and last readers by the new op indices; the fused intermediates are written by no op.
    for (Tensor& t : e->tensors) {
        if (t.def >= 0) t.def = -2;
        t.last_use = -1;
    }
    for (size_t i = 0; i < e->ops.size(); ++i) {
        const Op& op = e->ops[i];
        for (uint32_t id : op.inputs) e->tensors[id].last_use = static_cast<int>(i);
        e->tensors[op.y].def = static_cast<int>(i);
    }
}

namespace {

// The epilogue of a CONV or GEMM op in kernel terms: the plan's int32 bias, one multiplier per output channel.
Epilogue op_epilogue(const Op& op, int32_t out_type, int64_t channels) {
    Epilogue ep;
    ep.out_type = out_type;
    ep.bias = op.bias.empty() ? nullptr : op.bias.data();
    ep.mult.resize(static_cast<size_t>(channels));
    for (int64_t c = 0; c < channels; ++c) ep.mult[static_cast<size_t>(c)] = op.mult[op.mult.size() == 1 ? 0 : static_cast<size_t>(c)];
    ep.zp = op.qy.zp;
    type_range(out_type, &ep.lo, &ep.hi);
    return ep;
}

}  // namespace

int64_t Step::scratch_bytes(int64_t rows) const {
    switch (kind) {
        case QATML_ENGINE_OP_CONV: return conv_scratch_bytes(*conv);
        case QATML_ENGINE_OP_GEMM: return gemm_scratch_bytes(gemm, rows * vectors);
        case QATML_ENGINE_OP_MAXPOOL:
        case QATML_ENGINE_OP_AVGPOOL: return pool.scratch_bytes;
        case QATML_ENGINE_OP_GLOBAL_AVGPOOL: return global_pool.scratch_bytes;
        case QATML_ENGINE_OP_BINARY: return binary.scratch_bytes;
        case QATML_ENGINE_OP_MATMUL: return matmul.scratch_bytes;
        case QATML_ENGINE_OP_FLOAT_CONV: return float_conv.scratch_bytes;
        case QATML_ENGINE_OP_FLOAT_GEMM: return float_gemm_scratch_bytes(float_gemm, rows * vectors);
        default: return 0;
    }
}

int64_t CpuProgram::arena_bytes(int64_t rows) const {
    int64_t scratch = 0;
    for (const Step& s : steps) scratch = std::max(scratch, s.scratch_bytes(rows));
    return activation_bytes(rows) + scratch;
}

namespace {

// A step before its kernel is prepared.
struct Draft {
    int op = -1, add_op = -1;  // add_op: a residual ADD fused into this CONV
    uint32_t x = 0, b = 0, y = 0;
};

bool is_plain_conv(const Op& op) { return op.kind == QATML_ENGINE_OP_CONV; }

// Global average pooling, or an average pool whose one window is the whole plane: it reads channels-last input.
bool whole_plane_average(const Op& op) {
    if (op.kind == QATML_ENGINE_OP_GLOBAL_AVGPOOL) return true;
    return op.kind == QATML_ENGINE_OP_AVGPOOL && op.kh == op.p.height && op.kw == op.p.width && op.p.pad_top == 0 && op.p.pad_left == 0 &&
        op.p.pad_bottom == 0 && op.p.pad_right == 0;
}

// The pass that keeps activations channels-last between convolutions and fuses residual additions into the
// convolution that produces one of their inputs:
// - ADD(a, b) where a (or b) is written by a CONV (no fused pool) whose output the ADD alone reads becomes that
//   CONV with the other input as a residual added in its epilogue, run where the ADD ran;
// - an 8-bit intermediate [C, H, W] tensor is stored channels-last (padding = the widest padding of its
//   convolution readers) when a convolution writes it and convolutions (or fused residual reads) alone read it,
//   all on the AVX-512 VNNI channel-lane kernel; a residual shares its layout with the fused step's output.
// A fusion whose tensors cannot be channels-last is undone (the kernel adds residuals in channels-last only).
class LayoutPass {
public:
    explicit LayoutPass(const qatml_engine& e) : e_(e), layouts_(e.tensors.size()) {}

    std::vector<Draft> run() {
        propose_fusions();
        for (;;) {
            solve_layouts();
            bool dropped = false;
            for (Draft& d : drafts_)
                if (d.add_op >= 0 && !(layouts_[d.y].channels_last && layouts_[d.b].channels_last)) {
                    d.add_op = -1;
                    dropped = true;
                }
            if (!dropped) break;
        }
        return materialize();
    }

    const std::vector<ActivationLayout>& layouts() const { return layouts_; }

private:
    const qatml_engine& e_;
    std::vector<Draft> drafts_;  // one per plan op; a fused ADD's draft is carried by its CONV's
    std::vector<ActivationLayout> layouts_;

    void propose_fusions() {
        const size_t n = e_.ops.size();
        std::vector<int> readers(e_.tensors.size(), 0), writer(e_.tensors.size(), -1);
        for (size_t i = 0; i < n; ++i) {
            const Op& op = e_.ops[i];
            for (uint32_t id : op.inputs) ++readers[id];
            writer[op.y] = static_cast<int>(i);
        }
        drafts_.resize(n);
        for (size_t i = 0; i < n; ++i) drafts_[i] = Draft{static_cast<int>(i), -1, e_.ops[i].x, e_.ops[i].b, e_.ops[i].y};
        for (size_t i = 0; i < n; ++i) {
            const Op& add = e_.ops[i];
            if (add.kind != QATML_ENGINE_OP_ADD || e_.tensors[add.y].dtype != QATML_TYPE_UINT8 || e_.tensors[add.y].rank != 3) continue;
            for (uint32_t side : {add.x, add.b}) {
                const int j = writer[side];
                const uint32_t other = side == add.x ? add.b : add.x;
                if (j < 0 || other == side) continue;
                const Op& conv = e_.ops[static_cast<size_t>(j)];
                const Tensor &t = e_.tensors[side], &r = e_.tensors[other], &out = e_.tensors[add.y];
                if (!std::equal(t.dims, t.dims + 3, r.dims) || !std::equal(t.dims, t.dims + 3, out.dims) || r.rank != 3 || t.rank != 3) continue;
                if (!is_plain_conv(conv) || conv.pool != 0 || readers[side] != 1 || t.output_index >= 0 || drafts_[static_cast<size_t>(j)].add_op >= 0 ||
                    !conv_writes_channels_last(conv.w.get(), t.dtype) || t.dtype != QATML_TYPE_UINT8)
                    continue;
                drafts_[static_cast<size_t>(j)].add_op = static_cast<int>(i);
                drafts_[static_cast<size_t>(j)].b = other;
                drafts_[static_cast<size_t>(j)].y = add.y;
                break;
            }
        }
    }

    // Steps in run order: a fused CONV runs where its ADD ran (both inputs are ready there).
    std::vector<Draft> materialize() const {
        std::vector<int> fused_at(e_.ops.size(), -1);  // ADD op -> the CONV fused into it
        for (const Draft& d : drafts_)
            if (d.add_op >= 0) fused_at[static_cast<size_t>(d.add_op)] = d.op;
        std::vector<Draft> steps;
        for (size_t i = 0; i < e_.ops.size(); ++i) {
            const Draft& d = drafts_[i];
            if (d.add_op >= 0) continue;  // emitted at its ADD
            if (fused_at[i] >= 0) {
                steps.push_back(drafts_[static_cast<size_t>(fused_at[i])]);
                continue;
            }
            Draft plain = d;
            plain.x = e_.ops[i].x;
            plain.b = e_.ops[i].b;
            plain.y = e_.ops[i].y;
            steps.push_back(plain);
        }
        return steps;
    }

    // Which tensors are channels-last under the current fusions, with the padding their readers need.
    void solve_layouts() {
        const size_t count = e_.tensors.size();
        std::vector<char> ok(count, 0);
        std::vector<int64_t> pads(4 * count, 0);
        std::vector<uint32_t> group(count);
        for (uint32_t i = 0; i < count; ++i) group[i] = i;
        auto find = [&](uint32_t v) {
            while (group[v] != v) v = group[v] = group[group[v]];
            return v;
        };
        // Writers: a convolution that writes channels-last.
        std::vector<int> zp(count, 0);
        for (const Draft& d : materialize()) {
            const Op& op = e_.ops[static_cast<size_t>(d.op)];
            const Tensor& t = e_.tensors[d.y];
            if (is_plain_conv(op) && t.dtype == QATML_TYPE_UINT8 && t.rank == 3 && t.output_index < 0 &&
                conv_writes_channels_last(op.w.get(), t.dtype)) {
                ok[d.y] = 1;
                zp[d.y] = d.add_op >= 0 ? e_.ops[static_cast<size_t>(d.add_op)].qy.zp : op.qy.zp;
            }
        }
        // Readers: convolutions on channel quads whose padding value is the tensor's zero point, or residual reads.
        for (const Draft& d : materialize()) {
            const Op& op = e_.ops[static_cast<size_t>(d.op)];
            if (whole_plane_average(op)) continue;  // reads the interior only: no padding needed
            if (!is_plain_conv(op)) {
                for (uint32_t id : op.inputs) ok[id] = 0;
                continue;
            }
            if (conv_reads_channels_last(op.w.get(), e_.tensors[op.y].dtype) && op.qx.zp == zp[d.x]) {
                int64_t* p = &pads[4 * d.x];
                p[0] = std::max(p[0], op.p.pad_top);
                p[1] = std::max(p[1], op.p.pad_left);
                p[2] = std::max(p[2], op.p.pad_bottom);
                p[3] = std::max(p[3], op.p.pad_right);
            } else {
                ok[d.x] = 0;
            }
            if (d.add_op >= 0) group[find(d.b)] = find(d.y);
        }
        for (uint32_t id : e_.outputs) ok[id] = 0;
        // A group (a residual and the fused output) is channels-last only as a whole, with one padding.
        std::vector<char> group_ok(count, 1);
        std::vector<int64_t> group_pads(4 * count, 0);
        for (uint32_t i = 0; i < count; ++i) {
            const uint32_t r = find(i);
            if (!ok[i]) group_ok[r] = 0;
            for (int k = 0; k < 4; ++k) group_pads[4 * r + k] = std::max(group_pads[4 * r + k], pads[4 * i + k]);
        }
        for (uint32_t i = 0; i < count; ++i) {
            const Tensor& t = e_.tensors[i];
            const uint32_t r = find(i);
            if (ok[i] && group_ok[r]) {
                const int64_t* p = &group_pads[4 * r];
                layouts_[i] = channels_last_layout(t.dims[0], t.dims[1], t.dims[2], p[0], p[1], p[2], p[3]);
            } else {
                layouts_[i] = ActivationLayout();
                layouts_[i].image_bytes = t.bytes;
            }
        }
    }
};

}  // namespace

void prepare_wider_op(const qatml_engine& e, const Op& op, Step& s, const SimdKernels* simd) {
    const Tensor &x = e.tensors[op.x], &y = e.tensors[op.y];
    const int64_t esz = elem_size(y.dtype);
    switch (op.kind) {
        case QATML_ENGINE_OP_UNARY:
            s.unary = UnaryParams{op.func, op.alpha, op.beta};
            s.elements = x.elems;
            break;
        case QATML_ENGINE_OP_BINARY: {
            const Tensor& b = e.tensors[op.b];
            const int64_t* b_dims = op.b_const ? op.params.data() : b.dims;
            const int b_rank = op.b_const ? static_cast<int>(op.params.size()) : b.rank;
            binary_prepare(s.binary, op.func, y.dtype, x.dims, x.rank, b_dims, b_rank, y.dims, y.rank, !op.b_const, simd);
            if (y.dtype != QATML_TYPE_FLOAT32) {
                s.binary.add = add_params(y.dtype, op.qx.scale, op.qx.zp, op.qb.scale, op.qb.zp, op.qy.scale, op.qy.zp);
                s.binary.mul_ratio = (op.qx.scale * op.qb.scale) / op.qy.scale;
            }
            s.constant = op.b_const ? op.data.data() : nullptr;
            break;
        }
        case QATML_ENGINE_OP_CONCAT: {
            const int axis = static_cast<int>(op.n);
            ConcatPlan& c = s.concat;
            c.outer = 1;
            for (int d = 0; d < axis; ++d) c.outer *= y.dims[d];
            c.y_block = y.elems / c.outer * esz;
            c.y_row = y.elems * esz;
            const uint8_t* table = op.data.data();
            for (size_t i = 0; i < op.inputs.size(); ++i) {
                const Tensor& t = e.tensors[op.inputs[i]];
                c.part_bytes.push_back(t.elems / c.outer * esz);
                c.x_row.push_back(t.elems * esz);
                c.tables.push_back(op.params[i] ? table : nullptr);
                if (op.params[i]) table += 256;
            }
            break;
        }
        case QATML_ENGINE_OP_COPY: {
            CopyPlan& c = s.copy;
            c.rank = static_cast<int>(op.params.size() / 2);
            for (int i = 0; i < c.rank; ++i) {
                c.dims[i] = op.params[static_cast<size_t>(i)];
                c.strides[i] = op.params[static_cast<size_t>(c.rank + i)];
            }
            c.offset = op.k;
            c.elem = esz;
            c.x_row = x.elems;
            c.y_row = y.elems;
            break;
        }
        case QATML_ENGINE_OP_PAD: {
            PadPlan& p = s.pad;
            for (int i = 0; i < x.rank; ++i) {
                p.x_dims[4 - x.rank + i] = x.dims[i];
                p.y_dims[4 - x.rank + i] = y.dims[i];
                p.begins[4 - x.rank + i] = op.params[static_cast<size_t>(i)];
            }
            for (int i = 0; i < x.rank; ++i) p.steps[4 - x.rank + i] = op.params[static_cast<size_t>(2 * x.rank + i)];
            p.elem = esz;
            p.x_row = x.elems;
            p.y_row = y.elems;
            std::memcpy(p.value, op.data.data(), 4);
            break;
        }
        case QATML_ENGINE_OP_RESIZE: {
            ResizePlan& r = s.resize;
            r.bilinear = op.func == 2;
            r.type = y.dtype;
            r.c = x.dims[0];
            r.h = x.dims[1];
            r.w = x.dims[2];
            r.oh = y.dims[1];
            r.ow = y.dims[2];
            size_t pi = 0, wi = 0;
            auto weight = [&]() {
                float w;
                std::memcpy(&w, op.data.data() + 4 * wi++, 4);
                return w;
            };
            for (int64_t i = 0; i < r.oh; ++i) {
                r.y0.push_back(static_cast<int32_t>(op.params[pi++]));
                if (r.bilinear) {
                    r.y1.push_back(static_cast<int32_t>(op.params[pi++]));
                    r.dy.push_back(weight());
                }
            }
            for (int64_t i = 0; i < r.ow; ++i) {
                r.x0.push_back(static_cast<int32_t>(op.params[pi++]));
                if (r.bilinear) {
                    r.x1.push_back(static_cast<int32_t>(op.params[pi++]));
                    r.dx.push_back(weight());
                }
            }
            break;
        }
        case QATML_ENGINE_OP_SOFTMAX:
        case QATML_ENGINE_OP_LAYERNORM:
        case QATML_ENGINE_OP_REDUCE_MEAN: {
            const int axis = static_cast<int>(op.n), count = op.kind == QATML_ENGINE_OP_REDUCE_MEAN ? static_cast<int>(op.k) : op.kind == QATML_ENGINE_OP_SOFTMAX ? 1
                                                                                                                                                                  : x.rank - axis;
            AxisPlan& a = s.axis;
            a.outer = a.n = a.inner = 1;
            for (int d = 0; d < x.rank; ++d) (d < axis ? a.outer : d < axis + count ? a.n
                                                                                    : a.inner) *= x.dims[d];
            if (op.kind == QATML_ENGINE_OP_LAYERNORM) {
                s.epsilon = op.alpha;
                s.norm_scale = reinterpret_cast<const float*>(op.data.data());
                s.norm_bias = op.count_include_pad ? s.norm_scale + a.n : nullptr;
            }
            break;
        }
        case QATML_ENGINE_OP_MATMUL: {
            const Tensor& b = e.tensors[op.b];
            MatMulPlan& m = s.matmul;
            m.m = x.dims[x.rank - 2];
            m.k = op.k;
            m.n = op.n;
            m.count = x.elems / (m.m * m.k);
            m.b_shared = b.rank == 2 && m.count > 1;
            m.a_type = x.dtype;
            m.b_type = b.dtype;
            m.y_type = y.dtype;
            m.za = op.qx.zp;
            m.zb = op.qb.zp;
            m.zy = op.qy.zp;
            m.mult = (op.qx.scale * op.qb.scale) / op.qy.scale;
            matmul_prepare(m);
            break;
        }
        case QATML_ENGINE_OP_FLOAT_CONV: {
            FloatConvPlan& f = s.float_conv;
            f.c = x.dims[0];
            f.h = x.dims[1];
            f.w = x.dims[2];
            f.m = op.n;
            f.groups = op.groups;
            f.cpg = op.cpg;
            f.mpg = op.n / op.groups;
            f.kh = op.kh;
            f.kw = op.kw;
            f.oh = y.dims[1];
            f.ow = y.dims[2];
            f.sh = op.p.stride_h;
            f.sw = op.p.stride_w;
            f.pt = op.p.pad_top;
            f.pl = op.p.pad_left;
            f.dh = op.p.dilation_h;
            f.dw = op.p.dilation_w;
            f.weights = reinterpret_cast<const float*>(op.data.data());
            f.bias = op.count_include_pad ? f.weights + op.n * op.cpg * op.kh * op.kw : nullptr;
            float_conv_prepare(f, e.isa);
            break;
        }
        case QATML_ENGINE_OP_GATHER:
        case QATML_ENGINE_OP_CAST:
        case QATML_ENGINE_OP_FLOAT_GEMM: prepare_integer_input_op(e, op, s); break;
        default: break;
    }
}

qatml_status build_cpu_program(qatml_engine* e, const char* fn) {
    std::unique_ptr<CpuProgram, CpuProgramDeleter> prog(new CpuProgram());
    prog->simd = simd_for_isa(e->isa);
    LayoutPass pass(*e);
    const std::vector<Draft> drafts = pass.run();
    prog->layouts = pass.layouts();
    prog->steps.resize(drafts.size());
    for (size_t i = 0; i < drafts.size(); ++i) {
        const Draft& d = drafts[i];
        const Op& op = e->ops[static_cast<size_t>(d.op)];
        Step& s = prog->steps[i];
        s.kind = op.kind;
        s.op = d.op;
        s.add_op = d.add_op;
        s.x = d.x;
        s.b = d.b;
        s.y = d.y;
        const Tensor &tx = e->tensors[d.x], &ty = e->tensors[op.y];
        s.elements = tx.elems;
        switch (op.kind) {
            case QATML_ENGINE_OP_QUANTIZE:
                s.scale = op.qy.scale;
                s.zp = op.qy.zp;
                s.type = ty.dtype;
                break;
            case QATML_ENGINE_OP_DEQUANTIZE:
                s.scale = op.qx.scale;
                s.zp = op.qx.zp;
                s.type = tx.dtype;
                break;
            case QATML_ENGINE_OP_CONV: {
                FusedPool fp;
                fp.kernel = op.pool;
                fp.pt = op.pool_pads[0];
                fp.pl = op.pool_pads[1];
                fp.pb = op.pool_pads[2];
                fp.pr = op.pool_pads[3];
                ConvOptions options;
                options.x_layout = prog->layouts[d.x];
                options.y_layout = prog->layouts[d.y];
                if (d.add_op >= 0) {  // a = the convolution's output (the ADD reads it as its x or b), b = the residual
                    const Op& add = e->ops[static_cast<size_t>(d.add_op)];
                    const bool conv_is_a = add.x == op.y;
                    const QParam &qc = conv_is_a ? add.qx : add.qb, &qr = conv_is_a ? add.qb : add.qx;
                    options.residual.on = true;
                    options.residual.add = add_params(ty.dtype, qc.scale, qc.zp, qr.scale, qr.zp, add.qy.scale, add.qy.zp);
                }
                s.conv = conv_prepare(op.p, tx.dtype, op.qx.zp, op.w.get(), op_epilogue(op, ty.dtype, op.n), fp, options);
                break;
            }
            case QATML_ENGINE_OP_GEMM:
                // A float output (MatMulIntegerToFloat): int32 sums written in place, then scaled to float.
                gemm_prepare(s.gemm, op.w.get(), tx.dtype, op.qx.zp, op_epilogue(op, ty.dtype == QATML_TYPE_FLOAT32 ? QATML_TYPE_INT32 : ty.dtype, op.n));
                s.vectors = tx.elems / op.k;
                if (ty.dtype == QATML_TYPE_FLOAT32) s.float_scale = s.gemm.ep.mult;
                break;
            case QATML_ENGINE_OP_MAXPOOL:
            case QATML_ENGINE_OP_AVGPOOL:
                pool_prepare(s.pool, prog->simd, op.kind == QATML_ENGINE_OP_MAXPOOL, op.p, op.kh, op.kw, op.count_include_pad, tx.dtype,
                             op.qx.scale, op.qx.zp, op.qy.scale, op.qy.zp);
                if (prog->layouts[d.x].channels_last) {
                    if (s.pool.path != PoolPlan::Path::WholePlane) return fail(QATML_INTERNAL, "%s: op %d: channels-last pool input", fn, d.op);
                    s.pool.x_layout = prog->layouts[d.x];
                }
                break;
            case QATML_ENGINE_OP_GLOBAL_AVGPOOL:
                global_pool_prepare(s.global_pool, prog->simd, tx.dtype, tx.dims[0], tx.dims[1] * tx.dims[2], op.qx.scale, op.qx.zp,
                                    op.qy.scale, op.qy.zp);
                s.global_pool.x_layout = prog->layouts[d.x];
                s.global_pool.h = tx.dims[1];
                s.global_pool.w = tx.dims[2];
                break;
            case QATML_ENGINE_OP_ADD:
                s.add = add_params(tx.dtype, op.qx.scale, op.qx.zp, op.qb.scale, op.qb.zp, op.qy.scale, op.qy.zp);
                break;
            case QATML_ENGINE_OP_LUT: s.lut = op.lut; break;
            default: prepare_wider_op(*e, op, s, prog->simd); break;
        }
        if (d.add_op >= 0)
            s.inputs = {d.x, d.b};
        else
            s.inputs = op.inputs;
    }
    // Activation memory: every intermediate tensor from the step that writes it to the last that reads it, sized by
    // its layout (channels-last images carry their padding).
    std::vector<Lifetime> life(e->tensors.size());
    for (size_t i = 0; i < prog->steps.size(); ++i) {
        const Step& s = prog->steps[i];
        std::vector<uint32_t> touched = s.inputs;
        touched.push_back(s.y);
        for (uint32_t id : touched) {
            const Tensor& t = e->tensors[id];
            if (t.input_index >= 0 || t.output_index >= 0) continue;
            Lifetime& l = life[id];
            if (id == s.y) l.first = static_cast<int>(i);
            l.last = std::max(l.last, static_cast<int>(i));
            l.bytes = prog->layouts[id].image_bytes;
        }
    }
    prog->arena_per_row = plan_offsets(life, static_cast<int>(prog->steps.size()), &prog->offsets, &prog->naive_per_row);
    e->cpu = std::move(prog);
    return QATML_OK;
}

}  // namespace engine
}  // namespace qatml
