#!/usr/bin/env python3
"""Renders quantize-eval JSON lines as method tables (mean ± sample std over seeds), one per text.

    experiments/render_table.py results/stories260k_methods.jsonl > results/stories260k_methods.md
"""
import collections
import json
import statistics
import sys

ROWS = [("none", "NR"), ("random", "RO"), ("hadamard", "RH")]


def column(rec):
    w_bits, a_bits, kv_bits = rec["w_bits"], rec["a_bits"], rec["kv_bits"]
    if w_bits >= 16 and a_bits >= 16 and kv_bits >= 16:
        return "FP32"
    name = f"W{w_bits}A{a_bits}" + (f"KV{kv_bits}" if kv_bits < 16 else "")
    return f"{name} {rec['w_quant'].upper()}"


def column_order(name):
    if name == "FP32":
        return (0, 0, 0, 0, "")
    w, rest = name[1:].split("A", 1)
    a = rest.split(" ")[0].split("KV")[0]
    kv = rest.split("KV")[1].split(" ")[0] if "KV" in rest else "16"
    method = name.split(" ")[1]
    return (1, -int(w), -int(a), -int(kv), method != "RTN", method)


def main(path):
    cells = collections.defaultdict(list)
    texts, columns = [], set()
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        text = rec["ppl_text"]
        if text not in texts:
            texts.append(text)
        col = column(rec)
        columns.add(col)
        cells[(text, rec["rotation_kind"], col)].append((rec["seed"], rec["ppl"]))
    cols = sorted(columns, key=column_order)
    for text in texts:
        seeds = sorted({s for (t, _, _), v in cells.items() if t == text for s, _ in v})
        print(f"### {text} (perplexity; mean ± std over seeds {', '.join(map(str, seeds))})\n")
        print("| rotation | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        for kind, label in ROWS:
            out = []
            for col in cols:
                vals = [p for _, p in cells.get((text, kind, col), [])]
                if not vals:
                    out.append("–")
                elif len(vals) == 1:
                    out.append(f"{vals[0]:.3f}")
                else:
                    out.append(f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}")
            print(f"| {label} | " + " | ".join(out) + " |")
        print()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: render_table.py RESULTS.jsonl")
    main(sys.argv[1])
