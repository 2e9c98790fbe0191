#!/usr/bin/env bash
# Runs every test from a clean clone: builds the solution (which builds src/Native through CMake and checks the
# C# style of .editorconfig), the native GoogleTest suite (CTest, then again under ASan+UBSan), the native code
# format (build/check-format.sh), and the xunit suite.
# Usage: build/test.sh [--no-sanitize]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
sanitize=1
[[ "${1:-}" == "--no-sanitize" ]] && sanitize=0
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

echo "== build (Release; native library through CMake)"
dotnet build QatMl.sln -c Release -nologo -clp:ErrorsOnly

echo "== native tests (CTest)"
# The library build above configures the library alone; the GoogleTest suite joins the same build folder here.
cmake -S src/Native -B artifacts/native/release -DQATML_BUILD_TESTS=ON > /dev/null
cmake --build artifacts/native/release --parallel 2
ctest --test-dir artifacts/native/release --output-on-failure 2>&1 | tee "$log/ctest.txt"

if (( sanitize )); then
  echo "== native tests under AddressSanitizer + UndefinedBehaviorSanitizer (CTest)"
  cmake --preset sanitize -S src/Native > /dev/null
  cmake --build artifacts/native/sanitize --parallel 2
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir artifacts/native/sanitize --output-on-failure 2>&1 | tee "$log/ctest-sanitize.txt"
fi

echo "== native code format (clang-format, src/Native/.clang-format)"
build/check-format.sh 2>&1 | tee "$log/format.txt" || true

echo "== managed tests (xunit)"
dotnet test QatMl.sln -c Release --no-build -nologo 2>&1 | tee "$log/xunit.txt"

# The native xunit tests again as a Zen 4 / Cascade Lake runs them (AVX-512 VNNI without AVX-VNNI); on a CPU
# with both, the mask removes AVX-VNNI (CTest's zen4: entries do the same for the native suite).
echo "== managed native tests under QATML_CPU_FEATURE_MASK=~0x40 (Zen 4 feature set)"
QATML_CPU_FEATURE_MASK='~0x40' dotnet test tests/Microsoft.ML.Quantization.Tests -c Release --no-build -nologo \
  --filter "FullyQualifiedName~Native" 2>&1 | tee "$log/xunit-zen4.txt"

# One closing line over all suites.
native=$(cat "$log"/ctest*.txt | sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1 \2/p' | awk '{f+=$1; t+=$2} END {print t-f, f}')
managed=$(cat "$log"/xunit*.txt | sed -n 's/.*Failed: *\([0-9]*\), Passed: *\([0-9]*\).*/\2 \1/p' | awk '{p+=$1; f+=$2} END {print p+0, f+0}')
format=$(sed -n 's/^format (clang-format): \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log/format.txt")
read -r np nf <<< "$native"
read -r mp mf <<< "$managed"
read -r fp ff <<< "${format:-0 1}"
echo "native (ctest): $np passed, $nf failed; managed (xunit): $mp passed, $mf failed; format (clang-format): $fp passed, $ff failed"
echo "total: $((np + mp + fp)) passed, $((nf + mf + ff)) failed"
(( nf + mf + ff == 0 ))
