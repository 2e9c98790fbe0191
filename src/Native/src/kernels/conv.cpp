// 2-D convolution over NCHW u8/s8 activations. AVX-512 VNNI: implicit GEMM straight from a
// channel-interleaved copy of the input (conv_avx512vnni.cpp). AVX-VNNI / AVX2: im2col into packed
// panels + the packed GEMM (weights broadcast, pixels in vector lanes). A direct kernel for
// depthwise, a scalar reference.
#include "kernels/abi_util.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <emmintrin.h>  // SSE2: part of baseline x86-64

namespace qatml {
namespace kernels {
void pack_bc_tiles(const uint8_t* src, int64_t rows, int64_t kk, int64_t ld, int mr, int64_t k4, uint8_t flip,
                   uint8_t* dst, int32_t* rowsum);

namespace {

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

inline int8_t weight_at(const void* w, int32_t type, int64_t i) {
    if (type == QATML_TYPE_INT8) return static_cast<const int8_t*>(w)[i];
    const uint8_t byte = static_cast<const uint8_t*>(w)[i >> 1];
    const int v = (i & 1) ? (byte >> 4) : (byte & 0x0f);
    return static_cast<int8_t>(v >= 8 ? v - 16 : v);
}

// Direct kernel: reference for every convolution and the depthwise path. Works on raw values.
void conv_direct(const Geometry& g, const uint8_t* x, bool x_signed, int32_t xz, const qatml_packed_weights& w,
                 const Epilogue& ep, void* y) {
    const int64_t kg = g.cpg * g.kh * g.kw;
    for (int64_t n = 0; n < g.n; ++n)
        for (int64_t oc = 0; oc < g.m; ++oc) {
            const int64_t grp = oc / g.mpg;
            const int32_t zw = w.zw[static_cast<size_t>(oc)];
            const int8_t* wr = w.plain.data() + oc * kg;
            for (int64_t oy = 0; oy < g.oh; ++oy)
                for (int64_t ox = 0; ox < g.ow; ++ox) {
                    uint32_t acc = ep.bias ? static_cast<uint32_t>(ep.bias[oc]) : 0u;
                    for (int64_t ci = 0; ci < g.cpg; ++ci) {
                        const uint8_t* plane = x + ((n * g.c) + grp * g.cpg + ci) * g.h * g.w;
                        for (int64_t ky = 0; ky < g.kh; ++ky) {
                            const int64_t iy = oy * g.sh - g.pt + ky * g.dh;
                            if (iy < 0 || iy >= g.h) continue;  // padding: x = zero point, contributes 0
                            for (int64_t kx = 0; kx < g.kw; ++kx) {
                                const int64_t ix = ox * g.sw - g.pl + kx * g.dw;
                                if (ix < 0 || ix >= g.w) continue;
                                const uint8_t raw = plane[iy * g.w + ix];
                                const int32_t xv = x_signed ? int32_t(int8_t(raw)) : int32_t(raw);
                                acc += wrap_mul(xv - xz, wr[(ci * g.kh + ky) * g.kw + kx] - zw);
                            }
                        }
                    }
                    store_out(ep, static_cast<int32_t>(acc), oc, y, ((n * g.m + oc) * g.oh + oy) * g.ow + ox);
                }
        }
}

// Depthwise (groups == C == M): per channel, the ISA's depthwise_channel loop (an int32 plane of
// x - x_zp with zero padding, split into column stride phases, and a tap-by-tap multiply-accumulate
// in int32). Exact integer arithmetic, so identical to conv_direct.
void conv_depthwise(const Geometry& g, const uint8_t* x, bool x_signed, int32_t xz, const qatml_packed_weights& w,
                    const Epilogue& ep, void* y, const SimdKernels& simd) {
    const int64_t hp = std::max(g.h + g.pt, (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1);
    const int64_t wp = std::max(g.w + g.pl, (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1);
    const int64_t wq = (wp + g.sw - 1) / g.sw, row_len = g.sw * wq, taps = g.kh * g.kw;
    std::vector<int32_t> plane(static_cast<size_t>(hp * row_len + 64), 0);  // + slack for the last vector
    std::vector<int64_t> offsets(static_cast<size_t>(taps));
    std::vector<int32_t> tap_weights(static_cast<size_t>(taps));
    for (int64_t t = 0; t < taps; ++t) {
        const int64_t ry = (t / g.kw) * g.dh, rx = (t % g.kw) * g.dw;
        offsets[static_cast<size_t>(t)] = ry * row_len + (rx % g.sw) * wq + rx / g.sw;
    }
    DepthwiseCall call{};
    call.x_signed = x_signed;
    call.x_zero_point = xz;
    call.h = g.h; call.w = g.w; call.oh = g.oh; call.ow = g.ow; call.kh = g.kh; call.kw = g.kw;
    call.sh = g.sh; call.sw = g.sw; call.dh = g.dh; call.dw = g.dw; call.pt = g.pt; call.pl = g.pl;
    call.hp = hp;
    call.wq = wq;
    call.plane = plane.data();
    call.taps = tap_weights.data();
    call.tap_offsets = offsets.data();
    call.out_type = ep.out_type;
    call.zp = ep.zp;
    call.lo = ep.lo;
    call.hi = ep.hi;
    const int64_t esz = elem_size(ep.out_type);
    for (int64_t n = 0; n < g.n; ++n)
        for (int64_t c = 0; c < g.c; ++c) {
            const int8_t* wr = w.plain.data() + c * taps;
            const int32_t zw = w.zw[static_cast<size_t>(c)];
            for (int64_t t = 0; t < taps; ++t) tap_weights[static_cast<size_t>(t)] = wr[t] - zw;
            call.x = x + (n * g.c + c) * g.h * g.w;
            call.bias = ep.bias ? ep.bias[c] : 0;
            call.mult = ep.out_type == QATML_TYPE_INT32 ? 1.0f : ep.mult[static_cast<size_t>(c)];
            call.out = static_cast<uint8_t*>(y) + (n * g.m + c) * g.oh * g.ow * esz;
            simd.depthwise_channel(call);
        }
}

// The input planes of one image and group with the padding materialised (value `pad`) and the
// XOR flip applied: [cpg][hp][wp] plus 16 bytes of slack for over-reading 16-byte copies.
struct PaddedPlanes {
    int64_t hp = 0, wp = 0;
    uint8_t* data = nullptr;
};
void pad_planes(const Geometry& g, const uint8_t* img, uint8_t flip, uint8_t pad, PaddedPlanes& pp) {
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
            const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + j));
            const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + stride + j));
            const __m128i r2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + 2 * stride + j));
            const __m128i r3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + 3 * stride + j));
            const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
            const __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
            uint8_t* d = dst + (((j / nr) * k4 + g4) * nr + (j % nr)) * 4;
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm_unpacklo_epi16(t0, t2));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 16), _mm_unpackhi_epi16(t0, t2));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 32), _mm_unpacklo_epi16(t1, t3));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 48), _mm_unpackhi_epi16(t1, t3));
        }
    }
    if (colsum) {
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
            const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[0] + j));
            const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[1] + j));
            const __m128i r2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[2] + j));
            const __m128i r3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[3] + j));
            const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
            const __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
            uint8_t* d = dst + (((j / nr) * k4 + g4) * nr + (j % nr)) * 4;
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm_unpacklo_epi16(t0, t2));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 16), _mm_unpackhi_epi16(t0, t2));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 32), _mm_unpacklo_epi16(t1, t3));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 48), _mm_unpackhi_epi16(t1, t3));
        }
    }
    if (colsum) {
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
}


