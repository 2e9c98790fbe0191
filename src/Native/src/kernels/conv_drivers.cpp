// The run of a prepared convolution (conv_select.cpp chose the algorithm): per image and group, the input layout
// the kernel reads is built in the caller's scratch, then the ISA kernel runs (conv_avx512vnni.cpp, the packed
// GEMM, the depthwise loop or the scalar reference).
#include "kernels/conv_internal.h"

#include <algorithm>
#include <cstring>

namespace qatml {
namespace kernels {
namespace {

// The fused residual add's parameters in kernel terms.
void set_residual(const FusedResidual& r, ConvLanesCall& lanes) {
    if (!r.on) return;
    lanes.residual_signed = r.add.is_signed;
    lanes.res_zc = r.add.za;
    lanes.res_zr = r.add.zb;
    lanes.res_zy = r.add.zy;
    lanes.res_lo = r.add.lo;
    lanes.res_hi = r.add.hi;
    lanes.res_rc = r.add.ra;
    lanes.res_rr = r.add.rb;
}

// Channel-lane convolution of every image and group (conv_avx512vnni_lanes); `input(n, group)` returns what the
// kernel reads (built in scratch, or the channels-last input itself). The kernel writes pixel-major: into a staging
// transposed to NCHW, or straight into a channels-last output (padding filled with the zero point), with the residual
// added in its epilogue. Fused pools: 2x2 inside the kernel (pixels listed window by window; the max of each window's
// int32 results requantized once: a quarter of the requantization and of the transpose, no full-size output; exact
// because requantization is non-decreasing, multipliers being validated > 0); 3x3 stride 2 over the staging.
template <typename Input>
void channel_lanes(const ConvPlan& c, int64_t batch, uint8_t* y, uint8_t* scratch, const uint8_t* residual, Input input) {
    const Geometry& g = c.g;
    const FusedPool& fp = c.fp;
    const int64_t PP = c.poh * c.pow, rows = c.lane_rows;
    const bool direct = c.y_layout.channels_last && fp.kernel != 3;  // the kernel writes the output itself
    uint8_t* staging = scratch + c.s_staging;
    ConvLanesCall lanes{};
    lanes.k_offsets = c.k_offsets.data();
    lanes.pixel_offsets = c.pixel_offsets.data();
    lanes.rows = rows;
    lanes.pixels = c.pixels_per_image > 0 ? c.pixels_per_image : static_cast<int64_t>(c.pixel_offsets.size());  // one image
    lanes.pool = fp.kernel == 2;
    lanes.k4 = c.lane.k4;
    lanes.zp = c.ep.zp;
    lanes.lo = c.ep.lo;
    lanes.hi = c.ep.hi;
    lanes.out = staging;
    lanes.out_offsets = direct ? c.out_offsets.data() : c.stage_offsets.data();
    set_residual(c.residual, lanes);
    for (int64_t n = 0; n < batch; ++n) {
        uint8_t* image = y + n * c.y_layout.image_bytes;
        if (c.y_layout.channels_last) fill_channels_last_border(c.y_layout, c.poh, c.pow, c.y_pad, image);
        for (int64_t grp = 0; grp < g.groups; ++grp) {
            lanes.input = input(n, grp);
            lanes.weights = c.lane.weights + grp * c.lane.group_stride;
            lanes.rowadd = c.rowadd.data() + grp * g.mpg;
            lanes.mult = c.mult.data() + grp * g.mpg;
            if (direct) {
                lanes.out = image + grp * g.mpg;
                lanes.residual = c.residual.on ? residual + n * c.y_layout.image_bytes + grp * g.mpg : nullptr;
            }
            conv_avx512vnni_lanes(lanes);
            if (direct) continue;
            const uint8_t* src = staging;
            if (fp.kernel == 3) {
                max_pool3_pixel_major_avx512(staging, g.oh, g.ow, fp.pt, fp.pl, c.poh, c.pow, rows, c.ep.out_type == QATML_TYPE_INT8,
                                             scratch + c.s_pool_row, scratch + c.s_pooled);
                src = scratch + c.s_pooled;
            }
            if (c.y_layout.channels_last)
                scatter_pixels(src, PP, rows, g.mpg, c.out_offsets.data(), image + grp * g.mpg);
            else
                transpose_bytes(src, PP, g.mpg, rows, image + grp * g.mpg * PP);
        }
    }
}

// Channels-last in and out, several images per kernel call (their pixels in one list, see images_per_call).
void lanes_images(const ConvPlan& c, int64_t batch, const uint8_t* x, uint8_t* y, const uint8_t* residual) {
    ConvLanesCall lanes{};
    lanes.k_offsets = c.k_offsets.data();
    lanes.pixel_offsets = c.pixel_offsets.data();
    lanes.out_offsets = c.out_offsets.data();
    lanes.rows = c.lane_rows;
    lanes.pool = c.fp.kernel == 2;
    lanes.k4 = c.lane.k4;
    lanes.zp = c.ep.zp;
    lanes.lo = c.ep.lo;
    lanes.hi = c.ep.hi;
    lanes.weights = c.lane.weights;
    lanes.rowadd = c.rowadd.data();
    lanes.mult = c.mult.data();
    set_residual(c.residual, lanes);
    for (int64_t n = 0; n < batch; n += c.images_per_call) {
        const int64_t images = std::min(c.images_per_call, batch - n);
        for (int64_t i = 0; i < images; ++i) fill_channels_last_border(c.y_layout, c.poh, c.pow, c.y_pad, y + (n + i) * c.y_layout.image_bytes);
        lanes.input = x + n * c.x_layout.image_bytes;
        lanes.out = y + n * c.y_layout.image_bytes;
        lanes.residual = c.residual.on ? residual + n * c.y_layout.image_bytes : nullptr;
        lanes.pixels = images * c.pixels_per_image;
        conv_avx512vnni_lanes(lanes);
    }
}

// Pixel-lane convolution of every image and group (conv_avx512vnni): `prepare(n, group)` fills `input`
// (K groups at `k_offsets`, virtual pixel q = oy * wq + ox, cols = OH * wq of them); per 16 virtual pixels a store
// mask drops the grid's extra columns, and the output is stored NCHW directly.
template <typename Prepare>
void pixel_lanes(const ConvPlan& c, int64_t batch, const uint8_t* input, void* y, uint8_t* scratch, Prepare prepare) {
    const Geometry& g = c.g;
    const qatml_packed_weights& w = *c.w;
    const int64_t P = g.oh * g.ow, esz = elem_size(c.ep.out_type);
    ConvCall call{};
    call.input = input;
    call.k_offsets = c.k_offsets.data();
    call.rows = g.mpg;
    call.cols = c.cols;
    call.k4 = w.k4;
    call.colsum = reinterpret_cast<int32_t*>(scratch + c.s_colsum);
    call.out_type = c.ep.out_type;
    call.zp = c.ep.zp;
    call.lo = c.ep.lo;
    call.hi = c.ep.hi;
    call.out_row_stride = P;
    call.store_mask = c.store_mask.data();
    call.store_index = c.store_index.data();
    for (int64_t n = 0; n < batch; ++n)
        for (int64_t grp = 0; grp < g.groups; ++grp) {
            prepare(n, grp);
            call.weights = w.packed.data + grp * w.group_stride;
            call.rowadd = c.rowadd.data() + grp * g.mpg;
            call.rowmul = w.has_zw ? c.rowmul.data() + grp * g.mpg : nullptr;
            call.mult = c.mult.data() + grp * g.mpg;
            call.out = static_cast<uint8_t*>(y) + (n * g.m + grp * g.mpg) * P * esz;
            conv_avx512vnni(call);
        }
}

// Depthwise (groups == C == M): per channel, the path's depthwise_channel loop (an int32 plane of
// x - x_zp with zero padding, split into column stride phases, and a tap-by-tap multiply-accumulate
// in int32). Exact integer arithmetic, so identical to conv_direct.
void depthwise(const ConvPlan& c, int64_t batch, const uint8_t* x, void* y, uint8_t* scratch) {
    const Geometry& g = c.g;
    const Epilogue& ep = c.ep;
    const int64_t row_len = g.sw * c.dw_wq, taps = g.kh * g.kw;
    int32_t* plane = reinterpret_cast<int32_t*>(scratch + c.s_plane);
    std::memset(plane + c.dw_hp * row_len, 0, 64 * 4);  // the slack the last vector reads
    DepthwiseCall call{};
    call.x_signed = c.x_signed;
    call.x_zero_point = c.xz;
    call.h = g.h;
    call.w = g.w;
    call.oh = g.oh;
    call.ow = g.ow;
    call.kh = g.kh;
    call.kw = g.kw;
    call.sh = g.sh;
    call.sw = g.sw;
    call.dh = g.dh;
    call.dw = g.dw;
    call.pt = g.pt;
    call.pl = g.pl;
    call.hp = c.dw_hp;
    call.wq = c.dw_wq;
    call.plane = plane;
    call.tap_offsets = c.dw_offsets.data();
    call.out_type = ep.out_type;
    call.zp = ep.zp;
    call.lo = ep.lo;
    call.hi = ep.hi;
    const int64_t esz = elem_size(ep.out_type);
    const SimdKernels& simd = *simd_for_isa(c.w->isa);
    for (int64_t n = 0; n < batch; ++n)
        for (int64_t ch = 0; ch < g.c; ++ch) {
            call.taps = c.dw_taps.data() + ch * taps;
            call.x = x + (n * g.c + ch) * g.h * g.w;
            call.bias = ep.bias ? ep.bias[ch] : 0;
            call.mult = ep.out_type == QATML_TYPE_INT32 ? 1.0f : ep.mult[static_cast<size_t>(ch)];
            call.out = static_cast<uint8_t*>(y) + (n * g.m + ch) * g.oh * g.ow * esz;
            simd.depthwise_channel(call);
        }
}

// Im2col panels and the packed GEMM (AVX-VNNI / AVX2; weights broadcast, pixels in vector lanes).
void im2col_gemm(const ConvPlan& c, int64_t batch, const uint8_t* x8, void* y, uint8_t* scratch) {
    const Geometry& g = c.g;
    const qatml_packed_weights& w = *c.w;
    const Epilogue& ep = c.ep;
    const int nr = w.nr;
    const int64_t k4 = w.k4, P = g.oh * g.ow, chunk = c.chunk, esz = elem_size(ep.out_type);
    PaddedPlanes pp = c.planes;
    pp.data = scratch + c.s_plane;
    uint8_t* panels = scratch + c.s_panels;
    uint8_t* rows = scratch + c.s_rows;
    uint8_t* zeros = scratch + c.s_zeros;
    uint8_t* staging = scratch + c.s_staging;
    int32_t* coladd = reinterpret_cast<int32_t*>(scratch + c.s_coladd);
    int32_t* colsum = reinterpret_cast<int32_t*>(scratch + c.s_colsum);
    std::memset(zeros, 0, static_cast<size_t>(c.zeros_bytes));
    std::memset(coladd, 0, static_cast<size_t>(chunk * 4));
    std::memset(colsum, 0, static_cast<size_t>(chunk * 4));
    for (int64_t n = 0; n < batch; ++n)
        for (int64_t grp = 0; grp < g.groups; ++grp) {
            pad_planes(g, x8 + (n * g.c + grp * g.cpg) * g.h * g.w, c.flip, c.pad, pp);
            uint8_t* out0 = static_cast<uint8_t*>(y) + (n * g.m + grp * g.mpg) * P * esz;
            for (int64_t p0 = 0; p0 < c.pv; p0 += chunk) {
                const int64_t np = std::min(chunk, c.pv - p0);
                if (c.grid)
                    panels_from_planes(g, pp, w.quads, p0, np, nr, k4, panels, w.has_zw ? colsum : nullptr, zeros);
                else
                    im2col_panels(g, pp, w.quads, p0, np, nr, k4, panels, w.has_zw ? colsum : nullptr, rows);
                GemmCall call{};
                call.bc = w.packed.data + grp * w.group_stride;
                call.vec = panels;
                call.rows = g.mpg;
                call.cols = np;
                call.k4 = k4;
                call.bc_signed = true;
                call.rowadd = c.rowadd.data() + grp * g.mpg;
                call.coladd = coladd;
                call.rowmul = w.has_zw ? c.rowmul.data() + grp * g.mpg : nullptr;
                call.colmul = colsum;
                call.mult = c.mult.data() + grp * g.mpg;
                call.mult_per_row = true;
                call.out_type = ep.out_type;
                call.zp = ep.zp;
                call.lo = ep.lo;
                call.hi = ep.hi;
                call.out = c.grid ? staging : out0 + p0 * esz;
                call.ldc = c.grid ? chunk : P;
                call.kc4 = 256;
                call.scratch = reinterpret_cast<int32_t*>(scratch + c.s_partial);
                call.scratch_ld = chunk;
                run_gemm(w.isa, call);
                if (!c.grid) continue;
                for (int64_t m = 0; m < g.mpg; ++m) {  // drop the columns ox >= OW and store NCHW
                    const uint8_t* srow = staging + m * chunk * esz;
                    uint8_t* drow = out0 + m * P * esz;
                    int64_t q = p0;
                    while (q < p0 + np) {
                        const int64_t oy = q / pp.wp, ox = q % pp.wp;
                        const int64_t run = std::min(pp.wp - ox, p0 + np - q);
                        const int64_t keep = std::max<int64_t>(0, std::min(run, g.ow - ox));
                        if (keep > 0) std::memcpy(drow + (oy * g.ow + ox) * esz, srow + (q - p0) * esz, static_cast<size_t>(keep * esz));
                        q += run;
                    }
                }
            }
        }
}

}  // namespace

void conv_run(const ConvPlan& c, int64_t batch, const uint8_t* x8, uint8_t* y, uint8_t* scratch, const uint8_t* residual) {
    const Geometry& g = c.g;
    const qatml_packed_weights& w = *c.w;
    switch (c.algo) {
        case ConvAlgo::Reference: {
            Geometry gb = g;
            gb.n = batch;
            conv_direct(gb, x8, c.x_signed, c.xz, w, c.ep, y);
            return;
        }
        case ConvAlgo::Depthwise: depthwise(c, batch, x8, y, scratch); return;
        case ConvAlgo::ThenPool: {
            const int64_t out_image = g.m * c.pool.oh * c.pool.ow, in_image = g.c * g.h * g.w;
            for (int64_t n = 0; n < batch; ++n) {
                conv_run(*c.inner, 1, x8 + n * in_image, scratch + c.s_full, scratch + c.s_inner);
                pool_run(c.pool, 1, scratch + c.s_full, y + n * out_image, scratch + c.s_input);
            }
            return;
        }
        case ConvAlgo::LanesHwc: {
            uint8_t* input = scratch + c.s_input;
            channel_lanes(c, batch, y, scratch, residual, [&](int64_t n, int64_t grp) {
                hwc_input(g, x8 + (n * g.c + grp * g.cpg) * g.h * g.w, c.flip, c.pad, c.hwc_hp, c.hwc_wp, input);
                return input;
            });
            return;
        }
        case ConvAlgo::LanesTaps:
        case ConvAlgo::PixelTaps: {
            PaddedPlanes pp = c.planes;
            pp.data = scratch + c.s_plane;
            uint8_t* input = scratch + c.s_input;
            const uint8_t* zeros = scratch + c.s_zeros;
            std::memset(pp.data + pp.hp * pp.wp, 0, static_cast<size_t>(pp.wp + 64));  // read for dropped pixels only
            std::memset(scratch + c.s_zeros, 0, static_cast<size_t>(c.zeros_bytes));
            auto prepare = [&](int64_t n, int64_t grp) {
                pad_planes(g, x8 + (n * g.c + grp) * g.h * g.w, c.flip, c.pad, pp);
                tap_groups(g, pp, w.k4, c.wq, c.region, zeros, input);
            };
            if (c.algo == ConvAlgo::LanesTaps)
                channel_lanes(c, batch, y, scratch, residual, [&](int64_t n, int64_t grp) {
                    prepare(n, grp);
                    return static_cast<const uint8_t*>(input);
                });
            else
                pixel_lanes(c, batch, input, y, scratch, prepare);
            return;
        }
        case ConvAlgo::LanesQuads:
        case ConvAlgo::PixelQuads: {
            InterleavedInput L = c.layout;
            L.data = scratch + c.s_input;
            // The slack past the quads is read only for dropped pixels; zeroed so those reads are defined.
            std::memset(L.data + L.quads * L.quad_bytes, 0, static_cast<size_t>(L.bytes - L.quads * L.quad_bytes));
            Geometry gl = g;
            if (c.algo == ConvAlgo::LanesQuads) gl.sh = gl.sw = 1;  // the stride-1 layout; the kernel strides
            auto prepare = [&](int64_t n, int64_t grp) { interleave_input(gl, L, x8 + (n * g.c + grp * g.cpg) * g.h * g.w, c.flip, c.pad); };
            if (c.algo == ConvAlgo::LanesQuads)
                channel_lanes(c, batch, y, scratch, residual, [&](int64_t n, int64_t grp) {
                    prepare(n, grp);
                    return static_cast<const uint8_t*>(L.data);
                });
            else
                pixel_lanes(c, batch, L.data, y, scratch, prepare);
            return;
        }
        case ConvAlgo::LanesChannelsLast:
            if (c.images_per_call > 1 && batch > 1) {
                lanes_images(c, batch, x8, y, residual);
                return;
            }
            channel_lanes(c, batch, y, scratch, residual, [&](int64_t n, int64_t grp) { return x8 + n * c.x_layout.image_bytes + grp * g.cpg; });
            return;
        case ConvAlgo::Im2col: im2col_gemm(c, batch, x8, y, scratch); return;
    }
}

}  // namespace kernels
}  // namespace qatml
