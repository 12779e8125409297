"""Share of sweep wall time spent inside the kernels (target: >= 90% for >= 100 grid points).

Runs ``rnnsim.sweep.run_sweep`` into a temporary folder (deleted afterwards) and
reports the wall time of the whole sweep, the time inside the computations
(``rnnsim.gradients``, and ``rnnsim.lyapunov`` and the SVDs of W_hh when the
measures need them), their ratio, and the machine. The grid defaults to the
default sweep of ``rnnsim sweep``; any key can be changed, e.g.

    python benchmarks/bench_sweep.py
    python benchmarks/bench_sweep.py --cell rnn --lengths 50:500:10 --scales 0.5:3:12
    python benchmarks/bench_sweep.py --measure rates,lyapunov,pascanu
    python benchmarks/bench_sweep.py --workers 2      # through a Dask LocalCluster (rnnsim[distributed])

With ``--workers``/``--scheduler`` the wall time includes starting the cluster and the
kernel share is summed over the tasks (it may exceed 100%).

What is not kernel time is mostly the file writes after each call and, for the gru,
its mean field (a quadrature per scale, about 80 ms each, computed once per sweep).

The first call of each kernel compiles it (or loads it from Numba's cache), which
counts as sweep time: run twice to see the warm figure. Set NUMBA_CACHE_DIR to a
writable folder so that the cache persists.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np


def machine() -> str:
    import numba

    from rnnsim._machine import cpu_model
    return (f"{cpu_model()}; {os.cpu_count()} logical CPUs, numba {numba.__version__} with "
            f"{numba.get_num_threads()} threads; numpy {np.__version__}; "
            f"Python {platform.python_version()}")


def main(argv=None) -> int:
    from rnnsim import sweep

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for key, value in sweep.DEFAULTS.items():
        parser.add_argument(f"--{key}", default=value, help=f"[default: {value}]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None,
                        help="run on a Dask LocalCluster of this many worker processes (rnnsim[distributed])")
    parser.add_argument("--scheduler", default=None, help="run on the Dask cluster of this scheduler")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the sweep this many times (first one may compile)")
    args = vars(parser.parse_args(argv))
    device, repeat = args.pop("device"), args.pop("repeat")
    cluster = {"workers": args.pop("workers"), "scheduler": args.pop("scheduler")}
    config = sweep.SweepConfig.from_mapping({k.replace("_", "-"): v for k, v in args.items()})

    print(f"machine: {machine()}")
    print(f"grid: {config.n_points} points = {len(config.cell)} cells x {len(config.lengths)} lengths "
          f"x {len(config.scales)} scales x {config.seeds} seeds; H={config.hidden}, B={config.batch}, "
          f"T={config.lengths[0]}..{config.lengths[-1]}, {config.dtype}, device={device}")
    print(f"{'run':>4} {'wall s':>9} {'kernel s':>9} {'share':>7} {'calls':>6} {'points/s':>9}")
    shares = []
    for i in range(repeat):
        folder = tempfile.mkdtemp(prefix="rnnsim-bench-")
        try:
            start = time.perf_counter()
            stats = sweep.run_sweep(config, os.path.join(folder, "run"), device=device, **cluster)
            outer = time.perf_counter() - start
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        shares.append(stats["kernel_share"])
        print(f"{i + 1:>4} {stats['wall_seconds']:9.2f} {stats['kernel_seconds']:9.2f} "
              f"{100 * stats['kernel_share']:6.1f}% {stats['calls']:>6} {config.n_points / outer:9.1f}")
    try:
        import numba
        print(f"numba threading layer: {numba.threading_layer()}")
    except ValueError:  # no parallel kernel ran (e.g. device=cuda)
        pass
    verdict = "meets" if shares[-1] >= 0.9 else "MISSES"
    print(f"kernel share of the last run: {100 * shares[-1]:.1f}% ({verdict} the 90% target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
