// The INT8 inference engine (qatml_engine.h): a validated plan of integer ops over the kernels of
// src/kernels, weights packed at load, activation memory planned by liveness, one call per batch.
#include "engine/engine_internal.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace qatml;
using namespace qatml::kernels;
using namespace qatml::plan;

namespace {

constexpr uint32_t kMaxTensors = 1u << 16;
constexpr uint32_t kMaxOps = 1u << 16;
constexpr uint32_t kMaxIo = 1024;
constexpr int64_t kMaxDim = int64_t(1) << 31;
constexpr int64_t kAlign = 64;

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
        default: return "?";
    }
}

bool is_q8(int32_t t) { return t == QATML_TYPE_UINT8 || t == QATML_TYPE_INT8; }

// QATML_ENGINE_PROFILE=1 (read once): every run times each op; the totals per op go to stderr when
// the engine is destroyed or, for engines still alive, at process exit.
bool profiling() {
    static const bool on = [] {
        const char* v = std::getenv("QATML_ENGINE_PROFILE");
        return v && *v && std::strcmp(v, "0") != 0;
    }();
    return on;
}

}  // namespace

namespace {

// ---- loading -------------------------------------------------------------------------------------

struct Loader {
    Reader r;
    qatml_engine* e;
    const qatml_context* ctx;

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
        return true;
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
            zps->resize(static_cast<size_t>(out_channels));
            for (int64_t c = 0; c < out_channels; ++c)
                if (!r.get(&(*zps)[static_cast<size_t>(c)], "weight zero point")) return false;
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
                if (!i64(&m, "out_channels", 1, kMaxDim) || !i64(&cpg, "in_channels_per_group", 1, kMaxDim) || !i64(&op.kh, "kernel_h", 1, 1 << 20) ||
                    !i64(&op.kw, "kernel_w", 1, 1 << 20) || !i64(&groups, "groups", 1, kMaxDim) || !geometry(op, false))
                    return false;
                uint32_t w_type = 0, has_zp = 0, has_bias = 0;
                if (!r.get(&w_type, "w_type") || !flag(&has_zp, "has_w_zero_points") || !flag(&has_bias, "has_bias")) return false;
                if (m % groups != 0) return r.bad("op %d (CONV): %lld output channels are not a multiple of %lld groups", index, (long long)m, (long long)groups);
                if (x.rank == 3 && x.dims[0] != cpg * groups)
                    return r.bad("op %d (CONV): input has %lld channels, weights expect %lld x %lld groups", index, (long long)x.dims[0], (long long)cpg, (long long)groups);
                if (!spatial(op, x, y, m, index)) return false;
                char what[48];
                std::snprintf(what, sizeof what, "op %d (CONV)", index);
                if (check_conv_scratch(what, op.p, cpg, op.kh, op.kw, y.dims[1]) != QATML_OK) return r.bad("%s", qatml_last_error());
                int64_t total = 0, t = 0;
                if (!checked_mul("plan", "kH*kW", op.kh, op.kw, &t) || !checked_mul("plan", "C/g*kH*kW", t, cpg, &t) ||
                    !checked_mul("plan", "M*C/g*kH*kW", t, m, &total))
                    return r.bad("op %d (CONV): weight size overflows", index);
                std::vector<float> scales;
                std::vector<int32_t> zps;
                const uint8_t* data = nullptr;
                int64_t data_bytes = 0;
                if (!weights(op, index, m, total, m, w_type, &scales, &zps, has_zp, has_bias, &data, &data_bytes)) return false;
                if (qatml_conv_pack_weights(ctx, data, static_cast<int32_t>(w_type), m, cpg, op.kh, op.kw, groups,
                                            has_zp ? zps.data() : nullptr, &op.w) != QATML_OK)
                    return r.bad("op %d (CONV): %s", index, qatml_last_error());
                op.n = m;
                op.groups = groups;
                op.cpg = cpg;
                return define(op.y, index);
            }
            case QATML_ENGINE_OP_GEMM: {
                if (!tensor_id(&op.x, "x") || !tensor_id(&op.y, "y") || !use(op.x, index, "x")) return false;
                const Tensor &x = T[op.x], &y = T[op.y];
                if (!is_q8(x.dtype) || !is_q8(y.dtype)) return r.bad("op %d (GEMM): input and output must be uint8/int8", index);
                if (!qparam(&op.qx, x.dtype, "x quantization") || !qparam(&op.qy, y.dtype, "y quantization")) return false;
                uint32_t trans_b = 0, w_type = 0, has_zp = 0, has_bias = 0, scale_count = 0;
                if (!i64(&op.k, "K", 1, kMaxDim) || !i64(&op.n, "N", 1, kMaxDim) || !flag(&trans_b, "trans_b") || !r.get(&w_type, "w_type") ||
                    !flag(&has_zp, "has_w_zero_points") || !flag(&has_bias, "has_bias") || !r.get(&scale_count, "scale_count"))
                    return false;
                if (x.elems != op.k) return r.bad("op %d (GEMM): input has %lld elements per row, K is %lld", index, (long long)x.elems, (long long)op.k);
                if (y.elems != op.n) return r.bad("op %d (GEMM): output has %lld elements per row, N is %lld", index, (long long)y.elems, (long long)op.n);
                if (scale_count != 1 && scale_count != op.n) return r.bad("op %d (GEMM): scale_count %u must be 1 or N = %lld", index, scale_count, (long long)op.n);
                int64_t total = 0;
                if (!checked_mul("plan", "K*N", op.k, op.n, &total)) return r.bad("op %d (GEMM): weight size overflows", index);
                std::vector<float> scales;
                std::vector<int32_t> zps;
                const uint8_t* data = nullptr;
                int64_t data_bytes = 0;
                if (!weights(op, index, op.n, total, scale_count, w_type, &scales, &zps, has_zp, has_bias, &data, &data_bytes)) return false;
                if (qatml_gemm_pack_b(ctx, data, static_cast<int32_t>(w_type), op.k, op.n, static_cast<int32_t>(trans_b),
                                      has_zp ? zps.data() : nullptr, &op.w) != QATML_OK)
                    return r.bad("op %d (GEMM): %s", index, qatml_last_error());
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
            if (dtype != QATML_TYPE_FLOAT32 && dtype != QATML_TYPE_UINT8 && dtype != QATML_TYPE_INT8)
                return r.bad("tensor %u: dtype %u must be FLOAT32, UINT8 or INT8", i, dtype);
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
            if (t.dtype != QATML_TYPE_FLOAT32) return r.bad("input %u (tensor %u) must be FLOAT32", i, id);
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
        }
        if (r.pos != r.size) return r.bad("%lld trailing bytes after the last op", (long long)(r.size - r.pos));
        for (uint32_t i = 0; i < output_count; ++i)
            if (e->tensors[e->outputs[i]].def < 0) return r.bad("output %u (tensor %u) is never written", i, e->outputs[i]);
        return true;
    }
};

