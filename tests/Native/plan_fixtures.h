// Engine plans with inputs and the CPU engine's outputs, written by the C# side
// (QatMl.Benchmarks write-plan-fixtures; format in benchmarks/QatMl.Benchmarks/PlanFixtures.cs):
// tests/data/plans holds FmnistNet INT8 and W4A8; QATML_PLAN_FIXTURES names a folder with more (ResNet18).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <string>
#include <vector>

#ifndef QATML_TEST_DATA_DIR
#error "QATML_TEST_DATA_DIR must name tests/data"
#endif

namespace qatml_test {

struct PlanFixture {
    std::string name;
    std::vector<uint8_t> plan;
    uint32_t rows = 0;
    std::vector<int64_t> input_sizes, output_sizes;  // elements per row
    std::vector<std::vector<float>> inputs, outputs;
};

inline bool read_file(const std::string& path, std::vector<uint8_t>* out) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    out->clear();
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->insert(out->end(), buf, buf + n);
    std::fclose(f);
    return true;
}

// Reads NAME.qep and NAME.io from `folder`; false with *error set when a file is missing or malformed.
inline bool load_fixture(const std::string& folder, const std::string& name, PlanFixture* fx, std::string* error) {
    fx->name = name;
    std::vector<uint8_t> io;
    if (!read_file(folder + "/" + name + ".qep", &fx->plan) || !read_file(folder + "/" + name + ".io", &io)) {
        *error = "cannot read " + folder + "/" + name + ".qep / .io";
        return false;
    }
    size_t at = 0;
    auto take = [&](void* dst, size_t n) {
        if (n > io.size() - at) return false;
        std::memcpy(dst, io.data() + at, n);
        at += n;
        return true;
    };
    char magic[4];
    uint32_t in_count = 0, out_count = 0;
    if (!take(magic, 4) || std::memcmp(magic, "QIO1", 4) != 0 || !take(&fx->rows, 4) || !take(&in_count, 4) || !take(&out_count, 4)) {
        *error = name + ".io: bad header";
        return false;
    }
    auto tensors = [&](uint32_t count, std::vector<int64_t>* sizes, std::vector<std::vector<float>>* data) {
        for (uint32_t i = 0; i < count; ++i) {
            int64_t elems = 0;
            if (!take(&elems, 8) || elems <= 0 || elems > (int64_t(1) << 28)) return false;
            sizes->push_back(elems);
            data->emplace_back(static_cast<size_t>(elems) * fx->rows);
            if (!take(data->back().data(), data->back().size() * sizeof(float))) return false;
        }
        return true;
    };
    if (!tensors(in_count, &fx->input_sizes, &fx->inputs) || !tensors(out_count, &fx->output_sizes, &fx->outputs) || at != io.size()) {
        *error = name + ".io: truncated or trailing bytes";
        return false;
    }
    return true;
}

inline std::string committed_fixture_folder() { return std::string(QATML_TEST_DATA_DIR) + "/plans"; }

// Names of the fixtures (NAME.qep files) in `folder`, sorted; empty if the folder does not exist.
inline std::vector<std::string> fixture_names(const std::string& folder) {
    std::vector<std::string> names;
    if (DIR* d = opendir(folder.c_str())) {
        while (dirent* e = readdir(d)) {
            const std::string f = e->d_name;
            if (f.size() > 4 && f.compare(f.size() - 4, 4, ".qep") == 0) names.push_back(f.substr(0, f.size() - 4));
        }
        closedir(d);
    }
    std::sort(names.begin(), names.end());
    return names;
}

// Committed fixtures, then those of QATML_PLAN_FIXTURES (folder, name) pairs.
inline std::vector<std::pair<std::string, std::string>> all_fixtures() {
    std::vector<std::pair<std::string, std::string>> all;
    for (const std::string& n : fixture_names(committed_fixture_folder())) all.emplace_back(committed_fixture_folder(), n);
    if (const char* extra = std::getenv("QATML_PLAN_FIXTURES"))
        for (const std::string& n : fixture_names(extra)) all.emplace_back(extra, n);
    return all;
}

// Calls f(fixture) for every fixture, loaded; a missing or malformed one fails the test.
template <typename F>
void for_each_fixture(F&& f) {
    const auto all = all_fixtures();
    ASSERT_GE(all.size(), 2u) << "tests/data/plans must hold the FmnistNet INT8 and W4A8 fixtures";
    for (const auto& [folder, name] : all) {
        SCOPED_TRACE(name);
        PlanFixture fx;
        std::string error;
        ASSERT_TRUE(load_fixture(folder, name, &fx, &error)) << error;
        f(fx);
    }
}

}  // namespace qatml_test
