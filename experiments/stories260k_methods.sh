#!/usr/bin/env bash
# The first method table: stories260K under NR / RO / RH rotations, weights RTN or GPTQ, activations
# and KV cache per token / per group, over several seeds. Appends one JSON line per
# (rotation, seed, weights, activations, text) to $OUT; experiments/render_table.py renders it.
#
#   experiments/stories260k_methods.sh            # seeds 0 1 2, into results/stories260k_methods.jsonl
#   SEEDS="0 1 2 3 4" OUT=/tmp/x.jsonl experiments/stories260k_methods.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROTQ=${ROTQ:-build/rotq}
OUT=${OUT:-results/stories260k_methods.jsonl}
SEEDS=${SEEDS:-0 1 2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

common=(
  --model data/stories260K/stories260K.bin --tokenizer data/stories260K/tok512.bin
  --calib data/wikitext-2-raw/wiki.train.part.txt --nsamples 128 --calib-seqlen 512
  --ppl-text data/tinystories_sample.txt --ppl-text data/wikitext-2-raw/wiki.test.raw
  --seqlen 512 --max-windows 128 --kv-clip 0.95 --json
)
mkdir -p "$(dirname "$OUT")"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for seed in $SEEDS; do
  for rotation in none random hadamard; do
    run() { "$ROTQ" --log-level warn quantize-eval "${common[@]}" --rotation "$rotation" --seed "$seed" "$@" >> "$tmp"; }
    run --w-bits 16 --acts 16/16
    run --w-bits 4 --w-quant rtn --acts 16/16
    run --w-bits 4 --w-quant gptq --acts 16/16 --acts 8/16 --acts 4/16 --acts 4/4
    run --w-bits 3 --w-quant gptq --acts 16/16
    echo "seed $seed rotation $rotation done" >&2
  done
done
# Results are appended only once every run succeeded, so a failed sweep never leaves half a table.
cat "$tmp" >> "$OUT"