// Input of one image and group for the implicit GEMM (conv_avx512vnni.cpp): padding materialised
// (the input zero point; channels past C/g are 0), channel quads byte-interleaved, and split into
// stride phases so that every tap reads consecutive pixels:
//   [quad][phase = (row % sh) * sw + col % sw][row / sh][col / sw][4 channels]  (row, col padded).
// Virtual pixel q = oy * wq + ox reads K group (tap, quad) at 4 q + offset(tap, quad).
struct InterleavedInput {
    int64_t quads = 0, phases = 0, hp = 0, wp = 0, hq = 0, wq = 0;
    int64_t quad_bytes = 0, bytes = 0;  // one quad; all quads plus slack for the last vectors' over-read
    uint64_t used_phases = ~uint64_t(0);  // bit p: some tap reads phase p (others are zeroed, not copied)
    uint8_t* data = nullptr;
};

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
            const int64_t left = std::min(L.wq, std::max<int64_t>(0, (g.pl - px + g.sw - 1) / g.sw));   // cq * sw + px < pl
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

// False when QATML_CONV_LANES=pixels: the choices that take channel lanes without a lane-use test (2-3
// channels per group over HWC bytes, ResNet's stem: 377-391 us against 398-420 on pixel lanes; strided
// windows) then keep pixel lanes.
bool channel_lanes_allowed() {
    static const bool off = [] {
        const char* v = std::getenv("QATML_CONV_LANES");
        return v != nullptr && std::strcmp(v, "pixels") == 0;
    }();
    return !off;
}

