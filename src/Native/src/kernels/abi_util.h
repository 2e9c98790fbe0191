// Helpers of the kernel ABI layer (baseline code only; never include from an ISA translation unit).
#pragma once

#include "core/internal.h"
#include "kernels/kernel_common.h"
#include "kernels/simd_kernels.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

namespace qatml {
namespace kernels {

constexpr int64_t kMaxElements = int64_t(1) << 40;

#define QATML_CHECK_POSITIVE(v, fn)                                                              \
  do {                                                                                           \
    if ((v) <= 0 || (v) > ::qatml::kernels::kMaxElements)                                        \
      return ::qatml::fail(QATML_INVALID_ARGUMENT, "%s: '%s' = %lld must be in 1..2^40", fn, #v, \
                           static_cast<long long>(v));                                           \
  } while (0)

#define QATML_CHECK_ALIGNED(ptr, align, fn)                                                        \
  do {                                                                                             \
    if ((ptr) != nullptr && reinterpret_cast<uintptr_t>(ptr) % (align) != 0)                       \
      return ::qatml::fail(QATML_INVALID_ARGUMENT, "%s: '%s' (%p) is not aligned to %d bytes", fn, \
                           #ptr, static_cast<const void*>(ptr), static_cast<int>(align));          \
  } while (0)

// a*b(*c) with overflow and range check; false and error set on failure.
bool checked_mul(const char* fn, const char* what, int64_t a, int64_t b, int64_t* out, int limit_log2 = 40);

// Scratch the kernels allocate from a call's geometry (padded planes) rather than from its buffers: at most
// 2^31 bytes (2 GiB; real networks need a few MiB), so a tiny input with huge pads is an error, not an
// 18 GB allocation. Every path checks the same bound, so all agree.
constexpr int kMaxScratchLog2 = 31;

// Validates the context: NULL or a live CPU context. CUDA contexts: QATML_UNSUPPORTED.
qatml_status check_context(const qatml_context* ctx, const char* fn);
qatml_device context_device(const qatml_context* ctx);

// Largest ratio of two scales (x_scale / y_scale) the add and average-pool kernels accept: with it every
// product of an 8-bit difference or an int32 window sum stays finite (no inf - inf = NaN), and anything
// larger saturates every non-zero input anyway.
constexpr float kMaxScaleRatio = 18446744073709551616.0f;  // 2^64
// Cells of an average window (or global pool plane) whose int32 sum of 8-bit values cannot overflow.
constexpr int64_t kMaxAverageCells = int64_t(1) << 23;
// num / den (both finite and > 0) is at most kMaxScaleRatio; else the error is set.
qatml_status check_scale_ratio(const char* fn, const char* num_name, float num, const char* den_name, float den);

// The convolution paths' scratch grows with the padded input (plus a stride of phase rounding) and, for one
// channel per group, with taps x output rows x padded width, not with the output: both within 2^31
// (kMaxScratchLog2; ResNet18's largest is below 2^18), which also keeps every size computation from
// overflowing. Sets the error (naming the product) otherwise.
// The padded plane the pooling fast paths work on, (H + pads) x (W + pads) bytes, within 2^31 (kMaxScratchLog2).
qatml_status check_pool_scratch(const char* fn, const qatml_conv2d_params& p);
qatml_status check_conv_scratch(const char* fn, const qatml_conv2d_params& p, int64_t cpg, int64_t kh, int64_t kw, int64_t oh);

bool type_range(int32_t type, int32_t* lo, int32_t* hi);
const char* type_name(int32_t type);

// 64-byte aligned byte buffer, uninitialised (packing writes what the kernels read).
struct AlignedBuffer {
    uint8_t* data = nullptr;
    int64_t size = 0;
    AlignedBuffer() = default;
    explicit AlignedBuffer(int64_t bytes) { resize(bytes); }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    ~AlignedBuffer() { std::free(data); }
    void zero() {
        if (data) std::memset(data, 0, static_cast<size_t>(size));
    }
    void resize(int64_t bytes) {
        std::free(data);
        data = nullptr;
        size = bytes;
        if (bytes > 0) {
            data = static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>((bytes + 63) / 64 * 64)));
            if (!data) throw std::bad_alloc();
        }
    }
};

// Validated epilogue in kernel terms.
struct Epilogue {
    int out_type = QATML_TYPE_INT32;
    const int32_t* bias = nullptr;
    std::vector<float> mult;  // one per channel (expanded)
    int32_t zp = 0, lo = 0, hi = 0;
};
qatml_status check_epilogue(const qatml_epilogue* ep, int64_t channels, Epilogue* out, const char* fn);

// Scalar requantization, the reference every fast path matches bit for bit.
inline int32_t requant_one(int32_t acc, float mult, int32_t zp, int32_t lo, int32_t hi) {
    float f = static_cast<float>(acc) * mult;
    const float lf = static_cast<float>(lo - zp), hf = static_cast<float>(hi - zp);
    f = f < lf ? lf : f;
    f = f > hf ? hf : f;
    return static_cast<int32_t>(std::nearbyint(f)) + zp;
}
inline void store_out(const Epilogue& e, int32_t acc, int64_t channel, void* out, int64_t index) {
    if (e.out_type == QATML_TYPE_INT32) {
        static_cast<int32_t*>(out)[index] = acc;
    } else {
        const int32_t v = requant_one(acc, e.mult[static_cast<size_t>(channel)], e.zp, e.lo, e.hi);
        if (e.out_type == QATML_TYPE_UINT8)
            static_cast<uint8_t*>(out)[index] = static_cast<uint8_t>(v);
        else
            static_cast<int8_t*>(out)[index] = static_cast<int8_t>(v);
    }
}
// Weight i of an INT8 array or a packed INT4 one (first element in the low nibble), as int8.
inline int8_t weight_at(const void* w, int32_t type, int64_t i) {
    if (type == QATML_TYPE_INT8) return static_cast<const int8_t*>(w)[i];
    const uint8_t byte = static_cast<const uint8_t*>(w)[i >> 1];
    const int v = (i & 1) ? (byte >> 4) : (byte & 0x0f);
    return static_cast<int8_t>(v >= 8 ? v - 16 : v);
}
inline int64_t elem_size(int32_t type) {
    if (type == QATML_TYPE_INT64) return 8;
    return type == QATML_TYPE_INT32 || type == QATML_TYPE_FLOAT32 ? 4 : 1;
}
inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
inline uint32_t wrap_mul(int32_t a, int32_t b) { return static_cast<uint32_t>(a) * static_cast<uint32_t>(b); }

// Runs the ISA driver.
void run_gemm(int isa, const GemmCall& call);

// Weights run on the path they were packed for; refuses (QATML_UNSUPPORTED) a path the CPU lacks now,
// which only a test's feature mask (qatml_cpu_set_feature_mask) set after packing can cause.
qatml_status check_packed_isa(const qatml_packed_weights* w, const char* fn);

// The vectorised loops of the active ISA (qatml_cpu_active_isa): nullptr for the scalar ISA, which
// runs the reference loops only. Sets *st (QATML_INVALID_ARGUMENT for a bad QATML_MAX_ISA).
const SimdKernels* active_simd(const char* fn, qatml_status* st);
const SimdKernels* simd_for_isa(int isa);

}  // namespace kernels
}  // namespace qatml

