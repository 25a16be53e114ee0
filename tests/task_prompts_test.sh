#!/usr/bin/env bash
# Every prompt of every task in ../shared/data/tasks (50,714 documents with both MMLU variants)
# as rotq builds it, against scripts/check_task_prompts.py: an independent Python rendering of
# lm-evaluation-harness's task definitions.
set -euo pipefail
ROTQ=$1 SRC=$2 TASKS=$3
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
"$ROTQ" --log-level warn task-requests --tasks all --tasks-dir "$TASKS" >"$OUT"
python3 "$SRC/scripts/check_task_prompts.py" "$TASKS" "$OUT"
