// Packing of convolution weights for the path active at load: the (tap, channel quad, channel) K order of the
// fast paths in broadcast tiles per group, the HWC packing of 2-3 channels per group, the plain copy of the
// scalar and depthwise paths; int4 widened to int8 once, here.
#include "kernels/conv_internal.h"

#include <algorithm>

namespace qatml {
namespace kernels {
void pack_bc_tiles(const uint8_t* src, int64_t rows, int64_t kk, int64_t ld, int mr, int64_t k4, uint8_t flip, uint8_t* dst,
                   int32_t* rowsum);

std::unique_ptr<qatml_packed_weights> conv_pack(const void* w, int32_t w_type, int64_t out_channels, int64_t in_channels_per_group,
                                                int64_t kernel_h, int64_t kernel_w, int64_t groups, const int32_t* w_zero_points,
                                                int isa) {
    const int64_t khw = kernel_h * kernel_w, kg = khw * in_channels_per_group, total = kg * out_channels;
    auto pw = std::make_unique<qatml_packed_weights>();
    pw->role = 2;
    pw->isa = isa;
    isa_tile(isa, &pw->mr, &pw->nr);
    pw->k = kg;
    pw->n = out_channels;
    pw->k4 = (kg + 3) / 4;
    pw->groups = groups;
    pw->cpg = in_channels_per_group;
    pw->kh = kernel_h;
    pw->kw = kernel_w;
    pw->mpg = out_channels / groups;
    pw->depthwise = in_channels_per_group == 1 && pw->mpg == 1;
    pw->zw.assign(static_cast<size_t>(out_channels), 0);
    if (w_zero_points) {
        std::copy(w_zero_points, w_zero_points + out_channels, pw->zw.begin());
        pw->has_zw = std::any_of(pw->zw.begin(), pw->zw.end(), [](int32_t z) { return z != 0; });
    }
    std::vector<int8_t> plain(static_cast<size_t>(total));
    pw->wsum.assign(static_cast<size_t>(out_channels), 0);
    for (int64_t i = 0; i < total; ++i) {
        plain[static_cast<size_t>(i)] = weight_at(w, w_type, i);
        pw->wsum[static_cast<size_t>(i / kg)] += plain[static_cast<size_t>(i)];
    }
    if (isa == QATML_ISA_SCALAR || pw->depthwise) {
        pw->plain = std::move(plain);
    } else {
        // Reorder K to (tap, channel quad, channel) (see k_source), then broadcast tiles per group.
        if (isa == QATML_ISA_AVX512_VNNI) pw->mr = kConvPack;                          // the implicit-GEMM kernels' weight rows
        pw->quads = in_channels_per_group == 1 ? 0 : (in_channels_per_group + 3) / 4;  // 0: taps by 4
        pw->k4 = pw->quads == 0 ? (khw + 3) / 4 : khw * pw->quads;
        const int64_t kp = pw->k4 * 4;
        std::vector<uint8_t> reordered(static_cast<size_t>(pw->mpg * kp));
        pw->group_stride = round_up(pw->mpg, pw->mr) * pw->k4 * 4;
        pw->packed.resize(pw->group_stride * groups);
        pw->packed.zero();
        for (int64_t g = 0; g < groups; ++g) {
            for (int64_t m = 0; m < pw->mpg; ++m)
                for (int64_t kk = 0; kk < kp; ++kk) {
                    int64_t ci, ky, kx;
                    const bool real = k_source(kk, pw->quads, in_channels_per_group, kernel_h, kernel_w, &ci, &ky, &kx);
                    reordered[static_cast<size_t>(m * kp + kk)] =
                        real ? static_cast<uint8_t>(plain[static_cast<size_t>((g * pw->mpg + m) * kg + ci * khw + ky * kernel_w + kx)])
                             : 0;
                }
            pack_bc_tiles(reordered.data(), pw->mpg, kp, kp, pw->mr, pw->k4, 0, pw->packed.data + g * pw->group_stride,
                          nullptr);
        }
        if (isa == QATML_ISA_AVX512_VNNI && (in_channels_per_group == 2 || in_channels_per_group == 3)) {
            const int64_t row = kernel_w * in_channels_per_group;  // bytes of one kernel row at one pixel
            pw->hwc_row_groups = (row + 3) / 4;
            pw->hwc_k4 = kernel_h * pw->hwc_row_groups;
            const int64_t hp = pw->hwc_k4 * 4;
            std::vector<uint8_t> hwc(static_cast<size_t>(pw->mpg * hp));
            pw->hwc_group_stride = round_up(pw->mpg, kConvPack) * pw->hwc_k4 * 4;
            pw->hwc_packed.resize(pw->hwc_group_stride * groups);
            pw->hwc_packed.zero();
            for (int64_t g = 0; g < groups; ++g) {
                for (int64_t m = 0; m < pw->mpg; ++m)
                    for (int64_t ky = 0; ky < kernel_h; ++ky)
                        for (int64_t t = 0; t < pw->hwc_row_groups * 4; ++t) {
                            const int64_t kx = t / in_channels_per_group, ci = t % in_channels_per_group;
                            hwc[static_cast<size_t>(m * hp + ky * pw->hwc_row_groups * 4 + t)] =
                                t < row ? static_cast<uint8_t>(plain[static_cast<size_t>((g * pw->mpg + m) * kg + ci * khw + ky * kernel_w + kx)])
                                        : 0;
                        }
                pack_bc_tiles(hwc.data(), pw->mpg, hp, hp, kConvPack, pw->hwc_k4, 0, pw->hwc_packed.data + g * pw->hwc_group_stride,
                              nullptr);
            }
        }
    }
    return pw;
}

}  // namespace kernels
}  // namespace qatml
