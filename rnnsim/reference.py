r"""Plain NumPy float64 reference: forward pass and log-domain BPTT of every cell.

This is the statement of the math that every fast kernel (Numba CPU, numba.cuda
GPU) is tested against, and it is tested against central finite differences and
torch autograd. It favours clarity over speed, and it knows no cell by name: the
time loops below run any cell of the registry through its ``forward_step`` and
``backward_step`` (:mod:`rnnsim.cells`), the loss comes from :mod:`rnnsim.losses`
and every log-domain identity from :mod:`rnnsim.logdomain`.

Log-domain adjoints
-------------------
The adjoint of the state at step t is kept as :math:`e^{s_t} u_t` with a float64
log-scale :math:`s_t` and a mantissa :math:`u_t` of unit (joint) norm; each step's
backward is linear, so it runs on the mantissa alone, and the loss term of step
t-1 is added in log form (identity 1). The parameter gradients are sums of terms
:math:`e^{s_{bt}}\,\delta_{bt} \otimes (x_t, h_{t-1}, 1)`, formed relative to the
largest scale S* (identity 2) and multiplied by :math:`e^{S^*}` at the very end
(identity 3), so nothing under- or overflows at any T.
"""
from __future__ import annotations

import numpy as np

from . import cells, logdomain
from ._validate import check_clip, check_mask, check_problem
from .losses import readout_loss


def forward(cell, params, inputs):
    """Run the recurrence of ``cell``; return the states and what BPTT keeps.

    Returns a dict with one (E, B, T+1, H) array per state component of the cell
    (``h`` and, for the lstm, ``c``), including the zero state at t = 0, and
    ``caches``: the list of the T per-step caches of ``forward_step``.
    """
    spec = cells.get(cell)
    x = np.asarray(inputs, dtype=np.float64)
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    E, B, T, _ = x.shape
    H = p["weight_hh_l0"].shape[2]
    states = {name: np.zeros((E, B, T + 1, H)) for name in spec.state}
    caches = []
    for t in range(T):
        new, cache = spec.forward_step(p, x[:, :, t], {name: v[:, :, t] for name, v in states.items()})
        for name, value in new.items():
            states[name][:, :, t + 1] = value
        caches.append(cache)
    return {**states, "caches": caches}


def gradients(cell, params, inputs, targets, *, loss="last", mask=None, clip=None):
    """Loss, parameter gradients and log gradient-norm profiles, in float64.

    Same contract and keys as :func:`rnnsim.gradients` (every loss, ``mask`` and
    ``clip``); always computes in float64 whatever the inputs' dtype (the gradients
    are returned in the inputs' dtype, the log profiles in float64).
    """
    problem, params, inputs, targets = check_problem(cell, params, inputs, targets, loss)
    mask = check_mask(problem, mask)
    clip = check_clip(clip)
    return logdomain.assemble(problem, raw_gradients(problem, params, inputs, targets, mask), clip)


def _log_norm(v):
    with np.errstate(divide="ignore"):
        return np.log(np.linalg.norm(v, axis=-1))


def raw_gradients(problem, params, inputs, targets, mask=None, *, adjoints=None):
    """The backend contract: log-domain results before ``rnnsim.logdomain.assemble``.

    Takes validated arguments (see ``rnnsim._validate.check_problem`` and
    ``check_mask``) and returns
    ``mantissas`` (dict of the recurrent-parameter gradients relative to
    ``exp(log_scale)``; ``bias_hh_l0`` may be left to ``logdomain.tie_biases``),
    ``log_scale`` (E,), ``weight_out``, ``bias_out``, ``loss`` (E,) and one
    (E, B, T+1) log-norm profile per state component (``log_grad_norm`` for h,
    ``log_grad_norm_c`` for the lstm's c; see ``Cell.profile_keys``), and ``h_last``
    (E, B, H), the final hidden states h_T. Every kernel backend returns the same dict.

    With ``adjoints`` (E, B, T+1, H), the per-step dL/dh_t of a loss computed outside
    (:func:`rnnsim.losses.readout_loss`), those are injected into the backward instead
    of the loss of ``problem.loss``, and ``loss``, ``weight_out`` and ``bias_out`` are
    left out (the caller has them); ``targets`` and ``mask`` are then unused. Every
    backend's ``gradients`` takes ``adjoints`` the same way.
    """
    spec = cells.get(problem.cell)
    p = {k: v.astype(np.float64) for k, v in params.items()}
    x = inputs.astype(np.float64)
    E, B, T, H = problem.E, problem.B, problem.T, problem.H
    acts = forward(problem.cell, p, x)
    h = acts["h"]
    if adjoints is None:
        out = readout_loss(problem.loss, p, h, targets, mask)
        local = out["local"]                               # (E, B, T+1, H), dL/dh_t from the loss
    else:
        out, local = None, np.asarray(adjoints, dtype=np.float64)

    # ---- backward through time, log domain (identity 1 at every step)
    profiles = {name: np.full((E, B, T + 1), -np.inf) for name in spec.state}
    row_mant = {side: np.zeros((E, B, T, problem.G * H)) for side in ("ih", "hh")}
    row_scale = np.full((E, B, T), -np.inf)
    zero = {name: np.zeros((E, B, H)) for name in spec.state}
    scale, mant = logdomain.log_add(np.full((E, B), -np.inf), zero, local[:, :, T])
    for t in range(T, 0, -1):
        rows, previous, totals = spec.backward_step(p, acts["caches"][t - 1], mant)
        for name, vector in totals.items():
            profiles[name][:, :, t] = scale + _log_norm(vector)
        for side in row_mant:
            row_mant[side][:, :, t - 1] = rows[side]
        row_scale[:, :, t - 1] = scale
        scale, mant = logdomain.log_add(scale, previous, local[:, :, t - 1])
    for name in spec.state:
        profiles[name][:, :, 0] = scale + _log_norm(mant[name])

    # ---- parameter gradients relative to S* (identity 2)
    s_star, weight = logdomain.relative_weights(row_scale, (1, 2), logdomain.log_weight_cutoff(problem.dtype))
    rel = {side: m * weight[..., None] for side, m in row_mant.items()}
    mantissas = {
        "weight_ih_l0": np.einsum("ebtg,ebtd->egd", rel["ih"], x),
        "weight_hh_l0": np.einsum("ebtg,ebth->egh", rel["hh"], h[:, :, :T]),
        "bias_ih_l0": rel["ih"].sum(axis=(1, 2)),
        "bias_hh_l0": rel["hh"].sum(axis=(1, 2)),
    }
    raw = {"mantissas": mantissas, "log_scale": s_star, "h_last": h[:, :, T]}
    if out is not None:
        raw.update(loss=out["loss"], weight_out=out["weight_out"], bias_out=out["bias_out"])
    for name, key in spec.profile_keys().items():
        raw[key] = profiles[name]
    return raw


