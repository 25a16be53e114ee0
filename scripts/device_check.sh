#!/usr/bin/env bash
# The GPU session's checks in one run, on the device machine (README: "GPU build"), in order of
# value for issue 18 so that a run cut short still reports the first ones:
#   1. build rotq against the machine's CUDA LibTorch and NCCL (scripts/device_build.sh);
#   2. the GPU kernel checks (AtenPath.*: GPTQ's fused CUDA block kernel against the ATen loop,
#      OptRot's bfloat16 gradient against the CPU's emulation);
#   3. bench rotation on the GPU: one DFRot iteration (float64 / float32 token pass; SVD, Newton
#      and mixed-precision Newton polar) and one OptRot step (float64, float32, TF32, bf16) at
#      C = 4096 (ROTQ_BENCH_MODELS="llama-2-7b llama-2-70b" adds C = 8192);
#   4. a synthetic LLaMA-2-7B-shaped model with planted outliers: the whole pipeline on one GPU
#      (RH + GPTQ W4 with float32 Hessians, evaluation at A16/A4/A4KV4 with KL from the
#      floating-point model);
#   5. bench gptq: GPTQ stage by stage at 7B shapes, with the fused kernel and with ATen ops;
#   6. DFRot (float32) and OptRot (bf16, TF32) runs on the 7B model to time their iterations at
#      full size (the model is made here when stage 4 did not run);
#   7. stories260K: the same cells on --device cpu and --device cuda (GPTQ; RH, DFRot, OptRot);
#   8. the multi-rank suite over the NCCL backend at one rank; one SpinQuant step at 7B width.
# ROTQ_CHECK_STAGES picks stages (kernels bench 7b benchgptq 7brot stories nccl spinquant; bench is
# bench rotation), ROTQ_BUILD_TARGETS the targets built, ROTQ_SYNTH_LAYERS the 7B model's layer
# count (32), ROTQ_7BROT_MATCH the 7brot runs whose flags contain it. The logs go to
# ROTQ_CHECK_LOGS and, where the device tool's $OUT is set, are packed on exit into
# $OUT/device_check.tgz (the tool returns at most 8 files). ROTQ_CHECK_BUDGET_S (default 560) is
# the wall budget: a stage that would not fit is skipped with a note.
set -uo pipefail
LOGS=${ROTQ_CHECK_LOGS:-/tmp/rotq-device-out}
PACK=${OUT:-}
OUT=$LOGS
mkdir -p "$OUT"
pack() { if [[ -n $PACK && $PACK != "$LOGS" ]]; then tar czf "$PACK/device_check.tgz" -C "$LOGS" .; fi; }
trap pack EXIT
BUDGET=${ROTQ_CHECK_BUDGET_S:-560}
T0=$SECONDS
B=${ROTQ_BUILD_DIR:-build-cuda}
stage() { printf '=== [%4ss] %s\n' "$((SECONDS - T0))" "$*" | tee -a "$OUT/stages.txt"; }
left() { echo $((BUDGET - (SECONDS - T0))); }
want() { [[ " ${ROTQ_CHECK_STAGES:-kernels bench 7b benchgptq 7brot stories nccl spinquant} " == *" $1 "* ]]; }
fits() {  # fits SECONDS NAME: enough budget left for a stage?
  if (($(left) < $1)); then stage "skip $2: $(left)s left, needs ~$1s"; return 1; fi
}

stage "env"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  (. /etc/os-release && echo "$PRETTY_NAME")
  nproc; free -g | head -2; g++ --version | head -1; nvcc --version | tail -1
  python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

stage "build"
if ! ROTQ_BUILD_TARGETS=${ROTQ_BUILD_TARGETS:-"rotq rotq_mpi_tests rotq_solver_tests"} bash scripts/device_build.sh > "$OUT/build.log" 2>&1; then
  grep -E "error|Error|FAILED" "$OUT/build.log" | head -40
  tail -30 "$OUT/build.log"
  stage "build failed"
  exit 1
fi
# shellcheck disable=SC1091
source /tmp/rotq-sysroot/env.sh
export OMP_WAIT_POLICY=PASSIVE
R="$B/rotq --log-level warn"

