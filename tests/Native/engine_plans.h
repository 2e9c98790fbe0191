// Engine plans for the tests and the plan-loader fuzzer: a little-endian plan
// writer and a small network that uses most op kinds (qatml_engine.h describes
// the format).
#pragma once

#include "qatml/qatml.h"

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <random>
#include <vector>

namespace qatml_test {

inline unsigned seed() {
  return std::getenv("QATML_TEST_SEED")
             ? unsigned(
                   std::strtoul(std::getenv("QATML_TEST_SEED"), nullptr, 10))
             : 777u;
}

struct Plan {
  std::vector<uint8_t> b;
  template <typename T> void put(T v) {
    const auto *p = reinterpret_cast<const uint8_t *>(&v);
    b.insert(b.end(), p, p + sizeof(T));
  }
  void q(float s, int32_t z) {
    put(s);
    put(z);
  }
  void i64s(std::initializer_list<int64_t> v) {
    for (int64_t x : v)
      put(x);
  }
};

// Builds the body of one op payload, then frames it with kind and size.
struct OpBuilder {
  Plan body;
  void finish(Plan &plan, uint32_t kind) {
    plan.put(kind);
    plan.put(static_cast<uint32_t>(body.b.size()));
    plan.b.insert(plan.b.end(), body.b.begin(), body.b.end());
  }
};

// A plan assembled tensor by tensor and op by op (the header, tensor table,
// inputs and outputs written last).
struct PlanWriter {
  struct TensorDesc {
    uint32_t type;
    std::vector<int64_t> dims;
  };
  std::vector<TensorDesc> tensors;
  std::vector<uint32_t> inputs, outputs;
  Plan ops;
  uint32_t op_count = 0;

