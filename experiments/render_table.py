#!/usr/bin/env python3
"""Renders quantize-eval JSON lines as method tables (mean ± sample std over seeds), one per text.

    experiments/render_table.py results/stories260k_methods.jsonl > results/stories260k_methods.md
    experiments/render_table.py --metric kl results/methods_planted.jsonl

Rows are the records' --label when they have one (in the order of LABELS, then first seen),
else the rotation kind; with labels, a last column gives the rotation's optimisation time.
"""
import collections
import json
import statistics
import sys

ROWS = [("none", "NR"), ("random", "RO"), ("hadamard", "RH")]
LABELS = {"none": "NR", "random": "RO", "hadamard": "RH", "dfrot:1": "DFRot γ=1",
          "dfrot:50": "DFRot γ=50", "dfrot:100": "DFRot γ=100", "dfrot:200": "DFRot γ=200",
          "dfrot:inf": "DFRot γ=∞", "optrot": "OptRot", "optrot+": "OptRot+"}


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


def evaluations(rec):
    """The per-evaluation rows of a line: a cell record (quantize-eval --json since the one result
    type) gives one per evaluation; the older per-evaluation lines are already rows."""
    if "evals" not in rec:
        yield rec
        return
    c = rec["config"]
    for e in rec["evals"]:
        yield {"ppl_text": e["text"], "w_bits": int(c["quantization.w_bits"]),
               "a_bits": e["a_bits"], "kv_bits": e["kv_bits"], "w_quant": c["quantization.w_method"],
               "label": c["model.name"], "rotation_kind": c["rotation.method"],
               "seed": int(c["seed"]), "ppl": e["ppl"], "kl": e["kl"], "seconds": rec["seconds"],
               "rotation_learning": ({"seconds": rec["seconds"]["rotation_learning"]}
                                     if rec["rotation_loss"] else None)}


def main(path, metric="ppl"):
    cells = collections.defaultdict(list)
    rot_seconds = collections.defaultdict(list)
    texts, columns, rows = [], set(), []
    def add(rec):
        text = rec["ppl_text"]
        if text not in texts:
            texts.append(text)
        col = column(rec)
        columns.add(col)
        row = rec.get("label") or rec["rotation_kind"]
        if row not in rows:
            rows.append(row)
        cells[(text, row, col)].append((rec["seed"], rec[metric]))
        if rec.get("rotation_learning") and col.startswith("W4A16"):
            rot_seconds[row].append(rec["rotation_learning"]["seconds"])
        elif col.startswith("W4A16"):
            rot_seconds[row].append(rec["seconds"]["rotate"])

    for line in open(path):
        line = line.strip()
        if not line:
            continue
        for rec in evaluations(json.loads(line)):
            add(rec)
    cols = sorted(columns, key=column_order)
    for text in texts:
        seeds = sorted({s for (t, _, _), v in cells.items() if t == text for s, _ in v})
        what = "perplexity" if metric == "ppl" else "KL from the FP model, nats/token"
        print(f"### {text} ({what}; mean ± std over seeds {', '.join(map(str, seeds))})\n")
        labelled = any(r in LABELS for r in rows)
        order = ([(r, LABELS.get(r, r)) for r in sorted(rows, key=lambda r: list(LABELS).index(r)
                                                         if r in LABELS else len(LABELS))]
                 if labelled else [(k, n) for k, n in ROWS if k in rows])
        extra = " rotation s |" if labelled else ""
        print("| rotation | " + " | ".join(cols) + " |" + extra)
        print("|---|" + "---|" * len(cols) + ("---|" if labelled else ""))
        for kind, label in order:
            out = []
            for col in cols:
                vals = [p for _, p in cells.get((text, kind, col), [])]
                if not vals:
                    out.append("–")
                elif len(vals) == 1:
                    out.append(f"{vals[0]:.3f}")
                else:
                    out.append(f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}")
            tail = ""
            if labelled:
                t = rot_seconds.get(kind, [])
                tail = f" {statistics.mean(t):.2f} |" if t else " – |"
            print(f"| {label} | " + " | ".join(out) + " |" + tail)
        print()


if __name__ == "__main__":
    args = sys.argv[1:]
    metric = "ppl"
    if len(args) == 3 and args[0] == "--metric" and args[1] in ("ppl", "kl"):
        metric, args = args[1], args[2:]
    if len(args) != 1:
        sys.exit("usage: render_table.py [--metric ppl|kl] RESULTS.jsonl")
    main(args[0], metric)
