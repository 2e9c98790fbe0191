// CPU-only builds: the CUDA entry points report that no CUDA device exists.
#include "internal.h"

namespace qatml {
qatml_status cuda_check_device(int32_t index, const char* function) {
    return fail(QATML_DEVICE_UNAVAILABLE,
                "%s: CUDA device %d requested, but this build of qatml_native has no CUDA support "
                "(configure with -DQATML_CUDA=ON on a machine with the CUDA toolkit)",
                function, index);
}
}  // namespace qatml

extern "C" {
QATML_API int32_t qatml_cuda_compiled(void) { return 0; }
QATML_API qatml_status qatml_cuda_device_count(int32_t* out_count) {
    QATML_CHECK_NOT_NULL(out_count, "qatml_cuda_device_count");
    *out_count = 0;
    return QATML_OK;
}
}
