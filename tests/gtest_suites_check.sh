#!/usr/bin/env bash
# The suites a GoogleTest binary lists are exactly those tests/CMakeLists.txt found in its sources
# (one ctest each), so that no test goes unrun.
#   tests/gtest_suites_check.sh BINARY "SuiteA;SuiteB;..."
set -euo pipefail
listed=$("$1" --gtest_list_tests | sed -n 's/^\([A-Za-z0-9_/]*\)\.$/\1/p' | sed 's|^.*/||' | sort -u)
found=$(tr ';' '\n' <<<"$2" | sort -u)
if [[ "$listed" != "$found" ]]; then
  echo "suites in $1 but not registered: $(comm -23 <(echo "$listed") <(echo "$found") | tr '\n' ' ')" >&2
  echo "registered but not in $1: $(comm -13 <(echo "$listed") <(echo "$found") | tr '\n' ' ')" >&2
  exit 1
fi
echo "$(wc -l <<<"$listed") suites, each a ctest"
