#!/usr/bin/env bash
# Fuzzes the native engine's plan loader (tests/Native/fuzz_plan_loader.cpp) with libFuzzer for N minutes
# (default 10) under AddressSanitizer + UndefinedBehaviorSanitizer, then prints the executions and findings.
# Not part of CI. Needs clang and its libFuzzer runtime (Debian 12: apt-get install clang libclang-rt-14-dev).
# The corpus persists in artifacts/native/fuzz/corpus between runs; crashing inputs land in
# artifacts/native/fuzz/findings (reproduce one: artifacts/native/fuzz/out/qatml_plan_fuzzer FILE).
# Usage: build/fuzz-native.sh [minutes]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
minutes=${1:-10}
[[ "$minutes" =~ ^[0-9]+$ && "$minutes" -gt 0 ]] || { echo "usage: build/fuzz-native.sh [minutes > 0]" >&2; exit 2; }

cxx=""
for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
  if command -v "$c" > /dev/null; then cxx=$(command -v "$c"); break; fi
done
[[ -n "$cxx" ]] || { echo "fuzz-native: clang++ not found (Debian: apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

dir=artifacts/native/fuzz
echo "== build ($cxx, libFuzzer + ASan + UBSan) in $dir"
cmake -S src/Native -B "$dir" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQATML_CUDA=OFF \
  -DQATML_SANITIZE=ON -DQATML_BUILD_FUZZERS=ON -DQATML_BUILD_TESTS=OFF > "$dir.configure.log" 2>&1 \
  || { cat "$dir.configure.log" >&2; exit 1; }
cmake --build "$dir" --target qatml_plan_fuzzer --parallel 2
fuzzer=$dir/out/qatml_plan_fuzzer
mkdir -p "$dir/corpus" "$dir/findings"
"$fuzzer" -qatml_write_seeds="$dir/corpus"

echo "== fuzz for $minutes minute(s)"
log=$dir/fuzz.log
before=$(find "$dir/findings" -type f | wc -l)
set +e
ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$fuzzer" "$dir/corpus" -max_total_time=$((minutes * 60)) -max_len=16384 -timeout=20 -rss_limit_mb=4096 \
  -artifact_prefix="$dir/findings/" -print_final_stats=1 > "$log" 2>&1
rc=$?
set -e
after=$(find "$dir/findings" -type f | wc -l)
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
echo "executions: ${execs:-?} (${rate:-?}/s); ${cov:-coverage ?}; corpus $(find "$dir/corpus" -type f | wc -l) inputs"
echo "findings: $((after - before)) new ($after in $dir/findings); libFuzzer exit $rc; log $log"
if (( after > before || rc != 0 )); then
  grep -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|==[0-9]+==|Test unit written" "$log" | head -20
  exit 1
fi
