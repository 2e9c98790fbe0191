#!/usr/bin/env bash
# Runs every test from a clean clone: builds the solution (which builds src/Native through CMake and checks the
# C# style of .editorconfig), the native GoogleTest suite (CTest, then again under ASan+UBSan), the native code
# format (build/check-format.sh), the xunit suite, the consumer check (build/consumer-check.sh: the package in
# brand-new apps; QatMl restores from a local folder, the other packages come from this machine's NuGet cache) and the
# tool check (build/tool-check.sh: the qatml tool installed from that folder, its workflow and generated project).
# Usage: build/test.sh [--no-sanitize] [--no-consumer]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
sanitize=1 consumer=1
for arg in "$@"; do
  case "$arg" in
    --no-sanitize) sanitize=0 ;;
    --no-consumer) consumer=0 ;;
    *) echo "unknown option $arg"; exit 2 ;;
  esac
done
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

echo "== build (Release; native library through CMake)"
# The library first: it builds src/Native, whose ELF tool the other projects' TorchSharp step runs (a fresh clone has none).
dotnet build src/Microsoft.ML.Quantization -c Release -nologo -clp:ErrorsOnly
dotnet build QatMl.sln -c Release -nologo -clp:ErrorsOnly

echo "== native tests (CTest)"
# The library build above configures the library alone; the GoogleTest suite joins the same build folder here.
cmake -S src/Native -B artifacts/native/release -DQATML_BUILD_TESTS=ON > /dev/null
cmake --build artifacts/native/release --parallel 2
ctest --test-dir artifacts/native/release --output-on-failure 2>&1 | tee "$log/ctest.txt" || true

if (( sanitize )); then
  echo "== native tests under AddressSanitizer + UndefinedBehaviorSanitizer (CTest)"
  cmake --preset sanitize -S src/Native > /dev/null
  cmake --build artifacts/native/sanitize --parallel 2
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir artifacts/native/sanitize --output-on-failure 2>&1 | tee "$log/ctest-sanitize.txt" || true
fi

echo "== native code format (clang-format, src/Native/.clang-format)"
build/check-format.sh 2>&1 | tee "$log/format.txt" || true

echo "== managed tests (xunit)"
dotnet test QatMl.sln -c Release --no-build -nologo 2>&1 | tee "$log/xunit.txt" || true

# The native xunit tests again as a Zen 4 / Cascade Lake runs them (AVX-512 VNNI without AVX-VNNI); on a CPU
# with both, the mask removes AVX-VNNI (CTest's zen4: entries do the same for the native suite).
echo "== managed native tests under QATML_CPU_FEATURE_MASK=~0x40 (Zen 4 feature set)"
QATML_CPU_FEATURE_MASK='~0x40' dotnet test tests/Microsoft.ML.Quantization.Tests -c Release --no-build -nologo \
  --filter "FullyQualifiedName~Native" 2>&1 | tee "$log/xunit-zen4.txt" || true

if (( consumer )); then
  echo "== consumer check (the package in brand-new apps)"
  build/consumer-check.sh 2>&1 | tee "$log/consumer.txt" || true
  echo "== tool check (the qatml tool installed from a local feed, its workflow and generated project)"
  build/tool-check.sh 2>&1 | tee "$log/tool.txt" || true
fi

# One closing line over all suites (a failing suite does not stop the others; the exit code says).
native=$(cat "$log"/ctest*.txt | sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1 \2/p' | awk '{f+=$1; t+=$2} END {print t-f, f}')
managed=$(cat "$log"/xunit*.txt | sed -n 's/.*Failed: *\([0-9]*\), Passed: *\([0-9]*\).*/\2 \1/p' | awk '{p+=$1; f+=$2} END {print p+0, f+0}')
format=$(sed -n 's/^format (clang-format): \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log/format.txt")
read -r np nf <<< "$native"
read -r mp mf <<< "$managed"
read -r fp ff <<< "${format:-0 1}"
cp=0 cf=0
if (( consumer )); then
  for check in consumer tool; do
    read -r p f <<< "$(sed -n "s/^$check check: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p" "$log/$check.txt" | tail -1)"
    [[ -n "$p" ]] || { p=0; f=1; }   # no closing line: the check stopped early
    cp=$((cp + p)) cf=$((cf + f))
  done
fi
echo "native (ctest): $np passed, $nf failed; managed (xunit): $mp passed, $mf failed; format (clang-format): $fp passed, $ff failed;" \
  "consumer and tool checks: $cp passed, $cf failed"
echo "total: $((np + mp + fp + cp)) passed, $((nf + mf + ff + cf)) failed"
(( nf + mf + ff + cf == 0 ))
