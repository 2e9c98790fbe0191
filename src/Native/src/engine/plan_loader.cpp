// Plan loading: a bounds-checked reader over the plan bytes and the validation of every tensor and op (types,
// shapes, quantization, geometry, the kernels' own limits), packing the weights for the engine's path once.
#include "engine/cpu_program.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <algorithm>
#include <cstring>

using namespace qatml;
using namespace qatml::kernels;
using namespace qatml::plan;

namespace qatml {
namespace engine {

const char* op_name(int kind) {
    switch (kind) {
        case QATML_ENGINE_OP_QUANTIZE: return "QUANTIZE";
        case QATML_ENGINE_OP_DEQUANTIZE: return "DEQUANTIZE";
        case QATML_ENGINE_OP_CONV: return "CONV";
        case QATML_ENGINE_OP_GEMM: return "GEMM";
        case QATML_ENGINE_OP_MAXPOOL: return "MAXPOOL";
        case QATML_ENGINE_OP_AVGPOOL: return "AVGPOOL";
        case QATML_ENGINE_OP_GLOBAL_AVGPOOL: return "GLOBAL_AVGPOOL";
        case QATML_ENGINE_OP_ADD: return "ADD";
        case QATML_ENGINE_OP_LUT: return "LUT";
        case QATML_ENGINE_OP_UNARY: return "UNARY";
        case QATML_ENGINE_OP_BINARY: return "BINARY";
        case QATML_ENGINE_OP_CONCAT: return "CONCAT";
        case QATML_ENGINE_OP_COPY: return "COPY";
        case QATML_ENGINE_OP_PAD: return "PAD";
        case QATML_ENGINE_OP_RESIZE: return "RESIZE";
        case QATML_ENGINE_OP_SOFTMAX: return "SOFTMAX";
        case QATML_ENGINE_OP_LAYERNORM: return "LAYERNORM";
        case QATML_ENGINE_OP_MATMUL: return "MATMUL";
        case QATML_ENGINE_OP_REDUCE_MEAN: return "REDUCE_MEAN";
        case QATML_ENGINE_OP_FLOAT_CONV: return "FLOAT_CONV";
        case QATML_ENGINE_OP_GATHER: return "GATHER";
        case QATML_ENGINE_OP_CAST: return "CAST";
        case QATML_ENGINE_OP_FLOAT_GEMM: return "FLOAT_GEMM";
        default: return "?";
    }
}

}  // namespace engine
}  // namespace qatml

using namespace qatml::engine;

namespace {

// Bounds-checked little-endian reader over the plan; every failure names the offset.
struct Reader {
    const uint8_t* data;
    int64_t size, pos;
    const char* fn;
    qatml_status status = QATML_OK;

    bool need(int64_t n, const char* what) {
        if (status != QATML_OK) return false;
        if (n < 0 || n > size - pos) {
            status = fail(QATML_INVALID_ARGUMENT, "%s: plan truncated: %s needs %lld bytes at offset %lld, %lld left", fn, what,
                          (long long)n, (long long)pos, (long long)(size - pos));
            return false;
        }
        return true;
    }
    template <typename T>
    bool get(T* out, const char* what) {
        if (!need(sizeof(T), what)) return false;
        std::memcpy(out, data + pos, sizeof(T));
        pos += sizeof(T);
        return true;
    }
    const uint8_t* bytes(int64_t n, const char* what) {
        if (!need(n, what)) return nullptr;
        const uint8_t* p = data + pos;
        pos += n;
        return p;
    }
    bool bad(const char* format, ...) __attribute__((format(printf, 2, 3))) {
        if (status != QATML_OK) return false;
        char msg[768];
        va_list args;
        va_start(args, format);
        std::vsnprintf(msg, sizeof msg, format, args);
        va_end(args);
        status = fail(QATML_INVALID_ARGUMENT, "%s: invalid plan: %s", fn, msg);
        return false;
    }
};

struct Loader {
    Reader r;
    qatml_engine* e;

