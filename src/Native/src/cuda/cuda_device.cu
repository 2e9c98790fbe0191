// CUDA builds: device discovery. Kernels join this folder in a later issue.
#include "../core/internal.h"

#include <cuda_runtime.h>

namespace qatml {
qatml_status cuda_check_device(int32_t index, const char* function) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess)
        return fail(QATML_DEVICE_UNAVAILABLE, "%s: no usable CUDA driver or GPU: %s", function, cudaGetErrorString(err));
    if (index < 0 || index >= count)
        return fail(QATML_DEVICE_UNAVAILABLE, "%s: CUDA device %d requested, %d present", function, index, count);
    return QATML_OK;
}
}  // namespace qatml

extern "C" {
QATML_API int32_t qatml_cuda_compiled(void) { return 1; }
QATML_API qatml_status qatml_cuda_device_count(int32_t* out_count) {
    QATML_CHECK_NOT_NULL(out_count, "qatml_cuda_device_count");
    int count = 0;
    *out_count = cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
    return QATML_OK;
}
}
