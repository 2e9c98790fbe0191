#!/usr/bin/env bash
# The tool check: installs the qatml tool the way a user does, from a local folder feed, and runs the main workflow.
#   1. packs the library (QatMl.ML.Quantization) and the tool (QatMl.Tool) into one temp feed;
#   2. dotnet tool install --tool-path <temp> --add-source <feed> QatMl.Tool --prerelease;
#   3. qatml data export-idx: Fashion-MNIST test images of tests/data into an image folder (one subfolder per class);
#   4. qatml quantize FmnistNet from that folder with --precision auto --budget 0.5 (plain output, as in CI);
#   5. builds and runs the generated consumer project, which gets QatMl.ML.Quantization from the same feed.
# Prints PASS/FAIL per step and "tool check: N passed, M failed"; exits non-zero on any failure. Temp folders are removed.
# The tool and the consumer restore with a fresh package cache without QatMl packages (build/package-cache.sh), so they get
# this pack, never an earlier one of the same version; QATML_EMPTY_CACHE=1 leaves that cache empty (a fresh machine; slower).
# Usage: build/tool-check.sh
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
work=$(mktemp -d "${TMPDIR:-/tmp}/qatml-tool-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
check() {  # check NAME COMMAND...: runs the command, logs it, counts PASS/FAIL
  local name=$1; shift
  if "$@" > "$work/$name.log" 2>&1; then passed=$((passed + 1)); echo "PASS $name"
  else failed=$((failed + 1)); echo "FAIL $name"; tail -30 "$work/$name.log" | sed 's/^/  | /'; fi
}

echo "== pack the library and the tool into $work/feed"
check pack-library dotnet pack "$root/src/Microsoft.ML.Quantization/Microsoft.ML.Quantization.csproj" -c Release -o "$work/feed" -nologo -clp:ErrorsOnly
check pack-tool dotnet pack "$root/src/QatMl.Tool/QatMl.Tool.csproj" -c Release -o "$work/feed" -nologo -clp:ErrorsOnly
ls -l "$work"/feed/*.nupkg | awk '{print "  " $5 " " $NF}'
source "$root/build/package-cache.sh"
fresh_package_cache "$work/packages" "${QATML_EMPTY_CACHE:-0}" | sed 's/^/  /'
export NUGET_PACKAGES="$work/packages"

echo "== install the tool from the feed"
check install dotnet tool install --tool-path "$work/tools" --add-source "$work/feed" QatMl.Tool --prerelease
qatml="$work/tools/qatml"
check version "$qatml" --version
cat "$work/version.log" 2> /dev/null | sed 's/^/  /'

echo "== qatml data export-idx, qatml quantize --precision auto --budget 0.5"
data="$root/tests/data/fashion-mnist"
check export-idx "$qatml" data export-idx "$data/t10k-images-idx3-ubyte.gz" --labels "$data/t10k-labels-idx1-ubyte.gz" --out "$work/images" --limit 1000
check quantize "$qatml" quantize "$root/tests/data/models/fmnistnet_fp32.onnx" --data "$work/images" --scale 255 --mean 0.2860 --std 0.3530 \
  --precision auto --budget 0.5 --out "$work/out" --package-source "$work/feed" --plain
sed -n '/trial\|kept\|wrote/p' "$work/quantize.log" | sed 's/^/  /'
check report test -s "$work/out/report.html"

echo "== the generated consumer project (QatMl.ML.Quantization from the feed)"
check consumer-build dotnet build "$work/out/consumer" -nologo -clp:ErrorsOnly
# PredictionEngine over QatMl's transformers needs them to be row-to-row mappers; the batch (Transform) part must print.
run_status=0
dotnet run --project "$work/out/consumer" --no-build > "$work/consumer-run.log" 2>&1 || run_status=$?
# The batch part (Transform) and the single prediction (PredictionEngine) must both print, and the program exit 0.
if (( run_status == 0 )) && [[ $(grep -c '^batch ' "$work/consumer-run.log") -ge 1 ]] && grep -q '^single ' "$work/consumer-run.log"; then passed=$((passed + 1)); echo "PASS consumer-run"
else failed=$((failed + 1)); echo "FAIL consumer-run"; tail -20 "$work/consumer-run.log" | sed 's/^/  | /'; fi
sed -n '1,6p' "$work/consumer-run.log" | sed 's/^/  /'

echo "tool check: $passed passed, $failed failed"
(( failed == 0 ))
