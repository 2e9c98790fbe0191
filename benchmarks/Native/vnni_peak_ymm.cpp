// Peak of VEX vpdpbusd (AVX-VNNI) on ymm: 12 independent accumulator chains, 64 ops per instruction.
// Compiled with -mavx2 -mavxvnni only, so it runs on AVX-VNNI CPUs without AVX-512 (Alder Lake), and
// only where the CPU has AVX-VNNI (kernels_bench.cpp checks). Only intrinsics here.
#include <immintrin.h>

#include <cstdint>

namespace {

template <int N>
__attribute__((noinline)) void ymm_loop(int64_t iters, __m256i* out) {
    __m256i acc[N];
#pragma GCC unroll 32
    for (int i = 0; i < N; ++i) acc[i] = _mm256_set1_epi32(i);
    const __m256i a = _mm256_set1_epi32(0x01020304), b = _mm256_set1_epi32(0x05060708);
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
        for (int i = 0; i < N; ++i) {
            acc[i] = _mm256_dpbusd_avx_epi32(acc[i], a, b);
            __asm__ volatile("" : "+x"(acc[i]));
        }
    }
    __m256i s = acc[0];
#pragma GCC unroll 32
    for (int i = 1; i < N; ++i) s = _mm256_add_epi32(s, acc[i]);
    *out = s;
}

}  // namespace

// Runs `iters` iterations of 12 independent ymm vpdpbusd; returns a value to keep.
int32_t qatml_bench_vnni_ymm(int64_t iters) {
    __m256i s;
    ymm_loop<12>(iters, &s);
    return _mm256_extract_epi32(s, 0);
}
