#!/usr/bin/env python3
"""Draws the PNGs of `rotq inspect` from its CSVs (called by the command; DIR is its --out).

    scripts/plot_inspect.py DIR   ->  DIR/token_error.png, DIR/activations.png, DIR/weights.png

token_error.png   per-token 4-bit error with no rotation (x) against RO, RH and the learned
                  rotation (y), massive-activation tokens in red (the DFRot paper's Figs. 2-4)
activations.png   the largest |x| per layer and block and the median token's max (log scale)
weights.png       weight incoherence per matrix before and after each rotation
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def token_error(d):
    t = rows(f"{d}/token_error.csv")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True, sharey=True)
    x = [float(r["err_nr"]) for r in t]
    m = [r["massive"] == "1" for r in t]
    lim = max(x + [float(r[k]) for r in t for k in ("err_ro", "err_rh", "err_learned")]) * 1.05
    for ax, key, name in zip(axes, ("err_ro", "err_rh", "err_learned"), ("RO", "RH", "learned")):
        y = [float(r[key]) for r in t]
        ax.scatter([a for a, f in zip(x, m) if not f], [b for b, f in zip(y, m) if not f], s=3,
                   alpha=0.35, label="tokens", color="tab:blue")
        ax.scatter([a for a, f in zip(x, m) if f], [b for b, f in zip(y, m) if f], s=12,
                   label="massive", color="tab:red")
        ax.plot([0, lim], [0, lim], "k--", lw=0.8)
        ax.set_xlim(0, lim)
        ax.set_ylim(0, lim)
        ax.set_xlabel("4-bit error, no rotation (‖x−Q(x)‖/‖x‖)")
        ax.set_title(f"{name} vs NR")
    axes[0].set_ylabel("4-bit error, rotated")
    axes[0].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(f"{d}/token_error.png", dpi=110)


def activations(d):
    a = rows(f"{d}/activations.csv")
    labels = [f"{r['layer']}.{r['site']}" for r in a]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(a)), 4))
    idx = range(len(a))
    ax.bar(idx, [float(r["max_abs"]) for r in a], label="max |x| (token, channel)")
    ax.plot(idx, [float(r["median_token_max"]) for r in a], "k.-", label="median token's max |x|")
    ax.set_yscale("log")
    ax.set_xticks(list(idx))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_ylabel("|x| after RMSNorm")
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{d}/activations.png", dpi=110)


def weights(d):
    w = rows(f"{d}/weights.csv")
    labels = [f"{r['layer']}.{r['matrix'].split('.')[0]}" for r in w]
    fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(w)), 4))
    for key, name in (("nr", "NR"), ("ro", "RO"), ("rh", "RH"), ("learned", "learned")):
        ax.plot(range(len(w)), [float(r[f"incoherence_{key}"]) for r in w], ".-", label=name)
    ax.set_xticks(range(len(w)))
    ax.set_xticklabels(labels, rotation=90, fontsize=6)
    ax.set_ylabel("incoherence max|W|·√(mn)/‖W‖_F")
    ax.legend()
    fig.tight_layout()
    fig.savefig(f"{d}/weights.png", dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: plot_inspect.py DIR")
    for draw in (token_error, activations, weights):
        draw(sys.argv[1])
