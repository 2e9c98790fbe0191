#!/usr/bin/env bash
# Renders a qatml report.html in headless Chromium (Debian's package) and writes a PNG screenshot, as a person would
# see the page. Installs chromium when missing (root, apt).
# Usage: build/report-screenshot.sh REPORT.html OUT.png [WIDTHxHEIGHT]   (default 1280x3200)
set -euo pipefail
report=${1:?usage: build/report-screenshot.sh REPORT.html OUT.png [WIDTHxHEIGHT]}
out=${2:?usage: build/report-screenshot.sh REPORT.html OUT.png [WIDTHxHEIGHT]}
size=${3:-1280x3200}
[[ -f "$report" ]] || { echo "report-screenshot: '$report' does not exist" >&2; exit 2; }
if ! command -v chromium > /dev/null; then
  echo "report-screenshot: installing chromium (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# No network: the report is self-contained, and these flags keep Chromium from reaching out on its own.
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --no-first-run --hide-scrollbars --user-data-dir="$profile" --window-size="${size/x/,}" \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$report")" 2> "$profile/chromium.log" \
  || { cat "$profile/chromium.log" >&2; exit 1; }
[[ -s "$out" ]] || { echo "report-screenshot: chromium wrote no screenshot" >&2; cat "$profile/chromium.log" >&2; exit 1; }
echo "report-screenshot: $out ($(stat -c %s "$out") bytes)"
