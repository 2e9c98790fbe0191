// Data movement: concat (8-bit inputs requantized through their tables), strided copies (transpose, slice, split,
// depth-to-space, expand), constant padding and nearest / bilinear resize. Any element type of 1 or 4 bytes.
#include "kernels/kernel_api.h"
#include "kernels/op_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace qatml {
namespace kernels {

// Runs of at most this many bytes are copied inline (two fixed-size moves that may overlap) rather than by a memcpy
// call: detection heads concatenate and slice 2-4 bytes per block.
constexpr int64_t kShortRun = 16;
inline void copy_short(uint8_t* d, const uint8_t* s, int64_t n) {
    if (n >= 8) {
        std::memcpy(d, s, 8);
        std::memcpy(d + n - 8, s + n - 8, 8);
    } else if (n >= 4) {
        std::memcpy(d, s, 4);
        std::memcpy(d + n - 4, s + n - 4, 4);
    } else if (n >= 2) {
        std::memcpy(d, s, 2);
        std::memcpy(d + n - 2, s + n - 2, 2);
    } else if (n == 1) {
        *d = *s;
    }
}

void concat_run(const ConcatPlan& p, int64_t rows, const uint8_t* const* xs, uint8_t* y) {
    for (int64_t row = 0; row < rows; ++row) {
        uint8_t* yr = y + row * p.y_row;
        for (int64_t o = 0; o < p.outer; ++o) {
            uint8_t* d = yr + o * p.y_block;
            for (size_t i = 0; i < p.part_bytes.size(); ++i) {
                const int64_t bytes = p.part_bytes[i];
                const uint8_t* s = xs[i] + row * p.x_row[i] + o * bytes;
                if (p.tables[i]) {
                    const uint8_t* table = p.tables[i];
                    for (int64_t j = 0; j < bytes; ++j) d[j] = table[s[j]];
                } else if (bytes <= kShortRun) {
                    copy_short(d, s, bytes);
                } else {
                    std::memcpy(d, s, static_cast<size_t>(bytes));
                }
                d += bytes;
            }
        }
    }
}

void copy_run(const CopyPlan& p, int64_t rows, const uint8_t* x, uint8_t* y) {
    int64_t dims[6] = {1, 1, 1, 1, 1, 1}, strides[6] = {0, 0, 0, 0, 0, 0};
    for (int i = 0; i < p.rank; ++i) {
        dims[6 - p.rank + i] = p.dims[i];
        strides[6 - p.rank + i] = p.strides[i];
    }
    const int64_t run = dims[5], es = p.elem;
    const bool contiguous = strides[5] == 1;
    for (int64_t row = 0; row < rows; ++row) {
        const uint8_t* xr = x + (row * p.x_row + p.offset) * es;
        uint8_t* d = y + row * p.y_row * es;
        for (int64_t i0 = 0; i0 < dims[0]; ++i0)
            for (int64_t i1 = 0; i1 < dims[1]; ++i1)
                for (int64_t i2 = 0; i2 < dims[2]; ++i2)
                    for (int64_t i3 = 0; i3 < dims[3]; ++i3)
                        for (int64_t i4 = 0; i4 < dims[4]; ++i4) {
                            const int64_t base = i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3] + i4 * strides[4];
                            const uint8_t* s = xr + base * es;
                            if (contiguous && run * es <= kShortRun) {
                                copy_short(d, s, run * es);
                            } else if (contiguous) {
                                std::memcpy(d, s, static_cast<size_t>(run * es));
                            } else if (es == 4) {
                                for (int64_t j = 0; j < run; ++j) std::memcpy(d + 4 * j, s + j * strides[5] * 4, 4);
                            } else {
                                for (int64_t j = 0; j < run; ++j) d[j] = s[j * strides[5]];
                            }
                            d += run * es;
                        }
    }
}

