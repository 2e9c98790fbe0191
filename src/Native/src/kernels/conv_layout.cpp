// Input layouts of the convolution paths (padded planes, im2col panels, the channel-quad interleave of the implicit
// GEMM, HWC bytes, taps by 4), the pixel-lane store masks and the pixel-major -> NCHW transpose of the
// channel-lane output.
#include "kernels/conv_internal.h"

#include <algorithm>
#include <cstring>

#include <emmintrin.h>  // SSE2: part of baseline x86-64

namespace qatml {
namespace kernels {
namespace {

// Four reduction rows of 16 pixels each, byte-interleaved into the 64 bytes of 16 vpdpbusd lanes (SSE2).
inline void interleave_rows_16(const uint8_t* r0p, const uint8_t* r1p, const uint8_t* r2p, const uint8_t* r3p, uint8_t* d) {
    const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r0p));
    const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r1p));
    const __m128i r2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r2p));
    const __m128i r3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r3p));
    const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
    const __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm_unpacklo_epi16(t0, t2));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 16), _mm_unpackhi_epi16(t0, t2));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 32), _mm_unpacklo_epi16(t1, t3));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 48), _mm_unpackhi_epi16(t1, t3));
}

// Per pixel of the panels, the sum of its bytes over every K group (the weight zero point correction).
void panel_column_sums(const uint8_t* dst, int64_t np, int64_t npad, int nr, int64_t k4, int32_t* colsum) {
    for (int64_t j = 0; j < npad; ++j) colsum[j] = 0;
    for (int64_t j = 0; j < np; ++j) {
        int32_t s = 0;
        for (int64_t g4 = 0; g4 < k4; ++g4) {
            const uint8_t* d = dst + (((j / nr) * k4 + g4) * nr + (j % nr)) * 4;
            s += d[0] + d[1] + d[2] + d[3];
        }
        colsum[j] = s;
    }
}

// One im2col row: the bytes that channel ci, tap (ky, kx) reads for output pixels [p0, p0 + np).
// May write up to 15 bytes past row + np.
void im2col_row(const Geometry& g, const PaddedPlanes& pp, int64_t ci, int64_t ky, int64_t kx, int64_t p0, int64_t np,
                uint8_t* row) {
    const uint8_t* plane = pp.data + ci * pp.hp * pp.wp + ky * g.dh * pp.wp + kx * g.dw;
    int64_t j = 0;
    int64_t oy = p0 / g.ow, ox0 = p0 % g.ow;
    while (j < np) {
        const int64_t run = std::min(np - j, g.ow - ox0);
        const uint8_t* src = plane + oy * g.sh * pp.wp + ox0 * g.sw;
        uint8_t* d = row + j;
        if (g.sw == 1) {
            for (int64_t t = 0; t < run; t += 16)
                _mm_storeu_si128(reinterpret_cast<__m128i*>(d + t), _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + t)));
        } else {
            for (int64_t t = 0; t < run; ++t) d[t] = src[t * g.sw];
        }
        j += run;
        ox0 = 0;
        ++oy;
    }
}

}  // namespace

void pad_planes(const Geometry& g, const uint8_t* img, uint8_t flip, uint8_t pad, const PaddedPlanes& pp) {
    // Locals: byte stores may alias anything, which would otherwise reload g's fields per byte.
    const int64_t h = g.h, w = g.w, pt = g.pt, pl = g.pl, hp = pp.hp, wp = pp.wp, cpg = g.cpg;
    const __m128i fl = _mm_set1_epi8(static_cast<char>(flip));
    for (int64_t ci = 0; ci < cpg; ++ci) {
        uint8_t* dst = pp.data + ci * hp * wp;
        const uint8_t* src = img + ci * h * w;
        std::memset(dst, pad, static_cast<size_t>(pt * wp));
        for (int64_t y = 0; y < h; ++y) {
            uint8_t* d = dst + (pt + y) * wp;
            const uint8_t* s = src + y * w;
            std::memset(d, pad, static_cast<size_t>(pl));
            int64_t x = 0;
            if (flip == 0) {
                std::memcpy(d + pl, s, static_cast<size_t>(w));
                x = w;
            }
            for (; x + 16 <= w; x += 16)
                _mm_storeu_si128(reinterpret_cast<__m128i*>(d + pl + x),
                                 _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + x)), fl));
            for (; x < w; ++x) d[pl + x] = static_cast<uint8_t>(s[x] ^ flip);
            std::memset(d + pl + w, pad, static_cast<size_t>(wp - pl - w));
        }
        std::memset(dst + (pt + h) * wp, pad, static_cast<size_t>((hp - pt - h) * wp));
    }
}

