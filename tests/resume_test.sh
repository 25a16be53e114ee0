#!/usr/bin/env bash
# `rotq run` killed (SIGKILL) at points defined by its progress (just after a cell's result is
# stored, or in the middle of the next cell), several times, then run to the end: every cell is done exactly once (one cell file each, none recomputed: a cell file seen
# after any kill keeps its inode and mtime), the merged HDF5 file opens, and `rotq status` says all
# done. Run by CTest: resume_test.sh ROTQ PROJECT_DIR
set -uo pipefail
ROTQ=$1 PROJECT=$2
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
cat > "$work/exp.yaml" <<YAML
name: resume
output: $work/out.h5
models:
  - {name: stories260K, path: $PROJECT/data/stories260K/stories260K.bin, tokenizer: $PROJECT/data/stories260K/tok512.bin}
seeds: [0, 1, 2]
calibration: {text: $PROJECT/data/tinystories_sample.txt, nsamples: 4}
rotation: {dfrot: {iters: 3}, optrot: {steps: 5}}
quantization: {w_bits: 4, w_method: gptq}
evaluation: {ppl_texts: [$PROJECT/data/tinystories_sample.txt], seqlen: 128, max_windows: 3, acts: [16/16, 4/4]}
sweep:
  rotation.method: [none, random, hadamard, dfrot, optrot]
YAML
cells=15
snap() { for f in "$work"/out.h5.d/*.h5; do [[ -e $f ]] && stat -c '%n %i %Y' "$f"; done; }
done_count() { ls "$work"/out.h5.d/*.h5 2>/dev/null | wc -l; }
# wait_for CONDITION PID: polls until CONDITION holds or the runner exits (no wall-clock bound on
# the work itself: the kill points are defined by progress, not by time).
wait_for() {
  while kill -0 "$2" 2>/dev/null; do
    eval "$1" && return 0
    sleep 0.02
  done
  return 1
}
# A cell in flight: a running marker for a cell that has no result yet.
in_flight() {
  local m
  for m in "$work"/out.h5.d/*.running; do
    [[ -e $m && ! -e ${m%.running}.h5 ]] && return 0
  done
  return 1
}
: > "$work/seen"
partial=0
for round in $(seq 8); do
  before=$(done_count)
  OMP_WAIT_POLICY=PASSIVE "$ROTQ" --log-level info --threads 1 run "$work/exp.yaml" \
    >> "$work/log" 2>&1 &
  pid=$!
  # Let at least one more cell finish, then kill: right after a result was stored (even rounds)
  # or in the middle of the next cell, once its marker is there (odd rounds).
  wait_for '(($(done_count) > before))' $pid
  ((round % 2)) && wait_for in_flight $pid
  kill -9 $pid 2>/dev/null
  wait $pid 2>/dev/null
  snap >> "$work/seen"
  done_now=$(done_count)
  echo "round $round: killed with $done_now cells done"
  ((done_now > 0 && done_now < cells)) && partial=$((partial + 1))
  ((partial >= 4 || done_now == cells)) && break
done
((partial >= 2)) || { echo "FAIL: only $partial kills landed in the middle of the sweep"; exit 1; }
OMP_WAIT_POLICY=PASSIVE "$ROTQ" --log-level info --threads 1 run "$work/exp.yaml" >> "$work/log" 2>&1 ||
  { echo "FAIL: the final run failed"; tail -20 "$work/log"; exit 1; }
n=$(ls "$work"/out.h5.d/*.h5 | wc -l)
[[ $n -eq $cells ]] || { echo "FAIL: $n cell files, expected $cells"; exit 1; }
# No cell that was done after a kill was written again.
final=$(snap)
while read -r name inode mtime; do
  grep -qx "$name $inode $mtime" <<< "$final" || { echo "FAIL: $name was recomputed"; exit 1; }
done < <(sort -u "$work/seen")
"$ROTQ" --log-level error status "$work/exp.yaml" > "$work/status" ||
  { echo "FAIL: rotq status"; cat "$work/status"; exit 1; }
grep -q "^$cells done, 0 running, 0 failed, 0 pending" "$work/status" ||
  { echo "FAIL: status"; cat "$work/status"; exit 1; }
"$ROTQ" --log-level error table "$work/out.h5" --format csv > "$work/table" ||
  { echo "FAIL: the merged file does not render"; exit 1; }
grep -q "^W4A4KV4,hadamard," "$work/table" || { echo "FAIL: table"; cat "$work/table"; exit 1; }
echo "PASS: $cells cells, each done once across $(grep -c . <(sort -u "$work/seen")) snapshots"
