"""Input checks shared by every entry point (Python API, CLI, sweep).

Each check raises a one-line ``ValueError`` or ``TypeError`` that names the problem,
so that the CLI can print it and exit with code 2.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
from dataclasses import dataclass

import numpy as np

from . import _memory, cells, config
from .cells import PARAM_KEYS
from .losses import FUSED_LOSSES, LOSSES, MASKED_LOSSES, is_class_loss, target_shape

DEVICES = ("cpu", "cuda", "auto")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class Problem:
    """Sizes and options of one validated ``gradients`` call."""

    cell: str
    loss: str
    E: int  # networks in the ensemble
    B: int  # sequences per network
    T: int  # time steps
    D: int  # input size
    H: int  # hidden size
    K: int  # classes
    dtype: np.dtype

    @property
    def G(self) -> int:
        """Number of gate blocks of the cell (see :class:`rnnsim.cells.Cell`)."""
        return cells.get(self.cell).G


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def _as_array(name, value) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception as exc:  # pragma: no cover - exotic array-likes
            raise TypeError(f"{name} is not an array: {exc}") from None
    return value


_FINITE_BLOCK = 1 << 22  # elements checked at once: the check never copies a large input


def _blocks(arr: np.ndarray):
    """Views of ``arr`` of at most about ``_FINITE_BLOCK`` elements that together cover it."""
    if arr.size <= _FINITE_BLOCK or arr.ndim == 0:
        yield arr
    elif arr.ndim == 1:
        for start in range(0, arr.shape[0], _FINITE_BLOCK):
            yield arr[start:start + _FINITE_BLOCK]
    else:
        for sub in arr:
            yield from _blocks(sub)


def _require_finite(name: str, arr: np.ndarray) -> None:
    if arr.size <= _FINITE_BLOCK:  # one block: no generator to run (a few us of a small call)
        bad = arr.size - np.count_nonzero(np.isfinite(arr))
    else:
        bad = sum(int(block.size - np.count_nonzero(np.isfinite(block))) for block in _blocks(arr))
    if bad:
        raise ValueError(f"{name} contains {bad} NaN/inf value(s)")


@functools.lru_cache(maxsize=1)
def _logical_cpus() -> int:
    """os.cpu_count(), asked once: it reads the OS's CPU list on every call."""
    return os.cpu_count() or 1


def _require_memory(problem, need_targets: bool) -> None:
    """Refuse, before anything is copied or allocated, a call that cannot fit in memory."""
    p = problem
    n_states = len(cells.get(p.cell).state)
    workers = _logical_cpus()
    tile = max(1, int(config.CPU_SEQUENCE_TILE))
    item = p.dtype.itemsize
    if need_targets:
        injected = p.loss not in FUSED_LOSSES  # the kernels' backward takes every step's adjoints
        nbytes = _memory.gradients_bytes(p.G, n_states, p.E, p.B, p.T, p.D, p.H, p.K, item,
                                         loss_every=p.loss != "last", workers=workers, tile=tile)
        if injected:
            nbytes += _memory.injected_loss_bytes(n_states, p.E, p.B, p.T, p.H, p.K, item)
        what = "gradients"
    else:
        nbytes = _memory.forward_bytes(p.G, n_states, p.E, p.B, p.T, p.D, p.H, item,
                                       workers=workers, tile=tile)
        what = "forward"
    _memory.require(nbytes,
                    lambda: f"{what}() for E={p.E}, B={p.B}, T={p.T}, D={p.D}, H={p.H}, K={p.K} ({p.dtype})")


def check_problem(cell, params, inputs, targets, loss="last", *, need_targets=True):
    """Validate a ``gradients``/``forward`` call.

    Returns
    -------
    problem : Problem
    params : dict of C-contiguous arrays, in the inputs' dtype
    inputs : C-contiguous array (E, B, T, D)
    targets : C-contiguous array of :func:`rnnsim.losses.target_shape`, or None: int64
        class indices, or floats in the inputs' dtype for the MSE losses
    """
    G = cells.get(cell).G
    loss = check_choice("loss", loss, LOSSES)
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
    missing = [k for k in PARAM_KEYS if k not in params]
    if missing:
        raise ValueError(f"params is missing key(s): {', '.join(missing)}")
    unknown = sorted(str(k) for k in params if k not in PARAM_KEYS)
    if unknown:
        raise ValueError(f"params has unknown key(s): {', '.join(unknown)}; expected {', '.join(PARAM_KEYS)}")

    inputs = _as_array("inputs", inputs)
    if inputs.dtype not in FLOAT_DTYPES:
        raise TypeError(f"inputs must be float32 or float64, got {inputs.dtype}")
    dtype = inputs.dtype
    if inputs.ndim != 4:
        raise ValueError(f"inputs must have shape (E, B, T, D), got {inputs.shape}")

    arrays = {}
    for key in PARAM_KEYS:
        arr = _as_array(key, params[key])
        if arr.dtype != dtype:
            raise TypeError(f"{key} has dtype {arr.dtype} but inputs are {dtype}; "
                            "cast them explicitly (mixed dtypes are not converted silently)")
        arrays[key] = arr

    w_hh = arrays["weight_hh_l0"]
    if w_hh.ndim != 3:
        raise ValueError(f"weight_hh_l0 must have shape (E, {G}*H, H), got {w_hh.shape}")
    E, GH, H = w_hh.shape
    if GH != G * H:
        raise ValueError(f"weight_hh_l0 has shape {w_hh.shape}, but a {cell} needs (E, {G}*H, H)")
    if arrays["weight_ih_l0"].ndim != 3 or arrays["weight_out"].ndim != 3:
        raise ValueError("weight_ih_l0 and weight_out must be 3-D (E, rows, columns)")
    D = arrays["weight_ih_l0"].shape[2]
    K = arrays["weight_out"].shape[1]
    expected = cells.get(cell).param_shapes(E, H, D, K)
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise ValueError(f"{key} has shape {arrays[key].shape}, expected {shape} "
                             f"(E={E}, H={H}, D={D}, K={K} from the other parameters)")
    if inputs.shape[0] != E or inputs.shape[3] != D:
        raise ValueError(f"inputs have shape {inputs.shape}, expected (E={E}, B, T, D={D}) to match params")
    B, T = inputs.shape[1], inputs.shape[2]
    for name, size in (("E (networks)", E), ("B (sequences)", B), ("T (time steps)", T),
                       ("D (input size)", D), ("H (hidden size)", H), ("K (classes)", K)):
        if size == 0:
            raise ValueError(f"{name} must be at least 1, got 0")

    problem = Problem(cell=cell, loss=loss, E=E, B=B, T=T, D=D, H=H, K=K, dtype=dtype)
    _require_memory(problem, need_targets)
    _require_finite("inputs", inputs)
    for key in PARAM_KEYS:
        _require_finite(key, arrays[key])

    tgt = _check_targets(problem, targets) if need_targets else None
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    return problem, arrays, np.ascontiguousarray(inputs), tgt