// im2col of pixels [p0, p0 + np) of one image and group into vector panels [np/nr][k4][nr][4]:
// four im2col rows at a time, interleaved 4 x 16 bytes with SSE2 (baseline x86-64).
void im2col_panels(const Geometry& g, const PaddedPlanes& pp, int64_t quads, int64_t p0, int64_t np, int nr,
                   int64_t k4, uint8_t* dst, int32_t* colsum, uint8_t* rows) {
    const int64_t npad = round_up(np, nr);
    const int64_t stride = round_up(npad, 16);
    for (int64_t g4 = 0; g4 < k4; ++g4) {
        for (int q = 0; q < 4; ++q) {
            uint8_t* row = rows + q * stride;
            int64_t ci, ky, kx;
            if (k_source(g4 * 4 + q, quads, g.cpg, g.kh, g.kw, &ci, &ky, &kx)) {
                im2col_row(g, pp, ci, ky, kx, p0, np, row);
                std::memset(row + np, 0, static_cast<size_t>(stride - np));
            } else {
                std::memset(row, 0, static_cast<size_t>(stride));
            }
        }
        for (int64_t j = 0; j < npad; j += 16) {
            interleave_rows_16(rows + j, rows + stride + j, rows + 2 * stride + j, rows + 3 * stride + j,
                               dst + (((j / nr) * k4 + g4) * nr + (j % nr)) * 4);
        }
    }
    if (colsum) panel_column_sums(dst, np, npad, nr, k4, colsum);
}

// Stride 1: over the padded planes, output pixel (oy, ox) on a grid wp wide ("virtual" pixel
// q = oy * wp + ox, columns ox >= OW are computed and dropped) reads plane[q + ky*dh*wp + kx*dw], so
// every reduction row is one contiguous slice and the panels are built in a single pass.
void panels_from_planes(const Geometry& g, const PaddedPlanes& pp, int64_t quads, int64_t p0, int64_t np, int nr,
                        int64_t k4, uint8_t* dst, int32_t* colsum, const uint8_t* zeros) {
    const int64_t npad = round_up(np, nr);
    for (int64_t g4 = 0; g4 < k4; ++g4) {
        const uint8_t* src[4];
        for (int q = 0; q < 4; ++q) {
            int64_t ci, ky, kx;
            if (k_source(g4 * 4 + q, quads, g.cpg, g.kh, g.kw, &ci, &ky, &kx)) {
                src[q] = pp.data + ci * pp.hp * pp.wp + ky * g.dh * pp.wp + kx * g.dw + p0;
            } else {
                src[q] = zeros;
            }
        }
        for (int64_t j = 0; j < npad; j += 16) {
            interleave_rows_16(src[0] + j, src[1] + j, src[2] + j, src[3] + j, dst + (((j / nr) * k4 + g4) * nr + (j % nr)) * 4);
        }
    }
    if (colsum) panel_column_sums(dst, np, npad, nr, k4, colsum);
}

