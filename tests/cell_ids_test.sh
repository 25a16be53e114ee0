#!/usr/bin/env bash
# Stored results stay valid: every cell id of the project's experiment files, and of
# tests/data/off_defaults.yaml (every schema key off its default), is byte-identical to the ids pinned in
# tests/data/cell_ids.txt (ids hash the canonical key strings and the defaults they differ from).
#   tests/cell_ids_test.sh ROTQ SOURCE_DIR [--write]
set -euo pipefail
rotq=$1
src=$2
cd "$src"
export ROTQ_LOG_LEVEL=warn

list_ids() {  # FILE [OVERRIDES...] -> "FILE ID LABEL" lines
  local f=$1
  shift
  "$rotq" run "$f" "$@" --dry-run | sed -n 's/^| \([0-9a-f]\{16\}\) *| \(.*[^ ]\) *| [a-z]* *| [a-z]* *|$/\1 \2/p' |
    sed "s|^|$f |"
}

{
  for f in experiments/*.yaml experiments/papers/*.yaml; do list_ids "$f"; done
  for f in tests/data/off_defaults*.yaml; do list_ids "$f"; done
} >/tmp/rotq_cell_ids.$$

if [[ "${3:-}" == --write ]]; then
  mv /tmp/rotq_cell_ids.$$ tests/data/cell_ids.txt
  echo "wrote tests/data/cell_ids.txt ($(wc -l <tests/data/cell_ids.txt) cells)"
  exit 0
fi
if ! diff -u tests/data/cell_ids.txt /tmp/rotq_cell_ids.$$; then
  rm -f /tmp/rotq_cell_ids.$$
  echo "cell ids changed: stored results would no longer be recognised" >&2
  exit 1
fi
echo "$(wc -l <tests/data/cell_ids.txt) cell ids unchanged"
rm -f /tmp/rotq_cell_ids.$$