  uint32_t tensor(uint32_t type, std::vector<int64_t> dims) {
    tensors.push_back(TensorDesc{type, std::move(dims)});
    return static_cast<uint32_t>(tensors.size() - 1);
  }
  void op(uint32_t kind, OpBuilder &o) {
    o.finish(ops, kind);
    ++op_count;
  }
  std::vector<uint8_t> bytes() const {
    Plan p;
    p.b.insert(p.b.end(), {'Q', 'E', 'P', '1'});
    for (uint32_t v : {1u, static_cast<uint32_t>(tensors.size()), op_count,
                       static_cast<uint32_t>(inputs.size()),
                       static_cast<uint32_t>(outputs.size())})
      p.put(v);
    for (const TensorDesc &t : tensors) {
      p.put(t.type);
      p.put(static_cast<uint32_t>(t.dims.size()));
      for (int64_t d : t.dims)
        p.put(d);
    }
    for (uint32_t i : inputs)
      p.put(i);
    for (uint32_t o : outputs)
      p.put(o);
    p.b.insert(p.b.end(), ops.b.begin(), ops.b.end());
    return p.b;
  }
};

// A CONV payload: int8 weights [m, cpg, kh, kw], per-channel scales, int32
// bias; pads top, left, bottom, right.
inline void conv_op(PlanWriter &w, uint32_t x, uint32_t y, float xs, int32_t xz,
                    float ys, int32_t yz, int64_t m, int64_t cpg, int64_t kh,
                    int64_t kw, int64_t stride,
                    std::initializer_list<int64_t> pads,
                    const std::vector<int8_t> &weights,
                    const std::vector<float> &scales,
                    const std::vector<int32_t> &bias, int64_t groups = 1) {
  OpBuilder o;
  o.body.put(x);
  o.body.put(y);
  o.body.q(xs, xz);
  o.body.q(ys, yz);
  o.body.i64s({m, cpg, kh, kw, groups, stride, stride});
  for (int64_t p : pads)
    o.body.put(p);
  o.body.i64s({1, 1});
  o.body.put<uint32_t>(QATML_TYPE_INT8);
  o.body.put<uint32_t>(0);
  o.body.put<uint32_t>(1);
  for (float s : scales)
    o.body.put(s);
  for (int32_t b : bias)
    o.body.put(b);
  for (int8_t v : weights)
    o.body.put(v);
  w.op(QATML_ENGINE_OP_CONV, o);
}

// The network: float [2, 6, 6] -> quantize u8 -> conv 3x3 pad 1 (2 -> 4, int8
// weights, bias) -> u8
// -> maxpool 2x2 -> [4, 3, 3] -> LUT (identity + 1 saturating) -> add with
// itself -> gemm (36 -> 5, int4 weights, per-channel) -> dequantize.
struct EngineNet {
  std::vector<int8_t> conv_w;
  std::vector<int32_t> conv_b;
  std::vector<float> conv_s;
  std::vector<int8_t> fc_w;   // [5, 36] values in -8..7
  std::vector<uint8_t> fc_w4; // packed
  std::vector<float> fc_s;
  std::vector<int32_t> fc_b;
  uint8_t lut[256];
  EngineNet() {
    std::mt19937 r(seed());
    std::uniform_int_distribution<int> w8(-127, 127), w4(-8, 7),
        bias(-500, 500);
    for (int i = 0; i < 4 * 2 * 9; ++i)
      conv_w.push_back(static_cast<int8_t>(w8(r)));
    for (int i = 0; i < 4; ++i)
      conv_b.push_back(bias(r)), conv_s.push_back(0.01f + 0.003f * i);
    for (int i = 0; i < 5 * 36; ++i)
      fc_w.push_back(static_cast<int8_t>(w4(r)));
    fc_w4.resize(90);
    qatml_int4_pack(fc_w.data(), 180, 1, fc_w4.data());
    for (int i = 0; i < 5; ++i)
      fc_s.push_back(0.05f + 0.01f * i), fc_b.push_back(bias(r));
    for (int i = 0; i < 256; ++i)
      lut[i] = static_cast<uint8_t>(i == 255 ? 255 : i + 1);
  }
  // second_reader: a DEQUANTIZE also reads the convolution's output (which
  // keeps the engine from fusing the convolution with its max pool).
  std::vector<uint8_t> plan(bool second_reader = true) const {
    Plan p;
    p.b.insert(p.b.end(), {'Q', 'E', 'P', '1'});
    p.put<uint32_t>(1);
    p.put<uint32_t>(second_reader ? 9 : 8); // tensors
    p.put<uint32_t>(second_reader ? 8 : 7); // ops
    p.put<uint32_t>(1);
    p.put<uint32_t>(1);
    auto tensor = [&](uint32_t type, std::initializer_list<int64_t> dims) {
      p.put(type);
      p.put(static_cast<uint32_t>(dims.size()));
      for (int64_t d : dims)
        p.put(d);
    };
    tensor(QATML_TYPE_FLOAT32, {2, 6, 6}); // 0 input
    tensor(QATML_TYPE_UINT8, {2, 6, 6});   // 1
    tensor(QATML_TYPE_UINT8, {4, 6, 6});   // 2 conv
    tensor(QATML_TYPE_UINT8, {4, 3, 3});   // 3 pool
    tensor(QATML_TYPE_UINT8, {4, 3, 3});   // 4 lut
    tensor(QATML_TYPE_UINT8, {36});        // 5 add
    tensor(QATML_TYPE_INT8, {5});          // 6 gemm
    tensor(QATML_TYPE_FLOAT32, {5});       // 7 output
    if (second_reader)
      tensor(QATML_TYPE_FLOAT32, {4, 6, 6}); // 8 read by nobody
    p.put<uint32_t>(0);
    p.put<uint32_t>(7);
    {
      OpBuilder o;
      o.body.put<uint32_t>(0);
      o.body.put<uint32_t>(1);
      o.body.q(0.02f, 128);
      o.finish(p, QATML_ENGINE_OP_QUANTIZE);
    }
    {
      OpBuilder o;
      o.body.put<uint32_t>(1);
      o.body.put<uint32_t>(2);
      o.body.q(0.02f, 128);
      o.body.q(0.05f, 0);
      o.body.i64s({4, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1});
      o.body.put<uint32_t>(QATML_TYPE_INT8);
      o.body.put<uint32_t>(0);
      o.body.put<uint32_t>(1);
      for (float s : conv_s)
        o.body.put(s);
      for (int32_t v : conv_b)
        o.body.put(v);
      for (int8_t v : conv_w)
        o.body.put(v);
      o.finish(p, QATML_ENGINE_OP_CONV);
    }
    {
      OpBuilder o;
      o.body.put<uint32_t>(2);
      o.body.put<uint32_t>(3);
      o.body.q(0.05f, 0);
      o.body.q(0.05f, 0);
      o.body.i64s({2, 2, 2, 2, 0, 0, 0, 0, 1, 1});
      o.body.put<uint32_t>(0);
      o.finish(p, QATML_ENGINE_OP_MAXPOOL);
    }
    {
      OpBuilder o;
      o.body.put<uint32_t>(3);
      o.body.put<uint32_t>(4);
      for (uint8_t v : lut)
        o.body.put(v);
      o.finish(p, QATML_ENGINE_OP_LUT);
    }
    {
      OpBuilder o;
      o.body.put<uint32_t>(4);
      o.body.put<uint32_t>(4);
      o.body.put<uint32_t>(5);
      o.body.q(0.05f, 0);
      o.body.q(0.05f, 0);
      o.body.q(0.09f, 3);
      o.finish(p, QATML_ENGINE_OP_ADD);
    }
    {
      OpBuilder o;
      o.body.put<uint32_t>(5);
      o.body.put<uint32_t>(6);
      o.body.q(0.09f, 3);
      o.body.q(0.3f, -5);
      o.body.i64s({36, 5});
      o.body.put<uint32_t>(1);
      o.body.put<uint32_t>(QATML_TYPE_INT4);
      o.body.put<uint32_t>(0);
      o.body.put<uint32_t>(1);
      o.body.put<uint32_t>(5);
      for (float s : fc_s)
        o.body.put(s);
      for (int32_t v : fc_b)
        o.body.put(v);
      for (uint8_t v : fc_w4)
        o.body.put(v);
      o.finish(p, QATML_ENGINE_OP_GEMM);
    }
    {
      OpBuilder o;
      o.body.put<uint32_t>(6);
      o.body.put<uint32_t>(7);
      o.body.q(0.3f, -5);
      o.finish(p, QATML_ENGINE_OP_DEQUANTIZE);
    }
    if (second_reader) { // a second reader of tensor 2 keeps it alive:
                         // exercises the planner
      OpBuilder o;
      o.body.put<uint32_t>(2);
      o.body.put<uint32_t>(8);
      o.body.q(0.05f, 0);
      o.finish(p, QATML_ENGINE_OP_DEQUANTIZE);
    }
    return p.b;
  }
};

// A second network: float [3, 5, 5] -> quantize s8 -> average pool 3x3 stride 2
// pad 1 (count_include_pad)
// -> [3, 3, 3] -> global average pool -> [3] -> dequantize. `global_y_scale`:
// the global pool's output scale; `avg_pad`: the average pool's pads (the
// tensors follow: [3, OH, OW]).
inline std::vector<uint8_t> pooling_plan(float global_y_scale = 0.05f,
                                         int64_t avg_pad = 1) {
  const int64_t pooled = (5 + 2 * avg_pad - 3) / 2 + 1;
  Plan p;
  p.b.insert(p.b.end(), {'Q', 'E', 'P', '1'});
  for (uint32_t v : {1u, 5u, 4u, 1u, 1u})
    p.put(v); // version, tensors, ops, inputs, outputs
  auto tensor = [&](uint32_t type, std::initializer_list<int64_t> dims) {
    p.put(type);
    p.put(static_cast<uint32_t>(dims.size()));
    for (int64_t d : dims)
      p.put(d);
  };
  tensor(QATML_TYPE_FLOAT32, {3, 5, 5});
  tensor(QATML_TYPE_INT8, {3, 5, 5});
  tensor(QATML_TYPE_INT8, {3, pooled, pooled});
  tensor(QATML_TYPE_INT8, {3});
  tensor(QATML_TYPE_FLOAT32, {3});
  p.put<uint32_t>(0);
  p.put<uint32_t>(4);
  OpBuilder q, avg, global, dq;
  q.body.put<uint32_t>(0);
  q.body.put<uint32_t>(1);
  q.body.q(0.1f, -3);
  q.finish(p, QATML_ENGINE_OP_QUANTIZE);
  avg.body.put<uint32_t>(1);
  avg.body.put<uint32_t>(2);
  avg.body.q(0.1f, -3);
  avg.body.q(0.07f, 2);
  avg.body.i64s({3, 3, 2, 2, avg_pad, avg_pad, avg_pad, avg_pad, 1, 1});
  avg.body.put<uint32_t>(1);
  avg.finish(p, QATML_ENGINE_OP_AVGPOOL);
  global.body.put<uint32_t>(2);
  global.body.put<uint32_t>(3);
  global.body.q(0.07f, 2);
  global.body.q(global_y_scale, 0);
  global.finish(p, QATML_ENGINE_OP_GLOBAL_AVGPOOL);
  dq.body.put<uint32_t>(3);
  dq.body.put<uint32_t>(4);
  dq.body.q(global_y_scale, 0);
  dq.finish(p, QATML_ENGINE_OP_DEQUANTIZE);
  return p.b;
}

} // namespace qatml_test