def _check_targets(problem, targets):
    """Targets of ``problem.loss``: class indices in [0, K), or finite floats of the inputs' dtype."""
    loss, K = problem.loss, problem.K
    tgt = _as_array("targets", targets)
    want = target_shape(loss, problem.E, problem.B, problem.T, K)
    if is_class_loss(loss):
        if tgt.dtype == np.bool_ or not np.issubdtype(tgt.dtype, np.integer):
            raise TypeError(f"targets of loss={loss!r} are class indices: they must be an integer array, "
                            f"got dtype {tgt.dtype} (for float targets use an mse-* loss)")
    elif tgt.dtype != problem.dtype:
        raise TypeError(f"targets of loss={loss!r} are float values in the inputs' dtype {problem.dtype}, "
                        f"got dtype {tgt.dtype}; cast them with targets.astype(np.{problem.dtype.name})")
    if tgt.shape != want:
        raise ValueError(f"targets have shape {tgt.shape}; loss={loss!r} needs {want}")
    if not is_class_loss(loss):
        _require_finite("targets", tgt)
        return np.ascontiguousarray(tgt)
    if tgt.size and (tgt.min() < 0 or tgt.max() >= K):
        raise ValueError(f"targets must lie in [0, {K - 1}] (K={K} classes), "
                         f"found values in [{tgt.min()}, {tgt.max()}]")
    return np.ascontiguousarray(tgt, dtype=np.int64)


def check_mask(problem, mask):
    """The mask of a masked loss as a C-contiguous (E, B, T) bool array; None for the others.

    A masked loss needs a bool mask broadcastable to (E, B, T) ((T,), (B, T) or
    (E, B, T)) that selects at least one (sequence, step) pair of every network;
    the other losses take no mask.
    """
    loss, E, B, T = problem.loss, problem.E, problem.B, problem.T
    if loss not in MASKED_LOSSES:
        if mask is not None:
            raise ValueError(f"loss={loss!r} takes no mask; use loss='masked' or 'mse-masked'")
        return None
    if mask is None:
        raise ValueError(f"loss={loss!r} needs a mask: a bool array broadcastable to (E, B, T) = {(E, B, T)}")
    mask = _as_array("mask", mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be a bool array, got dtype {mask.dtype}; use mask.astype(bool) "
                        "if its nonzero entries mark the steps")
    try:
        ok = mask.ndim <= 3 and np.broadcast_shapes(mask.shape, (E, B, T)) == (E, B, T)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"mask has shape {mask.shape}; it must broadcast to (E, B, T) = {(E, B, T)} "
                         "((T,), (B, T) or (E, B, T))")
    full = np.ascontiguousarray(np.broadcast_to(mask, (E, B, T)))
    empty = np.flatnonzero(~full.reshape(E, -1).any(axis=1))
    if empty.size:
        names = ", ".join(str(e) for e in empty[:10]) + (", ..." if empty.size > 10 else "")
        raise ValueError(f"mask selects no (sequence, step) pair of network(s) {names}; "
                         "every network needs at least one loss term")
    return full


def check_clip(clip):
    """None, or the clipping threshold as a positive finite float."""
    if clip is None:
        return None
    if isinstance(clip, bool) or not isinstance(clip, numbers.Real):
        raise TypeError(f"clip must be None or a positive number, got {clip!r}")
    clip = float(clip)
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a positive finite number, got {clip}")
    return clip


def _count(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got {value}")
    return int(value)


def check_lyapunov(problem, k, qr_every, warmup):
    """Validate the options of :func:`rnnsim.lyapunov` against the problem's sizes.

    k lies in [1, state dimension] (H, or 2H for the lstm's (h, c)); at least one QR
    block must start after the warm-up, so ``warmup + qr_every <= T``.
    """
    n = len(cells.get(problem.cell).state) * problem.H
    k = _count("k", k, 1, n)
    qr_every = _count("qr_every", qr_every, 1, problem.T)
    warmup = _count("warmup", warmup, 0, problem.T - qr_every)
    nbytes = 8 * problem.E * problem.B * (4 * k * n + problem.T) + 8 * n * n
    _memory.require(nbytes, f"lyapunov() with k={k} for E={problem.E}, B={problem.B}, state dimension {n}")
    return k, qr_every, warmup
