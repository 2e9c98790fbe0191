#!/usr/bin/env bash
# Checks src/Native against src/Native/.clang-format (clang-format --dry-run -Werror), skipping the files listed in
# src/Native/.clang-format-ignore. Prints one line per file that needs formatting and a closing
# "format (clang-format): N passed, M failed" line. Fix a file with: clang-format -i --style=file <file>
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
native="$root/src/Native"
command -v clang-format > /dev/null || { echo "clang-format is not installed (Debian: apt-get install clang-format)"; echo "format (clang-format): 0 passed, 1 failed"; exit 1; }

ignored=$(grep -vE '^\s*(#|$)' "$native/.clang-format-ignore" || true)
passed=0 failed=0
while IFS= read -r file; do
  relative=${file#"$native"/}
  grep -qxF "$relative" <<< "$ignored" && continue
  if clang-format --dry-run -Werror --style=file "$file" > /dev/null 2>&1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "needs formatting: src/Native/$relative"
  fi
done < <(find "$native" \( -name '*.c' -o -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort)
echo "format (clang-format): $passed passed, $failed failed"
(( failed == 0 ))
