#!/usr/bin/env bash
# SIGKILL one rank of a running 2-rank job: every rank must end within a bounded time, the launcher
# must exit non-zero, and the output must say which rank died and how (never a hang in a
# collective). Run by CTest: kill_rank_test.sh MPIRUN ROTQ DATA_DIR
set -uo pipefail
MPIRUN=$1 ROTQ=$2 DATA=$3
LIMIT_S=${KILL_RANK_LIMIT_S:-60}
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
log=$work/log

# A cell long enough to be killed in the middle: GPTQ calibration, then 1591 windows of WikiText-2.
OMP_WAIT_POLICY=PASSIVE "$MPIRUN" --allow-run-as-root --oversubscribe -np 2 \
  "$ROTQ" --log-level info --threads 1 quantize-eval --model "$DATA/stories260K/stories260K.bin" \
  --tokenizer "$DATA/stories260K/tok512.bin" --rotation hadamard --w-quant gptq --w-bits 4 \
  --calib "$DATA/wikitext-2-raw/wiki.train.part.txt" --nsamples 16 \
  --ppl-text "$DATA/wikitext-2-raw/wiki.test.raw" > "$log" 2>&1 &
launcher=$!

# Wait until both ranks are inside the pipeline (the GPTQ progress is logged after collectives).
# No wall-clock bound here: the job's own progress decides (CTest's timeout is the backstop).
while true; do
  grep -q "gptq layers" "$log" && break
  kill -0 $launcher 2>/dev/null || { echo "FAIL: the job ended before it could be killed"; cat "$log"; exit 1; }
  sleep 0.1
done
grep -q "gptq layers" "$log" || { echo "FAIL: the job never reached GPTQ"; cat "$log"; exit 1; }
ranks=$(pgrep -P $launcher -f "$(basename "$ROTQ")" | sort -n)
[[ $(wc -w <<< "$ranks") -eq 2 ]] || { echo "FAIL: expected 2 rank processes under the launcher, got: $ranks"; exit 1; }
victim=$(tail -1 <<< "$ranks")
survivor=$(head -1 <<< "$ranks")
t0=$(date +%s%N)
kill -9 "$victim"
echo "killed rank process $victim (survivor $survivor)"

rc=0
for _ in $(seq $((LIMIT_S * 10))); do
  kill -0 $launcher 2>/dev/null || break
  sleep 0.1
done
if kill -0 $launcher 2>/dev/null; then
  echo "FAIL: the job was still running ${LIMIT_S}s after one rank was killed"; cat "$log"; exit 1
fi
wait $launcher; rc=$?
elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
# The other rank ends too (the launcher tears the job down; it may outlive the launcher briefly).
for _ in $(seq $((LIMIT_S * 10))); do
  [[ -e /proc/$survivor ]] && [[ $(awk '{print $3}' /proc/$survivor/stat 2>/dev/null) != Z ]] || break
  sleep 0.1
done
if [[ -e /proc/$survivor ]] && [[ $(awk '{print $3}' /proc/$survivor/stat 2>/dev/null) != Z ]]; then
  echo "FAIL: rank process $survivor survived"; cat "$log"; exit 1
fi
elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
[[ $rc -ne 0 ]] || { echo "FAIL: the launcher exited 0 after a rank was killed"; cat "$log"; exit 1; }
grep -Eq "rank [0-9]+ .*(exited on signal 9|Killed)|signal 9" "$log" || {
  echo "FAIL: no message naming the killed rank and its signal"; cat "$log"; exit 1; }
grep -E "signal 9|Killed" "$log" | head -3
echo "PASS: all ranks ended ${elapsed_ms} ms after the kill (launcher exit $rc)"
