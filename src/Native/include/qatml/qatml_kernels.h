/*
 * qatml_kernels.h - INT8 CPU kernels of libqatml_native (included by qatml.h).
 *
 * Numeric contract: ../shared/reference/quantization-spec.md (ONNX QuantizeLinear/DequantizeLinear,
 * QLinearConv/QLinearMatMul/MatMulInteger/ConvInteger semantics): round half to even, saturation to
 * the output type, int4 packed two per byte with the first element in the low nibble.
 *
 * Contracts of every function here (in addition to those of qatml.h):
 * - Layouts: dense row-major; activations of convolution and pooling are NCHW; conv weights are
 *   [M, C/groups, kH, kW] (ONNX); GEMM B is [K, N] (ONNX MatMul) or [N, K] with trans_b = 1.
 * - Per-channel parameters: the quantize/dequantize/requantize functions see the tensor as
 *   [outer, channels, inner]; scales / zero points have `channels` entries (channels = 1: per tensor).
 * - Memory: the caller allocates all inputs and outputs; the library allocates only packed-weight
 *   handles (qatml_*_pack_*, released by qatml_packed_weights_destroy) and transient scratch.
 *   Outputs must not overlap inputs unless a function says so.
 * - Alignment: int32/float arrays must be aligned to 4 bytes; byte arrays have no requirement.
 * - Sizes are int64 and must be > 0; products are checked for overflow (QATML_INVALID_ARGUMENT).
 * - Context: `ctx` selects the device and thread count; NULL means the CPU with one thread. Only
 *   the CPU has kernels today: a CUDA context gives QATML_UNSUPPORTED (the CUDA kernels will slot in
 *   behind the same functions). Kernels are single-threaded today whatever the context says.
 * - Thread safety: every function may run concurrently on different outputs; a packed-weights
 *   handle is immutable after packing and may be shared by concurrent calls.
 * - Dispatch: packing records the active path (qatml_cpu_active_isa: the best the CPU's features
 *   support at or below the cap) and the packed layout belongs to that path; the elementwise and
 *   pooling kernels take the active path once per call. Every path gives bit-identical results
 *   (tested against the scalar path).
 * - Integer accumulation is in int32 and wraps modulo 2^32 (identically on every path); it cannot
 *   overflow while K * 255 * 128 < 2^31 (K <= 65793), which the ONNX models of interest respect.
 */
#ifndef QATML_QATML_KERNELS_H
#define QATML_QATML_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types. 0 is deliberately invalid so zero-initialised structs are caught. */
typedef enum qatml_dtype {
    QATML_TYPE_UINT8 = 1,
    QATML_TYPE_INT8 = 2,
    QATML_TYPE_INT32 = 3,
    QATML_TYPE_FLOAT32 = 4,
    QATML_TYPE_UINT4 = 5, /* two per byte, first element in the low nibble */
    QATML_TYPE_INT4 = 6,  /* two per byte, first element in the low nibble, two's complement */
    QATML_TYPE_INT64 = 7  /* engine plans only: token ids and masks */
} qatml_dtype;

/* ---- quantize / dequantize / requantize (per tensor or per channel) ------------------------- */

/* QuantizeLinear: y = saturate(round_half_even(x / scale[c]) + zero_point[c]).
 * x: float [outer, channels, inner]; y: out_type in {UINT8, INT8, UINT4, INT4} (4-bit: packed,
 * ceil(n/2) bytes, an odd tail's high nibble is 0). zero_points: NULL = all 0, else `channels`
 * values within the range of out_type. scales: > 0 and finite. Non-finite x as ONNX Runtime (MLAS)
 * quantizes it, bit for bit: NaN and -Inf give the minimum of out_type, +Inf its maximum, whatever
 * the zero point. */
QATML_API qatml_status qatml_quantize_linear(const qatml_context* ctx, const float* x, int64_t outer,
                                             int64_t channels, int64_t inner, const float* scales,
                                             const int32_t* zero_points, int32_t out_type, void* y);

/* DequantizeLinear: y = (x - zero_point[c]) * scale[c] in float32. in_type: UINT8, INT8, INT32,
 * UINT4 or INT4 (packed as above). */
QATML_API qatml_status qatml_dequantize_linear(const qatml_context* ctx, const void* x, int32_t in_type,
                                               int64_t outer, int64_t channels, int64_t inner,
                                               const float* scales, const int32_t* zero_points, float* y);

/* Requantization of int32 accumulators: y = clamp(saturate(round_half_even(float(x + bias[c]) *
 * multiplier[c]) + out_zero_point)). multiplier[c] = float(s_in * s_w[c]) / s_out computed in
 * float32 by the caller (as ONNX Runtime does); must be > 0 and finite. bias: NULL or `channels`
 * int32. out_type UINT8 or INT8. */
