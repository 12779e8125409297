r"""Every log-domain identity of rnnsim, stated once.

An adjoint is kept as :math:`e^{s} u`: a float64 log-scale :math:`s` and a mantissa
:math:`u` of unit norm (for a cell with several state components, such as the
lstm's (h, c), the components share one scale and have unit *joint* norm).
Nothing then under- or overflows at any T. The identities are

1. **renormalise and add a loss term** (:func:`log_add`): with :math:`n = |u|`,
   :math:`s_1 = s + \ln n` and :math:`m = \max(s_1, \ln|g|)`,

   .. math:: e^{s} u + g = e^{m}\big(e^{s_1 - m}\, u/n + e^{\ln|g| - m}\, g/|g|\big),

   and the bracket is renormalised, so no factor ever leaves the float range;
2. **the S\* merge** (:func:`relative_weights`, :func:`merge_scaled`): a sum of
   scaled terms :math:`\sum_i e^{s_i} M_i = e^{S^*} \sum_i e^{s_i - S^*} M_i` with
   :math:`S^* = \max_i s_i`; a term whose weight :math:`e^{s_i - S^*}` is below the
   cutoff :func:`log_weight_cutoff` is dropped;
3. **finalize** (:func:`finalize`): :math:`e^{S^*} M` becomes a plain array whose
   entries beyond the dtype's range are ±inf, never NaN, and
   :math:`\ln\|\nabla\|` stays finite; clipping by global norm adds
   :math:`\min(0, \ln c - \ln\|\nabla\|)` to :math:`S^*` first;
4. **the bias tie** (:func:`tie_biases`): when a cell folds b_ih and b_hh into one
   sum, their gradients are equal.

This module holds the NumPy statements, used by the reference and by the drivers
on the host. The kernels keep fast versions of 1 and 2, and each cites the
identity it implements.
"""
from __future__ import annotations

import math

import numpy as np

from . import cells, config
from .cells import OUTPUT_KEYS, PARAM_KEYS, RECURRENT_KEYS

__all__ = ["log_add", "log_weight_cutoff", "relative_weights", "merge_scaled", "finalize",
           "tie_biases", "assemble", "RECURRENT_KEYS", "OUTPUT_KEYS"]


def _log_norm(sq):
    with np.errstate(divide="ignore"):
        return 0.5 * np.log(sq)


