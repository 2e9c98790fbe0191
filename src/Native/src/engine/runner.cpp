// A CPU run: the batch split into contiguous row ranges (one per thread of the context's pool), each running every
// step of the program in its own arena (activations, then the steps' scratch), through the internal kernel API.
#include "engine/cpu_program.h"

#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

using namespace qatml;
using namespace qatml::kernels;
using namespace qatml::plan;

namespace qatml {
namespace engine {
namespace {

struct Chunk {
    int64_t row0, rows;
    uint8_t* arena;    // activations: offset * rows
    uint8_t* scratch;  // after them
};

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

struct Io {
    const float* const* inputs;  // each of its input's type (float32, int32, int64)
    float* const* outputs;
};

uint8_t* tensor_ptr(const qatml_engine* e, uint32_t id, const Chunk& c, const Io& io) {
    const Tensor& t = e->tensors[id];
    if (t.input_index >= 0) return reinterpret_cast<uint8_t*>(const_cast<float*>(io.inputs[t.input_index])) + c.row0 * t.bytes;
    if (t.output_index >= 0) return reinterpret_cast<uint8_t*>(io.outputs[t.output_index] + c.row0 * t.elems);
    return c.arena + e->cpu->offsets[id] * c.rows;
}

// False when the step failed on its data (a GATHER index outside the table): *error says why.
bool run_step(const qatml_engine* e, const Step& s, const Chunk& c, const Io& io, std::string* error) {
    const CpuProgram& prog = *e->cpu;
    const int64_t n = c.rows;
    const uint8_t* x = tensor_ptr(e, s.x, c, io);
    uint8_t* y = tensor_ptr(e, s.y, c, io);
    switch (s.kind) {
        case QATML_ENGINE_OP_QUANTIZE:
            quantize_8bit(prog.simd, reinterpret_cast<const float*>(x), n * s.elements, s.scale, s.zp, s.type, y);
            return true;
        case QATML_ENGINE_OP_DEQUANTIZE:
            dequantize_values(prog.simd, x, s.type, n * s.elements, s.scale, s.zp, reinterpret_cast<float*>(y));
            return true;
        case QATML_ENGINE_OP_CONV: conv_run(*s.conv, n, x, y, c.scratch, s.add_op >= 0 ? tensor_ptr(e, s.b, c, io) : nullptr); return true;
        case QATML_ENGINE_OP_GEMM:
            gemm_run(s.gemm, n * s.vectors, x, s.gemm.w->k, y, s.gemm.w->n, c.scratch);
            if (!s.float_scale.empty()) int32_to_scaled_float(s.float_scale.data(), n * s.vectors, s.gemm.w->n, y);
            return true;
        case QATML_ENGINE_OP_GATHER: {
            const int64_t bad = gather_run(s.gather, n, s.gather.fixed ? nullptr : x, y);
            if (bad < 0) return true;
            char msg[256];
            std::snprintf(msg, sizeof msg, "op %d (GATHER): index %lld at row %lld, position %lld is outside the table's rows -%lld..%lld", s.op,
                          (long long)gather_index(x, s.gather.index_type, bad), (long long)(c.row0 + bad / s.gather.count),
                          (long long)(bad % s.gather.count), (long long)s.gather.rows, (long long)(s.gather.rows - 1));
            *error = msg;
            return false;
        }
        case QATML_ENGINE_OP_CAST: cast_run(s.type, s.zp, n * s.elements, x, y); return true;
        case QATML_ENGINE_OP_FLOAT_GEMM:
            float_gemm_run(s.float_gemm, n * s.vectors, reinterpret_cast<const float*>(x), reinterpret_cast<float*>(y), c.scratch);
            return true;
        case QATML_ENGINE_OP_MAXPOOL:
        case QATML_ENGINE_OP_AVGPOOL: pool_run(s.pool, n, x, y, c.scratch); return true;
        case QATML_ENGINE_OP_GLOBAL_AVGPOOL: global_pool_run(s.global_pool, n, x, y, c.scratch); return true;
        case QATML_ENGINE_OP_ADD: add_8bit(prog.simd, s.add, x, tensor_ptr(e, s.b, c, io), n * s.elements, y); return true;
        case QATML_ENGINE_OP_LUT: lut_bytes(s.lut, x, n * s.elements, y); return true;
        case QATML_ENGINE_OP_UNARY: unary_f32(s.unary, reinterpret_cast<const float*>(x), n * s.elements, reinterpret_cast<float*>(y)); return true;
        case QATML_ENGINE_OP_BINARY:
            binary_run(s.binary, n, x, s.constant ? s.constant : tensor_ptr(e, s.b, c, io), y, c.scratch);
            return true;
        case QATML_ENGINE_OP_CONCAT: {
            const uint8_t* xs[kMaxIo];
            for (size_t i = 0; i < s.inputs.size(); ++i) xs[i] = tensor_ptr(e, s.inputs[i], c, io);
            concat_run(s.concat, n, xs, y);
            return true;
        }
        case QATML_ENGINE_OP_COPY: copy_run(s.copy, n, x, y); return true;
        case QATML_ENGINE_OP_PAD: pad_run(s.pad, n, x, y); return true;
        case QATML_ENGINE_OP_RESIZE: resize_run(s.resize, n, x, y); return true;
        case QATML_ENGINE_OP_SOFTMAX: softmax_f32(s.axis, n, reinterpret_cast<const float*>(x), reinterpret_cast<float*>(y)); return true;
        case QATML_ENGINE_OP_REDUCE_MEAN: reduce_mean_f32(s.axis, n, reinterpret_cast<const float*>(x), reinterpret_cast<float*>(y)); return true;
        case QATML_ENGINE_OP_LAYERNORM:
            layernorm_f32(s.axis, s.epsilon, s.norm_scale, s.norm_bias, n, reinterpret_cast<const float*>(x), reinterpret_cast<float*>(y));
            return true;
        case QATML_ENGINE_OP_FLOAT_CONV:
            float_conv_run(s.float_conv, n, reinterpret_cast<const float*>(x), reinterpret_cast<float*>(y), c.scratch);
            return true;
        case QATML_ENGINE_OP_MATMUL: matmul_run(s.matmul, n, x, tensor_ptr(e, s.b, c, io), y, c.scratch); return true;
        default: return true;  // build_cpu_program refuses other kinds
    }
}

bool run_chunk(const qatml_engine* e, const Chunk& c, const Io& io, double* seconds, std::string* error) {
    using clock = std::chrono::steady_clock;
    clock::time_point t0 = seconds ? clock::now() : clock::time_point();
    const std::vector<Step>& steps = e->cpu->steps;
    for (size_t i = 0; i < steps.size(); ++i) {
        if (!run_step(e, steps[i], c, io, error)) return false;
        if (seconds) {
            const clock::time_point t1 = clock::now();
            seconds[i] += std::chrono::duration<double>(t1 - t0).count();
            t0 = t1;
        }
    }
    return true;
}

}  // namespace

qatml_status run_on_cpu(const qatml_engine* e, const qatml_context* ctx, int64_t batch, const float* const* inputs,
                        float* const* outputs, const char* fn) {
    // A feature mask set after load (tests emulating a smaller CPU) can remove the path the weights were packed for.
    if (!isa_supported(static_cast<qatml_isa>(e->isa)))
        return fail(QATML_UNSUPPORTED,
                    "%s: the engine was loaded for the %s path, which this CPU's features (feature mask) no longer include; "
                    "load it again",
                    fn, qatml_isa_name(e->isa));
    const CpuProgram& prog = *e->cpu;
    int32_t threads = 1;
    if (ctx) qatml_context_get_num_threads(ctx, &threads);
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, batch));
    int64_t arena_total = 0;
    if (!checked_mul(fn, "batch*arena row", batch, std::max<int64_t>(prog.arena_per_row, 1), &arena_total)) return QATML_INVALID_ARGUMENT;
    std::vector<Chunk> chunks(static_cast<size_t>(parts));
    std::vector<AlignedBuffer*> arenas;
    arenas.reserve(static_cast<size_t>(parts));
    struct Release {
        const qatml_engine* e;
        std::vector<AlignedBuffer*>* a;
        ~Release() {
            for (AlignedBuffer* b : *a) release_arena(e, b);
        }
    } release{e, &arenas};
    for (int64_t i = 0, row = 0; i < parts; ++i) {
        const int64_t rows = batch / parts + (i < batch % parts ? 1 : 0);
        arenas.push_back(acquire_arena(e, prog.arena_bytes(rows)));
        uint8_t* arena = arenas.back()->data;
        chunks[static_cast<size_t>(i)] = Chunk{row, rows, arena, arena + prog.activation_bytes(rows)};
        row += rows;
    }
    const bool prof = !e->profile_seconds.empty();
    const size_t steps = prog.steps.size();
    std::vector<double> seconds(prof ? steps * static_cast<size_t>(parts) : 0, 0.0);
    const Io io{inputs, outputs};
    std::vector<std::string> errors(static_cast<size_t>(parts));  // per chunk: the data error that stopped it
    auto job = [&](int64_t i) {
        run_chunk(e, chunks[static_cast<size_t>(i)], io, prof ? seconds.data() + static_cast<size_t>(i) * steps : nullptr, &errors[static_cast<size_t>(i)]);
    };
    ThreadPool* pool = context_thread_pool(ctx);
    if (pool && parts > 1)
        pool->run(parts, job);
    else
        for (int64_t i = 0; i < parts; ++i) job(i);
    for (const std::string& error : errors)
        if (!error.empty()) return fail(QATML_INVALID_ARGUMENT, "%s: %s", fn, error.c_str());
    if (prof) profile_record(e, seconds, static_cast<size_t>(parts), batch);
    return QATML_OK;
}

}  // namespace engine
}  // namespace qatml
