// Peak of vpdpbusd: 24 independent accumulator chains, no loads, so the loop is bound only by the
// VNNI issue rate. zmm: 64 MACs = 128 integer ops per instruction (the ymm loop, AVX-VNNI, is in
// vnni_peak_ymm.cpp: each file is compiled for, and runs only on, its own feature set). Only intrinsics
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

}  // namespace

// Runs `iters` iterations of 24 independent zmm vpdpbusd; returns a value to keep.
int32_t qatml_bench_vnni_zmm(int64_t iters) {
    __m512i s;
    zmm_loop<24>(iters, &s);
    return _mm512_reduce_add_epi32(s);
}