QATML_API qatml_status qatml_requantize(const qatml_context* ctx, const int32_t* x, int64_t outer,
                                        int64_t channels, int64_t inner, const int32_t* bias,
                                        const float* multipliers, int32_t out_zero_point, int32_t out_type,
                                        void* y);

/* int4 packing: `count` int8 values (each within [-8,7] if is_signed, else [0,15]) -> ceil(count/2)
 * bytes, first element in the low nibble. Out-of-range values are QATML_INVALID_ARGUMENT. */
QATML_API qatml_status qatml_int4_pack(const int8_t* src, int64_t count, int32_t is_signed, uint8_t* dst);
/* Unpacks ceil(count/2) bytes into `count` int8 values (sign-extended if is_signed). */
QATML_API qatml_status qatml_int4_unpack(const uint8_t* src, int64_t count, int32_t is_signed, int8_t* dst);

/* ---- fused epilogue shared by GEMM and convolution ------------------------------------------ */

/* Applied to every int32 accumulator of output channel c (GEMM: column n; conv: output channel m),
 * after the zero points were compensated:
 *   acc = sum_k (a - a_zero_point) * (w - w_zero_point[c]) + bias[c]
 *   out_type INT32: acc is stored.
 *   out_type UINT8 / INT8: y = round_half_even(float(acc) * multipliers[c]) + out_zero_point,
 *     saturated to the type and, if has_clamp, to [clamp_min, clamp_max] (quantized units: ReLU is
 *     clamp_min = out_zero_point; Clip(lo, hi) is the quantized lo, hi).
 * Initialise it with memset(0) and set the fields you need. */
typedef struct qatml_epilogue {
    int32_t out_type;            /* QATML_TYPE_INT32, _UINT8 or _INT8 */
    const int32_t* bias;         /* NULL or one per channel (scale s_in * s_w[c], zero point 0) */
    const float* multipliers;    /* 8-bit outputs: multiplier_count values (1 = per tensor) */
    int64_t multiplier_count;    /* 1 or the number of output channels */
    int32_t out_zero_point;      /* 8-bit outputs */
    int32_t has_clamp;           /* 0: saturate to the type only */
    int32_t clamp_min, clamp_max;
} qatml_epilogue;

/* ---- packed weights ------------------------------------------------------------------------- */

/* Opaque, immutable packed int8 weights with precomputed per-channel sums. Owned by the library. */
typedef struct qatml_packed_weights qatml_packed_weights;

/* Packs GEMM weights B (int8 or packed int4) once. trans_b = 0: B is [K, N]; 1: B is [N, K] (ONNX
 * Gemm transB, conv-like). b_zero_points: NULL (symmetric weights, the recommended form) or N
 * per-column values in the range of b_type (MatMulInteger's b_zero_point). int4 weights are widened
 * to int8 in the packed form. */
QATML_API qatml_status qatml_gemm_pack_b(const qatml_context* ctx, const void* b, int32_t b_type, int64_t k,
                                         int64_t n, int32_t trans_b, const int32_t* b_zero_points,
                                         qatml_packed_weights** out_packed);

/* C[M, N] = epilogue(A[M, K] x B) with A uint8 or int8 (a_type), row stride lda >= K elements, zero
 * point a_zero_point within a_type's range. C has row stride ldc >= N elements of epilogue->out_type. */
QATML_API qatml_status qatml_gemm(const qatml_context* ctx, int64_t m, const void* a, int32_t a_type, int64_t lda,
                                  int32_t a_zero_point, const qatml_packed_weights* b,
                                  const qatml_epilogue* epilogue, void* c, int64_t ldc);

/* Packs convolution weights W [M, C/groups, kH, kW] (INT8 or INT4 packed) once. w_zero_points:
 * NULL or M values (ConvInteger's w_zero_point, per output channel). M must be a multiple of groups. */
QATML_API qatml_status qatml_conv_pack_weights(const qatml_context* ctx, const void* w, int32_t w_type,
                                               int64_t out_channels, int64_t in_channels_per_group,
                                               int64_t kernel_h, int64_t kernel_w, int64_t groups,
                                               const int32_t* w_zero_points, qatml_packed_weights** out_packed);

/* Geometry of a 2-D convolution or pooling over NCHW activations. */
typedef struct qatml_conv2d_params {
    int64_t batch, channels, height, width; /* input N, C, H, W */
    int64_t stride_h, stride_w;             /* >= 1 */
    int64_t pad_top, pad_left, pad_bottom, pad_right; /* >= 0 */
    int64_t dilation_h, dilation_w;         /* >= 1 */
} qatml_conv2d_params;

