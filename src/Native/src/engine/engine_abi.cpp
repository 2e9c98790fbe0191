// The qatml_engine_* exports (qatml_engine.h): argument checks, then the loader, the passes and the runner.
#include "engine/cpu_program.h"

#include <algorithm>

using namespace qatml;
using namespace qatml::kernels;
using namespace qatml::plan;
using namespace qatml::engine;

namespace {

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

// The tensor of input (is_output = 0) or output number `index`, for the io queries (the handle checked first).
template <typename Read>
qatml_status io_query(const qatml_engine* engine, int32_t is_output, int32_t index, const void* out, const char* fn, Read read) {
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_HANDLE(engine, HandleKind::Engine, fn);
        QATML_CHECK_NOT_NULL(out, fn);
        const auto& list = is_output ? engine->outputs : engine->inputs;
        if (index < 0 || static_cast<size_t>(index) >= list.size())
            return fail(QATML_INVALID_ARGUMENT, "%s: %s index %d outside 0..%zu", fn, is_output ? "output" : "input", index,
                        list.size() - 1);
        read(engine->tensors[list[static_cast<size_t>(index)]]);
        return QATML_OK;
    });
}

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
        qatml_isa isa = QATML_ISA_SCALAR;
        if (!active_isa(&isa, fn)) return QATML_INVALID_ARGUMENT;
        e->isa = isa;
        if ((st = load_plan(e.get(), static_cast<const uint8_t*>(plan), plan_bytes, fn)) != QATML_OK) return st;
        fuse_conv_maxpool(e.get());
        plan_memory(e.get());
        if ((st = build_cpu_program(e.get(), fn)) != QATML_OK) return st;
        if (is_cuda(ctx)) {
            e->device = context_device(ctx);
            if ((st = cuda_engine_attach(e.get(), ctx, fn)) != QATML_OK) return st;
        }
        for (Op& op : e->ops) op.raw_weights = nullptr;  // pointed into the caller's plan
        for (const Op& op : e->ops) {
            if (op.w) e->weight_bytes += op.w->packed.size + op.w->hwc_packed.size + static_cast<int64_t>(op.w->plain.size() + 8 * op.w->wsum.size());
            e->weight_bytes += static_cast<int64_t>(op.bias.size() * 4 + op.mult.size() * 4);
        }
        if (profiling()) profile_attach(e.get());
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
        if (profiling()) profile_detach(engine);
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
        out_info->op_count = static_cast<int32_t>(engine->cpu->steps.size());  // what a CPU run executes
        out_info->tensor_count = static_cast<int32_t>(engine->tensors.size());
        out_info->weight_bytes = engine->weight_bytes;
        out_info->arena_bytes_per_row = engine->cpu->arena_per_row;
        out_info->naive_bytes_per_row = engine->cpu->naive_per_row;
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_engine_io_row_size(const qatml_engine* engine, int32_t is_output, int32_t index,
                                                int64_t* out_elements) {
    return io_query(engine, is_output, index, out_elements, "qatml_engine_io_row_size",
                    [&](const qatml::plan::Tensor& t) { *out_elements = t.elems; });
}

QATML_API qatml_status qatml_engine_io_type(const qatml_engine* engine, int32_t is_output, int32_t index, int32_t* out_dtype) {
    return io_query(engine, is_output, index, out_dtype, "qatml_engine_io_type", [&](const qatml::plan::Tensor& t) { *out_dtype = t.dtype; });
}

QATML_API qatml_status qatml_engine_run(const qatml_engine* engine, const qatml_context* ctx, int64_t batch,
                                        const float* const* inputs, int32_t input_count, float* const* outputs,
                                        int32_t output_count) {
    static const char* fn = "qatml_engine_run";
    return guarded(fn, [&]() -> qatml_status {
        qatml_status st = check_run(engine, ctx, batch, inputs, input_count, outputs, output_count, fn);
        if (st != QATML_OK) return st;
        if (is_cuda(ctx)) return cuda_engine_run(engine, ctx, batch, inputs, outputs, false, fn);
        return run_on_cpu(engine, ctx, batch, inputs, outputs, fn);
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
