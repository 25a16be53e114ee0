#!/usr/bin/env bash
# The extended method table (issue 4): NR / RO / RH / DFRot (γ ∈ {1, 50, 100, 200, ∞}) / OptRot /
# OptRot+, weights GPTQ at 4 and 3 bits, activations A16/A8/A4 and A4 with a 4-bit KV cache, over
# several seeds, on one model. Appends one JSON line per (method, seed, weights, activations) to
# $OUT; experiments/render_table.py renders it (with the rotation's optimisation time).
#
#   experiments/methods_extended.sh stories          # the real stories260K, perplexity
#   experiments/methods_extended.sh planted          # synthetic planted-massive model, KL from FP
#   SEEDS="0 1" OUT=/tmp/x.jsonl experiments/methods_extended.sh stories
#   METHODS="optrot+" THREADS=1 experiments/methods_extended.sh planted   # one method, one core
set -euo pipefail
cd "$(dirname "$0")/.."
ROTQ=${ROTQ:-build/rotq}
which=${1:?usage: methods_extended.sh stories|planted}
SEEDS=${SEEDS:-0 1 2}
OUT=${OUT:-results/methods_${which}.jsonl}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

case "$which" in
  stories)
    model=(--model data/stories260K/stories260K.bin --tokenizer data/stories260K/tok512.bin
           --nsamples 128 --calib-seqlen 512 --seqlen 512)
    ;;
  planted)
    # 5.0M parameters: dim 256, 6 layers; massive activations planted from layer 1 on the BOS and
    # '.' tokens of tok512, attention sinks, 4 outlier channels; scored by KL from its FP output.
    "$ROTQ" --log-level warn synth --like tiny \
      --dims dim=256,hidden=688,layers=6,heads=8,kv_heads=8,ctx=256,vocab=512,tied=0 \
      --massive "tokens=1;426,logit_scale=4,outliers=4" --seed 1 \
      --tokenizer data/stories260K/tok512.bin --out "$work/planted" > /dev/null
    model=(--model "$work/planted" --nsamples 128 --calib-seqlen 256 --kl --max-windows 20)
    ;;
  *) echo "unknown model set '$which' (stories or planted)" >&2; exit 2 ;;
esac
common=("${model[@]}" --calib data/wikitext-2-raw/wiki.train.part.txt
        --ppl-text data/tinystories_sample.txt --kv-clip 0.95 --w-quant gptq --json)
read -r -a methods <<< "${METHODS:-none random hadamard dfrot:1 dfrot:50 dfrot:100 dfrot:200 dfrot:inf optrot optrot+}"

mkdir -p "$(dirname "$OUT")"
tmp="$work/out.jsonl"
for seed in $SEEDS; do
  for method in "${methods[@]}"; do
    args=(--rotation "${method%%:*}" --label "$method")
    [[ $method == dfrot:* ]] && args+=(--dfrot-gamma "${method#dfrot:}")
    run() { "$ROTQ" --log-level warn --threads "${THREADS:-0}" quantize-eval "${common[@]}" "${args[@]}" --seed "$seed" "$@" >> "$tmp"; }
    run --w-bits 4 --acts 16/16 --acts 8/16 --acts 4/16 --acts 4/4
    run --w-bits 3 --acts 16/16
    echo "$which seed $seed $method done ($(date +%T))" >&2
  done
done
# Appended only once every run succeeded, so a failed sweep never leaves half a table.
cat "$tmp" >> "$OUT"