if want kernels; then
  stage "GPU kernels vs the ATen formulation (AtenPath.*)"
  timeout 120 "$B/tests/rotq_solver_tests" --gtest_filter='AtenPath.*' > "$OUT/kernels.log" 2>&1
  echo "rc=$?" >> "$OUT/kernels.log"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|rc=|tensor cores|GPU route|emulation|stack on the GPU|R2 batch on the GPU" "$OUT/kernels.log" | head -20
fi

if want bench && fits 90 "bench rotation"; then
  # One DFRot iteration (float64 and float32 token pass; SVD, Newton and mixed Newton polar) and
  # one OptRot step (float64, float32, TF32, bfloat16 gradient) at 7B width (ROTQ_BENCH_MODELS adds 70B).
  stage "bench rotation (cuda)"
  # shellcheck disable=SC2086
  timeout $(($(left) > 150 ? 150 : $(left))) $R bench rotation --device cuda \
    --models ${ROTQ_BENCH_MODELS:-llama-2-7b} --tokens 32768 --rows 32768 --gemm-n 8192 \
    > "$OUT/bench_rotation_cuda.txt" 2>&1
  cat "$OUT/bench_rotation_cuda.txt"
fi

LAYERS=${ROTQ_SYNTH_LAYERS:-32}
M=/tmp/synth-7b-$LAYERS  # one model per layer count: a rerun with another count does not reuse it
R7="$B/rotq --comm nccl"  # with --log-level LEVEL
C7="quantize-eval --model $M --device cuda --dtype bfloat16 --calib data/wikitext-2-raw/wiki.train.part.txt
    --ppl-text data/wikitext-2-raw/wiki.test.raw --max-windows 16 --kl --json"
synth_7b() {  # the 7B-shaped model with planted massive activations, once per layer count
  [[ -f $M/config.json ]] && return 0
  stage "7B-shaped synthetic model"
  $R synth --like llama-2-7b --dims "layers=$LAYERS" --dtype bfloat16 --massive "" \
    --tokenizer .device/llama2_tokenizer.model --out $M --json > "$OUT/synth_7b.json" 2>&1
}
if want 7b && fits $((LAYERS >= 32 ? 150 : 40)) "7B synth + pipeline"; then
  # Fewer than 32 layers times GPTQ on the first layers only (its cost is the same per layer).
  synth_7b
  stage "7B pipeline: RH + GPTQ W4 on cuda"
  # Float32 Hessians and GPTQ arithmetic, as the reference code (issue 18's ≤ 90 s target; the
  # bfloat16 activations are summed on TF32 tensor cores, exactly). 2026-11-30's 235 s was float64.
  # shellcheck disable=SC2086
  timeout $(($(left) > 260 ? 240 : $(left) - 20)) $R7 --log-level info $C7 --rotation hadamard --w-quant gptq \
    --w-bits 4 --hessian-dtype float32 --nsamples 128 --acts 16/16 --acts 4/16 --acts 4/4 \
    --label "7b rh gptq" >> "$OUT/synth7b.jsonl" 2> "$OUT/synth7b_rh.log"
  echo "rc=$?" >> "$OUT/synth7b_rh.log"
  grep -E "gptq layers|weights gptq|KL|rc=|error" "$OUT/synth7b_rh.log" | tail -12
fi

if want benchgptq && fits 60 "bench gptq"; then
  # GPTQ stage by stage at 7B shapes on the GPU (≲ 0.4 s per 4096² linear with the shared-Hessian
  # stacking), and the 4096² solve with the column loop as ATen ops (ROTQ_ATEN_KERNELS=1 turns the
  # fused kernel off): what the fused kernel saves.
  stage "bench gptq (cuda)"
  timeout $(($(left) > 100 ? 100 : $(left))) $R bench gptq --device cuda --shapes 4096x4096 \
    11008x4096 4096x11008 --repeats 2 --shared 3 --gemm-n 8192 > "$OUT/bench_gptq_cuda.txt" 2>&1
  cat "$OUT/bench_gptq_cuda.txt"
  fits 40 "bench gptq aten" && ROTQ_ATEN_KERNELS=1 timeout 50 $R bench gptq --device cuda \
    --shapes 4096x4096 --repeats 2 --gemm-n 8192 > "$OUT/bench_gptq_cuda_aten.txt" 2>&1
  cat "$OUT/bench_gptq_cuda_aten.txt" 2>/dev/null
fi