// CONV followed directly by MAXPOOL 2x2 (no padding) or 3x3 (each pad 0 or 1), stride 2, dilation 1,
// where the pool is the only reader of the convolution's output (an intermediate) and the output is 8-bit:
// one qatml_conv2d_maxpool call (bit-identical: the pool keeps the quantization, and requantization is
// monotonic), one op fewer, and the full-size intermediate is never allocated.
void fuse_conv_maxpool(qatml_engine* e) {
    std::vector<int> readers(e->tensors.size(), 0);
    for (const Op& op : e->ops) {
        ++readers[op.x];
        if (op.kind == QATML_ENGINE_OP_ADD) ++readers[op.b];
    }
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
                ops.push_back(op);
                ++i;
                continue;
            }
        }
        ops.push_back(op);
    }
    if (ops.size() == e->ops.size()) return;
    e->ops.swap(ops);
    // Writers and last readers by the new op indices; the fused intermediates are written by no op.
    for (Tensor& t : e->tensors) {
        if (t.def >= 0) t.def = -2;
        t.last_use = -1;
    }
    for (size_t i = 0; i < e->ops.size(); ++i) {
        const Op& op = e->ops[i];
        e->tensors[op.x].last_use = static_cast<int>(i);
        if (op.kind == QATML_ENGINE_OP_ADD) e->tensors[op.b].last_use = static_cast<int>(i);
        e->tensors[op.y].def = static_cast<int>(i);
    }
}

