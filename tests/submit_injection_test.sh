#!/usr/bin/env bash
# No value reaches a shell: `rotq submit` with hostile experiment names, output paths, model
# paths, experiment file names, working directories, overrides and Slurm options. Each value is
# either refused with one error line (it cannot be carried safely: a control character, or an
# #SBATCH value that would need quoting) or carried verbatim; then the generated sbatch script is
# run by bash with stubbed `sbatch` and `srun` that record their arguments. Nothing but rotq may
# run: no PWNED file appears, and srun received exactly rotq's command line with every value intact.
# Run by CTest: submit_injection_test.sh ROTQ PROJECT_DIR
set -uo pipefail
ROTQ=$1 PROJECT=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
W=$work
fail() { echo "FAIL: $*"; exit 1; }

# Stubs: sbatch keeps the script and prints a job id; srun records its argv, one per line (NUL
# separated) and runs nothing.
mkdir -p "$W/bin"
cat > "$W/bin/sbatch" <<'STUB'
#!/bin/bash
printf '%s\0' "$@" > "$STUB_DIR/sbatch.args"
cp "${@: -1}" "$STUB_DIR/submitted.sbatch"
echo 4242
STUB
cat > "$W/bin/srun" <<'STUB'
#!/bin/bash
printf '%s\0' "$@" >> "$STUB_DIR/srun.args"
STUB
chmod +x "$W/bin/sbatch" "$W/bin/srun"
export STUB_DIR=$W PATH="$W/bin:$PATH"

model=$PROJECT/data/stories260K/stories260K.bin
text=$PROJECT/data/tinystories_sample.txt
# experiment FILE NAME OUTPUT MODEL_PATH: an experiment file (YAML double-quoted strings carry
# any byte, newlines included).
experiment() {
  python3 - "$@" <<'PY'
import json, sys
path, name, output, model, text = sys.argv[1:6]
q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
open(path, "w").write(
    f"name: {q(name)}\noutput: {q(output)}\n"
    f"models:\n  - {{name: m, path: {q(model)}}}\n"
    f"evaluation: {{ppl_texts: [{q(text)}]}}\n")
PY
}

n=0
# expect_refused LABEL NEEDLE ARGS...: one error line containing NEEDLE, exit 1, nothing submitted.
expect_refused() {
  local label=$1 needle=$2
  shift 2
  n=$((n + 1))
  rm -f "$W/sbatch.args"
  local out rc
  out=$(cd "$W" && "$ROTQ" --log-level error submit "$@" 2>&1)
  rc=$?
  [[ $rc -eq 1 ]] || fail "$label: exit $rc (expected 1): $out"
  [[ $(printf '%s\n' "$out" | grep -c '') -eq 1 ]] || fail "$label: more than one line: $out"
  [[ $out == "rotq: error: "*"$needle"* ]] || fail "$label: '$out' lacks '$needle'"
  [[ -e $W/sbatch.args ]] && fail "$label: sbatch ran"
  echo "refused  $label: ${out:0:150}"
}

