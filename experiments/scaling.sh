#!/usr/bin/env bash
# Strong scaling of rotq's distributed stages on this machine: calibration + GPTQ (data-parallel
# calibration, all-reduced Hessians, row-parallel GPTQ), DFRot (tokens split, C×C all-reduce) and
# OptRot (matrices split, gradient all-reduce), on one synthetic model at 1, 2 and 4 ranks with one
# thread each (4 ranks oversubscribe a 2-core machine). Each run's --json record holds the stage
# times and the time and bytes of its collectives (the slowest rank's).
#
#   experiments/scaling.sh [OUT.jsonl]
#   experiments/render_scaling.py OUT.jsonl > results/scaling.md
# RANKS (default "1 2 4") and STAGES (default "gptq dfrot optrot") choose what runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROTQ=${ROTQ:-build/rotq}
OUT=${1:-results/scaling.jsonl}
MODEL=${MODEL:-/tmp/rotq-scaling-model}
RANKS=${RANKS:-1 2 4}
STAGES=${STAGES:-gptq dfrot optrot}
export OMP_WAIT_POLICY=PASSIVE OMPI_MCA_btl_vader_single_copy_mechanism=none
tok=data/stories260K/tok512.bin
if [[ ! -f $MODEL/config.json ]]; then
  "$ROTQ" --log-level warn synth --like tiny --massive "" --tokenizer "$tok" --out "$MODEL" \
    --dims dim=512,hidden=1376,layers=8,heads=8,kv_heads=8,vocab=512,ctx=1024
fi
common=(quantize-eval --model "$MODEL" --tokenizer "$tok" --calib data/wikitext-2-raw/wiki.train.part.txt
        --ppl-text data/tinystories_sample.txt --seqlen 512 --max-windows 16 --json)
: > "$OUT"
for np in $RANKS; do
  run() {
    mpirun --allow-run-as-root --oversubscribe -np "$np" "$ROTQ" --log-level warn --threads 1 \
      "${common[@]}" "$@" >> "$OUT"
  }
  for stage in $STAGES; do
    case $stage in
      gptq) run --label "gptq" --rotation hadamard --w-quant gptq --w-bits 4 --nsamples 64 --calib-seqlen 512 ;;
      dfrot) run --label "dfrot" --rotation dfrot --dfrot-iters 20 --dfrot-nsamples 4 --dfrot-seqlen 512 ;;
      optrot) run --label "optrot" --rotation optrot --optrot-steps 100 ;;
      *) echo "scaling.sh: unknown stage '$stage' (expected gptq, dfrot, optrot)" >&2; exit 2 ;;
    esac
  done
  echo "ranks $np done ($(date +%T))" >&2
done
