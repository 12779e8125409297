"""Whole ``rnnsim.gradients`` calls of two checkouts, alternating, in separate processes.

    python benchmarks/bench_ab.py OLD NEW [--rounds 3] CELL:DTYPE:E:B:H:T [...]

Each round runs one process per checkout (their order alternates between rounds), each
with its own ``NUMBA_CACHE_DIR`` under ``--cache`` (the first round compiles). A process
imports rnnsim from its checkout, makes one warm-up call per shape, then times calls for
about 1.5 s (at least 5) and reports their median. Printed: the median over rounds of
each checkout's medians, and NEW ÷ OLD for every round (below 1: NEW is faster). On a
shared machine single rounds move by 10-30%; the per-round ratio is what to read.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import rnnsim
assert rnnsim.__file__.startswith(sys.argv[1]), rnnsim.__file__
medians = {}
for spec in sys.argv[2:]:
    cell, dtype, E, B, H, T = spec.split(":")
    E, B, H, T = map(int, (E, B, H, T))
    params = rnnsim.init_params(cell, H, 8, 4, E, seed=0, dtype=dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((E, B, T, 8)).astype(dtype)
    y = rng.integers(0, 4, size=(E, B))
    rnnsim.gradients(cell, params, x, y)
    times, end = [], time.perf_counter() + 1.5
    while len(times) < 5 or (time.perf_counter() < end and len(times) < 200):
        start = time.perf_counter()
        rnnsim.gradients(cell, params, x, y)
        times.append(time.perf_counter() - start)
    medians[spec] = float(np.median(times))
print(json.dumps(medians))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("shapes", nargs="+", help="CELL:DTYPE:E:B:H:T, e.g. rnn:float64:4:16:256:256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/rnnsim_bench_ab"))
    args = parser.parse_args()
    for spec in args.shapes:
        parts = spec.split(":")
        if len(parts) != 6 or not all(p.isdigit() for p in parts[2:]):
            parser.error(f"shape {spec!r} is not CELL:DTYPE:E:B:H:T")
    checkouts = {"old": args.old.resolve(), "new": args.new.resolve()}
    medians = {"old": {}, "new": {}}
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for tag in order:
            env = dict(os.environ, NUMBA_CACHE_DIR=str(args.cache / tag))
            done = subprocess.run([sys.executable, "-c", CHILD, str(checkouts[tag])] + args.shapes, env=env,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{tag} ({checkouts[tag]}) failed:\n{done.stderr}")
            for spec, t in json.loads(done.stdout).items():
                medians[tag].setdefault(spec, []).append(t)
    print(f"# old = {checkouts['old']}, new = {checkouts['new']}; {args.rounds} rounds")
    for spec in args.shapes:
        old, new = medians["old"][spec], medians["new"][spec]
        ratios = ", ".join(f"{n / o:.2f}" for o, n in zip(old, new))
        old_ms, new_ms = statistics.median(old) * 1e3, statistics.median(new) * 1e3
        print(f"{spec:28s} old {old_ms:9.2f} ms  new {new_ms:9.2f} ms  new/old per round: {ratios}")


if __name__ == "__main__":
    main()
