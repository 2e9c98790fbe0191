// CUDA kernels of the plan's ops besides the implicit GEMM (ops.h): quantize, dequantize, add, LUT, pooling and the
// direct convolution. Every float operation is the CPU kernel's, rounded the same way (explicit _rn intrinsics, and
// the build passes -fmad=false), so results are bit-identical.
#include "cuda/cuda_kernels.h"

#include "qatml/qatml.h"

namespace qatml {
namespace cuda {
namespace {

__device__ __forceinline__ int32_t load_q(const void* p, int64_t i, int32_t is_signed) {
    return is_signed ? int32_t(static_cast<const int8_t*>(p)[i]) : int32_t(static_cast<const uint8_t*>(p)[i]);
}

// Offset of logical element `idx` (row-major over rows x elems) in a tensor of layout l.
template <bool kMap>
__device__ __forceinline__ int64_t offset_of(const Layout& l, int64_t idx, int64_t elems) {
    if (!kMap) return idx;
    const int64_t row = idx / elems;
    return row * elems + storage_index(l, idx - row * elems);
}

template <bool kMap>
__global__ void quantize_kernel(const QuantizeParams p) {
    const int64_t total = p.rows * p.elems;
    const float lf = static_cast<float>(p.lo - p.zp), hf = static_cast<float>(p.hi - p.zp);
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        float v = __fdiv_rn(p.x[offset_of<kMap>(p.lx, i, p.elems)], p.scale);
        if (v != v) v = 0.0f;  // NaN -> the zero point
        v = fminf(fmaxf(v, lf), hf);
        static_cast<uint8_t*>(p.y)[offset_of<kMap>(p.ly, i, p.elems)] = static_cast<uint8_t>(__float2int_rn(v) + p.zp);
    }
}

template <bool kMap>
__global__ void dequantize_kernel(const DequantizeParams p) {
    const int64_t total = p.rows * p.elems;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int32_t q = load_q(p.x, offset_of<kMap>(p.lx, i, p.elems), p.x_signed);
        p.y[offset_of<kMap>(p.ly, i, p.elems)] = __fmul_rn(__int2float_rn(q - p.zp), p.scale);
    }
}

template <bool kMap>
__global__ void add_kernel(const AddParams p) {
    const int64_t total = p.rows * p.elems;
    const float lf = static_cast<float>(p.lo - p.zy), hf = static_cast<float>(p.hi - p.zy);
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int32_t a = load_q(p.a, offset_of<kMap>(p.la, i, p.elems), p.is_signed);
        const int32_t b = load_q(p.b, offset_of<kMap>(p.lb, i, p.elems), p.is_signed);
        float v = __fadd_rn(__fmul_rn(__int2float_rn(a - p.za), p.ra), __fmul_rn(__int2float_rn(b - p.zb), p.rb));
        v = fminf(fmaxf(v, lf), hf);
        static_cast<uint8_t*>(p.y)[offset_of<kMap>(p.ly, i, p.elems)] = static_cast<uint8_t>(__float2int_rn(v) + p.zy);
    }
}

template <bool kMap>
__global__ void lut_kernel(const LutParams p) {
    __shared__ uint8_t table[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) table[i] = p.table[i];
    __syncthreads();
    const int64_t total = p.rows * p.elems;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
        p.y[offset_of<kMap>(p.ly, i, p.elems)] = table[p.x[offset_of<kMap>(p.lx, i, p.elems)]];
}

// One thread per output (row, oy, ox, channel), channels fastest (coalesced over channels-last tensors).
__global__ void pool_kernel(const PoolParams p) {
    const ConvGeom& g = p.g;
    const int64_t total = p.rows * g.oh * g.ow * g.c;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int32_t ch = static_cast<int32_t>(i % g.c);
        int64_t r = i / g.c;
        const int32_t ox = static_cast<int32_t>(r % g.ow);
        r /= g.ow;
        const int32_t oy = static_cast<int32_t>(r % g.oh);
        const int64_t row = r / g.oh;
        const int64_t base = row * g.h * g.w * g.c + ch;
        int32_t best = INT32_MIN, sum = 0, valid = 0, cells = 0;
        for (int32_t ky = 0; ky < g.kh; ++ky) {
            const int32_t iy = oy * g.sh - g.pt + ky * g.dh;
            for (int32_t kx = 0; kx < g.kw; ++kx) {
                const int32_t ix = ox * g.sw - g.pl + kx * g.dw;
                // ONNX counts pad cells inside the padded input only (as qatml_pool2d's reference).
                if (iy >= -g.pt && iy < g.h + p.pb && ix >= -g.pl && ix < g.w + p.pr) ++cells;
                if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
                const int32_t v = load_q(p.x, base + (int64_t(iy) * g.w + ix) * g.c, p.is_signed);
                best = v > best ? v : best;
                sum += v - p.xz;
                ++valid;
            }
        }
        int32_t out;
        if (p.is_max) {
            out = valid ? best : p.lo;
        } else {
            const int32_t count = p.count_include_pad ? cells : valid;
            out = count == 0 ? p.yz
                             : requant(sum, __fdiv_rn(p.x_scale, __fmul_rn(p.y_scale, static_cast<float>(count))), p.yz, p.lo, p.hi);
        }
        static_cast<uint8_t*>(p.y)[i] = static_cast<uint8_t>(out);
    }
}