// Pixel lanes (16 virtual pixels per vector, OH * wq of them) waste the lanes of the dropped columns
// and of the last vector; channel lanes waste only the rows that pad the channels to 16, and pay a
// transpose. Channel lanes when they use the vector lanes clearly better (7x7 and 14x14 planes).
// `margin`: the lane-use advantage channel lanes need (their transpose weighs more when K is short).
// QATML_CONV_LANES=pixels|channels (read once) forces one kernel, for benchmarks and tests.
bool prefer_channel_lanes(const Geometry& g, int64_t wq, double margin) {
    static const int forced = [] {
        const char* v = std::getenv("QATML_CONV_LANES");
        return v == nullptr ? 0 : std::strcmp(v, "channels") == 0 ? 1 : std::strcmp(v, "pixels") == 0 ? -1 : 0;
    }();
    if (forced != 0) return forced > 0;
    const double pixel_use = double(g.oh * g.ow) / double(round_up(g.oh * wq, 16));
    const double channel_use = double(g.mpg) / double(round_up(g.mpg, kConvPack));
    return channel_use > pixel_use + margin;
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

// A max pool fused into a convolution's output pass: kernel 2 (2x2, stride 2, no padding) or 3 (3x3,
// stride 2, pads 0 or 1 per side); 0 = none.
struct FusedPool {
    int kernel = 0;
    int64_t pt = 0, pl = 0, pb = 0, pr = 0;
};
inline int64_t pooled(int64_t size, int64_t before, int64_t after, const FusedPool& fp) {
    return fp.kernel == 0 ? size : (size + before + after - fp.kernel) / 2 + 1;
}

// What the channel-lane kernel reads: its input (filled per image and group by `prepare`), the packed
// weights it uses and their K groups, and where output pixel (oy, ox) starts (oy * row_bytes + ox * col_bytes).
struct LaneInput {
    const uint8_t* data;
    const int64_t* k_offsets;
    int64_t k4;
    const uint8_t* weights;
    int64_t group_stride;
    int64_t row_bytes, col_bytes;
};

// Channel-lane convolution of every image and group (conv_avx512vnni_lanes): the kernel writes pixel-major
// staging, transposed to NCHW. Fused pools: 2x2 inside the kernel (pixels listed window by window; the max of
// each window's int32 results requantized once: a quarter of the requantization and of the transpose, no
// full-size output; exact because requantization is non-decreasing, check_epilogue admitting multipliers > 0
// only); 3x3 stride 2 over the staging before the transpose.
template <typename Prepare>
void channel_lanes(const Geometry& g, const LaneInput& in, const int32_t* rowadd, const float* mult, const Epilogue& ep,
                   const FusedPool& fp, uint8_t* y, Prepare prepare) {
    const int64_t P = g.oh * g.ow, rows = round_up(g.mpg, kConvPack);
    const int64_t poh = pooled(g.oh, fp.pt, fp.pb, fp), pow = pooled(g.ow, fp.pl, fp.pr, fp), PP = poh * pow;
    const bool in_kernel = fp.kernel == 2;
    std::vector<int64_t> pixel_offsets(static_cast<size_t>(in_kernel ? 4 * PP : P));
    int64_t* po = pixel_offsets.data();
    if (in_kernel) {  // the windows' pixels, window by window in output order; the rest (odd edges) is never computed
        for (int64_t py = 0; py < poh; ++py)
            for (int64_t px = 0; px < pow; ++px, po += 4) {
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
    AlignedBuffer staging((in_kernel ? PP : P) * rows), pooled_staging(fp.kernel == 3 ? PP * rows : 0),
        pool_row(fp.kernel == 3 ? g.ow * rows : 0);
    ConvLanesCall lanes{};
    lanes.input = in.data;
    lanes.k_offsets = in.k_offsets;
    lanes.pixel_offsets = pixel_offsets.data();
    lanes.rows = rows;
    lanes.pixels = static_cast<int64_t>(pixel_offsets.size());
    lanes.pool = in_kernel;
    lanes.k4 = in.k4;
    lanes.zp = ep.zp;
    lanes.lo = ep.lo;
    lanes.hi = ep.hi;
    lanes.out = staging.data;
    lanes.out_pixel_stride = rows;
    for (int64_t n = 0; n < g.n; ++n)
        for (int64_t grp = 0; grp < g.groups; ++grp) {
            prepare(n, grp);
            lanes.weights = in.weights + grp * in.group_stride;
            lanes.rowadd = rowadd + grp * g.mpg;
            lanes.mult = mult + grp * g.mpg;
            conv_avx512vnni_lanes(lanes);
            const uint8_t* src = staging.data;
            if (fp.kernel == 3) {
                max_pool3_pixel_major_avx512(staging.data, g.oh, g.ow, fp.pt, fp.pl, poh, pow, rows, ep.out_type == QATML_TYPE_INT8,
                                             pool_row.data, pooled_staging.data);
                src = pooled_staging.data;
            }
            transpose_bytes(src, PP, g.mpg, rows, y + (n * g.m + grp * g.mpg) * PP);
        }
}

// Pixel-lane convolution of every image and group (conv_avx512vnni): `prepare(n, group)` fills `input`
// (K groups at `k_offsets`, virtual pixel q = oy * wq + ox, cols = OH * wq of them); per 16 virtual pixels a store
// mask drops the grid's extra columns, and the output is stored NCHW directly.
template <typename Prepare>
void pixel_lanes(const Geometry& g, const qatml_packed_weights& w, const uint8_t* input, const int64_t* k_offsets, int64_t wq,
                 const int32_t* rowadd, const int32_t* rowmul, const float* mult, const Epilogue& ep, void* y, Prepare prepare) {
    const int64_t cols = g.oh * wq, vectors = (cols + 15) / 16, P = g.oh * g.ow, esz = elem_size(ep.out_type);
    std::vector<uint16_t> mask(static_cast<size_t>(vectors));
    std::vector<int32_t> index(static_cast<size_t>(vectors));
    store_masks(g, wq, cols, mask.data(), index.data());
    std::vector<int32_t> colsum(static_cast<size_t>(vectors * 16));
    ConvCall call{};
    call.input = input;
    call.k_offsets = k_offsets;
    call.rows = g.mpg;
    call.cols = cols;
    call.k4 = w.k4;
    call.colsum = colsum.data();
    call.out_type = ep.out_type;
    call.zp = ep.zp;
    call.lo = ep.lo;
    call.hi = ep.hi;
    call.out_row_stride = P;
    call.store_mask = mask.data();
    call.store_index = index.data();
    for (int64_t n = 0; n < g.n; ++n)
        for (int64_t grp = 0; grp < g.groups; ++grp) {
            prepare(n, grp);
            call.weights = w.packed.data + grp * w.group_stride;
            call.rowadd = rowadd + grp * g.mpg;
            call.rowmul = w.has_zw ? rowmul + grp * g.mpg : nullptr;
            call.mult = mult + grp * g.mpg;
            call.out = static_cast<uint8_t*>(y) + (n * g.m + grp * g.mpg) * P * esz;
            conv_avx512vnni(call);
        }
}

// Backs layout L with `buffer`; the slack past the quads is read only for dropped pixels, zeroed once so those
// reads are defined.
void attach(InterleavedInput& L, AlignedBuffer& buffer) {
    buffer.resize(L.bytes);
    L.data = buffer.data;
    std::memset(L.data + L.quads * L.quad_bytes, 0, static_cast<size_t>(L.bytes - L.quads * L.quad_bytes));
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

}  // namespace
}  // namespace kernels
}  // namespace qatml

using namespace qatml;
using namespace qatml::kernels;

namespace qatml {
namespace kernels {

qatml_status check_conv_scratch(const char* fn, const qatml_conv2d_params& p, int64_t cpg, int64_t kh, int64_t kw, int64_t oh) {
    const int64_t span_h = p.height + p.pad_top + p.pad_bottom + p.stride_h, span_w = p.width + p.pad_left + p.pad_right + p.stride_w;
    int64_t t = 0;
    const int lim = kMaxScratchLog2;
    if (!checked_mul(fn, "C/g (in 4s) * (H + pads + stride)", round_up(cpg, 4), span_h, &t, lim) ||
        !checked_mul(fn, "C/g (in 4s) * (H + pads + stride) * (W + pads + stride)", t, span_w, &t, lim) ||
        !checked_mul(fn, "kH*kW * OH", kh * kw, oh, &t, lim) || !checked_mul(fn, "kH*kW * OH * (W + pads + stride)", t, span_w, &t, lim))
        return QATML_INVALID_ARGUMENT;
    return QATML_OK;
}

}  // namespace kernels
}  // namespace qatml

extern "C" {

QATML_API qatml_status qatml_conv_pack_weights(const qatml_context* ctx, const void* w, int32_t w_type,
                                               int64_t out_channels, int64_t in_channels_per_group,
                                               int64_t kernel_h, int64_t kernel_w, int64_t groups,
                                               const int32_t* w_zero_points, qatml_packed_weights** out_packed) {
    static const char* fn = "qatml_conv_pack_weights";
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_NOT_NULL(out_packed, fn);
        *out_packed = nullptr;
        qatml_status st = check_context(ctx, fn);
        if (st != QATML_OK) return st;
        QATML_CHECK_NOT_NULL(w, fn);
        QATML_CHECK_ALIGNED(w_zero_points, 4, fn);
        QATML_CHECK_POSITIVE(out_channels, fn);
        QATML_CHECK_POSITIVE(in_channels_per_group, fn);
        QATML_CHECK_POSITIVE(kernel_h, fn);
        QATML_CHECK_POSITIVE(kernel_w, fn);
        QATML_CHECK_POSITIVE(groups, fn);
        if (w_type != QATML_TYPE_INT8 && w_type != QATML_TYPE_INT4)
            return fail(QATML_INVALID_ARGUMENT, "%s: w_type %d must be INT8 or INT4", fn, w_type);
        if (out_channels % groups != 0)
            return fail(QATML_INVALID_ARGUMENT, "%s: out_channels %lld is not a multiple of groups %lld", fn,
                        (long long)out_channels, (long long)groups);
        int64_t khw = 0, kg = 0, total = 0;
        if (!checked_mul(fn, "kH*kW", kernel_h, kernel_w, &khw) || !checked_mul(fn, "C/g*kH*kW", khw, in_channels_per_group, &kg) ||
            !checked_mul(fn, "M*C/g*kH*kW", kg, out_channels, &total))
            return QATML_INVALID_ARGUMENT;
        int32_t zlo = 0, zhi = 0;
        type_range(w_type, &zlo, &zhi);
        bool has_zw = false;
        if (w_zero_points)
            for (int64_t i = 0; i < out_channels; ++i) {
                if (w_zero_points[i] < zlo || w_zero_points[i] > zhi)
                    return fail(QATML_INVALID_ARGUMENT, "%s: w_zero_points[%lld] = %d is outside the %s range", fn,
                                (long long)i, w_zero_points[i], type_name(w_type));
                has_zw |= w_zero_points[i] != 0;
            }
        qatml_isa isa = QATML_ISA_SCALAR;
        if (!active_isa(&isa, fn)) return QATML_INVALID_ARGUMENT;

        auto pw = std::make_unique<qatml_packed_weights>();
        pw->role = 2;
        pw->device = context_device(ctx);
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
        pw->has_zw = has_zw;
        pw->zw.assign(static_cast<size_t>(out_channels), 0);
        if (has_zw) std::copy(w_zero_points, w_zero_points + out_channels, pw->zw.begin());
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
            if (isa == QATML_ISA_AVX512_VNNI) pw->mr = kConvPack;  // the implicit-GEMM kernels' weight rows
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
        register_handle(pw.get(), HandleKind::PackedWeights);
        *out_packed = pw.release();
        return QATML_OK;
    });
}

