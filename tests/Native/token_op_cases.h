// Random plans of the ops that models with token inputs run (GATHER of tensor and constant indices, CAST, FLOAT_GEMM,
// GEMMs over vectors with 8-bit and float outputs) for the CUDA tests: the CPU suite runs the device element functions
// (src/cuda/wide_ops.h) on the host against the CPU engine; the GPU suite runs the same plans through the device runner.
#pragma once

#include "engine_plans.h"
#include "qatml/qatml.h"
#include "wide_op_cases.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace qatml_test {

// A plan of the ops models with token inputs run, random shapes: int32 / int64 ids [count] gather a table into
// y [count, a, b] (8-bit: channels-last on the device when count > 1 and a * b > 1) and, at constant ids, into yc;
// the ids are cast to the other integer type and then to float; a FLOAT_GEMM [v, K] x [K, N] + bias.
// An 8-bit GEMM over vectors: float [g0, g1, gk] quantized to uint8 (channels-last on the device when g0 > 1 and
// g1 * gk > 1), a GEMM to uint8 [g0, g1, gn] and one to float (MatMulIntegerToFloat).
// Outputs: y and yc (8-bit ones dequantized with kIoScale), the float ids, the FLOAT_GEMM, the two GEMMs.
struct TokenOpsCase {
    int64_t rows = 0, count = 0, a = 0, b = 0, table_rows = 0, v = 0, k = 0, n = 0, g0 = 0, g1 = 0, gk = 0, gn = 0;
    uint32_t index_type = 0, y_type = 0;
    int32_t zp = 0;
    std::vector<uint8_t> table, table2, ids;
    std::vector<int64_t> fixed;
    std::vector<float> fx, fw, fb, gx;
    std::vector<int8_t> gw;
    PlanWriter w;

    TokenOpsCase(std::mt19937& r, int round) {
        auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(r); };
        rows = pick(1, 3), count = pick(1, 5), a = pick(1, 3), b = pick(1, 4), table_rows = pick(2, 10);
        v = pick(1, 6), k = pick(1, 40), n = pick(1, 20);
        g0 = pick(1, 3), g1 = pick(1, 4), gk = pick(1, 40), gn = pick(1, 24);
        index_type = round % 2 ? QATML_TYPE_INT32 : QATML_TYPE_INT64;
        static const uint32_t types[3] = {QATML_TYPE_UINT8, QATML_TYPE_INT8, QATML_TYPE_FLOAT32};
        y_type = types[round % 3];
        zp = y_type == QATML_TYPE_INT8 ? -3 : 117;
        const int64_t esz = y_type == QATML_TYPE_FLOAT32 ? 4 : 1, row_elems = a * b;
        auto random_table = [&]() {
            std::vector<uint8_t> t(static_cast<size_t>(table_rows * row_elems * esz));
            if (esz == 1) {
                for (auto& x : t) x = static_cast<uint8_t>(pick(0, 255));
            } else {
                for (int64_t i = 0; i < table_rows * row_elems; ++i) {
                    const float f = static_cast<float>(pick(-400, 400)) * 0.01f;
                    std::memcpy(&t[static_cast<size_t>(i * 4)], &f, 4);
                }
            }
            return t;
        };
        table = random_table();
        table2 = random_table();
        for (int64_t i = 0; i < count; ++i) fixed.push_back(pick(-table_rows, table_rows - 1));
        ids.resize(static_cast<size_t>(rows * count * (index_type == QATML_TYPE_INT32 ? 4 : 8)));
        for (int64_t i = 0; i < rows * count; ++i) set_id(i, pick(-table_rows, table_rows - 1));
        std::uniform_real_distribution<float> f(-2.0f, 2.0f);
        fx.resize(static_cast<size_t>(rows * v * k));
        fw.resize(static_cast<size_t>(k * n));
        fb.resize(static_cast<size_t>(n));
        gx.resize(static_cast<size_t>(rows * g0 * g1 * gk));
        for (auto* vec : {&fx, &fw, &fb, &gx})
            for (float& x : *vec) x = f(r);
        gw.resize(static_cast<size_t>(gk * gn));
        for (int8_t& x : gw) x = static_cast<int8_t>(pick(-127, 127));

