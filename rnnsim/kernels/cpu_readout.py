"""@njit readout of one work item: the softmax cross-entropy and the adjoints that a
loss injects into the backward pass (:func:`rnnsim.losses.readout_loss` for one
network and a tile of its sequences).

The loss kind is chosen when the item kernel compiles, from the types of its
arguments (:func:`loss_adjoints`), so a call compiles only the path it takes.
"""
from __future__ import annotations

import math

import numpy as np

from .cpu_common import jit, log_norms, renormalise, stage, take
from .cpu_matmul import matmul


@stage
def output_layer(h_rows, w_out, b_out, targets, inv_count, dlogits, local):
    """Softmax cross-entropy on rows of hidden states, and its adjoints.

    Parameters
    ----------
    h_rows : (R, H) hidden states that feed the readout
    w_out, b_out : (K, H), (K,)
    targets : (R,) int64
    inv_count : 1/B (loss "last") or 1/(B*T) (loss "every")
    dlogits : (R, K) out, dL/dz = (softmax(z) - onehot) * inv_count
    local : (R, H) out, dL/dh from this row's loss term = dlogits @ w_out

    Returns
    -------
    Sum over rows of the cross-entropy (float64), not yet divided by the count.
    """
    R, K = dlogits.shape
    matmul(h_rows, w_out.T, dlogits, 0.0)
    total = 0.0
    for r in range(R):
        z_max = -np.inf
        for k in range(K):
            z = dlogits[r, k] + b_out[k]
            dlogits[r, k] = z
            z_max = max(z_max, float(z))
        sum_exp = 0.0
        for k in range(K):
            sum_exp += math.exp(float(dlogits[r, k]) - z_max)
        log_z = z_max + math.log(sum_exp)
        total += log_z - float(dlogits[r, targets[r]])
        for k in range(K):
            dlogits[r, k] = math.exp(float(dlogits[r, k]) - log_z) * inv_count
        dlogits[r, targets[r]] -= inv_count
    matmul(dlogits, w_out, local, 0.0)
    return total


@jit
def loss_adjoints(targets, given, e, b0, hs, w_out, b_out, part_out, part_bout, h_last, pool, cursor, pool64,
                  cursor64):
    """The readout of one work item: its loss terms and the adjoints they inject.

    Parameters
    ----------
    targets : (E, B, T) int64 for the cross-entropy at every step (loss "every"),
        (E, B) for the last step only (loss "last"), or None with ``given``
    given : (E, B, T+1, H) per-step adjoints dL/dh_t of a loss computed outside the
        kernels, injected (then the readout and ``part_out``, ``part_bout`` are left
        alone, and the loss is 0), or None for the fused cross-entropy
    e, b0 : the item's network and first sequence
    hs : (T+1, nb, H) hidden states of the item
    w_out, b_out : (K, H), (K,) network e's readout
    part_out, part_bout : out, (K, H), (K,) the item's readout gradients
    h_last : out, (E, B, H): the item's final hidden states h_T go to ``h_last[e, b0:b0+nb]``
    pool, cursor, pool64, cursor64 : the item's workspaces in the dtype and in float64
        (:func:`~rnnsim.kernels.cpu_common.take`), from which its buffers come

    Returns
    -------
    (loss, mant_h, scale, local, local_log): the sum of the item's cross-entropies
    (not yet divided by the count, B·T or B); dL/dh_T as a unit-norm mantissa (nb, H)
    at float64 log-scale ``scale`` (nb,); for loss "every" and injected adjoints the
    per-step adjoints ``local`` (T+1, nb, H) and their log norms ``local_log``
    (T+1, nb), zero-length for loss "last".

    Notes
    -----
    Which of the three runs is decided by the argument types when the caller
    compiles: numba drops the branches that an ``is None`` or ``ndim`` test rules out
    for the types at hand, so each signature holds one path
    (:func:`injected_adjoints`, :func:`every_step_adjoints` or
    :func:`last_step_adjoints`). A runtime switch would compile all three into every
    item kernel. (The branches are pruned only in a function of its own: this one
    is not inlined into its caller.)
    """
    if targets is None:
        if given is not None:
            return injected_adjoints(given, e, b0, hs, h_last, pool, cursor, pool64, cursor64)
        raise ValueError("loss_adjoints: neither targets nor adjoints given")
    elif targets.ndim == 3:
        return every_step_adjoints(targets, e, b0, hs, w_out, b_out, part_out, part_bout, h_last, pool,
                                   cursor, pool64, cursor64)
    else:
        return last_step_adjoints(targets, e, b0, hs, w_out, b_out, part_out, part_bout, h_last, pool, cursor,
                                  pool64, cursor64)


@stage
def keep_last_state(hs, e, b0, h_last):
    """h_last[e, b0:b0+nb] = h_T of the item."""
    T = hs.shape[0] - 1
    for b in range(hs.shape[1]):
        for j in range(hs.shape[2]):
            h_last[e, b0 + b, j] = hs[T, b, j]


