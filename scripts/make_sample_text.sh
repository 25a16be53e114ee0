#!/usr/bin/env bash
# Regenerates data/tinystories_sample.txt: TinyStories-like text sampled from stories260K itself
# (no TinyStories text is available to ship; sampling the model itself is the documented substitute).
# Usage: scripts/make_sample_text.sh [rotq binary] [count]
set -euo pipefail
cd "$(dirname "$0")/.."
ROTQ=${1:-build/rotq}
COUNT=${2:-60}
out=data/tinystories_sample.txt
tmp=$(mktemp)
export OMP_WAIT_POLICY=PASSIVE
for seed in $(seq 1 "$COUNT"); do
  "$ROTQ" --threads 1 --log-level warn generate --model data/stories260K/stories260K.bin --tokenizer data/stories260K/tok512.bin \
    --steps 512 --temperature 1.0 --seed "$seed" >> "$tmp"
  printf '\n' >> "$tmp"
done
mv "$tmp" "$out"
echo "wrote $out ($(wc -c < "$out") bytes, $COUNT stories)" >&2
