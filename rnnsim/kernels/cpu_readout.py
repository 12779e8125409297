"""@njit readout of one work item: the softmax cross-entropy and the adjoints that a
loss injects into the backward pass (:func:`rnnsim.losses.readout_loss` for one
network and a tile of its sequences).

Three paths, one per loss kind, with one signature of results: the cross-entropy at
every step (:func:`every_step_adjoints`, targets (E, B, T)), at the last step only
(:func:`last_step_adjoints`, targets (E, B)), and adjoints of a loss computed outside
the kernels (:func:`injected_adjoints`, beside empty 1-d targets). Each cell's
``gradients_item`` picks one with the same test on its own argument::

    if targets.ndim == 3:  every_step_adjoints(targets, ...)
    elif targets.ndim == 2:  last_step_adjoints(targets, ...)
    else:  injected_adjoints(given, ...)

and numba, which reads ``ndim`` off the type of a compiled function's own argument,
keeps one branch before it inlines the stages, so a call types and compiles only the
path it takes. That is why the test sits in each item kernel: within a stage of its
own it would be decided only after all three paths were inlined (inlining them took
2.7 s of an instrumented first call, rnn float64), and a function compiled on its own
would be compiled twice, alone and again in its caller (0.8 s of LLVM).

Every path returns (loss, mant_h, scale, local, local_log): the sum of the item's
cross-entropies (not yet divided by the count, B·T or B; 0 for injected adjoints);
dL/dh_T as a unit-norm mantissa (nb, H) at float64 log-scale ``scale`` (nb,); for loss
"every" and injected adjoints the per-step adjoints ``local`` (T+1, nb, H) and their
log norms ``local_log`` (T+1, nb), zero-length for loss "last".

Common parameters of the paths: ``e, b0``, the item's network and first sequence;
``hs`` (T+1, nb, H), the item's hidden states; ``w_out, b_out`` (K, H), (K,), network
e's readout; ``part_out, part_bout``, out, (K, H), (K,), the item's readout gradients;
``h_last``, out, (E, B, H), where the item's final states h_T go
(``h_last[e, b0:b0+nb]``); ``pool, cursor, pool64, cursor64``, the item's workspaces
in the dtype and in float64 (:func:`~rnnsim.kernels.cpu_common.take`).
"""
from __future__ import annotations

import math

import numpy as np

from .cpu_common import log_norms, renormalise, reshaped, stage, take
from .cpu_matmul import matmul


