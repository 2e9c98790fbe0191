// The loaded form of an engine plan (plan_loader.cpp), shared with the device plan runner (src/cuda): tensors with
// their liveness and arena offsets, ops with their validated parameters, and the hooks a device runner provides.
// The CPU runs its own program compiled from it (cpu_program.h: fused steps with prepared kernels).
#pragma once

#include "kernels/abi_util.h"

#include <memory>
#include <mutex>
#include <vector>

namespace qatml {
namespace plan {

struct Tensor {
    int32_t dtype = 0;
    int rank = 0;
    int64_t dims[4] = {0, 0, 0, 0};
    int64_t elems = 0;     // per row
    int64_t bytes = 0;     // per row
    int def = -2;          // op that writes it; -1 = plan input; -2 = never written
    int last_use = -1;     // last op that reads it
    int input_index = -1;  // plan input / output index, else -1
    int output_index = -1;
    int64_t offset = -1;  // arena offset per row (intermediates)
};

struct QParam {
    float scale = 1.0f;
    int32_t zp = 0;
};

struct Op {
    int kind = 0;
    uint32_t x = 0, b = 0, y = 0;
    QParam qx, qb, qy;
    qatml_conv2d_params p{};  // conv / pools (batch set per run)
    int64_t kh = 1, kw = 1, k = 0, n = 0;
    int32_t count_include_pad = 0;
    std::unique_ptr<qatml_packed_weights> w;  // packed at load for the engine's CPU path
    int pool = 0;                             // CONV: a fused MaxPool (fuse_conv_maxpool): 2 = 2x2 stride 2, 3 = 3x3 stride 2 with pool_pads
    int64_t pool_pads[4] = {0, 0, 0, 0};
    std::vector<int32_t> bias;
    std::vector<float> mult;
    uint8_t lut[256] = {};
    // CONV / GEMM weights as the plan stores them, for device runners that pack their own layout.
    // raw_weights points into the caller's plan and is valid only inside qatml_engine_create.
    const uint8_t* raw_weights = nullptr;
    uint32_t w_type = 0;                 // QATML_TYPE_INT8 or _INT4
    uint32_t trans_b = 0;                // GEMM: weights are [N, K]
    int64_t groups = 1, cpg = 0;         // CONV: groups, input channels per group
    std::vector<int32_t> w_zero_points;  // empty: all zero
    // Every tensor the op reads (x, b, the inputs of a CONCAT), in order; passes use it for readers and liveness.
    std::vector<uint32_t> inputs;
    // UNARY / BINARY function and parameters; the int64 parameters (shapes, strides, axes) and byte or float data
    // (constants, tables, resize maps) of the wider ops, as the loader validated them (see cpu_program.h).
    int32_t func = 0;
    bool b_const = false;  // BINARY: b is the constant in data, not a tensor
    float alpha = 0.0f, beta = 0.0f;
    std::vector<int64_t> params;
    std::vector<uint8_t> data;
};

}  // namespace plan

namespace engine {
struct CpuProgram;  // cpu_program.h
struct CpuProgramDeleter {
    void operator()(CpuProgram* p) const;
};
}  // namespace engine

// Device plan runners (src/cuda/cuda_engine.cpp; core/cuda_stub.cpp in CPU builds). An engine created on a
// CUDA context is loaded for the CPU as usual and also attached to that device (weights uploaded once).
struct DeviceEngine;
qatml_status cuda_engine_attach(qatml_engine* engine, const qatml_context* ctx, const char* fn);
qatml_status cuda_engine_run(const qatml_engine* engine, const qatml_context* ctx, int64_t batch, const float* const* inputs,
                             float* const* outputs, bool device_pointers, const char* fn);
void cuda_engine_release(DeviceEngine* device);

}  // namespace qatml

struct qatml_engine {
    qatml::HandleKind kind = qatml::HandleKind::Engine;
    std::vector<qatml::plan::Tensor> tensors;
    std::vector<qatml::plan::Op> ops;
    std::vector<uint32_t> inputs, outputs;
    // Activation memory of the plan as loaded (tensor offsets; what a device runner uses), and the packed weights.
    int64_t arena_per_row = 0, naive_per_row = 0, weight_bytes = 0;
    int32_t isa = QATML_ISA_SCALAR;                                                    // the CPU path the weights were packed for at load
    std::unique_ptr<qatml::engine::CpuProgram, qatml::engine::CpuProgramDeleter> cpu;  // what a CPU run executes
    mutable std::mutex pool_mutex;
    mutable std::vector<qatml::kernels::AlignedBuffer*> pool;  // idle arenas
    // QATML_ENGINE_PROFILE=1: accumulated seconds per CPU step, runs and rows (under pool_mutex).
    mutable std::vector<double> profile_seconds;
    mutable int64_t profile_runs = 0, profile_rows = 0;
    qatml_device device{QATML_DEVICE_CPU, 0};  // where it was created; CUDA engines also run on the CPU
    qatml::DeviceEngine* device_engine = nullptr;

    ~qatml_engine() {
        for (qatml::kernels::AlignedBuffer* a : pool) delete a;
        if (device_engine) qatml::cuda_engine_release(device_engine);
    }
};