QATML_API qatml_status qatml_conv2d_output_size(const qatml_conv2d_params* p, int64_t kernel_h, int64_t kernel_w,
                                                int64_t* out_h, int64_t* out_w) {
    static const char* fn = "qatml_conv2d_output_size";
    return guarded(fn, [&]() -> qatml_status {
        QATML_CHECK_NOT_NULL(p, fn);
        QATML_CHECK_NOT_NULL(out_h, fn);
        QATML_CHECK_NOT_NULL(out_w, fn);
        QATML_CHECK_POSITIVE(kernel_h, fn);
        QATML_CHECK_POSITIVE(kernel_w, fn);
        QATML_CHECK_POSITIVE(p->height, fn);
        QATML_CHECK_POSITIVE(p->width, fn);
        QATML_CHECK_POSITIVE(p->stride_h, fn);
        QATML_CHECK_POSITIVE(p->stride_w, fn);
        QATML_CHECK_POSITIVE(p->dilation_h, fn);
        QATML_CHECK_POSITIVE(p->dilation_w, fn);
        if (p->pad_top < 0 || p->pad_left < 0 || p->pad_bottom < 0 || p->pad_right < 0 || p->pad_top > (1 << 20) ||
            p->pad_left > (1 << 20) || p->pad_bottom > (1 << 20) || p->pad_right > (1 << 20))
            return fail(QATML_INVALID_ARGUMENT, "%s: pads must be in 0..2^20", fn);
        if (kernel_h > (1 << 20) || kernel_w > (1 << 20) || p->dilation_h > (1 << 20) || p->dilation_w > (1 << 20))
            return fail(QATML_INVALID_ARGUMENT, "%s: kernel and dilation must be <= 2^20", fn);
        const int64_t eh = p->dilation_h * (kernel_h - 1) + 1, ew = p->dilation_w * (kernel_w - 1) + 1;
        const int64_t hh = p->height + p->pad_top + p->pad_bottom, ww = p->width + p->pad_left + p->pad_right;
        if (hh < eh || ww < ew)
            return fail(QATML_INVALID_ARGUMENT, "%s: the %lldx%lld (dilated) kernel does not fit the padded %lldx%lld input",
                        fn, (long long)eh, (long long)ew, (long long)hh, (long long)ww);
        *out_h = (hh - eh) / p->stride_h + 1;
        *out_w = (ww - ew) / p->stride_w + 1;
        return QATML_OK;
    });
}

