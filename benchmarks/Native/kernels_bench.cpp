// Benchmarks of qatml_native's INT8 kernels (one thread). Report the best of several repetitions:
//   qatml_kernel_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// "ops" counters are integer operations per second (2 per multiply-add); "bytes" counters bytes per second.
#include "qatml/qatml.h"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#ifdef QATML_BENCH_ONEDNN
#include <dnnl.hpp>
#endif

// Whether this CPU runs kernel path `isa` (-1: the best one, always). A path runs only where the CPU
// has every feature it executes: a Zen 4 has avx512_vnni but not avx_vnni.
bool qatml_bench_isa_supported(int isa) {
    uint32_t have = 0, need = 0;
    if (isa < 0) return true;
    return qatml_cpu_features(&have) == QATML_OK && qatml_isa_required_features(isa, &need) == QATML_OK && (have & need) == need;
}
bool qatml_bench_has_avx512vnni() { return qatml_bench_isa_supported(QATML_ISA_AVX512_VNNI); }
double qatml_bench_stat_max(const std::vector<double>& v) {
    return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
}
bool qatml_bench_has_avxvnni() { return qatml_bench_isa_supported(QATML_ISA_AVX_VNNI); }

int32_t qatml_bench_vnni_zmm(int64_t iters);  // vnni_peak.cpp
int32_t qatml_bench_vnni_ymm(int64_t iters);