void pad_run(const PadPlan& p, int64_t rows, const uint8_t* x, uint8_t* y) {
    const int64_t es = p.elem;
    const bool dense = p.steps[3] == 1;
    for (int64_t row = 0; row < rows; ++row) {
        uint8_t* yr = y + row * p.y_row * es;
        if (es == 1) {
            std::memset(yr, p.value[0], static_cast<size_t>(p.y_row));
        } else {
            for (int64_t i = 0; i < p.y_row; ++i) std::memcpy(yr + i * 4, p.value, 4);
        }
        const uint8_t* xr = x + row * p.x_row * es;
        for (int64_t i0 = 0; i0 < p.x_dims[0]; ++i0)
            for (int64_t i1 = 0; i1 < p.x_dims[1]; ++i1)
                for (int64_t i2 = 0; i2 < p.x_dims[2]; ++i2) {
                    const uint8_t* s = xr + ((i0 * p.x_dims[1] + i1) * p.x_dims[2] + i2) * p.x_dims[3] * es;
                    const int64_t o0 = p.begins[0] + i0 * p.steps[0], o1 = p.begins[1] + i1 * p.steps[1], o2 = p.begins[2] + i2 * p.steps[2];
                    uint8_t* d = yr + (((o0 * p.y_dims[1] + o1) * p.y_dims[2] + o2) * p.y_dims[3] + p.begins[3]) * es;
                    if (dense) {
                        std::memcpy(d, s, static_cast<size_t>(p.x_dims[3] * es));
                        continue;
                    }
                    const int64_t n = p.x_dims[3], step = p.steps[3];
                    if (es == 4) {
                        const float* __restrict sf = reinterpret_cast<const float*>(s);
                        float* __restrict df = reinterpret_cast<float*>(d);
                        for (int64_t j = 0; j < n; ++j) df[j * step] = sf[j];
                    } else {
                        for (int64_t j = 0; j < n; ++j) d[j * step] = s[j];
                    }
                }
    }
}

namespace {
template <typename T>
float load(const T* x, int64_t i) {
    return static_cast<float>(x[i]);
}
template <typename T>
void store(T* y, int64_t i, float v, int32_t lo, int32_t hi) {
    if constexpr (sizeof(T) == 4) {
        y[i] = v;
    } else {
        y[i] = static_cast<T>(math::saturate_round(v, lo, hi));
    }
}
template <typename T>
void resize_rows(const ResizePlan& p, int64_t rows, const T* x, T* y) {
    int32_t lo = 0, hi = 0;
    type_range(p.type, &lo, &hi);
    const int64_t in_plane = p.h * p.w, out_plane = p.oh * p.ow;
    for (int64_t plane = 0; plane < rows * p.c; ++plane) {
        const T* xp = x + plane * in_plane;
        T* yp = y + plane * out_plane;
        for (int64_t oy = 0; oy < p.oh; ++oy) {
            T* yr = yp + oy * p.ow;
            if (!p.bilinear) {
                const T* xr = xp + p.y0[static_cast<size_t>(oy)] * p.w;
                for (int64_t ox = 0; ox < p.ow; ++ox) yr[ox] = xr[p.x0[static_cast<size_t>(ox)]];
                continue;
            }
            const T* r0 = xp + p.y0[static_cast<size_t>(oy)] * p.w;
            const T* r1 = xp + p.y1[static_cast<size_t>(oy)] * p.w;
            const float dy = p.dy[static_cast<size_t>(oy)];
            for (int64_t ox = 0; ox < p.ow; ++ox) {
                const int64_t c0 = p.x0[static_cast<size_t>(ox)], c1 = p.x1[static_cast<size_t>(ox)];
                const float dx = p.dx[static_cast<size_t>(ox)];
                const float v = math::bilinear_value(dy, dx, load(r0, c0), load(r0, c1), load(r1, c0), load(r1, c1));
                store(yr, ox, v, lo, hi);
            }
        }
    }
}
}  // namespace

void resize_run(const ResizePlan& p, int64_t rows, const uint8_t* x, uint8_t* y) {
    switch (p.type) {
        case QATML_TYPE_FLOAT32: resize_rows(p, rows, reinterpret_cast<const float*>(x), reinterpret_cast<float*>(y)); return;
        case QATML_TYPE_INT8: resize_rows(p, rows, reinterpret_cast<const int8_t*>(x), reinterpret_cast<int8_t*>(y)); return;
        default: resize_rows(p, rows, x, y); return;
    }
}

}  // namespace kernels
}  // namespace qatml