namespace {
// qatml_conv2d, and with fp.kernel != 0 the fused max pool of its 8-bit output (qatml_conv2d_maxpool).
qatml_status conv2d_impl(const char* fn, const qatml_context* ctx, const qatml_conv2d_params* params, const void* x,
                         int32_t x_type, int32_t x_zero_point, const qatml_packed_weights* w, const qatml_epilogue* epilogue,
                         void* y, FusedPool fp) {
        qatml_status st = check_context(ctx, fn);
        if (st != QATML_OK) return st;
        QATML_CHECK_NOT_NULL(params, fn);
        QATML_CHECK_HANDLE(w, HandleKind::PackedWeights, fn);
        if (w->role != 2) return fail(QATML_INVALID_ARGUMENT, "%s: packed weights are GEMM B, not convolution weights", fn);
        QATML_CHECK_NOT_NULL(x, fn);
        QATML_CHECK_NOT_NULL(y, fn);
        QATML_CHECK_POSITIVE(params->batch, fn);
        QATML_CHECK_POSITIVE(params->channels, fn);
        if (params->channels != w->cpg * w->groups)
            return fail(QATML_INVALID_ARGUMENT, "%s: input has %lld channels but the weights expect %lld (%lld groups x %lld)",
                        fn, (long long)params->channels, (long long)(w->cpg * w->groups), (long long)w->groups,
                        (long long)w->cpg);
        Geometry g{};
        if ((st = qatml_conv2d_output_size(params, w->kh, w->kw, &g.oh, &g.ow)) != QATML_OK) return st;
        int64_t t = 0, in_elems = 0, out_elems = 0;
        if (!checked_mul(fn, "N*C", params->batch, params->channels, &t) || !checked_mul(fn, "N*C*H", t, params->height, &t) ||
            !checked_mul(fn, "N*C*H*W", t, params->width, &in_elems) || !checked_mul(fn, "N*M", params->batch, w->n, &t) ||
            !checked_mul(fn, "N*M*OH", t, g.oh, &t) || !checked_mul(fn, "N*M*OH*OW", t, g.ow, &out_elems))
            return QATML_INVALID_ARGUMENT;
        int32_t xlo = 0, xhi = 0;
        if ((x_type != QATML_TYPE_UINT8 && x_type != QATML_TYPE_INT8) || !type_range(x_type, &xlo, &xhi))
            return fail(QATML_INVALID_ARGUMENT, "%s: x_type %d must be UINT8 or INT8", fn, x_type);
        if (x_zero_point < xlo || x_zero_point > xhi)
            return fail(QATML_INVALID_ARGUMENT, "%s: x_zero_point %d is outside the %s range", fn, x_zero_point,
                        type_name(x_type));
        Epilogue ep;
        if ((st = check_epilogue(epilogue, w->n, &ep, fn)) != QATML_OK) return st;
        if (ep.out_type == QATML_TYPE_INT32) QATML_CHECK_ALIGNED(y, 4, fn);
        if (context_device(ctx).kind != w->device.kind)
            return fail(QATML_INVALID_ARGUMENT, "%s: packed weights belong to another device", fn);
        if ((st = check_packed_isa(w, fn)) != QATML_OK) return st;
        if (fp.kernel != 0) {
            if (ep.out_type == QATML_TYPE_INT32)
                return fail(QATML_INVALID_ARGUMENT, "%s: the max pool needs an 8-bit output (UINT8 or INT8), not INT32", fn);
            if (g.oh + fp.pt + fp.pb < fp.kernel || g.ow + fp.pl + fp.pr < fp.kernel)
                return fail(QATML_INVALID_ARGUMENT, "%s: the %lldx%lld convolution output is smaller than the %dx%d pool window", fn,
                            (long long)g.oh, (long long)g.ow, fp.kernel, fp.kernel);
            if (w->isa != QATML_ISA_AVX512_VNNI || w->depthwise || w->has_zw) {
                // Not fused on this path: the convolution into a scratch tensor, then the pool.
                AlignedBuffer full(out_elems);
                if ((st = conv2d_impl(fn, ctx, params, x, x_type, x_zero_point, w, epilogue, full.data, FusedPool{})) != QATML_OK)
                    return st;
                qatml_conv2d_params pp{};
                pp.batch = params->batch;
                pp.channels = w->n;
                pp.height = g.oh;
                pp.width = g.ow;
                pp.stride_h = pp.stride_w = 2;
                pp.pad_top = fp.pt;
                pp.pad_left = fp.pl;
                pp.pad_bottom = fp.pb;
                pp.pad_right = fp.pr;
                pp.dilation_h = pp.dilation_w = 1;
                return qatml_pool2d(ctx, QATML_POOL_MAX, &pp, fp.kernel, fp.kernel, 0, full.data, ep.out_type, 1.0f, 0, 1.0f, 0, y);
            }
        }
        g.n = params->batch; g.c = params->channels; g.h = params->height; g.w = params->width;
        g.m = w->n; g.groups = w->groups; g.cpg = w->cpg; g.mpg = w->mpg; g.kh = w->kh; g.kw = w->kw;
        g.sh = params->stride_h; g.sw = params->stride_w; g.pt = params->pad_top; g.pl = params->pad_left;
        g.pb = params->pad_bottom; g.pr = params->pad_right;
        g.dh = params->dilation_h; g.dw = params->dilation_w;
        if ((st = check_conv_scratch(fn, *params, w->cpg, w->kh, w->kw, g.oh)) != QATML_OK) return st;
        const uint8_t* x8 = static_cast<const uint8_t*>(x);
        const bool xs = x_type == QATML_TYPE_INT8;
        if (w->isa == QATML_ISA_SCALAR) {
            conv_direct(g, x8, xs, x_zero_point, *w, ep, y);  // the reference
            return QATML_OK;
        }
        if (w->depthwise) {
            conv_depthwise(g, x8, xs, x_zero_point, *w, ep, y, *simd_for_isa(w->isa));
            return QATML_OK;
        }
        const uint8_t flip = xs ? 0x80 : 0x00;
        const int32_t za = xs ? x_zero_point + 128 : x_zero_point;
        const uint8_t pad = static_cast<uint8_t>(za);
        const int mr = w->mr, nr = w->nr;
        const int64_t k4 = w->k4, kg = w->k, P = g.oh * g.ow;
        const int64_t mpad = round_up(g.m, mr);
        // + kConvPack: the channel-lane kernel reads whole 16-channel vectors from each group's first channel.
        std::vector<int32_t> rowadd(static_cast<size_t>(mpad + kConvPack), 0), rowmul(static_cast<size_t>(mpad), 0);
        std::vector<float> mult(static_cast<size_t>(mpad + kConvPack), 1.0f);
        for (int64_t oc = 0; oc < g.m; ++oc) {
            const int32_t zw = w->zw[static_cast<size_t>(oc)];
            uint32_t v = ep.bias ? static_cast<uint32_t>(ep.bias[oc]) : 0u;
            v -= wrap_mul(za, w->wsum[static_cast<size_t>(oc)]);
            v += static_cast<uint32_t>(kg) * static_cast<uint32_t>(za) * static_cast<uint32_t>(zw);
            rowadd[static_cast<size_t>(oc)] = static_cast<int32_t>(v);
            rowmul[static_cast<size_t>(oc)] = static_cast<int32_t>(0u - static_cast<uint32_t>(zw));
            if (ep.out_type != QATML_TYPE_INT32) mult[static_cast<size_t>(oc)] = ep.mult[static_cast<size_t>(oc)];
        }
        if (w->isa == QATML_ISA_AVX512_VNNI && w->hwc_k4 > 0 && ep.out_type != QATML_TYPE_INT32 && !w->has_zw && g.dw == 1 &&
            (fp.kernel != 0 || channel_lanes_allowed())) {
            // 2-3 channels per group: channel lanes over padded HWC bytes (K groups of 4 consecutive bytes of a
            // kernel row, no channel-quad padding).
            const int64_t hp = g.h + g.pt + g.pb, wp = g.w + g.pl + g.pr;
            AlignedBuffer input(hp * wp * g.cpg + 64);
            std::vector<int64_t> offsets(static_cast<size_t>(w->hwc_k4));
            for (int64_t ky = 0; ky < g.kh; ++ky)
                for (int64_t j = 0; j < w->hwc_row_groups; ++j)
                    offsets[static_cast<size_t>(ky * w->hwc_row_groups + j)] = ky * g.dh * wp * g.cpg + 4 * j;
            const LaneInput in{input.data, offsets.data(), w->hwc_k4, w->hwc_packed.data, w->hwc_group_stride,
                               g.sh * wp * g.cpg, g.sw * g.cpg};
            channel_lanes(g, in, rowadd.data(), mult.data(), ep, fp, static_cast<uint8_t*>(y), [&](int64_t n, int64_t grp) {
                hwc_input(g, x8 + (n * g.c + grp * g.cpg) * g.h * g.w, flip, pad, hp, wp, input.data);
            });
            return QATML_OK;
        }
        if (w->isa == QATML_ISA_AVX512_VNNI && w->quads == 0) {  // one channel per group: taps by 4
            PaddedPlanes pp;
            pp.hp = g.h + g.pt + g.pb;
            pp.wp = g.w + g.pl + g.pr;
            const int64_t wq = g.sh == 1 && g.sw == 1 ? pp.wp : g.ow, cols = g.oh * wq;
            const int64_t region = round_up(cols, 16) * 4;
            AlignedBuffer plane(pp.hp * pp.wp + pp.wp + 64), input(k4 * region + 64), zeros(round_up(cols, 16) + 16);
            std::memset(plane.data + pp.hp * pp.wp, 0, static_cast<size_t>(pp.wp + 64));  // read for dropped pixels only
            zeros.zero();
            pp.data = plane.data;
            std::vector<int64_t> offsets(static_cast<size_t>(k4));
            for (int64_t k = 0; k < k4; ++k) offsets[static_cast<size_t>(k)] = k * region;
            if (ep.out_type != QATML_TYPE_INT32 && !w->has_zw && (fp.kernel != 0 || prefer_channel_lanes(g, wq, 0.15))) {
                const LaneInput in{input.data, offsets.data(), k4, w->packed.data, w->group_stride, 4 * wq, 4};
                channel_lanes(g, in, rowadd.data(), mult.data(), ep, fp, static_cast<uint8_t*>(y),
                              [&](int64_t n, int64_t grp) {
                                  pad_planes(g, x8 + (n * g.c + grp) * g.h * g.w, flip, pad, pp);
                                  tap_groups(g, pp, k4, wq, region, zeros.data, input.data);
                              });
                return QATML_OK;
            }
            pixel_lanes(g, *w, input.data, offsets.data(), wq, rowadd.data(), rowmul.data(), mult.data(), ep, y, [&](int64_t n, int64_t grp) {
                pad_planes(g, x8 + (n * g.c + grp) * g.h * g.w, flip, pad, pp);
                tap_groups(g, pp, k4, wq, region, zeros.data, input.data);
            });
            return QATML_OK;
        }
        if (w->isa == QATML_ISA_AVX512_VNNI) {  // implicit GEMM, no im2col
            InterleavedInput L = interleaved_layout(g, w->quads);
            std::vector<int64_t> offsets(static_cast<size_t>(k4));
            AlignedBuffer input;
            // Strided windows larger than 1x1 always take channel lanes: without the phase split their input is
            // a plain copy (ResNet18's 3x3 stride-2 layers: 131-143 us against 153-200 on pixel lanes).
            const bool strided = (g.sh > 1 || g.sw > 1) && g.kh * g.kw > 1;
            if (ep.out_type != QATML_TYPE_INT32 && !w->has_zw &&
                (fp.kernel != 0 || prefer_channel_lanes(g, L.wq, 0.05) || (strided && channel_lanes_allowed()))) {
                // Channel lanes read any pixel order, so strides need no phase split: the stride-1 layout of the
                // padded input, output pixel (oy, ox) at row oy * sh, column ox * sw.
                Geometry g1 = g;
                g1.sh = g1.sw = 1;
                InterleavedInput L1 = interleaved_layout(g1, w->quads);
                attach(L1, input);
                k_group_offsets(g1, L1, offsets.data());
                const LaneInput in{L1.data, offsets.data(), k4, w->packed.data, w->group_stride, 4 * g.sh * L1.wq, 4 * g.sw};
                channel_lanes(g, in, rowadd.data(), mult.data(), ep, fp, static_cast<uint8_t*>(y),
                              [&](int64_t n, int64_t grp) {
                                  interleave_input(g1, L1, x8 + (n * g.c + grp * g.cpg) * g.h * g.w, flip, pad);
                              });
                return QATML_OK;
            }
            attach(L, input);
            k_group_offsets(g, L, offsets.data());
            pixel_lanes(g, *w, L.data, offsets.data(), L.wq, rowadd.data(), rowmul.data(), mult.data(), ep, y, [&](int64_t n, int64_t grp) {
                interleave_input(g, L, x8 + (n * g.c + grp * g.cpg) * g.h * g.w, flip, pad);
            });
            return QATML_OK;
        }
        // Stride 1 computes on the padded-width grid (see panels_from_planes) into a staging buffer.
        const bool grid = g.sh == 1 && g.sw == 1;
        PaddedPlanes pp;
        pp.hp = g.h + params->pad_top + params->pad_bottom;
        pp.wp = g.w + params->pad_left + params->pad_right;
        const int64_t pv = grid ? g.oh * pp.wp : P;  // pixels the GEMM computes per image and group
        // Pixel chunk: packed panels of about 192 KiB.
        int64_t chunk = std::max<int64_t>(nr, (196608 / (k4 * 4)) / nr * nr);
        chunk = std::min(chunk, round_up(pv, nr));
        AlignedBuffer panels(chunk * k4 * 4), rows(grid ? 0 : 4 * round_up(chunk, 16) + 16);
        AlignedBuffer planes(g.cpg * pp.hp * pp.wp + (g.kw - 1) * g.dw + nr + 64);
        pp.data = planes.data;
        AlignedBuffer zeros(grid ? round_up(chunk, 16) + 16 : 0);
        zeros.zero();
        const int64_t kc4 = 256;
        AlignedBuffer scratch(k4 > kc4 ? round_up(g.mpg, mr) * chunk * 4 : 0);
        const int64_t esz = elem_size(ep.out_type);
        AlignedBuffer staging(grid ? g.mpg * chunk * esz : 0);
        std::vector<int32_t> coladd(static_cast<size_t>(chunk), 0), colsum(static_cast<size_t>(chunk), 0);
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t grp = 0; grp < g.groups; ++grp) {
                const uint8_t* img = x8 + (n * g.c + grp * g.cpg) * g.h * g.w;
                pad_planes(g, img, flip, pad, pp);
                uint8_t* out0 = static_cast<uint8_t*>(y) + (n * g.m + grp * g.mpg) * P * esz;
                for (int64_t p0 = 0; p0 < pv; p0 += chunk) {
                    const int64_t np = std::min(chunk, pv - p0);
                    if (grid)
                        panels_from_planes(g, pp, w->quads, p0, np, nr, k4, panels.data, w->has_zw ? colsum.data() : nullptr,
                                           zeros.data);
                    else
                        im2col_panels(g, pp, w->quads, p0, np, nr, k4, panels.data, w->has_zw ? colsum.data() : nullptr, rows.data);
                    GemmCall call{};
                    call.bc = w->packed.data + grp * w->group_stride;
                    call.vec = panels.data;
                    call.rows = g.mpg;
                    call.cols = np;
                    call.k4 = k4;
                    call.bc_signed = true;
                    call.rowadd = rowadd.data() + grp * g.mpg;
                    call.coladd = coladd.data();
                    call.rowmul = w->has_zw ? rowmul.data() + grp * g.mpg : nullptr;
                    call.colmul = colsum.data();
                    call.mult = mult.data() + grp * g.mpg;
                    call.mult_per_row = true;
                    call.out_type = ep.out_type;
                    call.zp = ep.zp;
                    call.lo = ep.lo;
                    call.hi = ep.hi;
                    call.out = grid ? staging.data : out0 + p0 * esz;
                    call.ldc = grid ? chunk : P;
                    call.kc4 = kc4;
                    call.scratch = reinterpret_cast<int32_t*>(scratch.data);
                    call.scratch_ld = chunk;
                    run_gemm(w->isa, call);
                    if (grid) {  // drop the columns ox >= OW and store NCHW
                        for (int64_t m = 0; m < g.mpg; ++m) {
                            const uint8_t* srow = staging.data + m * chunk * esz;
                            uint8_t* drow = out0 + m * P * esz;
                            int64_t q = p0;
                            while (q < p0 + np) {
                                const int64_t oy = q / pp.wp, ox = q % pp.wp;
                                const int64_t run = std::min(pp.wp - ox, p0 + np - q);
                                const int64_t keep = std::max<int64_t>(0, std::min(run, g.ow - ox));
                                if (keep > 0)
                                    std::memcpy(drow + (oy * g.ow + ox) * esz, srow + (q - p0) * esz, static_cast<size_t>(keep * esz));
                                q += run;
                            }
                        }
                    }
                }
            }
        return QATML_OK;
}
}  // namespace

