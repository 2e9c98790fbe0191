// Activation memory: liveness intervals to arena offsets per row.
#include "engine/cpu_program.h"

#include <algorithm>
#include <cstdint>

using namespace qatml;
using namespace qatml::kernels;
using namespace qatml::plan;

namespace qatml {
namespace engine {

int64_t plan_offsets(const std::vector<Lifetime>& items, int steps, std::vector<int64_t>* offsets, int64_t* naive) {
    constexpr int64_t kAlign = 64;
    struct Block {
        int64_t offset, size;
        int last;
    };
    std::vector<Block> live;  // sorted by offset
    int64_t top = 0;
    *naive = 0;
    offsets->assign(items.size(), -1);
    std::vector<std::vector<size_t>> written(static_cast<size_t>(steps));
    for (size_t i = 0; i < items.size(); ++i)
        if (items[i].first >= 0 && items[i].bytes > 0) written[static_cast<size_t>(items[i].first)].push_back(i);
    for (int i = 0; i < steps; ++i) {
        live.erase(std::remove_if(live.begin(), live.end(), [&](const Block& b) { return b.last < i; }), live.end());
        for (size_t id : written[static_cast<size_t>(i)]) {
            const int64_t size = round_up(items[id].bytes, kAlign);
            *naive += size;
            int64_t best = -1, best_gap = INT64_MAX, prev_end = 0;
            size_t at = live.size();
            for (size_t j = 0; j <= live.size(); ++j) {
                const int64_t end = j < live.size() ? live[j].offset : INT64_MAX;
                const int64_t gap = end - prev_end;
                if (gap >= size && (best < 0 || gap < best_gap)) {
                    best = prev_end;
                    best_gap = gap;
                    at = j;
                }
                if (j < live.size()) prev_end = std::max(prev_end, live[j].offset + live[j].size);
            }
            (*offsets)[id] = best;
            top = std::max(top, best + size);
            live.insert(live.begin() + static_cast<std::ptrdiff_t>(at), Block{best, size, std::max(items[id].last, i)});
        }
    }
    return top;
}

void plan_memory(qatml_engine* e) {
    std::vector<Lifetime> life(e->tensors.size());
    for (size_t id = 0; id < e->tensors.size(); ++id) {
        const Tensor& t = e->tensors[id];
        if (t.def >= 0 && t.output_index < 0) life[id] = Lifetime{t.def, std::max(t.last_use, t.def), t.bytes};
    }
    std::vector<int64_t> offsets;
    e->arena_per_row = plan_offsets(life, static_cast<int>(e->ops.size()), &offsets, &e->naive_per_row);
    for (size_t id = 0; id < e->tensors.size(); ++id) e->tensors[id].offset = offsets[id];
}

}  // namespace engine
}  // namespace qatml
