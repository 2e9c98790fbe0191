// The implicit INT8 GEMM on tensor cores (igemm.cu): its parameters and every piece of its index math, written once
// for the device and the host. Plain C++ outside nvcc, so the CPU tests emulate the kernel with these functions (block
// by block: shared-memory swizzle, ldmatrix lane addresses, mma fragments, epilogue) against the CPU kernels.
//
//   C[row, col] = epilogue(sum_k A(row, k) * B[col][k])   row < m, col < n
//
// A: u8 or s8 activations through one of three loaders (AMode). B: s8 weights [n_pad][k_pad], zero past n and k.
// Epilogue (per column): acc + coladd[col] (= bias - a_zero_point * sum_k B[col][k], wrapping int32), then INT32,
// requantized to u8/s8 exactly as the CPU kernels do (float32 product, clamp, round half to even, + zero point), or
// FLOAT32 float(acc) * mult[col] (ONNX Runtime's MatMulIntegerToFloat, as the CPU engine's GEMM with a float output).
// Convolutions read NHWC activations: rows are output pixels (image, oy, ox), K runs tap-major (ky, kx) then channel,
// and padding reads the input zero point, which coladd cancels, as the CPU's implicit GEMM does.
#pragma once

#include <stdint.h>

#include <cmath>

#include "kernels/op_math.h"  // QATML_HD

