// QATML_ENGINE_PROFILE=1: per-step times of every CPU run, printed per engine (stderr) when it is destroyed or at
// process exit. Read once; a run that does not profile pays one branch.
#include "engine/cpu_program.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

using namespace qatml;
using namespace qatml::plan;

namespace qatml {
namespace engine {
namespace {

void step_description(const qatml_engine* e, const Step& s, char* buf, size_t size) {
    const Tensor &x = e->tensors[s.x], &y = e->tensors[s.y];
    auto dims = [](const Tensor& t, char* b, size_t n) {
        int w = 0;
        for (int d = 0; d < t.rank && w >= 0 && static_cast<size_t>(w) < n; ++d)
            w += std::snprintf(b + w, n - static_cast<size_t>(w), d ? "x%lld" : "%lld", (long long)t.dims[d]);
    };
    char xs[64] = "", ys[64] = "";
    dims(x, xs, sizeof xs);
    dims(y, ys, sizeof ys);
    const Op& op = e->ops[static_cast<size_t>(s.op)];
    const bool conv = s.kind == QATML_ENGINE_OP_CONV || s.kind == QATML_ENGINE_OP_FLOAT_CONV;
    if (conv || s.kind == QATML_ENGINE_OP_MAXPOOL || s.kind == QATML_ENGINE_OP_AVGPOOL)
        std::snprintf(buf, size, "%s -> %s k%lldx%lld s%lld p%lld,%lld,%lld,%lld g%lld", xs, ys, (long long)op.kh, (long long)op.kw,
                      (long long)op.p.stride_h, (long long)op.p.pad_top, (long long)op.p.pad_left, (long long)op.p.pad_bottom,
                      (long long)op.p.pad_right, (long long)(conv ? op.groups : 1));
    else
        std::snprintf(buf, size, "%s -> %s", xs, ys);
}

const char* step_name(const qatml_engine* e, const Step& s) {
    if (s.kind == QATML_ENGINE_OP_CONV && e->ops[static_cast<size_t>(s.op)].pool) return "CONV+MAXPOOL";
    if (s.kind == QATML_ENGINE_OP_CONV && s.add_op >= 0) return "CONV+ADD";
    return op_name(s.kind);
}

void print_profile(const qatml_engine* e) {
    if (e->profile_runs == 0) return;
    const std::vector<Step>& steps = e->cpu->steps;
    double total = 0;
    for (double v : e->profile_seconds) total += v;
    std::fprintf(stderr, "qatml engine profile: %zu steps, %lld runs, %lld rows, %.3f ms in steps, %.1f us per row\n", steps.size(),
                 (long long)e->profile_runs, (long long)e->profile_rows, total * 1e3,
                 e->profile_rows ? total * 1e6 / double(e->profile_rows) : 0.0);
    for (size_t i = 0; i < steps.size(); ++i) {
        char d[160];
        step_description(e, steps[i], d, sizeof d);
        const double v = e->profile_seconds[i];
        std::fprintf(stderr, "  op %3zu %-14s %8.1f us/row %5.1f%%  %s\n", i, step_name(e, steps[i]),
                     e->profile_rows ? v * 1e6 / double(e->profile_rows) : 0.0, total > 0 ? 100.0 * v / total : 0.0, d);
    }
    std::fflush(stderr);
}

// Engines alive with profile data, printed at exit.
std::mutex& profiled_mutex() {
    static std::mutex* m = new std::mutex();
    return *m;
}
std::set<const qatml_engine*>& profiled() {
    static auto* s = new std::set<const qatml_engine*>();
    return *s;
}
void print_live_profiles() {
    std::lock_guard<std::mutex> lock(profiled_mutex());
    for (const qatml_engine* e : profiled()) {
        std::lock_guard<std::mutex> l2(e->pool_mutex);
        print_profile(e);
    }
}

}  // namespace

bool profiling() {
    static const bool on = [] {
        const char* v = std::getenv("QATML_ENGINE_PROFILE");
        return v && *v && std::strcmp(v, "0") != 0;
    }();
    return on;
}

void profile_attach(qatml_engine* e) {
    e->profile_seconds.assign(e->cpu->steps.size(), 0.0);
    static std::once_flag once;
    std::call_once(once, [] { std::atexit(print_live_profiles); });
    std::lock_guard<std::mutex> lock(profiled_mutex());
    profiled().insert(e);
}

void profile_detach(qatml_engine* e) {
    std::lock_guard<std::mutex> lock(profiled_mutex());
    profiled().erase(e);
    print_profile(e);
}

void profile_record(const qatml_engine* e, const std::vector<double>& seconds, size_t parts, int64_t rows) {
    const size_t steps = e->profile_seconds.size();
    std::lock_guard<std::mutex> lock(e->pool_mutex);
    for (size_t i = 0; i < steps * parts; ++i) e->profile_seconds[i % steps] += seconds[i];
    e->profile_runs += 1;
    e->profile_rows += rows;
}

}  // namespace engine
}  // namespace qatml
