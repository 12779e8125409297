"""First-call compile time of ``rnnsim.gradients`` from an empty Numba cache (issue 14: 5 s).

Each measurement is a fresh Python process with a fresh, temporary ``NUMBA_CACHE_DIR``
that runs one ``gradients`` call on a tiny problem (E=2, B=3, T=5, H=8, loss "last"),
so nearly all of its time is compiling that cell and dtype's item kernel and the
helpers it calls. It prints wall and CPU seconds per run, and the medians. With
``--together``, one process compiles every listed cell in turn, as the default
``rnnsim sweep`` does (its cells share the compiled helpers).

    python benchmarks/bench_compile.py                      # rnn float64, 3 rounds
    python benchmarks/bench_compile.py --cells rnn,lstm,gru --dtypes float64,float32
    python benchmarks/bench_compile.py --against /path/to/other/checkout
    python benchmarks/bench_compile.py --cells rnn,lstm,gru --together

A single compile varies by ±30% on a shared machine. With ``--against``, every round
runs the other checkout (an old commit, say) and this one side by side, one process
per core, so that both see the same load; the ratio of each pair is then far steadier
than either time. Needs two cores for that.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import rnnsim
assert rnnsim.__file__.startswith(sys.argv[1]), rnnsim.__file__
cells, dtype = sys.argv[2].split("+"), sys.argv[3]
problems = []
for cell in cells:
    params = rnnsim.init_params(cell, 8, 3, 2, 2, seed=0, dtype=dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5, 3)).astype(dtype)
    y = rng.integers(0, 2, size=(2, 3))
    problems.append((cell, params, x, y))
wall, cpu = time.perf_counter(), time.process_time()
for cell, params, x, y in problems:
    rnnsim.gradients(cell, params, x, y)
print(time.perf_counter() - wall, time.process_time() - cpu)
"""


def _start(repo: Path, cell: str, dtype: str, cache: str) -> subprocess.Popen:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    return subprocess.Popen([sys.executable, "-c", CHILD, str(repo), cell, dtype], env=env,
                            stdout=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[float, float]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"a compile run failed (exit {proc.returncode})")
    wall, cpu = out.split()
    return float(wall), float(cpu)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn")
    parser.add_argument("--dtypes", default="float64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, default=None,
                        help="another checkout of rnnsim, run side by side with this one")
    parser.add_argument("--together", action="store_true",
                        help="compile all the cells in one process, one after the other")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.against is not None and not (args.against / "rnnsim" / "__init__.py").is_file():
        parser.error(f"--against {args.against}: no rnnsim package there")
    import numba

    from rnnsim._machine import cpu_model

    print(f"# {cpu_model()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, numba {numba.__version__}; this checkout: {HERE}")
    if args.against is not None:
        print(f"# other: {args.against.resolve()}, run side by side with this one")
    sides = ["this"] if args.against is None else ["other", "this"]
    repos = {"this": HERE, "other": args.against}
    times = {}
    cell_names = [args.cells.replace(",", "+")] if args.together else args.cells.split(",")
    for round_ in range(1, args.rounds + 1):
        for cell in cell_names:
            for dtype in args.dtypes.split(","):
                with tempfile.TemporaryDirectory() as tmp:
                    procs = {side: _start(repos[side], cell, dtype, os.path.join(tmp, side))
                             for side in sides}
                    got = {side: _finish(proc) for side, proc in procs.items()}
                cols = "  ".join(f"{side} {w:6.2f} s wall {c:6.2f} s CPU" for side, (w, c) in got.items())
                print(f"round {round_} {cell:4s} {dtype}: {cols}", flush=True)
                for side, value in got.items():
                    times.setdefault((cell, dtype, side), []).append(value[0])
    print("# medians of the wall times")
    for cell in cell_names:
        for dtype in args.dtypes.split(","):
            line = "  ".join(f"{side} {np.median(times[cell, dtype, side]):.2f} s" for side in sides)
            if args.against is not None:
                ratios = np.array(times[cell, dtype, "this"]) / np.array(times[cell, dtype, "other"])
                line += f"  this/other per round: {', '.join(f'{r:.2f}' for r in ratios)}"
            print(f"{cell:4s} {dtype}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