// Offsets per row for every intermediate (not a plan input or output) tensor: greedy best fit in op
// order, a block reused once its last reader ran. A tensor is live from its writer to its last reader
// inclusive, so an op's output never overlaps its inputs.
void plan_memory(qatml_engine* e) {
    struct Block {
        int64_t offset, size;
        int last;
    };
    std::vector<Block> live;  // sorted by offset
    int64_t top = 0;
    std::vector<std::vector<uint32_t>> written(e->ops.size());
    for (uint32_t id = 0; id < e->tensors.size(); ++id) {
        const Tensor& t = e->tensors[id];
        if (t.def >= 0 && t.output_index < 0) written[static_cast<size_t>(t.def)].push_back(id);
    }
    for (size_t i = 0; i < e->ops.size(); ++i) {
        live.erase(std::remove_if(live.begin(), live.end(), [&](const Block& b) { return b.last < static_cast<int>(i); }), live.end());
        for (uint32_t id : written[i]) {
            Tensor& t = e->tensors[id];
            const int64_t size = round_up(t.bytes, kAlign);
            e->naive_per_row += size;
            int64_t best = -1, best_gap = INT64_MAX, prev_end = 0;
            size_t at = live.size();
            for (size_t j = 0; j <= live.size(); ++j) {
                const int64_t end = j < live.size() ? live[j].offset : INT64_MAX;
                const int64_t gap = end - prev_end;
                if (gap >= size && (best < 0 || gap < best_gap)) {
                    best = prev_end;
                    best_gap = gap;
                    at = j;
                }
                if (j < live.size()) prev_end = std::max(prev_end, live[j].offset + live[j].size);
            }
            t.offset = best;
            top = std::max(top, best + size);
            live.insert(live.begin() + static_cast<std::ptrdiff_t>(at), Block{best, size, std::max(t.last_use, static_cast<int>(i))});
        }
    }
    e->arena_per_row = top;
}

// ---- running -------------------------------------------------------------------------------------

struct Chunk {
    int64_t row0, rows;
    uint8_t* arena;
};

void* tensor_ptr(const qatml_engine* e, uint32_t id, const Chunk& c, const float* const* inputs, float* const* outputs) {
    const Tensor& t = e->tensors[id];
    if (t.input_index >= 0) return const_cast<float*>(inputs[t.input_index]) + c.row0 * t.elems;
    if (t.output_index >= 0) return outputs[t.output_index] + c.row0 * t.elems;
    return c.arena + t.offset * c.rows;
}

qatml_status run_chunk(const qatml_engine* e, const Chunk& c, const float* const* inputs, float* const* outputs,
                       double* seconds) {
    const int64_t n = c.rows;
    using clock = std::chrono::steady_clock;
    clock::time_point t0 = seconds ? clock::now() : clock::time_point();
    for (const Op& op : e->ops) {
        const Tensor &tx = e->tensors[op.x], &ty = e->tensors[op.y];
        const void* x = tensor_ptr(e, op.x, c, inputs, outputs);
        void* y = tensor_ptr(e, op.y, c, inputs, outputs);
        qatml_status st = QATML_OK;
        switch (op.kind) {
            case QATML_ENGINE_OP_QUANTIZE:
                st = qatml_quantize_linear(nullptr, static_cast<const float*>(x), 1, 1, n * tx.elems, &op.qy.scale, &op.qy.zp, ty.dtype, y);
                break;
            case QATML_ENGINE_OP_DEQUANTIZE:
                st = qatml_dequantize_linear(nullptr, x, tx.dtype, 1, 1, n * tx.elems, &op.qx.scale, &op.qx.zp, static_cast<float*>(y));
                break;
            case QATML_ENGINE_OP_CONV:
            case QATML_ENGINE_OP_GEMM: {
                qatml_epilogue ep;
                std::memset(&ep, 0, sizeof ep);
                ep.out_type = ty.dtype;
                ep.bias = op.bias.empty() ? nullptr : op.bias.data();
                ep.multipliers = op.mult.data();
                ep.multiplier_count = static_cast<int64_t>(op.mult.size());
                ep.out_zero_point = op.qy.zp;
                if (op.kind == QATML_ENGINE_OP_CONV) {
                    qatml_conv2d_params p = op.p;
                    p.batch = n;
                    st = op.pool ? qatml_conv2d_maxpool(nullptr, &p, x, tx.dtype, op.qx.zp, op.w, &ep, op.pool, op.pool_pads, y)
                                 : qatml_conv2d(nullptr, &p, x, tx.dtype, op.qx.zp, op.w, &ep, y);
                } else {
                    st = qatml_gemm(nullptr, n, x, tx.dtype, op.k, op.qx.zp, op.w, &ep, y, op.n);
                }
                break;
            }
            case QATML_ENGINE_OP_MAXPOOL:
            case QATML_ENGINE_OP_AVGPOOL: {
                qatml_conv2d_params p = op.p;
                p.batch = n;
                st = qatml_pool2d(nullptr, op.kind == QATML_ENGINE_OP_MAXPOOL ? QATML_POOL_MAX : QATML_POOL_AVERAGE, &p, op.kh, op.kw,
                                  op.count_include_pad, x, tx.dtype, op.qx.scale, op.qx.zp, op.qy.scale, op.qy.zp, y);
                break;
            }
            case QATML_ENGINE_OP_GLOBAL_AVGPOOL:
                st = qatml_global_average_pool(nullptr, x, tx.dtype, n, tx.dims[0], tx.dims[1] * tx.dims[2], op.qx.scale, op.qx.zp,
                                               op.qy.scale, op.qy.zp, y);
                break;
            case QATML_ENGINE_OP_ADD:
                st = qatml_add(nullptr, x, op.qx.scale, op.qx.zp, tensor_ptr(e, op.b, c, inputs, outputs), op.qb.scale, op.qb.zp,
                               tx.dtype, n * tx.elems, op.qy.scale, op.qy.zp, y);
                break;
            case QATML_ENGINE_OP_LUT: {
                const uint8_t* s = static_cast<const uint8_t*>(x);
                uint8_t* d = static_cast<uint8_t*>(y);
                const int64_t count = n * tx.elems;
                for (int64_t i = 0; i < count; ++i) d[i] = op.lut[s[i]];
                break;
            }
            default:
                return fail(QATML_INTERNAL, "qatml_engine_run: unknown op kind %d", op.kind);
        }
        if (st != QATML_OK) return st;
        if (seconds) {
            const clock::time_point t1 = clock::now();
            seconds[&op - e->ops.data()] += std::chrono::duration<double>(t1 - t0).count();
            t0 = t1;
        }
    }
    return QATML_OK;
}