    bool tensor_id(uint32_t* id, const char* what) {
        if (!r.get(id, what)) return false;
        if (*id >= e->tensors.size()) return r.bad("%s: tensor id %u out of range (%zu tensors)", what, *id, e->tensors.size());
        return true;
    }
    bool qparam(QParam* q, int32_t dtype, const char* what) {
        if (!r.get(&q->scale, what) || !r.get(&q->zp, what)) return false;
        if (!(q->scale > 0.0f) || !std::isfinite(q->scale)) return r.bad("%s: scale %g must be finite and > 0", what, double(q->scale));
        int32_t lo = 0, hi = 0;
        if (!type_range(dtype, &lo, &hi)) return r.bad("%s: tensor type %d is not quantized", what, dtype);
        if (q->zp < lo || q->zp > hi) return r.bad("%s: zero point %d is outside the %s range", what, q->zp, type_name(dtype));
        return true;
    }
    // A read of tensor `id` by op `index`: it must already be written.
    bool use(uint32_t id, int index, const char* what) {
        Tensor& t = e->tensors[id];
        if (t.def == -2) return r.bad("op %d (%s): %s tensor %u is read before any op writes it", index, op_name(e->ops[index].kind), what, id);
        t.last_use = index;
        e->ops[index].inputs.push_back(id);
        return true;
    }
    bool f32(float* v, const char* what, bool finite) {
        if (!r.get(v, what)) return false;
        if (std::isnan(*v) || (finite && !std::isfinite(*v))) return r.bad("%s = %g must be %s", what, double(*v), finite ? "finite" : "a number");
        return true;
    }
    // Per-row dims of t right-aligned against y's: each is 1 or y's (a broadcast operand).
    bool broadcasts_to(const int64_t* dims, int rank, const Tensor& y, int index, const char* what) {
        if (rank > y.rank) return r.bad("op %d (BINARY): %s has rank %d, the output %d", index, what, rank, y.rank);
        for (int i = 0; i < rank; ++i) {
            const int64_t d = dims[i], yd = y.dims[y.rank - rank + i];
            if (d != 1 && d != yd) return r.bad("op %d (BINARY): %s dim %d is %lld, the output's %lld", index, what, i, (long long)d, (long long)yd);
        }
        return true;
    }
    // INT32 / INT64 tensors are written only by CAST (or are plan inputs) and read only by GATHER and CAST: no other op's
    // kernel sees their element size.
    bool integer_tensors_stay_in_their_ops(const Op& op, int index) {
        const bool reads_ok = op.kind == QATML_ENGINE_OP_GATHER || op.kind == QATML_ENGINE_OP_CAST;
        for (uint32_t id : op.inputs)
            if (is_index_type(e->tensors[id].dtype) && !reads_ok)
                return r.bad("op %d (%s): reads the %s tensor %u (only GATHER and CAST read integer tensors)", index, op_name(op.kind),
                             type_name(e->tensors[id].dtype), id);
        if (is_index_type(e->tensors[op.y].dtype) && op.kind != QATML_ENGINE_OP_CAST)
            return r.bad("op %d (%s): writes the %s tensor %u (only CAST writes integer tensors)", index, op_name(op.kind),
                         type_name(e->tensors[op.y].dtype), op.y);
        return true;
    }
    // `floats` float32 weights (and bias) into op.data, each finite.
    bool finite_weights(Op& op, int index, int64_t floats) {
        const uint8_t* values = r.bytes(floats * 4, "weights");
        if (!values) return false;
        op.data.assign(values, values + floats * 4);
        for (int64_t i = 0; i < floats; ++i) {
            float v;
            std::memcpy(&v, values + 4 * i, 4);
            if (!std::isfinite(v)) return r.bad("op %d (%s): weight or bias %lld = %g is not finite", index, op_name(op.kind), (long long)i, double(v));
        }
        return true;
    }
    bool same_shape(const Tensor& a, const Tensor& b) { return a.rank == b.rank && std::equal(a.dims, a.dims + a.rank, b.dims); }
    // Elements of the dims [from, to) of t.
    static int64_t span(const Tensor& t, int from, int to) {
        int64_t v = 1;
        for (int i = from; i < to; ++i) v *= t.dims[i];
        return v;
    }
    bool define(uint32_t id, int index) {
        Tensor& t = e->tensors[id];
        if (t.def != -2) return r.bad("op %d (%s): tensor %u is written twice (or is a plan input)", index, op_name(e->ops[index].kind), id);
        t.def = index;
        return true;
    }
    bool i64(int64_t* v, const char* what, int64_t lo, int64_t hi) {
        if (!r.get(v, what)) return false;
        if (*v < lo || *v > hi) return r.bad("%s = %lld is outside %lld..%lld", what, (long long)*v, (long long)lo, (long long)hi);
        return true;
    }
    // The kernel's own limit on a scale ratio (check_scale_ratio), as a plan error naming the op.
    bool scale_ratio(int index, const char* num_name, float num, const char* den_name, float den) {
        char op[64];
        std::snprintf(op, sizeof op, "op %d (%s)", index, op_name(e->ops[index].kind));
        return check_scale_ratio(op, num_name, num, den_name, den) == QATML_OK || r.bad("%s", qatml_last_error());
    }
    // M, C/g, kH, kW, groups and the window geometry of a CONV or FLOAT_CONV payload.
    bool conv_header(Op& op, int64_t* m, int64_t* cpg, int64_t* groups) {
        return i64(m, "out_channels", 1, kMaxDim) && i64(cpg, "in_channels_per_group", 1, kMaxDim) && i64(&op.kh, "kernel_h", 1, 1 << 20) &&
            i64(&op.kw, "kernel_w", 1, 1 << 20) && i64(groups, "groups", 1, kMaxDim) && geometry(op, false);
    }
    // Groups divide the output channels, the input has C/g x groups channels, and y is the convolution's output.
    bool conv_shapes(Op& op, int index, const Tensor& x, const Tensor& y, int64_t m, int64_t cpg, int64_t groups) {
        if (m % groups != 0)
            return r.bad("op %d (%s): %lld output channels are not a multiple of %lld groups", index, op_name(op.kind), (long long)m, (long long)groups);
        if (x.rank == 3 && x.dims[0] != cpg * groups)
            return r.bad("op %d (%s): input has %lld channels, weights expect %lld x %lld groups", index, op_name(op.kind), (long long)x.dims[0],
                         (long long)cpg, (long long)groups);
        return spatial(op, x, y, m, index);
    }
    // *total = M * C/g * kH * kW weights, at most 2^limit_log2.
    bool conv_weight_count(const Op& op, int index, int64_t m, int64_t cpg, int limit_log2, int64_t* total) {
        int64_t t = 0;
        if (!checked_mul("plan", "kH*kW", op.kh, op.kw, &t) || !checked_mul("plan", "C/g*kH*kW", t, cpg, &t) ||
            !checked_mul("plan", "M*C/g*kH*kW", t, m, total, limit_log2))
            return r.bad("op %d (%s): weight size overflows", index, op_name(op.kind));
        return true;
    }
    bool flag(uint32_t* v, const char* what) {
        if (!r.get(v, what)) return false;
        if (*v > 1) return r.bad("%s = %u must be 0 or 1", what, *v);
        return true;
    }
    bool geometry(Op& op, bool with_kernel) {
        int64_t* f[] = {&op.kh, &op.kw, &op.p.stride_h, &op.p.stride_w, &op.p.pad_top, &op.p.pad_left, &op.p.pad_bottom,
                        &op.p.pad_right, &op.p.dilation_h, &op.p.dilation_w};
        const char* names[] = {"kernel_h", "kernel_w", "stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom",
                               "pad_right", "dilation_h", "dilation_w"};
        for (int i = with_kernel ? 0 : 2; i < 10; ++i)
            if (!i64(f[i], names[i], (i >= 4 && i < 8) ? 0 : 1, 1 << 20)) return false;
        return true;
    }
    // x [C, H, W] -> params; y must be [m, OH, OW].
    bool spatial(Op& op, const Tensor& x, const Tensor& y, int64_t m, int index) {
        if (x.rank != 3) return r.bad("op %d (%s): input must be [C, H, W], has rank %d", index, op_name(op.kind), x.rank);
        op.p.batch = 1;
        op.p.channels = x.dims[0];
        op.p.height = x.dims[1];
        op.p.width = x.dims[2];
        int64_t oh = 0, ow = 0;
        if (qatml_conv2d_output_size(&op.p, op.kh, op.kw, &oh, &ow) != QATML_OK)
            return r.bad("op %d (%s): %s", index, op_name(op.kind), qatml_last_error());
        if (y.rank != 3 || y.dims[0] != m || y.dims[1] != oh || y.dims[2] != ow)
            return r.bad("op %d (%s): output tensor must be [%lld, %lld, %lld], is rank %d [%lld, %lld, %lld]", index,
                         op_name(op.kind), (long long)m, (long long)oh, (long long)ow, y.rank, (long long)y.dims[0],
                         (long long)y.dims[1], (long long)y.dims[2]);
        return true;
    }
    bool weights(Op& op, int index, int64_t out_channels, int64_t total, int64_t scale_count, uint32_t w_type,
                 std::vector<float>* scales, std::vector<int32_t>* zps, uint32_t has_zp, uint32_t has_bias,
                 const uint8_t** data, int64_t* data_bytes) {
        if (w_type != QATML_TYPE_INT8 && w_type != QATML_TYPE_INT4)
            return r.bad("op %d (%s): weight type %u must be INT8 or INT4", index, op_name(op.kind), w_type);
        scales->resize(static_cast<size_t>(scale_count));
        for (int64_t c = 0; c < scale_count; ++c) {
            float s = 0;
            if (!r.get(&s, "weight scale")) return false;
            if (!(s > 0.0f) || !std::isfinite(s)) return r.bad("op %d (%s): weight scale %lld = %g must be finite and > 0", index, op_name(op.kind), (long long)c, double(s));
            (*scales)[static_cast<size_t>(c)] = s;
        }
        if (has_zp) {
            int32_t lo = 0, hi = 0;
            type_range(static_cast<int32_t>(w_type), &lo, &hi);
            zps->resize(static_cast<size_t>(out_channels));
            for (int64_t c = 0; c < out_channels; ++c) {
                int32_t& z = (*zps)[static_cast<size_t>(c)];
                if (!r.get(&z, "weight zero point")) return false;
                if (z < lo || z > hi) return r.bad("op %d (%s): weight zero point %lld = %d is outside the %s range", index, op_name(op.kind), (long long)c, z, type_name(static_cast<int32_t>(w_type)));
            }
        }
        if (has_bias) {
            op.bias.resize(static_cast<size_t>(out_channels));
            for (int64_t c = 0; c < out_channels; ++c)
                if (!r.get(&op.bias[static_cast<size_t>(c)], "bias")) return false;
        }
        *data_bytes = w_type == QATML_TYPE_INT8 ? total : (total + 1) / 2;
        *data = r.bytes(*data_bytes, "weights");
        if (!*data) return false;
        op.raw_weights = *data;
        op.w_type = w_type;
        if (has_zp) op.w_zero_points = *zps;
        // Multipliers as ONNX Runtime computes them: (x_scale * w_scale[c]) / y_scale in float32.
        op.mult.resize(static_cast<size_t>(scale_count));
        for (int64_t c = 0; c < scale_count; ++c) {
            const float m = (op.qx.scale * (*scales)[static_cast<size_t>(c)]) / op.qy.scale;
            if (!(m > 0.0f) || !std::isfinite(m))
                return r.bad("op %d (%s): requantization multiplier %lld = %g is not finite and > 0", index, op_name(op.kind), (long long)c, double(m));
            op.mult[static_cast<size_t>(c)] = m;
        }
        return true;
    }

