#!/usr/bin/env bash
# Regenerates tests/data/tokenizer_reference.json: the ids Hugging Face's JavaScript tokenizers
# (@huggingface/tokenizers, under Node) give for the inputs of tests/tokenizer_json_test.cc, as
# FNV-1a digests. Run it after changing the inputs, the variants or the torture file:
#
#   tests/make_tokenizer_reference.sh [BUILD_DIR] [MODULES_DIR]
#
# BUILD_DIR (default build) is the configured build directory; MODULES_DIR is where
# `npm install @huggingface/tokenizers` is (or will be) run (default: a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
version=0.2.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
modules=${2:-$work/modules}
if [[ ! -d "$modules/node_modules/@huggingface/tokenizers" ]]; then
  mkdir -p "$modules"
  (cd "$modules" && npm init -y >/dev/null && npm install --no-audit --no-fund "@huggingface/tokenizers@$version" >/dev/null)
fi
installed=$(node -p "require('$modules/node_modules/@huggingface/tokenizers/package.json').version")
shared=${ROTQ_SHARED_DATA:-../shared/data}

cmake --build "$build" --target rotq_tokenizer_reference_inputs >/dev/null
"$build/tests/rotq_tokenizer_reference_inputs" "$work"
for name in llama3 qwen3 gpt2-style split-isolated-removed; do
  dir="$work/$name"
  [[ -d "$dir" ]] || dir="$shared/tokenizers/$name"
  echo "encoding with $name ($dir)" >&2
  node scripts/hf_tokenizers_js.mjs ids "$modules" "$dir" "$work/inputs.jsonl" >"$work/$name.out"
done
python3 - "$work" "$installed" >tests/data/tokenizer_reference.json <<'PY'
import json, sys
work, version = sys.argv[1], sys.argv[2]
ref = {"generator": "tests/make_tokenizer_reference.sh", "reference": "@huggingface/tokenizers " + version,
       "digest": "FNV-1a 64 over little-endian int32 ids, -1 between texts; chunks restart every 65536 ids",
       "tokenizers": {}}
for name in ["llama3", "qwen3", "gpt2-style", "split-isolated-removed"]:
    entries = {}
    for line in open(f"{work}/{name}.out"):
        j = json.loads(line)
        entries[j.pop("name")] = j
    ref["tokenizers"][name] = entries
json.dump(ref, sys.stdout, indent=1, ensure_ascii=False)
print()
PY
echo "wrote tests/data/tokenizer_reference.json" >&2
