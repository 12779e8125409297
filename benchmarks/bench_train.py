"""Training benchmark: one optimiser step for an ensemble of distinct networks, against the
torch loop a user would write, timed in the same run.

Workload (issue 12): E=64 networks x B=32 sequences, H=64, T=100, copy-first (D=K=8)
or adding (D=2, K=1), Adam (lr 1e-3), clipping by global norm per network at c=1,
float32 (and float64). A step is: draw every network's batch (the same NumPy task
generators on both sides), the loss and exact gradients, the training-batch rate,
clipping, and the update.

- rnnsim: :func:`rnnsim.train.train` for ``--steps`` steps (one :func:`rnnsim.gradients`
  call per step for all networks, plus one forward for the training-batch rate);
- torch: the same distinct weights stacked as (E, ...) tensors, a ``torch.bmm`` loop
  over time, autograd, per-network clipping from per-network norms, ``torch.optim.Adam``
  over the stacked tensors (Adam is element-wise, so this is per-network Adam); timed as
  written and with ``torch.set_flush_denormal(True)``.

Usage::

    python benchmarks/bench_train.py [--repeats 5] [--steps 5] [--cells rnn,lstm,gru]

Times are per step: the median time of ``1 + --steps`` steps minus the median time of one
step, over ``--repeats`` runs, divided by ``--steps``. Not a test.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import rnnsim
from rnnsim.train import make_ensemble_batch, task_dims, train

E, B, H, T = 64, 32, 64, 100
LR, CLIP = 1e-3, 1.0


def per_step(fn, steps, repeats):
    """Median time of one step: (t(1 + steps) - t(1)) / steps, so that what a run pays once
    (rnnsim's held-out evaluations at its first and last step, torch's optimiser set-up)
    is left out on both sides."""
    fn(1)  # compile and warm up
    long, short = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(1 + steps)
        long.append(time.perf_counter() - start)
        start = time.perf_counter()
        fn(1)
        short.append(time.perf_counter() - start)
    return (float(np.median(long)) - float(np.median(short))) / steps


def torch_loop(cell, params, task):
    """The torch training loop for E distinct networks: bmm over time, autograd, Adam, clipping."""
    import torch

    dtype = torch.float64 if params["weight_ih_l0"].dtype == np.float64 else torch.float32
    np_dtype = params["weight_ih_l0"].dtype
    seeds = np.arange(E)

    def run(steps):
        p = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}
        opt = torch.optim.Adam(list(p.values()), lr=LR)
        for step in range(steps):
            x, y = make_ensemble_batch(task, seeds, B, T, step=step, dtype=np_dtype)
            xs, tgt = torch.from_numpy(x), torch.from_numpy(y)
            h = torch.zeros(E, B, H, dtype=dtype)
            c = torch.zeros(E, B, H, dtype=dtype)
            w_ih_t, w_hh_t = p["weight_ih_l0"].transpose(1, 2), p["weight_hh_l0"].transpose(1, 2)
            b_ih, b_hh = p["bias_ih_l0"].unsqueeze(1), p["bias_hh_l0"].unsqueeze(1)
            for t in range(T):
                x_side = torch.baddbmm(b_ih, xs[:, :, t], w_ih_t)
                h_side = torch.baddbmm(b_hh, h, w_hh_t)
                if cell == "gru":
                    x_r, x_z, x_n = x_side.chunk(3, dim=2)
                    h_r, h_z, h_n = h_side.chunk(3, dim=2)
                    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
                    h = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
                elif cell == "rnn":
                    h = torch.tanh(x_side + h_side)
                else:
                    i, f, g, o = (x_side + h_side).chunk(4, dim=2)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
            z = torch.baddbmm(p["bias_out"].unsqueeze(1), h, p["weight_out"].transpose(1, 2))
            if task == "adding":
                losses = ((z - tgt) ** 2).mean(dim=(1, 2))
                _ = ((z - tgt) ** 2 < 0.04).double().mean(dim=(1, 2))
            else:
                losses = torch.nn.functional.cross_entropy(z.reshape(E * B, -1), tgt.reshape(-1),
                                                           reduction="none").reshape(E, B).mean(1)
                _ = (z.argmax(dim=2) == tgt).double().mean(dim=1)
            opt.zero_grad()
            losses.sum().backward()  # each network's gradients are its own
            with torch.no_grad():
                sq = sum((w.grad.reshape(E, -1) ** 2).sum(dim=1) for w in p.values())
                factor = torch.clamp(CLIP / torch.sqrt(sq), max=1.0)
                for w in p.values():
                    w.grad *= factor.reshape((E,) + (1,) * (w.grad.dim() - 1))
            opt.step()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cells", default=",".join(rnnsim.cells.names()))
    parser.add_argument("--task", default="copy-first")
    parser.add_argument("--dtypes", default="float32,float64")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    from bench_cpu import machine

    print(f"machine: {machine()}" + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
                                     if torch else ""))
    print(f"workload: E={E} x B={B}, H={H}, T={T}, task {args.task}, Adam lr {LR}, clip {CLIP}; "
          f"time per step = (median t(1 + {args.steps} steps) - median t(1 step)) / {args.steps}, "
          f"{args.repeats} runs")
    dims = task_dims(args.task)
    print(f"\n{'dtype':8} {'cell':5} {'rnnsim':>10} {'torch':>10} {'torch ftz':>10} {'vs torch':>9} "
          f"{'vs ftz':>8}")
    for name in args.dtypes.split(","):
        dtype = np.dtype(name)
        for cell in args.cells.split(","):
            params = rnnsim.init_params(cell, H, dims.input_size, dims.outputs, E, seed=0, dtype=dtype)
            def ours_run(steps):
                train(cell, params, args.task, length=T, steps=steps, batch=B, lr=LR, clip=CLIP,
                      seed=np.arange(E), eval_batch=B, eval_every=10 ** 9)
            ours = per_step(ours_run, args.steps, args.repeats)
            theirs = ftz = None
            if torch:
                theirs = per_step(torch_loop(cell, params, args.task), args.steps, args.repeats)
                torch.set_flush_denormal(True)
                try:
                    ftz = per_step(torch_loop(cell, params, args.task), args.steps, args.repeats)
                finally:
                    torch.set_flush_denormal(False)

            def fmt(s):
                return f"{s * 1e3:8.1f}ms" if s is not None else f"{'-':>10}"

            def ratio(s):
                return f"{s / ours:7.2f}x" if s is not None else f"{'-':>8}"
            print(f"{name:8} {cell:5} {fmt(ours)} {fmt(theirs)} {fmt(ftz)} {ratio(theirs):>9} {ratio(ftz)}",
                  flush=True)


if __name__ == "__main__":
    main()
