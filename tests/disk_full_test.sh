#!/usr/bin/env bash
# `rotq run` on a file system that fills up while a cell's results are stored: one error line
# naming the cause, a non-zero exit, no cell counted as done and no partial file left; once space
# is freed the same command resumes and finishes. The full disk is a private 1 MiB tmpfs in a
# mount namespace (as root); where mounting is not allowed, the file-size limit (ulimit -f) makes
# the same writes fail with EFBIG instead. Run by CTest: disk_full_test.sh ROTQ PROJECT_DIR
set -uo pipefail
ROTQ=$1 PROJECT=$2
work=$(mktemp -d)
trap 'umount "$work/small" 2>/dev/null; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

cat > "$work/exp.yaml" <<YAML
name: diskfull
output: $work/small/out.h5
models:
  - {name: stories260K, path: $PROJECT/data/stories260K/stories260K.bin, tokenizer: $PROJECT/data/stories260K/tok512.bin}
seeds: [0, 1]
evaluation: {ppl_texts: [$PROJECT/data/tinystories_sample.txt], seqlen: 128, max_windows: 2}
YAML
mkdir -p "$work/small"

# The first run, with the results' file system full but for a few KiB: markers fit, cells do not.
if unshare -m true 2>/dev/null && unshare -m mount -t tmpfs -o size=1m tmpfs "$work/small" 2>/dev/null; then
  mode=tmpfs
  # The whole test runs in one private mount namespace, so the mount never leaks.
  run_full() {
    unshare -m bash -c '
      set -u
      mount -t tmpfs -o size=1m tmpfs "$1/small" || exit 90
      mkdir -p "$1/small/out.h5.d"
      # Reserve 16 KiB, fill the rest, free the reserve: room for a marker, not for a 19 KiB
      # cell file.
      dd if=/dev/zero of="$1/small/reserve" bs=4k count=4 2>/dev/null
      dd if=/dev/zero of="$1/small/fill" bs=4k 2>/dev/null
      rm -f "$1/small/reserve"
      OMP_WAIT_POLICY=PASSIVE "$2" --log-level error run "$1/exp.yaml" > "$1/log1" 2>&1
      echo "rc=$?" >> "$1/log1"
      ls -a "$1/small/out.h5.d" > "$1/listing1"
      # Space freed: the same command finishes the sweep.
      rm -f "$1/small/fill"
      OMP_WAIT_POLICY=PASSIVE "$2" --log-level error run "$1/exp.yaml" > "$1/log2" 2>&1
      echo "rc=$?" >> "$1/log2"
      ls -a "$1/small/out.h5.d" > "$1/listing2"
      "$2" --log-level error status "$1/exp.yaml" > "$1/status" 2>&1
    ' _ "$work" "$ROTQ"
  }
else
  mode=ulimit
  run_full() {
    (
      trap '' XFSZ  # ignored signals stay ignored across exec: writes then fail with EFBIG
      ulimit -f 8   # KiB: room for a marker, not for a 19 KiB cell file
      OMP_WAIT_POLICY=PASSIVE "$ROTQ" --log-level error run "$work/exp.yaml" > "$work/log1" 2>&1
      echo "rc=$?" >> "$work/log1"
    )
    ls -a "$work/small/out.h5.d" > "$work/listing1"
    OMP_WAIT_POLICY=PASSIVE "$ROTQ" --log-level error run "$work/exp.yaml" > "$work/log2" 2>&1
    echo "rc=$?" >> "$work/log2"
    ls -a "$work/small/out.h5.d" > "$work/listing2"
    "$ROTQ" --log-level error status "$work/exp.yaml" > "$work/status" 2>&1
  }
fi
echo "mode: $mode"
run_full
cat "$work/log1"
grep -q "^rc=0$" "$work/log1" && fail "the run on a full disk exited 0"
grep -q "^rc=1$" "$work/log1" || fail "the run on a full disk did not end with exit status 1 (crash?)"
last=$(grep -v '^rc=' "$work/log1" | tail -1)
[[ $last == "rotq: error: "* ]] || fail "the last line is not rotq's error line: $last"
grep -qiE "No space left on device|File too large" "$work/log1" || fail "the error does not name the cause"
grep -qE '^[0-9a-f]{16}\.h5$' "$work/listing1" && fail "a cell file was written on the full disk"
grep -q 'rotq-tmp' "$work/listing1" && fail "a temporary was left behind: $(cat "$work/listing1")"
grep -q '\.running$' "$work/listing1" && fail "a running marker was left behind"
cat "$work/log2"
grep -q "^rc=0$" "$work/log2" || fail "the run after freeing space failed"
[[ $(grep -cE '^[0-9a-f]{16}\.h5$' "$work/listing2") -eq 2 ]] || fail "expected 2 cell files: $(cat "$work/listing2")"
grep -q "^2 done, 0 running, 0 failed, 0 pending" "$work/status" || fail "status: $(cat "$work/status")"
echo "PASS ($mode): a full disk is one error line and a clean resume"
