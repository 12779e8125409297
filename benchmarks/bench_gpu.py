"""GPU benchmark: rnnsim's numba.cuda kernels against torch and JAX baselines, same card.

Usage (on a machine with a GPU; see benchmarks/run_on_gpu.sh)::

    PYTHONPATH=. python benchmarks/bench_gpu.py            # the issue's workload
    NUMBA_ENABLE_CUDASIM=1 PYTHONPATH=. python benchmarks/bench_gpu.py --small   # smoke test

1. Correctness (``--part check``) of ``device="cuda"`` against the NumPy reference and
   against ``device="cpu"`` at H=128, T=512 and at H=512, T=256 (every registered cell,
   both dtypes, loss="every", a small E*B so the CPU and reference sides are quick), and
   every loss of :data:`rnnsim.losses.LOSSES` (masks, injected adjoints, clipping) at a
   small shape: the worst error over every output key, relative to tolerance
   (rel*|ref| + abs*max|ref|; 1e-12 in float64, 1e-5 in float32), with PASS/FAIL.
2. Timing (``--part time``) of forward + BPTT for E=64, B=32, H=128, D=16, T=512 (K=10,
   loss="last"), float32 and float64, every cell: rnnsim (the whole ``rnnsim.gradients``
   call, host copies included; and ``rnnsim.forward`` alone, to say where the time
   goes), torch (a) distinct weights per network (a ``torch.bmm`` loop over time plus
   autograd; the gru keeps b_ih and b_hh apart, as torch.nn.GRU), (b) cuDNN
   nn.RNN/nn.LSTM/nn.GRU with one shared weight set for all E*B sequences, and (c) JAX
   ``jit(vmap(value_and_grad))`` over a ``lax.scan`` with distinct weights per network
   (benchmarks/bench_cpu.py's, on the GPU here), whose gradients are also checked against
   rnnsim's. Medians of ``--repeats`` runs after a warm-up, synchronised around every run.
   The rate column counts 6GH^2 + 4GHD FLOP per sequence step (forward, the backward's
   two products) against FMA-chain ceilings of 33 (fp32) and 25 (fp64) TFLOP/s measured
   in numba on an H200. Last, the default ``rnnsim sweep`` on the GPU, cold and warm.

``--small`` runs the same code paths at tiny shapes (under the simulator the torch and
JAX GPU parts run on the CPU, as a smoke test). ``--sanitize`` runs every cell's kernels
once at small shapes and nothing else, for ``compute-sanitizer`` (memcheck, racecheck;
see benchmarks/run_on_gpu.sh): several blocks and padded tiles, W_hh in shared and in
global memory, and a launch above 48 KB of shared memory (the opt-in).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import rnnsim
from rnnsim import cells, config, losses, reference
from rnnsim.kernels import _cuda, gpu

TOLERANCE = {np.float64: (1e-12, 1e-13), np.float32: (1e-5, 1e-6)}  # rel, abs (x max|ref|)


def problem(cell, dtype, E, B, T, D, H, K, loss, seed=0):
    params = rnnsim.init_params(cell, H, D, K, E, seed=seed, dtype=dtype, bias_scale=0.1,
                                forget_bias=1.0)  # cells without a forget gate ignore it
    rng = np.random.default_rng(seed + 1)
    inputs = rng.standard_normal((E, B, T, D)).astype(dtype)
    if losses.is_class_loss(loss):
        targets = rng.integers(0, K, size=losses.target_shape(loss, E, B, T))
    else:
        targets = rng.standard_normal(losses.target_shape(loss, E, B, T, K)).astype(dtype)
    return params, inputs, targets


def worst_error(got, want, dtype):
    """max over keys of |got - want| / (rtol |want| + atol max|want|), and its key."""
    rtol, afrac = TOLERANCE[dtype]
    worst, worst_key = 0.0, None
    for key, ref in want.items():
        ref = np.asarray(ref, dtype=np.float64)
        val = np.asarray(got[key], dtype=np.float64)
        finite = np.isfinite(ref)
        if not np.array_equal(val[~finite], ref[~finite]):
            return np.inf, key
        if not finite.any():
            continue
        atol = afrac * np.max(np.abs(ref[finite]))
        ratio = np.max(np.abs(val[finite] - ref[finite]) / (rtol * np.abs(ref[finite]) + atol + 1e-300))
        if ratio > worst:
            worst, worst_key = float(ratio), key
    return worst, worst_key


def check_correctness(shape, names):
    """cuda against the NumPy reference and the cpu backend, loss "every"."""
    print(f"\n== correctness, cuda vs reference and cpu, {shape} ==", flush=True)
    ok = True
    for dtype in (np.float64, np.float32):
        for cell in names:
            params, inputs, targets = problem(cell, dtype, loss="every", **shape)
            t0 = time.perf_counter()
            got = rnnsim.gradients(cell, params, inputs, targets, loss="every", device="cuda")
            t1 = time.perf_counter()
            ok &= report(cell, dtype, "every", got, {
                "reference": reference.gradients(cell, params, inputs, targets, loss="every"),
                "cpu": rnnsim.gradients(cell, params, inputs, targets, loss="every", device="cpu")},
                f"[cuda {t1 - t0:.2f} s incl. compile]")
    return ok


def check_losses(shape, names):
    """Every loss (masks, injected per-step adjoints) and a clip, against the reference."""
    print(f"\n== every loss, cuda vs reference, {shape} ==", flush=True)
    ok = True
    E, B, T = shape["E"], shape["B"], shape["T"]
    for dtype in (np.float64, np.float32):
        for cell in names:
            for loss in losses.LOSSES:
                params, inputs, targets = problem(cell, dtype, loss=loss, **shape)
                mask = None
                if loss in losses.MASKED_LOSSES:
                    mask = np.random.default_rng(7).random((E, B, T)) < 0.5
                    mask[:, 0, -1] = True  # every network selects something
                clip = 0.5 if loss == "every" else None  # one clipped call per cell and dtype
                got = rnnsim.gradients(cell, params, inputs, targets, loss=loss, mask=mask, clip=clip,
                                       device="cuda")
                want = reference.gradients(cell, params, inputs, targets, loss=loss, mask=mask, clip=clip)
                ok &= report(cell, dtype, loss + (" clip" if clip else ""), got, {"reference": want})
    return ok


def report(cell, dtype, loss, got, wants, extra=""):
    passed = True
    for against, want in wants.items():
        ratio, key = worst_error(got, want, dtype)
        passed &= ratio <= 1.0
        print(f"{cell:4s} {np.dtype(dtype).name:7s} {loss:11s} vs {against:9s} worst error = {ratio:.3g} "
              f"x tolerance at {key!r:24s} {'PASS' if ratio <= 1.0 else 'FAIL'} {extra}", flush=True)
    return passed


def median_time(fn, repeats, sync=lambda: None):
    fn()  # warm-up (compiles, allocator)
    sync()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_distinct(torch, cell, dtype, shape, device):
    """(a) distinct weights per network: a torch.bmm loop over time plus autograd."""
    E, B, T, D, H, K = (shape[k] for k in ("E", "B", "T", "D", "H", "K"))
    G = cells.get(cell).G
    tdt = getattr(torch, np.dtype(dtype).name)
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*size, scale):
        return (torch.randn(*size, generator=gen, device=device, dtype=tdt) * scale).requires_grad_()

    w_ih, w_hh = rand(E, D, G * H, scale=D ** -0.5), rand(E, H, G * H, scale=H ** -0.5)
    bias, w_out = rand(E, 1, G * H, scale=0.1), rand(E, H, K, scale=H ** -0.5)
    bias_hh = rand(E, 1, G * H, scale=0.1)  # the gru's own b_hh (the other cells fold it into bias)
    x = torch.randn(T, E, B, D, generator=gen, device=device, dtype=tdt)
    targets = torch.randint(0, K, (E * B,), generator=gen, device=device)

    def run():
        h = torch.zeros(E, B, H, device=device, dtype=tdt)
        c = torch.zeros_like(h)
        for t in range(T):
            if cell == "gru":  # b_hn sits inside r * (W_hn h + b_hn): the biases stay apart
                x_r, x_z, x_n = torch.baddbmm(bias, x[t], w_ih).chunk(3, dim=-1)
                h_r, h_z, h_n = torch.baddbmm(bias_hh, h, w_hh).chunk(3, dim=-1)
                r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
                h = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
                continue
            a = torch.baddbmm(bias, x[t], w_ih) + torch.bmm(h, w_hh)
            if cell == "rnn":
                h = torch.tanh(a)
            else:
                i, f, g, o = a.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
        loss = torch.nn.functional.cross_entropy(torch.bmm(h, w_out).reshape(E * B, K), targets)
        loss.backward()

    return run


def torch_cudnn(torch, cell, dtype, shape, device):
    """(b) cuDNN nn.RNN / nn.LSTM / nn.GRU, one shared weight set for all E*B sequences."""
    E, B, T, D, H, K = (shape[k] for k in ("E", "B", "T", "D", "H", "K"))
    tdt = getattr(torch, np.dtype(dtype).name)
    layer = getattr(torch.nn, cell.upper())(D, H, batch_first=True)  # RNN, LSTM, GRU
    layer = layer.to(device=device, dtype=tdt)
    head = torch.nn.Linear(H, K).to(device=device, dtype=tdt)
    x = torch.randn(E * B, T, D, device=device, dtype=tdt)
    targets = torch.randint(0, K, (E * B,), device=device)

    def run():
        out, _ = layer(x)
        loss = torch.nn.functional.cross_entropy(head(out[:, -1]), targets)
        loss.backward()

    return run


CEILING_TFLOPS = {np.float32: 33.0, np.float64: 25.0}  # FMA-chain kernels in numba on an H200


def step_flops(cell, shape):
    """FLOP of forward + BPTT: per sequence step, the forward's and the backward's two
    products with W_hh (2GH^2 each) and W_ih (2GHD forward, 2GHD for its gradient)."""
    G, H, D = cells.get(cell).G, shape["H"], shape["D"]
    return shape["E"] * shape["B"] * shape["T"] * (6 * G * H * H + 4 * G * H * D)


def baselines(small):
    """(torch, jax, device): the frameworks to time and where, or None where unavailable."""
    from bench_cpu import optional_baselines  # benchmarks/ is the script's folder, on sys.path

    torch, jax = optional_baselines()
    if torch is not None and torch.cuda.is_available() and not _cuda.is_simulator():
        torch.backends.cudnn.benchmark = True
        return torch, jax, "cuda"
    if small:
        print("(torch.cuda is not available: the baselines run on the CPU, as a smoke test only)")
        return torch, jax, "cpu"
    print("(torch and JAX baselines skipped: torch.cuda is not available)")
    return None, None, None


def benchmark(shape, repeats, small, names):
    print(f"\n== forward + BPTT timing, {shape}, loss='last', median of {repeats} ==", flush=True)
    torch, jax, baseline_device = baselines(small)
    sync = torch.cuda.synchronize if baseline_device == "cuda" else (lambda: None)
    nan = float("nan")
    rows = []
    for dtype in (np.float32, np.float64):
        for cell in names:
            params, inputs, targets = problem(cell, dtype, loss="last", **shape)
            row = dict(name=f"{cell} {np.dtype(dtype).name}", bmm=nan, cudnn=nan, jax=nan, jax_err=nan,
                       flop=step_flops(cell, shape), ceiling=CEILING_TFLOPS[dtype])
            def ours():
                return rnnsim.gradients(cell, params, inputs, targets, device="cuda")

            row["ours"] = median_time(ours, repeats)
            row["fwd"] = median_time(lambda: rnnsim.forward(cell, params, inputs, device="cuda"), repeats)
            row["stages"] = stage_seconds(ours)
            if torch is not None:
                for_torch = (torch, cell, dtype, shape, baseline_device)
                row["bmm"] = median_time(torch_distinct(*for_torch), repeats, sync)
                row["cudnn"] = median_time(torch_cudnn(*for_torch), repeats, sync)
            if jax is not None:
                from bench_cpu import jax_baseline, jax_error
                run, check = jax_baseline(cell, params, inputs, targets)
                row["jax"] = median_time(run, repeats)
                row["jax_err"] = jax_error(check, ours())
            rows.append(row)
            print(f"  {row['name']}: rnnsim {1e3 * row['ours']:.2f} ms, bmm {1e3 * row['bmm']:.2f} ms, "
                  f"cuDNN {1e3 * row['cudnn']:.2f} ms, JAX {1e3 * row['jax']:.2f} ms", flush=True)
    print(f"\n{'':13s} {'rnnsim':>9s} {'fwd only':>9s} {'TFLOP/s':>13s} {'(a) bmm':>9s} {'(b) cuDNN':>9s} "
          f"{'(c) JAX':>9s} {'a/ours':>7s} {'b/ours':>7s} {'c/ours':>7s} {'jax err':>8s}")
    for r in rows:
        rate = r["flop"] / r["ours"] / 1e12
        print(f"{r['name']:13s} {1e3 * r['ours']:7.2f}ms {1e3 * r['fwd']:7.2f}ms "
              f"{rate:6.2f} ({100 * rate / r['ceiling']:3.0f}%) "
              f"{1e3 * r['bmm']:7.2f}ms {1e3 * r['cudnn']:7.2f}ms "
              f"{1e3 * r['jax']:7.2f}ms {r['bmm'] / r['ours']:6.2f}x {r['cudnn'] / r['ours']:6.2f}x "
              f"{r['jax'] / r['ours']:6.2f}x {r['jax_err']:8.1e}")
    print_stages(rows)


def stage_seconds(call, repeats=3):
    """Median seconds per stage of ``call`` (config.GPU_STAGE_SECONDS), and "host" for the
    rest of the wall time: validation, allocation, the log-domain assembly."""
    runs = []
    for _ in range(repeats):
        config.GPU_STAGE_SECONDS = {}
        start = time.perf_counter()
        call()
        wall = time.perf_counter() - start
        stages, config.GPU_STAGE_SECONDS = config.GPU_STAGE_SECONDS, None
        stages["host"] = wall - sum(stages.values())
        runs.append(stages)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def print_stages(rows):
    """Where a call's time goes (synchronised stages), and the kernels' own FLOP rate."""
    names = list(rows[0]["stages"])
    print("\nstages of one rnnsim.gradients call, ms (synchronised; median of 3):")
    print(f"{'':13s} " + " ".join(f"{n[:14]:>14s}" for n in names) + f" {'kernels TFLOP/s':>16s}")
    for r in rows:
        kernels = sum(v for k, v in r["stages"].items() if "kernel" in k or "GEMM" in k)
        rate = r["flop"] / kernels / 1e12
        print(f"{r['name']:13s} " + " ".join(f"{1e3 * r['stages'].get(n, 0.0):14.2f}" for n in names)
              + f" {rate:8.2f} ({100 * rate / r['ceiling']:3.0f}%)")


def time_default_sweep(small):
    """The default ``rnnsim sweep`` on the GPU, twice in one process: cold (compiles) and warm."""
    import tempfile

    from rnnsim import sweep
    settings = {}
    if small:  # the simulator runs every thread in Python, and allows 48 KB of shared memory
        settings = {"lengths": "5:10:2", "scales": "0.5:3:2", "hidden": 4, "batch": 2, "seeds": 1}
        config.GPU_THREADS_PER_BLOCK, config.GPU_SEQUENCES_PER_BLOCK = 4, 2
    print("\n== default sweep, device cuda" + (" (small grid)" if small else "") + " ==", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            stats = sweep.run_sweep(sweep.configure(settings)[0], f"{folder}/{label}", device="cuda")
            print(f"{label}: {time.perf_counter() - t0:.2f} s wall, {stats['calls']} calls, "
                  f"kernel share {stats['kernel_share']:.0%}", flush=True)


def _without_w_hh_cap(cell, dtype, H):
    """A config.GPU_MAX_SHARED_BYTES that leaves W_hh out of shared memory in both kernels."""
    module = cells.get(cell).kernels("gpu")
    threads, tile = int(config.GPU_THREADS_PER_BLOCK), int(config.GPU_SEQUENCES_PER_BLOCK)
    return max(module.dynamic_shared_bytes(role, dtype, tile, threads, H, False)
               for role in ("forward", "backward"))


def sanitize(names):
    """Every cell, both dtypes, both losses, once, at shapes that keep compute-sanitizer
    quick: 2 networks x 11 sequences (two tiles, the second padded), H = 20, T = 5;
    then W_hh forced into global memory; then H = 128 (lstm backward and gru forward
    float32: above 48 KB, the opt-in). True when the cuda and cpu results agree everywhere."""
    shape = dict(E=2, B=11, T=5, D=3, H=20, K=4)
    ok = True
    for label, global_w_hh, sizes in [("W_hh in shared", False, shape), ("W_hh in global", True, shape),
                                      ("H=128 (opt-in)", False, dict(shape, E=1, B=9, T=3, H=128))]:
        for dtype in (np.float32, np.float64):
            for cell in names:
                cap = _without_w_hh_cap(cell, dtype, sizes["H"]) if global_w_hh else None
                config.GPU_MAX_SHARED_BYTES = cap
                for loss in ("last", "every"):
                    params, inputs, targets = problem(cell, dtype, loss=loss, **sizes)
                    got = rnnsim.gradients(cell, params, inputs, targets, loss=loss, device="cuda")
                    rnnsim.forward(cell, params, inputs, device="cuda")
                    want = rnnsim.gradients(cell, params, inputs, targets, loss=loss, device="cpu")
                    ratio, key = worst_error(got, want, dtype)
                    ok &= ratio <= 1.0
                    print(f"{label:15s} {cell:5s} {np.dtype(dtype).name:8s} {loss:6s} worst error "
                          f"{ratio:.3g} x tolerance at {key!r}", flush=True)
    config.GPU_MAX_SHARED_BYTES = None
    return ok


def device_name():
    if _cuda.is_simulator():
        return "CUDA simulator (timings meaningless)"
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    name = _cuda.cuda().get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes (smoke test, simulator)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per configuration")
    parser.add_argument("--sanitize", action="store_true",
                        help="run every kernel once at small shapes (for compute-sanitizer), nothing else")
    parser.add_argument("--part", choices=("check", "time", "all"), default="all",
                        help="correctness checks, timings, or both (default)")
    parser.add_argument("--cells", default=",".join(cells.names()),
                        help="comma list of cells (default: every registered cell)")
    args = parser.parse_args()
    names = [cells.get(name).name for name in args.cells.split(",")]  # unknown names: ValueError
    reason = gpu.unavailable_reason()
    if reason is not None:
        raise SystemExit(f"bench_gpu.py needs a GPU or the simulator: {reason}")
    if args.sanitize:
        print(f"device: {device_name()}")
        ok = sanitize(names)
        print("sanitize:", "PASS" if ok else "FAIL")
        raise SystemExit(0 if ok else 1)
    if args.small:
        checks = [dict(E=1, B=2, T=4, D=2, H=3, K=3), dict(E=2, B=3, T=3, D=2, H=5, K=3)]
        loss_check = dict(E=2, B=3, T=4, D=2, H=3, K=3)
        bench = dict(E=2, B=2, T=3, D=2, H=3, K=3)
        repeats = args.repeats or 1
    else:
        checks = [dict(E=2, B=4, T=512, D=16, H=128, K=10), dict(E=2, B=3, T=256, D=16, H=512, K=10)]
        loss_check = dict(E=3, B=5, T=40, D=6, H=48, K=5)
        bench = dict(E=64, B=32, T=512, D=16, H=128, K=10)
        repeats = args.repeats or 5
    print(f"device: {device_name()}")
    ok = True
    if args.part in ("check", "all"):
        for shape in checks:
            ok &= check_correctness(shape, names)
        ok &= check_losses(loss_check, names)
        print("\ncorrectness:", "PASS" if ok else "FAIL")
    if args.part in ("time", "all"):
        benchmark(bench, repeats, args.small, names)
        time_default_sweep(args.small)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