void op_description(const qatml_engine* e, const Op& op, char* buf, size_t size) {
    const Tensor &x = e->tensors[op.x], &y = e->tensors[op.y];
    auto dims = [](const Tensor& t, char* b, size_t n) {
        int w = 0;
        for (int d = 0; d < t.rank && w >= 0 && static_cast<size_t>(w) < n; ++d)
            w += std::snprintf(b + w, n - static_cast<size_t>(w), d ? "x%lld" : "%lld", (long long)t.dims[d]);
    };
    char xs[64] = "", ys[64] = "";
    dims(x, xs, sizeof xs);
    dims(y, ys, sizeof ys);
    if (op.kind == QATML_ENGINE_OP_CONV || op.kind == QATML_ENGINE_OP_MAXPOOL || op.kind == QATML_ENGINE_OP_AVGPOOL)
        std::snprintf(buf, size, "%s -> %s k%lldx%lld s%lld p%lld,%lld,%lld,%lld", xs, ys, (long long)op.kh, (long long)op.kw,
                      (long long)op.p.stride_h, (long long)op.p.pad_top, (long long)op.p.pad_left, (long long)op.p.pad_bottom,
                      (long long)op.p.pad_right);
    else
        std::snprintf(buf, size, "%s -> %s", xs, ys);
}

void print_profile(const qatml_engine* e) {
    if (e->profile_runs == 0) return;
    double total = 0;
    for (double v : e->profile_seconds) total += v;
    std::fprintf(stderr, "qatml engine profile: %zu ops, %lld runs, %lld rows, %.3f ms in ops, %.1f us per row\n", e->ops.size(),
                 (long long)e->profile_runs, (long long)e->profile_rows, total * 1e3,
                 e->profile_rows ? total * 1e6 / double(e->profile_rows) : 0.0);
    for (size_t i = 0; i < e->ops.size(); ++i) {
        char d[160];
        op_description(e, e->ops[i], d, sizeof d);
        const double v = e->profile_seconds[i];
        std::fprintf(stderr, "  op %3zu %-14s %8.1f us/row %5.1f%%  %s\n", i, e->ops[i].pool ? "CONV+MAXPOOL" : op_name(e->ops[i].kind),
                     e->profile_rows ? v * 1e6 / double(e->profile_rows) : 0.0, total > 0 ? 100.0 * v / total : 0.0, d);
    }
    std::fflush(stderr);
}

