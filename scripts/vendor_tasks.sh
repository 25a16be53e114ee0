#!/usr/bin/env bash
# A maintainer's tool, never run by rotq, its tests or the quickstart: vendors the first N
# examples of each of the papers' nine zero-shot tasks from a full copy of the task files into
# data/tasks (what the quickstart reads on a fresh machine, committed).
#   scripts/vendor_tasks.sh TASKS_DIR [N=100]
set -euo pipefail
SRC=${1:?usage: scripts/vendor_tasks.sh TASKS_DIR [N]}
N=${2:-100}
DST=$(dirname "$0")/../data/tasks
mkdir -p "$DST"
for f in arc_challenge arc_easy boolq hellaswag_val_1k lambada_openai openbookqa piqa winogrande; do
  head -n "$N" "$SRC/$f.jsonl" >"$DST/$f.jsonl"
done
# Social IQa is one JSON array.
python3 - "$SRC/social_iqa.test.json" "$DST/social_iqa.test.json" "$N" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))[: int(sys.argv[3])]
json.dump(rows, open(sys.argv[2], "w"), indent=4)
PY
