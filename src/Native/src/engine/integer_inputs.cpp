// The CPU steps of the ops that take integer inputs (GATHER, CAST) and the float MatMul with constant weights
// (FLOAT_GEMM), prepared from the validated plan op.
#include "engine/cpu_program.h"

using namespace qatml::kernels;
using namespace qatml::plan;

namespace qatml {
namespace engine {

void prepare_integer_input_op(const qatml_engine& e, const Op& op, Step& s) {
    const Tensor& y = e.tensors[op.y];
    switch (op.kind) {
        case QATML_ENGINE_OP_GATHER: {
            GatherPlan& g = s.gather;
            g.table = op.data.data();
            g.rows = op.n;
            g.count = op.k;
            g.row_bytes = (y.elems / op.k) * elem_size(y.dtype);
            g.fixed = op.func ? op.params.data() : nullptr;
            g.index_type = op.func ? QATML_TYPE_INT64 : e.tensors[op.x].dtype;
            break;
        }
        case QATML_ENGINE_OP_CAST:
            s.type = e.tensors[op.x].dtype;
            s.zp = y.dtype;  // the output type
            s.elements = y.elems;
            break;
        case QATML_ENGINE_OP_FLOAT_GEMM: {
            FloatGemmPlan& f = s.float_gemm;
            f.k = op.k;
            f.n = op.n;
            f.weights = reinterpret_cast<const float*>(op.data.data());
            f.bias = op.count_include_pad ? f.weights + op.k * op.n : nullptr;
            s.vectors = e.tensors[op.x].elems / op.k;
            float_gemm_prepare(f, e.isa);
            break;
        }
        default: break;
    }
}

}  // namespace engine
}  // namespace qatml
