#!/usr/bin/env bash
# The CUDA path on a GPU machine in one call, in under 8 minutes: builds src/Native with QATML_CUDA=ON for the
# GPU present, runs CTest (CPU and GPU tests, the plan fixtures included), the C++ GPU benchmark and the PyTorch
# benchmark in the same run, and writes a summary. The GPU machines have nvcc, CMake, GoogleTest, a GPU and
# PyTorch, but no .NET: the ResNet18 plan fixtures are written beforehand on a .NET machine
#   dotnet run --project benchmarks/QatMl.Benchmarks -c Release -- write-plan-fixtures artifacts/plan-fixtures --resnet
# and travel with the working tree (ignored folder; about 27 MB). Without them the ResNet18 figures are skipped.
# Usage: build/gpu-check.sh            (results in $OUT if set, else artifacts/gpu-check)
# Environment: QATML_PLAN_FIXTURES (default artifacts/plan-fixtures), JOBS (default: all cores).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-$root/artifacts/gpu-check}
mkdir -p "$out"
build=$root/artifacts/native/gpu
fixtures=${QATML_PLAN_FIXTURES:-$root/artifacts/plan-fixtures}
jobs=${JOBS:-$(nproc)}
summary=$out/summary.txt
t0=$(date +%s)
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
elapsed() { echo "$(( $(date +%s) - t0 )) s"; }

note "== GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
note "gpu: $(nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
note "nvcc: $(nvcc --version 2>&1 | tail -1)"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
[[ "$arch" =~ ^[0-9]+$ ]] || arch=90
ls "$fixtures"/resnet18_int8.qep > /dev/null 2>&1 && note "plan fixtures: $fixtures (ResNet18 present)" \
  || note "plan fixtures: $fixtures has no ResNet18 (write-plan-fixtures ... --resnet on a .NET machine); ResNet18 figures skipped"

# Build for this GPU only (sm_$arch); nvcc warnings are logged, not fatal, on a toolkit other than the one checked in CI.
note "== build (sm_$arch, $jobs jobs)"
timeout 240 cmake -S src/Native -B "$build" -DCMAKE_BUILD_TYPE=Release -DQATML_CUDA=ON -DQATML_BUILD_TESTS=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" -DQATML_CUDA_WERROR=OFF > "$out/build.txt" 2>&1 \
  && timeout 240 cmake --build "$build" --parallel "$jobs" >> "$out/build.txt" 2>&1
build_rc=$?
note "build exit $build_rc, $(grep -ci 'warning' "$out/build.txt") warning lines (build.txt), $(elapsed)"
if (( build_rc != 0 )); then
  tail -40 "$out/build.txt" | tee -a "$summary"
  exit 1
fi

note "== CTest (CPU and GPU tests)"
QATML_PLAN_FIXTURES=$fixtures timeout 120 ctest --test-dir "$build" --output-on-failure -j 8 > "$out/ctest.txt" 2>&1
note "ctest exit $?: $(grep -E 'tests passed|tests failed out of' "$out/ctest.txt" | tail -1), $(grep -c '(Skipped)' "$out/ctest.txt") skipped, $(elapsed)"
grep -A3 -E '\(Skipped\)|\(Failed\)|\*\*\*Failed' "$out/ctest.txt" | head -20 | tee -a "$summary"
# The wider ops (UNARY .. FLOAT_CONV) on the GPU against the CPU engine: random one-op plans and the engine tests' plan
# with every wider op (tests/Native/wide_op_cases.h, engine_plans.h wide_ops_plan).
note "wider ops on the GPU: $(grep -E 'CudaEngine\.WideOps' "$out/ctest.txt" | sed -E 's/.*(CudaEngine\.[A-Za-z]+) [. ]*\**([A-Za-z]+).*/\1 \2/' | tr '\n' ';')"

note "== benchmarks"
timeout 90 "$build/out/qatml_cuda_bench" --plans "$fixtures" > "$out/cuda_bench.txt" 2>&1
note "qatml_cuda_bench exit $?, $(elapsed)"
timeout 120 python3 benchmarks/Native/cuda_torch_bench.py > "$out/torch_bench.txt" 2>&1
note "cuda_torch_bench.py exit $?, $(elapsed)"

python3 - "$out/cuda_bench.txt" "$out/torch_bench.txt" <<'EOF' | tee -a "$summary"
import sys
def read(path):
    v = {}
    for line in open(path, errors="replace"):
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            try: v[parts[0]] = float(parts[1])
            except ValueError: pass
    return v
q, t = read(sys.argv[1]), read(sys.argv[2])
def ratio(a, b): return f"{a / b:.2f}x" if a and b else "n/a"
print("== figures (goals: GEMM >= torch._int_mm; ResNet18 INT8 at batch 256 >= 1.5x PyTorch bf16 channels_last)")
for shape in ("8192x8192x8192", "256x8192x8192"):
    ours, fused, theirs = q.get(f"gemm_{shape}_int32_tops"), q.get(f"gemm_{shape}_int8_requant_tops"), t.get(f"torch_int_mm_{shape}_tops")
    print(f"GEMM {shape}: qatml {ours} TOPS int32 out ({fused} with the int8 requantizing epilogue), "
          f"torch._int_mm {theirs} TOPS: {ratio(ours, theirs)}; spot check errors {q.get(f'gemm_{shape}_spot_check_errors')}")
print(f"torch bf16 matmul 8192^3: {t.get('torch_bf16_mm_8192x8192x8192_tflops')} TFLOPS")
for name in ("resnet18_int8", "resnet18_w4a8", "fmnistnet_int8"):
    if f"{name}_bit_exact_with_cpu" not in q:
        continue
    print(f"{name}: bit-exact with the CPU engine on the fixture: {'yes' if q[f'{name}_bit_exact_with_cpu'] == 1 else 'NO'}")
    for b in (1, 32, 256):
        dev, host = q.get(f"{name}_b{b}_device_images_per_s"), q.get(f"{name}_b{b}_host_images_per_s")
        line = f"  batch {b}: {dev} images/s device-resident, {host} from host memory"
        if name.startswith("resnet18"):
            torch_v = t.get(f"torch_resnet18_bf16_cl_b{b}_images_per_s")
            line += f"; PyTorch bf16 channels_last {torch_v}: {ratio(dev, torch_v)}"
        print(line)
EOF
note "== done in $(elapsed); logs in $out"