// Layout for `quads` channel quads; the implicit GEMM computes cols = OH * wq virtual pixels.
InterleavedInput interleaved_layout(const Geometry& g, int64_t quads) {
    InterleavedInput L;
    L.quads = quads;
    L.phases = g.sh * g.sw;
    L.hp = g.h + g.pt + g.pb;
    L.wp = g.w + g.pl + g.pr;
    L.hq = (L.hp + g.sh - 1) / g.sh;
    L.wq = (L.wp + g.sw - 1) / g.sw;
    L.quad_bytes = L.phases * L.hq * L.wq * 4;
    L.bytes = quads * L.quad_bytes + 4 * (round_up(g.oh * L.wq, 16) + L.hq * L.wq) + 256;
    if (L.phases <= 64) {
        L.used_phases = 0;
        for (int64_t tap = 0; tap < g.kh * g.kw; ++tap) {
            const int64_t ry = (tap / g.kw) * g.dh, rx = (tap % g.kw) * g.dw;
            L.used_phases |= uint64_t(1) << ((ry % g.sh) * g.sw + rx % g.sw);
        }
    }
    return L;
}

// The rows through interleave4_avx512 (AVX-512 code: the implicit GEMM runs only where it exists).
void interleave_input(const Geometry& g, const InterleavedInput& L, const uint8_t* img, uint8_t flip, uint8_t pad) {
    for (int64_t q = 0; q < L.quads; ++q) {
        uint8_t* dq = L.data + q * L.quad_bytes;
        // Padding pattern: the zero point for real channels, 0 for the channels that pad the quad.
        uint8_t pattern[4];
        for (int j = 0; j < 4; ++j) pattern[j] = q * 4 + j < g.cpg ? pad : 0;
        uint32_t word;
        std::memcpy(&word, pattern, 4);
        const __m128i fill = _mm_set1_epi32(static_cast<int32_t>(word));
        const int64_t phase_bytes = L.hq * L.wq * 4;
        for (int64_t ph = 0; ph < L.phases; ++ph) {
            uint8_t* dp = dq + ph * phase_bytes;
            if (ph < 64 && !((L.used_phases >> ph) & 1)) {  // never read by a real pixel
                std::memset(dp, 0, static_cast<size_t>(phase_bytes));
                continue;
            }
            // Only the padding: the rows above and below the input whole, and the columns left and right of it
            // (the input's cells are all written below).
            const int64_t py = ph / g.sw, px = ph % g.sw;
            const int64_t left = std::min(L.wq, std::max<int64_t>(0, (g.pl - px + g.sw - 1) / g.sw));         // cq * sw + px < pl
            const int64_t right = std::min(L.wq, std::max<int64_t>(0, (g.pl + g.w - px + g.sw - 1) / g.sw));  // first >= pl + w
            for (int64_t rq = 0; rq < L.hq; ++rq) {
                uint8_t* rp = dp + rq * L.wq * 4;
                const int64_t r = rq * g.sh + py;
                if (r < g.pt || r >= g.pt + g.h) {
                    int64_t i = 0;
                    for (; i + 16 <= L.wq * 4; i += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(rp + i), fill);
                    for (; i < L.wq * 4; i += 4) std::memcpy(rp + i, &word, 4);
                    continue;
                }
                for (int64_t cq = 0; cq < left; ++cq) std::memcpy(rp + cq * 4, &word, 4);
                for (int64_t cq = right; cq < L.wq; ++cq) std::memcpy(rp + cq * 4, &word, 4);
            }
        }
        const uint8_t* src[4];
        for (int j = 0; j < 4; ++j) src[j] = q * 4 + j < g.cpg ? img + (q * 4 + j) * g.h * g.w : nullptr;
        for (int64_t iy = 0; iy < g.h; ++iy) {
            const int64_t r = iy + g.pt;
            const uint8_t* row_src[4];
            for (int j = 0; j < 4; ++j) row_src[j] = src[j] ? src[j] + iy * g.w : nullptr;
            if (L.phases == 1) {  // stride 1: the row as it is, 64 pixels x 4 channels per step
                interleave4_avx512(row_src, g.w, 1, flip, dq + (r * L.wq + g.pl) * 4);
                continue;
            }
            // Strided: each column phase of the row is a run with step sw in the input.
            for (int64_t px = 0; px < g.sw; ++px) {
                const int64_t phase = (r % g.sh) * g.sw + px;
                if (phase < 64 && !((L.used_phases >> phase) & 1)) continue;
                const int64_t ix0 = ((px - g.pl) % g.sw + g.sw) % g.sw;  // first ix with (ix + pl) % sw == px
                if (ix0 >= g.w) continue;
                uint8_t* d = dq + (phase * L.hq * L.wq + (r / g.sh) * L.wq + (ix0 + g.pl) / g.sw) * 4;
                int64_t ix = ix0;
                if (g.sw == 2) {  // every other byte, 64 pixels x 4 channels per step
                    const uint8_t* run[4];
                    for (int j = 0; j < 4; ++j) run[j] = row_src[j] ? row_src[j] + ix0 : nullptr;
                    interleave4_avx512(run, (g.w - ix0 + 1) / 2, 2, flip, d);
                    continue;
                }
                for (; ix < g.w; ix += g.sw, d += 4)
                    for (int j = 0; j < 4; ++j) d[j] = row_src[j] ? static_cast<uint8_t>(row_src[j][ix] ^ flip) : 0;
            }
        }
    }
}

