// The independent reference for rotq's tokenizer.json implementation: Hugging Face's
// @huggingface/tokenizers (pure JavaScript), driven from Node.
//
//   node scripts/hf_tokenizers_js.mjs time MODULES TOKDIR FILE REPEAT
//       encodes FILE (whole, no special tokens added) REPEAT times; prints one JSON line
//       {load_seconds, encode_seconds (best), tokens, fnv1a64}
//   node scripts/hf_tokenizers_js.mjs ids MODULES TOKDIR INPUTS.jsonl
//       INPUTS: one JSON line per input {"name": ..., "texts": [...]}; prints one JSON line per
//       input {"name", "tokens", "fnv1a64", "chunks"} (see tests/tokenizer_reference.h)
//
// MODULES is a directory where `npm install @huggingface/tokenizers` was run.
import fs from "fs";
import path from "path";
import { createRequire } from "module";
import { pathToFileURL } from "url";

const [mode, modules, tokdir, ...rest] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(modules), "package.json"));
const js = await import(pathToFileURL(require.resolve("@huggingface/tokenizers")).href);
const Tokenizer = js.Tokenizer ?? js.default.Tokenizer;

function load() {
  const read = (f) => JSON.parse(fs.readFileSync(path.join(tokdir, f), "utf8"));
  const config = fs.existsSync(path.join(tokdir, "tokenizer_config.json")) ? read("tokenizer_config.json") : {};
  return new Tokenizer(read("tokenizer.json"), config);
}

// FNV-1a 64 over the ids as little-endian int32, with -1 between texts: the digest
// tests/tokenizer_reference.h computes.
const FNV_OFFSET = 0xcbf29ce484222325n, FNV_PRIME = 0x100000001b3n, MASK = (1n << 64n) - 1n;
class Digest {
  constructor(chunk) { this.chunk = chunk; this.h = FNV_OFFSET; this.c = FNV_OFFSET; this.n = 0; this.chunks = []; }
  add(v) {
    for (let k = 0; k < 4; ++k) {
      const b = BigInt((v >>> (8 * k)) & 0xff);
      this.h = ((this.h ^ b) * FNV_PRIME) & MASK;
      this.c = ((this.c ^ b) * FNV_PRIME) & MASK;
    }
    if (++this.n % this.chunk === 0) { this.chunks.push(this.c.toString(16).padStart(16, "0")); this.c = FNV_OFFSET; }
  }
  done() {
    if (this.n % this.chunk !== 0) this.chunks.push(this.c.toString(16).padStart(16, "0"));
    return this.h.toString(16).padStart(16, "0");
  }
}
const CHUNK = 65536;

if (mode === "time") {
  const [file, repeat] = rest;
  let t0 = performance.now();
  const tok = load();
  const load_seconds = (performance.now() - t0) / 1000;
  const text = fs.readFileSync(file, "utf8");
  let best = Infinity, ids = [];
  for (let r = 0; r < Number(repeat); ++r) {
    t0 = performance.now();
    ids = tok.encode(text, { add_special_tokens: false }).ids;
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  const d = new Digest(CHUNK);
  for (const id of ids) d.add(id);
  console.log(JSON.stringify({ load_seconds, encode_seconds: best, tokens: ids.length, fnv1a64: d.done() }));
} else if (mode === "ids") {
  const tok = load();
  const lines = fs.readFileSync(rest[0], "utf8").split("\n").filter((l) => l.length > 0);
  for (const line of lines) {
    const input = JSON.parse(line);
    const d = new Digest(CHUNK);
    let tokens = 0;
    input.texts.forEach((t, i) => {
      if (i > 0) d.add(-1);
      const ids = tok.encode(t, { add_special_tokens: false }).ids;
      tokens += ids.length;
      for (const id of ids) d.add(id);
    });
    const fnv1a64 = d.done();
    console.log(JSON.stringify({ name: input.name, texts: input.texts.length, tokens, fnv1a64, chunks: d.chunks }));
  }
} else {
  console.error("usage: hf_tokenizers_js.mjs time|ids MODULES TOKDIR ...");
  process.exit(2);
}
