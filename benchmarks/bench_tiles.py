"""GFLOP/s of the per-step product's register tile, one thread, for several tile shapes.

    NUMBA_CACHE_DIR=/tmp/numba_cache python benchmarks/bench_tiles.py [--rounds 5]

A tile shape is rows of ``a`` × vector registers per panel row
(:func:`rnnsim.kernels.cpu_matmul._tile`, at this host's vector width). Each shape runs
``out = a @ w`` on packed panels, over every panel and block of rows, as
:func:`~rnnsim.kernels.cpu_matmul.step_product` does on one thread; the last column,
``step_product``, is the kernel itself (this host's ``TILE_ROWS`` × ``TILE_VECTORS``).
Tile shapes whose rows do not divide M are left out. Rounds alternate the shapes; each
cell is the median of the rounds after the first (which compiles), and every product is
checked against NumPy.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from numba import njit

from rnnsim._machine import cpu_model
from rnnsim.kernels import cpu_matmul
from rnnsim.kernels.cpu_team import SIZE, TEAM_WORDS

TILES = [(8, 1), (4, 2), (4, 3), (6, 2), (8, 2)]
PRODUCTS = [(16, 64, 64), (16, 256, 256), (8, 256, 256), (24, 256, 256), (16, 512, 512), (16, 1024, 1024)]


def _tile_loop(rows, vectors):
    tile = cpu_matmul._tile(rows, cpu_matmul.VECTOR_BYTES, vectors)

    @njit(cache=False)
    def run(a, panels, out, reps):
        M, N, width = a.shape[0], out.shape[1], panels.shape[2]
        for _ in range(reps):
            for p in range(panels.shape[0]):
                ncols = min(width, N - p * width)
                for i0 in range(0, M - rows + 1, rows):
                    tile(a, panels, out, i0, p, ncols, 0)
    return run


@njit(cache=False)
def _kernel_loop(a, panels, out, reps, team):
    for _ in range(reps):
        cpu_matmul.step_product(a, panels, out, team)


def _panels(w, width):
    K, N = w.shape
    padded = np.zeros((K, -(-N // width) * width), w.dtype)
    padded[:, :N] = w
    return np.ascontiguousarray(padded.reshape(K, -1, width).transpose(1, 0, 2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtypes", default="float64,float32")
    args = parser.parse_args()
    vector_bytes = cpu_matmul.VECTOR_BYTES
    print(f"# {cpu_model()}, vector width {vector_bytes} bytes; step_product's tile: "
          f"{cpu_matmul.TILE_ROWS} x {cpu_matmul.TILE_VECTORS}; one thread, GFLOP/s, "
          f"medians of {args.rounds}")
    team = np.zeros(TEAM_WORDS, np.int64)
    team[SIZE] = 1
    loops = {shape: _tile_loop(*shape) for shape in TILES}
    for dtype in args.dtypes.split(","):
        print(f"\n{dtype}: M x K x N | " + " | ".join(f"{r} x {v}" for r, v in TILES) + " | step_product")
        for M, K, N in PRODUCTS:
            rng = np.random.default_rng(M + K + N)
            a = rng.standard_normal((M, K)).astype(dtype)
            w = rng.standard_normal((K, N)).astype(dtype)
            exact = a.astype(np.float64) @ w.astype(np.float64)
            # each entry is K products summed: error at most ~K eps sum_k |a_ik w_kj|
            magnitude = np.abs(a).astype(np.float64) @ np.abs(w).astype(np.float64)
            bound = 2 * K * np.finfo(dtype).eps * magnitude
            reps = max(1, int(4e8 / (2 * M * K * N)))
            runs = {}
            for rows, vectors in TILES:
                if M % rows == 0:
                    width = vectors * vector_bytes // np.dtype(dtype).itemsize
                    runs[(rows, vectors)] = (loops[(rows, vectors)], _panels(w, width))
            runs["step_product"] = (None, _panels(w, cpu_matmul.PANEL_BYTES // np.dtype(dtype).itemsize))
            times = {key: [] for key in runs}
            for _ in range(args.rounds + 1):  # the first round compiles
                for key, (loop, panels) in runs.items():
                    out = np.full((M, N), np.nan, dtype)
                    start = time.perf_counter()
                    if loop is None:
                        _kernel_loop(a, panels, out, reps, team)
                    else:
                        loop(a, panels, out, reps)
                    times[key].append(time.perf_counter() - start)
                    if not np.all(np.abs(out - exact) <= bound):
                        raise SystemExit(f"tile {key} at {M}x{K}x{N} {dtype}: wrong product")
            cells = []
            for rows, vectors in TILES:
                key = (rows, vectors)
                cells.append(f"{2 * M * K * N * reps / statistics.median(times[key][1:]) / 1e9:.1f}"
                             if key in times else "-")
            cells.append(f"{2 * M * K * N * reps / statistics.median(times['step_product'][1:]) / 1e9:.1f}")
            print(f"{M} x {K} x {N} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
