// CUDA kernels of the engine's wider ops (wide_ops.h): grid-stride loops over the output's elements (or softmax
// columns, layer-norm groups), each calling the function of one element that the CPU tests also run. Thin kernels:
// exactness first, speed second (the plans' heavy ops are the convolutions and GEMMs).
#include "cuda/cuda_kernels.h"
#include "cuda/wide_ops.h"

namespace qatml {
namespace cuda {
namespace {

template <typename P, void (*kElement)(const P&, int64_t)>
__global__ void each_kernel(const P p, int64_t count) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) kElement(p, i);
}

template <typename P, void (*kElement)(const P&, int64_t)>
cudaError_t launch_each(const P& p, int64_t count, cudaStream_t stream) {
    if (count <= 0) return cudaSuccess;
    each_kernel<P, kElement><<<element_blocks(count), kElementThreads, 0, stream>>>(p, count);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch_unary(const UnaryArgs& p, cudaStream_t s) { return launch_each<UnaryArgs, unary_element>(p, p.count, s); }
cudaError_t launch_binary(const BinaryArgs& p, cudaStream_t s) { return launch_each<BinaryArgs, binary_element>(p, p.rows * p.plan.y_row, s); }
cudaError_t launch_concat_part(const ConcatArgs& p, cudaStream_t s) { return launch_each<ConcatArgs, concat_element>(p, p.rows * p.x_row, s); }
cudaError_t launch_copy(const CopyArgs& p, cudaStream_t s) { return launch_each<CopyArgs, copy_op_element>(p, p.rows * p.plan.y_row, s); }
cudaError_t launch_pad(const PadArgs& p, cudaStream_t s) { return launch_each<PadArgs, pad_element>(p, p.rows * p.y_row, s); }
cudaError_t launch_resize(const ResizeArgs& p, cudaStream_t s) {
    return launch_each<ResizeArgs, resize_element>(p, p.rows * p.c * p.oh * p.ow, s);
}
cudaError_t launch_softmax(const AxisArgs& p, cudaStream_t s) { return launch_each<AxisArgs, softmax_column>(p, p.groups * p.inner, s); }
cudaError_t launch_reduce_mean(const AxisArgs& p, cudaStream_t s) {
    return launch_each<AxisArgs, reduce_mean_column>(p, p.groups * p.inner, s);
}
cudaError_t launch_layernorm(const AxisArgs& p, cudaStream_t s) { return launch_each<AxisArgs, layernorm_group>(p, p.groups, s); }
cudaError_t launch_matmul(const MatMulArgs& p, cudaStream_t s) {
    return launch_each<MatMulArgs, matmul_element>(p, p.rows * p.plan.count * p.plan.m * p.plan.n, s);
}
cudaError_t launch_float_conv(const FloatConvArgs& p, cudaStream_t s) {
    return launch_each<FloatConvArgs, float_conv_element>(p, p.rows * p.m * p.oh * p.ow, s);
}
cudaError_t launch_gather(const GatherArgs& p, cudaStream_t s) {
    const cudaError_t err = launch_each<GatherArgs, gather_element>(p, p.rows * p.count * p.row_elems, s);
    if (err != cudaSuccess || p.fixed) return err;
    return launch_each<GatherArgs, gather_report>(p, 1, s);
}
cudaError_t launch_cast(const CastArgs& p, cudaStream_t s) { return launch_each<CastArgs, cast_element>(p, p.count, s); }
cudaError_t launch_float_gemm(const FloatGemmArgs& p, cudaStream_t s) {
    return launch_each<FloatGemmArgs, float_gemm_element>(p, p.vectors * p.n, s);
}

}  // namespace cuda
}  // namespace qatml