/* Output height and width for a kernel of kernel_h x kernel_w (OH = (H + pt + pb - dh*(kh-1) - 1) /
 * sh + 1); QATML_INVALID_ARGUMENT if empty. */
QATML_API qatml_status qatml_conv2d_output_size(const qatml_conv2d_params* params, int64_t kernel_h,
                                                int64_t kernel_w, int64_t* out_h, int64_t* out_w);

/* QLinearConv / ConvInteger: y[N, M, OH, OW] = epilogue(conv(x - x_zero_point, w - w_zp)).
 * x: [N, C, H, W] of x_type (UINT8 or INT8); padding reads the input zero point (real 0).
 * params->channels must equal in_channels_per_group * groups of the packed weights. Depthwise
 * convolutions (groups == C == M) take a direct kernel. */
QATML_API qatml_status qatml_conv2d(const qatml_context* ctx, const qatml_conv2d_params* params, const void* x,
                                    int32_t x_type, int32_t x_zero_point, const qatml_packed_weights* w,
                                    const qatml_epilogue* epilogue, void* y);

/* qatml_conv2d followed by a MaxPool of stride 2 on its output, in one call: pool_kernel 2 (2x2, no padding) or
 * 3 (3x3, each pad 0 or 1); pool_pads = {top, left, bottom, right} (NULL: none). y is [N, M, PH, PW] with
 * PH = (OH + top + bottom - pool_kernel) / 2 + 1 (floor, as ONNX without ceil_mode), equal to qatml_conv2d then
 * qatml_pool2d(QATML_POOL_MAX, ...) with those pads: requantization
 * is non-decreasing, so pooling the 8-bit outputs is pooling the real values. The output must be UINT8 or INT8.
 * On AVX-512 VNNI without weight zero points the pool runs inside the convolution's output pass; elsewhere a
 * scratch tensor of the full output is allocated. */
QATML_API qatml_status qatml_conv2d_maxpool(const qatml_context* ctx, const qatml_conv2d_params* params, const void* x,
                                            int32_t x_type, int32_t x_zero_point, const qatml_packed_weights* w,
                                            const qatml_epilogue* epilogue, int64_t pool_kernel, const int64_t* pool_pads,
                                            void* y);

/* Releases packed weights; NULL is accepted. A stale handle is QATML_INVALID_HANDLE. */
QATML_API qatml_status qatml_packed_weights_destroy(qatml_packed_weights* packed);

/* Facts about packed weights: the ISA whose layout they use, K (reduction length) and N (output
 * channels), and the bytes they occupy. Any out pointer may be NULL. */
QATML_API qatml_status qatml_packed_weights_info(const qatml_packed_weights* packed, int32_t* out_isa,
                                                 int64_t* out_k, int64_t* out_n, int64_t* out_bytes);

/* ---- pooling and elementwise ---------------------------------------------------------------- */

typedef enum qatml_pool_kind { QATML_POOL_MAX = 1, QATML_POOL_AVERAGE = 2 } qatml_pool_kind;

/* MaxPool / QLinearAveragePool over NCHW (type UINT8 or INT8). Max pooling ignores padding and the
 * quantization parameters (the output shares the input's). Average pooling: sum of (x - x_zp) over
 * the window (padded cells count as 0 and are counted when count_include_pad), then
 * y = saturate(round_half_even(float(sum) * (x_scale / (y_scale * float(count)))) + y_zp). */
QATML_API qatml_status qatml_pool2d(const qatml_context* ctx, int32_t kind, const qatml_conv2d_params* params,
                                    int64_t kernel_h, int64_t kernel_w, int32_t count_include_pad, const void* x,
                                    int32_t type, float x_scale, int32_t x_zero_point, float y_scale,
                                    int32_t y_zero_point, void* y);

/* QLinearGlobalAveragePool over NCHW: y[n, c] as average pooling over the whole H*W plane. */
QATML_API qatml_status qatml_global_average_pool(const qatml_context* ctx, const void* x, int32_t type,
                                                 int64_t batch, int64_t channels, int64_t spatial, float x_scale,
                                                 int32_t x_zero_point, float y_scale, int32_t y_zero_point,
                                                 void* y);

/* QLinearAdd of two tensors of `count` elements of one type (UINT8 or INT8), no broadcasting:
 * y = saturate(round_half_even(float(a - za) * (sa / sy) + float(b - zb) * (sb / sy)) + zy),
 * each product and the sum rounded to float32 (no fused multiply-add). y may alias a or b. */
QATML_API qatml_status qatml_add(const qatml_context* ctx, const void* a, float a_scale, int32_t a_zero_point,
                                 const void* b, float b_scale, int32_t b_zero_point, int32_t type, int64_t count,
                                 float y_scale, int32_t y_zero_point, void* y);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* QATML_QATML_KERNELS_H */
