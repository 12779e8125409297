"""How the CPU driver uses spare threads when a call has fewer work items than threads.

    python benchmarks/bench_threads.py                       # the default grid, E=1
    python benchmarks/bench_threads.py --shape 1,4,64,32 --cells rnn --dtypes float64

For each shape (E, B, H, T), cell and dtype, three ways to run the same call take turns,
in a new random order every round, so that all see the same load of a shared machine.
A turn is 3 calls, and the first is not timed: a call finds the caches as the one before
left them, and in use a call follows calls of its own kind (one way's items sit in
another core's cache after another way's call). The ways:

- ``one``: one Numba thread (one item per network, no team);
- ``old``: the policy before 2026-12-07, every spare thread used: tiles halved until the
  items fill the threads (``CPU_SPLIT_MIN_SEQUENCES = 1``, ``CPU_SPLIT_MIN_WORK = 0``), then
  teams whose members keep 32k multiply-adds of a step's product (nb·G·H² / members);
- ``now``: ``rnnsim.config`` as it is;
- with ``--teams``, also ``teams``: no tile halved, and teams by the rule before
  2026-12-07 (what a team does for items of several sequences).

Printed per row: the median time of each (of its timed calls), the items and team size each policy chose,
and old/one, now/one (below 1: the threads help). The numbers of every way are checked
against each other (the tiles change the order of the sums, so to a float tolerance).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numba
import numpy as np

import rnnsim
from rnnsim import config
from rnnsim._machine import cpu_model
from rnnsim.kernels import cpu

DEFAULT_SHAPES = ["1,4,64,32", "1,4,64,256", "1,16,64,32", "1,16,64,128", "1,32,64,64", "1,32,128,64",
                  "1,4,256,32", "1,8,256,32", "1,1,128,64", "1,1,512,32", "1,1,1024,16", "1,4,512,16",
                  "1,4,1024,8"]
OLD = {"CPU_SPLIT_MIN_SEQUENCES": 1, "CPU_SPLIT_MIN_WORK": 0}
TEAM_SIZE = cpu._team_size


def _old_team_size(n_items, nb, G, H):
    """The team rule before 2026-12-07: members of at least 32k multiply-adds a step."""
    threads = numba.get_num_threads()
    return 1 if n_items >= threads else max(1, min(threads // n_items, nb * G * H * H // (1 << 15)))


def _use(threads, settings, team_size):
    numba.set_num_threads(threads)
    for key, value in settings.items():
        setattr(config, key, value)
    cpu._team_size = team_size


def _policy(E, B, H, T, G, D):
    """(items, team size) that the driver chooses for this call under the current settings."""
    net, b0, b1 = cpu._work_items(E, B, cpu.sequence_work(T, G, H, D))
    return len(net), cpu._team_size(len(net), int(b1[0] - b0[0]), G, H)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", metavar="E,B,H,T")
    parser.add_argument("--cells", default="rnn,lstm")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--threads", type=int, default=2, help="threads of 'old' and 'now'")
    parser.add_argument("--teams", action="store_true", help="also time 'teams' (see above)")
    parser.add_argument("--budget", type=float, default=2.0,
                        help="seconds of calls per row (at least 5 rounds)")
    args = parser.parse_args(argv)
    shapes = []
    for text in args.shape or DEFAULT_SHAPES:
        parts = text.split(",")
        if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
            parser.error(f"--shape {text!r} is not E,B,H,T of positive integers")
        shapes.append(tuple(map(int, parts)))
    if not 2 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
        parser.error(f"--threads must be 2 to {numba.config.NUMBA_NUM_THREADS}")
    D, K = 8, 4
    now = {key: getattr(config, key) for key in OLD}
    ways = {"one": (1, now, TEAM_SIZE), "old": (args.threads, OLD, _old_team_size),
            "now": (args.threads, now, TEAM_SIZE)}
    if args.teams:
        ways["teams"] = (args.threads, {**now, "CPU_SPLIT_MIN_SEQUENCES": 1 << 62}, _old_team_size)
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numba {numba.__version__}")
    print(f"# D={D}, K={K}, loss=last; medians of calls taken in turn; 'old' and 'now' on "
          f"{args.threads} threads")
    now.update({key: getattr(config, key) for key in ("CPU_TEAM_MIN_SHARE", "CPU_TEAM_MIN_SHARE_SEQUENCES")})
    print(f"# now: {', '.join(f'{k}={v}' for k, v in now.items())}")
    extra = " | teams | teams: items, team | teams/one" if args.teams else ""
    print("| shape | cell | dtype | one | old | now | old: items, team | now: items, team "
          f"| old/one | now/one{extra} |")
    print("|---|---|---|---|---|---|---|---|---|---|" + "---|---|---|" * bool(extra))
    for E, B, H, T in shapes:
        for cell in args.cells.split(","):
            G = rnnsim.cells.get(cell).G
            for dtype in args.dtypes.split(","):
                params = rnnsim.init_params(cell, H, D, K, E, seed=0, dtype=dtype)
                rng = np.random.default_rng(1)
                x = rng.standard_normal((E, B, T, D)).astype(dtype)
                y = rng.integers(0, K, size=(E, B))
                times, chosen, grads = {w: [] for w in ways}, {}, {}
                try:
                    for way, setting in ways.items():
                        _use(*setting)
                        chosen[way] = _policy(E, B, H, T, G, D)
                        grads[way] = rnnsim.gradients(cell, params, x, y)["weight_hh_l0"]  # warm-up
                    rounds, end = 0, time.perf_counter() + args.budget
                    order = np.random.default_rng(0)
                    while rounds < 5 or time.perf_counter() < end:
                        rounds += 1
                        for way in order.permutation(list(ways)):
                            _use(*ways[way])
                            for call in range(3):
                                start = time.perf_counter()
                                rnnsim.gradients(cell, params, x, y)
                                if call:
                                    times[way].append(time.perf_counter() - start)
                finally:
                    _use(args.threads, now, TEAM_SIZE)
                tol = 1e-9 if dtype == "float64" else 1e-3
                for way in ways:
                    scale = np.abs(grads["one"]).max()
                    if not np.abs(grads[way] - grads["one"]).max() <= tol * scale:
                        raise SystemExit(f"{cell} {dtype} {E},{B},{H},{T}: '{way}' disagrees with one thread")
                med = {w: float(np.median(t)) for w, t in times.items()}
                print(f"| E={E} B={B} H={H} T={T} | {cell} | {dtype} | "
                      + " | ".join(f"{med[w] * 1e3:.2f} ms" for w in ("one", "old", "now"))
                      + f" | {chosen['old'][0]}, {chosen['old'][1]} | {chosen['now'][0]}, {chosen['now'][1]}"
                      + f" | {med['old'] / med['one']:.2f} | {med['now'] / med['one']:.2f}"
                      + (f" | {med['teams'] * 1e3:.2f} ms | {chosen['teams'][0]}, {chosen['teams'][1]}"
                         f" | {med['teams'] / med['one']:.2f}" if args.teams else "") + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