@stage
def unit_adjoint(dh, pool, cursor, pool64, cursor64):
    """dL/dh_T as a unit-norm mantissa (nb, H) in the workspace and its log-scale (nb,)."""
    nb, H = dh.shape
    mant_h = take(pool, cursor, nb * H).reshape((nb, H))
    for b in range(nb):
        for j in range(H):
            mant_h[b, j] = dh[b, j]
    scale = take(pool64, cursor64, nb)
    for b in range(nb):
        scale[b] = 0.0
    # the empty arrays as C-contiguous as the backward's: one compiled renormalise
    renormalise(scale, mant_h, pool[:0].reshape((nb, 0)), pool[:0].reshape((0, H)), pool64[:0])
    return mant_h, scale


@stage
def injected_adjoints(given, e, b0, hs, h_last, pool, cursor, pool64, cursor64):
    """:func:`loss_adjoints` for adjoints ``given`` by a loss outside the kernels."""
    T1, nb, H = hs.shape
    keep_last_state(hs, e, b0, h_last)
    local = take(pool, cursor, T1 * nb * H).reshape((T1, nb, H))
    for b in range(nb):
        for t in range(T1):
            for j in range(H):
                local[t, b, j] = given[e, b0 + b, t, j]
    local_log = take(pool64, cursor64, T1 * nb).reshape((T1, nb))
    log_norms(local.reshape(T1 * nb, H), local_log.reshape(T1 * nb))
    mant_h, scale = unit_adjoint(local[T1 - 1], pool, cursor, pool64, cursor64)
    return 0.0, mant_h, scale, local, local_log


@stage
def every_step_adjoints(targets, e, b0, hs, w_out, b_out, part_out, part_bout, h_last, pool, cursor, pool64,
                        cursor64):
    """:func:`loss_adjoints` for the cross-entropy at every step, targets (E, B, T)."""
    T1, nb, H = hs.shape
    T = T1 - 1
    K = w_out.shape[0]
    rows = T * nb
    keep_last_state(hs, e, b0, h_last)
    tgt = np.empty(rows, np.int64)
    for t in range(T):
        for b in range(nb):
            tgt[t * nb + b] = targets[e, b0 + b, t]
    local = take(pool, cursor, T1 * nb * H).reshape((T1, nb, H))
    for b in range(nb):
        for j in range(H):
            local[0, b, j] = 0  # no loss term at t = 0; output_layer writes t = 1..T
    h_rows = hs[1:].reshape(rows, H)
    dlogits = take(pool, cursor, rows * K).reshape((rows, K))
    inv_count = 1.0 / (targets.shape[1] * T)
    loss = output_layer(h_rows, w_out, b_out, tgt, inv_count, dlogits, local[1:].reshape(rows, H))
    readout_gradients(dlogits, h_rows, part_out, part_bout)
    local_log = take(pool64, cursor64, T1 * nb).reshape((T1, nb))
    log_norms(local.reshape(T1 * nb, H), local_log.reshape(T1 * nb))
    mant_h, scale = unit_adjoint(local[T], pool, cursor, pool64, cursor64)
    return loss, mant_h, scale, local, local_log


@stage
def last_step_adjoints(targets, e, b0, hs, w_out, b_out, part_out, part_bout, h_last, pool, cursor, pool64,
                       cursor64):
    """:func:`loss_adjoints` for the cross-entropy at the last step only, targets (E, B)."""
    T1, nb, H = hs.shape
    K = w_out.shape[0]
    keep_last_state(hs, e, b0, h_last)
    h_rows = hs[T1 - 1]
    dlogits = take(pool, cursor, nb * K).reshape((nb, K))
    dh = take(pool, cursor, nb * H).reshape((nb, H))
    tgt = np.empty(nb, np.int64)
    for b in range(nb):
        tgt[b] = targets[e, b0 + b]
    loss = output_layer(h_rows, w_out, b_out, tgt, 1.0 / targets.shape[1], dlogits, dh)
    readout_gradients(dlogits, h_rows, part_out, part_bout)
    mant_h, scale = unit_adjoint(dh, pool, cursor, pool64, cursor64)
    no_local = pool[:0].reshape((0, nb, H))  # loss "last" adds nothing before step T
    return loss, mant_h, scale, no_local, pool64[:0].reshape((0, nb))


@stage
def readout_gradients(dlogits, h_rows, part_out, part_bout):
    """dW_out = dlogitsᵀ h_rows and db_out = Σ_rows dlogits, into (K, H) and (K,)."""
    matmul(dlogits.T, h_rows, part_out, 0.0)
    for k in range(dlogits.shape[1]):
        acc = 0.0
        for r in range(dlogits.shape[0]):
            acc += dlogits[r, k]
        part_bout[k] = acc
