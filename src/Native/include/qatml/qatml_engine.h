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
 * - Memory: the caller owns the input buffers ([batch, row elements], dense, of the input's type: float32, or
 *   int32 / int64 token ids passed through the same pointer array) and the float output buffers; the
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
 *   tensors: tensor_count x { u32 dtype (QATML_TYPE_FLOAT32, _UINT8, _INT8, _INT32 or _INT64); u32 rank (1..4);
 *            i64 dims[rank] } - the per-row shape; every tensor is [batch, dims...] at run time. INT32 / INT64
 *            tensors (token ids, masks) are plan inputs or CAST outputs and are read only by GATHER and CAST.
 *   inputs:  input_count x u32 tensor id (FLOAT32, INT32 or INT64 tensors the caller fills)
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
 *                x is [.., K] per row (m vectors of K), y [.., N] (m vectors of N). A FLOAT32 y (q y = 1, 0) is
 *                ONNX Runtime's MatMulIntegerToFloat: float(int32 sum) * (x_scale * w_scale[c]).
 *   MAXPOOL,     u32 x, y; q x; q y; i64 kH, kW, sh, sw, pt, pl, pb, pr, dh, dw;
 *   AVGPOOL      u32 count_include_pad. x is [C, H, W]; y must be [C, OH, OW]. MAXPOOL needs
 *                equal x and y quantization (the plan maps a change through a LUT op).
 *   GLOBAL_AVGPOOL u32 x, y; q x; q y. x is [C, H, W]; y must have C elements.
 *   ADD          u32 a, b, y; q a; q b; q y. Same element count and type everywhere.
 *   LUT          u32 x, y; u8 table[256]. y[i] = table[byte of x[i]]; same element count.
 * Float segments (ops the model leaves in float run between a DEQUANTIZE and a QUANTIZE of intermediate tensors)
 * and the ops of wider models:
 *   UNARY        u32 x, y; u32 func (qatml_engine_unary); f32 alpha, beta. FLOAT32 in and out, same element count.
 *                HARD_SIGMOID: max(0, min(1, alpha x + beta)); HARD_SWISH: x max(0, min(1, x / 6 + 0.5));
 *                LEAKY_RELU: x < 0 ? alpha x : x; CLIP: min(max(x, alpha), beta); GELU: 0.5 x (1 + erf(x / sqrt 2)).
 *   BINARY       u32 a, b, y; u32 func (qatml_engine_binary); u32 b_const;
 *                [b_const: u32 rank (1..4); i64 dims[rank]; values: f32 (float ops) or the bytes of a's type];
 *                [8-bit y: q a; q b; q y]. NumPy broadcasting over the per-row shapes (right-aligned; a constant b
 *                has no batch dimension); y's shape is the broadcast shape. FLOAT32: every func; UINT8 / INT8 (a, b
 *                and y one type): ADD (QLinearAdd's formula, as the ADD op) and MUL (QLinearMul: the exact product,
 *                float(product) * ((sa * sb) / sy) + zy, rounded and saturated).
 *   CONCAT       u32 y; u32 axis (of the per-row shape); u32 count (1..1024); count x { u32 x; u32 has_table;
 *                [u8 table[256]] }. One type; 8-bit inputs may carry a table (requantization to y's
 *                quantization); the shapes agree except along axis, whose sizes add up to y's.
 *   COPY         u32 x, y; u32 rank (1..6); i64 dims[rank]; i64 offset; i64 strides[rank]. y (dense, in the order of
 *                dims) = x[offset + sum_k i_k strides[k]] per row; one type; every read inside x's row: Transpose,
 *                Slice, Split (one COPY per output), DepthToSpace, Expand.
 *   PAD          u32 x, y; i64 pads[2 * rank of x] (begins, then ends; >= 0); i64 steps[rank of x] (>= 1); u32 value
 *                (float: its f32 bits; 8-bit: the byte). y is filled with value, then x element i of each dim lands
 *                at begin + i * step (steps > 1 insert value between elements: the zero insertion of ConvTranspose);
 *                y's dims are begin + (x - 1) * step + 1 + end.
 *   RESIZE       u32 x, y; u32 mode (1 nearest, 2 bilinear). x [C, H, W], y [C, OH, OW] (one type).
 *                nearest: i32 rows[OH], cols[OW] (the source row and column of each output);
 *                bilinear: per output row i32 y0, y1, f32 dy; per output column i32 x0, x1, f32 dx:
 *                (1-dy)(1-dx) x[y0,x0] + (1-dy) dx x[y0,x1] + dy (1-dx) x[y1,x0] + dy dx x[y1,x1] in float (8-bit:
 *                rounded half to even and saturated).
 *   SOFTMAX      u32 x, y; u32 axis. FLOAT32; over `axis` of the per-row shape (max subtracted first).
 *   LAYERNORM    u32 x, y; u32 axis; f32 epsilon; u32 has_bias; f32 scale[n]; [f32 bias[n]] (n: the product of the
 *                dims from axis on). FLOAT32; mean and variance over those dims.
 *   MATMUL       u32 a, b, y; [8-bit y: q a; q b; q y]. a [.., M, K], b [.., K, N] (activations; leading dims equal or
 *                b's absent), y [.., M, N]. FLOAT32, or 8-bit a and b (any of UINT8 / INT8) with an 8-bit y: the exact
 *                int32 sum of (a - za)(b - zb), requantized with (sa * sb) / sy.
 *   REDUCE_MEAN  u32 x, y; u32 axis; u32 count. FLOAT32; the mean over count dims from axis on (y keeps the others).
 *   FLOAT_CONV   u32 x, y; i64 M, C/g, kH, kW, groups, sh, sw, pt, pl, pb, pr, dh, dw; u32 has_bias;
 *                f32 weights[M, C/g, kH, kW]; [f32 bias[M]]. A float32 convolution (x [C, H, W], y [M, OH, OW]).
 * Integer inputs (token ids, attention masks):
 *   GATHER       u32 y; u32 constant_indices; [0: u32 indices (an INT32 / INT64 tensor)]
 *                [1: i64 count; i64 indices[count]]; i64 rows; i64 row_elements; table[rows * row_elements] (the
 *                bytes of y's type: FLOAT32, UINT8 or INT8). Embedding rows: y = table rows at the indices, one after
 *                another; y.elems = (indices per row) * row_elements. An index i in -rows..rows-1 (negative from the
 *                end, as ONNX); constant indices are checked at load, tensor indices at run time: one outside fails
 *                the run with QATML_INVALID_ARGUMENT naming the op, row, position and value (outputs unspecified).
 *   CAST         u32 x, y. x INT32 / INT64, y FLOAT32 / INT32 / INT64 (another type), same element count: the value
 *                converted (int64 -> int32 keeps the low 32 bits, as ONNX Runtime's static_cast).
 *   FLOAT_GEMM   u32 x, y; i64 K, N; u32 has_bias; f32 weights[K, N]; [f32 bias[N]]. FLOAT32 x [.., K], y [.., N]:
 *                a float MatMul with constant weights (and a bias added after the sum).
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
    QATML_ENGINE_OP_LUT = 9,
    QATML_ENGINE_OP_UNARY = 10,
    QATML_ENGINE_OP_BINARY = 11,
    QATML_ENGINE_OP_CONCAT = 12,
    QATML_ENGINE_OP_COPY = 13,
    QATML_ENGINE_OP_PAD = 14,
    QATML_ENGINE_OP_RESIZE = 15,
    QATML_ENGINE_OP_SOFTMAX = 16,
    QATML_ENGINE_OP_LAYERNORM = 17,
    QATML_ENGINE_OP_MATMUL = 18,
    QATML_ENGINE_OP_REDUCE_MEAN = 19,
    QATML_ENGINE_OP_FLOAT_CONV = 20,
    QATML_ENGINE_OP_GATHER = 21,
    QATML_ENGINE_OP_CAST = 22,
    QATML_ENGINE_OP_FLOAT_GEMM = 23
} qatml_engine_op;

/* UNARY functions. */
typedef enum qatml_engine_unary {
    QATML_UNARY_RELU = 1,
    QATML_UNARY_SIGMOID = 2,
    QATML_UNARY_TANH = 3,
    QATML_UNARY_HARD_SIGMOID = 4,
    QATML_UNARY_HARD_SWISH = 5,
    QATML_UNARY_LEAKY_RELU = 6,
    QATML_UNARY_CLIP = 7,
    QATML_UNARY_ERF = 8,
    QATML_UNARY_GELU = 9,
    QATML_UNARY_EXP = 10,
    QATML_UNARY_LOG = 11,
    QATML_UNARY_SQRT = 12,
    QATML_UNARY_NEG = 13,
    QATML_UNARY_ABS = 14,
    QATML_UNARY_RECIPROCAL = 15,
    QATML_UNARY_SOFTPLUS = 16,
    QATML_UNARY_IDENTITY = 17
} qatml_engine_unary;

/* BINARY functions (8-bit: ADD and MUL). */
typedef enum qatml_engine_binary {
    QATML_BINARY_ADD = 1,
    QATML_BINARY_SUB = 2,
    QATML_BINARY_MUL = 3,
    QATML_BINARY_DIV = 4,
    QATML_BINARY_POW = 5,
    QATML_BINARY_MAX = 6,
    QATML_BINARY_MIN = 7
} qatml_engine_binary;

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

/* The element type (qatml_dtype: FLOAT32, or INT32 / INT64 for token inputs) of input (is_output = 0) or output
 * (is_output = 1) number `index`: what its buffer holds. */
QATML_API qatml_status qatml_engine_io_type(const qatml_engine* engine, int32_t is_output, int32_t index, int32_t* out_dtype);

/* Runs `batch` rows: inputs[i] is [batch, row elements of input i] of that input's type (float32, or int32 /
 * int64 passed through the same pointer array), outputs[j] [batch, row elements] float32 (written).
 * input_count / output_count must equal the plan's; buffers must not overlap each other. A GATHER index
 * outside its table fails the run (QATML_INVALID_ARGUMENT naming op, row and value; outputs unspecified).
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