# expect_carried LABEL EXP [CWD] -- SUBMIT_ARGS...: submitted; the script runs under bash and its
# only command is srun with rotq's exact arguments.
expect_carried() {
  local label=$1 exp=$2 cwd=$3
  shift 4
  n=$((n + 1))
  rm -f "$W/sbatch.args" "$W/srun.args" "$W/submitted.sbatch"
  local out
  out=$(cd "$cwd" && "$ROTQ" --log-level error submit "$exp" "$@" 2>&1) || fail "$label: submit failed: $out"
  [[ $out == 4242 ]] || fail "$label: submit printed '$out'"
  mapfile -d '' sargs < "$W/sbatch.args"
  [[ ${#sargs[@]} -eq 2 && ${sargs[0]} == --parsable ]] || fail "$label: sbatch argv: ${sargs[*]}"
  (cd / && SLURM_ARRAY_TASK_ID=0 bash "$W/submitted.sbatch") || fail "$label: the script failed"
  mapfile -d '' got < "$W/srun.args"
  local id
  id=$(cd "$cwd" && "$ROTQ" --log-level error run "$exp" "${overrides[@]}" --dry-run 2>/dev/null |
       awk -F'|' 'NR == 3 {gsub(/ /, "", $2); print $2}')
  local want=(--mpi=pmix -n 1 "$ROTQ" run "$(cd "$cwd" && realpath -s "$exp")" --cells "$id"
              --force-stale "${overrides[@]}")
  [[ ${#got[@]} -eq ${#want[@]} ]] || fail "$label: srun got ${#got[@]} args, want ${#want[@]}: ${got[*]}"
  for i in "${!want[@]}"; do
    [[ ${got[$i]} == "${want[$i]}" ]] || fail "$label: srun arg $i is '${got[$i]}', want '${want[$i]}'"
  done
  echo "carried  $label"
}

mkdir -p "$W/out"
# Values that land in the script quoted (or, for the job name, in a sanitized form).
overrides=()
experiment "$W/e1.yaml" "x;touch $W/PWNED_name1 \`touch $W/PWNED_name2\` \$(touch $W/PWNED_name3)" \
  "$W/out/a.h5" "$model" "$text"
expect_carried "experiment name with ; \` \$( )" "$W/e1.yaml" "$W" --
experiment "$W/e2.yaml" "m" "$W/out/b.h5" "$W/m';touch $W/PWNED_model;'\".bin" "$text"
expect_carried "model path with quotes and ;" "$W/e2.yaml" "$W" --
# (Relative names: a file name holds no '/'; the script runs in the submit's directory, $W.)
hostile_file="$W/e3 \$(touch PWNED_file) ';touch PWNED_file2;'.yaml"
experiment "$hostile_file" "m" "$W/out/c.h5" "$model" "$text"
expect_carried "experiment file name" "$hostile_file" "$W" --
hostile_cwd="$W/cwd \$(touch PWNED_cwd) ';touch PWNED_cwd2;'"
mkdir -p "$hostile_cwd"
experiment "$W/e4.yaml" "m" "$W/out/d.h5" "$model" "$text"
expect_carried "working directory" "$W/e4.yaml" "$hostile_cwd" --
overrides=("calibration.text=$W/c';touch $W/PWNED_ov;'\$(touch $W/PWNED_ov2)")
expect_carried "override value" "$W/e4.yaml" "$W" -- "${overrides[@]}"
overrides=()
expect_carried "sbatch arg with \$( )" "$W/e4.yaml" "$W" -- "--sbatch-arg=--comment=\$(touch $W/PWNED_arg)"

# Values that cannot be carried safely: refused before anything is written or submitted.
experiment "$W/r1.yaml" $'x\ntouch '"$W/PWNED_nl" "$W/out/e.h5" "$model" "$text"
expect_refused "newline in the experiment name" "control character" "$W/r1.yaml"
experiment "$W/r2.yaml" "m" "$W/o;touch $W/PWNED_out/f.h5" "$model" "$text"
expect_refused "output path with ;" "the log directory" "$W/r2.yaml"
experiment "$W/r3.yaml" "m" $'$W/o\ntouch '"$W/PWNED_out2/g.h5" "$model" "$text"
expect_refused "newline in the output path" "control character" "$W/r3.yaml"
experiment "$W/r4.yaml" "m" "$W/out/h.h5" "$model" "$text"
expect_refused "partition with ;" "--partition" "$W/r4.yaml" --partition "p;touch $W/PWNED_p"
expect_refused "partition with a newline" "--partition" "$W/r4.yaml" --partition $'p\ntouch '"$W/PWNED_p2"
expect_refused "time with a space" "--time" "$W/r4.yaml" --time "1:00 --wrap=touch"
expect_refused "account with \$( )" "--account" "$W/r4.yaml" --account "\$(touch $W/PWNED_a)"
expect_refused "qos with a quote" "--qos" "$W/r4.yaml" --qos "q'x"
expect_refused "sbatch arg with a newline" "--sbatch-arg" "$W/r4.yaml" --sbatch-arg $'--x\ntouch '"$W/PWNED_sa"
expect_refused "override with a newline" "override" "$W/r4.yaml" $'calibration.text=a\ntouch '"$W/PWNED_ov3"

pwned=$(find "$W" -name 'PWNED*' | head -5)
[[ -z $pwned ]] || fail "a hostile value ran as a command: $pwned"
echo "PASS: $n hostile submissions, nothing but rotq's srun line ran"
