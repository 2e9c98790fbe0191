// CUDA contexts: a stream per context, its GPU's kernel occupancy, and the device and pinned buffers its runs reuse.
#include "cuda/cuda_context.h"

#include <memory>

namespace qatml {

qatml_status cuda_check_device(int32_t index, const char* function);  // cuda_device.cu

void CudaBuffer::release() {
    if (data) {
        if (pinned)
            cudaFreeHost(data);
        else
            cudaFree(data);
    }
    data = nullptr;
    size = 0;
}

cudaError_t CudaBuffer::reserve(size_t bytes) {
    if (bytes <= size) return cudaSuccess;
    release();
    // Some headroom so that a slowly growing batch does not reallocate every run.
    const size_t want = bytes + bytes / 8;
    cudaError_t err = pinned ? cudaHostAlloc(&data, want, cudaHostAllocDefault) : cudaMalloc(&data, want);
    if (err != cudaSuccess) {
        data = nullptr;
        cudaGetLastError();  // clear the sticky allocation error
        return err;
    }
    size = want;
    return cudaSuccess;
}

DeviceGuard::DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) status_ = cudaSetDevice(device);
}

DeviceGuard::~DeviceGuard() {
    int now = -1;
    if (previous_ >= 0 && cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

qatml_status cuda_fail(cudaError_t err, const char* fn, const char* what) {
    return fail(err == cudaErrorMemoryAllocation ? QATML_OUT_OF_MEMORY : QATML_INTERNAL, "%s: %s: CUDA error %d (%s)", fn, what,
                static_cast<int>(err), cudaGetErrorString(err));
}

qatml_status cuda_context_open(int32_t index, CudaContextState** out, const char* fn) {
    *out = nullptr;
    qatml_status st = cuda_check_device(index, fn);
    if (st != QATML_OK) return st;
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, index);
    if (major < 8)
        return fail(QATML_DEVICE_UNAVAILABLE, "%s: CUDA device %d has compute capability %d.%d; the INT8 kernels need 8.0 or newer", fn,
                    index, major, minor);
    auto state = std::make_unique<CudaContextState>();
    state->device = index;
    state->staging.pinned = true;
    DeviceGuard guard(index);
    if (guard.status() != cudaSuccess) return cuda_fail(guard.status(), fn, "selecting the device");
    cudaError_t err = cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking);
    if (err != cudaSuccess) return cuda_fail(err, fn, "creating the context's stream");
    if ((err = cuda::igemm_device_info(&state->igemm)) != cudaSuccess) {
        cudaStreamDestroy(state->stream);
        return cuda_fail(err, fn, "preparing the GEMM kernels");
    }
    *out = state.release();
    return QATML_OK;
}

void cuda_context_close(CudaContextState* state) {
    if (!state) return;
    {
        DeviceGuard guard(state->device);
        if (state->stream) {
            cudaStreamSynchronize(state->stream);
            cudaStreamDestroy(state->stream);
        }
        state->arena.release();
        state->io.release();
        state->staging.release();
    }
    delete state;
}

}  // namespace qatml