@stage
def output_layer(h_rows, w_out, b_out, targets, inv_count, dlogits, local):
    """Softmax cross-entropy on rows of hidden states, and its adjoints.

    Parameters
    ----------
    h_rows : (R, H) hidden states that feed the readout
    w_out, b_out : (K, H), (K,)
    targets : (S, nb) int64, the target of row r = s·nb + b at [s, b] (a view: strided is fine)
    inv_count : 1/B (loss "last") or 1/(B*T) (loss "every")
    dlogits : (R, K) out, dL/dz = (softmax(z) - onehot) * inv_count
    local : (R, H) out, dL/dh from this row's loss term = dlogits @ w_out

    Returns
    -------
    Sum over rows of the cross-entropy (float64), not yet divided by the count.
    """
    R, K = dlogits.shape
    nb = targets.shape[1]
    matmul(h_rows, w_out.T, dlogits, 0.0)
    total = 0.0
    for r in range(R):
        z_max = -np.inf
        for k in range(K):
            z = dlogits[r, k] + b_out[k]
            dlogits[r, k] = z
            z_max = float(z) if z > z_max else z_max
        sum_exp = 0.0
        for k in range(K):
            sum_exp += math.exp(float(dlogits[r, k]) - z_max)
        log_z = z_max + math.log(sum_exp)
        target = targets[r // nb, r % nb]
        total += log_z - float(dlogits[r, target])
        for k in range(K):
            dlogits[r, k] = math.exp(float(dlogits[r, k]) - log_z) * inv_count
        dlogits[r, target] -= inv_count
    matmul(dlogits, w_out, local, 0.0)
    return total


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
    mant_h = reshaped(take(pool, cursor, nb * H), (nb, H))
    for b in range(nb):
        for j in range(H):
            mant_h[b, j] = dh[b, j]
    scale = take(pool64, cursor64, nb)
    for b in range(nb):
        scale[b] = 0.0
    # the empty arrays as C-contiguous as the backward's: one compiled renormalise
    renormalise(scale, mant_h, reshaped(pool[:0], (nb, 0)), reshaped(pool[:0], (0, H)), pool64[:0])
    return mant_h, scale


@stage
def injected_adjoints(given, e, b0, hs, h_last, pool, cursor, pool64, cursor64):
    """The readout path for adjoints ``given`` (E, B, T+1, H), dL/dh_t of a loss computed
    outside the kernels; the readout and ``part_out``, ``part_bout`` are left alone."""
    T1, nb, H = hs.shape
    keep_last_state(hs, e, b0, h_last)
    local = reshaped(take(pool, cursor, T1 * nb * H), (T1, nb, H))
    for b in range(nb):
        for t in range(T1):
            for j in range(H):
                local[t, b, j] = given[e, b0 + b, t, j]
    local_log = reshaped(take(pool64, cursor64, T1 * nb), (T1, nb))
    log_norms(reshaped(local, (T1 * nb, H)), reshaped(local_log, T1 * nb))
    mant_h, scale = unit_adjoint(local[T1 - 1], pool, cursor, pool64, cursor64)
    return 0.0, mant_h, scale, local, local_log


@stage
def every_step_adjoints(targets, e, b0, hs, w_out, b_out, part_out, part_bout, h_last, pool, cursor, pool64,
                        cursor64):
    """The readout path of the cross-entropy at every step, targets (E, B, T) int64."""
    T1, nb, H = hs.shape
    T = T1 - 1
    K = w_out.shape[0]
    rows = T * nb
    keep_last_state(hs, e, b0, h_last)
    local = reshaped(take(pool, cursor, T1 * nb * H), (T1, nb, H))
    for b in range(nb):
        for j in range(H):
            local[0, b, j] = 0  # no loss term at t = 0; output_layer writes t = 1..T
    h_rows = reshaped(hs[1:], (rows, H))
    dlogits = reshaped(take(pool, cursor, rows * K), (rows, K))
    inv_count = 1.0 / (targets.shape[1] * T)
    loss = output_layer(h_rows, w_out, b_out, targets[e, b0:b0 + nb].T, inv_count, dlogits,
                        reshaped(local[1:], (rows, H)))
    readout_gradients(dlogits, h_rows, part_out, part_bout)
    local_log = reshaped(take(pool64, cursor64, T1 * nb), (T1, nb))
    log_norms(reshaped(local, (T1 * nb, H)), reshaped(local_log, T1 * nb))
    mant_h, scale = unit_adjoint(local[T], pool, cursor, pool64, cursor64)
    return loss, mant_h, scale, local, local_log


@stage
def last_step_adjoints(targets, e, b0, hs, w_out, b_out, part_out, part_bout, h_last, pool, cursor, pool64,
                       cursor64):
    """The readout path of the cross-entropy at the last step only, targets (E, B) int64."""
    T1, nb, H = hs.shape
    K = w_out.shape[0]
    keep_last_state(hs, e, b0, h_last)
    h_rows = hs[T1 - 1]
    dlogits = reshaped(take(pool, cursor, nb * K), (nb, K))
    dh = reshaped(take(pool, cursor, nb * H), (nb, H))
    loss = output_layer(h_rows, w_out, b_out, targets[e:e + 1, b0:b0 + nb], 1.0 / targets.shape[1], dlogits,
                        dh)
    readout_gradients(dlogits, h_rows, part_out, part_bout)
    mant_h, scale = unit_adjoint(dh, pool, cursor, pool64, cursor64)
    no_local = reshaped(pool[:0], (0, nb, H))  # loss "last" adds nothing before step T
    return loss, mant_h, scale, no_local, reshaped(pool64[:0], (0, nb))


@stage
def readout_gradients(dlogits, h_rows, part_out, part_bout):
    """dW_out = dlogitsᵀ h_rows and db_out = Σ_rows dlogits, into (K, H) and (K,)."""
    matmul(dlogits.T, h_rows, part_out, 0.0)
    for k in range(dlogits.shape[1]):
        acc = 0.0
        for r in range(dlogits.shape[0]):
            acc += dlogits[r, k]
        part_bout[k] = acc
