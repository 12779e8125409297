"""CPU benchmark: forward + BPTT for an ensemble, against baselines timed in the same run.

Workload (issue 2): E=16 networks x B=16 sequences, H=64, D=8, T=256, K=4, loss "last",
float64 and float32, every registered cell (rnn, lstm, gru). Baselines:

- the NumPy float64 reference (``rnnsim.reference``);
- torch CPU autograd with the same distinct weights per network: a ``torch.bmm``
  loop over time, then ``backward()`` (when torch is installed); timed twice, as a
  user writes it and with ``torch.set_flush_denormal(True)``: at this init the
  float32 adjoints underflow into denormal numbers, which the CPU handles ~100x
  slower, and flushing them to zero is what an expert would add.

It also measures the machine's GEMM rate (numpy matmul of 2048^2 matrices) and
prints rnnsim's rate as a share of it. FLOPs counted per (network, sequence, step):
forward 2GH(D+H), backward 2GH·H (dL/dh) + 2GH·H (dW_hh) + 2GH·D (dW_ih), i.e.
6GH·H + 4GH·D with G the cell's gate blocks (1 rnn, 4 lstm, 3 gru); element-wise work is
not counted (the gru's second recurrent-side product for its n block adds 2H·H per step).

Usage::

    python benchmarks/bench_cpu.py [--repeats 15] [--quick]

Times are medians (the machine is shared and noisy). Not a test.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

import rnnsim
from rnnsim import cells, reference
from rnnsim._machine import cpu_model

E, B, H, D, T, K = 16, 16, 64, 8, 256, 4


def median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def gemm_rate(dtype, n=2048, repeats=7):
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    b = a.T.copy()
    seconds = median_time(lambda: a @ b, repeats)
    return 2 * n ** 3 / seconds


def flops(cell):
    G = cells.get(cell).G
    return E * B * T * (6 * G * H * H + 4 * G * H * D)


def torch_bmm_baseline(cell, params, x, y):
    """What a PyTorch user would write for distinct weights per network."""
    import torch

    dtype = torch.float64 if x.dtype == np.float64 else torch.float32
    p = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}
    xs = torch.from_numpy(x)  # (E, B, T, D)
    tgt = torch.from_numpy(y)

    def run():
        for v in p.values():
            v.grad = None
        h = torch.zeros(E, B, H, dtype=dtype)
        c = torch.zeros(E, B, H, dtype=dtype)
        w_ih_t = p["weight_ih_l0"].transpose(1, 2)
        w_hh_t = p["weight_hh_l0"].transpose(1, 2)
        bias = (p["bias_ih_l0"] + p["bias_hh_l0"]).unsqueeze(1)
        b_ih, b_hh = p["bias_ih_l0"].unsqueeze(1), p["bias_hh_l0"].unsqueeze(1)
        for t in range(T):
            if cell == "gru":  # b_hn sits inside r * (W_hn h + b_hn): the biases stay apart
                x_side = torch.bmm(xs[:, :, t], w_ih_t) + b_ih
                h_side = torch.bmm(h, w_hh_t) + b_hh
                x_r, x_z, x_n = x_side.chunk(3, dim=2)
                h_r, h_z, h_n = h_side.chunk(3, dim=2)
                r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
                h = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
                continue
            a = torch.bmm(xs[:, :, t], w_ih_t) + torch.bmm(h, w_hh_t) + bias
            if cell == "rnn":
                h = torch.tanh(a)
            else:
                i, f, g, o = a.chunk(4, dim=2)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
        logits = torch.bmm(h, p["weight_out"].transpose(1, 2)) + p["bias_out"].unsqueeze(1)
        losses = torch.nn.functional.cross_entropy(logits.reshape(E * B, K), tgt.reshape(-1),
                                                   reduction="none").reshape(E, B).mean(1)
        losses.sum().backward()  # sum over networks: each network's grads are its own
    return run


def machine():
    import numba
    return (f"{cpu_model()}, {os.cpu_count()} cores, numba {numba.__version__} "
            f"({numba.get_num_threads()} threads), numpy {np.__version__}, "
            f"Python {platform.python_version()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip the NumPy reference")
    parser.add_argument("--cells", default=",".join(cells.names()), help="comma list of cells to time")
    args = parser.parse_args()
    repeats = 5 if args.quick else args.repeats
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch = None
        torch_version = None

    torch_note = f", torch {torch_version} ({torch.get_num_threads()} threads)" if torch else ""
    print(f"machine: {machine()}{torch_note}")
    print(f"workload: E={E} x B={B}, H={H}, D={D}, T={T}, K={K}, loss=last, forward + BPTT; medians")
    rows = []
    for dtype in (np.float64, np.float32):
        peak = gemm_rate(dtype)
        for cell in args.cells.split(","):
            params = rnnsim.init_params(cell, H, D, K, E, seed=0, dtype=dtype)
            rng = np.random.default_rng(1)
            x = rng.standard_normal((E, B, T, D)).astype(dtype)
            y = rng.integers(0, K, size=(E, B))
            ours = median_time(lambda: rnnsim.gradients(cell, params, x, y), repeats)
            ref = None if args.quick else median_time(lambda: reference.gradients(cell, params, x, y),
                                                      max(3, repeats // 5))
            tb = tbf = None
            if torch:
                tb = median_time(torch_bmm_baseline(cell, params, x, y), repeats)
                torch.set_flush_denormal(True)
                try:
                    tbf = median_time(torch_bmm_baseline(cell, params, x, y), repeats)
                finally:
                    torch.set_flush_denormal(False)
            rate = flops(cell) / ours
            rows.append((np.dtype(dtype).name, cell, ours, ref, tb, tbf, rate, peak))

    print()
    print(f"{'dtype':8} {'cell':5} {'rnnsim':>10} {'numpy ref':>10} {'torch bmm':>10} {'torch ftz':>10} "
          f"{'vs ref':>8} {'vs torch':>9} {'vs ftz':>8} {'GFLOP/s':>8} {'% GEMM':>7}")
    def fmt(seconds):
        return f"{seconds * 1e3:8.1f}ms" if seconds is not None else f"{'-':>10}"

    for name, cell, ours, ref, tb, tbf, rate, peak in rows:
        def ratio(seconds):
            return f"{seconds / ours:7.1f}x" if seconds is not None else f"{'-':>8}"
        print(f"{name:8} {cell:5} {fmt(ours)} {fmt(ref)} {fmt(tb)} {fmt(tbf)} {ratio(ref)} {ratio(tb):>9} "
              f"{ratio(tbf)} {rate / 1e9:8.1f} {100 * rate / peak:6.0f}%")
    print()
    for dtype in ("float64", "float32"):
        peak = next(r[7] for r in rows if r[0] == dtype)
        print(f"GEMM rate {dtype}: {peak / 1e9:.0f} GFLOP/s (numpy matmul 2048^2)")


if __name__ == "__main__":
    main()