__global__ void global_avgpool_kernel(const GlobalPoolParams p) {
    const int64_t total = p.rows * p.c;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t row = i / p.c;
        const int32_t ch = static_cast<int32_t>(i - row * p.c);
        const int64_t base = row * p.spatial * p.c + ch;
        uint32_t sum = 0;
        for (int32_t s = 0; s < p.spatial; ++s) sum += static_cast<uint32_t>(load_q(p.x, base + int64_t(s) * p.c, p.is_signed));
        sum -= static_cast<uint32_t>(p.spatial) * static_cast<uint32_t>(p.xz);
        static_cast<uint8_t*>(p.y)[i] = static_cast<uint8_t>(requant(static_cast<int32_t>(sum), p.mult, p.yz, p.lo, p.hi));
    }
}

// One thread per output (pixel, channel), channels fastest.
__global__ void direct_conv_kernel(const DirectConvParams p) {
    const int64_t total = p.pixels * p.m;
    const int32_t taps = p.g.kh * p.g.kw;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int32_t oc = static_cast<int32_t>(i % p.m);
        const int64_t pix = i / p.m;
        const int64_t plane = int64_t(p.g.oh) * p.g.ow;
        const int64_t img = pix / plane;
        const int32_t q = static_cast<int32_t>(pix - img * plane);
        const int32_t oy = q / p.g.ow, ox = q - oy * p.g.ow;
        const int32_t grp = oc / p.mpg, zw = p.w_zp ? p.w_zp[oc] : 0;
        const int8_t* wr = p.w + int64_t(oc) * taps * p.g.cpg;
        const uint8_t* xi = p.x + img * p.g.h * p.g.w * p.g.c + int64_t(grp) * p.g.cpg;
        uint32_t acc = p.bias ? static_cast<uint32_t>(p.bias[oc]) : 0u;
        for (int32_t ky = 0; ky < p.g.kh; ++ky) {
            const int32_t iy = oy * p.g.sh - p.g.pt + ky * p.g.dh;
            if (iy < 0 || iy >= p.g.h) continue;  // padding: the zero point, contributes 0
            for (int32_t kx = 0; kx < p.g.kw; ++kx) {
                const int32_t ix = ox * p.g.sw - p.g.pl + kx * p.g.dw;
                if (ix < 0 || ix >= p.g.w) continue;
                const uint8_t* px = xi + (int64_t(iy) * p.g.w + ix) * p.g.c;
                const int8_t* wt = wr + (ky * p.g.kw + kx) * p.g.cpg;
                for (int32_t ci = 0; ci < p.g.cpg; ++ci) {
                    const int32_t xv = p.x_signed ? int32_t(int8_t(px[ci])) : int32_t(px[ci]);
                    acc += static_cast<uint32_t>(xv - p.xz) * static_cast<uint32_t>(int32_t(wt[ci]) - zw);
                }
            }
        }
        if (p.out_float)
            static_cast<float*>(p.y)[i] = scaled_float(static_cast<int32_t>(acc), p.mult[oc]);
        else
            static_cast<uint8_t*>(p.y)[i] = static_cast<uint8_t>(requant(static_cast<int32_t>(acc), p.mult[oc], p.out_zp, p.lo, p.hi));
    }
}

template <typename P>
cudaError_t launch_mapped(void (*flat)(P), void (*mapped)(P), const P& p, cudaStream_t stream) {
    (p.map ? mapped : flat)<<<element_blocks(p.rows * p.elems), kElementThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch_quantize(const QuantizeParams& p, cudaStream_t s) {
    return launch_mapped(quantize_kernel<false>, quantize_kernel<true>, p, s);
}
cudaError_t launch_dequantize(const DequantizeParams& p, cudaStream_t s) {
    return launch_mapped(dequantize_kernel<false>, dequantize_kernel<true>, p, s);
}
cudaError_t launch_add(const AddParams& p, cudaStream_t s) { return launch_mapped(add_kernel<false>, add_kernel<true>, p, s); }
cudaError_t launch_lut(const LutParams& p, cudaStream_t s) { return launch_mapped(lut_kernel<false>, lut_kernel<true>, p, s); }

cudaError_t launch_pool(const PoolParams& p, cudaStream_t s) {
    pool_kernel<<<element_blocks(p.rows * p.g.oh * p.g.ow * p.g.c), kElementThreads, 0, s>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_global_avgpool(const GlobalPoolParams& p, cudaStream_t s) {
    global_avgpool_kernel<<<element_blocks(p.rows * p.c), kElementThreads, 0, s>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_direct_conv(const DirectConvParams& p, cudaStream_t s) {
    direct_conv_kernel<<<element_blocks(p.pixels * p.m), kElementThreads, 0, s>>>(p);
    return cudaGetLastError();
}

}  // namespace cuda
}  // namespace qatml
