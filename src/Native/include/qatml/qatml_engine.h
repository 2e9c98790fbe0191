/*
 * qatml_engine.h - the native INT8 inference engine of libqatml_native (included by qatml.h).
 *
 * An engine runs a whole quantized network: the managed side lowers a QDQ ONNX model into a *plan*
 * (a flat binary description of integer ops, below), qatml_engine_create validates it completely,
 * packs the weights once and plans the activation memory, and qatml_engine_run executes a batch of
 * rows in one call.
 *
 * Contracts (in addition to those of qatml.h and qatml_kernels.h):
 * - Plan loading never trusts its input: every count, index, size, type, scale, zero point and
 *   shape is checked before use; a malformed plan is QATML_INVALID_ARGUMENT with a message naming
 *   the byte offset or op, never a crash or an out-of-bounds read.
 * - Numbers: every op follows the kernel it runs (qatml_kernels.h); requantization multipliers are
 *   computed here as float32 (x_scale * w_scale[c]) / y_scale, the order ONNX Runtime uses.
 * - Thread safety: an engine is immutable after creation; qatml_engine_run may be called from any
 *   number of threads at once on the same engine (each run takes its own activation arena from a
 *   pool) and gives identical results. Destroying an engine while a run uses it is the caller's bug.
 * - Threads: a run uses the thread count of its context (NULL: one thread); the batch is split into
 *   contiguous row ranges, one per thread, each running the whole plan. Results do not depend on
 *   the thread count.
 * - Memory: the caller owns the float input and output buffers ([batch, row elements], dense); the
 *   engine owns packed weights, constants and arenas (released by qatml_engine_destroy).
 * - Devices: an engine created on a CUDA context (CUDA builds, a GPU of compute capability 8.0 or newer) is
 *   loaded for the CPU as usual and its weights are also uploaded once to that GPU. A run with that CUDA
 *   context (or another context of the same GPU) executes on the GPU, on the context's stream: the inputs are
 *   staged through the context's pinned host buffer into its device arena (planned per row at load, grown to
 *   the largest batch seen), every op runs as GPU kernels, the outputs come back the same way, and the call
 *   returns when they are written. Results are bit-identical to the CPU's. Runs on one context are serialised;
 *   runs on different contexts proceed concurrently. A run with NULL or a CPU context runs on the CPU.
 *
 * Plan format, version 1. Little-endian; no padding; i32/u32/i64/f32 as named.
 *   header:  char magic[4] = "QEP1"; u32 version = 1; u32 tensor_count; u32 op_count;
 *            u32 input_count; u32 output_count
 *   tensors: tensor_count x { u32 dtype (QATML_TYPE_FLOAT32, _UINT8 or _INT8); u32 rank (1..4);
 *            i64 dims[rank] } - the per-row shape; every tensor is [batch, dims...] at run time.
 *   inputs:  input_count x u32 tensor id (FLOAT32 tensors the caller fills)
 *   outputs: output_count x u32 tensor id (FLOAT32 tensors the caller receives)
 *   ops:     op_count x { u32 kind (qatml_engine_op); u32 payload_bytes; payload }
 * Each tensor other than an input is written by exactly one op, before any op reads it; inputs are
 * never written. Payloads ("q" = f32 scale, i32 zero point):
 *   QUANTIZE     u32 x, y; q y                      float -> u8/s8 (per tensor), any shape
 *   DEQUANTIZE   u32 x, y; q x                      u8/s8 -> float
 *   CONV         u32 x, y; q x; q y; i64 M, C/g, kH, kW, groups, sh, sw, pt, pl, pb, pr, dh, dw;
 *                u32 w_type (INT8 | INT4); u32 has_w_zero_points; u32 has_bias;
 *                f32 w_scales[M]; [i32 w_zero_points[M]]; [i32 bias[M]];
 *                weights [M, C/g, kH, kW] (int8 bytes, or int4 packed two per byte)
 *                x is [C, H, W]; y must be [M, OH, OW].
 *   GEMM         u32 x, y; q x; q y; i64 K, N; u32 trans_b; u32 w_type; u32 has_w_zero_points;
 *                u32 has_bias; u32 scale_count (1 | N); f32 w_scales[scale_count];
 *                [i32 w_zero_points[N]]; [i32 bias[N]]; weights [K, N] or [N, K] (trans_b)
 *                x has K elements per row; y must be [N].
 *   MAXPOOL,     u32 x, y; q x; q y; i64 kH, kW, sh, sw, pt, pl, pb, pr, dh, dw;
 *   AVGPOOL      u32 count_include_pad. x is [C, H, W]; y must be [C, OH, OW]. MAXPOOL needs
 *                equal x and y quantization (the plan maps a change through a LUT op).
 *   GLOBAL_AVGPOOL u32 x, y; q x; q y. x is [C, H, W]; y must have C elements.
 *   ADD          u32 a, b, y; q a; q b; q y. Same element count and type everywhere.
 *   LUT          u32 x, y; u8 table[256]. y[i] = table[byte of x[i]]; same element count.
 */
