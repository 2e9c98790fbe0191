// Algorithm selection for a convolution and everything a run would otherwise recompute: requantization arrays,
// K-group and pixel offsets, store masks, the layouts of the per-image inputs and the scratch they take.
#include "kernels/conv_internal.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace qatml {
namespace kernels {

const Tuning& tuning() {
    static const Tuning t = [] {
        Tuning v;
        const char* lanes = std::getenv("QATML_CONV_LANES");
        if (lanes) v.conv_lanes = std::strcmp(lanes, "channels") == 0 ? 1 : std::strcmp(lanes, "pixels") == 0 ? -1
                                                                                                              : 0;
        return v;
    }();
    return t;
}

namespace {

// False when QATML_CONV_LANES=pixels: the choices that take channel lanes without a lane-use test (2-3
// channels per group over HWC bytes, ResNet's stem; strided windows) then keep pixel lanes.
bool channel_lanes_allowed() { return tuning().conv_lanes >= 0; }

// Pixel lanes (16 virtual pixels per vector, OH * wq of them) waste the lanes of the dropped columns
// and of the last vector; channel lanes waste only the rows that pad the channels to 16, and pay a
// transpose. Channel lanes when they use the vector lanes clearly better (7x7 and 14x14 planes).
// `margin`: the lane-use advantage channel lanes need (their transpose weighs more when K is short).
// QATML_CONV_LANES=pixels|channels forces one kernel, for benchmarks and tests.
bool prefer_channel_lanes(const Geometry& g, int64_t wq, double margin) {
    if (tuning().conv_lanes != 0) return tuning().conv_lanes > 0;
    const double pixel_use = double(g.oh * g.ow) / double(round_up(g.oh * wq, 16));
    const double channel_use = double(g.mpg) / double(round_up(g.mpg, kConvPack));
    return channel_use > pixel_use + margin;
}

// Channel lanes: the pixels the kernel computes (fused 2x2 pool: window by window in output order, the odd edges
// never computed) and the staging the output passes through.
void plan_channel_lanes(ConvPlan& c, const LaneInput& in, ScratchLayout& s) {
    const Geometry& g = c.g;
    const FusedPool& fp = c.fp;
    c.lane = in;
    c.lane_rows = round_up(g.mpg, kConvPack);
    c.poh = pooled(g.oh, fp.pt, fp.pb, fp);
    c.pow = pooled(g.ow, fp.pl, fp.pr, fp);
    const int64_t P = g.oh * g.ow, PP = c.poh * c.pow;
    const bool in_kernel = fp.kernel == 2;
    c.pixel_offsets.resize(static_cast<size_t>(in_kernel ? 4 * PP : P));
    int64_t* po = c.pixel_offsets.data();
    if (in_kernel) {
        for (int64_t py = 0; py < c.poh; ++py)
            for (int64_t px = 0; px < c.pow; ++px, po += 4) {
                const int64_t q = 2 * py * in.row_bytes + 2 * px * in.col_bytes;
                po[0] = q;
                po[1] = q + in.col_bytes;
                po[2] = q + in.row_bytes;
                po[3] = q + in.row_bytes + in.col_bytes;
            }
    } else {
        for (int64_t oy = 0; oy < g.oh; ++oy)
            for (int64_t ox = 0; ox < g.ow; ++ox) *po++ = oy * in.row_bytes + ox * in.col_bytes;
    }
    const int64_t staged = in_kernel ? PP : P;  // pixels the kernel writes
    c.stage_offsets.resize(static_cast<size_t>(staged));
    for (int64_t p = 0; p < staged; ++p) c.stage_offsets[static_cast<size_t>(p)] = p * c.lane_rows;
    if (c.y_layout.channels_last) {  // the (pooled) output pixels in the channels-last image
        const ActivationLayout& l = c.y_layout;
        c.out_offsets.resize(static_cast<size_t>(PP));
        for (int64_t py = 0; py < c.poh; ++py)
            for (int64_t px = 0; px < c.pow; ++px) c.out_offsets[static_cast<size_t>(py * c.pow + px)] = ((py + l.pt) * l.wp + px + l.pl) * l.cs;
    }
    // The staging: all outputs of a plain layout, and those the 3x3 pool reads of a channels-last one.
    c.s_staging = s.take(c.y_layout.channels_last && fp.kernel != 3 ? 0 : staged * c.lane_rows);
    c.s_pooled = s.take(fp.kernel == 3 ? PP * c.lane_rows : 0);
    c.s_pool_row = s.take(fp.kernel == 3 ? g.ow * c.lane_rows : 0);
}

// Pixel lanes: per 16 virtual pixels of the wq-wide grid, which lanes are real and where they go.
void plan_pixel_lanes(ConvPlan& c, int64_t wq, ScratchLayout& s) {
    c.wq = wq;
    c.cols = c.g.oh * wq;
    const int64_t vectors = (c.cols + 15) / 16;
    c.store_mask.resize(static_cast<size_t>(vectors));
    c.store_index.resize(static_cast<size_t>(vectors));
    store_masks(c.g, wq, c.cols, c.store_mask.data(), c.store_index.data());
    c.s_colsum = s.take(vectors * 16 * 4);
}

void plan_depthwise(ConvPlan& c, ScratchLayout& s) {
    const Geometry& g = c.g;
    const qatml_packed_weights& w = *c.w;
    c.dw_hp = std::max(g.h + g.pt, (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1);
    const int64_t wp = std::max(g.w + g.pl, (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1);
    c.dw_wq = (wp + g.sw - 1) / g.sw;
    const int64_t row_len = g.sw * c.dw_wq, taps = g.kh * g.kw;
    c.dw_offsets.resize(static_cast<size_t>(taps));
    for (int64_t t = 0; t < taps; ++t) {
        const int64_t ry = (t / g.kw) * g.dh, rx = (t % g.kw) * g.dw;
        c.dw_offsets[static_cast<size_t>(t)] = ry * row_len + (rx % g.sw) * c.dw_wq + rx / g.sw;
    }
    c.dw_taps.resize(static_cast<size_t>(g.c * taps));
    for (int64_t ch = 0; ch < g.c; ++ch)
        for (int64_t t = 0; t < taps; ++t)
            c.dw_taps[static_cast<size_t>(ch * taps + t)] = w.plain[static_cast<size_t>(ch * taps + t)] - w.zw[static_cast<size_t>(ch)];
    c.s_plane = s.take((c.dw_hp * row_len + 64) * 4);  // + slack for the last vector
}

// Im2col + packed GEMM (AVX-VNNI / AVX2). Stride 1 computes on the padded-width grid (see panels_from_planes)
// into a staging buffer.
void plan_im2col(ConvPlan& c, ScratchLayout& s) {
    const Geometry& g = c.g;
    const qatml_packed_weights& w = *c.w;
    const int nr = w.nr;
    const int64_t k4 = w.k4;
    c.grid = g.sh == 1 && g.sw == 1;
    c.planes.hp = g.h + g.pt + g.pb;
    c.planes.wp = g.w + g.pl + g.pr;
    c.pv = c.grid ? g.oh * c.planes.wp : g.oh * g.ow;  // pixels the GEMM computes per image and group
    // Pixel chunk: packed panels of about 192 KiB.
    c.chunk = std::min(std::max<int64_t>(nr, (196608 / (k4 * 4)) / nr * nr), round_up(c.pv, nr));
    c.s_panels = s.take(c.chunk * k4 * 4);
    c.s_rows = s.take(c.grid ? 0 : 4 * round_up(c.chunk, 16) + 16);
    c.s_plane = s.take(g.cpg * c.planes.hp * c.planes.wp + (g.kw - 1) * g.dw + nr + 64);
    c.zeros_bytes = c.grid ? round_up(c.chunk, 16) + 16 : 0;
    c.s_zeros = s.take(c.zeros_bytes);
    c.s_partial = s.take(k4 > 256 ? round_up(g.mpg, w.mr) * c.chunk * 4 : 0);
    c.s_staging = s.take(c.grid ? g.mpg * c.chunk * elem_size(c.ep.out_type) : 0);
    c.s_coladd = s.take(c.chunk * 4);
    c.s_colsum = s.take(c.chunk * 4);
}

}  // namespace

void ConvPlanDeleter::operator()(ConvPlan* p) const { delete p; }

int64_t conv_scratch_bytes(const ConvPlan& plan) { return plan.scratch_bytes; }

bool conv_writes_channels_last(const qatml_packed_weights* w, int32_t out_type) {
    return w->isa == QATML_ISA_AVX512_VNNI && !w->depthwise && !w->has_zw && w->groups == 1 &&
        (out_type == QATML_TYPE_UINT8 || out_type == QATML_TYPE_INT8);
}

bool conv_reads_channels_last(const qatml_packed_weights* w, int32_t out_type) { return conv_writes_channels_last(w, out_type) && w->quads > 0; }

ConvPlanPtr conv_prepare(const qatml_conv2d_params& params, int32_t x_type, int32_t x_zp, const qatml_packed_weights* w,
                         const Epilogue& ep, const FusedPool& fp, const ConvOptions& options) {
    ConvPlanPtr plan(new ConvPlan());
    ConvPlan& c = *plan;
    Geometry& g = c.g;
    g.n = 0;
    g.c = params.channels;
    g.h = params.height;
    g.w = params.width;
    g.m = w->n;
    g.groups = w->groups;
    g.cpg = w->cpg;
    g.mpg = w->mpg;
    g.kh = w->kh;
    g.kw = w->kw;
    g.sh = params.stride_h;
    g.sw = params.stride_w;
    g.pt = params.pad_top;
    g.pl = params.pad_left;
    g.pb = params.pad_bottom;
    g.pr = params.pad_right;
    g.dh = params.dilation_h;
    g.dw = params.dilation_w;
    g.oh = (g.h + g.pt + g.pb - (g.dh * (g.kh - 1) + 1)) / g.sh + 1;
    g.ow = (g.w + g.pl + g.pr - (g.dw * (g.kw - 1) + 1)) / g.sw + 1;
    c.w = w;
    c.ep = ep;
    c.x_signed = x_type == QATML_TYPE_INT8;
    c.xz = x_zp;
    c.fp = fp;
    c.x_layout = options.x_layout.channels_last ? options.x_layout : plain_layout(g.c, g.h, g.w);
    c.y_layout = options.y_layout.channels_last ? options.y_layout
                                                : plain_layout(g.m, pooled(g.oh, fp.pt, fp.pb, fp), pooled(g.ow, fp.pl, fp.pr, fp));
    c.residual = options.residual;
    c.y_pad = static_cast<uint8_t>(options.residual.on ? options.residual.add.zy : ep.zp);  // the output tensor's zero point
    ScratchLayout s;

    if (fp.kernel != 0 && (w->isa != QATML_ISA_AVX512_VNNI || w->depthwise || w->has_zw)) {
        // Not fused on this path: the convolution of one image into scratch, then the pool.
        c.algo = ConvAlgo::ThenPool;
        c.inner = conv_prepare(params, x_type, x_zp, w, ep, FusedPool{});
        qatml_conv2d_params pp{};
        pp.batch = 1;
        pp.channels = g.m;
        pp.height = g.oh;
        pp.width = g.ow;
        pp.stride_h = pp.stride_w = 2;
        pp.pad_top = fp.pt;
        pp.pad_left = fp.pl;
        pp.pad_bottom = fp.pb;
        pp.pad_right = fp.pr;
        pp.dilation_h = pp.dilation_w = 1;
        pool_prepare(c.pool, simd_for_isa(w->isa), true, pp, fp.kernel, fp.kernel, 0, ep.out_type, 1.0f, 0, 1.0f, 0);
        c.s_full = s.take(g.m * g.oh * g.ow);
        c.s_inner = s.take(c.inner->scratch_bytes);
        c.s_input = s.take(c.pool.scratch_bytes);  // the pool's scratch
        c.scratch_bytes = s.bytes;
        return plan;
    }
    if (w->isa == QATML_ISA_SCALAR) {
        c.algo = ConvAlgo::Reference;
        return plan;
    }
    if (w->depthwise) {
        c.algo = ConvAlgo::Depthwise;
        plan_depthwise(c, s);
        c.scratch_bytes = s.bytes;
        return plan;
    }
    c.flip = c.x_signed ? 0x80 : 0x00;
    const int32_t za = c.x_signed ? x_zp + 128 : x_zp;
    c.pad = static_cast<uint8_t>(za);
    const int64_t k4 = w->k4, kg = w->k;
    const int64_t mpad = round_up(g.m, w->mr);
    // + kConvPack: the channel-lane kernel reads whole 16-channel vectors from each group's first channel.
    c.rowadd.assign(static_cast<size_t>(mpad + kConvPack), 0);
    c.rowmul.assign(static_cast<size_t>(mpad), 0);
    c.mult.assign(static_cast<size_t>(mpad + kConvPack), 1.0f);
    for (int64_t oc = 0; oc < g.m; ++oc) {
        const int32_t zw = w->zw[static_cast<size_t>(oc)];
        uint32_t v = ep.bias ? static_cast<uint32_t>(ep.bias[oc]) : 0u;
        v -= wrap_mul(za, w->wsum[static_cast<size_t>(oc)]);
        v += static_cast<uint32_t>(kg) * static_cast<uint32_t>(za) * static_cast<uint32_t>(zw);
        c.rowadd[static_cast<size_t>(oc)] = static_cast<int32_t>(v);
        c.rowmul[static_cast<size_t>(oc)] = static_cast<int32_t>(0u - static_cast<uint32_t>(zw));
        if (ep.out_type != QATML_TYPE_INT32) c.mult[static_cast<size_t>(oc)] = ep.mult[static_cast<size_t>(oc)];
    }
    const bool avx512 = w->isa == QATML_ISA_AVX512_VNNI, lanes_ok = ep.out_type != QATML_TYPE_INT32 && !w->has_zw;
    const bool force_lanes = c.y_layout.channels_last;  // only the channel-lane kernel writes channels-last
    if (c.x_layout.channels_last) {
        // Channel lanes straight from the channels-last input: K group (tap, quad) of output pixel (oy, ox) at
        // (oy * sh + ky * dh, ox * sw + kx * dw) of the window origin, channels 4 quad .. 4 quad + 3.
        c.algo = ConvAlgo::LanesChannelsLast;
        const ActivationLayout& l = c.x_layout;
        const int64_t base = ((l.pt - g.pt) * l.wp + (l.pl - g.pl)) * l.cs;
        c.k_offsets.resize(static_cast<size_t>(k4));
        for (int64_t tap = 0; tap < g.kh * g.kw; ++tap)
            for (int64_t q = 0; q < w->quads; ++q)
                c.k_offsets[static_cast<size_t>(tap * w->quads + q)] =
                    base + ((tap / g.kw) * g.dh * l.wp + (tap % g.kw) * g.dw) * l.cs + 4 * q;
        plan_channel_lanes(c, LaneInput{k4, w->packed.data, w->group_stride, g.sh * l.wp * l.cs, g.sw * l.cs}, s);
        if (c.y_layout.channels_last && fp.kernel != 3) {
            // Up to ~1024 pixels per call: the offsets of the next images, one image stride further.
            const int64_t per_image = static_cast<int64_t>(c.pixel_offsets.size()), outs = static_cast<int64_t>(c.out_offsets.size());
            c.pixels_per_image = per_image;
            c.images_per_call = std::max<int64_t>(1, std::min<int64_t>(16, 1024 / std::max<int64_t>(per_image, 1)));
            for (int64_t i = 1; i < c.images_per_call; ++i) {
                for (int64_t p = 0; p < per_image; ++p) c.pixel_offsets.push_back(c.pixel_offsets[static_cast<size_t>(p)] + i * l.image_bytes);
                for (int64_t p = 0; p < outs; ++p) c.out_offsets.push_back(c.out_offsets[static_cast<size_t>(p)] + i * c.y_layout.image_bytes);
            }
        }
    } else if (avx512 && w->hwc_k4 > 0 && lanes_ok && g.dw == 1 && (force_lanes || fp.kernel != 0 || channel_lanes_allowed())) {
        // 2-3 channels per group: channel lanes over padded HWC bytes (K groups of 4 consecutive bytes of a
        // kernel row, no channel-quad padding).
        c.algo = ConvAlgo::LanesHwc;
        c.hwc_hp = g.h + g.pt + g.pb;
        c.hwc_wp = g.w + g.pl + g.pr;
        c.s_input = s.take(c.hwc_hp * c.hwc_wp * g.cpg + 64);
        c.k_offsets.resize(static_cast<size_t>(w->hwc_k4));
        for (int64_t ky = 0; ky < g.kh; ++ky)
            for (int64_t j = 0; j < w->hwc_row_groups; ++j)
                c.k_offsets[static_cast<size_t>(ky * w->hwc_row_groups + j)] = ky * g.dh * c.hwc_wp * g.cpg + 4 * j;
        plan_channel_lanes(c, LaneInput{w->hwc_k4, w->hwc_packed.data, w->hwc_group_stride, g.sh * c.hwc_wp * g.cpg, g.sw * g.cpg}, s);
    } else if (avx512 && w->quads == 0) {  // one channel per group: taps by 4
        c.planes.hp = g.h + g.pt + g.pb;
        c.planes.wp = g.w + g.pl + g.pr;
        const int64_t wq = g.sh == 1 && g.sw == 1 ? c.planes.wp : g.ow, cols = g.oh * wq;
        c.region = round_up(cols, 16) * 4;
        c.s_plane = s.take(c.planes.hp * c.planes.wp + c.planes.wp + 64);
        c.s_input = s.take(k4 * c.region + 64);
        c.zeros_bytes = round_up(cols, 16) + 16;
        c.s_zeros = s.take(c.zeros_bytes);
        c.k_offsets.resize(static_cast<size_t>(k4));
        for (int64_t k = 0; k < k4; ++k) c.k_offsets[static_cast<size_t>(k)] = k * c.region;
        c.wq = wq;
        if (lanes_ok && (force_lanes || fp.kernel != 0 || prefer_channel_lanes(g, wq, 0.15))) {
            c.algo = ConvAlgo::LanesTaps;
            plan_channel_lanes(c, LaneInput{k4, w->packed.data, w->group_stride, 4 * wq, 4}, s);
        } else {
            c.algo = ConvAlgo::PixelTaps;
            plan_pixel_lanes(c, wq, s);
        }
    } else if (avx512) {  // implicit GEMM, no im2col
        const InterleavedInput L = interleaved_layout(g, w->quads);
        // Strided windows larger than 1x1 always take channel lanes: without the phase split their input is
        // a plain copy, which beats pixel lanes on ResNet18's 3x3 stride-2 layers.
        const bool strided = (g.sh > 1 || g.sw > 1) && g.kh * g.kw > 1;
        c.k_offsets.resize(static_cast<size_t>(k4));
        if (lanes_ok &&
            (force_lanes || fp.kernel != 0 || prefer_channel_lanes(g, L.wq, 0.05) || (strided && channel_lanes_allowed()))) {
            // Channel lanes read any pixel order, so strides need no phase split: the stride-1 layout of the
            // padded input, output pixel (oy, ox) at row oy * sh, column ox * sw.
            c.algo = ConvAlgo::LanesQuads;
            Geometry g1 = g;
            g1.sh = g1.sw = 1;
            c.layout = interleaved_layout(g1, w->quads);
            k_group_offsets(g1, c.layout, c.k_offsets.data());
            plan_channel_lanes(c, LaneInput{k4, w->packed.data, w->group_stride, 4 * g.sh * c.layout.wq, 4 * g.sw}, s);
        } else {
            c.algo = ConvAlgo::PixelQuads;
            c.layout = L;
            k_group_offsets(g, c.layout, c.k_offsets.data());
            plan_pixel_lanes(c, L.wq, s);
        }
        c.s_input = s.take(c.layout.bytes);
    } else {
        c.algo = ConvAlgo::Im2col;
        plan_im2col(c, s);
    }
    c.scratch_bytes = s.bytes;
    return plan;
}

}  // namespace kernels
}  // namespace qatml
