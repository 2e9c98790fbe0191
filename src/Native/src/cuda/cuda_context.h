// The state of a CUDA context (core/internal.h): its GPU, its stream, and the buffers its runs reuse.
#pragma once

#include "core/internal.h"
#include "cuda/cuda_kernels.h"

#include <cuda_runtime.h>

#include <mutex>

namespace qatml {

// A cudaMalloc'ed (device) or cudaHostAlloc'ed (pinned) buffer that only grows.
struct CudaBuffer {
    void* data = nullptr;
    size_t size = 0;
    bool pinned = false;
    CudaBuffer() = default;
    CudaBuffer(const CudaBuffer&) = delete;
    CudaBuffer& operator=(const CudaBuffer&) = delete;
    ~CudaBuffer() { release(); }
    void release();
    cudaError_t reserve(size_t bytes);
};

struct CudaContextState {
    int device = 0;
    cudaStream_t stream = nullptr;
    cuda::IgemmDeviceInfo igemm;
    std::mutex mutex;    // one run at a time on the stream and buffers below
    CudaBuffer arena;    // activations of a run: the engine's per-row plan x batch, then scratch
    CudaBuffer io;       // float inputs and outputs of a host run
    CudaBuffer staging;  // pinned host copy of the same
};

// Makes `device` current for the calling thread and restores the previous device on scope exit (the caller's
// thread may be using another GPU through another library).
class DeviceGuard {
public:
    explicit DeviceGuard(int device);
    ~DeviceGuard();
    cudaError_t status() const { return status_; }

private:
    int previous_ = -1;
    cudaError_t status_ = cudaSuccess;
};

// fail() for a CUDA error: QATML_OUT_OF_MEMORY for allocation failures, QATML_INTERNAL otherwise.
qatml_status cuda_fail(cudaError_t err, const char* fn, const char* what);

}  // namespace qatml
