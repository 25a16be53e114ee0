#!/usr/bin/env bash
# Every C++ file of the project is as clang-format (the repository's .clang-format) would write it.
#   tests/format_check.sh SOURCE_DIR
set -euo pipefail
cd "$1"
bad=()
while IFS= read -r f; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files '*.cc' '*.h' '*.cu' 2>/dev/null || find models runner solvers tests -name '*.cc' -o -name '*.h' -o -name '*.cu')
if ((${#bad[@]} > 0)); then
  echo "not clang-formatted (run clang-format -i on them): ${bad[*]}" >&2
  exit 1
fi
