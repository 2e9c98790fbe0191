#!/usr/bin/env bash
# Fuzzes the managed ONNX parser and validator (tests/Fuzz/QatMl.Fuzz) for N minutes (default 10), at nice 19.
# Builds the target, instruments Microsoft.ML.Quantization.dll and Google.Protobuf.dll with SharpFuzz's command-line
# tool (installed into artifacts/fuzz/tools on first use), then runs the target's coverage-guided loop; a run that dies
# (a crash or a hang) is recorded and the loop starts again until the time is up. Not run by CI.
# Corpus: artifacts/fuzz/corpus (kept between runs). Findings: artifacts/fuzz/findings (an input and its exception each).
# Usage: build/fuzz-managed.sh [minutes]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
minutes=${1:-10}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
work=artifacts/fuzz
mkdir -p "$work/tools" "$work/corpus" "$work/findings"
rm -f "$work"/run-*.log

echo "== build"
dotnet build tests/Fuzz/QatMl.Fuzz -c Release -nologo -clp:ErrorsOnly -o "$work/bin.tmp"
rm -rf "$work/bin" && mv "$work/bin.tmp" "$work/bin"

echo "== instrument (SharpFuzz 2.3.0)"
[[ -x "$work/tools/sharpfuzz" ]] || dotnet tool install --tool-path "$work/tools" SharpFuzz.CommandLine --version 2.3.0 > /dev/null
for assembly in Microsoft.ML.Quantization.dll Google.Protobuf.dll; do
  "$work/tools/sharpfuzz" "$work/bin/$assembly"
done

echo "== fuzz for $minutes minutes"
deadline=$(( $(date +%s) + minutes * 60 ))
runs=0 deaths=0
while (( $(date +%s) < deadline )); do
  left=$(( deadline - $(date +%s) ))
  runs=$((runs + 1))
  if ! nice -n 19 dotnet "$work/bin/QatMl.Fuzz.dll" fuzz "$work/corpus" "$work/findings" "$left" | tee "$work/run-$runs.log"; then
    if grep -q "^FINDING" "$work/run-$runs.log" && ! grep -q "FailFast\|hang" "$work/run-$runs.log"; then
      continue # managed findings were written; the loop ran to its end
    fi
    deaths=$((deaths + 1))
    cp "$work/findings/current-input.bin" "$work/findings/died-$runs.bin" 2>/dev/null || true
    echo "the fuzz process died (run $runs); its last input (length-prefixed) is in $work/findings/died-$runs.bin"
  fi
done
findings=$(find "$work/findings" -name 'finding-*.onnx' -o -name 'died-*.bin' -o -name 'hang-*.bin' | wc -l)
echo "fuzz-managed: $runs run(s), $deaths died, $(grep -h 'executions' "$work"/run-*.log | tail -1), findings on disk: $findings"