// Byte offset of every K group (tap, quad) relative to virtual pixel 0.
void k_group_offsets(const Geometry& g, const InterleavedInput& L, int64_t* offsets) {
    for (int64_t tap = 0; tap < g.kh * g.kw; ++tap) {
        const int64_t ry = (tap / g.kw) * g.dh, rx = (tap % g.kw) * g.dw;
        const int64_t phase = (ry % g.sh) * g.sw + rx % g.sw;
        const int64_t within = (phase * L.hq + ry / g.sh) * L.wq + rx / g.sw;
        for (int64_t q = 0; q < L.quads; ++q) offsets[tap * L.quads + q] = q * L.quad_bytes + within * 4;
    }
}

// Store masks per 16 virtual pixels: lane q is a real pixel when q < OH * wq and q % wq < OW; the
// first real pixel at or after q0 has output index (q0 / wq) * OW + min(q0 % wq, OW).
void store_masks(const Geometry& g, int64_t wq, int64_t cols, uint16_t* mask, int32_t* index) {
    int64_t oy = 0, ox = 0;  // of q0 (running, no division per pixel: this runs per call)
    for (int64_t v = 0; v * 16 < cols; ++v) {
        const int64_t q0 = v * 16;
        index[v] = static_cast<int32_t>(oy * g.ow + std::min(ox, g.ow));
        uint32_t m = 0;
        for (int l = 0; l < 16; ++l) {
            if (q0 + l < cols && ox < g.ow) m |= 1u << l;
            if (++ox == wq) {
                ox = 0;
                ++oy;
            }
        }
        mask[v] = static_cast<uint16_t>(m);
    }
}

