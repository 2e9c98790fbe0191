// The scalar reference of every convolution: the scalar path, and what every fast path matches bit for bit.
#include "kernels/conv_internal.h"

namespace qatml {
namespace kernels {

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

}  // namespace kernels
}  // namespace qatml
