"""The tables of results/seed_claims.md, read from the committed results folders.

Usage::

    python benchmarks/seed_claims.py results/seed_claims

For every trainability sweep in the folder (a results folder whose summary has
``train_rate``) it prints, per cell, a T x scale table of "fraction of seeds that
solved / mean final held-out rate / log10 of the gradient ratio at init", the longest
T each cell solved at some scale, and how often points solve in each regime of the
gradient map; for every ``rnnsim train`` folder it prints the per-seed outcome. Every
number of seed_claims.md comes from here; nothing is typed in by hand.
"""
from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path


def sweep_tables(folder: Path) -> list:
    rows = list(csv.DictReader(open(folder / "summary.csv")))
    manifest = json.loads((folder / "manifest.json").read_text())
    config = manifest["config"]
    lines = [f"### `{folder.name}`", "",
             f"measure {config['measure']}, optimizer {config['optimizer']}, lr {config['lr']}, "
             f"clip {config['clip']}, steps {config['steps']}, train-batch {config['train-batch']}, "
             f"H {config['hidden']}, seeds {config['seeds']}, forget-bias {config['forget-bias']}, "
             f"update-bias {config['update-bias']}", ""]
    points = defaultdict(list)
    for r in rows:
        points[(r["cell"], int(r["T"]), float(r["scale"]))].append(r)
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    lengths = sorted({int(r["T"]) for r in rows})
    scales = sorted({float(r["scale"]) for r in rows})
    by_regime = defaultdict(lambda: [0, 0])
    for cell in cells:
        lines += [f"**{cell}**: solved fraction / mean final rate / log10 ratio at init", "",
                  "| T | " + " | ".join(f"S = {s:g}" for s in scales) + " |",
                  "|---|" + "---|" * len(scales)]
        longest = 0
        for T in lengths:
            cells_text = []
            for s in scales:
                group = points[(cell, T, s)]
                solved = sum(int(r["train_solved"]) for r in group) / len(group)
                rate = sum(float(r["train_rate"] or "nan") for r in group) / len(group)
                ratio = sum(float(r["log10_ratio"]) for r in group) / len(group)
                cells_text.append(f"{solved:.1f} / {rate:.2f} / {ratio:+.1f}")
                if solved > 0:
                    longest = max(longest, T)
                for r in group:
                    tally = by_regime[(cell, r["regime"])]
                    tally[0] += int(r["train_solved"])
                    tally[1] += 1
            lines.append(f"| {T} | " + " | ".join(cells_text) + " |")
        lines += ["", f"longest T solved by some seed at some scale: {longest or 'none'}", ""]
    lines += ["networks solved, by the regime of the gradient map at init:", "",
              "| cell | vanishing | stable | exploding |", "|---|---|---|---|"]
    for cell in cells:
        parts = []
        for regime in ("vanishing", "stable", "exploding"):
            solved, total = by_regime[(cell, regime)]
            parts.append(f"{solved}/{total}" if total else "-")
        lines.append(f"| {cell} | " + " | ".join(parts) + " |")
    return lines + [""]


def train_table(folder: Path) -> list:
    final = json.loads((folder / "final.json").read_text())
    config = json.loads((folder / "manifest.json").read_text())["config"]
    lines = [f"### `{folder.name}`", "", ", ".join(f"{k} {v}" for k, v in config.items()
                                                    if k in ("cell", "length", "scale", "dtype", "optimizer",
                                                             "lr", "clip", "steps", "seeds")), ""]
    peaks = defaultdict(list)
    with open(folder / "history.csv") as fh:
        for r in csv.DictReader(fh):
            if r["log10_grad_norm"] not in ("", "nan"):
                peaks[(r["cell"], int(r["seed"]))].append(float(r["log10_grad_norm"]))
    lines += ["| cell | seed | final rate | diverged at | log10 ‖g‖ step 0 | max log10 ‖g‖ "
              "| last log10 ‖g‖ |", "|---|---|---|---|---|---|---|"]
    for cell, outcome in final["cells"].items():
        for i, seed in enumerate(outcome["seed"]):
            norms = peaks[(cell, seed)]
            rate = outcome["rate"][i]
            lines.append(f"| {cell} | {seed} | {'-' if rate is None else f'{rate:.2f}'} | "
                         f"{'-' if outcome['diverged_at'][i] is None else int(outcome['diverged_at'][i])} | "
                         f"{norms[0]:.1f} | {max(norms):.1f} | {norms[-1]:.1f} |")
    return lines + [""]


def main(root):
    root = Path(root)
    for folder in sorted(p for p in root.iterdir() if (p / "manifest.json").is_file()):
        tool = json.loads((folder / "manifest.json").read_text()).get("tool")
        print("\n".join(train_table(folder) if tool == "rnnsim train" else sweep_tables(folder)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/seed_claims")
