#!/usr/bin/env bash
# LLaMA-3.1- and Qwen3-shaped checkpoints end to end with their real tokenizers (tokenizer.json):
# synthetic weights in complete HF directories (rotq synth --tokenizer), then perplexity,
# quantize-eval under every rotation, zero-shot tasks, generation and an experiment cell, each
# checked for the BOS policy it ran with (LLaMA-3 prepends <|begin_of_text|>, Qwen nothing).
#
#   tests/hf_models_e2e_test.sh ROTQ SHARED_DATA
set -euo pipefail
ROTQ=$1 DATA=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
text="$DATA/text/wikitext-2-raw/wiki.test.raw"
calib="$DATA/text/wikitext-2-raw/wiki.train.slice.txt"
tasks="$DATA/tasks"
fail() { echo "FAIL: $*" >&2; exit 1; }
json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.readlines()[-1])[sys.argv[1]])' "$1"; }

# Fewer layers and a narrow stream; LLaMA-3.1 with attention and MLP biases (as some
# fine-tunes have); Qwen3 with q/k norms and head_dim 48 != 128/4.
"$ROTQ" --log-level warn synth --like llama-3.1-8b --out "$work/llama31" --tokenizer "$DATA/tokenizers/llama3" \
  --dims dim=128,hidden=256,layers=2,heads=4,kv_heads=2,attention_bias=1,mlp_bias=1 >/dev/null
"$ROTQ" --log-level warn synth --like qwen3-8b --out "$work/qwen3" --tokenizer "$DATA/tokenizers/qwen3" \
  --dims dim=128,hidden=256,layers=2,heads=4,kv_heads=2,head_dim=48 >/dev/null
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
  [[ -f "$work/llama31/$f" && -f "$work/qwen3/$f" ]] || fail "synth did not write $f"
done

check_bos() {  # MODEL_NAME JSON_LINE (ppl's line)
  local want=True
  [[ $1 == qwen3 ]] && want=False
  [[ $(json_field bos <<<"$2") == "$want" ]] || fail "$1: bos is not $want: $2"
}
# A cell's record (quantize-eval / tasks --json): its meta.bos.
record_field() { python3 -c 'import json,sys; r=json.loads(sys.stdin.readlines()[-1]); print(eval(sys.argv[1], {"r": r}))' "$1"; }
check_record_bos() {  # MODEL_NAME RECORD_LINE
  local want=true
  [[ $1 == qwen3 ]] && want=false
  [[ $(record_field 'r["meta"]["bos"]' <<<"$2") == "$want" ]] || fail "$1: bos is not $want: $2"
}

for m in llama31 qwen3; do
  echo "== $m: perplexity" >&2
  out=$("$ROTQ" --log-level warn ppl --model "$work/$m" --text "$text" --seqlen 128 --max-windows 4 --json)
  check_bos "$m" "$out"
  [[ $(json_field tokenizer <<<"$out") == byte-level-bpe ]] || fail "$m: not the tokenizer.json"
  # --no-bos / --bos override the tokenizer's policy.
  out=$("$ROTQ" --log-level warn ppl --model "$work/$m" --text "$text" --seqlen 128 --max-windows 2 --no-bos --json)
  [[ $(json_field bos <<<"$out") == False ]] || fail "$m: --no-bos ignored"

  for rot in none random hadamard optrot dfrot optrot+; do
    echo "== $m: quantize-eval --rotation $rot" >&2
    out=$("$ROTQ" --log-level warn quantize-eval --model "$work/$m" --rotation "$rot" \
      --w-bits 4 --w-quant rtn --a-bits 8 --calib "$calib" --nsamples 4 --calib-seqlen 128 --optrot-steps 5 \
      --dfrot-iters 2 --ppl-text "$text" --seqlen 128 --max-windows 2 --json)
    check_record_bos "$m" "$out"
    python3 -c 'import json,math,sys; p=json.loads(sys.stdin.readlines()[-1])["evals"][0]["ppl"]; sys.exit(0 if math.isfinite(p) and p > 1 else 1)' <<<"$out" \
      || fail "$m $rot: perplexity not finite: $out"
  done

  echo "== $m: tasks" >&2
  out=$("$ROTQ" --log-level warn tasks --model "$work/$m" --tasks piqa,arc_easy --tasks-dir "$tasks" --limit 8 --json)
  [[ $(record_field 'len(r["tasks"])' <<<"$out") -ge 2 ]] || fail "$m: tasks printed $out"
  check_record_bos "$m" "$out"

  echo "== $m: generate" >&2
  "$ROTQ" --log-level warn generate --model "$work/$m" --prompt "The capital of France is" --steps 12 >"$work/gen.txt"
  grep -q "The capital of France is" "$work/gen.txt" || fail "$m: generate did not echo its prompt: $(cat "$work/gen.txt")"

  echo "== $m: an experiment cell" >&2
  cat >"$work/$m.yaml" <<YAML
name: e2e_$m
output: $work/$m.h5
models:
  - name: $m
    path: $work/$m
calibration:
  text: $calib
  nsamples: 4
  seqlen: 128
quantization:
  w_bits: 4
  w_method: gptq
evaluation:
  ppl_texts: [$text]
  seqlen: 128
  max_windows: 2
rotation:
  method: hadamard
YAML
  "$ROTQ" --log-level warn run "$work/$m.yaml" >/dev/null
  "$ROTQ" --log-level warn status "$work/$m.yaml" | grep -q "1 done" || fail "$m: the cell is not done"
  want=true
  [[ $m == qwen3 ]] && want=false
  rec=$("$ROTQ" --log-level warn table "$work/$m.yaml" --rows meta.bos,meta.tokenizer_kind --format csv)
  grep -q "^W4A16KV16,$want byte-level-bpe," <<<"$rec" || fail "$m: the cell's record lacks its BOS policy: $rec"
done
echo "ok" >&2