def log_add(scale, mantissas, local=None):
    r"""Identity 1: :math:`e^{s}(u_h, u_c, ...) + (g, 0, ...)` as a new scale and unit mantissas.

    Parameters
    ----------
    scale : (...) float64 log-scales, may be -inf (a zero adjoint)
    mantissas : dict name -> (..., H) arrays; not necessarily of unit norm
    local : (..., H) or None
        The loss term's gradient (ordinary scale), added to the ``"h"`` component.

    Returns
    -------
    (new_scale, new_mantissas): unit joint norm, or zeros with scale -inf.
    """
    names = list(mantissas)
    sq = sum(np.sum(mantissas[k] ** 2, axis=-1) for k in names)
    s1 = np.where(np.isfinite(scale) & (sq > 0), scale + _log_norm(sq), -np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(sq > 0, 1.0 / np.sqrt(np.where(sq > 0, sq, 1.0)), 0.0)
    unit = {k: mantissas[k] * inv[..., None] for k in names}
    if local is not None:
        log_local = _log_norm(np.sum(local ** 2, axis=-1))
        m = np.maximum(s1, log_local)
        m_safe = np.where(np.isfinite(m), m, 0.0)
        w_old = np.where(np.isfinite(s1), np.exp(s1 - m_safe), 0.0)[..., None]
        w_new = np.where(np.isfinite(log_local), np.exp(-m_safe), 0.0)[..., None]  # e^{ln|g|-m}/|g|
        unit = {k: w_old * v for k, v in unit.items()}
        unit["h"] = unit["h"] + w_new * local
        sq = sum(np.sum(unit[k] ** 2, axis=-1) for k in names)
        s1 = np.where(np.isfinite(m) & (sq > 0), m_safe + _log_norm(sq), -np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(sq > 0, 1.0 / np.sqrt(np.where(sq > 0, sq, 1.0)), 0.0)
        unit = {k: v * inv[..., None] for k, v in unit.items()}
    return s1, unit


def log_weight_cutoff(dtype) -> float:
    """Identity 2's cutoff: the natural log of the smallest relative weight kept.

    ``config.LOG_WEIGHT_CUTOFF_POWER * ln(finfo(dtype).tiny)``: with the default 0.5,
    sqrt(tiny) (1e-19 in float32, 1e-154 in float64). Read at call time.
    """
    return float(config.LOG_WEIGHT_CUTOFF_POWER) * math.log(np.finfo(np.dtype(dtype)).tiny)


def relative_weights(scales, axes, cutoff):
    """Identity 2: S* = max of ``scales`` over ``axes`` and the weights exp(s - S*).

    Weights of -inf scales, and those below ``exp(cutoff)``, are 0. Returns
    ``(s_star, weights)``; ``s_star`` is -inf where every scale is -inf.
    """
    scales = np.asarray(scales, dtype=np.float64)
    s_star = np.max(scales, axis=axes, keepdims=True)
    rel = scales - np.where(np.isfinite(s_star), s_star, 0.0)
    with np.errstate(invalid="ignore"):
        weights = np.where(np.isfinite(scales) & (rel > cutoff), np.exp(rel), 0.0)
    return np.squeeze(s_star, axis=axes), weights


def merge_scaled(parts, part_scale, group, n_groups, cutoff):
    """Identity 2 over groups: per group g, ``sum_i parts[i] exp(s_i)`` as (mantissa, S*).

    Parameters
    ----------
    parts : dict name -> (n, ...) mantissas, each relative to ``exp(part_scale[i])``
    part_scale : (n,) float64
    group : (n,) int, the group (network) of each part
    n_groups : int
    cutoff : float, from :func:`log_weight_cutoff`

    Returns
    -------
    (merged dict name -> (n_groups, ...) float64, s_star (n_groups,) float64)
    """
    part_scale = np.asarray(part_scale, dtype=np.float64)
    one_each = _one_part_each(group, n_groups)  # then each sum is its one (scaled) part
    if one_each:  # each part is its group's maximum: exp(0) = 1 (above any cutoff, < 0) for a finite scale
        s_star = part_scale.copy()
        factor = np.isfinite(part_scale).astype(np.float64)
    else:
        s_star = np.full(n_groups, -np.inf)
        np.maximum.at(s_star, group, part_scale)
        group_star = s_star[group]
        rel = part_scale - np.where(np.isfinite(group_star), group_star, 0.0)
        with np.errstate(invalid="ignore"):
            factor = np.where(np.isfinite(part_scale) & (rel > cutoff), np.exp(rel), 0.0)
    merged = {}
    for key, part in parts.items():
        scaled = part * factor.reshape((-1,) + (1,) * (part.ndim - 1))  # float64, as factor is
        merged[key] = scaled if one_each else group_sum(scaled, group, n_groups)
    return merged, s_star


def _one_part_each(group, n_groups):
    """Whether part i is the only part of group i (every group sum is then a copy)."""
    # an element-wise comparison: np.array_equal costs twice as much on the few parts of a small call
    return len(group) == n_groups and bool((np.asarray(group) == np.arange(n_groups)).all())


def group_sum(values, group, n_groups):
    """``out[g] = sum of values[i] with group[i] == g`` in float64, (n_groups, ...).

    The parts of one network are consecutive on every backend, so the sum is one
    ``np.add.reduceat`` (np.add.at, the general case, is ~10x slower); both add each
    group's rows in index order.
    """
    group = np.asarray(group)
    if _one_part_each(group, n_groups):
        return np.array(values, dtype=np.float64)
    out = np.zeros((n_groups,) + values.shape[1:], dtype=np.float64)
    if len(group) and np.all(group[1:] >= group[:-1]):
        present = np.bincount(group, minlength=n_groups) > 0
        starts = np.searchsorted(group, np.flatnonzero(present))
        out[present] = np.add.reduceat(np.asarray(values, dtype=np.float64), starts, axis=0)
    else:
        np.add.at(out, group, values)
    return out


def tie_biases(cell, mantissas):
    """Identity 4: a cell that folds b_ih and b_hh into one sum has equal bias gradients."""
    if cells.get(cell).folded_bias and "bias_hh_l0" not in mantissas:
        mantissas["bias_hh_l0"] = mantissas["bias_ih_l0"].copy()
    return mantissas


def _times_exp(m, s):
    """m * exp(s) for one network's mantissas where exp(s) is not a normal float64:
    0 for s = -inf, +-inf for s = +inf, NaN for NaN (exact zeros stay 0)."""
    if np.isnan(s):
        return np.where(m == 0, 0.0, np.nan)
    if np.isinf(s):
        return np.zeros_like(m) if s < 0 else np.where(m == 0, 0.0, np.copysign(np.inf, m))
    k = math.floor(s / math.log(2.0))
    return np.ldexp(m * 2.0 ** (s / math.log(2.0) - k), max(-4096, min(4096, k)))


def finalize(mantissas, log_scale, output_grads, dtype, clip=None):
    r"""Identity 3: log-domain recurrent gradients into plain arrays, safely.

    Parameters
    ----------
    mantissas : dict of (E, ...) arrays for the four recurrent parameters
    log_scale : (E,) float64; the true gradient is ``mantissa * exp(log_scale)``
    output_grads : dict with ``weight_out`` and ``bias_out`` (ordinary scale)
    dtype : output dtype
    clip : None or a positive float c: scale network e's whole gradient by
        :math:`\min(1, c/\|g_e\|)` before it is materialised

    Returns the gradient dict with ``log_grad_norm_params`` (the unclipped norm) and,
    with ``clip``, ``clipped`` (E,) bool. Entries whose true value lies beyond the
    dtype's range become +-inf (never NaN); exact zeros stay 0.

    Notes
    -----
    ``ln ||grad||`` is computed as ``0.5 * logaddexp(2 (S + ln|M_rec|), 2 ln|M_out|)``
    so it stays finite whatever the overflow of the individual entries. Clipping by
    global norm (Pascanu et al. 2013) multiplies every entry by :math:`e^{f}` with
    :math:`f = \min(0, \ln c - \ln\|g\|)`, added to the log-scale S of the recurrent
    entries, so a clipped gradient is finite (its norm is c) even where the unclipped
    entries would overflow the dtype.
    """
    E = log_scale.shape[0]
    scale = np.asarray(log_scale, dtype=np.float64).reshape(E)
    recurrent = [np.asarray(mantissas[key], dtype=np.float64) for key in RECURRENT_KEYS]
    readout = [np.asarray(output_grads[key], dtype=np.float64) for key in OUTPUT_KEYS]
    # squared norms per network, without a squared copy
    sq_rec = sum(np.einsum("ij,ij->i", m.reshape(E, -1), m.reshape(E, -1)) for m in recurrent)
    sq_out = sum(np.einsum("ij,ij->i", g.reshape(E, -1), g.reshape(E, -1)) for g in readout)
    out = {}
    factor = None
    # one context for the whole: log(0) = -inf, and entries beyond the range become +-inf
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_rec = np.where(np.isfinite(scale), 2.0 * scale + np.log(sq_rec), -np.inf)
        log_norm = 0.5 * np.logaddexp(log_rec, np.log(sq_out))
        if clip is not None:
            clipped = log_norm > math.log(clip)
            factor = np.where(clipped, math.log(clip) - np.where(clipped, log_norm, 0.0), 0.0)
            scale = scale + factor
        # Where exp(S) is a normal float64, M * exp(S) (two roundings; an entry beyond the
        # range becomes +-inf). Elsewhere exp(S) = 2^k 2^r, r in [0, 1): M 2^r cannot
        # overflow and ldexp applies 2^k exactly. Both replace exp(ln|M| + S), whose log and
        # exp per entry were most of a GPU call's host time.
        normal = np.abs(scale) < 700.0
        by_multiply = np.exp(np.where(normal, scale, 0.0))
        beyond = np.flatnonzero(~normal)
        for key, m in zip(RECURRENT_KEYS, recurrent):
            value = m * by_multiply.reshape((E,) + (1,) * (m.ndim - 1))
            for e in beyond:
                value[e] = _times_exp(m[e], scale[e])
            out[key] = value.astype(dtype, copy=False)
    for key, g in zip(OUTPUT_KEYS, readout):
        if factor is not None:
            g = g * np.exp(factor).reshape((E,) + (1,) * (g.ndim - 1))
        out[key] = g.astype(dtype)
    out["log_grad_norm_params"] = log_norm
    if clip is not None:
        out["clipped"] = clipped
    assert set(out) >= set(PARAM_KEYS)
    return out


def assemble(problem, raw, clip=None):
    """The user-facing dict from a backend's raw results (see ``reference.raw_gradients``);
    ``clip`` as in :func:`finalize`."""
    mantissas = tie_biases(problem.cell, dict(raw["mantissas"]))
    out = finalize(mantissas, raw["log_scale"], {key: raw[key] for key in OUTPUT_KEYS}, problem.dtype, clip)
    out["loss"] = np.asarray(raw["loss"], dtype=problem.dtype)
    out["h_last"] = np.asarray(raw["h_last"], dtype=problem.dtype)
    for key in cells.get(problem.cell).profile_keys().values():
        out[key] = np.asarray(raw[key], dtype=np.float64)
    return out
