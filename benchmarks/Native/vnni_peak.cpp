// Peak of vpdpbusd: 24 independent accumulator chains, no loads, so the loop is bound only by the
// VNNI issue rate. zmm: 64 MACs = 128 integer ops per instruction; ymm: 64 ops. Only intrinsics
// here (no standard library or Google Benchmark code is instantiated with AVX-512 flags); the
// benchmark wrappers are in kernels_bench.cpp.
#include <immintrin.h>

#include <cstdint>


namespace {

template <int N>
__attribute__((noinline)) void zmm_loop(int64_t iters, __m512i* out) {
    __m512i acc[N];
#pragma GCC unroll 32
    for (int i = 0; i < N; ++i) acc[i] = _mm512_set1_epi32(i);
    const __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x05060708);
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
        for (int i = 0; i < N; ++i) {
            acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
            __asm__ volatile("" : "+v"(acc[i]));
        }
    }
    __m512i s = acc[0];
#pragma GCC unroll 32
    for (int i = 1; i < N; ++i) s = _mm512_add_epi32(s, acc[i]);
    *out = s;
}

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

// Runs `iters` iterations of 24 (zmm) / 12 (ymm) independent vpdpbusd; returns a value to keep.
int32_t qatml_bench_vnni_zmm(int64_t iters) {
    __m512i s;
    zmm_loop<24>(iters, &s);
    return _mm512_reduce_add_epi32(s);
}
int32_t qatml_bench_vnni_ymm(int64_t iters) {
    __m256i s;
    ymm_loop<12>(iters, &s);
    return _mm256_extract_epi32(s, 0);
}