// Engines alive with profile data, printed at exit.
std::mutex& profiled_mutex() {
    static std::mutex* m = new std::mutex();
    return *m;
}
std::set<const qatml_engine*>& profiled() {
    static auto* s = new std::set<const qatml_engine*>();
    return *s;
}
void print_live_profiles() {
    std::lock_guard<std::mutex> lock(profiled_mutex());
    for (const qatml_engine* e : profiled()) {
        std::lock_guard<std::mutex> l2(e->pool_mutex);
        print_profile(e);
    }
}

AlignedBuffer* acquire_arena(const qatml_engine* e, int64_t bytes) {
    AlignedBuffer* a = nullptr;
    {
        std::lock_guard<std::mutex> lock(e->pool_mutex);
        if (!e->pool.empty()) {
            a = e->pool.back();
            e->pool.pop_back();
        }
    }
    if (!a) a = new AlignedBuffer();
    if (a->size < bytes) {
        try {
            a->resize(bytes);
        } catch (...) {
            delete a;
            throw;
        }
    }
    return a;
}

void release_arena(const qatml_engine* e, AlignedBuffer* a) {
    std::lock_guard<std::mutex> lock(e->pool_mutex);
    if (e->pool.size() < 64) {
        try {
            e->pool.push_back(a);
            return;
        } catch (...) {
        }
    }
    delete a;
}

// NULL, or a live context of either device: CUDA engines are loaded for the CPU too (the CPU kernels validate and
// pack as usual) and attached to their GPU; the kernel entry points themselves stay CPU only.
qatml_status check_engine_context(const qatml_context* ctx, const char* fn) {
    if (ctx == nullptr) return QATML_OK;
    QATML_CHECK_HANDLE(ctx, HandleKind::Context, fn);
    return QATML_OK;
}

// Arguments of a run (host or device pointers alike: only NULL and alignment are checked).
qatml_status check_run(const qatml_engine* engine, const qatml_context* ctx, int64_t batch, const float* const* inputs,
                       int32_t input_count, const float* const* outputs, int32_t output_count, const char* fn) {
    QATML_CHECK_HANDLE(engine, HandleKind::Engine, fn);
    qatml_status st = check_engine_context(ctx, fn);
    if (st != QATML_OK) return st;
    if (batch <= 0 || batch > kMaxDim) return fail(QATML_INVALID_ARGUMENT, "%s: batch %lld outside 1..2^31", fn, (long long)batch);
    QATML_CHECK_NOT_NULL(inputs, fn);
    QATML_CHECK_NOT_NULL(outputs, fn);
    if (input_count != static_cast<int32_t>(engine->inputs.size()) || output_count != static_cast<int32_t>(engine->outputs.size()))
        return fail(QATML_INVALID_ARGUMENT, "%s: the plan has %zu inputs and %zu outputs, got %d and %d", fn, engine->inputs.size(),
                    engine->outputs.size(), input_count, output_count);
    for (int32_t i = 0; i < input_count; ++i) {
        if (!inputs[i]) return fail(QATML_INVALID_ARGUMENT, "%s: inputs[%d] is NULL", fn, i);
        QATML_CHECK_ALIGNED(inputs[i], 4, fn);
        int64_t total = 0;
        if (!checked_mul(fn, "batch*input row", batch, engine->tensors[engine->inputs[static_cast<size_t>(i)]].elems, &total))
            return QATML_INVALID_ARGUMENT;
    }
    for (int32_t i = 0; i < output_count; ++i) {
        if (!outputs[i]) return fail(QATML_INVALID_ARGUMENT, "%s: outputs[%d] is NULL", fn, i);
        QATML_CHECK_ALIGNED(outputs[i], 4, fn);
        int64_t total = 0;
        if (!checked_mul(fn, "batch*output row", batch, engine->tensors[engine->outputs[static_cast<size_t>(i)]].elems, &total))
            return QATML_INVALID_ARGUMENT;
    }
    return QATML_OK;
}

bool is_cuda(const qatml_context* ctx) { return ctx != nullptr && context_device(ctx).kind == QATML_DEVICE_CUDA; }

}  // namespace

