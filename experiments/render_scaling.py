#!/usr/bin/env python3
"""Renders experiments/scaling.sh's JSON lines as a strong-scaling table (markdown).

Stage time: calibration + GPTQ for the GPTQ cell ("quantize"), the rotation optimisation for DFRot
and OptRot ("rotate"). Speedup T1/Tp, efficiency T1/(p*Tp); communication is the slowest rank's
time inside collectives over the whole run (its stage holds nearly all of it), as a share of the
stage, and the bytes it moved.
"""
import json
import sys



def normalised(r):
    """A cell record (quantize-eval --json since the one result type) in the older line's shape."""
    if "evals" not in r:
        return r
    m = r["meta"]
    return {"label": r["config"]["model.name"], "ranks": int(m["ranks"]), "seconds": r["seconds"],
            "comm": {"seconds_max_rank": float(m["comm_seconds_max_rank"]),
                     "bytes_max_rank": float(m["comm_bytes_max_rank"])}}


rows = [normalised(json.loads(l)) for l in open(sys.argv[1]) if l.startswith("{")]
stage_of = {"gptq": ("quantize", "calibration + GPTQ W4 (8 layers, 64 x 512 tokens)"),
            "dfrot": ("rotate", "DFRot R1, 20 iterations (4 x 512 tokens x 16 block inputs)"),
            "optrot": ("rotate", "OptRot R1 + R2, 100 Cayley steps (56 matrices)")}
print("| stage | ranks | wall s | speedup | efficiency | comm s | comm share | comm MB | eval s |")
print("|---|---|---|---|---|---|---|---|---|")
for label, (key, what) in stage_of.items():
    mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["ranks"])
    if not mine:
        continue
    t1 = mine[0]["seconds"][key] * mine[0]["ranks"]
    for r in mine:
        t = r["seconds"][key]
        p = r["ranks"]
        c = r["comm"]["seconds_max_rank"]
        print(f"| {what if p == mine[0]['ranks'] else ''} | {p} | {t:.2f} | {t1 / t:.2f} | "
              f"{t1 / (p * t):.2f} | {c:.2f} | {100 * c / t:.0f}% | "
              f"{r['comm']['bytes_max_rank'] / 1e6:.1f} | {r['seconds']['eval']:.2f} |")
