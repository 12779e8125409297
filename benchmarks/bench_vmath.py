"""ns/element of the vectorizable _vmath tanh/sigmoid vs libm in @njit and NumPy.

Usage::

    NUMBA_CACHE_DIR=/tmp/numba_cache python benchmarks/bench_vmath.py [--n 1000000] [--repeat 21]

Each variant is an @njit loop ``out[i] = f(x[i])`` compiled with the fastmath
set of our kernels (no nnan/ninf); inputs are uniform on [-6, 6] (the libm
functions are data dependent, ours are branch-free). Reported: median over
`repeat` timed calls, after a warm-up call, in ns per element.
"""
import argparse
import math
import time

import numpy as np
from numba import njit

from rnnsim.kernels._vmath import exp, sigmoid, tanh

FM = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(fastmath=FM, cache=True)
def vm_tanh(x, out):
    for i in range(x.size):
        out[i] = tanh(x[i])


@njit(fastmath=FM, cache=True)
def vm_sigmoid(x, out):
    for i in range(x.size):
        out[i] = sigmoid(x[i])


@njit(fastmath=FM, cache=True)
def vm_exp(x, out):
    for i in range(x.size):
        out[i] = exp(x[i])


@njit(fastmath=FM, cache=True)
def libm_tanh(x, out):
    for i in range(x.size):
        out[i] = math.tanh(x[i])


@njit(fastmath=FM, cache=True)
def libm_sigmoid(x, out):
    # the naive kernel: for float32 input the 1.0 literals promote the
    # division to float64 (what an unwary kernel gets), exp itself is expf
    for i in range(x.size):
        out[i] = 1.0 / (1.0 + math.exp(-x[i]))


@njit(fastmath=FM, cache=True)
def libm_exp(x, out):
    for i in range(x.size):
        out[i] = math.exp(x[i])


@njit(fastmath=FM, cache=True)
def copy_loop(x, out):
    # memory-traffic floor: same loads/stores, no math
    for i in range(x.size):
        out[i] = x[i]


def np_tanh(x, out):
    np.tanh(x, out=out)


def np_sigmoid(x, out):
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)


def np_exp(x, out):
    np.exp(x, out=out)


VARIANTS = [
    ("copy (memory floor)", copy_loop),
    ("_vmath.tanh", vm_tanh),
    ("math.tanh in njit", libm_tanh),
    ("np.tanh", np_tanh),
    ("_vmath.sigmoid", vm_sigmoid),
    ("1/(1+math.exp(-x)) njit", libm_sigmoid),
    ("numpy 1/(1+exp(-x))", np_sigmoid),
    ("_vmath.exp", vm_exp),
    ("math.exp in njit", libm_exp),
    ("np.exp", np_exp),
]


def bench_all(variants, x, repeat):
    """Median ns/element per variant; rounds interleave the variants so that
    load from other processes on the machine hits all of them alike."""
    out = np.empty_like(x)
    times = {name: [] for name, _ in variants}
    with np.errstate(over="ignore"):
        for _, fn in variants:
            fn(x, out)                              # compile / warm up
        for _ in range(repeat):
            for name, fn in variants:
                t0 = time.perf_counter()
                fn(x, out)
                times[name].append(time.perf_counter() - t0)
    return {name: np.median(t) / x.size * 1e9 for name, t in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=21)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    base = rng.uniform(-6.0, 6.0, args.n)
    xs = {"f32": base.astype(np.float32), "f64": base}
    print(f"n={args.n}, median of {args.repeat}, ns/element")
    print(f"{'variant':28s} {'f32':>8s} {'f64':>8s}")
    res = {k: bench_all(VARIANTS, xs[k], args.repeat) for k in ("f32", "f64")}
    for name, _ in VARIANTS:
        print(f"{name:28s} {res['f32'][name]:8.2f} {res['f64'][name]:8.2f}")


if __name__ == "__main__":
    main()
