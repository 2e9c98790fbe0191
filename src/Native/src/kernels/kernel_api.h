// The internal kernel API: what the engine calls, and what the validating qatml_* exports wrap.
// Nothing here validates or allocates per call: the exports (or the plan loader) check every parameter
// once, an op is *prepared* once (algorithm chosen, requantization arrays and offsets computed, the ISA
// fixed), and every run gets the scratch memory the prepared op asked for from its caller (64-byte aligned;
// the engine carves it from its arenas). Baseline code only: never include this from an ISA translation unit.
#pragma once

#include "kernels/abi_util.h"
#include "kernels/op_math.h"

#include <memory>
#include <vector>

namespace qatml {
namespace kernels {

// Carves one caller-provided scratch region into 64-byte aligned parts; offsets are fixed at prepare time.
struct ScratchLayout {
    int64_t bytes = 0;
    int64_t take(int64_t n) {
        const int64_t at = bytes;
        bytes += round_up(n > 0 ? n : 0, 64);
        return at;
    }
};

// Tuning switches, read from the environment once per process (never in a kernel's hot path).
struct Tuning {
    int conv_lanes = 0;  // QATML_CONV_LANES: 1 = channels, -1 = pixels, 0 = the heuristic
};
const Tuning& tuning();

// ---- elementwise -------------------------------------------------------------------------------------------
// `simd`: the vector loops of the path the caller fixed (simd_for_isa), nullptr for the scalar reference.

// QuantizeLinear of n floats to 8 bits (type UINT8 or INT8), one scale and zero point.
void quantize_8bit(const SimdKernels* simd, const float* x, int64_t n, float scale, int32_t zp, int32_t type, void* y);
// DequantizeLinear of n 8-bit or int32 values.
void dequantize_values(const SimdKernels* simd, const void* x, int32_t type, int64_t n, float scale, int32_t zp, float* y);

// QLinearAdd parameters in kernel terms (add_params checks nothing).
struct AddParams {
    bool is_signed = false;
    int32_t za = 0, zb = 0, zy = 0, lo = 0, hi = 0;
    float ra = 1.0f, rb = 1.0f;  // a_scale / y_scale, b_scale / y_scale
};
AddParams add_params(int32_t type, float a_scale, int32_t a_zp, float b_scale, int32_t b_zp, float y_scale, int32_t y_zp);
// y = QLinearAdd(a, b) over n elements; y may alias a or b.
void add_8bit(const SimdKernels* simd, const AddParams& p, const void* a, const void* b, int64_t n, void* y);
// The scalar QLinearAdd of one pair (the reference every path matches).
inline int32_t add_one(const AddParams& p, int32_t a, int32_t b) {
    return math::add_q8(a, b, p.za, p.zb, p.ra, p.rb, p.zy, p.lo, p.hi);  // no FMA: kernels build with -ffp-contract=off
}

// y[i] = table[x[i]] (any 8-bit types; y may alias x).
void lut_bytes(const uint8_t* table, const uint8_t* x, int64_t n, uint8_t* y);

// ---- activation layouts ------------------------------------------------------------------------------------

// Where a tensor's bytes sit in memory, per image. Plain: dense NCHW (the logical row-major order).
// Channels-last: [hp][wp][cs] bytes, the interior [H][W] at row pt, column pl, surrounded by padding that holds the
// tensor's zero point (readers take it for the convolution's own padding); channels c >= C of a pixel are never
// read. Convolutions on the channel-lane kernel read and write it directly: no per-convolution interleave of the
// input, no transpose of the output.
struct ActivationLayout {
    bool channels_last = false;
    int64_t pt = 0, pl = 0, pb = 0, pr = 0;
    int64_t hp = 0, wp = 0, cs = 0;
    int64_t image_bytes = 0;  // per image (both layouts)
};
ActivationLayout plain_layout(int64_t c, int64_t h, int64_t w);
// cs: C rounded up to 16 (the kernel writes whole 16-channel vectors).
ActivationLayout channels_last_layout(int64_t c, int64_t h, int64_t w, int64_t pt, int64_t pl, int64_t pb, int64_t pr);
bool same_layout(const ActivationLayout& a, const ActivationLayout& b);
// Writes `value` into the padding of one channels-last image of h x w pixels (the interior is left alone).
void fill_channels_last_border(const ActivationLayout& l, int64_t h, int64_t w, uint8_t value, uint8_t* image);

// ---- float segments, broadcasting, data movement, matmul (ops_*.cpp; baseline code) --------------------------
// Float ops are what a model leaves in float between a DequantizeLinear and a QuantizeLinear; they compute in float32
// as ONNX defines them (libm's functions; no fast approximations), so they match ONNX Runtime's float kernels to
// float rounding.

struct UnaryParams {
    int32_t func = 0;  // qatml_engine_unary
    float alpha = 0.0f, beta = 0.0f;
};
float unary_one(const UnaryParams& p, float x);
void unary_f32(const UnaryParams& p, const float* x, int64_t n, float* y);

// Broadcast binary over one row: y [dims] = f(a, b), a and b indexed by strides (0 along broadcast dims). Rows of y
// follow each other; a advances by a_row per row, b by b_row (0: a constant).
struct BinaryPlan {
    int32_t func = 0;  // qatml_engine_binary
    int32_t type = 0;  // y's type: FLOAT32, UINT8 or INT8
    int rank = 0;      // after merging dims (1..4)
    int64_t dims[4] = {1, 1, 1, 1}, a_strides[4] = {0, 0, 0, 0}, b_strides[4] = {0, 0, 0, 0};
    int64_t a_row = 0, b_row = 0, y_row = 0;
    const SimdKernels* simd = nullptr;
    AddParams add;              // 8-bit ADD
    float mul_ratio = 1.0f;     // 8-bit MUL: (sa * sb) / sy
    int64_t scratch_bytes = 0;  // 8-bit with a broadcast operand: the longest inner run, replicated
};
// Dims are per row, right-aligned against y's (missing leading dims are 1); each a / b dim is 1 or y's.
void binary_prepare(BinaryPlan& plan, int32_t func, int32_t type, const int64_t* a_dims, int a_rank, const int64_t* b_dims, int b_rank,
                    const int64_t* y_dims, int y_rank, bool b_per_row, const SimdKernels* simd);
void binary_run(const BinaryPlan& plan, int64_t rows, const void* a, const void* b, void* y, uint8_t* scratch);
// The scalar 8-bit QLinearMul of one pair, as ONNX Runtime's MLAS computes it on x86.
int32_t mul_one(int32_t a, int32_t b, int32_t za, int32_t zb, float ratio, int32_t zy, int32_t lo, int32_t hi);

// Concat along an axis: per row, `outer` blocks; input i contributes part_bytes[i] bytes to each (through its table).
struct ConcatPlan {
    int64_t outer = 1, y_block = 0;  // bytes of y per outer block
    std::vector<int64_t> part_bytes, x_row;
    std::vector<const uint8_t*> tables;  // nullptr: copied as they are
    int64_t y_row = 0;
};
void concat_run(const ConcatPlan& plan, int64_t rows, const uint8_t* const* xs, uint8_t* y);

// y (dense) = x[offset + sum_k i_k strides[k]] per row, elements of elem bytes.
struct CopyPlan {
    int rank = 1;
    int64_t dims[6] = {1, 1, 1, 1, 1, 1}, strides[6] = {0, 0, 0, 0, 0, 0};
    int64_t offset = 0, elem = 1, x_row = 0, y_row = 0;
};
void copy_run(const CopyPlan& plan, int64_t rows, const uint8_t* x, uint8_t* y);

// Constant padding of a row of rank <= 4 (dims right-aligned, leading 1s); x element i of a dim lands at
// begin + i * step (steps > 1: values inserted between the elements).
struct PadPlan {
    int64_t x_dims[4] = {1, 1, 1, 1}, y_dims[4] = {1, 1, 1, 1}, begins[4] = {0, 0, 0, 0}, steps[4] = {1, 1, 1, 1};
    int64_t elem = 1, x_row = 0, y_row = 0;
    uint8_t value[4] = {0, 0, 0, 0};  // one element's bytes
};
void pad_run(const PadPlan& plan, int64_t rows, const uint8_t* x, uint8_t* y);

// Nearest or bilinear resize of [C, H, W] rows (FLOAT32 or 8-bit).
struct ResizePlan {
    bool bilinear = false;
    int32_t type = 0;
    int64_t c = 0, h = 0, w = 0, oh = 0, ow = 0;
    std::vector<int32_t> y0, y1, x0, x1;  // nearest: y0 and x0 only
    std::vector<float> dy, dx;
};
void resize_run(const ResizePlan& plan, int64_t rows, const uint8_t* x, uint8_t* y);

// Softmax over n values of stride inner, outer x inner times per row; reduce mean likewise; layer normalisation over
// the last n values of each of outer groups.
struct AxisPlan {
    int64_t outer = 1, n = 1, inner = 1;
};
void softmax_f32(const AxisPlan& plan, int64_t rows, const float* x, float* y);
void reduce_mean_f32(const AxisPlan& plan, int64_t rows, const float* x, float* y);
void layernorm_f32(const AxisPlan& plan, float epsilon, const float* scale, const float* bias, int64_t rows, const float* x, float* y);

// MatMul of two activations: per row, count products [M, K] x [K, N] (b's matrix shared when b_shared).
struct MatMulPlan {
    int64_t count = 1, m = 0, k = 0, n = 0;
    bool b_shared = false;
    int32_t a_type = 0, b_type = 0, y_type = 0;  // FLOAT32, or 8-bit
    int32_t za = 0, zb = 0, zy = 0, lo = 0, hi = 0;
    float mult = 1.0f;  // 8-bit: (sa * sb) / sy
    int64_t scratch_bytes = 0;
};
void matmul_prepare(MatMulPlan& plan);
void matmul_run(const MatMulPlan& plan, int64_t rows, const uint8_t* a, const uint8_t* b, uint8_t* y, uint8_t* scratch);

// A float32 convolution of [C, H, W] rows. Fast paths (float_conv.cpp, kernels in float_kernels.h): weights packed
// into the ISA's row tiles once; per image and group an im2col of a chunk of output pixels, packed panel by panel and
// multiplied by all output channels (1x1 stride-1 convolutions read the input directly); grouped convolutions with
// one input channel per group (depthwise) run a direct kernel on a zero-padded, stride-phase-split plane. Each output
// is an FMA chain in K order from 0, then + bias (identical on AVX2 and AVX-512); the scalar path is the reference
// loop (bias first, multiply then add), so the paths differ by float rounding only.
struct FloatKernels;
struct FloatConvPlan {
    int64_t c = 0, h = 0, w = 0, m = 0, cpg = 0, mpg = 0, groups = 1, kh = 1, kw = 1, oh = 0, ow = 0;
    int64_t sh = 1, sw = 1, pt = 0, pl = 0, dh = 1, dw = 1;
    const float* weights = nullptr;  // [M, C/g, kH, kW]
    const float* bias = nullptr;     // M or nullptr
    // Set by float_conv_prepare.
    const FloatKernels* fast = nullptr;  // nullptr: the scalar reference
    bool depthwise = false;              // C/g == 1 and groups > 1: the direct kernel
    bool direct_input = false;           // 1x1, stride 1, no padding: panels packed straight from the input
    std::vector<float> packed;           // GEMM: [groups][ceil(M/g / mr)][K][mr], rows past M/g zero
    int64_t chunk = 0;                   // GEMM: output pixels per im2col chunk (a multiple of nr)
    int64_t wq = 0, plane_floats = 0;    // depthwise: columns per stride phase, floats of the padded plane
    std::vector<int64_t> tap_offsets;    // depthwise: offset of tap (ky, kx) from output (0, 0) in the plane
    int64_t scratch_bytes = 0;
};
// Fixes the path (isa: the engine's) and packs the weights; plan's geometry and weights must be set.
void float_conv_prepare(FloatConvPlan& plan, int isa);
void float_conv_run(const FloatConvPlan& plan, int64_t rows, const float* x, float* y, uint8_t* scratch);
// The scalar reference (direct: per output channel, tap by tap over whole output rows).
void float_conv_reference(const FloatConvPlan& plan, int64_t rows, const float* x, float* y);

// ---- integer inputs: embeddings, casts (ops_gather.cpp) ----------------------------------------------------

// Rows of a table gathered by index: y = table[i] for each of `count` indices per row (from `indices`, an INT32 /
// INT64 tensor, or the constant `fixed`), `row_bytes` bytes each.
struct GatherPlan {
    const uint8_t* table = nullptr;
    int64_t rows = 0, row_bytes = 0, count = 0;
    int32_t index_type = QATML_TYPE_INT64;  // of the indices tensor
    const int64_t* fixed = nullptr;         // constant indices (checked at load), or nullptr
};
// Returns -1, or the flat position (row * count + i) of the first index outside -rows..rows-1: then nothing after
// it is written.
int64_t gather_run(const GatherPlan& plan, int64_t rows, const uint8_t* indices, uint8_t* y);
// An index of the given type at position i of `indices`.
int64_t gather_index(const uint8_t* indices, int32_t type, int64_t i);

// Element conversion between INT32 / INT64 (x) and FLOAT32 / INT32 / INT64 (y).
void cast_run(int32_t x_type, int32_t y_type, int64_t count, const uint8_t* x, uint8_t* y);

// Integer GEMM with a float output (MatMulIntegerToFloat): the int32 sums the GEMM wrote in place become
// float(sum) * scale[column] over `vectors` vectors of n.
void int32_to_scaled_float(const float* scale, int64_t vectors, int64_t n, uint8_t* y);

// A float MatMul with constant weights: y[v, :] = x[v, :] W (+ bias) for `vectors` vectors of K. Fast paths
// (float_gemm.cpp): W packed into the float kernels' column panels once, the vectors of all rows of a run packed into
// their row tiles in scratch; each output an FMA chain in K order from 0, then + bias (identical on AVX2 and AVX-512,
// for any batch or thread count). The scalar path is the reference loop (0, then += x w in K order, then + bias).
struct FloatGemmPlan {
    int64_t k = 0, n = 0;
    const float* weights = nullptr;  // [K, N]
    const float* bias = nullptr;     // N or nullptr
    // Set by float_gemm_prepare.
    const FloatKernels* fast = nullptr;  // nullptr: the scalar reference
    std::vector<float> panels;           // [ceil(N / nr)][K][nr], columns past N zero
    std::vector<float> panel_bias;       // [ceil(N / nr)][nr]: the bias (or zeros), columns past N zero
    int64_t chunk = 0;                   // vectors packed at a time (a multiple of mr)
};
// Fixes the path (isa: the engine's) and packs the weights; k, n, weights and bias must be set.
void float_gemm_prepare(FloatGemmPlan& plan, int isa);
int64_t float_gemm_scratch_bytes(const FloatGemmPlan& plan, int64_t vectors);
void float_gemm_run(const FloatGemmPlan& plan, int64_t vectors, const float* x, float* y, uint8_t* scratch);
void float_gemm_reference(const FloatGemmPlan& plan, int64_t vectors, const float* x, float* y);

// ---- pooling -----------------------------------------------------------------------------------------------

struct PoolPlan {
    enum class Path { Reference,
                      Max2x2,
                      Max3x3Stride2,
                      WholePlane,
                      Separable };
    Path path = Path::Reference;
    const SimdKernels* simd = nullptr;
    bool is_max = true, is_signed = false;
    int64_t channels = 0, h = 0, w = 0, oh = 0, ow = 0, kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
    int64_t pt = 0, pl = 0, pb = 0, pr = 0, hp = 0, wp = 0;
    int32_t count_include_pad = 0;
    float x_scale = 1.0f, y_scale = 1.0f;
    int32_t xz = 0, yz = 0, lo = 0, hi = 0;
    std::vector<float> mult;     // average pooling: per output pixel
    std::vector<int64_t> empty;  // average pooling: pixels whose window counts no cell (y_zero_point)
    ActivationLayout x_layout;   // WholePlane reads channels-last input too (set after pool_prepare)
    int64_t s_padded = 0, s_colmax = 0, s_rowmax = 0, s_colsum = 0, s_rowsum = 0, s_acc = 0;
    int64_t scratch_bytes = 0;
};
// p: geometry of one image (batch ignored). Parameters valid (qatml_pool2d's checks).
void pool_prepare(PoolPlan& plan, const SimdKernels* simd, bool is_max, const qatml_conv2d_params& p, int64_t kh, int64_t kw,
                  int32_t count_include_pad, int32_t type, float x_scale, int32_t xz, float y_scale, int32_t yz);
void pool_run(const PoolPlan& plan, int64_t batch, const uint8_t* x, uint8_t* y, uint8_t* scratch);

struct GlobalPoolPlan {
    const SimdKernels* simd = nullptr;
    bool is_signed = false;
    int64_t channels = 0, spatial = 0;
    float mult = 1.0f;
    int32_t xz = 0, yz = 0, lo = 0, hi = 0;
    int64_t scratch_bytes = 0;  // channels int32 sums
    ActivationLayout x_layout;  // channels-last input (h x w interior) or plain (set after global_pool_prepare)
    int64_t h = 0, w = 0;
};
void global_pool_prepare(GlobalPoolPlan& plan, const SimdKernels* simd, int32_t type, int64_t channels, int64_t spatial, float x_scale,
                         int32_t xz, float y_scale, int32_t yz);
void global_pool_run(const GlobalPoolPlan& plan, int64_t batch, const uint8_t* x, uint8_t* y, uint8_t* scratch);

// ---- GEMM --------------------------------------------------------------------------------------------------

struct GemmPlan {
    const qatml_packed_weights* w = nullptr;
    int32_t a_type = QATML_TYPE_UINT8, a_zp = 0;
    Epilogue ep;
    uint8_t flip = 0;
    std::vector<int32_t> coladd, colmul;  // padded to NR
    std::vector<float> mult;
};
void gemm_prepare(GemmPlan& plan, const qatml_packed_weights* w, int32_t a_type, int32_t a_zp, const Epilogue& ep);
// Scratch for m rows (the packed A block and K-blocking partial sums).
int64_t gemm_scratch_bytes(const GemmPlan& plan, int64_t m);
void gemm_run(const GemmPlan& plan, int64_t m, const uint8_t* a, int64_t lda, void* c, int64_t ldc, uint8_t* scratch);

// ---- convolution -------------------------------------------------------------------------------------------

// A max pool fused into a convolution's output pass: kernel 2 (2x2, stride 2, no padding) or 3 (3x3, stride 2,
// pads 0 or 1 per side); 0 = none.
struct FusedPool {
    int kernel = 0;
    int64_t pt = 0, pl = 0, pb = 0, pr = 0;
};

// QLinearAdd of a residual fused into a convolution's epilogue: the convolution's result is requantized as usual
// (c), then y = QLinearAdd(c, residual) with the add's own parameters (bit-identical to the two ops). The residual
// has the output's shape and layout (channels-last).
struct FusedResidual {
    bool on = false;
    AddParams add;  // a = the convolution's output, b = the residual
};

// Layouts and fusions of a prepared convolution (defaults: plain NCHW in and out, nothing fused).
struct ConvOptions {
    ActivationLayout x_layout, y_layout;  // channels_last false: plain
    FusedResidual residual;
};

struct ConvPlan;
struct ConvPlanDeleter {
    void operator()(ConvPlan* p) const;
};
using ConvPlanPtr = std::unique_ptr<ConvPlan, ConvPlanDeleter>;

// Prepares a convolution over images of params' C x H x W (batch ignored) with packed weights `w` (the path they
// were packed for). Everything valid (qatml_conv2d's checks). Throws std::bad_alloc only.
ConvPlanPtr conv_prepare(const qatml_conv2d_params& params, int32_t x_type, int32_t x_zp, const qatml_packed_weights* w,
                         const Epilogue& ep, const FusedPool& fp, const ConvOptions& options = ConvOptions());
int64_t conv_scratch_bytes(const ConvPlan& plan);
// Whether a convolution with these weights can write a channels-last output or take a fused residual (the
// AVX-512 VNNI channel-lane kernel: 8-bit output, no weight zero points, one group, not depthwise) ...
bool conv_writes_channels_last(const qatml_packed_weights* w, int32_t out_type);
// ... and read a channels-last input (channel quads).
bool conv_reads_channels_last(const qatml_packed_weights* w, int32_t out_type);
// Runs batch images; x, y and the residual advance by their layouts' image_bytes.
void conv_run(const ConvPlan& plan, int64_t batch, const uint8_t* x, uint8_t* y, uint8_t* scratch, const uint8_t* residual = nullptr);

// Packing (the exports validate; these allocate and never fail otherwise).
std::unique_ptr<qatml_packed_weights> conv_pack(const void* w, int32_t w_type, int64_t out_channels, int64_t cpg, int64_t kh,
                                                int64_t kw, int64_t groups, const int32_t* w_zero_points, int isa);
std::unique_ptr<qatml_packed_weights> gemm_pack(const void* b, int32_t b_type, int64_t k, int64_t n, int32_t trans_b,
                                                const int32_t* b_zero_points, int isa);

}  // namespace kernels
}  // namespace qatml