if want 7brot && fits 100 "7B rotations" && synth_7b && [[ -f $M/config.json ]]; then
  # The fast settings of issue 18 (float32 token pass and mixed polar; TF32 and bfloat16
  # gradients): the per-iteration / per-step targets at full size (an OptRot step ≤ 0.25 s needs
  # the bfloat16 products: TF32 measured 0.5 s); bench rotation has the float64 rows.
  for rot in "dfrot --dfrot-iters 10 --dfrot-precision float32" \
    "optrot --optrot-steps 10 --optrot-precision bf16" \
    "optrot --optrot-steps 10 --optrot-precision tf32"; do
    [[ $rot == *"${ROTQ_7BROT_MATCH:-}"* ]] || continue  # e.g. ROTQ_7BROT_MATCH=bf16: that run only
    fits 60 "7B $rot" || break
    stage "7B $rot"
    # DFRot at debug level: each Procrustes step's polar cost (Newton iterations, float32 ones).
    level=info
    [[ $rot == dfrot* ]] && level=debug
    # shellcheck disable=SC2086
    timeout $(($(left) > 100 ? 90 : $(left) - 10)) $R7 --log-level $level $C7 --rotation $rot --w-bits 16 \
      --nsamples 8 --acts 16/16 --acts 4/4 --label "7b $rot" >> "$OUT/synth7b.jsonl" \
      2>> "$OUT/synth7b_rot.log"
    echo "rc=$?" >> "$OUT/synth7b_rot.log"
  done
  grep -E "iteration|step|rotation|polar|KL|rc=|error" "$OUT/synth7b_rot.log" | tail -40
  cut -c1-400 "$OUT/synth7b.jsonl"
fi

want stories && stage "stories260K cpu vs cuda"
S="quantize-eval --model data/stories260K/stories260K.bin --tokenizer data/stories260K/tok512.bin
   --calib data/wikitext-2-raw/wiki.train.part.txt --nsamples 32 --ppl-text data/tinystories_sample.txt
   --w-quant gptq --w-bits 4 --acts 16/16 --acts 4/16 --acts 4/4 --kv-clip 0.95 --json"
for rot in hadamard "dfrot --dfrot-iters 20" "optrot --optrot-steps 100"; do
  want stories || break
  fits 40 "stories $rot" || break
  # shellcheck disable=SC2086
  $R --comm local $S --rotation $rot --label "cpu $rot" --device cpu >> "$OUT/stories.jsonl" 2>> "$OUT/stories.err"
  # shellcheck disable=SC2086
  $R --comm nccl $S --rotation $rot --label "cuda $rot" --device cuda >> "$OUT/stories.jsonl" 2>> "$OUT/stories.err"
done
want stories && [[ -s $OUT/stories.jsonl ]] && python3 - "$OUT/stories.jsonl" <<'PY'
import json, sys
records = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for r in records:  # one cell record per line (runner/record/cell_record.h)
    for e in r["evals"]:
        print(f"{r['label']:<34} {e['acts']:<48} ppl {e['ppl']:.5f}  rotate {r['seconds']['rotate']:.2f}s quant {r['seconds']['quantize']:.2f}s")
PY

if want nccl && fits 40 "nccl suite"; then
  stage "nccl suite (1 rank, host + device tensors)"
  ROTQ_TEST_COMM=nccl timeout 60 "$B/tests/rotq_mpi_tests" > "$OUT/nccl_suite.log" 2>&1
  echo "rc=$?" >> "$OUT/nccl_suite.log"
  grep -E "^\[  (PASSED|FAILED) |FAILED|rc=" "$OUT/nccl_suite.log" | head -20
fi

if want spinquant && fits 90 "bench spinquant"; then
  # One SpinQuant step at 7B width (4 of the 32 layers; a step is linear in the layers) on one
  # 2048-token window, bfloat16: s/step, tokens/s and the ratio to the GPU's GEMM rate.
  stage "bench spinquant (cuda)"
  timeout $(($(left) > 150 ? 150 : $(left))) $R bench spinquant --preset llama-2-7b --dims layers=4 \
    --seqlen 2048 --batch 1 --steps 2 --device cuda --dtype bfloat16 --gemm-n 8192 \
    > "$OUT/bench_spinquant_cuda.txt" 2>&1
  cat "$OUT/bench_spinquant_cuda.txt"
fi
stage "done"
