// Host entry points of the CUDA kernels (igemm.cu, ops.cu). Each launches on `stream` and returns the launch
// status; none synchronises. Pointers are device pointers. Numbers follow the CPU kernels exactly (qatml_kernels.h).
#pragma once

#include "cuda/igemm.h"
#include "cuda/ops.h"
#include "cuda/wide_ops.h"

#include <cuda_runtime.h>

namespace qatml {
namespace cuda {

// Grid-stride elementwise kernels (ops.cu, wide_ops.cu): threads per block, and the grid for `count` items.
constexpr int kElementThreads = 256;
inline unsigned element_blocks(int64_t count) {
    const int64_t b = (count + kElementThreads - 1) / kElementThreads;
    return static_cast<unsigned>(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

// What the tile choice needs to know about a GPU: multiprocessors and resident blocks per configuration.
struct IgemmDeviceInfo {
    int sms = 0;
    int blocks_per_sm[kTileConfigs] = {};
};
// Prepares the GEMM kernels for the current device (shared-memory limits) and reports its occupancy. Thread-safe.
cudaError_t igemm_device_info(IgemmDeviceInfo* out);

// The implicit GEMM (igemm.h) with tile configuration `config` (choose_tile).
cudaError_t launch_igemm(const IgemmParams& p, int config, cudaStream_t stream);

cudaError_t launch_quantize(const QuantizeParams& p, cudaStream_t stream);
cudaError_t launch_dequantize(const DequantizeParams& p, cudaStream_t stream);
cudaError_t launch_add(const AddParams& p, cudaStream_t stream);
cudaError_t launch_lut(const LutParams& p, cudaStream_t stream);
cudaError_t launch_pool(const PoolParams& p, cudaStream_t stream);
cudaError_t launch_global_avgpool(const GlobalPoolParams& p, cudaStream_t stream);
cudaError_t launch_direct_conv(const DirectConvParams& p, cudaStream_t stream);

// The wider ops (wide_ops.cu); CONCAT is one launch per input.
cudaError_t launch_unary(const UnaryArgs& p, cudaStream_t stream);
cudaError_t launch_binary(const BinaryArgs& p, cudaStream_t stream);
cudaError_t launch_concat_part(const ConcatArgs& p, cudaStream_t stream);
cudaError_t launch_copy(const CopyArgs& p, cudaStream_t stream);
cudaError_t launch_pad(const PadArgs& p, cudaStream_t stream);
cudaError_t launch_resize(const ResizeArgs& p, cudaStream_t stream);
cudaError_t launch_softmax(const AxisArgs& p, cudaStream_t stream);
cudaError_t launch_reduce_mean(const AxisArgs& p, cudaStream_t stream);
cudaError_t launch_layernorm(const AxisArgs& p, cudaStream_t stream);
cudaError_t launch_matmul(const MatMulArgs& p, cudaStream_t stream);
cudaError_t launch_float_conv(const FloatConvArgs& p, cudaStream_t stream);
// GATHER, then (tensor indices) the report of an index outside the table into p.bad[1].
cudaError_t launch_gather(const GatherArgs& p, cudaStream_t stream);
cudaError_t launch_cast(const CastArgs& p, cudaStream_t stream);
cudaError_t launch_float_gemm(const FloatGemmArgs& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace qatml
