// Internal interface between the ABI layer (baseline x86-64 code) and the ISA-specific GEMM drivers.
// Keep this header free of inline code and of the standard library: ISA translation units are
// compiled with -mavx512* flags, and an inline function instantiated there could be chosen by the
// linker for baseline code and execute illegal instructions on older CPUs.
#pragma once

#include <stdint.h>

namespace qatml {
namespace kernels {

// Register tile of an ISA: MR rows (broadcast operand) x NR columns (vector operand).
// Packed operands hold K in groups of 4 bytes (zero-padded), vpdpbusd order.
//   broadcast tiles: [ceil(rows/MR)][K4][MR][4]
//   vector panels:   [ceil(cols/NR)][K4][NR][4]
void isa_tile(int isa, int* mr, int* nr);

// One GEMM over packed operands: out[r, c] = epilogue(sum_k bc[r, k] * vec[c, k]).
struct GemmCall {
    const uint8_t* bc;      // broadcast operand tiles (rows)
    const uint8_t* vec;     // vector operand panels (cols)
    int64_t rows, cols, k4; // k4 = padded K / 4
    bool bc_signed;         // true: broadcast bytes are s8 and vector bytes u8 (conv); false: the reverse
    // Epilogue: x = acc + rowadd[r] + coladd[c] (+ rowmul[r] * colmul[c] when rowmul != nullptr).
    // Arrays are padded to a multiple of MR (row arrays) / NR (column arrays).
    const int32_t* rowadd;
    const int32_t* coladd;
    const int32_t* rowmul;
    const int32_t* colmul;
    const float* mult;      // per channel (padded); channel = row if mult_per_row else column
    bool mult_per_row;
    int out_type;           // QATML_TYPE_INT32 / UINT8 / INT8
    int32_t zp;             // output zero point
    int32_t lo, hi;         // final clamp in output units (type range intersected with the clamp)
    void* out;
    int64_t ldc;            // elements
    // K blocking: the reduction runs in blocks of at most kc4 groups (0 = all of K at once); partial
    // sums go through `scratch` (int32, rows rounded up to MR x cols rounded up to NR, row stride
    // scratch_ld), which the caller allocates when kc4 < k4.
    int64_t kc4;
    int32_t* scratch;
    int64_t scratch_ld;
};

void gemm_avx512vnni(const GemmCall& call);
void gemm_avxvnni(const GemmCall& call);
void gemm_avx2(const GemmCall& call);

}  // namespace kernels
}  // namespace qatml