// dst[c * pixels + p] = src[p * src_stride + c] for c < channels: 16 x 64 and 16 x 16 byte blocks, scalar edges.
// Blocks of 64 channels go through transpose_16x64_avx512 (the callers run only on AVX-512 VNNI).
void transpose_bytes(const uint8_t* src, int64_t pixels, int64_t channels, int64_t src_stride, uint8_t* dst) {
    int64_t c0 = 0;
    for (; c0 + 64 <= channels; c0 += 64) {
        int64_t p0 = 0;
        for (; p0 + 16 <= pixels; p0 += 16) transpose_16x64_avx512(src + p0 * src_stride + c0, src_stride, dst + c0 * pixels + p0, pixels);
        for (; p0 < pixels; ++p0)
            for (int64_t c = c0; c < c0 + 64; ++c) dst[c * pixels + p0] = src[p0 * src_stride + c];
    }
    for (; c0 + 16 <= channels; c0 += 16) {
        int64_t p0 = 0;
        for (; p0 + 16 <= pixels; p0 += 16) {
            __m128i r[16];
            for (int i = 0; i < 16; ++i) r[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + (p0 + i) * src_stride + c0));
            // Four rounds of interleaving: bytes, words, dwords, qwords.
            __m128i t[16];
            for (int i = 0; i < 8; ++i) {
                t[i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
                t[i + 8] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
            }
            for (int i = 0; i < 4; ++i) {
                r[i] = _mm_unpacklo_epi16(t[2 * i], t[2 * i + 1]);
                r[i + 4] = _mm_unpackhi_epi16(t[2 * i], t[2 * i + 1]);
                r[i + 8] = _mm_unpacklo_epi16(t[8 + 2 * i], t[8 + 2 * i + 1]);
                r[i + 12] = _mm_unpackhi_epi16(t[8 + 2 * i], t[8 + 2 * i + 1]);
            }
            for (int h = 0; h < 16; h += 4) {
                t[h] = _mm_unpacklo_epi32(r[h], r[h + 1]);
                t[h + 1] = _mm_unpackhi_epi32(r[h], r[h + 1]);
                t[h + 2] = _mm_unpacklo_epi32(r[h + 2], r[h + 3]);
                t[h + 3] = _mm_unpackhi_epi32(r[h + 2], r[h + 3]);
            }
            for (int h = 0; h < 16; h += 4) {
                r[h] = _mm_unpacklo_epi64(t[h], t[h + 2]);
                r[h + 1] = _mm_unpackhi_epi64(t[h], t[h + 2]);
                r[h + 2] = _mm_unpacklo_epi64(t[h + 1], t[h + 3]);
                r[h + 3] = _mm_unpackhi_epi64(t[h + 1], t[h + 3]);
            }
            for (int i = 0; i < 16; ++i)  // r[i]: channel c0 + i, pixels p0 .. p0 + 15
                _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (c0 + i) * pixels + p0), r[i]);
        }
        for (; p0 < pixels; ++p0)
            for (int64_t c = c0; c < c0 + 16; ++c) dst[c * pixels + p0] = src[p0 * src_stride + c];
    }
    for (; c0 < channels; ++c0)
        for (int64_t p = 0; p < pixels; ++p) dst[c0 * pixels + p] = src[p * src_stride + c0];
}

// 2 or 3 input channels per group, AVX-512 VNNI: the input of one image and group as padded HWC bytes
// ([hp][wp][cpg], padding = the zero point, XOR flip applied) plus 64 bytes of slack, so the kW x C/g bytes of
// one kernel row at one pixel are consecutive (the `hwc` packing's K groups).
void hwc_input(const Geometry& g, const uint8_t* img, uint8_t flip, uint8_t pad, int64_t hp, int64_t wp, uint8_t* dst) {
    const int64_t c = g.cpg, plane = g.h * g.w, row = wp * c;
    // Only the padding is filled: the rows above and below whole, the columns left and right of each input row.
    std::memset(dst, pad, static_cast<size_t>(g.pt * row));
    std::memset(dst + (g.pt + g.h) * row, pad, static_cast<size_t>((hp - g.pt - g.h) * row));
    for (int64_t iy = 0; iy < g.h; ++iy) {
        uint8_t* r = dst + (iy + g.pt) * row;
        std::memset(r, pad, static_cast<size_t>(g.pl * c));
        std::memset(r + (g.pl + g.w) * c, pad, static_cast<size_t>((wp - g.pl - g.w) * c));
        uint8_t* d = r + g.pl * c;
        const uint8_t* s = img + iy * g.w;
        if (c == 3) {
            const uint8_t* rows[3] = {s, s + plane, s + 2 * plane};
            interleave3_avx512(rows, g.w, flip, d);
        } else
            for (int64_t ix = 0; ix < g.w; ++ix, d += c)
                for (int64_t j = 0; j < c; ++j) d[j] = static_cast<uint8_t>(s[j * plane + ix] ^ flip);
    }
    std::memset(dst + hp * wp * c, 0, 64);
}

