"""CPU benchmark: forward + BPTT for an ensemble, against baselines timed in the same run.

Benchmark shape (issue 2): E=16 networks x B=16 sequences, H=64, D=8, T=256, K=4, loss
"last", float64 and float32. ``--shapes issue14`` adds the scaling shapes of issue 14
(one small network, a large H, many networks, a long T). Baselines, all with the same
distinct weights per network:

- the NumPy float64 reference (``rnnsim.reference``; benchmark shape only, not ``--quick``);
- torch CPU autograd: a ``torch.bmm`` loop over time, then ``backward()`` (when torch is
  installed), at 1 and at numba's thread count, the faster kept; timed twice, as a user
  writes it and with ``torch.set_flush_denormal(True)`` ("ftz"): at this init the float32
  adjoints underflow into denormal numbers, which Intel CPUs handle ~100x slower (AMD Zen
  CPUs do not), and flushing them is what an expert would add;
- JAX (optional, ``pip install "rnnsim[bench]"``): ``jit(vmap(value_and_grad(loss)))``
  over a ``lax.scan``, float64 through ``jax_enable_x64``. Its loss and gradients are
  checked against rnnsim once per (shape, cell, dtype) (column "jax err": the largest
  ``max|g_jax - g| / max|g|`` over the parameters; a mismatch is flagged).

It also measures the machine's GEMM rate (numpy matmul of 2048^2 matrices) right before
and right after each row's rnnsim timing, and prints rnnsim's rate as a share of the
mean of the two. FLOPs counted per (network, sequence, step): forward 2GH(D+H),
backward 2GH·H (dL/dh) + 2GH·H (dW_hh) + 2GH·D (dW_ih), i.e. 6GH·H + 4GH·D with G the
cell's gate blocks (1 rnn, 4 lstm, 3 gru); element-wise work is not counted.

Usage::

    python benchmarks/bench_cpu.py [--repeats 15] [--quick] [--shapes benchmark|issue14] [--shape E,B,H,T]
                                   [--cells rnn,lstm,gru] [--dtypes float64,float32]

Times are medians (the machine may be shared and noisy); large shapes run fewer repeats
(``--budget`` seconds per measurement, at least 3). Not a test.
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

D, K = 8, 4
BENCHMARK = (16, 16, 64, 256)  # E, B, H, T
SHAPES = {
    "benchmark": [BENCHMARK],
    "issue14": [BENCHMARK, (1, 4, 64, 256), (4, 16, 1024, 256), (256, 4, 64, 256), (4, 16, 64, 10000)],
}


def median_time(fn, repeats, budget=None, warmup=1):
    """Median of ``repeats`` timed calls after ``warmup`` calls; with ``budget`` (s), fewer
    repeats (at least 3) when one call is long."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    if budget is not None and warmup:
        one = (time.perf_counter() - start) / warmup
        repeats = max(3, min(repeats, int(budget / max(one, 1e-9))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


class GemmRate:
    """The machine's GEMM rate (numpy matmul of n² matrices), sampled right before and right
    after each row's rnnsim timing: a shared machine's speed drifts by ±30% over minutes,
    and a rate from another moment would move the share with it. (A product after every
    timed call would disturb the next one: BLAS's threads spin on after a call.)"""

    def __init__(self, dtype, n=2048):
        self.a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
        self.b = self.a.T.copy()
        self.flop = 2 * n ** 3
        self.samples = []
        self.a @ self.b  # BLAS's first call pays its thread start-up

    def sample(self, repeats=3):
        rate = self.flop / median_time(lambda: self.a @ self.b, repeats, warmup=0)
        self.samples.append(rate)
        return rate


def flops(cell, shape):
    E, B, H, T = shape
    G = cells.get(cell).G
    return E * B * T * (6 * G * H * H + 4 * G * H * D)


def torch_bmm_baseline(cell, params, x, y):
    """What a PyTorch user would write for distinct weights per network."""
    import torch

    E, B, T, _ = x.shape
    H = params["weight_hh_l0"].shape[2]
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


def jax_baseline(cell, params, x, y):
    """``jit(vmap(value_and_grad(loss)))`` over a ``lax.scan``: one network's loss "last"
    (mean cross-entropy of its B sequences at t = T), mapped over the E networks.
    Returns (run, check): ``run()`` computes and blocks; ``check()`` gives (loss, grads)."""
    import jax
    import jax.numpy as jnp

    H = params["weight_hh_l0"].shape[2]

    def step(p, carry, x_t):
        h, c = carry
        a = x_t @ p["weight_ih_l0"].T + p["bias_ih_l0"]
        if cell == "gru":
            hs = h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
            x_r, x_z, x_n = jnp.split(a, 3, axis=-1)
            h_r, h_z, h_n = jnp.split(hs, 3, axis=-1)
            r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
            return ((1 - z) * jnp.tanh(x_n + r * h_n) + z * h, c), None
        a = a + h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
        if cell == "rnn":
            return (jnp.tanh(a), c), None
        i, f, g, o = jnp.split(a, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return (jax.nn.sigmoid(o) * jnp.tanh(c), c), None

    def loss(p, xe, ye):  # xe (B, T, D), ye (B,)
        zero = jnp.zeros((xe.shape[0], H), xe.dtype)
        (h, _), _ = jax.lax.scan(lambda carry, x_t: step(p, carry, x_t), (zero, zero), jnp.swapaxes(xe, 0, 1))
        logits = h @ p["weight_out"].T + p["bias_out"]
        ce = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, ye[:, None], axis=-1)[:, 0]
        return ce.mean()

    fn = jax.jit(jax.vmap(jax.value_and_grad(loss)))
    pj = {k: jnp.asarray(v) for k, v in params.items()}
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def run():
        jax.block_until_ready(fn(pj, xj, yj))

    def check():
        value, grads = fn(pj, xj, yj)
        return np.asarray(value), {k: np.asarray(v) for k, v in grads.items()}
    return run, check


def jax_error(check, ours):
    """Largest relative deviation of JAX's loss and gradients from rnnsim's."""
    value, grads = check()
    worst = float(np.max(np.abs(value - ours["loss"])) / max(np.max(np.abs(ours["loss"])), 1e-300))
    for key, g in grads.items():
        worst = max(worst, float(np.max(np.abs(g - ours[key])) / max(np.max(np.abs(ours[key])), 1e-300)))
    return worst


def machine():
    import numba
    return (f"{cpu_model()}, {os.cpu_count()} cores, numba {numba.__version__} "
            f"({numba.get_num_threads()} threads), numpy {np.__version__}, "
            f"Python {platform.python_version()}")


def optional_baselines():
    """torch and jax modules, or None where not installed."""
    try:
        import torch
    except ImportError:
        torch = None
    try:
        import jax
        jax.config.update("jax_enable_x64", True)  # float64 arrays stay float64
    except ImportError:
        jax = None
    return torch, jax


def best_torch(torch, run, args):
    """The faster of torch's medians over ``--torch-threads``: on a shared machine torch's
    OpenMP threads spin-wait for a core that another process holds (seen: 100x slower with
    2 threads than with 1 while a sibling process kept one core busy)."""
    default = torch.get_num_threads()
    try:
        times = []
        for threads in args.torch_threads:
            torch.set_num_threads(threads)
            times.append(median_time(run, args.repeats, args.budget))
        return min(times)
    finally:
        torch.set_num_threads(default)


def time_shape(shape, cell, dtype, args, torch, jax, gemm):
    E, B, H, T = shape
    params = rnnsim.init_params(cell, H, D, K, E, seed=0, dtype=dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((E, B, T, D)).astype(dtype)
    y = rng.integers(0, K, size=(E, B))
    row = {"shape": shape, "dtype": np.dtype(dtype).name, "cell": cell}
    before = gemm.sample()
    # its warm-up call absorbs the BLAS threads' spinning after the products
    row["rnnsim"] = median_time(lambda: rnnsim.gradients(cell, params, x, y), args.repeats, args.budget)
    row["gemm_share"] = flops(cell, shape) / row["rnnsim"] / (0.5 * (before + gemm.sample()))
    row["ref"] = None
    if shape == BENCHMARK and not args.quick:
        row["ref"] = median_time(lambda: reference.gradients(cell, params, x, y), 3, args.budget)
    row["torch"] = row["ftz"] = row["jax"] = row["jax_err"] = None
    if torch:
        row["torch"] = best_torch(torch, torch_bmm_baseline(cell, params, x, y), args)
        if not args.no_ftz:
            torch.set_flush_denormal(True)
            try:
                row["ftz"] = best_torch(torch, torch_bmm_baseline(cell, params, x, y), args)
            finally:
                torch.set_flush_denormal(False)
    if jax:
        run, check = jax_baseline(cell, params, x, y)
        row["jax"] = median_time(run, args.repeats, args.budget)
        row["jax_err"] = jax_error(check, rnnsim.gradients(cell, params, x, y))
    return row


TABLE_HEADER = ("| shape | cell | dtype | rnnsim | NumPy ref / rnnsim | torch / rnnsim | torch ftz / rnnsim "
                "| JAX / rnnsim | GFLOP/s | % GEMM | JAX err |\n" + "|---" * 11 + "|")


def print_row(row):
    """One markdown row of the ratio table (printed as soon as the row is timed)."""
    def ms(seconds):
        return f"{seconds * 1e3:.1f} ms" if seconds is not None else "-"

    def ratio(row, key):
        return f"{row[key] / row['rnnsim']:.2f}" if row[key] is not None else "-"

    E, B, H, T = row["shape"]
    rate = flops(row["cell"], row["shape"]) / row["rnnsim"]
    err = row["jax_err"]
    tol = 1e-8 if row["dtype"] == "float64" else 1e-3
    err_text = "-" if err is None else f"{err:.0e}" + ("" if err <= tol else " MISMATCH")
    print(f"| E={E} B={B} H={H} T={T} | {row['cell']} | {row['dtype']} | {ms(row['rnnsim'])} "
          f"| {ratio(row, 'ref')} | {ratio(row, 'torch')} | {ratio(row, 'ftz')} | {ratio(row, 'jax')} "
          f"| {rate / 1e9:.1f} | {100 * row['gemm_share']:.0f}% | {err_text} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per measurement (>= 3 repeats)")
    parser.add_argument("--quick", action="store_true", help="5 repeats, skip the NumPy reference")
    parser.add_argument("--shapes", default="benchmark", choices=sorted(SHAPES))
    parser.add_argument("--shape", action="append", metavar="E,B,H,T",
                        help="time this shape instead of --shapes (repeatable)")
    parser.add_argument("--cells", default=",".join(cells.names()), help="comma list of cells to time")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--no-ftz", action="store_true", help="skip the torch flush-denormal timing")
    parser.add_argument("--torch-threads", default=None,
                        help="comma list of torch thread counts; torch's time is the fastest (default: 1 and "
                             "numba's thread count)")
    args = parser.parse_args()
    import numba
    args.torch_threads = ([int(v) for v in args.torch_threads.split(",")] if args.torch_threads
                          else sorted({1, numba.get_num_threads()}))
    if args.quick:
        args.repeats = min(args.repeats, 5)
    torch, jax = optional_baselines()
    notes = [f"torch {torch.__version__} (best of {args.torch_threads} threads)" if torch else "no torch",
             f"jax {jax.__version__}" if jax else "no jax (pip install 'rnnsim[bench]')"]
    print(f"machine: {machine()}, {', '.join(notes)}")
    print(f"D={D}, K={K}, loss=last, forward + BPTT; medians; ratios above 1: rnnsim faster")
    dtypes = [np.dtype(name).type for name in args.dtypes.split(",")]
    gemms = {dtype: GemmRate(dtype) for dtype in dtypes}
    shapes = [tuple(int(v) for v in text.split(",")) for text in args.shape] if args.shape \
        else SHAPES[args.shapes]
    print()
    print(TABLE_HEADER, flush=True)
    for shape in shapes:
        for dtype in dtypes:
            for cell in args.cells.split(","):
                print_row(time_shape(shape, cell, dtype, args, torch, jax, gemms[dtype]))
    print()
    for dtype, gemm in gemms.items():
        rates = np.array(gemm.samples) / 1e9
        print(f"GEMM rate {np.dtype(dtype).name}: {np.median(rates):.0f} GFLOP/s, {rates.min():.0f}-"
              f"{rates.max():.0f} over the run (numpy matmul 2048^2, medians of 3 before and after each row)")


if __name__ == "__main__":
    main()
