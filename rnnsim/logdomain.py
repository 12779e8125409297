"""Log-domain bookkeeping shared by the reference and every kernel backend."""
from __future__ import annotations

import numpy as np

from ._validate import PARAM_KEYS

RECURRENT_KEYS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
OUTPUT_KEYS = ("weight_out", "bias_out")


def finalize(mantissas, log_scale, output_grads, dtype):
    """Turn log-domain recurrent gradients into plain arrays, safely.

    Parameters
    ----------
    mantissas : dict of (E, ...) arrays for the four recurrent parameters
    log_scale : (E,) float64; the true gradient is ``mantissa * exp(log_scale)``
    output_grads : dict with ``weight_out`` and ``bias_out`` (ordinary scale)
    dtype : output dtype

    Returns the gradient dict with ``log_grad_norm_params``. Entries whose true
    value lies beyond the dtype's range become +-inf (never NaN); exact zeros stay 0.

    Notes
    -----
    ``ln ||grad||`` is computed as ``0.5 * logaddexp(2 (S + ln|M_rec|), 2 ln|M_out|)``
    so it stays finite whatever the overflow of the individual entries.
    """
    E = log_scale.shape[0]
    scale = np.asarray(log_scale, dtype=np.float64).reshape(E)
    out = {}
    sq_rec = np.zeros(E)
    for key in RECURRENT_KEYS:
        m = np.asarray(mantissas[key], dtype=np.float64)
        sq_rec += np.sum(m.reshape(E, -1) ** 2, axis=1)
        s = scale.reshape((E,) + (1,) * (m.ndim - 1))
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            mag = np.exp(np.log(np.abs(m)) + s)  # exp(-inf) = 0 for zero entries
            out[key] = (np.sign(m) * np.where(m == 0, 0.0, mag)).astype(dtype)
    sq_out = np.zeros(E)
    for key in OUTPUT_KEYS:
        g = np.asarray(output_grads[key], dtype=np.float64)
        sq_out += np.sum(g.reshape(E, -1) ** 2, axis=1)
        out[key] = g.astype(dtype)
    with np.errstate(divide="ignore"):
        log_rec = np.where(np.isfinite(scale), 2.0 * scale + np.log(sq_rec), -np.inf)
        out["log_grad_norm_params"] = 0.5 * np.logaddexp(log_rec, np.log(sq_out))
    assert set(out) >= set(PARAM_KEYS)
    return out


def assemble(problem, raw):
    """The user-facing dict from a backend's raw results (see ``reference.raw_gradients``)."""
    out = finalize(raw["mantissas"], raw["log_scale"],
                   {key: raw[key] for key in OUTPUT_KEYS}, problem.dtype)
    out["loss"] = np.asarray(raw["loss"], dtype=problem.dtype)
    out["log_grad_norm"] = np.asarray(raw["log_grad_norm"], dtype=np.float64)
    if problem.cell == "lstm":
        out["log_grad_norm_c"] = np.asarray(raw["log_grad_norm_c"], dtype=np.float64)
    return out