// One input channel per group (quads == 0): the implicit GEMM's input is an im2col [k4][q][4]
// (4 taps per K group, `region` bytes per group) of the padded plane `pp` (flip and padding applied).
// Stride 1: virtual pixels on the padded-width grid (wq = wp), each tap's row one slice of the plane
// (interleaved with SSE2); other strides: wq = OW, gathered per byte.
void tap_groups(const Geometry& g, const PaddedPlanes& pp, int64_t k4, int64_t wq, int64_t region, const uint8_t* zeros,
                uint8_t* dst) {
    const int64_t cols = g.oh * wq, vcols = round_up(cols, 16), taps = g.kh * g.kw;
    for (int64_t k = 0; k < k4; ++k) {
        uint8_t* d = dst + k * region;
        if (g.sh == 1 && g.sw == 1) {
            const uint8_t* src[4];
            for (int j = 0; j < 4; ++j) {
                const int64_t t = 4 * k + j;
                src[j] = t < taps ? pp.data + (t / g.kw) * g.dh * pp.wp + (t % g.kw) * g.dw : zeros;
            }
            for (int64_t q = 0; q < vcols; q += 16) {
                const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[0] + q));
                const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[1] + q));
                const __m128i r2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[2] + q));
                const __m128i r3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[3] + q));
                const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
                const __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
                __m128i* o = reinterpret_cast<__m128i*>(d + q * 4);
                _mm_storeu_si128(o, _mm_unpacklo_epi16(t0, t2));
                _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(t0, t2));
                _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(t1, t3));
                _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(t1, t3));
            }
            continue;
        }
        for (int64_t q = 0; q < vcols; ++q)
            for (int j = 0; j < 4; ++j) {
                const int64_t t = 4 * k + j;
                uint8_t v = 0;
                if (q < cols && t < taps) {
                    const int64_t oy = q / wq, ox = q % wq;
                    v = pp.data[(oy * g.sh + (t / g.kw) * g.dh) * pp.wp + ox * g.sw + (t % g.kw) * g.dw];
                }
                d[q * 4 + j] = v;
            }
    }
}

ActivationLayout plain_layout(int64_t c, int64_t h, int64_t w) {
    ActivationLayout l;
    l.hp = h;
    l.wp = w;
    l.cs = c;
    l.image_bytes = c * h * w;
    return l;
}

ActivationLayout channels_last_layout(int64_t c, int64_t h, int64_t w, int64_t pt, int64_t pl, int64_t pb, int64_t pr) {
    ActivationLayout l;
    l.channels_last = true;
    l.pt = pt;
    l.pl = pl;
    l.pb = pb;
    l.pr = pr;
    l.hp = h + pt + pb;
    l.wp = w + pl + pr;
    l.cs = round_up(c, kConvPack);
    l.image_bytes = l.hp * l.wp * l.cs;
    return l;
}

bool same_layout(const ActivationLayout& a, const ActivationLayout& b) {
    return a.channels_last == b.channels_last && a.pt == b.pt && a.pl == b.pl && a.pb == b.pb && a.pr == b.pr && a.hp == b.hp &&
        a.wp == b.wp && a.cs == b.cs && a.image_bytes == b.image_bytes;
}

void fill_channels_last_border(const ActivationLayout& l, int64_t h, int64_t w, uint8_t value, uint8_t* image) {
    const int64_t row = l.wp * l.cs;
    std::memset(image, value, static_cast<size_t>(l.pt * row));
    std::memset(image + (l.pt + h) * row, value, static_cast<size_t>((l.hp - l.pt - h) * row));
    for (int64_t y = 0; y < h; ++y) {
        uint8_t* r = image + (l.pt + y) * row;
        std::memset(r, value, static_cast<size_t>(l.pl * l.cs));
        std::memset(r + (l.pl + w) * l.cs, value, static_cast<size_t>((l.wp - l.pl - w) * l.cs));
    }
}

void scatter_pixels(const uint8_t* src, int64_t pixels, int64_t src_stride, int64_t bytes, const int64_t* offsets, uint8_t* dst) {
    for (int64_t p = 0; p < pixels; ++p) std::memcpy(dst + offsets[p], src + p * src_stride, static_cast<size_t>(bytes));
}

}  // namespace kernels
}  // namespace qatml
