#!/usr/bin/env bash
# Slurm for real: a private single-node controller and daemon on 127.0.0.1 (auth/none, as root),
# `rotq submit` of a 4-cell sweep whose cells run 2 MPI ranks each through `srun --mpi=pmix`, the
# results checked; then a second submission cancelled midway with scancel and resubmitted: only the
# unfinished cells run again. The daemons are stopped by their PIDs however the test ends.
# Run by CTest: slurm_test.sh ROTQ PROJECT_DIR
set -uo pipefail
ROTQ=$1 PROJECT=$2
for tool in slurmctld slurmd sbatch squeue scancel; do
  command -v $tool >/dev/null || { echo "FAIL: $tool not installed (scripts/deps.sh installs slurm-wlm)"; exit 1; }
done
work=$(mktemp -d)
ctld_pid= slurmd_pid=
cleanup() {
  [[ -n $slurmd_pid ]] && kill "$slurmd_pid" 2>/dev/null
  [[ -n $ctld_pid ]] && kill "$ctld_pid" 2>/dev/null
  for _ in $(seq 50); do
    kill -0 "$slurmd_pid" 2>/dev/null || kill -0 "$ctld_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$slurmd_pid" "$ctld_pid" 2>/dev/null
  pkill -9 -f "slurmstepd.*$work" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
host=$(hostname -s)
mem=$(awk '/MemTotal/ {print int($2 / 1024) - 1024}' /proc/meminfo)
mkdir -p "$work/state" "$work/spool" "$work/tmp"
cat > "$work/slurm.conf" <<CONF
ClusterName=rotqtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${ROTQ_TEST_SLURM_PORT:-16817}
SlurmdPort=$((${ROTQ_TEST_SLURM_PORT:-16817} + 1))
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
# PMIx's per-step directories go here, not /tmp: job ids restart at 1 with every private
# controller, and directories left in /tmp by an earlier killed run would collide.
TmpFS=$work/tmp
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=$mem State=UNKNOWN
PartitionName=rotq Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$work/slurm.conf
slurmctld -D -i -f "$SLURM_CONF" > "$work/ctld.out" 2>&1 &
ctld_pid=$!
slurmd -D -f "$SLURM_CONF" > "$work/slurmd.out" 2>&1 &
slurmd_pid=$!
for _ in $(seq 300); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 0.2; done
sinfo -h -o %t | grep -q idle || { echo "FAIL: the node never became idle"; cat "$work"/*.out "$work"/*.log; exit 1; }

experiment() {  # experiment NAME OUTPUT EXTRA_QUANTIZATION
  cat <<YAML
name: $1
output: $2
models:
  - {name: s260k, path: $PROJECT/data/stories260K/stories260K.bin, tokenizer: $PROJECT/data/stories260K/tok512.bin}
seeds: [0, 1]
calibration: {text: $PROJECT/data/tinystories_sample.txt, nsamples: 8}
quantization: {w_bits: 4, $3}
evaluation: {ppl_texts: [$PROJECT/data/tinystories_sample.txt], seqlen: 128, max_windows: 4, acts: [16/16, 4/4]}
sweep:
  rotation.method: [none, hadamard]
YAML
}
wait_job() {  # wait_job JOB SECONDS
  for _ in $(seq $(($2 * 5))); do
    # Done when squeue answers with no task left (or no longer knows the job); a failed query
    # (a busy controller) is not an answer.
    if out=$(squeue -h -j "$1" 2>&1); then
      [[ -z $out ]] && return 0
    elif grep -q "Invalid job id" <<< "$out"; then
      return 0
    fi
    sleep 0.2
  done
  echo "FAIL: job $1 still queued after $2 s"; squeue; tail -30 "$work"/*.h5.d/logs/* 2>/dev/null
  return 1
}
done_cells() { ls "$work"/$1.h5.d/*.h5 2>/dev/null | wc -l; }

# 1. A 4-cell sweep, 2 ranks per cell.
experiment first "$work/first.h5" "w_method: rtn" > "$work/first.yaml"
"$ROTQ" --log-level error submit "$work/first.yaml" --ranks 2 --dry-run > "$work/dry.sbatch" ||
  { echo "FAIL: dry run"; exit 1; }
grep -q "^#SBATCH --array=0-3$" "$work/dry.sbatch" && grep -q "srun --mpi=pmix -n 2 " "$work/dry.sbatch" ||
  { echo "FAIL: the script"; cat "$work/dry.sbatch"; exit 1; }
job=$("$ROTQ" --log-level error submit "$work/first.yaml" --ranks 2 --partition rotq) ||
  { echo "FAIL: rotq submit"; echo "$job"; exit 1; }
[[ $job =~ ^[0-9]+$ ]] || { echo "FAIL: rotq submit printed '$job', not a job id"; exit 1; }
echo "submitted job $job"
wait_job "$job" 300 || exit 1
"$ROTQ" --log-level error status "$work/first.yaml" > "$work/status1"
grep -q "^4 done, 0 running, 0 failed, 0 pending" "$work/status1" ||
  { echo "FAIL: first sweep"; cat "$work/status1"; tail -20 "$work"/first.h5.d/logs/*; exit 1; }
grep -h "ranks" "$work"/first.h5.d/logs/* >/dev/null 2>&1
"$ROTQ" --log-level error merge "$work/first.yaml" | grep -q "^4 cells" || { echo "FAIL: merge"; exit 1; }
"$ROTQ" --log-level error table "$work/first.h5" --format csv --metric ppl > "$work/table1" &&
  grep -q "^W4A4KV4,hadamard," "$work/table1" || { echo "FAIL: table"; cat "$work/table1"; exit 1; }
echo "first sweep: 4 cells done over 2 ranks each"

# 2. Cancelled midway, resubmitted: only the unfinished cells run again.
experiment second "$work/second.h5" "w_method: gptq" > "$work/second.yaml"
job=$("$ROTQ" --log-level error submit "$work/second.yaml" --ranks 2)
for _ in $(seq 1500); do
  (($(done_cells second) >= 1)) && break
  sleep 0.2
done
scancel "$job"
wait_job "$job" 60 || exit 1
n_before=$(done_cells second)
((n_before >= 1 && n_before < 4)) || { echo "FAIL: the cancel did not land midway ($n_before cells done)"; exit 1; }
stat -c '%n %i %Y' "$work"/second.h5.d/*.h5 > "$work/before"
job2=$("$ROTQ" --log-level info submit "$work/second.yaml" --ranks 2 2> "$work/submit2.log")
grep -q "submitted $((4 - n_before)) cells" "$work/submit2.log" ||
  { echo "FAIL: the resubmission should send $((4 - n_before)) cells"; cat "$work/submit2.log"; exit 1; }
wait_job "$job2" 300 || exit 1
"$ROTQ" --log-level error status "$work/second.yaml" > "$work/status2"
grep -q "^4 done, 0 running, 0 failed, 0 pending" "$work/status2" ||
  { echo "FAIL: second sweep"; cat "$work/status2"; tail -n 15 "$work"/second.h5.d/logs/*; cat "$work"/second.h5.d/*.sbatch; exit 1; }
while read -r name inode mtime; do
  [[ $(stat -c '%i %Y' "$name") == "$inode $mtime" ]] || { echo "FAIL: $name was recomputed"; exit 1; }
done < "$work/before"
"$ROTQ" --log-level error submit "$work/second.yaml" | grep -q "nothing to submit" ||
  { echo "FAIL: a third submission should find nothing to do"; exit 1; }
echo "PASS: 4 cells over srun; cancelled after $n_before cells, resubmitted $((4 - n_before)), none recomputed"