#ifndef QATML_QATML_ENGINE_H
#define QATML_QATML_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum qatml_engine_op {
    QATML_ENGINE_OP_QUANTIZE = 1,
    QATML_ENGINE_OP_DEQUANTIZE = 2,
    QATML_ENGINE_OP_CONV = 3,
    QATML_ENGINE_OP_GEMM = 4,
    QATML_ENGINE_OP_MAXPOOL = 5,
    QATML_ENGINE_OP_AVGPOOL = 6,
    QATML_ENGINE_OP_GLOBAL_AVGPOOL = 7,
    QATML_ENGINE_OP_ADD = 8,
    QATML_ENGINE_OP_LUT = 9
} qatml_engine_op;

#define QATML_ENGINE_PLAN_VERSION 1

/* Opaque loaded plan. Owned by the library. */
typedef struct qatml_engine qatml_engine;

/* Facts about a loaded engine. */
typedef struct qatml_engine_info {
    int32_t input_count, output_count, op_count, tensor_count;
    int64_t weight_bytes;        /* packed weights, biases and multipliers held by the engine */
    int64_t arena_bytes_per_row; /* activation memory one row needs (after reuse by liveness) */
    int64_t naive_bytes_per_row; /* the same without reuse: every intermediate tensor on its own */
} qatml_engine_info;

/* Validates and loads `plan` (plan_bytes bytes, format above): packs every weight for the ISA active
 * now and plans activation memory. ctx: NULL, a CPU context, or a CUDA context (the engine is also
 * uploaded to that GPU; see Devices above). */
QATML_API qatml_status qatml_engine_create(const qatml_context* ctx, const void* plan, int64_t plan_bytes,
                                           qatml_engine** out_engine);

/* Releases an engine; NULL is accepted. A stale handle is QATML_INVALID_HANDLE. */
QATML_API qatml_status qatml_engine_destroy(qatml_engine* engine);

QATML_API qatml_status qatml_engine_get_info(const qatml_engine* engine, qatml_engine_info* out_info);

/* Elements per row of input (is_output = 0) or output (is_output = 1) number `index`. */
QATML_API qatml_status qatml_engine_io_row_size(const qatml_engine* engine, int32_t is_output, int32_t index,
                                                int64_t* out_elements);

/* Runs `batch` rows: inputs[i] is [batch, row elements of input i] float32, outputs[j] likewise
 * (written). input_count / output_count must equal the plan's; buffers must not overlap each other.
 * ctx: NULL (one thread), a CPU context whose thread count splits the batch, or a CUDA context of the GPU
 * the engine was created on. */
QATML_API qatml_status qatml_engine_run(const qatml_engine* engine, const qatml_context* ctx, int64_t batch,
                                        const float* const* inputs, int32_t input_count, float* const* outputs,
                                        int32_t output_count);

/* qatml_engine_run on data already in GPU memory: device_inputs / device_outputs are device pointers of
 * the CUDA context's GPU (dense [batch, row elements] float32, 4-byte aligned), no host staging. ctx must be
 * a CUDA context of the engine's GPU. Returns when the outputs are written. */
QATML_API qatml_status qatml_engine_run_device(const qatml_engine* engine, const qatml_context* ctx, int64_t batch,
                                               const float* const* device_inputs, int32_t input_count,
                                               float* const* device_outputs, int32_t output_count);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* QATML_QATML_ENGINE_H */
