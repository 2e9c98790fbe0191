// GPU figures of the CUDA path, no .NET needed (build/gpu-check.sh runs it beside cuda_torch_bench.py):
//  - INT8 GEMM TOPS at 8192^3 and M = 256, K = N = 8192: int32 output (what torch._int_mm returns) and the fused
//    requantizing epilogue to int8, in the tile configuration the runner chooses and in every other one;
//  - ResNet18 plan images/s at batch 1, 32, 256 (INT8 and W4A8): device-resident (qatml_engine_run_device: the
//    inputs already on the GPU, as the PyTorch figure is taken) and from host memory (qatml_engine_run: pinned
//    staging and both copies included); plus whether the GPU reproduces the fixture's CPU outputs bit for bit.
// Usage: qatml_cuda_bench [--plans DIR] [--gemm-only] [--engine-only]
// Output: one "key value" line per figure (parsed by gpu-check.sh), comments start with '#'.
#include "cuda/cuda_kernels.h"
#include "qatml/qatml.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace qatml::cuda;

namespace {

#define CHECK_CUDA(x)                                                                                  \
    do {                                                                                               \
        cudaError_t err_ = (x);                                                                        \
        if (err_ != cudaSuccess) {                                                                     \
            std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(err_)); \
            std::exit(1);                                                                              \
        }                                                                                              \
    } while (0)

std::vector<int8_t> random_int8(size_t n, uint64_t seed) {
    std::vector<int8_t> v(n);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; ++i) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v[i] = static_cast<int8_t>(s >> 56);
    }
    return v;
}

