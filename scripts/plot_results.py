#!/usr/bin/env python3
"""Draws `rotq plot`'s figure from the CSV it writes (series, x, mean, std, n).

    scripts/plot_results.py DATA.csv OUT.png XLABEL YLABEL [--logx] [--title TEXT]

One line per series with the spread over seeds as error bars. x is numeric when every value is a
finite number (log-scaled with --logx); otherwise (e.g. DFRot's gamma = inf, method names) the
values are categories in the CSV's order.
"""
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv):
    data, out, xlabel, ylabel = argv[1:5]
    logx = "--logx" in argv
    title = argv[argv.index("--title") + 1] if "--title" in argv else ""
    with open(data, newline="") as f:
        rows = list(csv.DictReader(f))
    xs = []
    for r in rows:
        if r["x"] not in xs:
            xs.append(r["x"])

    def number(v):
        try:
            x = float(v)
            return x if math.isfinite(x) else None
        except ValueError:
            return None

    numeric = all(number(x) is not None for x in xs)
    pos = {x: (number(x) if numeric else i) for i, x in enumerate(xs)}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series = []
    for r in rows:
        if r["series"] not in series:
            series.append(r["series"])
    for s in series:
        pts = [r for r in rows if r["series"] == s]
        ax.errorbar([pos[r["x"]] for r in pts], [float(r["mean"]) for r in pts],
                    yerr=[float(r["std"]) for r in pts], marker="o", capsize=3, label=s)
    if not numeric:
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs)
    elif logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main(sys.argv)