    bool op_payload(Op& op, int index) {
        auto& T = e->tensors;
        switch (op.kind) {
            case QATML_ENGINE_OP_QUANTIZE:
            case QATML_ENGINE_OP_DEQUANTIZE: {
                const bool q = op.kind == QATML_ENGINE_OP_QUANTIZE;
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (q ? (x.dtype != QATML_TYPE_FLOAT32 || !is_q8(y.dtype)) : (!is_q8(x.dtype) || y.dtype != QATML_TYPE_FLOAT32))
                    return r.bad("op %d (%s): types %s -> %s are not %s", index, op_name(op.kind), type_name(x.dtype), type_name(y.dtype),
                                 q ? "float32 -> uint8/int8" : "uint8/int8 -> float32");
                if (x.elems != y.elems) return r.bad("op %d (%s): %lld elements in, %lld out", index, op_name(op.kind), (long long)x.elems, (long long)y.elems);
                return qparam(q ? &op.qy : &op.qx, q ? y.dtype : x.dtype, "quantization") && define(op.y, index);
            }
            case QATML_ENGINE_OP_CONV: {
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (!is_q8(x.dtype) || !is_q8(y.dtype)) return r.bad("op %d (CONV): input and output must be uint8/int8", index);
                if (!qparam(&op.qx, x.dtype, "x quantization") || !qparam(&op.qy, y.dtype, "y quantization")) return false;
                int64_t m = 0, cpg = 0, groups = 0;
                if (!conv_header(op, &m, &cpg, &groups)) return false;
                uint32_t w_type = 0, has_zp = 0, has_bias = 0;
                if (!r.get(&w_type, "w_type") || !flag(&has_zp, "has_w_zero_points") || !flag(&has_bias, "has_bias")) return false;
                if (!conv_shapes(op, index, x, y, m, cpg, groups)) return false;
                char what[48];
                std::snprintf(what, sizeof what, "op %d (CONV)", index);
                if (check_conv_scratch(what, op.p, cpg, op.kh, op.kw, y.dims[1]) != QATML_OK) return r.bad("%s", qatml_last_error());
                int64_t total = 0;
                if (!conv_weight_count(op, index, m, cpg, 40, &total)) return false;
                std::vector<float> scales;
                std::vector<int32_t> zps;
                const uint8_t* data = nullptr;
                int64_t data_bytes = 0;
                if (!weights(op, index, m, total, m, w_type, &scales, &zps, has_zp, has_bias, &data, &data_bytes)) return false;
                op.w = conv_pack(data, static_cast<int32_t>(w_type), m, cpg, op.kh, op.kw, groups, has_zp ? zps.data() : nullptr, e->isa);
                op.n = m;
                op.groups = groups;
                op.cpg = cpg;
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_GEMM: {
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (!is_q8(x.dtype) || !(is_q8(y.dtype) || y.dtype == QATML_TYPE_FLOAT32))
                    return r.bad("op %d (GEMM): input must be uint8/int8, output uint8/int8 or float32", index);
                if (!qparam(&op.qx, x.dtype, "x quantization")) return false;
                if (y.dtype == QATML_TYPE_FLOAT32) {
                    // MatMulIntegerToFloat: no output quantization; the multiplier is x_scale * w_scale.
                    if (!r.get(&op.qy.scale, "y scale") || !r.get(&op.qy.zp, "y zero point")) return false;
                    if (op.qy.scale != 1.0f || op.qy.zp != 0) return r.bad("op %d (GEMM): a float32 output has quantization 1, 0", index);
                } else if (!qparam(&op.qy, y.dtype, "y quantization")) {
                    return false;
                }
                uint32_t trans_b = 0, w_type = 0, has_zp = 0, has_bias = 0, scale_count = 0;
                if (!i64(&op.k, "K", 1, kMaxDim) || !i64(&op.n, "N", 1, kMaxDim) || !flag(&trans_b, "trans_b") || !r.get(&w_type, "w_type") ||
                    !flag(&has_zp, "has_w_zero_points") || !flag(&has_bias, "has_bias") || !r.get(&scale_count, "scale_count"))
                    return false;
                // x [.., K] and y [.., N]: m vectors per row (a row of K elements in any shape is one vector).
                if (x.elems != op.k && x.dims[x.rank - 1] != op.k)
                    return r.bad("op %d (GEMM): input has %lld elements per row and last dim %lld, K is %lld", index, (long long)x.elems,
                                 (long long)x.dims[x.rank - 1], (long long)op.k);
                if (y.dims[y.rank - 1] != op.n || y.elems / op.n != x.elems / op.k)
                    return r.bad("op %d (GEMM): output must be %lld vectors of N = %lld", index, (long long)(x.elems / op.k), (long long)op.n);
                if (scale_count != 1 && scale_count != op.n) return r.bad("op %d (GEMM): scale_count %u must be 1 or N = %lld", index, scale_count, (long long)op.n);
                int64_t total = 0;
                if (!checked_mul("plan", "K*N", op.k, op.n, &total)) return r.bad("op %d (GEMM): weight size overflows", index);
                std::vector<float> scales;
                std::vector<int32_t> zps;
                const uint8_t* data = nullptr;
                int64_t data_bytes = 0;
                if (!weights(op, index, op.n, total, scale_count, w_type, &scales, &zps, has_zp, has_bias, &data, &data_bytes)) return false;
                op.w = gemm_pack(data, static_cast<int32_t>(w_type), op.k, op.n, static_cast<int32_t>(trans_b), has_zp ? zps.data() : nullptr,
                                 e->isa);
                op.trans_b = trans_b;
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_MAXPOOL:
            case QATML_ENGINE_OP_AVGPOOL: {
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (!is_q8(x.dtype) || y.dtype != x.dtype) return r.bad("op %d (%s): input and output must be one uint8/int8 type", index, op_name(op.kind));
                if (!qparam(&op.qx, x.dtype, "x quantization") || !qparam(&op.qy, y.dtype, "y quantization") || !geometry(op, true)) return false;
                uint32_t cip = 0;
                if (!flag(&cip, "count_include_pad")) return false;
                op.count_include_pad = static_cast<int32_t>(cip);
                if (op.kind == QATML_ENGINE_OP_MAXPOOL && (std::memcmp(&op.qx.scale, &op.qy.scale, 4) != 0 || op.qx.zp != op.qy.zp))
                    return r.bad("op %d (MAXPOOL): input and output quantization differ", index);
                if (x.rank != 3) return r.bad("op %d (%s): input must be [C, H, W]", index, op_name(op.kind));
                if (!spatial(op, x, y, x.dims[0], index)) return false;
                char what[48];
                std::snprintf(what, sizeof what, "op %d (%s)", index, op_name(op.kind));
                if (check_pool_scratch(what, op.p) != QATML_OK) return r.bad("%s", qatml_last_error());
                if (op.kind == QATML_ENGINE_OP_AVGPOOL) {
                    if (op.kh * op.kw > kMaxAverageCells)
                        return r.bad("op %d (AVGPOOL): the %lldx%lld window exceeds 2^23 cells", index, (long long)op.kh, (long long)op.kw);
                    if (!scale_ratio(index, "x_scale", op.qx.scale, "y_scale", op.qy.scale)) return false;
                }
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_GLOBAL_AVGPOOL: {
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (!is_q8(x.dtype) || y.dtype != x.dtype) return r.bad("op %d (GLOBAL_AVGPOOL): input and output must be one uint8/int8 type", index);
                if (!qparam(&op.qx, x.dtype, "x quantization") || !qparam(&op.qy, y.dtype, "y quantization")) return false;
                if (x.rank != 3) return r.bad("op %d (GLOBAL_AVGPOOL): input must be [C, H, W]", index);
                if (y.elems != x.dims[0]) return r.bad("op %d (GLOBAL_AVGPOOL): output must have %lld elements", index, (long long)x.dims[0]);
                if (x.dims[1] * x.dims[2] > kMaxAverageCells)
                    return r.bad("op %d (GLOBAL_AVGPOOL): the %lldx%lld plane exceeds 2^23 cells", index, (long long)x.dims[1], (long long)x.dims[2]);
                return scale_ratio(index, "x_scale", op.qx.scale, "y_scale", op.qy.scale) && define(op.y, index);
            }
            case QATML_ENGINE_OP_ADD: {
                if (!tensor_id(&op.x, "a") || !tensor_id(&op.b, "b") || !tensor_id(&op.y, "y") || !use(op.x, index, "a") || !use(op.b, index, "b"))
                    return false;
                const Tensor &a = T[op.x], &b = T[op.b], &y = T[op.y];
                if (!is_q8(a.dtype) || b.dtype != a.dtype || y.dtype != a.dtype) return r.bad("op %d (ADD): a, b and y must be one uint8/int8 type", index);
                if (b.elems != a.elems || y.elems != a.elems) return r.bad("op %d (ADD): element counts differ (%lld, %lld, %lld)", index, (long long)a.elems, (long long)b.elems, (long long)y.elems);
                return qparam(&op.qx, a.dtype, "a quantization") && qparam(&op.qb, b.dtype, "b quantization") &&
                    qparam(&op.qy, y.dtype, "y quantization") && scale_ratio(index, "a_scale", op.qx.scale, "y_scale", op.qy.scale) &&
                    scale_ratio(index, "b_scale", op.qb.scale, "y_scale", op.qy.scale) && define(op.y, index);
            }
            case QATML_ENGINE_OP_LUT: {
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (!is_q8(x.dtype) || !is_q8(y.dtype)) return r.bad("op %d (LUT): input and output must be uint8/int8", index);
                if (x.elems != y.elems) return r.bad("op %d (LUT): %lld elements in, %lld out", index, (long long)x.elems, (long long)y.elems);
                const uint8_t* table = r.bytes(256, "lut");
                if (!table) return false;
                std::memcpy(op.lut, table, 256);
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_UNARY: {
                uint32_t func = 0;
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x") || !r.get(&func, "func") ||
                    !f32(&op.alpha, "alpha", false) || !f32(&op.beta, "beta", false))
                    return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (x.dtype != QATML_TYPE_FLOAT32 || y.dtype != QATML_TYPE_FLOAT32) return r.bad("op %d (UNARY): input and output must be float32", index);
                if (x.elems != y.elems) return r.bad("op %d (UNARY): %lld elements in, %lld out", index, (long long)x.elems, (long long)y.elems);
                if (func < QATML_UNARY_RELU || func > QATML_UNARY_IDENTITY) return r.bad("op %d (UNARY): unknown function %u", index, func);
                op.func = static_cast<int32_t>(func);
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_BINARY: {
                uint32_t func = 0, b_const = 0;
                if (!tensor_id(&op.x, "a") || !tensor_id(&op.b, "b") || !tensor_id(&op.y, "y") || !use(op.x, index, "a") || !r.get(&func, "func") ||
                    !flag(&b_const, "b_const"))
                    return false;
                const Tensor &a = T[op.x], &y = T[op.y];
                const bool is_float = y.dtype == QATML_TYPE_FLOAT32;
                if (a.dtype != y.dtype) return r.bad("op %d (BINARY): a and y must have one type", index);
                if (func < QATML_BINARY_ADD || func > QATML_BINARY_MIN) return r.bad("op %d (BINARY): unknown function %u", index, func);
                if (!is_float && func != QATML_BINARY_ADD && func != QATML_BINARY_MUL)
                    return r.bad("op %d (BINARY): 8-bit operands support ADD and MUL only, not %u", index, func);
                op.func = static_cast<int32_t>(func);
                if (!broadcasts_to(a.dims, a.rank, y, index, "a")) return false;
                if (b_const) {
                    uint32_t rank = 0;
                    if (!r.get(&rank, "b rank")) return false;
                    if (rank < 1 || rank > 4) return r.bad("op %d (BINARY): constant rank %u outside 1..4", index, rank);
                    int64_t dims[4], count = 1;
                    for (uint32_t d = 0; d < rank; ++d) {
                        if (!i64(&dims[d], "constant dim", 1, kMaxDim)) return false;
                        count *= dims[d];
                        if (count > (int64_t(1) << 31)) return r.bad("op %d (BINARY): the constant exceeds 2^31 elements", index);
                        op.params.push_back(dims[d]);
                    }
                    if (!broadcasts_to(dims, static_cast<int>(rank), y, index, "constant b")) return false;
                    const uint8_t* values = r.bytes(count * (is_float ? 4 : 1), "constant values");
                    if (!values) return false;
                    op.data.assign(values, values + count * (is_float ? 4 : 1));
                    op.b = op.x;  // no tensor: the constant travels in op.data
                    op.b_const = true;
                } else {
                    if (!use(op.b, index, "b")) return false;
                    const Tensor& b = T[op.b];
                    if (b.dtype != a.dtype) return r.bad("op %d (BINARY): a and b must have one type", index);
                    if (!broadcasts_to(b.dims, b.rank, y, index, "b")) return false;
                }
                // y is the broadcast shape: each of its dims is a's or b's.
                for (int i = 0; i < y.rank; ++i) {
                    const int ai = i - (y.rank - a.rank);
                    const int64_t ad = ai >= 0 ? a.dims[ai] : 1;
                    int64_t bd = 1;
                    if (b_const) {
                        const int bi = i - (y.rank - static_cast<int>(op.params.size()));
                        bd = bi >= 0 ? op.params[static_cast<size_t>(bi)] : 1;
                    } else {
                        const Tensor& b = T[op.b];
                        const int bi = i - (y.rank - b.rank);
                        bd = bi >= 0 ? b.dims[bi] : 1;
                    }
                    if (y.dims[i] != std::max(ad, bd)) return r.bad("op %d (BINARY): output dim %d is %lld, the broadcast gives %lld", index, i, (long long)y.dims[i], (long long)std::max(ad, bd));
                }
                if (!is_float) {
                    if (!qparam(&op.qx, a.dtype, "a quantization") || !qparam(&op.qb, a.dtype, "b quantization") || !qparam(&op.qy, y.dtype, "y quantization"))
                        return false;
                    if (func == QATML_BINARY_ADD) {
                        if (!scale_ratio(index, "a_scale", op.qx.scale, "y_scale", op.qy.scale) || !scale_ratio(index, "b_scale", op.qb.scale, "y_scale", op.qy.scale))
                            return false;
                    } else {
                        const float ratio = (op.qx.scale * op.qb.scale) / op.qy.scale;
                        if (!(ratio > 0.0f) || !std::isfinite(ratio)) return r.bad("op %d (BINARY): (a_scale * b_scale) / y_scale = %g is not finite and > 0", index, double(ratio));
                    }
                }
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_CONCAT: {
                uint32_t axis = 0, count = 0;
                if (!tensor_id(&op.y, "y") || !r.get(&axis, "axis") || !r.get(&count, "count")) return false;
                const Tensor& y = T[op.y];
                if (axis >= static_cast<uint32_t>(y.rank)) return r.bad("op %d (CONCAT): axis %u outside the output's rank %d", index, axis, y.rank);
                if (count < 1 || count > kMaxIo) return r.bad("op %d (CONCAT): %u inputs outside 1..%u", index, count, kMaxIo);
                int64_t total = 0;
                for (uint32_t i = 0; i < count; ++i) {
                    uint32_t x = 0, has_table = 0;
                    if (!tensor_id(&x, "input") || !use(x, index, "input") || !flag(&has_table, "has_table")) return false;
                    const Tensor& t = T[x];
                    if (t.dtype != y.dtype || t.rank != y.rank) return r.bad("op %d (CONCAT): input %u has another type or rank than the output", index, i);
                    for (int d = 0; d < y.rank; ++d)
                        if (d != static_cast<int>(axis) && t.dims[d] != y.dims[d]) return r.bad("op %d (CONCAT): input %u dim %d is %lld, the output's %lld", index, i, d, (long long)t.dims[d], (long long)y.dims[d]);
                    total += t.dims[axis];
                    if (has_table && !is_q8(y.dtype)) return r.bad("op %d (CONCAT): tables need 8-bit inputs", index);
                    op.params.push_back(has_table);
                    if (has_table) {
                        const uint8_t* table = r.bytes(256, "table");
                        if (!table) return false;
                        op.data.insert(op.data.end(), table, table + 256);
                    }
                }
                if (total != y.dims[axis]) return r.bad("op %d (CONCAT): the inputs' axis sizes add up to %lld, the output's is %lld", index, (long long)total, (long long)y.dims[axis]);
                op.n = axis;
                op.x = op.inputs[0];
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_COPY: {
                uint32_t rank = 0;
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x") || !r.get(&rank, "rank")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (x.dtype != y.dtype) return r.bad("op %d (COPY): input and output must have one type", index);
                if (rank < 1 || rank > 6) return r.bad("op %d (COPY): rank %u outside 1..6", index, rank);
                int64_t dims[6], strides[6], offset = 0, count = 1;
                for (uint32_t d = 0; d < rank; ++d)
                    if (!i64(&dims[d], "dim", 1, kMaxDim) || !checked_mul("plan", "COPY elements", count, dims[d], &count)) return r.bad("op %d (COPY): dims overflow", index);
                if (!i64(&offset, "offset", 0, kMaxDim)) return false;
                __int128 lo = offset, hi = offset;  // six reaches of up to 2^62 each
                for (uint32_t d = 0; d < rank; ++d) {
                    if (!i64(&strides[d], "stride", -kMaxDim, kMaxDim)) return false;
                    const __int128 reach = static_cast<__int128>(dims[d] - 1) * strides[d];
                    (reach < 0 ? lo : hi) += reach;
                }
                if (count != y.elems) return r.bad("op %d (COPY): %lld elements copied, the output has %lld", index, (long long)count, (long long)y.elems);
                if (lo < 0 || hi >= x.elems) return r.bad("op %d (COPY): reads past a row of %lld elements", index, (long long)x.elems);
                op.params.assign(dims, dims + rank);
                op.params.insert(op.params.end(), strides, strides + rank);
                op.k = offset;
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_PAD: {
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (x.dtype != y.dtype || x.rank != y.rank) return r.bad("op %d (PAD): input and output must have one type and rank", index);
                int64_t pads[12];
                for (int i = 0; i < 2 * x.rank; ++i)
                    if (!i64(&pads[i], "pad", 0, 1 << 20)) return false;
                for (int i = 0; i < x.rank; ++i)
                    if (!i64(&pads[2 * x.rank + i], "step", 1, 1 << 20)) return false;
                for (int d = 0; d < x.rank; ++d)
                    if (y.dims[d] != pads[d] + (x.dims[d] - 1) * pads[2 * x.rank + d] + 1 + pads[x.rank + d]) return r.bad("op %d (PAD): output dim %d must be %lld", index, d, (long long)(pads[d] + (x.dims[d] - 1) * pads[2 * x.rank + d] + 1 + pads[x.rank + d]));
                uint32_t value = 0;
                if (!r.get(&value, "value")) return false;
                if (is_q8(y.dtype) && value > 0xFF) return r.bad("op %d (PAD): an 8-bit value has no bits above the low byte (0x%x)", index, value);
                op.params.assign(pads, pads + 3 * x.rank);
                op.data.resize(4);
                std::memcpy(op.data.data(), &value, 4);
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_RESIZE: {
                uint32_t mode = 0;
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x") || !r.get(&mode, "mode")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (x.dtype != y.dtype || x.rank != 3 || y.rank != 3 || x.dims[0] != y.dims[0]) return r.bad("op %d (RESIZE): input and output must be [C, H, W] of one type and C", index);
                if (mode != 1 && mode != 2) return r.bad("op %d (RESIZE): mode %u must be 1 (nearest) or 2 (bilinear)", index, mode);
                const int64_t oh = y.dims[1], ow = y.dims[2];
                op.func = static_cast<int32_t>(mode);
                auto index_at = [&](int64_t limit, const char* what) {
                    int32_t v = 0;
                    if (!r.get(&v, what)) return false;
                    if (v < 0 || v >= limit) return r.bad("op %d (RESIZE): %s %d outside 0..%lld", index, what, v, (long long)(limit - 1));
                    op.params.push_back(v);
                    return true;
                };
                auto weight = [&]() {
                    float w = 0;
                    if (!r.get(&w, "weight")) return false;
                    if (!(w >= 0.0f && w <= 1.0f)) return r.bad("op %d (RESIZE): weight %g outside 0..1", index, double(w));
                    op.data.insert(op.data.end(), reinterpret_cast<uint8_t*>(&w), reinterpret_cast<uint8_t*>(&w) + 4);
                    return true;
                };
                for (int64_t i = 0; i < oh; ++i)
                    if (!index_at(x.dims[1], "row") || (mode == 2 && (!index_at(x.dims[1], "row") || !weight()))) return false;
                for (int64_t i = 0; i < ow; ++i)
                    if (!index_at(x.dims[2], "column") || (mode == 2 && (!index_at(x.dims[2], "column") || !weight()))) return false;
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_SOFTMAX:
            case QATML_ENGINE_OP_LAYERNORM: {
                uint32_t axis = 0;
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x") || !r.get(&axis, "axis")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (x.dtype != QATML_TYPE_FLOAT32 || !same_shape(x, y) || y.dtype != QATML_TYPE_FLOAT32) return r.bad("op %d (%s): input and output must be float32 of one shape", index, op_name(op.kind));
                if (axis >= static_cast<uint32_t>(x.rank)) return r.bad("op %d (%s): axis %u outside the rank %d", index, op_name(op.kind), axis, x.rank);
                op.n = axis;
                if (op.kind == QATML_ENGINE_OP_SOFTMAX) return define(op.y, index);
                uint32_t has_bias = 0;
                if (!f32(&op.alpha, "epsilon", true) || !flag(&has_bias, "has_bias")) return false;
                if (op.alpha < 0.0f) return r.bad("op %d (LAYERNORM): epsilon %g is negative", index, double(op.alpha));
                const int64_t n = span(x, static_cast<int>(axis), x.rank);
                const uint8_t* values = r.bytes(n * 4 * (has_bias ? 2 : 1), "scale and bias");
                if (!values) return false;
                op.data.assign(values, values + n * 4 * (has_bias ? 2 : 1));
                for (int64_t i = 0; i < n * (has_bias ? 2 : 1); ++i) {
                    float v;
                    std::memcpy(&v, values + 4 * i, 4);
                    if (!std::isfinite(v)) return r.bad("op %d (LAYERNORM): scale or bias %lld = %g is not finite", index, (long long)i, double(v));
                }
                op.count_include_pad = static_cast<int32_t>(has_bias);
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_MATMUL: {
                if (!tensor_id(&op.x, "a") || !tensor_id(&op.b, "b") || !tensor_id(&op.y, "y") || !use(op.x, index, "a") || !use(op.b, index, "b")) return false;
                const Tensor &a = T[op.x], &b = T[op.b], &y = T[op.y];
                const bool is_float = y.dtype == QATML_TYPE_FLOAT32;
                if (is_float ? (a.dtype != QATML_TYPE_FLOAT32 || b.dtype != QATML_TYPE_FLOAT32) : (!is_q8(a.dtype) || !is_q8(b.dtype) || !is_q8(y.dtype)))
                    return r.bad("op %d (MATMUL): operands and output must be float32, or 8-bit", index);
                if (a.rank < 2 || b.rank < 2 || y.rank != a.rank) return r.bad("op %d (MATMUL): a [.., M, K], b [.., K, N] and y [.., M, N] needed", index);
                const int64_t m = a.dims[a.rank - 2], k = a.dims[a.rank - 1], n = b.dims[b.rank - 1];
                if (b.dims[b.rank - 2] != k || y.dims[y.rank - 2] != m || y.dims[y.rank - 1] != n)
                    return r.bad("op %d (MATMUL): [%lld, %lld] x [%lld, %lld] does not give the output's [%lld, %lld]", index, (long long)m, (long long)k,
                                 (long long)b.dims[b.rank - 2], (long long)n, (long long)y.dims[y.rank - 2], (long long)y.dims[y.rank - 1]);
                for (int d = 0; d < a.rank - 2; ++d)
                    if (y.dims[d] != a.dims[d]) return r.bad("op %d (MATMUL): output dim %d differs from a's", index, d);
                if (b.rank != 2 && (b.rank != a.rank || !std::equal(a.dims, a.dims + a.rank - 2, b.dims)))
                    return r.bad("op %d (MATMUL): b's leading dims must equal a's (or b be one matrix)", index);
                if (!is_float) {
                    if (k > 32768) return r.bad("op %d (MATMUL): K = %lld exceeds 32768 (an int32 sum of 8-bit products)", index, (long long)k);
                    if (!qparam(&op.qx, a.dtype, "a quantization") || !qparam(&op.qb, b.dtype, "b quantization") || !qparam(&op.qy, y.dtype, "y quantization")) return false;
                    const float mult = (op.qx.scale * op.qb.scale) / op.qy.scale;
                    if (!(mult > 0.0f) || !std::isfinite(mult)) return r.bad("op %d (MATMUL): (a_scale * b_scale) / y_scale = %g is not finite and > 0", index, double(mult));
                }
                op.k = k;
                op.n = n;
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_REDUCE_MEAN: {
                uint32_t axis = 0, count = 0;
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x") || !r.get(&axis, "axis") || !r.get(&count, "count")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (x.dtype != QATML_TYPE_FLOAT32 || y.dtype != QATML_TYPE_FLOAT32) return r.bad("op %d (REDUCE_MEAN): input and output must be float32", index);
                if (count < 1 || axis >= static_cast<uint32_t>(x.rank) || count > static_cast<uint32_t>(x.rank) - axis) return r.bad("op %d (REDUCE_MEAN): dims %u..%u outside the rank %d", index, axis, axis + count, x.rank);
                const int64_t n = span(x, static_cast<int>(axis), static_cast<int>(axis + count));
                if (y.elems * n != x.elems) return r.bad("op %d (REDUCE_MEAN): the output has %lld elements, not %lld", index, (long long)y.elems, (long long)(x.elems / n));
                op.n = axis;
                op.k = count;
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_FLOAT_CONV: {
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (x.dtype != QATML_TYPE_FLOAT32 || y.dtype != QATML_TYPE_FLOAT32) return r.bad("op %d (FLOAT_CONV): input and output must be float32", index);
                int64_t m = 0, cpg = 0, groups = 0;
                if (!conv_header(op, &m, &cpg, &groups)) return false;
                uint32_t has_bias = 0;
                if (!flag(&has_bias, "has_bias")) return false;
                if (!conv_shapes(op, index, x, y, m, cpg, groups)) return false;
                int64_t total = 0;
                if (!conv_weight_count(op, index, m, cpg, 31, &total)) return false;
                if (!finite_weights(op, index, total + (has_bias ? m : 0))) return false;
                op.n = m;
                op.groups = groups;
                op.cpg = cpg;
                op.count_include_pad = static_cast<int32_t>(has_bias);
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_GATHER: {
                uint32_t constant = 0;
                if (!tensor_id(&op.y, "y") || !flag(&constant, "constant_indices")) return false;
                const Tensor& y = T[op.y];
                if (y.dtype != QATML_TYPE_FLOAT32 && !is_q8(y.dtype)) return r.bad("op %d (GATHER): output must be float32, uint8 or int8", index);
                int64_t count = 0;
                if (constant) {
                    if (!i64(&count, "index count", 1, kMaxDim)) return false;
                    if (count > (r.size - r.pos) / 8) return r.bad("op %d (GATHER): %lld constant indices exceed the payload", index, (long long)count);
                    op.params.resize(static_cast<size_t>(count));
                    for (int64_t i = 0; i < count; ++i)
                        if (!r.get(&op.params[static_cast<size_t>(i)], "index")) return false;
                    op.x = op.y;  // no tensor read
                } else {
                    if (!tensor_id(&op.x, "indices") || !use(op.x, index, "indices")) return false;
                    const Tensor& ids = T[op.x];
                    if (ids.dtype != QATML_TYPE_INT32 && ids.dtype != QATML_TYPE_INT64) return r.bad("op %d (GATHER): indices must be int32 or int64", index);
                    count = ids.elems;
                }
                int64_t rows = 0, row_elements = 0, table_elements = 0;
                if (!i64(&rows, "table rows", 1, kMaxDim) || !i64(&row_elements, "row elements", 1, kMaxDim)) return false;
                if (!checked_mul("plan", "table elements", rows, row_elements, &table_elements, 31))
                    return r.bad("op %d (GATHER): the table exceeds 2^31 elements", index);
                int64_t gathered = 0;
                if (!checked_mul("plan", "gathered elements", count, row_elements, &gathered) || gathered != y.elems)
                    return r.bad("op %d (GATHER): %lld indices of %lld elements do not make the output's %lld", index, (long long)count,
                                 (long long)row_elements, (long long)y.elems);
                for (int64_t i = 0; i < static_cast<int64_t>(op.params.size()); ++i)
                    if (op.params[static_cast<size_t>(i)] < -rows || op.params[static_cast<size_t>(i)] >= rows)
                        return r.bad("op %d (GATHER): constant index %lld = %lld is outside -%lld..%lld", index, (long long)i,
                                     (long long)op.params[static_cast<size_t>(i)], (long long)rows, (long long)(rows - 1));
                const int64_t bytes = table_elements * elem_size(y.dtype);
                const uint8_t* table = r.bytes(bytes, "table");
                if (!table) return false;
                op.data.assign(table, table + bytes);
                if (y.dtype == QATML_TYPE_FLOAT32)
                    for (int64_t i = 0; i < table_elements; ++i) {
                        float v;
                        std::memcpy(&v, table + 4 * i, 4);
                        if (std::isnan(v)) return r.bad("op %d (GATHER): table value %lld is NaN", index, (long long)i);
                    }
                op.k = count;
                op.n = rows;
                op.func = static_cast<int32_t>(constant);
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_CAST: {
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (x.dtype != QATML_TYPE_INT32 && x.dtype != QATML_TYPE_INT64) return r.bad("op %d (CAST): input must be int32 or int64", index);
                if ((y.dtype != QATML_TYPE_FLOAT32 && y.dtype != QATML_TYPE_INT32 && y.dtype != QATML_TYPE_INT64) || y.dtype == x.dtype)
                    return r.bad("op %d (CAST): output must be float32, int32 or int64 of another type than the input", index);
                if (x.elems != y.elems) return r.bad("op %d (CAST): %lld elements in, %lld out", index, (long long)x.elems, (long long)y.elems);
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_FLOAT_GEMM: {
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (x.dtype != QATML_TYPE_FLOAT32 || y.dtype != QATML_TYPE_FLOAT32) return r.bad("op %d (FLOAT_GEMM): input and output must be float32", index);
                uint32_t has_bias = 0;
                if (!i64(&op.k, "K", 1, kMaxDim) || !i64(&op.n, "N", 1, kMaxDim) || !flag(&has_bias, "has_bias")) return false;
                if (x.dims[x.rank - 1] != op.k || y.dims[y.rank - 1] != op.n || y.elems / op.n != x.elems / op.k)
                    return r.bad("op %d (FLOAT_GEMM): x must be [.., K = %lld] and y the same vectors of N = %lld", index, (long long)op.k, (long long)op.n);
                int64_t total = 0;
                if (!checked_mul("plan", "K*N", op.k, op.n, &total, 31)) return r.bad("op %d (FLOAT_GEMM): the weights exceed 2^31 elements", index);
                if (!finite_weights(op, index, total + (has_bias ? op.n : 0))) return false;
                op.count_include_pad = static_cast<int32_t>(has_bias);
                return define(op.y, index);
            }
            default:
                return r.bad("op %d: unknown kind %d", index, op.kind);
        }
    }

    bool load() {
        char magic[4];
        uint32_t version = 0, tensor_count = 0, op_count = 0, input_count = 0, output_count = 0;
        if (!r.get(&magic, "magic")) return false;
        if (std::memcmp(magic, "QEP1", 4) != 0) return r.bad("bad magic (not a qatml engine plan)");
        if (!r.get(&version, "version") || !r.get(&tensor_count, "tensor_count") || !r.get(&op_count, "op_count") ||
            !r.get(&input_count, "input_count") || !r.get(&output_count, "output_count"))
            return false;
        if (version != QATML_ENGINE_PLAN_VERSION) return r.bad("plan version %u, this library reads version %d", version, QATML_ENGINE_PLAN_VERSION);
        if (tensor_count < 2 || tensor_count > kMaxTensors) return r.bad("tensor_count %u outside 2..%u", tensor_count, kMaxTensors);
        if (op_count < 1 || op_count > kMaxOps) return r.bad("op_count %u outside 1..%u", op_count, kMaxOps);
        if (input_count < 1 || input_count > kMaxIo || output_count < 1 || output_count > kMaxIo)
            return r.bad("input_count %u / output_count %u outside 1..%u", input_count, output_count, kMaxIo);
        // Each tensor needs at least 16 bytes, each op 8: reject impossible counts before allocating.
        if (int64_t(tensor_count) * 16 + int64_t(op_count) * 8 > r.size - r.pos) return r.bad("counts exceed the plan's size");
        e->tensors.resize(tensor_count);
        for (uint32_t i = 0; i < tensor_count; ++i) {
            Tensor& t = e->tensors[i];
            uint32_t dtype = 0, rank = 0;
            if (!r.get(&dtype, "tensor dtype") || !r.get(&rank, "tensor rank")) return false;
            if (dtype != QATML_TYPE_FLOAT32 && dtype != QATML_TYPE_UINT8 && dtype != QATML_TYPE_INT8 && dtype != QATML_TYPE_INT32 &&
                dtype != QATML_TYPE_INT64)
                return r.bad("tensor %u: dtype %u must be FLOAT32, UINT8, INT8, INT32 or INT64", i, dtype);
            if (rank < 1 || rank > 4) return r.bad("tensor %u: rank %u outside 1..4", i, rank);
            t.dtype = static_cast<int32_t>(dtype);
            t.rank = static_cast<int>(rank);
            t.elems = 1;
            for (uint32_t d = 0; d < rank; ++d) {
                if (!i64(&t.dims[d], "tensor dim", 1, kMaxDim)) return false;
                if (!checked_mul("plan", "tensor elements", t.elems, t.dims[d], &t.elems)) return r.bad("tensor %u: element count overflows", i);
            }
            t.bytes = t.elems * elem_size(t.dtype);
        }
        e->inputs.resize(input_count);
        for (uint32_t i = 0; i < input_count; ++i) {
            uint32_t id = 0;
            if (!tensor_id(&id, "input")) return false;
            Tensor& t = e->tensors[id];
            if (t.dtype != QATML_TYPE_FLOAT32 && !is_index_type(t.dtype)) return r.bad("input %u (tensor %u) must be FLOAT32, INT32 or INT64", i, id);
            if (t.input_index >= 0) return r.bad("tensor %u is listed as an input twice", id);
            t.input_index = static_cast<int>(i);
            t.def = -1;
            e->inputs[i] = id;
        }
        e->outputs.resize(output_count);
        for (uint32_t i = 0; i < output_count; ++i) {
            uint32_t id = 0;
            if (!tensor_id(&id, "output")) return false;
            Tensor& t = e->tensors[id];
            if (t.dtype != QATML_TYPE_FLOAT32) return r.bad("output %u (tensor %u) must be FLOAT32", i, id);
            if (t.input_index >= 0 || t.output_index >= 0) return r.bad("output %u (tensor %u) is also an input or another output", i, id);
            t.output_index = static_cast<int>(i);
            e->outputs[i] = id;
        }
        e->ops.resize(op_count);
        for (uint32_t i = 0; i < op_count; ++i) {
            Op& op = e->ops[i];
            uint32_t kind = 0, payload = 0;
            if (!r.get(&kind, "op kind") || !r.get(&payload, "op payload size")) return false;
            if (payload > r.size - r.pos) return r.bad("plan truncated: op %u's payload of %u bytes runs past the plan's end", i, payload);
            op.kind = static_cast<int>(kind);
            Reader whole = r;
            r.size = r.pos + payload;  // the payload alone
            const bool ok = op_payload(op, static_cast<int>(i));
            if (ok && r.pos != r.size) r.bad("op %u (%s): payload has %lld bytes, %lld were read", i, op_name(op.kind), (long long)payload, (long long)(payload - (r.size - r.pos)));
            whole.pos = r.pos;
            whole.status = r.status;
            r = whole;
            if (!ok || r.status != QATML_OK) return false;
            if (!integer_tensors_stay_in_their_ops(op, static_cast<int>(i))) return false;
        }
        if (r.pos != r.size) return r.bad("%lld trailing bytes after the last op", (long long)(r.size - r.pos));
        for (uint32_t i = 0; i < output_count; ++i)
            if (e->tensors[e->outputs[i]].def < 0) return r.bad("output %u (tensor %u) is never written", i, e->outputs[i]);
        return true;
    }
};

}  // namespace

namespace qatml {
namespace engine {

qatml_status load_plan(qatml_engine* e, const uint8_t* plan, int64_t plan_bytes, const char* fn) {
    Loader loader{Reader{plan, plan_bytes, 0, fn}, e};
    if (!loader.load()) return loader.r.status != QATML_OK ? loader.r.status : fail(QATML_INTERNAL, "%s: load failed", fn);
    return QATML_OK;
}

}  // namespace engine
}  // namespace qatml
