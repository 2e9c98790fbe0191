#!/usr/bin/env bash
# The consumer check: uses QatMl the way a new user does, from the package alone.
#   1. packs src/Microsoft.ML.Quantization into a local folder and checks what the package holds;
#   2. with a fresh package cache (NUGET_PACKAGES = a temp folder) that has no QatMl package, so QatMl.ML.Quantization
#      must restore from the local folder (checked: the cache records that folder as its source), builds a brand-new
#      console app that references the package,
#      Microsoft.ML.OnnxRuntime and TorchSharp-cpu, and runs it (build/consumer/App/Program.cs): PTQ of FmnistNet on
#      the Fashion-MNIST images of tests/data with the native engine, Save / LoadModel, QAT (TorchSharp; on Debian 12
#      this needs the package's buildTransitive targets), PredictionEngine;
#   3. runs the same app with libqatml_native removed (Backend = Native falls back to ONNX Runtime with a warning)
#      and with ONNX Runtime's native library removed (the error names the package to add);
#   4. publishes an app that gets the package only through a class library, and runs the published copy.
# Every check prints PASS/FAIL NAME; the closing line counts them against the explicit list below, and the script
# exits non-zero when any is missing or failed. Temp folders are removed on exit.
# The fresh cache links every other package id (ONNX Runtime, libtorch, ML.NET: about 1.9 GB) from this machine's global
# packages folder, so CI does not download them again; --empty-cache starts from a truly empty cache (downloads all).
# Usage: build/consumer-check.sh [--empty-cache]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

empty_cache=0
[[ "${1:-}" == "--empty-cache" ]] && empty_cache=1

expected=(package-content package-from-local-folder ptq-native save-load qat-torchsharp prediction-engine
          native-missing-falls-back native-missing-no-fallback-throws onnxruntime-missing-names-package transitive-publish)

work=$(mktemp -d "${TMPDIR:-/tmp}/qatml-consumer.XXXXXX")
trap 'rm -rf "$work"' EXIT
results="$work/results.txt"
: > "$results"
prop() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$root/Directory.Packages.props" | head -1; }
ort_version=$(prop OnnxRuntimeVersion)
torch_version=$(prop TorchSharpVersion)

echo "== pack (the repo's own package cache)"
dotnet pack "$root/src/Microsoft.ML.Quantization/Microsoft.ML.Quantization.csproj" -c Release -o "$work/feed" -nologo -clp:ErrorsOnly
nupkg=$(ls "$work"/feed/QatMl.ML.Quantization.*.nupkg)
version=${nupkg##*/QatMl.ML.Quantization.}
version=${version%.nupkg}
echo "$nupkg"
unzip -l "$nupkg" | awk 'NR > 3 && $4 != "" && $4 !~ /^-/ {print "  " $4}'
missing_files=()
for f in lib/net10.0/Microsoft.ML.Quantization.dll runtimes/linux-x64/native/libqatml_native.so README.md \
         buildTransitive/QatMl.ML.Quantization.targets buildTransitive/QatMl.TorchSharpCompat.targets tools/linux-x64/qatml_elf_compat; do
  unzip -l "$nupkg" "$f" > /dev/null 2>&1 || missing_files+=("$f")
done
nuspec=$(unzip -p "$nupkg" QatMl.ML.Quantization.nuspec)
for field in '<license type="expression">MIT</license>' '<readme>README.md</readme>' '<repository type="git"' "<version>$version</version>"; do
  grep -qF "$field" <<< "$nuspec" || missing_files+=("nuspec $field")
done
if (( ${#missing_files[@]} )); then echo "FAIL package-content: missing ${missing_files[*]}" | tee -a "$results"
else echo "PASS package-content ($version)" | tee -a "$results"; fi

source "$root/build/package-cache.sh"
echo "== fresh apps, $(fresh_package_cache "$work/packages" "$empty_cache")"
export NUGET_PACKAGES="$work/packages"
cat > "$work/nuget.config" << EOF
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="qatml-local" value="$work/feed" />
  </packageSources>
</configuration>
EOF
for project in App Lib Transitive; do
  mkdir -p "$work/$project"
  for f in "$root/build/consumer/$project"/*; do
    sed -e "s|@QATML_VERSION@|$version|; s|@ORT_VERSION@|$ort_version|; s|@TORCHSHARP_VERSION@|$torch_version|; s|@REPO@|$root|" \
      "$f" > "$work/$project/$(basename "$f")"
  done
done

run_app() {  # run_app FOLDER MODE: runs the app, keeps its PASS/FAIL lines
  local status=0
  dotnet "$1/QatMlConsumer.dll" "$2" "$root" "$work" 2>&1 | tee "$work/app-$2.txt" || status=$?
  grep -E '^(PASS|FAIL) ' "$work/app-$2.txt" >> "$results" || true
  (( status == 0 )) || echo "  (the app exited with $status)"
}

start=$SECONDS
dotnet build "$work/App/QatMlConsumer.csproj" -c Release -o "$work/app-bin" -nologo -clp:ErrorsOnly
echo "  restored and built in $((SECONDS - start)) s"
metadata="$work/packages/qatml.ml.quantization/$version/.nupkg.metadata"
if [[ ! -L "$work/packages/qatml.ml.quantization" ]] && grep -qF "\"source\": \"$work/feed\"" "$metadata" 2> /dev/null; then
  echo "PASS package-from-local-folder ($metadata names $work/feed)" | tee -a "$results"
else
  echo "FAIL package-from-local-folder: $metadata does not name $work/feed as the source: $(cat "$metadata" 2> /dev/null | tr -d '\n')" | tee -a "$results"
fi
echo "== app: PTQ, native engine, save/load, QAT, PredictionEngine"
run_app "$work/app-bin" main

echo "== app without libqatml_native (a platform the package has no native build for)"
cp -al "$work/app-bin" "$work/app-no-native"
rm "$work/app-no-native/runtimes/linux-x64/native/libqatml_native.so"
run_app "$work/app-no-native" no-native

echo "== app without ONNX Runtime's native library (Microsoft.ML.OnnxRuntime forgotten)"
cp -al "$work/app-bin" "$work/app-no-ort"
rm "$work"/app-no-ort/runtimes/*/native/libonnxruntime*.so* 2> /dev/null || true
rm -f "$work"/app-no-ort/libonnxruntime*.so*
run_app "$work/app-no-ort" no-ort

echo "== publish an app that gets QatMl through a class library, run the published copy"
dotnet publish "$work/Transitive/QatMlConsumer.Transitive.csproj" -c Release -o "$work/publish" -nologo -clp:ErrorsOnly
status=0
dotnet "$work/publish/QatMlConsumer.Transitive.dll" 2>&1 | tee "$work/transitive.txt" || status=$?
grep -E '^(PASS|FAIL) ' "$work/transitive.txt" >> "$results" || true
(( status == 0 )) || echo "FAIL transitive-publish: exit $status" >> "$results"

echo "== consumer check"
passed=0 failed=0
for name in "${expected[@]}"; do
  if grep -qE "^PASS $name( |$)" "$results"; then
    passed=$((passed + 1)); echo "  ok      $name"
  else
    failed=$((failed + 1)); echo "  FAILED  $name$(grep -E "^FAIL $name" "$results" | head -1 | sed "s/^FAIL $name//")"
  fi
done
echo "consumer check: $passed passed, $failed failed"
(( failed == 0 ))
