"""The per-step product's tiles at few rows: one panel per tile (as before 2026-12-06) against
tiles that span several panels (``rnnsim.kernels.cpu_matmul``: PANEL_GROUP, ACCUMULATORS), on
this host's vector width, one thread, in one process, alternating; the two results are
checked to be bitwise equal (every column is summed in the same order either way).

    NUMBA_CACHE_DIR=/tmp/numba_cache python benchmarks/bench_tiles.py
"""
from __future__ import annotations

import time

import numpy as np
from numba import njit

from rnnsim._machine import cpu_model
from rnnsim.kernels import cpu_matmul as cm

ROWS = cm.TILE_ROWS
GROUP = cm.PANEL_GROUP
t_full, t4, t2, t1 = (cm._tile(rows) for rows in (ROWS, 4, 2, 1))
g4, g2, g1 = (cm._tile(rows, group=max(1, GROUP // rows)) for rows in (4, 2, 1))
SHAPES = [(1, 64, 256), (2, 64, 256), (4, 64, 256), (2, 256, 64), (2, 64, 64), (4, 64, 192),
          (1, 256, 256), (16, 64, 256)]


@njit
def one_panel_tiles(a, panels, out, reps):
    M, N, width = a.shape[0], out.shape[1], panels.shape[2]
    for _ in range(reps):
        for p in range(panels.shape[0]):
            ncols = min(width, N - p * width)
            i0 = 0
            while M - i0 >= ROWS:
                t_full(a, panels, out, i0, p, ncols, 0)
                i0 += ROWS
            if M - i0 >= 4:
                t4(a, panels, out, i0, p, ncols, 0)
                i0 += 4
            if M - i0 >= 2:
                t2(a, panels, out, i0, p, ncols, 0)
                i0 += 2
            if M - i0 >= 1:
                t1(a, panels, out, i0, p, ncols, 0)


@njit
def grouped_tiles(a, panels, out, reps):
    for _ in range(reps):
        cm._panel_products(a, panels, out, 0, panels.shape[0], 0)


def _panels(w, width):
    K, N = w.shape
    P = -(-N // width)
    padded = np.zeros((K, P * width), w.dtype)
    padded[:, :N] = w
    return np.ascontiguousarray(padded.reshape(K, P, width).transpose(1, 0, 2))


def main():
    print(f"# {cpu_model()}, one thread; GFLOP/s = 2MKN / median of 7 alternating rounds")
    for dtype in (np.float64, np.float32):
        width = cm.PANEL_BYTES // np.dtype(dtype).itemsize
        for M, K, N in SHAPES:
            rng = np.random.default_rng(0)
            a = rng.standard_normal((M, K)).astype(dtype)
            panels = _panels(rng.standard_normal((K, N)).astype(dtype), width)
            before, after = np.zeros((M, N), dtype), np.zeros((M, N), dtype)
            one_panel_tiles(a, panels, before, 1)
            grouped_tiles(a, panels, after, 1)
            assert np.array_equal(before, after), (M, K, N)
            reps = max(1, int(2e8 / (M * K * N)))
            times = {one_panel_tiles: [], grouped_tiles: []}
            for _ in range(7):
                for kernel, seconds in times.items():
                    start = time.perf_counter()
                    kernel(a, panels, before, reps)
                    seconds.append((time.perf_counter() - start) / reps)
            rate = [2 * M * K * N / np.median(seconds) / 1e9 for seconds in times.values()]
            print(f"{np.dtype(dtype).name} M={M} K={K} N={N}: one panel per tile {rate[0]:.1f} GFLOP/s, "
                  f"grouped {rate[1]:.1f}", flush=True)


if __name__ == "__main__":
    main()
