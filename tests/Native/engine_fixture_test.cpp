// The engine on plans of real models written by the C# side (plan_fixtures.h): the CPU engine of this build must
// reproduce the outputs stored with each plan bit for bit, in one batch, row by row and split over threads.
#include "plan_fixtures.h"
#include "qatml/qatml.h"

#include <gtest/gtest.h>

namespace {

using qatml_test::PlanFixture;

std::vector<std::vector<float>> run(const qatml_engine* e, const qatml_context* ctx, const PlanFixture& fx, int64_t row0, int64_t rows) {
    std::vector<const float*> in;
    for (size_t i = 0; i < fx.inputs.size(); ++i) in.push_back(fx.inputs[i].data() + row0 * fx.input_sizes[i]);
    std::vector<std::vector<float>> out;
    std::vector<float*> outp;
    for (int64_t size : fx.output_sizes) out.emplace_back(static_cast<size_t>(size * rows), -1.0f);
    for (auto& o : out) outp.push_back(o.data());
    EXPECT_EQ(qatml_engine_run(e, ctx, rows, in.data(), static_cast<int32_t>(in.size()), outp.data(), static_cast<int32_t>(outp.size())),
              QATML_OK)
        << qatml_last_error();
    return out;
}

TEST(EngineFixtures, CpuEngineReproducesTheStoredOutputs) {
    qatml_device cpu{QATML_DEVICE_CPU, 0};
    qatml_context* threads = nullptr;
    ASSERT_EQ(qatml_context_create(&cpu, 3, &threads), QATML_OK);
    qatml_test::for_each_fixture([&](const PlanFixture& fx) {
        qatml_engine* e = nullptr;
        ASSERT_EQ(qatml_engine_create(nullptr, fx.plan.data(), static_cast<int64_t>(fx.plan.size()), &e), QATML_OK) << qatml_last_error();
        int64_t elems = 0;
        ASSERT_EQ(qatml_engine_io_row_size(e, 0, 0, &elems), QATML_OK);
        EXPECT_EQ(elems, fx.input_sizes[0]);
        EXPECT_EQ(run(e, nullptr, fx, 0, fx.rows), fx.outputs) << "one batch";
        EXPECT_EQ(run(e, threads, fx, 0, fx.rows), fx.outputs) << "three threads";
        for (int64_t r = 0; r < fx.rows; ++r) {
            const auto one = run(e, nullptr, fx, r, 1);
            for (size_t o = 0; o < one.size(); ++o)
                EXPECT_TRUE(std::equal(one[o].begin(), one[o].end(), fx.outputs[o].begin() + r * fx.output_sizes[o])) << "row " << r;
        }
        qatml_engine_destroy(e);
    });
    qatml_context_destroy(threads);
}

}  // namespace