extern "C" {

QATML_API qatml_status qatml_engine_create(const qatml_context* ctx, const void* plan, int64_t plan_bytes,
                                           qatml_engine** out_engine) {
    static const char* fn = "qatml_engine_create";
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_NOT_NULL(out_engine, fn);
        *out_engine = nullptr;
        qatml_status st = check_engine_context(ctx, fn);
        if (st != QATML_OK) return st;
        QATML_CHECK_NOT_NULL(plan, fn);
        QATML_CHECK_POSITIVE(plan_bytes, fn);
        auto e = std::make_unique<qatml_engine>();
        Loader loader{Reader{static_cast<const uint8_t*>(plan), plan_bytes, 0, fn}, e.get(), is_cuda(ctx) ? nullptr : ctx};
        if (!loader.load()) return loader.r.status != QATML_OK ? loader.r.status : fail(QATML_INTERNAL, "%s: load failed", fn);
        fuse_conv_maxpool(e.get());
        plan_memory(e.get());
        if (is_cuda(ctx)) {
            e->device = context_device(ctx);
            if ((st = cuda_engine_attach(e.get(), ctx, fn)) != QATML_OK) return st;
        }
        for (Op& op : e->ops) op.raw_weights = nullptr;  // pointed into the caller's plan
        for (const Op& op : e->ops) {
            if (op.w) {
                int64_t bytes = 0;
                qatml_packed_weights_info(op.w, nullptr, nullptr, nullptr, &bytes);
                e->weight_bytes += bytes;
            }
            e->weight_bytes += static_cast<int64_t>(op.bias.size() * 4 + op.mult.size() * 4);
        }
        if (profiling()) {
            e->profile_seconds.assign(e->ops.size(), 0.0);
            static std::once_flag once;
            std::call_once(once, [] { std::atexit(print_live_profiles); });
            std::lock_guard<std::mutex> lock(profiled_mutex());
            profiled().insert(e.get());
        }
        register_handle(e.get(), HandleKind::Engine);
        *out_engine = e.release();
        qatml_clear_error();
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_engine_destroy(qatml_engine* engine) {
    static const char* fn = "qatml_engine_destroy";
    return guarded(fn, [&]() -> qatml_status {
        if (engine == nullptr) return QATML_OK;
        if (!unregister_handle(engine, HandleKind::Engine))
            return fail(QATML_INVALID_HANDLE, "%s: handle (%p) is not a live engine (destroyed twice?)", fn, static_cast<void*>(engine));
        if (profiling()) {
            std::lock_guard<std::mutex> lock(profiled_mutex());
            profiled().erase(engine);
            print_profile(engine);
        }
        delete engine;
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_engine_get_info(const qatml_engine* engine, qatml_engine_info* out_info) {
    static const char* fn = "qatml_engine_get_info";
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_HANDLE(engine, HandleKind::Engine, fn);
        QATML_CHECK_NOT_NULL(out_info, fn);
        out_info->input_count = static_cast<int32_t>(engine->inputs.size());
        out_info->output_count = static_cast<int32_t>(engine->outputs.size());
        out_info->op_count = static_cast<int32_t>(engine->ops.size());
        out_info->tensor_count = static_cast<int32_t>(engine->tensors.size());
        out_info->weight_bytes = engine->weight_bytes;
        out_info->arena_bytes_per_row = engine->arena_per_row;
        out_info->naive_bytes_per_row = engine->naive_per_row;
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_engine_io_row_size(const qatml_engine* engine, int32_t is_output, int32_t index,
                                                int64_t* out_elements) {
    static const char* fn = "qatml_engine_io_row_size";
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_HANDLE(engine, HandleKind::Engine, fn);
        QATML_CHECK_NOT_NULL(out_elements, fn);
        const auto& list = is_output ? engine->outputs : engine->inputs;
        if (index < 0 || static_cast<size_t>(index) >= list.size())
            return fail(QATML_INVALID_ARGUMENT, "%s: %s index %d outside 0..%zu", fn, is_output ? "output" : "input", index,
                        list.size() - 1);
        *out_elements = engine->tensors[list[static_cast<size_t>(index)]].elems;
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_engine_run(const qatml_engine* engine, const qatml_context* ctx, int64_t batch,
                                        const float* const* inputs, int32_t input_count, float* const* outputs,
                                        int32_t output_count) {
    static const char* fn = "qatml_engine_run";
    return guarded(fn, [&]() -> qatml_status {
        qatml_status st = check_run(engine, ctx, batch, inputs, input_count, outputs, output_count, fn);
        if (st != QATML_OK) return st;
        if (is_cuda(ctx)) return cuda_engine_run(engine, ctx, batch, inputs, outputs, false, fn);
        int64_t arena_total = 0;
        if (!checked_mul(fn, "batch*arena row", batch, std::max<int64_t>(engine->arena_per_row, 1), &arena_total))
            return QATML_INVALID_ARGUMENT;
        int32_t threads = 1;
        if (ctx) qatml_context_get_num_threads(ctx, &threads);
        const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, batch));
        std::vector<Chunk> chunks(static_cast<size_t>(parts));
        std::vector<AlignedBuffer*> arenas;
        arenas.reserve(static_cast<size_t>(parts));
        struct Release {
            const qatml_engine* e;
            std::vector<AlignedBuffer*>* a;
            ~Release() {
                for (AlignedBuffer* b : *a) release_arena(e, b);
            }
        } release{engine, &arenas};
        for (int64_t i = 0, row = 0; i < parts; ++i) {
            const int64_t rows = batch / parts + (i < batch % parts ? 1 : 0);
            arenas.push_back(acquire_arena(engine, std::max<int64_t>(engine->arena_per_row, 1) * rows));
            chunks[static_cast<size_t>(i)] = Chunk{row, rows, arenas.back()->data};
            row += rows;
        }
        // Profiling: per-op seconds of every chunk, added to the engine's totals after the run.
        const bool prof = profiling();
        std::vector<double> seconds(prof ? engine->ops.size() * static_cast<size_t>(parts) : 0, 0.0);
        auto secs = [&](size_t i) { return prof ? seconds.data() + i * engine->ops.size() : nullptr; };
        auto record = [&](qatml_status result) {
            if (prof && result == QATML_OK) {
                std::lock_guard<std::mutex> lock(engine->pool_mutex);
                for (size_t i = 0; i < seconds.size(); ++i) engine->profile_seconds[i % engine->ops.size()] += seconds[i];
                engine->profile_runs += 1;
                engine->profile_rows += batch;
            }
            return result;
        };
        if (parts == 1) return record(run_chunk(engine, chunks[0], inputs, outputs, secs(0)));
        // Contiguous row ranges, one per thread; the calling thread runs the first.
        std::vector<qatml_status> status(static_cast<size_t>(parts), QATML_OK);
        std::vector<std::string> message(static_cast<size_t>(parts));
        auto work = [&](size_t i) {
            try {
                status[i] = run_chunk(engine, chunks[i], inputs, outputs, secs(i));
                if (status[i] != QATML_OK) message[i] = qatml_last_error();
            } catch (const std::bad_alloc&) {
                status[i] = QATML_OUT_OF_MEMORY;
                message[i] = "out of memory";
            } catch (...) {
                status[i] = QATML_INTERNAL;
                message[i] = "internal error in a worker thread";
            }
        };
        std::vector<std::thread> workers;
        size_t started = 1;
        try {
            workers.reserve(static_cast<size_t>(parts - 1));
            for (; started < chunks.size(); ++started) workers.emplace_back(work, started);
        } catch (...) {
            // Could not start every thread: the rest run here.
        }
        work(0);
        for (size_t i = started; i < chunks.size(); ++i) work(i);
        for (std::thread& t : workers) t.join();
        for (size_t i = 0; i < chunks.size(); ++i)
            if (status[i] != QATML_OK) return fail(status[i], "%s", message[i].c_str());
        return record(QATML_OK);
    });
}

QATML_API qatml_status qatml_engine_run_device(const qatml_engine* engine, const qatml_context* ctx, int64_t batch,
                                               const float* const* device_inputs, int32_t input_count,
                                               float* const* device_outputs, int32_t output_count) {
    static const char* fn = "qatml_engine_run_device";
    return guarded(fn, [&]() -> qatml_status {
        qatml_status st = check_run(engine, ctx, batch, device_inputs, input_count, device_outputs, output_count, fn);
        if (st != QATML_OK) return st;
        if (!is_cuda(ctx)) return fail(QATML_INVALID_ARGUMENT, "%s: device pointers need a CUDA context, got %s", fn, ctx ? "a CPU context" : "NULL");
        return cuda_engine_run(engine, ctx, batch, device_inputs, device_outputs, true, fn);
    });
}

}  // extern "C"
