// Child process of dispatch_test.cpp: the CPU queries as a fresh process sees them under its environment
// (QATML_CPU_FEATURE_MASK is read once per process), and one GEMM on the active path against the scalar
// path. One line per query: "<query> <value>" or "<query> error <message>".
#include "qatml/qatml.h"

#include <cstdio>
#include <cstring>
#include <vector>

namespace {

std::vector<int32_t> gemm(int32_t cap, int32_t* packed_isa) {
    const int64_t m = 3, k = 37, n = 21;
    std::vector<uint8_t> a(m * k);
    std::vector<int8_t> b(k * n);
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i * 37 + 11);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<int8_t>(i * 53 + 7);
    qatml_cpu_set_max_isa(cap);
    qatml_packed_weights* pw = nullptr;
    std::vector<int32_t> c(m * n, 0);
    qatml_epilogue ep;
    std::memset(&ep, 0, sizeof ep);
    ep.out_type = QATML_TYPE_INT32;
    if (qatml_gemm_pack_b(nullptr, b.data(), QATML_TYPE_INT8, k, n, 0, nullptr, &pw) != QATML_OK ||
        qatml_packed_weights_info(pw, packed_isa, nullptr, nullptr, nullptr) != QATML_OK ||
        qatml_gemm(nullptr, m, a.data(), QATML_TYPE_UINT8, k, 5, pw, &ep, c.data(), n) != QATML_OK)
        c.clear();
    qatml_packed_weights_destroy(pw);
    qatml_cpu_set_max_isa(-1);
    return c;
}

}  // namespace

int main() {
    uint32_t bits = 0;
    int32_t isa = -1;
    if (qatml_cpu_features(&bits) == QATML_OK) std::printf("features 0x%x\n", bits);
    else std::printf("features error %s\n", qatml_last_error());
    if (qatml_cpu_get_feature_mask(&bits) == QATML_OK) std::printf("mask 0x%x\n", bits);
    else std::printf("mask error %s\n", qatml_last_error());
    if (qatml_cpu_detected_isa(&isa) == QATML_OK) std::printf("detected %s\n", qatml_isa_name(isa));
    else std::printf("detected error %s\n", qatml_last_error());
    if (qatml_cpu_active_isa(&isa) == QATML_OK) std::printf("active %s\n", qatml_isa_name(isa));
    else std::printf("active error %s\n", qatml_last_error());
    int32_t packed = -1, reference_isa = -1;
    const std::vector<int32_t> fast = gemm(-1, &packed), reference = gemm(QATML_ISA_SCALAR, &reference_isa);
    if (fast.empty()) std::printf("gemm error %s\n", qatml_last_error());
    else std::printf("gemm %s %s\n", qatml_isa_name(packed), fast == reference ? "equal" : "differs");
    return 0;
}
