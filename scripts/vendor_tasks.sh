#!/usr/bin/env bash
# Vendors the first N examples (default 100) of each of the papers' nine zero-shot tasks from
# ../shared/data/tasks into data/tasks (the quickstart's task table on a fresh machine).
set -euo pipefail
N=${1:-100}
SRC=${ROTQ_SHARED_DATA:-$(dirname "$0")/../../shared/data}/tasks
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