// Packed weights (HandleKind::PackedWeights).
struct qatml_packed_weights {
    qatml::HandleKind kind = qatml::HandleKind::PackedWeights;
    int32_t role = 0;  // 1 = GEMM B, 2 = convolution
    qatml_device device{};
    int32_t isa = QATML_ISA_SCALAR;
    int mr = 1, nr = 1;
    int64_t k = 0, n = 0, k4 = 0;  // reduction length (per group) and output channels (all groups)
    int64_t groups = 1, cpg = 0, kh = 1, kw = 1, mpg = 0;
    int64_t quads = 0;                     // conv, fast ISAs: input channels per group in groups of 4 (K order)
    std::vector<int8_t> plain;             // scalar / depthwise: GEMM [K, N]; conv [M, K]
    qatml::kernels::AlignedBuffer packed;  // GEMM: vector panels; conv: broadcast tiles per group
    int64_t group_stride = 0;              // conv: bytes between groups in `packed`
    std::vector<int32_t> wsum, zw;         // per channel: sum of weights, weight zero point
    bool has_zw = false;
    bool depthwise = false;
    // conv, AVX-512 VNNI, 2-3 input channels per group: a second packing for the channel-lane kernel over HWC
    // bytes. K order per kernel row ky: the kW x C/g bytes of the row (kx-major, channel-minor) in groups of 4,
    // zero past the row (ResNet's 7x7 x 3 stem: 7 x 6 = 42 K groups where channel quads take 49).
    int64_t hwc_k4 = 0, hwc_row_groups = 0, hwc_group_stride = 0;
    qatml::kernels::AlignedBuffer hwc_packed;
};
