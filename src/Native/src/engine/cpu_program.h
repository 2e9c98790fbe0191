// The CPU form of a loaded plan and the engine's internal modules: plan_loader.cpp (parse and validate, pack the
// weights), passes.cpp (fusion, the CPU program), memory_plan.cpp (liveness and arena offsets), runner.cpp (a run:
// arenas, the context's thread pool, the steps), profile.cpp (QATML_ENGINE_PROFILE) and engine_abi.cpp (the
// qatml_engine_* exports). The runner calls the internal kernel API only: every parameter was validated at load.
#pragma once

#include "engine/engine_internal.h"
#include "kernels/kernel_api.h"

#include <algorithm>
#include <vector>

namespace qatml {
namespace engine {

// One step of a CPU run: a plan op (or a fusion of several) with its kernel prepared at load.
struct Step {
    int kind = 0;                  // QATML_ENGINE_OP_*
    int op = 0;                    // the (first) plan op it runs, for messages and the profile
    int add_op = -1;               // CONV: the ADD fused into its epilogue (b is then the residual), else -1
    uint32_t x = 0, b = 0, y = 0;  // tensors: input, second input (ADD, fused residual), output
    int64_t elements = 0;          // per row: QUANTIZE / DEQUANTIZE / ADD / LUT
    float scale = 1.0f;            // QUANTIZE / DEQUANTIZE
    int32_t zp = 0, type = 0;
    kernels::ConvPlanPtr conv;
    kernels::GemmPlan gemm;
    kernels::PoolPlan pool;
    kernels::GlobalPoolPlan global_pool;
    kernels::AddParams add;
    const uint8_t* lut = nullptr;  // the plan op's table
    std::vector<uint32_t> inputs;  // every tensor the step reads (liveness; CONCAT's inputs)
    kernels::UnaryParams unary;
    kernels::BinaryPlan binary;
    const uint8_t* constant = nullptr;  // BINARY: the constant b (the plan op's data)
    kernels::ConcatPlan concat;
    kernels::CopyPlan copy;
    kernels::PadPlan pad;
    kernels::ResizePlan resize;
    kernels::AxisPlan axis;
    const float *norm_scale = nullptr, *norm_bias = nullptr;  // LAYERNORM
    float epsilon = 0.0f;
    kernels::MatMulPlan matmul;
    kernels::FloatConvPlan float_conv;
    kernels::GatherPlan gather;
    kernels::FloatGemmPlan float_gemm;
    int64_t vectors = 1;             // GEMM / FLOAT_GEMM: vectors per row ([.., K] inputs)
    std::vector<float> float_scale;  // GEMM with a float output: x_scale * w_scale per column
    // Scratch of a run of `rows` rows.
    int64_t scratch_bytes(int64_t rows) const;
};

struct CpuProgram {
    const kernels::SimdKernels* simd = nullptr;  // the loops of the engine's path (nullptr: scalar)
    std::vector<Step> steps;
    std::vector<int64_t> offsets;                    // per tensor: arena offset per row; -1 for plan inputs and outputs
    std::vector<kernels::ActivationLayout> layouts;  // per tensor: how an image is stored (channels-last or plain)
    int64_t arena_per_row = 0, naive_per_row = 0;
    // Activation bytes of a chunk of `rows` rows (64-byte aligned): where its scratch starts.
    int64_t activation_bytes(int64_t rows) const { return kernels::round_up(std::max<int64_t>(arena_per_row, 1) * rows, 64); }
    // Arena bytes of a chunk of `rows` rows: activations, then the largest step's scratch.
    int64_t arena_bytes(int64_t rows) const;
};

constexpr uint32_t kMaxTensors = 1u << 16;
constexpr uint32_t kMaxOps = 1u << 16;
constexpr uint32_t kMaxIo = 1024;
constexpr int64_t kMaxDim = int64_t(1) << 31;

const char* op_name(int kind);
inline bool is_q8(int32_t t) { return t == QATML_TYPE_UINT8 || t == QATML_TYPE_INT8; }
inline bool is_index_type(int32_t t) { return t == QATML_TYPE_INT32 || t == QATML_TYPE_INT64; }

// plan_loader.cpp: validates the plan completely and fills e (tensors, ops, packed weights for e->isa).
qatml_status load_plan(qatml_engine* e, const uint8_t* plan, int64_t plan_bytes, const char* fn);

// passes.cpp
// CONV directly followed by its only reader, a MAXPOOL 2x2 or 3x3 stride 2: one op (the plan form; device
// runners understand it too).
void fuse_conv_maxpool(qatml_engine* e);
// The CPU program of a loaded (and fused) plan: kernels prepared, memory planned.
qatml_status build_cpu_program(qatml_engine* e, const char* fn);
// The kernel plan of one of the wider ops (UNARY .. FLOAT_CONV) in plan order, from the validated op: shapes from the
// tensors, constants and tables pointing into the op's data. The device runner builds its kernels' arguments from it.
void prepare_wider_op(const qatml_engine& e, const plan::Op& op, Step& s, const kernels::SimdKernels* simd);

// memory_plan.cpp: offsets per row for items live from step `first` to step `last` (inclusive; bytes <= 0: no
// memory), greedy best fit in step order, 64-byte aligned. Returns the arena size per row; *naive gets the sum of
// all sizes.
struct Lifetime {
    int first = -1, last = -1;
    int64_t bytes = 0;
};
int64_t plan_offsets(const std::vector<Lifetime>& items, int steps, std::vector<int64_t>* offsets, int64_t* naive);
// The plan-level memory plan (tensor offsets, e->arena_per_row) device runners use.
void plan_memory(qatml_engine* e);

// integer_inputs.cpp: the step of a GATHER, CAST or FLOAT_GEMM op.
void prepare_integer_input_op(const qatml_engine& e, const plan::Op& op, Step& s);

// runner.cpp
qatml_status run_on_cpu(const qatml_engine* e, const qatml_context* ctx, int64_t batch, const float* const* inputs,
                        float* const* outputs, const char* fn);

// profile.cpp: QATML_ENGINE_PROFILE=1 (read once) times every step of every run; the totals go to stderr when the
// engine is destroyed or, for engines still alive, at process exit.
bool profiling();
void profile_attach(qatml_engine* e);
void profile_detach(qatml_engine* e);  // prints
void profile_record(const qatml_engine* e, const std::vector<double>& seconds, size_t parts, int64_t rows);

}  // namespace engine
}  // namespace qatml