        const uint32_t other = index_type == QATML_TYPE_INT32 ? QATML_TYPE_INT64 : QATML_TYPE_INT32;
        const uint32_t tid = w.tensor(index_type, {count}), tx = w.tensor(QATML_TYPE_FLOAT32, {v, k});
        const uint32_t ty = w.tensor(y_type, {count, a, b}), tyc = w.tensor(y_type, {count, a, b});
        const uint32_t tc = w.tensor(other, {count}), tf = w.tensor(QATML_TYPE_FLOAT32, {count}), tg = w.tensor(QATML_TYPE_FLOAT32, {v, n});
        const uint32_t tgx = w.tensor(QATML_TYPE_FLOAT32, {g0, g1, gk}), tq = w.tensor(QATML_TYPE_UINT8, {g0, g1, gk});
        const uint32_t tg8 = w.tensor(QATML_TYPE_UINT8, {g0, g1, gn}), tgf = w.tensor(QATML_TYPE_FLOAT32, {g0, g1, gn});
        const uint32_t tg8_out = w.tensor(QATML_TYPE_FLOAT32, {g0, g1, gn});
        w.inputs = {tid, tx, tgx};
        gather_op(w, tid, ty, table_rows, row_elems, table);
        gather_op(w, 0, tyc, table_rows, row_elems, table2, fixed);
        cast_op(w, tid, tc);
        cast_op(w, tc, tf);
        float_gemm_op(w, tx, tg, k, n, fw, fb);
        uint32_t y_out = ty, yc_out = tyc;
        if (y_type != QATML_TYPE_FLOAT32) {
            y_out = w.tensor(QATML_TYPE_FLOAT32, {count, a, b});
            yc_out = w.tensor(QATML_TYPE_FLOAT32, {count, a, b});
            quantize_op(w, ty, y_out, kIoScale, zp, true);
            quantize_op(w, tyc, yc_out, kIoScale, zp, true);
        }
        quantize_op(w, tgx, tq, 0.02f, 120);
        gemm_op(w, tq, tg8, 0.02f, 120, 0.05f, 110, gk, gn, 0.01f, gw);
        gemm_op(w, tq, tgf, 0.02f, 120, 1.0f, 0, gk, gn, 0.01f, gw);
        quantize_op(w, tg8, tg8_out, 0.05f, 110, true);
        w.outputs = {y_out, yc_out, tf, tg, tg8_out, tgf};
    }
    void set_id(int64_t i, int64_t value) {
        if (index_type == QATML_TYPE_INT32) {
            const int32_t x = static_cast<int32_t>(value);
            std::memcpy(&ids[static_cast<size_t>(i * 4)], &x, 4);
        } else {
            std::memcpy(&ids[static_cast<size_t>(i * 8)], &value, 8);
        }
    }
    std::vector<int64_t> out_sizes() const { return {count * a * b, count * a * b, count, v * n, g0 * g1 * gn, g0 * g1 * gn}; }

    // The outputs of `e` (loaded from plan()) run on ctx (NULL: the CPU); *error: empty, or why the run failed.
    std::vector<std::vector<float>> run(const qatml_engine* e, const qatml_context* ctx, std::string* error) const {
        const float* in[3] = {reinterpret_cast<const float*>(ids.data()), fx.data(), gx.data()};
        std::vector<std::vector<float>> out;
        std::vector<float*> outp;
        for (int64_t size : out_sizes()) out.emplace_back(static_cast<size_t>(size * rows), -7.0f);
        for (auto& o : out) outp.push_back(o.data());
        error->clear();
        if (qatml_engine_run(e, ctx, rows, in, 3, outp.data(), static_cast<int32_t>(outp.size())) != QATML_OK) *error = qatml_last_error();
        return out;
    }
    // The CPU engine's outputs.
    std::vector<std::vector<float>> run_cpu(std::string* error) const {
        const std::vector<uint8_t> p = w.bytes();
        qatml_engine* e = nullptr;
        EXPECT_EQ(qatml_engine_create(nullptr, p.data(), static_cast<int64_t>(p.size()), &e), QATML_OK) << qatml_last_error();
        if (!e) return {};
        auto out = run(e, nullptr, error);
        qatml_engine_destroy(e);
        return out;
    }

};

}  // namespace qatml_test
