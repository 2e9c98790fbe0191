// CPU-only builds: the CUDA entry points report that no CUDA device exists.
#include "engine/engine_internal.h"

namespace qatml {
qatml_status cuda_check_device(int32_t index, const char* function) {
    return fail(QATML_DEVICE_UNAVAILABLE,
                "%s: CUDA device %d requested, but this build of qatml_native has no CUDA support "
                "(configure with -DQATML_CUDA=ON on a machine with the CUDA toolkit)",
                function, index);
}

// Unreachable without CUDA contexts (cuda_check_device refuses them), but the engine and contexts link against them.
qatml_status cuda_context_open(int32_t index, CudaContextState** out, const char* function) {
    *out = nullptr;
    return cuda_check_device(index, function);
}
void cuda_context_close(CudaContextState*) {}
qatml_status cuda_engine_attach(qatml_engine*, const qatml_context*, const char* fn) {
    return fail(QATML_DEVICE_UNAVAILABLE, "%s: this build of qatml_native has no CUDA support", fn);
}
qatml_status cuda_engine_run(const qatml_engine*, const qatml_context*, int64_t, const float* const*, float* const*, bool,
                             const char* fn) {
    return fail(QATML_DEVICE_UNAVAILABLE, "%s: this build of qatml_native has no CUDA support", fn);
}
void cuda_engine_release(DeviceEngine*) {}
}  // namespace qatml

extern "C" {
QATML_API int32_t qatml_cuda_compiled(void) { return 0; }
QATML_API qatml_status qatml_cuda_device_count(int32_t* out_count) {
    QATML_CHECK_NOT_NULL(out_count, "qatml_cuda_device_count");
    *out_count = 0;
    return QATML_OK;
}
}
