// Contexts: a device and a thread count that work is bound to.
#include "internal.h"

#include "core/thread_pool.h"

#include <memory>

struct qatml_context {
    qatml::HandleKind kind = qatml::HandleKind::Context;
    qatml_device device{};
    int32_t num_threads = 1;
    qatml::CudaContextState* cuda = nullptr;
    std::unique_ptr<qatml::ThreadPool> pool;  // CPU contexts of more than one thread: started once, here
    ~qatml_context() { qatml::cuda_context_close(cuda); }
};

namespace qatml {
qatml_status cuda_check_device(int32_t index, const char* function);  // cuda/ or cuda_stub.cpp
CudaContextState* context_cuda_state(const qatml_context* ctx) { return ctx ? ctx->cuda : nullptr; }
ThreadPool* context_thread_pool(const qatml_context* ctx) { return ctx ? ctx->pool.get() : nullptr; }
}  // namespace qatml

extern "C" {

QATML_API qatml_status qatml_context_create(const qatml_device* device, int32_t num_threads,
                                            qatml_context** out_context) {
    static const char* fn = "qatml_context_create";
    return qatml::guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_NOT_NULL(device, fn);
        QATML_CHECK_NOT_NULL(out_context, fn);
        *out_context = nullptr;
        if (num_threads < 0 || num_threads > 4096)
            return qatml::fail(QATML_INVALID_ARGUMENT, "%s: num_threads %d is outside 0..4096", fn, num_threads);
        switch (device->kind) {
            case QATML_DEVICE_CPU:
                if (device->index != 0)
                    return qatml::fail(QATML_DEVICE_UNAVAILABLE, "%s: CPU device index must be 0, got %d", fn,
                                       device->index);
                break;
            case QATML_DEVICE_CUDA: {
                qatml_status s = qatml::cuda_check_device(device->index, fn);
                if (s != QATML_OK) return s;
                break;
            }
            default:
                return qatml::fail(QATML_INVALID_ARGUMENT, "%s: unknown device kind %d", fn, device->kind);
        }
        auto ctx = std::make_unique<qatml_context>();
        if (device->kind == QATML_DEVICE_CUDA) {
            qatml_status s = qatml::cuda_context_open(device->index, &ctx->cuda, fn);
            if (s != QATML_OK) return s;
        }
        ctx->device = *device;
        ctx->num_threads = num_threads == 0 ? 1 : num_threads;
        if (device->kind == QATML_DEVICE_CPU && ctx->num_threads > 1) ctx->pool = std::make_unique<qatml::ThreadPool>(ctx->num_threads);
        qatml::register_handle(ctx.get(), qatml::HandleKind::Context);
        *out_context = ctx.release();
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_context_destroy(qatml_context* context) {
    static const char* fn = "qatml_context_destroy";
    return qatml::guarded(fn, [&]() -> qatml_status {
        if (context == nullptr) return QATML_OK;
        if (!qatml::unregister_handle(context, qatml::HandleKind::Context))
            return qatml::fail(QATML_INVALID_HANDLE, "%s: handle (%p) is not a live context (destroyed twice?)", fn,
                               static_cast<void*>(context));
        delete context;
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_context_get_device(const qatml_context* context, qatml_device* out_device) {
    static const char* fn = "qatml_context_get_device";
    QATML_CHECK_HANDLE(context, qatml::HandleKind::Context, fn);
    QATML_CHECK_NOT_NULL(out_device, fn);
    *out_device = context->device;
    return QATML_OK;
}

QATML_API qatml_status qatml_context_get_num_threads(const qatml_context* context, int32_t* out_threads) {
    static const char* fn = "qatml_context_get_num_threads";
    QATML_CHECK_HANDLE(context, qatml::HandleKind::Context, fn);
    QATML_CHECK_NOT_NULL(out_threads, fn);
    *out_threads = context->num_threads;
    return QATML_OK;
}

}  // extern "C"
