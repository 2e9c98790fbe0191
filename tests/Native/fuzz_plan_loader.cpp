// libFuzzer target over the engine's plan loader (qatml_engine_create) and, for plans it accepts with small
// tensors, one run of two rows (qatml_engine_run). Built with clang by build/fuzz-native.sh (not part of CI):
// the library and this file with ASan + UBSan and libFuzzer coverage. The contract under test (qatml_engine.h):
// any bytes give QATML_OK or QATML_INVALID_ARGUMENT with a message, never a crash, a leak or an
// out-of-bounds access; an accepted plan runs.
//
//   qatml_plan_fuzzer -qatml_write_seeds=DIR   writes the seed plans (every op kind) to DIR and exits.
#include "qatml/qatml.h"
#include "engine_plans.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

bool write_seeds(const std::string& dir) {
    const qatml_test::EngineNet net;
    const std::vector<uint8_t> seeds[] = {net.plan(true), net.plan(false), qatml_test::pooling_plan(), qatml_test::wide_ops_plan(),
                                          qatml_test::TokenNet().plan()};
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; ++i) {
        const std::string path = dir + "/seed" + std::to_string(i) + ".qep";
        std::FILE* f = std::fopen(path.c_str(), "wb");
        if (!f || std::fwrite(seeds[i].data(), 1, seeds[i].size(), f) != seeds[i].size() || std::fclose(f) != 0) {
            std::fprintf(stderr, "cannot write %s\n", path.c_str());
            return false;
        }
    }
    // Each seed must load: a seed the loader rejects would fuzz only the first checks.
    for (const auto& s : seeds) {
        qatml_engine* e = nullptr;
        if (qatml_engine_create(nullptr, s.data(), static_cast<int64_t>(s.size()), &e) != QATML_OK) {
            std::fprintf(stderr, "seed rejected: %s\n", qatml_last_error());
            return false;
        }
        qatml_engine_destroy(e);
    }
    std::printf("wrote %zu seed plans to %s\n", sizeof seeds / sizeof seeds[0], dir.c_str());
    return true;
}

// Runs two rows when every row and the arena are small (a hostile plan can describe tensors far larger than
// its own bytes; that costs time and memory, not safety, and the runs would starve the fuzzer).
void run_small(const qatml_engine* e) {
    constexpr int64_t kMaxRow = 1 << 14;
    qatml_engine_info info{};
    if (qatml_engine_get_info(e, &info) != QATML_OK) std::abort();
    if (info.arena_bytes_per_row > (1 << 18)) return;
    std::vector<std::vector<float>> ins(static_cast<size_t>(info.input_count)), outs(static_cast<size_t>(info.output_count));
    std::vector<const float*> ip;
    std::vector<float*> op;
    for (int32_t is_output = 0; is_output < 2; ++is_output)
        for (int32_t i = 0; i < (is_output ? info.output_count : info.input_count); ++i) {
            int64_t n = 0;
            if (qatml_engine_io_row_size(e, is_output, i, &n) != QATML_OK) std::abort();
            if (n > kMaxRow) return;
            int32_t type = QATML_TYPE_FLOAT32;
            if (qatml_engine_io_type(e, is_output, i, &type) != QATML_OK) std::abort();
            std::vector<float>& v = (is_output ? outs : ins)[static_cast<size_t>(i)];
            v.resize(static_cast<size_t>(4 * n));  // room for two rows of 8-byte elements
            // Float values, or index 0 (inside every table) for integer inputs.
            for (size_t k = 0; k < v.size(); ++k) v[k] = type == QATML_TYPE_FLOAT32 ? static_cast<float>(static_cast<int>(k % 17) - 8) * 0.37f : 0.0f;
            if (is_output) op.push_back(v.data());
            else ip.push_back(v.data());
        }
    const qatml_status st = qatml_engine_run(e, nullptr, 2, ip.data(), info.input_count, op.data(), info.output_count);
    if (st != QATML_OK) {
        std::fprintf(stderr, "accepted plan failed to run (%d): %s\n", st, qatml_last_error());
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
    const char* flag = "-qatml_write_seeds=";
    for (int i = 1; i < *argc; ++i)
        if (std::strncmp((*argv)[i], flag, std::strlen(flag)) == 0) std::exit(write_seeds((*argv)[i] + std::strlen(flag)) ? 0 : 1);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    qatml_engine* e = nullptr;
    const qatml_status st = qatml_engine_create(nullptr, size ? data : nullptr, static_cast<int64_t>(size), &e);
    if (st != QATML_OK) {
        // Rejection is the only other outcome, always with a message and no engine.
        if (st != QATML_INVALID_ARGUMENT || e != nullptr || qatml_last_error()[0] == '\0') {
            std::fprintf(stderr, "unexpected rejection (%d, engine %p): %s\n", st, static_cast<void*>(e), qatml_last_error());
            std::abort();
        }
        return 0;
    }
    run_small(e);
    if (qatml_engine_destroy(e) != QATML_OK) std::abort();
    return 0;
}