QATML_API qatml_status qatml_conv2d(const qatml_context* ctx, const qatml_conv2d_params* params, const void* x,
                                    int32_t x_type, int32_t x_zero_point, const qatml_packed_weights* w,
                                    const qatml_epilogue* epilogue, void* y) {
    static const char* fn = "qatml_conv2d";
    return guarded(fn, [&] { return conv2d_impl(fn, ctx, params, x, x_type, x_zero_point, w, epilogue, y, FusedPool{}); });
}

QATML_API qatml_status qatml_conv2d_maxpool(const qatml_context* ctx, const qatml_conv2d_params* params, const void* x,
                                            int32_t x_type, int32_t x_zero_point, const qatml_packed_weights* w,
                                            const qatml_epilogue* epilogue, int64_t pool_kernel, const int64_t* pool_pads,
                                            void* y) {
    static const char* fn = "qatml_conv2d_maxpool";
    return guarded(fn, [&]() -> qatml_status {
        FusedPool fp;
        fp.kernel = static_cast<int>(pool_kernel);
        if (pool_pads) {
            fp.pt = pool_pads[0];
            fp.pl = pool_pads[1];
            fp.pb = pool_pads[2];
            fp.pr = pool_pads[3];
        }
        const int64_t max_pad = pool_kernel == 3 ? 1 : 0;
        if ((pool_kernel != 2 && pool_kernel != 3) || fp.pt < 0 || fp.pl < 0 || fp.pb < 0 || fp.pr < 0 || fp.pt > max_pad ||
            fp.pl > max_pad || fp.pb > max_pad || fp.pr > max_pad)
            return fail(QATML_INVALID_ARGUMENT,
                        "%s: pool_kernel %lld with pads %lld,%lld,%lld,%lld: supported are 2 (no padding) and 3 (pads 0 or 1)", fn,
                        (long long)pool_kernel, (long long)fp.pt, (long long)fp.pl, (long long)fp.pb, (long long)fp.pr);
        return conv2d_impl(fn, ctx, params, x, x_type, x_zero_point, w, epilogue, y, fp);
    });
}

}  // extern "C"
