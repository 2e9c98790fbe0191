// Helpers of the GPU tests: the skip when no suitable GPU is present, and device buffers.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace qatml_test {

// Empty when a CUDA GPU of compute capability 8.0 or newer is usable, else why not.
inline std::string gpu_missing() {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) return std::string("no usable CUDA driver or GPU (") + cudaGetErrorString(err) + ")";
    if (count == 0) return "no CUDA GPU";
    int major = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
    if (major < 8) return "CUDA device 0 is older than compute capability 8.0";
    return {};
}

#define QATML_REQUIRE_GPU()                                                                         \
    do {                                                                                           \
        const std::string why = ::qatml_test::gpu_missing();                                       \
        if (!why.empty()) GTEST_SKIP() << "GPU test skipped: " << why;                             \
    } while (0)

// Device copy of a host vector (or `bytes` uninitialised bytes); freed on scope exit.
struct DeviceBuffer {
    void* ptr = nullptr;
    size_t bytes = 0;
    explicit DeviceBuffer(size_t n) : bytes(n) { EXPECT_EQ(cudaMalloc(&ptr, n ? n : 1), cudaSuccess); }
    template <typename T>
    explicit DeviceBuffer(const std::vector<T>& v) : DeviceBuffer(v.size() * sizeof(T)) {
        if (!v.empty()) EXPECT_EQ(cudaMemcpy(ptr, v.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() { cudaFree(ptr); }
    template <typename T>
    T* as() const {
        return static_cast<T*>(ptr);
    }
    template <typename T>
    std::vector<T> download() const {
        std::vector<T> v(bytes / sizeof(T));
        EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        if (!v.empty()) EXPECT_EQ(cudaMemcpy(v.data(), ptr, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
        return v;
    }
};

}  // namespace qatml_test
