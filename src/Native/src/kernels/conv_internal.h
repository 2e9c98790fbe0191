// Shared by the convolution files (baseline code): conv_pack.cpp (weight packing), conv_select.cpp (algorithm
// choice and everything computed once per prepared convolution), conv_drivers.cpp (the run), conv_layout.cpp
// (input layouts and the output transpose), conv_reference.cpp (the scalar reference), conv_abi.cpp (the exports).
#pragma once

#include "kernels/kernel_api.h"

#include <vector>

namespace qatml {
namespace kernels {

struct Geometry {
    int64_t n, c, h, w, m, groups, cpg, mpg, kh, kw, oh, ow;
    int64_t sh, sw, pt, pl, pb, pr, dh, dw;
};

// K order of packed weights on every fast ISA: K group g = tap * quads + quad (tap = ky * kW + kx)
// holds input channels 4 quad .. 4 quad + 3, so 4 channels of one tap fill one vpdpbusd lane.
// Channels past C/groups are zero weights. Decodes reduction index kk; false for such padding.
// quads == 0 (C/groups == 1, not depthwise): K group g holds taps 4g .. 4g + 3 of the one channel
// instead, so a 3x3 kernel is 3 K groups, not 9 groups three quarters zero.
inline bool k_source(int64_t kk, int64_t quads, int64_t cpg, int64_t kh, int64_t kw, int64_t* ci, int64_t* ky, int64_t* kx) {
    if (quads == 0) {
        *ci = 0;
        *ky = kk / kw;
        *kx = kk % kw;
        return kk < kh * kw;
    }
    const int64_t grp = kk / 4, tap = grp / quads;
    *ci = (grp % quads) * 4 + kk % 4;
    *ky = tap / kw;
    *kx = tap % kw;
    return *ci < cpg;
}

// The input planes of one image and group with the padding materialised (value `pad`) and the
// XOR flip applied: [cpg][hp][wp] plus slack for over-reading 16-byte copies.
struct PaddedPlanes {
    int64_t hp = 0, wp = 0;
    uint8_t* data = nullptr;
};

// Input of one image and group for the implicit GEMM (conv_avx512vnni.cpp): padding materialised
// (the input zero point; channels past C/g are 0), channel quads byte-interleaved, and split into
// stride phases so that every tap reads consecutive pixels:
//   [quad][phase = (row % sh) * sw + col % sw][row / sh][col / sw][4 channels]  (row, col padded).
// Virtual pixel q = oy * wq + ox reads K group (tap, quad) at 4 q + offset(tap, quad).
struct InterleavedInput {
    int64_t quads = 0, phases = 0, hp = 0, wp = 0, hq = 0, wq = 0;
    int64_t quad_bytes = 0, bytes = 0;    // one quad; all quads plus slack for the last vectors' over-read
    uint64_t used_phases = ~uint64_t(0);  // bit p: some tap reads phase p (others are zeroed, not copied)
    uint8_t* data = nullptr;
};

// What the channel-lane kernel reads (its input filled per image and group), the packed weights it uses and their
// K groups, and where output pixel (oy, ox) starts (oy * row_bytes + ox * col_bytes).
struct LaneInput {
    int64_t k4 = 0;
    const uint8_t* weights = nullptr;
    int64_t group_stride = 0;
    int64_t row_bytes = 0, col_bytes = 0;
};

// The algorithms, chosen once per prepared convolution (conv_prepare).
enum class ConvAlgo {
    Reference,          // scalar: conv_direct
    Depthwise,          // groups == C == M on a SIMD path
    LanesHwc,           // AVX-512 VNNI, 2-3 channels per group: channel lanes over padded HWC bytes
    LanesTaps,          // AVX-512 VNNI, 1 channel per group: channel lanes over taps by 4
    PixelTaps,          // ... pixel lanes over taps by 4
    LanesQuads,         // AVX-512 VNNI: channel lanes over the stride-1 channel-quad layout
    LanesChannelsLast,  // AVX-512 VNNI: channel lanes straight from a channels-last input
    PixelQuads,         // AVX-512 VNNI: pixel lanes over the phase-split channel-quad layout
    Im2col,             // AVX-VNNI / AVX2: im2col panels and the packed GEMM
    ThenPool,           // a fused max pool this path cannot fuse: the convolution per image into scratch, then the pool
};

struct ConvPlan {
    ConvAlgo algo = ConvAlgo::Reference;
    Geometry g{};  // g.n unused (the batch is the run's)
    const qatml_packed_weights* w = nullptr;
    Epilogue ep;
    bool x_signed = false;
    int32_t xz = 0;
    uint8_t flip = 0, pad = 0;
    FusedPool fp;
    // Fast paths: per output channel x = acc + rowadd (+ rowmul * colsum), padded by kConvPack.
    std::vector<int32_t> rowadd, rowmul;
    std::vector<float> mult;
    std::vector<int64_t> k_offsets;
    // Channel lanes.
    LaneInput lane;
    std::vector<int64_t> pixel_offsets;
    int64_t lane_rows = 0, poh = 0, pow = 0;
    std::vector<int64_t> stage_offsets;  // output pixel p in the pixel-major staging: p * lane_rows
    std::vector<int64_t> out_offsets;    // channels-last output: output pixel p in the image
    ActivationLayout x_layout, y_layout;
    uint8_t y_pad = 0;  // the output's zero point, written into a channels-last output's padding
    FusedResidual residual;
    // Channels-last in and out: the offsets cover this many images, so a small plane's call spans several images
    // and each block of weights is loaded once for all of them.
    int64_t images_per_call = 1, pixels_per_image = 0;
    // Pixel lanes.
    std::vector<uint16_t> store_mask;
    std::vector<int32_t> store_index;
    int64_t wq = 0, cols = 0;
    // Inputs built per image and group (their data point into the scratch at run time).
    InterleavedInput layout;
    PaddedPlanes planes;
    int64_t region = 0, hwc_hp = 0, hwc_wp = 0;
    // Depthwise.
    std::vector<int32_t> dw_taps;  // per channel: kh * kw weights minus the weight zero point
    std::vector<int64_t> dw_offsets;
    int64_t dw_hp = 0, dw_wq = 0;
    // Im2col.
    bool grid = false;
    int64_t pv = 0, chunk = 0;
    // ThenPool.
    ConvPlanPtr inner;
    PoolPlan pool;
    // Scratch parts (offsets into the caller's scratch).
    int64_t s_input = 0, s_plane = 0, s_zeros = 0, s_staging = 0, s_pooled = 0, s_pool_row = 0, s_colsum = 0, s_panels = 0,
            s_rows = 0, s_partial = 0, s_coladd = 0, s_full = 0, s_inner = 0;
    int64_t zeros_bytes = 0;
    int64_t scratch_bytes = 0;
};

// conv_reference.cpp: the direct kernel, reference for every convolution. Works on raw values.
void conv_direct(const Geometry& g, const uint8_t* x, bool x_signed, int32_t xz, const qatml_packed_weights& w, const Epilogue& ep,
                 void* y);

// conv_layout.cpp
void pad_planes(const Geometry& g, const uint8_t* img, uint8_t flip, uint8_t pad, const PaddedPlanes& pp);
void im2col_panels(const Geometry& g, const PaddedPlanes& pp, int64_t quads, int64_t p0, int64_t np, int nr, int64_t k4, uint8_t* dst,
                   int32_t* colsum, uint8_t* rows);
void panels_from_planes(const Geometry& g, const PaddedPlanes& pp, int64_t quads, int64_t p0, int64_t np, int nr, int64_t k4,
                        uint8_t* dst, int32_t* colsum, const uint8_t* zeros);
InterleavedInput interleaved_layout(const Geometry& g, int64_t quads);
void interleave_input(const Geometry& g, const InterleavedInput& L, const uint8_t* img, uint8_t flip, uint8_t pad);
void k_group_offsets(const Geometry& g, const InterleavedInput& L, int64_t* offsets);
void store_masks(const Geometry& g, int64_t wq, int64_t cols, uint16_t* mask, int32_t* index);
void transpose_bytes(const uint8_t* src, int64_t pixels, int64_t channels, int64_t src_stride, uint8_t* dst);
void hwc_input(const Geometry& g, const uint8_t* img, uint8_t flip, uint8_t pad, int64_t hp, int64_t wp, uint8_t* dst);
void tap_groups(const Geometry& g, const PaddedPlanes& pp, int64_t k4, int64_t wq, int64_t region, const uint8_t* zeros, uint8_t* dst);
// dst + offsets[p] <- bytes of src + p * src_stride, for p < pixels.
void scatter_pixels(const uint8_t* src, int64_t pixels, int64_t src_stride, int64_t bytes, const int64_t* offsets, uint8_t* dst);

inline int64_t pooled(int64_t size, int64_t before, int64_t after, const FusedPool& fp) {
    return fp.kernel == 0 ? size : (size + before + after - fp.kernel) / 2 + 1;
}

}  // namespace kernels
}  // namespace qatml