namespace qatml {
namespace cuda {

enum AMode : int32_t {
    kDense = 0,      // A(row, k) = a[row * lda + k]; lda and K multiples of 16, a 16-byte aligned
    kConvVec = 1,    // convolution, channels per tap a multiple of 16: one 16-byte copy per 16 channels of a tap
    kConvBytes = 2,  // convolution (or a GEMM of any K as a 1x1 one) byte by byte through the K table
};

constexpr int kBK = 64;                         // K bytes per pipeline stage: two m16n8k32 steps
constexpr int kChunk = 16;                      // bytes per cp.async (and per shared-memory swizzle unit)
constexpr int kNPad = 256;                      // B rows are padded to a multiple of the widest tile
constexpr int64_t kPadSrc = -1, kZeroSrc = -2;  // chunk sources other than an offset into A

// Convolution geometry over one NHWC image (c = channels per pixel, the row stride of a pixel).
struct ConvGeom {
    int32_t h, w, c;
    int32_t oh, ow;
    int32_t kh, kw, sh, sw, pt, pl, dh, dw;
    int32_t cpg;  // channels one tap reads (K = kh * kw * cpg)
};

// kConvBytes: what reduction index k reads (tap offsets already multiplied by the dilation).
struct KTap {
    int32_t dy, dx, ci, unused;
};

struct IgemmParams {
    const uint8_t* a;
    int64_t lda;            // kDense
    ConvGeom g;             // kConvVec / kConvBytes
    const KTap* ktab;       // kConvBytes: k_pad entries
    const int8_t* b;        // [n_pad][k_pad]
    const int32_t* coladd;  // n_pad
    const float* mult;      // n_pad (8-bit outputs)
    void* c;
    int64_t ldc;  // elements between rows of C
    int64_t m;
    int32_t n, k, k_pad;
    int32_t mode, a_signed;
    int32_t a_zero_point;    // the byte padding reads
    int32_t out_type;        // QATML_TYPE_INT32 / _UINT8 / _INT8 (qatml_kernels.h values), or FLOAT32 (scaled_float)
    int32_t out_zp, lo, hi;  // 8-bit outputs: zero point and the final clamp
};

// Thread-block tiles. Warps tile the block (bm / wm) x (bn / wn); each warp computes wm x wn with m16n8k32 steps.
struct TileConfig {
    int bm, bn, wm, wn, stages;
};
constexpr int kTileConfigs = 5;
constexpr TileConfig kTiles[kTileConfigs] = {
    {128, 256, 64, 64, 4},  // large GEMMs
    {128, 128, 64, 32, 4},
    {128, 64, 32, 32, 4},  // 64 output channels (ResNet's first stage)
    {64, 128, 32, 32, 4},  // few rows (small batches)
    {64, 64, 32, 32, 4},
};
QATML_HD int tile_threads(const TileConfig& t) { return (t.bm / t.wm) * (t.bn / t.wn) * 32; }
QATML_HD int tile_smem_bytes(const TileConfig& t) { return (t.bm + t.bn) * kBK * t.stages; }

// ---- where A comes from ----------------------------------------------------------------------------------------

struct RowBase {
    int64_t base;  // kDense: the row's offset; conv: its image's offset
    int32_t iy0, ix0;
    bool valid;  // row < m
};

QATML_HD RowBase row_base(const IgemmParams& p, int64_t row) {
    RowBase r{0, 0, 0, row < p.m};
    if (!r.valid) return r;
    if (p.mode == kDense) {
        r.base = row * p.lda;
        return r;
    }
    const int64_t plane = int64_t(p.g.oh) * p.g.ow;
    const int64_t img = row / plane;
    const int32_t pix = static_cast<int32_t>(row - img * plane);
    const int32_t oy = pix / p.g.ow, ox = pix - oy * p.g.ow;
    r.base = img * p.g.h * p.g.w * p.g.c;
    r.iy0 = oy * p.g.sh - p.g.pt;
    r.ix0 = ox * p.g.sw - p.g.pl;
    return r;
}

// Offset of channel ci of the input pixel that tap (dy, dx) reads for this row, or kPadSrc outside the image.
QATML_HD int64_t tap_src(const IgemmParams& p, const RowBase& r, int32_t dy, int32_t dx, int32_t ci) {
    const int32_t iy = r.iy0 + dy, ix = r.ix0 + dx;
    if (iy < 0 || iy >= p.g.h || ix < 0 || ix >= p.g.w) return kPadSrc;
    return r.base + (int64_t(iy) * p.g.w + ix) * p.g.c + ci;
}

// kDense / kConvVec: the 16 bytes A(row, k0 .. k0 + 15), k0 a multiple of 16.
QATML_HD int64_t chunk_src(const IgemmParams& p, const RowBase& r, int32_t k0) {
    if (!r.valid || k0 >= p.k) return kZeroSrc;
    if (p.mode == kDense) return r.base + k0;
    const int32_t tap = k0 / p.g.cpg, ci = k0 - tap * p.g.cpg;
    const int32_t ky = tap / p.g.kw, kx = tap - ky * p.g.kw;
    return tap_src(p, r, ky * p.g.dh, kx * p.g.dw, ci);
}

// kConvBytes: the byte A(row, k); t = ktab[k].
QATML_HD int64_t byte_src(const IgemmParams& p, const RowBase& r, int32_t k, const KTap& t) {
    if (!r.valid || k >= p.k) return kZeroSrc;
    return tap_src(p, r, t.dy, t.dx, t.ci);
}

// ---- block-level layout ----------------------------------------------------------------------------------------

// Block `pid` of the 1-D grid -> tile (tm, tn), in groups of 8 row tiles so that the blocks running together share
// their B tiles and a band of A in L2.
QATML_HD void tile_coords(int64_t pid, int64_t tiles_m, int64_t tiles_n, int64_t* tm, int64_t* tn) {
    const int64_t group = 8, per_group = group * tiles_n;
    const int64_t gid = pid / per_group, first = gid * group;
    const int64_t gsize = tiles_m - first < group ? tiles_m - first : group;
    const int64_t r = pid - gid * per_group;
    *tm = first + r % gsize;
    *tn = r / gsize;
}

// Chunk i of thread tid when a stage of `rows` x kBK bytes is filled by `threads` threads: consecutive threads take
// consecutive 16-byte chunks of a row (coalesced reads).
QATML_HD void stage_chunk(int tid, int i, int threads, int* row, int* chunk) {
    const int q = tid + i * threads;
    *row = q >> 2;
    *chunk = q & 3;
}

// Byte offset of 16-byte chunk `chunk` (0..3) of row `row` in a stage: XOR-swizzled so that the 8 rows one ldmatrix
// phase reads hit 32 distinct banks.
QATML_HD int swz(int row, int chunk) { return row * kBK + ((chunk ^ ((row >> 1) & 3)) << 4); }

// ldmatrix.x4 addresses. A, m16 tile mt of the warp, K step ks (32 bytes): lanes 0-15 rows 0-15 of the first 16
// bytes, lanes 16-31 the same rows' next 16 bytes -> registers a0..a3 of mma.m16n8k32 (row-major A).
QATML_HD int ldsm_a_row(int lane, int mt) { return mt * 16 + (lane & 15); }
QATML_HD int ldsm_a_chunk(int lane, int ks) { return ks * 2 + (lane >> 4); }
// B, n8 tiles 2 * pair and 2 * pair + 1, K step ks: matrix q = lane / 8 is (tile 2 * pair + q / 2, 16 bytes q % 2)
// -> b0, b1 of the first tile, then of the second (column-major B = rows of [n][k]).
QATML_HD int ldsm_b_row(int lane, int pair) { return (pair * 2 + (lane >> 4)) * 8 + (lane & 7); }
QATML_HD int ldsm_b_chunk(int lane, int ks) { return ks * 2 + ((lane >> 3) & 1); }

// Accumulator register i (0..3) of a lane in an m16n8 tile: (row, column) within the tile.
QATML_HD int acc_row(int lane, int i) { return (lane >> 2) + (i >> 1) * 8; }
QATML_HD int acc_col(int lane, int i) { return (lane & 3) * 2 + (i & 1); }

// ---- epilogue ----------------------------------------------------------------------------------------------------

// requant_one of kernels/abi_util.h: float(acc) * mult rounded once (no FMA), clamped, rounded half to even.
QATML_HD int32_t requant(int32_t acc, float mult, int32_t zp, int32_t lo, int32_t hi) {
#if defined(__CUDA_ARCH__)
    float f = __fmul_rn(__int2float_rn(acc), mult);
    f = fminf(fmaxf(f, static_cast<float>(lo - zp)), static_cast<float>(hi - zp));
    return __float2int_rn(f) + zp;
#else
    float f = static_cast<float>(acc) * mult;
    const float lf = static_cast<float>(lo - zp), hf = static_cast<float>(hi - zp);
    f = f < lf ? lf : f;
    f = f > hf ? hf : f;
    return static_cast<int32_t>(std::nearbyint(f)) + zp;
#endif
}

// kernels::int32_to_scaled_float of one sum: float(acc) * mult, one rounding each (no FMA).
QATML_HD float scaled_float(int32_t acc, float mult) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(__int2float_rn(acc), mult);
#else
    return static_cast<float>(acc) * mult;
#endif
}

// ---- host side -----------------------------------------------------------------------------------------------

// The tile configuration with the least estimated time for an m x n output: waves of blocks over `sms`
// multiprocessors holding up to blocks_per_sm[c] blocks of configuration c each; a wave lasts as long as its busiest
// multiprocessor's blocks, each proportional to its area over its efficiency (smaller tiles reuse loaded bytes less).
inline int choose_tile(int64_t m, int64_t n, int sms, const int* blocks_per_sm) {
    static const double efficiency[kTileConfigs] = {1.0, 0.9, 0.75, 0.75, 0.6};
    int best = 0;
    double best_time = 0;
    for (int c = 0; c < kTileConfigs; ++c) {
        const TileConfig& t = kTiles[c];
        const int64_t bps = blocks_per_sm[c] > 0 ? blocks_per_sm[c] : 1, slots = int64_t(sms) * bps;
        const int64_t tiles = ((m + t.bm - 1) / t.bm) * ((n + t.bn - 1) / t.bn);
        const int64_t full = tiles / slots, rest = tiles % slots;
        const int64_t load = full * bps + (rest + sms - 1) / sms;  // blocks the busiest multiprocessor runs
        const double time = double(load) * double(t.bm) * double(t.bn) / efficiency[c];
        if (c == 0 || time < best_time) {
            best = c;
            best_time = time;
        }
    }
    return best;
}

inline int32_t round_up32(int32_t v, int32_t m) { return (v + m - 1) / m * m; }

}  // namespace cuda
}  // namespace qatml
