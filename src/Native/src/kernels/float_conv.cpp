// The float convolution's driver (baseline code): weight packing, the im2col of a chunk of output pixels, the
// padded phase-split plane of the depthwise kernel, and the calls into the path's kernel table (float_kernels.h).
#include "kernels/float_kernels.h"
#include "kernels/kernel_api.h"

#include <algorithm>
#include <cstring>

namespace qatml {
namespace kernels {
namespace {

// Bytes of im2col chunk a GEMM chunk may fill (it is read back once per panel, from L2).
constexpr int64_t kChunkBytes = 256 * 1024;
// Scratch above this (a padded plane of absurd strides or pads) runs the reference loop instead, which needs none;
// the same bound as the integer kernels' geometry-sized scratch.
constexpr int64_t kMaxScratchBytes = int64_t(1) << 31;

// Output columns ox whose input column ox * sw + off lies inside a row of w: [*lo, *hi) (possibly empty).
void valid_columns(const FloatConvPlan& p, int64_t off, int64_t* lo, int64_t* hi) {
    *lo = off >= 0 ? 0 : (-off + p.sw - 1) / p.sw;
    *hi = std::min(p.ow, off >= p.w ? 0 : (p.w - 1 - off) / p.sw + 1);
    *lo = std::min(*lo, p.ow);
    *hi = std::max(*hi, *lo);
}

// dst[kk * ld + (pix - p0)] = the input under tap kk of output pixel pix, for pix in [p0, p0 + count); 0 in padding.
void im2col_chunk(const FloatConvPlan& p, const float* x, int64_t p0, int64_t count, float* dst, int64_t ld) {
    const int64_t in_plane = p.h * p.w;
    for (int64_t ci = 0; ci < p.cpg; ++ci)
        for (int64_t ky = 0; ky < p.kh; ++ky)
            for (int64_t kx = 0; kx < p.kw; ++kx) {
                float* d = dst + ((ci * p.kh + ky) * p.kw + kx) * ld - p0;
                const int64_t off = kx * p.dw - p.pl;
                int64_t ox0, ox1;
                valid_columns(p, off, &ox0, &ox1);
                for (int64_t pix = p0; pix < p0 + count;) {
                    const int64_t oy = pix / p.ow, oxa = pix - oy * p.ow, oxb = std::min(p.ow, oxa + (p0 + count - pix));
                    float* dr = d + oy * p.ow;  // dr[ox] is pixel (oy, ox)
                    const int64_t iy = oy * p.sh - p.pt + ky * p.dh;
                    if (iy < 0 || iy >= p.h) {
                        std::fill(dr + oxa, dr + oxb, 0.0f);
                    } else {
                        const int64_t lo = std::min(std::max(oxa, ox0), oxb), hi = std::max(std::min(oxb, ox1), lo);
                        const float* __restrict xr = x + ci * in_plane + iy * p.w + off;
                        float* __restrict out = dr;
                        std::fill(out + oxa, out + lo, 0.0f);
                        if (p.sw == 1)
                            std::memcpy(out + lo, xr + lo, static_cast<size_t>(hi - lo) * sizeof(float));
                        else if (p.sw == 2)
                            p.fast->take_even(xr + 2 * lo, hi - lo, out + lo);
                        else
                            for (int64_t ox = lo; ox < hi; ++ox) out[ox] = xr[ox * p.sw];
                        std::fill(out + hi, out + oxb, 0.0f);
                    }
                    pix += oxb - oxa;
                }
            }
}

// One input plane into the interior of the padded plane, its columns split into sw phases: padded column c of padded
// row r at (r * sw + c % sw) * wq + c / sw. The padding is zeroed once per run (interiors never cover it).
void fill_phase_plane(const FloatConvPlan& p, const float* plane, float* buf) {
    for (int64_t iy = 0; iy < p.h; ++iy) {
        const float* xr = plane + iy * p.w;
        float* row = buf + (iy + p.pt) * p.sw * p.wq;
        if (p.sw == 1) {
            std::memcpy(row + p.pl, xr, static_cast<size_t>(p.w) * sizeof(float));
            continue;
        }
        if (p.sw == 2) {  // even input columns land in phase pl % 2 from column pl / 2, odd ones in the other from (pl + 1) / 2
            p.fast->take_even(xr, (p.w + 1) / 2, row + (p.pl % 2) * p.wq + p.pl / 2);
            p.fast->take_even(xr + 1, p.w / 2, row + ((p.pl + 1) % 2) * p.wq + (p.pl + 1) / 2);
            continue;
        }
        for (int64_t phase = 0; phase < p.sw; ++phase) {
            const int64_t first = p.pl + ((phase - p.pl % p.sw) + p.sw) % p.sw;  // first padded column of the phase
            float* __restrict d = row + phase * p.wq + first / p.sw;
            const float* __restrict s = xr + (first - p.pl);
            const int64_t count = first < p.pl + p.w ? (p.pl + p.w - first + p.sw - 1) / p.sw : 0;
            for (int64_t j = 0; j < count; ++j) d[j] = s[j * p.sw];
        }
    }
}

void depthwise_run(const FloatConvPlan& p, int64_t rows, const float* x, float* y, float* buf) {
    const int64_t in_plane = p.h * p.w, out_plane = p.oh * p.ow, taps = p.kh * p.kw;
    FloatDepthwiseCall call{};
    call.plane = buf;
    call.row_step = p.sh * p.sw * p.wq;
    call.tap_offsets = p.tap_offsets.data();
    call.taps = taps;
    call.oh = p.oh;
    call.ow = p.ow;
    std::fill(buf, buf + p.plane_floats, 0.0f);
    for (int64_t row = 0; row < rows; ++row)
        for (int64_t g = 0; g < p.groups; ++g) {
            fill_phase_plane(p, x + (row * p.c + g) * in_plane, buf);
            for (int64_t j = 0; j < p.mpg; ++j) {
                const int64_t co = g * p.mpg + j;
                call.w = p.weights + co * taps;
                call.bias = p.bias ? p.bias[co] : 0.0f;
                call.y = y + (row * p.m + co) * out_plane;
                p.fast->depthwise(call);
            }
        }
}

}  // namespace

// By path, as simd_for_isa: each path's required features (qatml_isa_required_features) include those the table's
// translation unit is compiled for, so the table runs wherever the path was chosen.
const FloatKernels* float_kernels_for(int isa) {
    switch (isa) {
        case QATML_ISA_AVX512_VNNI: return &kFloatAvx512;
        case QATML_ISA_AVX_VNNI:
        case QATML_ISA_AVX2: return &kFloatAvx2;
        default: return nullptr;
    }
}

void float_conv_prepare(FloatConvPlan& p, int isa) {
    p.fast = float_kernels_for(isa);
    p.packed.clear();
    p.tap_offsets.clear();
    p.scratch_bytes = 0;
    if (!p.fast) return;
    const int64_t taps = p.kh * p.kw, k = p.cpg * taps, out_plane = p.oh * p.ow;
    p.depthwise = p.cpg == 1 && p.groups > 1;
    if (p.depthwise) {
        // Rows and columns every window reaches (at least the input and its leading padding).
        const int64_t hp = std::max(p.h + p.pt, (p.oh - 1) * p.sh + (p.kh - 1) * p.dh + 1);
        const int64_t wp = std::max(p.w + p.pl, (p.ow - 1) * p.sw + (p.kw - 1) * p.dw + 1);
        p.wq = (wp + p.sw - 1) / p.sw;
        if (hp > kMaxScratchBytes / 4 / (p.sw * p.wq)) {  // before the product can overflow
            p.fast = nullptr;
            return;
        }
        p.plane_floats = hp * p.sw * p.wq;
        for (int64_t ky = 0; ky < p.kh; ++ky)
            for (int64_t kx = 0; kx < p.kw; ++kx)
                p.tap_offsets.push_back((ky * p.dh * p.sw + (kx * p.dw) % p.sw) * p.wq + (kx * p.dw) / p.sw);
        p.scratch_bytes = round_up(p.plane_floats * 4, 64);
        return;
    }
    const int64_t mr = p.fast->mr, nr = p.fast->nr, blocks = (p.mpg + mr - 1) / mr;
    if (k > kMaxScratchBytes / (8 * nr)) {  // the im2col chunk and a panel, nr columns each at least
        p.fast = nullptr;
        return;
    }
    p.packed.assign(static_cast<size_t>(p.groups * blocks * k * mr), 0.0f);
    for (int64_t g = 0; g < p.groups; ++g)
        for (int64_t j = 0; j < p.mpg; ++j) {
            const float* wr = p.weights + (g * p.mpg + j) * k;
            float* dst = p.packed.data() + ((g * blocks + j / mr) * k) * mr + j % mr;
            for (int64_t kk = 0; kk < k; ++kk) dst[kk * mr] = wr[kk];
        }
    p.direct_input = p.kh == 1 && p.kw == 1 && p.sh == 1 && p.sw == 1 && p.pt == 0 && p.pl == 0 && p.oh == p.h && p.ow == p.w;
    const int64_t whole = round_up(out_plane, nr);
    p.chunk = p.direct_input ? whole : std::min(whole, std::max(nr, kChunkBytes / (4 * k) / nr * nr));
    p.scratch_bytes = (p.direct_input ? 0 : round_up(k * p.chunk * 4, 64)) + round_up(k * nr * 4, 64);
}

void float_conv_run(const FloatConvPlan& p, int64_t rows, const float* x, float* y, uint8_t* scratch) {
    if (!p.fast) {
        float_conv_reference(p, rows, x, y);
        return;
    }
    float* buf = reinterpret_cast<float*>(scratch);
    if (p.depthwise) {
        depthwise_run(p, rows, x, y, buf);
        return;
    }
    const int64_t in_plane = p.h * p.w, out_plane = p.oh * p.ow, k = p.cpg * p.kh * p.kw;
    const int64_t mr = p.fast->mr, nr = p.fast->nr, blocks = (p.mpg + mr - 1) / mr;
    float* cols_buf = buf;
    float* panel = p.direct_input ? buf : buf + round_up(k * p.chunk * 4, 64) / 4;
    FloatGemmCall call{};
    call.b = panel;
    call.m = p.mpg;
    call.k = k;
    call.ldc = out_plane;
    for (int64_t row = 0; row < rows; ++row)
        for (int64_t g = 0; g < p.groups; ++g) {
            const float* xg = x + (row * p.c + g * p.cpg) * in_plane;
            float* yg = y + (row * p.m + g * p.mpg) * out_plane;
            call.a = p.packed.data() + g * blocks * k * mr;
            call.bias = p.bias ? p.bias + g * p.mpg : nullptr;
            for (int64_t p0 = 0; p0 < out_plane; p0 += p.chunk) {
                const int64_t count = std::min(p.chunk, out_plane - p0);
                const float* src = xg + p0;
                int64_t ld = in_plane;
                if (!p.direct_input) {
                    im2col_chunk(p, xg, p0, count, cols_buf, p.chunk);
                    src = cols_buf;
                    ld = p.chunk;
                }
                for (int64_t j = 0; j < count; j += nr) {
                    call.cols = std::min(nr, count - j);
                    p.fast->pack_panel(src + j, ld, k, call.cols, panel);
                    call.c = yg + p0 + j;
                    p.fast->gemm(call);
                }
            }
        }
}

}  // namespace kernels
}  // namespace qatml