namespace {

// vpdpbusd peak: zmm = 24 chains x 128 ops per iteration; ymm = 12 chains x 64 ops.
void BM_VnniPeakZmm(benchmark::State& state) {
    if (!qatml_bench_has_avx512vnni()) {
        state.SkipWithError("no AVX-512 VNNI");
        return;
    }
    const int64_t iters = 100000;
    for (auto _ : state) benchmark::DoNotOptimize(qatml_bench_vnni_zmm(iters));
    state.counters["ops"] = benchmark::Counter(double(iters) * 24 * 128 * double(state.iterations()),
                                               benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_VnniPeakZmm)->Unit(benchmark::kMicrosecond)->ComputeStatistics("max", qatml_bench_stat_max);

void BM_VnniPeakYmm(benchmark::State& state) {
    if (!qatml_bench_has_avxvnni()) {
        state.SkipWithError("no AVX-VNNI");
        return;
    }
    const int64_t iters = 100000;
    for (auto _ : state) benchmark::DoNotOptimize(qatml_bench_vnni_ymm(iters));
    state.counters["ops"] = benchmark::Counter(double(iters) * 12 * 64 * double(state.iterations()),
                                               benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_VnniPeakYmm)->Unit(benchmark::kMicrosecond)->ComputeStatistics("max", qatml_bench_stat_max);

}  // namespace

namespace {

template <typename T>
std::vector<T> random_bytes(size_t n, int lo, int hi, unsigned seed) {
    std::mt19937 r(seed);
    std::uniform_int_distribution<int> d(lo, hi);
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(d(r));
    return v;
}

// "_min" rows give the best time, "_max" rows the best rate counters of the repetitions.
double stat_min(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end()); }
double stat_max(const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); }
#define QATML_BEST ComputeStatistics("min", stat_min)->ComputeStatistics("max", stat_max)

void set_ops(benchmark::State& state, double ops_per_iter) {
    state.counters["ops"] = benchmark::Counter(ops_per_iter * double(state.iterations()), benchmark::Counter::kIsRate,
                                               benchmark::Counter::kIs1000);
}

// Args: M, N, K, ISA (-1 = detected), output (0 = s32, 1 = u8 requantized).
void BM_Gemm(benchmark::State& state) {
    const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
    const int isa = static_cast<int>(state.range(3));
    const bool u8out = state.range(4) != 0;
    if (!qatml_bench_isa_supported(isa)) {
        state.SkipWithError("ISA not available");
        return;
    }
    qatml_cpu_set_max_isa(isa);
    auto a = random_bytes<uint8_t>(size_t(m * k), 0, 255, 1);
    auto b = random_bytes<int8_t>(size_t(k * n), -127, 127, 2);
    qatml_packed_weights* pw = nullptr;
    if (qatml_gemm_pack_b(nullptr, b.data(), QATML_TYPE_INT8, k, n, 0, nullptr, &pw) != QATML_OK) {
        state.SkipWithError(qatml_last_error());
        qatml_cpu_set_max_isa(-1);
        return;
    }
    qatml_cpu_set_max_isa(-1);
    std::vector<int32_t> bias(size_t(n), 5);
    std::vector<float> mult(size_t(n), 1.0f / 65536.0f);
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    ep.out_type = u8out ? QATML_TYPE_UINT8 : QATML_TYPE_INT32;
    ep.bias = bias.data();
    ep.multipliers = mult.data();
    ep.multiplier_count = n;
    ep.out_zero_point = 3;
    std::vector<int32_t> c(size_t(m * n));
    for (auto _ : state) {
        if (qatml_gemm(nullptr, m, a.data(), QATML_TYPE_UINT8, k, 7, pw, &ep, c.data(), n) != QATML_OK) {
            state.SkipWithError(qatml_last_error());
            break;
        }
        benchmark::ClobberMemory();
    }
    set_ops(state, 2.0 * double(m) * double(n) * double(k));
    state.counters["bytes"] = benchmark::Counter(double(k * n + m * k) * double(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
    qatml_packed_weights_destroy(pw);
}
BENCHMARK(BM_Gemm)
    ->ArgNames({"M", "N", "K", "isa", "u8out"})
    ->Args({1024, 1024, 1024, -1, 0})
    ->Args({1024, 1024, 1024, -1, 1})
    ->Args({1024, 1024, 1024, QATML_ISA_AVX_VNNI, 0})
    ->Args({1024, 1024, 1024, QATML_ISA_AVX2, 0})
    ->Args({256, 128, 3136, -1, 0})
    ->Args({256, 128, 3136, -1, 1})
    ->Args({1, 128, 3136, -1, 0})
    ->Args({1, 128, 3136, -1, 1})
    ->Unit(benchmark::kMicrosecond)->QATML_BEST;

// memcpy of the 1 x 128 x 3136 case's weight bytes: the bandwidth ceiling for the GEMV.
void BM_MemcpyCeiling(benchmark::State& state) {
    const size_t bytes = size_t(state.range(0));
    std::vector<uint8_t> src(bytes, 1), dst(bytes);
    for (auto _ : state) {
        std::memcpy(dst.data(), src.data(), bytes);
        benchmark::ClobberMemory();
    }
    // Bytes read (the GEMV only reads its weights).
    state.counters["bytes"] = benchmark::Counter(double(bytes) * double(state.iterations()), benchmark::Counter::kIsRate,
                                                 benchmark::Counter::kIs1024);
}
BENCHMARK(BM_MemcpyCeiling)->Arg(128 * 3136)->Unit(benchmark::kMicrosecond)->QATML_BEST;

// Args: batch, C, M, H(=W), kernel, stride, pad, groups, ISA at pack time (-1 = detected).
void BM_Conv(benchmark::State& state) {
    qatml_conv2d_params p{};
    p.batch = state.range(0);
    p.channels = state.range(1);
    const int64_t m = state.range(2);
    p.height = p.width = state.range(3);
    const int64_t kk = state.range(4);
    p.stride_h = p.stride_w = state.range(5);
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = state.range(6);
    p.dilation_h = p.dilation_w = 1;
    const int64_t groups = state.range(7);
    const int64_t cpg = p.channels / groups;
    auto w = random_bytes<int8_t>(size_t(m * cpg * kk * kk), -127, 127, 3);
    auto x = random_bytes<uint8_t>(size_t(p.batch * p.channels * p.height * p.width), 0, 255, 4);
    const int isa = static_cast<int>(state.range(8));
    if (!qatml_bench_isa_supported(isa)) {
        state.SkipWithError("ISA not available");
        return;
    }
    qatml_cpu_set_max_isa(isa);
    qatml_packed_weights* pw = nullptr;
    const qatml_status packed = qatml_conv_pack_weights(nullptr, w.data(), QATML_TYPE_INT8, m, cpg, kk, kk, groups, nullptr, &pw);
    qatml_cpu_set_max_isa(-1);
    if (packed != QATML_OK) {
        state.SkipWithError(qatml_last_error());
        return;
    }
    int64_t oh = 0, ow = 0;
    qatml_conv2d_output_size(&p, kk, kk, &oh, &ow);
    std::vector<float> mult(size_t(m), 1.0f / 4096.0f);
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    ep.out_type = QATML_TYPE_UINT8;
    ep.multipliers = mult.data();
    ep.multiplier_count = m;
    ep.out_zero_point = 0;
    ep.has_clamp = 1;  // ReLU
    ep.clamp_min = 0;
    ep.clamp_max = 255;
    std::vector<uint8_t> y(size_t(p.batch * m * oh * ow));
    for (auto _ : state) {
        if (qatml_conv2d(nullptr, &p, x.data(), QATML_TYPE_UINT8, 128, pw, &ep, y.data()) != QATML_OK) {
            state.SkipWithError(qatml_last_error());
            break;
        }
        benchmark::ClobberMemory();
    }
    set_ops(state, 2.0 * double(p.batch) * double(m) * double(oh * ow) * double(cpg * kk * kk));
    qatml_packed_weights_destroy(pw);
}
BENCHMARK(BM_Conv)
    ->ArgNames({"N", "C", "M", "HW", "k", "s", "pad", "g", "isa"})
    ->Args({256, 32, 64, 14, 3, 1, 1, 1, -1})   // FmnistNet conv2 at batch 256
    ->Args({32, 32, 64, 14, 3, 1, 1, 1, -1})    // FmnistNet conv2 at batch 32
    ->Args({1, 32, 64, 14, 3, 1, 1, 1, -1})     // FmnistNet conv2 at batch 1
    ->Args({1, 1, 32, 28, 3, 1, 1, 1, -1})      // FmnistNet conv1 at batch 1
    ->Args({256, 1, 32, 28, 3, 1, 1, 1, -1})    // FmnistNet conv1 at batch 256
    ->Args({32, 64, 64, 56, 3, 1, 1, 1, -1})    // ResNet18 layer1 3x3 at batch 32
    ->Args({32, 256, 256, 14, 3, 1, 1, 1, -1})  // ResNet18 layer3 3x3 at batch 32
    ->Args({32, 64, 128, 56, 3, 2, 1, 1, -1})   // ResNet18 layer2 downsampling 3x3 stride 2 at batch 32
    ->Args({32, 32, 64, 14, 3, 1, 1, 1, QATML_ISA_AVX_VNNI})  // FmnistNet conv2, im2col + ymm GEMM
    // ResNet18 at batch 1: the 3x3 layers per plane size, the stride-2 3x3 layers
    ->Args({1, 3, 64, 224, 7, 2, 3, 1, -1})     // stem 7x7 stride 2
    ->Args({1, 64, 64, 56, 3, 1, 1, 1, -1})
    ->Args({1, 128, 128, 28, 3, 1, 1, 1, -1})
    ->Args({1, 256, 256, 14, 3, 1, 1, 1, -1})
    ->Args({1, 512, 512, 7, 3, 1, 1, 1, -1})
    ->Args({1, 64, 128, 56, 3, 2, 1, 1, -1})
    ->Args({1, 128, 256, 28, 3, 2, 1, 1, -1})
    ->Args({1, 256, 512, 14, 3, 2, 1, 1, -1})
    ->Args({1, 64, 128, 56, 1, 2, 0, 1, -1})     // ResNet18 1x1 stride-2 projections
    ->Args({1, 128, 256, 28, 1, 2, 0, 1, -1})
    ->Args({1, 256, 512, 14, 1, 2, 0, 1, -1})
    ->Args({32, 64, 64, 56, 3, 1, 1, 64, -1})   // depthwise 3x3
    ->Args({32, 64, 64, 56, 3, 1, 1, 64, QATML_ISA_AVX2})
    ->Args({32, 64, 64, 56, 3, 2, 1, 64, -1})   // depthwise 3x3 stride 2
    ->Unit(benchmark::kMillisecond)->QATML_BEST;

// Elementwise, pooling: the ISA is capped for the call only (these kernels dispatch per call).
// "elems" counts elements (input elements for pooling) per second, "bytes" bytes read + written.
struct IsaScope {
    bool ok = true;
    explicit IsaScope(benchmark::State& state, int isa) {
        if (!qatml_bench_isa_supported(isa)) {
            state.SkipWithError("ISA not available");
            ok = false;
        } else {
            qatml_cpu_set_max_isa(isa);
        }
    }
    ~IsaScope() { qatml_cpu_set_max_isa(-1); }
};
void set_rates(benchmark::State& state, double elems, double bytes) {
    state.counters["elems"] = benchmark::Counter(elems * double(state.iterations()), benchmark::Counter::kIsRate);
    state.counters["bytes"] = benchmark::Counter(bytes * double(state.iterations()), benchmark::Counter::kIsRate,
                                                 benchmark::Counter::kIs1024);
}
#define QATML_RUN_OR_SKIP(call)                      \
    if ((call) != QATML_OK) {                        \
        state.SkipWithError(qatml_last_error());     \
        break;                                       \
    }

// Args: elements, ISA (-1 = detected, 0 = scalar reference). f32 -> u8, per tensor.
void BM_QuantizeLinear(benchmark::State& state) {
    const int64_t n = state.range(0);
    IsaScope scope(state, int(state.range(1)));
    if (!scope.ok) return;
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[size_t(i)] = float(i % 1000) * 0.37f - 150.0f;
    std::vector<uint8_t> y(static_cast<size_t>(n));
    float s = 0.5f;
    int32_t zp = 128;
    for (auto _ : state) {
        QATML_RUN_OR_SKIP(qatml_quantize_linear(nullptr, x.data(), 1, 1, n, &s, &zp, QATML_TYPE_UINT8, y.data()));
        benchmark::ClobberMemory();
    }
    set_rates(state, double(n), double(n) * 5);
}
BENCHMARK(BM_QuantizeLinear)->ArgNames({"n", "isa"})->Args({1 << 20, -1})->Args({1 << 20, QATML_ISA_AVX2})
    ->Args({1 << 20, QATML_ISA_SCALAR})->Unit(benchmark::kMicrosecond)->QATML_BEST;

// u8 -> f32, per channel (256 channels x 4096).
void BM_DequantizeLinear(benchmark::State& state) {
    const int64_t n = state.range(0), channels = 256;
    IsaScope scope(state, int(state.range(1)));
    if (!scope.ok) return;
    auto x = random_bytes<uint8_t>(size_t(n), 0, 255, 5);
    std::vector<float> y(static_cast<size_t>(n)), scales(channels, 0.02f);
    std::vector<int32_t> zps(channels, 100);
    for (auto _ : state) {
        QATML_RUN_OR_SKIP(qatml_dequantize_linear(nullptr, x.data(), QATML_TYPE_UINT8, 1, channels, n / channels,
                                                  scales.data(), zps.data(), y.data()));
        benchmark::ClobberMemory();
    }
    set_rates(state, double(n), double(n) * 5);
}
BENCHMARK(BM_DequantizeLinear)->ArgNames({"n", "isa"})->Args({1 << 20, -1})->Args({1 << 20, QATML_ISA_AVX2})
    ->Args({1 << 20, QATML_ISA_SCALAR})->Unit(benchmark::kMicrosecond)->QATML_BEST;

// s32 (+ bias) -> u8, per channel (256 channels x 4096).
void BM_Requantize(benchmark::State& state) {
    const int64_t n = state.range(0), channels = 256;
    IsaScope scope(state, int(state.range(1)));
    if (!scope.ok) return;
    std::vector<int32_t> x(static_cast<size_t>(n)), bias(channels, 17);
    for (int64_t i = 0; i < n; ++i) x[size_t(i)] = int32_t((i * 2654435761u) % 200000) - 100000;
    std::vector<float> mult(channels, 1.0f / 1024.0f);
    std::vector<uint8_t> y(static_cast<size_t>(n));
    for (auto _ : state) {
        QATML_RUN_OR_SKIP(qatml_requantize(nullptr, x.data(), 1, channels, n / channels, bias.data(), mult.data(), 3,
                                           QATML_TYPE_UINT8, y.data()));
        benchmark::ClobberMemory();
    }
    set_rates(state, double(n), double(n) * 5);
}
BENCHMARK(BM_Requantize)->ArgNames({"n", "isa"})->Args({1 << 20, -1})->Args({1 << 20, QATML_ISA_AVX2})
    ->Args({1 << 20, QATML_ISA_SCALAR})->Unit(benchmark::kMicrosecond)->QATML_BEST;

// QLinearAdd u8 (ResNet residual add).
void BM_Add(benchmark::State& state) {
    const int64_t n = state.range(0);
    IsaScope scope(state, int(state.range(1)));
    if (!scope.ok) return;
    auto a = random_bytes<uint8_t>(size_t(n), 0, 255, 6), b = random_bytes<uint8_t>(size_t(n), 0, 255, 7);
    std::vector<uint8_t> y(static_cast<size_t>(n));
    for (auto _ : state) {
        QATML_RUN_OR_SKIP(qatml_add(nullptr, a.data(), 0.05f, 120, b.data(), 0.03f, 130, QATML_TYPE_UINT8, n, 0.06f, 110, y.data()));
        benchmark::ClobberMemory();
    }
    set_rates(state, double(n), double(n) * 3);
}
BENCHMARK(BM_Add)->ArgNames({"n", "isa"})->Args({1 << 20, -1})->Args({1 << 20, QATML_ISA_AVX2})
    ->Args({1 << 20, QATML_ISA_SCALAR})->Unit(benchmark::kMicrosecond)->QATML_BEST;

// Args: batch, channels, H(=W), kernel, stride, pad, kind (1 max, 2 average), ISA.
void BM_Pool(benchmark::State& state) {
    qatml_conv2d_params p{};
    p.batch = state.range(0);
    p.channels = state.range(1);
    p.height = p.width = state.range(2);
    const int64_t k = state.range(3);
    p.stride_h = p.stride_w = state.range(4);
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = state.range(5);
    p.dilation_h = p.dilation_w = 1;
    const int32_t kind = int32_t(state.range(6));
    IsaScope scope(state, int(state.range(7)));
    if (!scope.ok) return;
    int64_t oh = 0, ow = 0;
    qatml_conv2d_output_size(&p, k, k, &oh, &ow);
    const int64_t in = p.batch * p.channels * p.height * p.width, out = p.batch * p.channels * oh * ow;
    auto x = random_bytes<uint8_t>(size_t(in), 0, 255, 8);
    std::vector<uint8_t> y(static_cast<size_t>(out));
    for (auto _ : state) {
        QATML_RUN_OR_SKIP(qatml_pool2d(nullptr, kind, &p, k, k, 0, x.data(), QATML_TYPE_UINT8, 0.1f, 3, 0.1f, 3, y.data()));
        benchmark::ClobberMemory();
    }
    set_rates(state, double(in), double(in + out));
}
BENCHMARK(BM_Pool)
    ->ArgNames({"N", "C", "HW", "k", "s", "pad", "kind", "isa"})
    ->Args({32, 64, 112, 3, 2, 1, QATML_POOL_MAX, -1})  // ResNet18 stem max pool, batch 32
    ->Args({1, 64, 112, 3, 2, 1, QATML_POOL_MAX, -1})   // batch 1 (in cache, as in the engine)
    ->Args({32, 64, 112, 3, 2, 1, QATML_POOL_MAX, QATML_ISA_AVX2})
    ->Args({32, 64, 112, 3, 2, 1, QATML_POOL_MAX, QATML_ISA_SCALAR})
    ->Args({256, 32, 28, 2, 2, 0, QATML_POOL_MAX, -1})  // FmnistNet 2x2 max pool, batch 256
    ->Args({256, 32, 28, 2, 2, 0, QATML_POOL_MAX, QATML_ISA_SCALAR})
    ->Args({32, 64, 56, 3, 1, 1, QATML_POOL_AVERAGE, -1})  // 3x3 average pool, stride 1
    ->Args({32, 64, 56, 3, 1, 1, QATML_POOL_AVERAGE, QATML_ISA_AVX2})
    ->Args({32, 64, 56, 3, 1, 1, QATML_POOL_AVERAGE, QATML_ISA_SCALAR})
    ->Unit(benchmark::kMicrosecond)->QATML_BEST;

// Args: batch, channels, H*W, ISA.
void BM_GlobalAveragePool(benchmark::State& state) {
    const int64_t batch = state.range(0), channels = state.range(1), spatial = state.range(2);
    IsaScope scope(state, int(state.range(3)));
    if (!scope.ok) return;
    auto x = random_bytes<uint8_t>(size_t(batch * channels * spatial), 0, 255, 9);
    std::vector<uint8_t> y(static_cast<size_t>(batch * channels));
    for (auto _ : state) {
        QATML_RUN_OR_SKIP(qatml_global_average_pool(nullptr, x.data(), QATML_TYPE_UINT8, batch, channels, spatial, 0.1f, 3,
                                                    0.05f, 5, y.data()));
        benchmark::ClobberMemory();
    }
    set_rates(state, double(batch * channels * spatial), double(batch * channels * (spatial + 1)));
}
BENCHMARK(BM_GlobalAveragePool)
    ->ArgNames({"N", "C", "HW", "isa"})
    ->Args({32, 512, 49, -1})  // ResNet18 head, batch 32
    ->Args({32, 512, 49, QATML_ISA_AVX2})
    ->Args({32, 512, 49, QATML_ISA_SCALAR})
    ->Args({32, 64, 3136, -1})  // a 56x56 plane
    ->Args({32, 64, 3136, QATML_ISA_SCALAR})
    ->Unit(benchmark::kMicrosecond)->QATML_BEST;

#ifdef QATML_BENCH_ONEDNN
// oneDNN u8 x s8 -> s32 matmul, weights reordered once into the layout the primitive prefers.
void BM_OneDnnMatmul(benchmark::State& state) {
    using namespace dnnl;
    const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
    engine eng(engine::kind::cpu, 0);
    stream s(eng);
    memory::desc a_md({m, k}, memory::data_type::u8, memory::format_tag::ab);
    memory::desc b_any({k, n}, memory::data_type::s8, memory::format_tag::any);
    memory::desc b_plain({k, n}, memory::data_type::s8, memory::format_tag::ab);
    memory::desc c_md({m, n}, memory::data_type::s32, memory::format_tag::ab);
    primitive_attr attr;
    attr.set_zero_points(DNNL_ARG_SRC, 0, {7});  // same work as qatml: a non-zero activation zero point
    matmul::primitive_desc pd(matmul::desc(a_md, b_any, c_md), attr, eng);
    auto a = random_bytes<uint8_t>(size_t(m * k), 0, 255, 1);
    auto b = random_bytes<int8_t>(size_t(k * n), -127, 127, 2);
    std::vector<int32_t> c(size_t(m * n));
    memory a_mem(a_md, eng, a.data()), b_src(b_plain, eng, b.data()), c_mem(c_md, eng, c.data());
    memory b_mem(pd.weights_desc(), eng);
    reorder(b_src, b_mem).execute(s, b_src, b_mem);
    int32_t zp = 7;
    memory zp_mem({{1}, memory::data_type::s32, memory::format_tag::x}, eng, &zp);
    matmul prim(pd);
    s.wait();
    for (auto _ : state) {
        prim.execute(s, {{DNNL_ARG_SRC, a_mem},
                         {DNNL_ARG_WEIGHTS, b_mem},
                         {DNNL_ARG_DST, c_mem},
                         {DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, zp_mem}});
        s.wait();
    }
    set_ops(state, 2.0 * double(m) * double(n) * double(k));
}
BENCHMARK(BM_OneDnnMatmul)
    ->ArgNames({"M", "N", "K"})
    ->Args({1024, 1024, 1024})
    ->Args({256, 128, 3136})
    ->Args({1, 128, 3136})
    ->Unit(benchmark::kMicrosecond)->QATML_BEST;
#endif

}  // namespace

BENCHMARK_MAIN();