// Milliseconds per launch of `launch` on the default stream: the best of 5 rounds of `iters` launches.
template <typename F>
double time_ms(F&& launch, int iters) {
    cudaEvent_t a, b;
    CHECK_CUDA(cudaEventCreate(&a));
    CHECK_CUDA(cudaEventCreate(&b));
    launch();
    launch();
    CHECK_CUDA(cudaDeviceSynchronize());
    double best = 1e30;
    for (int round = 0; round < 5; ++round) {
        CHECK_CUDA(cudaEventRecord(a));
        for (int i = 0; i < iters; ++i) launch();
        CHECK_CUDA(cudaEventRecord(b));
        CHECK_CUDA(cudaEventSynchronize(b));
        float ms = 0;
        CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
        best = std::min(best, double(ms) / iters);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return best;
}

void bench_gemm(int64_t m, int64_t n, int64_t k, const IgemmDeviceInfo& info) {
    const int64_t n_pad = (n + kNPad - 1) / kNPad * kNPad;
    const std::vector<int8_t> a = random_int8(static_cast<size_t>(m * k), 1), b = random_int8(static_cast<size_t>(n_pad * k), 2);
    void *da, *db, *dadd, *dmult, *dc32, *dc8;
    CHECK_CUDA(cudaMalloc(&da, a.size()));
    CHECK_CUDA(cudaMalloc(&db, b.size()));
    CHECK_CUDA(cudaMalloc(&dadd, n_pad * 4));
    CHECK_CUDA(cudaMalloc(&dmult, n_pad * 4));
    CHECK_CUDA(cudaMalloc(&dc32, m * n * 4));
    CHECK_CUDA(cudaMalloc(&dc8, m * n));
    CHECK_CUDA(cudaMemcpy(da, a.data(), a.size(), cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(db, b.data(), b.size(), cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemset(dadd, 0, n_pad * 4));
    const std::vector<float> mult(static_cast<size_t>(n_pad), 1.0f / 4096.0f);
    CHECK_CUDA(cudaMemcpy(dmult, mult.data(), n_pad * 4, cudaMemcpyHostToDevice));

    IgemmParams p{};
    p.a = static_cast<const uint8_t*>(da);
    p.lda = k;
    p.b = static_cast<const int8_t*>(db);
    p.coladd = static_cast<const int32_t*>(dadd);
    p.mult = static_cast<const float*>(dmult);
    p.ldc = n;
    p.m = m;
    p.n = static_cast<int32_t>(n);
    p.k = static_cast<int32_t>(k);
    p.k_pad = static_cast<int32_t>(k);
    p.mode = kDense;
    p.a_signed = 1;  // s8 x s8 -> s32, as torch._int_mm
    p.lo = -128;
    p.hi = 127;
    const double ops = 2.0 * double(m) * double(n) * double(k);
    const int iters = std::max(3, static_cast<int>(2e12 / ops));
    const int chosen = choose_tile(m, n, info.sms, info.blocks_per_sm);
    std::printf("# GEMM M=%lld N=%lld K=%lld (s8 x s8), %d launches per round; chosen tile config %d (%dx%d)\n", (long long)m,
                (long long)n, (long long)k, iters, chosen, kTiles[chosen].bm, kTiles[chosen].bn);
    double best_tops = 0;
    int best_config = chosen;
    for (int config = 0; config < kTileConfigs; ++config) {
        p.out_type = QATML_TYPE_INT32;
        p.c = dc32;
        const double ms = time_ms([&] { CHECK_CUDA(launch_igemm(p, config, nullptr)); }, iters);
        const double tops = ops / (ms * 1e-3) / 1e12;
        std::printf("# tile config %d (%dx%d): %.1f TOPS int32 out\n", config, kTiles[config].bm, kTiles[config].bn, tops);
        if (tops > best_tops) best_tops = tops, best_config = config;
    }
    p.out_type = QATML_TYPE_INT32;
    p.c = dc32;
    const double ms32 = time_ms([&] { CHECK_CUDA(launch_igemm(p, chosen, nullptr)); }, iters);
    // Spot check of the int32 result against a host dot product.
    std::vector<int32_t> c(static_cast<size_t>(m * n));
    CHECK_CUDA(cudaMemcpy(c.data(), dc32, c.size() * 4, cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int s = 0; s < 64; ++s) {
        const int64_t i = (s * 7919) % m, j = (s * 104729) % n;
        int32_t want = 0;
        for (int64_t q = 0; q < k; ++q) want += int32_t(a[static_cast<size_t>(i * k + q)]) * int32_t(b[static_cast<size_t>(j * k + q)]);
        bad += want != c[static_cast<size_t>(i * n + j)];
    }
    p.out_type = QATML_TYPE_INT8;
    p.c = dc8;
    const double ms8 = time_ms([&] { CHECK_CUDA(launch_igemm(p, chosen, nullptr)); }, iters);
    const std::string shape = std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k);
    std::printf("gemm_%s_int32_tops %.1f\n", shape.c_str(), ops / (ms32 * 1e-3) / 1e12);
    std::printf("gemm_%s_int8_requant_tops %.1f\n", shape.c_str(), ops / (ms8 * 1e-3) / 1e12);
    std::printf("gemm_%s_best_config_tops %.1f\n", shape.c_str(), best_tops);
    std::printf("# best tile config %d; spot check: %d of 64 int32 values wrong\n", best_config, bad);
    std::printf("gemm_%s_spot_check_errors %d\n", shape.c_str(), bad);
    for (void* ptr : {da, db, dadd, dmult, dc32, dc8}) cudaFree(ptr);
}

bool read_file(const std::string& path, std::vector<uint8_t>* out) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    std::fseek(f, 0, SEEK_END);
    out->resize(static_cast<size_t>(std::ftell(f)));
    std::fseek(f, 0, SEEK_SET);
    const bool ok = std::fread(out->data(), 1, out->size(), f) == out->size();
    std::fclose(f);
    return ok;
}

void bench_plan(const std::string& folder, const std::string& name, qatml_context* ctx) {
    std::vector<uint8_t> plan, io;
    if (!read_file(folder + "/" + name + ".qep", &plan) || !read_file(folder + "/" + name + ".io", &io)) {
        std::printf("# %s: no fixture in %s (write it with QatMl.Benchmarks write-plan-fixtures DIR --resnet)\n", name.c_str(), folder.c_str());
        return;
    }
    uint32_t rows = 0, nin = 0, nout = 0;
    int64_t in_elems = 0, out_elems = 0;
    std::memcpy(&rows, io.data() + 4, 4);
    std::memcpy(&nin, io.data() + 8, 4);
    std::memcpy(&nout, io.data() + 12, 4);
    std::memcpy(&in_elems, io.data() + 16, 8);
    const float* fixture_in = reinterpret_cast<const float*>(io.data() + 24);
    std::memcpy(&out_elems, io.data() + 24 + in_elems * rows * 4, 8);
    const float* fixture_out = reinterpret_cast<const float*>(io.data() + 32 + in_elems * rows * 4);
    if (nin != 1 || nout != 1) {
        std::printf("# %s: the benchmark takes one input and one output\n", name.c_str());
        return;
    }
    qatml_engine* e = nullptr;
    if (qatml_engine_create(ctx, plan.data(), static_cast<int64_t>(plan.size()), &e) != QATML_OK) {
        std::printf("# %s: engine_create failed: %s\n", name.c_str(), qatml_last_error());
        return;
    }
    {  // bit-exactness on the fixture rows
        std::vector<float> out(static_cast<size_t>(out_elems * rows));
        const float* ins[] = {fixture_in};
        float* outs[] = {out.data()};
        const bool ok = qatml_engine_run(e, ctx, rows, ins, 1, outs, 1) == QATML_OK &&
                        std::memcmp(out.data(), fixture_out, out.size() * sizeof(float)) == 0;
        std::printf("%s_bit_exact_with_cpu %d\n", name.c_str(), ok ? 1 : 0);
    }
    for (int64_t batch : {int64_t(1), int64_t(32), int64_t(256)}) {
        std::vector<float> in(static_cast<size_t>(in_elems * batch)), out(static_cast<size_t>(out_elems * batch));
        for (int64_t r = 0; r < batch; ++r)
            std::memcpy(in.data() + r * in_elems, fixture_in + (r % rows) * in_elems, static_cast<size_t>(in_elems) * sizeof(float));
        void *din, *dout;
        CHECK_CUDA(cudaMalloc(&din, in.size() * sizeof(float)));
        CHECK_CUDA(cudaMalloc(&dout, out.size() * sizeof(float)));
        CHECK_CUDA(cudaMemcpy(din, in.data(), in.size() * sizeof(float), cudaMemcpyHostToDevice));
        const float* ins[] = {in.data()};
        float* outs[] = {out.data()};
        const float* dins[] = {static_cast<const float*>(din)};
        float* douts[] = {static_cast<float*>(dout)};
        auto best_seconds = [&](auto&& call) {
            for (int i = 0; i < 3; ++i) call();
            const int runs = batch == 1 ? 200 : (batch == 32 ? 50 : 10);
            double best = 1e30;
            for (int i = 0; i < runs; ++i) {
                const auto t0 = std::chrono::steady_clock::now();
                call();
                best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            }
            return best;
        };
        const double dev = best_seconds([&] {
            if (qatml_engine_run_device(e, ctx, batch, dins, 1, douts, 1) != QATML_OK) std::fprintf(stderr, "%s\n", qatml_last_error());
        });
        const double host = best_seconds([&] {
            if (qatml_engine_run(e, ctx, batch, ins, 1, outs, 1) != QATML_OK) std::fprintf(stderr, "%s\n", qatml_last_error());
        });
        std::printf("%s_b%lld_device_images_per_s %.0f\n", name.c_str(), (long long)batch, double(batch) / dev);
        std::printf("%s_b%lld_host_images_per_s %.0f\n", name.c_str(), (long long)batch, double(batch) / host);
        cudaFree(din);
        cudaFree(dout);
    }
    qatml_engine_destroy(e);
}

}  // namespace

int main(int argc, char** argv) {
    std::string plans = "artifacts/plan-fixtures";
    bool gemm = true, engine = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--plans" && i + 1 < argc) plans = argv[++i];
        else if (a == "--gemm-only") engine = false;
        else if (a == "--engine-only") gemm = false;
        else {
            std::fprintf(stderr, "usage: qatml_cuda_bench [--plans DIR] [--gemm-only] [--engine-only]\n");
            return 2;
        }
    }
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        std::fprintf(stderr, "qatml_cuda_bench: no CUDA GPU\n");
        return 1;
    }
    cudaDeviceProp prop{};
    CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    std::printf("# device 0: %s, compute capability %d.%d, %d SMs\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
    if (gemm) {
        IgemmDeviceInfo info;
        CHECK_CUDA(igemm_device_info(&info));
        std::printf("# resident blocks per SM by tile config: %d %d %d %d %d\n", info.blocks_per_sm[0], info.blocks_per_sm[1],
                    info.blocks_per_sm[2], info.blocks_per_sm[3], info.blocks_per_sm[4]);
        bench_gemm(8192, 8192, 8192, info);
        bench_gemm(256, 8192, 8192, info);
    }
    if (engine) {
        qatml_device d{QATML_DEVICE_CUDA, 0};
        qatml_context* ctx = nullptr;
        if (qatml_context_create(&d, 0, &ctx) != QATML_OK) {
            std::fprintf(stderr, "context: %s\n", qatml_last_error());
            return 1;
        }
        bench_plan(plans, "resnet18_int8", ctx);
        bench_plan(plans, "resnet18_w4a8", ctx);
        bench_plan(plans, "fmnistnet_int8", ctx);
        qatml_context_destroy(ctx);
    }
    return 0;
}
