// The implicit INT8 GEMM on tensor cores (contract and index math: igemm.h): multi-stage cp.async pipeline into
// XOR-swizzled shared memory, ldmatrix fragments, mma.sync m16n8k32 (u8 x s8 or s8 x s8, int32 accumulators), and
// the requantizing epilogue. sm_80 and newer (Ampere, Ada, Hopper).
#include "cuda/cuda_kernels.h"

#include "qatml/qatml.h"

#include <mutex>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#  error "the qatml CUDA kernels need sm_80 or newer (set CMAKE_CUDA_ARCHITECTURES)"
#endif

namespace qatml {
namespace cuda {
namespace {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void st_shared16(uint32_t dst, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(dst), "r"(a), "r"(b), "r"(c), "r"(d));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

template <bool kSigned>
__device__ __forceinline__ void mma_16x8x32(int32_t (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    if constexpr (kSigned) {
        asm volatile(
            "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

// One 16-byte chunk of A gathered byte by byte (kConvBytes): padding reads the zero point, k >= K and rows >= m 0.
__device__ __forceinline__ void gather_chunk(const IgemmParams& p, const RowBase& r, int32_t k0, uint32_t pad,
                                             uint32_t (&w)[4]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        uint32_t word = 0;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const int32_t k = k0 + j * 4 + b;
            const int64_t src = byte_src(p, r, k, p.ktab[k]);
            const uint32_t v = src >= 0 ? uint32_t(p.a[src]) : (src == kPadSrc ? pad : 0u);
            word |= v << (8 * b);
        }
        w[j] = word;
    }
}

__device__ __forceinline__ void store_out(const IgemmParams& p, int64_t row, int32_t col, int32_t acc) {
    if (row >= p.m || col >= p.n) return;
    const int32_t v = static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(p.coladd[col]));
    const int64_t at = row * p.ldc + col;
    if (p.out_type == QATML_TYPE_INT32) {
        static_cast<int32_t*>(p.c)[at] = v;
    } else if (p.out_type == QATML_TYPE_FLOAT32) {
        static_cast<float*>(p.c)[at] = scaled_float(v, p.mult[col]);
    } else {
        static_cast<uint8_t*>(p.c)[at] = static_cast<uint8_t>(requant(v, p.mult[col], p.out_zp, p.lo, p.hi));
    }
}

template <int BM, int BN, int WM, int WN, int STAGES, bool kSigned>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32) igemm_kernel(const IgemmParams p) {
    constexpr int kWarpsM = BM / WM, kThreads = (BM / WM) * (BN / WN) * 32;
    constexpr int MT = WM / 16, NT = WN / 8;
    constexpr int kStageA = BM * kBK, kStageB = BN * kBK;
    constexpr int kAChunks = BM * (kBK / kChunk) / kThreads, kBChunks = BN * (kBK / kChunk) / kThreads;
    static_assert(BM * (kBK / kChunk) % kThreads == 0 && BN * (kBK / kChunk) % kThreads == 0, "chunks per thread");
    static_assert(NT % 2 == 0, "B fragments load two n8 tiles at a time");

    extern __shared__ __align__(128) uint8_t smem[];
    uint8_t* const sA = smem;
    uint8_t* const sB = smem + STAGES * kStageA;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm0 = (warp % kWarpsM) * WM, wn0 = (warp / kWarpsM) * WN;
    int64_t tm = 0, tn = 0;
    tile_coords(blockIdx.x, (p.m + BM - 1) / BM, (p.n + BN - 1) / BN, &tm, &tn);
    const int64_t m0 = tm * BM;
    const int32_t n0 = static_cast<int32_t>(tn) * BN;

    RowBase rows[kAChunks];
#pragma unroll
    for (int i = 0; i < kAChunks; ++i) {
        int row = 0, chunk = 0;
        stage_chunk(tid, i, kThreads, &row, &chunk);
        rows[i] = row_base(p, m0 + row);
    }
    const uint32_t pad = (static_cast<uint32_t>(p.a_zero_point) & 0xffu) * 0x01010101u;

    auto load_stage = [&](int stage, int kt) {
        const uint32_t a_stage = smem_addr(sA + stage * kStageA), b_stage = smem_addr(sB + stage * kStageB);
#pragma unroll
        for (int i = 0; i < kAChunks; ++i) {
            int row = 0, chunk = 0;
            stage_chunk(tid, i, kThreads, &row, &chunk);
            const int32_t k0 = kt * kBK + chunk * kChunk;
            const uint32_t dst = a_stage + swz(row, chunk);
            if (p.mode == kConvBytes) {
                uint32_t w[4];
                gather_chunk(p, rows[i], k0, pad, w);
                st_shared16(dst, w[0], w[1], w[2], w[3]);
            } else {
                const int64_t src = chunk_src(p, rows[i], k0);
                if (src >= 0)
                    cp_async16(dst, p.a + src);
                else if (src == kPadSrc)
                    st_shared16(dst, pad, pad, pad, pad);
                else
                    st_shared16(dst, 0, 0, 0, 0);
            }
        }
#pragma unroll
        for (int i = 0; i < kBChunks; ++i) {
            int row = 0, chunk = 0;
            stage_chunk(tid, i, kThreads, &row, &chunk);
            cp_async16(b_stage + swz(row, chunk), p.b + int64_t(n0 + row) * p.k_pad + kt * kBK + chunk * kChunk);
        }
    };

    int32_t acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0;

    const int k_tiles = p.k_pad / kBK;
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < k_tiles) load_stage(s, s);
        cp_async_commit();
    }
    for (int kt = 0; kt < k_tiles; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile kt has landed for every thread; the stage refilled below was consumed by all
        const int next = kt + STAGES - 1;
        if (next < k_tiles) load_stage(next % STAGES, next);
        cp_async_commit();

        const uint8_t* a_stage = sA + (kt % STAGES) * kStageA;
        const uint8_t* b_stage = sB + (kt % STAGES) * kStageB;
#pragma unroll
        for (int ks = 0; ks < kBK / 32; ++ks) {
            uint32_t af[MT][4], bf[NT][2];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
                ldmatrix_x4(af[mt], smem_addr(a_stage + swz(wm0 + ldsm_a_row(lane, mt), ldsm_a_chunk(lane, ks))));
#pragma unroll
            for (int pr = 0; pr < NT / 2; ++pr) {
                uint32_t r[4];
                ldmatrix_x4(r, smem_addr(b_stage + swz(wn0 + ldsm_b_row(lane, pr), ldsm_b_chunk(lane, ks))));
                bf[2 * pr][0] = r[0];
                bf[2 * pr][1] = r[1];
                bf[2 * pr + 1][0] = r[2];
                bf[2 * pr + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) mma_16x8x32<kSigned>(acc[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i)
                store_out(p, m0 + wm0 + mt * 16 + acc_row(lane, i), n0 + wn0 + nt * 8 + acc_col(lane, i), acc[mt][nt][i]);
}

template <int C, bool kSigned>
constexpr auto kernel_of() {
    return &igemm_kernel<kTiles[C].bm, kTiles[C].bn, kTiles[C].wm, kTiles[C].wn, kTiles[C].stages, kSigned>;
}

using KernelFn = void (*)(IgemmParams);
const KernelFn kKernels[kTileConfigs][2] = {
    {kernel_of<0, false>(), kernel_of<0, true>()},
    {kernel_of<1, false>(), kernel_of<1, true>()},
    {kernel_of<2, false>(), kernel_of<2, true>()},
    {kernel_of<3, false>(), kernel_of<3, true>()},
    {kernel_of<4, false>(), kernel_of<4, true>()},
};

}  // namespace

cudaError_t igemm_device_info(IgemmDeviceInfo* out) {
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess) return err;
    if ((err = cudaDeviceGetAttribute(&out->sms, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess) return err;
    for (int c = 0; c < kTileConfigs; ++c)
        for (int s = 0; s < 2; ++s) {
            // Opt in to the dynamic shared memory each configuration needs (above the default 48 KiB).
            if ((err = cudaFuncSetAttribute(kKernels[c][s], cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            tile_smem_bytes(kTiles[c]))) != cudaSuccess)
                return err;
            if (s == 0 &&
                (err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&out->blocks_per_sm[c], kKernels[c][s], tile_threads(kTiles[c]),
                                                                     tile_smem_bytes(kTiles[c]))) != cudaSuccess)
                return err;
        }
    return cudaSuccess;
}

cudaError_t launch_igemm(const IgemmParams& p, int config, cudaStream_t stream) {
    if (config < 0 || config >= kTileConfigs || p.m <= 0 || p.n <= 0 || p.k_pad % kBK != 0) return cudaErrorInvalidValue;
    const TileConfig& t = kTiles[config];
    const int64_t blocks = ((p.m + t.bm - 1) / t.bm) * ((p.n + t.bn - 1) / t.bn);
    if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
    kKernels[config][p.a_signed ? 1 : 0]<<<static_cast<unsigned>(blocks), tile_threads(t), tile_smem_bytes(t), stream>>>(p);
    return cudaGetLastError();
}

}  // namespace cuda
}  // namespace qatml