def initial_tangents(n, k, seed=0):
    """The k orthonormal tangent vectors every backend starts from: rows of a (k, n) array,
    a fixed random draw (from ``seed``) so that no structure of the map is favoured."""
    return np.ascontiguousarray(np.linalg.qr(np.random.default_rng(seed).standard_normal((n, k)))[0].T)


def lyapunov_steps(T, qr_every, warmup):
    """The steps the exponents average over: those of the QR blocks (every ``qr_every``
    steps, and a last short one at T) that start at or after ``warmup``."""
    starts = range(0, T, qr_every)
    return sum(min(start + qr_every, T) - start for start in starts if start >= warmup)


def lyapunov_raw(problem, params, inputs, k, qr_every, warmup, seed=0):
    r"""Top-k Lyapunov exponents of the input-driven forward dynamics, by QR reorthonormalisation.

    Takes validated arguments; returns ``exponents_per_sequence`` (E, B, k) in nats
    per step and ``log_growth`` (E, B, T): the running sum over steps of
    :math:`\sum_i \ln|R_{ii}|`, the log growth of the k-dimensional volume spanned by
    the tangent vectors (it changes at each reorthonormalisation after the warm-up),
    and ``steps``, the number of steps the exponents average over: those of the QR
    blocks that start at or after ``warmup``.

    Notes
    -----
    The state is every component of the cell (h; for the lstm (h, c), dimension 2H).
    k orthonormal tangent vectors (a fixed random draw from ``seed``) follow the
    Jacobian-vector products of the cell's ``tangent_step`` along the trajectory;
    every ``qr_every`` steps :math:`V = QR` and Q replaces V. After ``warmup`` steps
    the :math:`\ln|R_{ii}|` are summed and divided by the number of steps summed over.
    """
    spec = cells.get(problem.cell)
    E, B, T, H = problem.E, problem.B, problem.T, problem.H
    names = spec.state
    n = len(names) * H
    p = {key: v.astype(np.float64) for key, v in params.items()}
    x = inputs.astype(np.float64)
    tangent = np.broadcast_to(initial_tangents(n, k, seed), (E, B, k, n)).copy()  # k rows of length n
    state = {name: np.zeros((E, B, H)) for name in names}
    growth = np.zeros((E, B, k))
    log_growth = np.zeros((E, B, T))
    running = np.zeros((E, B))
    block_start = 0
    for t in range(T):
        state, cache = spec.forward_step(p, x[:, :, t], state)
        split = {name: tangent[..., i * H:(i + 1) * H] for i, name in enumerate(names)}
        tangent = np.concatenate([spec.tangent_step(p, cache, split)[name] for name in names], axis=-1)
        if (t + 1 - block_start) == qr_every or t == T - 1:
            q, r = np.linalg.qr(np.swapaxes(tangent, -1, -2))       # (E, B, n, k), (E, B, k, k)
            with np.errstate(divide="ignore"):
                log_r = np.log(np.abs(np.diagonal(r, axis1=-2, axis2=-1)))
            tangent = np.swapaxes(q, -1, -2)
            if block_start >= warmup:  # only blocks that start after the warm-up count
                growth += log_r
                running = running + log_r.sum(axis=-1)
            block_start = t + 1
        log_growth[:, :, t] = running
    counted = lyapunov_steps(T, qr_every, warmup)
    return {"exponents_per_sequence": growth / counted, "log_growth": log_growth, "steps": counted}
