r"""Elman (tanh) RNN: @njit forward and log-domain backward for one work item.

The math is stated in :mod:`rnnsim.cells.rnn`. A work item is one network and a
tile of ``nb`` of its sequences. Buffers are time-major, ``(T, nb, ...)``, so each
step is one small matrix product over the tile and the weight gradients are one
large product over all (step, sequence) rows. :func:`gradients_item` and
:func:`forward_item` are this cell's entry points for the driver
:mod:`rnnsim.kernels.cpu` (every cell's module has both, with one signature).
"""
from __future__ import annotations

import numpy as np

from ._vmath import tanh
from .cpu_common import (
    call,
    entry,
    folded_bias,
    gather_inputs,
    lyapunov_block,
    renormalise,
    reshaped,
    stage,
    take,
    typed,
)
from .cpu_matmul import matmul, pack_panels, step_product, weight_gradients
from .cpu_readout import every_step_adjoints, injected_adjoints, last_step_adjoints


@stage
def rnn_forward(x, w_ih_t, w_hh_t_panels, bias, pre, hs, team, links):
    r"""Forward recurrence.

    Parameters
    ----------
    x : (T, nb, D) inputs
    w_ih_t : (D, H) transposed input weights
    w_hh_t_panels : the transposed recurrent weights (H, H) as panels of
        :func:`~rnnsim.kernels.cpu_matmul.pack_panels`
    bias : (H,) b_ih + b_hh
    pre : (T, nb, H) scratch; holds the input projections (overwritten by backward)
    hs : (T+1, nb, H) out; hs[0] = 0, hs[t] = h_t
    team : (TEAM_WORDS,) int64, the item's team for :func:`~rnnsim.kernels.cpu_matmul.step_product`
    links : the addresses of the helpers it calls (:func:`~rnnsim.kernels.cpu_common.call`)

    Notes
    -----
    :math:`h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`.
    Keeps for the backward: ``hs`` (all h_t; tanh' = 1 - h_t^2 needs nothing else).
    """
    T, nb, D = x.shape
    H = hs.shape[2]
    # Input projections of every step at once: one (T*nb, D) x (D, H) product.
    matmul(reshaped(x, (T * nb, D)), w_ih_t, reshaped(pre, (T * nb, H)), 0.0)
    hs[0] = 0
    recurrent = reshaped(np.empty(nb * H, x.dtype), (nb, H))
    for t in range(T):
        call(links, step_product, hs[t], w_hh_t_panels, recurrent, team)
        for b in range(nb):
            for j in range(H):
                hs[t + 1, b, j] = tanh(pre[t, b, j] + bias[j] + recurrent[b, j])


@stage
def rnn_backward(hs, w_hh_panels, local, local_log, mant_h, scale, da, da_scale, log_h, team, links):
    r"""Log-domain BPTT through the recurrence.

    Parameters
    ----------
    hs : (T+1, nb, H) from :func:`rnn_forward`
    w_hh_panels : the recurrent weights (H, H) as panels of
        :func:`~rnnsim.kernels.cpu_matmul.pack_panels`
    local : (T+1, nb, H) per-step dL/dh_t from the loss (only ``local[T]`` is used
        for loss "last"; pass an array with a zero-length first axis and ``mant_h``
        already holding dL/dh_T)
    local_log : (T+1, nb) ln ||local||
    mant_h : (nb, H) in: mantissa of dL/dh_T at scale ``scale``; clobbered
    scale : (nb,) float64 in/out
    da : (T, nb, H) out: mantissas of dL/da_t (time index t-1)
    da_scale : (T, nb) out: their log-scales
    log_h : (nb, T+1) out: ln ||dL/dh_t||
    team : (TEAM_WORDS,) int64, the item's team for :func:`~rnnsim.kernels.cpu_matmul.step_product`
    links : the addresses of the helpers it calls (:func:`~rnnsim.kernels.cpu_common.call`)

    Notes
    -----
    :math:`\delta a_t = \delta h_t \odot (1 - h_t^2)`,
    :math:`\delta h_{t-1} = W_{hh}^T \delta a_t + \partial \ell_{t-1} / \partial h_{t-1}`.
    """
    T = da.shape[0]
    nb, H = mant_h.shape
    one = typed(hs, 1.0)
    no_c = reshaped(np.empty(0, hs.dtype), (nb, 0))
    use_local = local.shape[0] > 0
    # empty, and laid out as the rows they stand for: one renormalise signature
    no_local, no_local_log = reshaped(no_c, (0, H)), scale[:0]
    for t in range(T, 0, -1):
        for b in range(nb):
            log_h[b, t] = scale[b]  # mant_h has unit norm (or is zero with scale -inf)
            da_scale[t - 1, b] = scale[b]
            for j in range(H):
                h = hs[t, b, j]
                da[t - 1, b, j] = mant_h[b, j] * (one - h * h)
        call(links, step_product, da[t - 1], w_hh_panels, mant_h, team)
        if use_local:
            renormalise(scale, mant_h, no_c, local[t - 1], local_log[t - 1])
        else:
            renormalise(scale, mant_h, no_c, no_local, no_local_log)
    for b in range(nb):
        log_h[b, 0] = scale[b]


@entry
def gradients_item(item, pool, pool64, cursors, teams, links, inputs, targets, given, w_ih_t, w_hh_t, w_hh,
                   b_ih, b_hh, w_out, b_out, item_net, item_b0, item_b1, log_cutoff, block_rows, part_ih,
                   part_hh, part_bih, part_bhh, part_scale, part_out, part_bout, part_loss, profiles, h_last):
    """Forward, readout and log-domain BPTT of one work item (the loss kind follows
    from ``targets.ndim``, the per-step adjoints ``given`` injected when ``targets`` is
    1-d and empty, see :mod:`~rnnsim.kernels.cpu_readout`);
    writes only its own slots
    (``part_*[item]`` except ``part_bhh``, which the bias tie supplies,
    ``profiles[0, e, b0:b1]``, the ln‖dL/dh_t‖ profile, and ``cursors[item]``, its
    use of the thread's workspaces ``pool`` and ``pool64``, see
    :func:`~rnnsim.kernels.cpu_common.take`); ``teams[item]`` is its team control block, shared
    with helper threads on the per-step products when it has any
    (:mod:`~rnnsim.kernels.cpu_team`); ``links`` holds the addresses of the helpers it
    calls (:func:`~rnnsim.kernels.cpu_common.call`)."""
    T, D = inputs.shape[2], inputs.shape[3]
    H = w_hh.shape[2]
    e, b0, b1 = item_net[item], item_b0[item], item_b1[item]
    nb = b1 - b0
    cursor, cursor64 = cursors[item, 0:1], cursors[item, 1:2]
    x = gather_inputs(inputs, e, b0, nb, pool, cursor)
    bias = folded_bias(b_ih, b_hh, e, pool, cursor)
    hs = reshaped(take(pool, cursor, (T + 1) * nb * H), (T + 1, nb, H))
    # one (step, sequence) row per gate unit: the forward's input projections, which
    # the backward overwrites in place with dL/da_t (the projections are spent by then)
    gate_rows = reshaped(take(pool, cursor, T * nb * H), (T, nb, H))
    w_hh_t_panels = call(links, pack_panels, w_hh_t[e], pool, cursor)
    rnn_forward(x, w_ih_t[e], w_hh_t_panels, bias, gate_rows, hs, teams[item], links)
    # the loss kind's readout path: numba keeps one branch as it compiles (rnnsim.kernels.cpu_readout)
    if targets.ndim == 3:
        readout = every_step_adjoints(targets, e, b0, hs, w_out[e], b_out[e], part_out[item], part_bout[item],
                                      h_last, pool, cursor, pool64, cursor64)
    elif targets.ndim == 2:
        readout = last_step_adjoints(targets, e, b0, hs, w_out[e], b_out[e], part_out[item], part_bout[item],
                                     h_last, pool, cursor, pool64, cursor64)
    else:
        readout = injected_adjoints(given, e, b0, hs, h_last, pool, cursor, pool64, cursor64)
    part_loss[item], mant_h, scale, local, local_log = readout
    da_scale = reshaped(take(pool64, cursor64, T * nb), (T, nb))
    w_hh_panels = call(links, pack_panels, w_hh[e], pool, cursor)
    rnn_backward(hs, w_hh_panels, local, local_log, mant_h, scale, gate_rows, da_scale, profiles[0, e, b0:b1],
                 teams[item], links)
    part_scale[item] = call(
        links, weight_gradients, reshaped(gate_rows, (T * nb, H)), reshaped(da_scale, T * nb),
        reshaped(hs[:T], (T * nb, H)), reshaped(x, (T * nb, D)), log_cutoff, block_rows, part_ih[item],
        part_hh[item], part_bih[item], pool, cursor)


@entry
def forward_item(item, pool, pool64, cursors, teams, links, inputs, w_ih_t, w_hh_t, b_ih, b_hh, item_net,
                 item_b0, item_b1, states):
    """Forward pass of one work item into its own slots of ``states[0]`` = h (E, B, T, H)
    (and ``cursors[item]`` and ``teams[item]``, and ``links``, as in :func:`gradients_item`;
    ``pool64`` is unused)."""
    T = inputs.shape[2]
    H = w_hh_t.shape[1]
    e, b0, nb = item_net[item], item_b0[item], item_b1[item] - item_b0[item]
    cursor = cursors[item, 0:1]
    x = gather_inputs(inputs, e, b0, nb, pool, cursor)
    bias = folded_bias(b_ih, b_hh, e, pool, cursor)
    hs = reshaped(take(pool, cursor, (T + 1) * nb * H), (T + 1, nb, H))
    pre = reshaped(take(pool, cursor, T * nb * H), (T, nb, H))
    w_hh_t_panels = call(links, pack_panels, w_hh_t[e], pool, cursor)
    rnn_forward(x, w_ih_t[e], w_hh_t_panels, bias, pre, hs, teams[item], links)
    for b in range(nb):
        for t in range(T):
            for j in range(H):
                states[0, e, b0 + b, t, j] = hs[t + 1, b, j]


@entry
def lyapunov_item(item, inputs, w_ih_t, w_hh_t, b_ih, b_hh, item_net, item_b, tangent0, qr_every, warmup,
                  growth, log_growth):
    """Lyapunov spectrum of one (network, sequence), float64: the forward step, then the
    tangent step δh ← (1 − h_t²) ⊙ W_hh δh (:func:`rnnsim.cells.rnn.tangent_step`) on the
    k rows of ``tangent``, reorthonormalised every ``qr_every`` steps."""
    T = inputs.shape[2]
    H = w_hh_t.shape[1]
    e, b = item_net[item], item_b[item]
    bias = b_ih[e] + b_hh[e]
    h = np.zeros(H)
    tangent = tangent0.copy()
    image = np.empty(tangent.shape)
    log_r = np.empty(tangent.shape[0])
    block_start, running = np.int64(0), 0.0  # typed as int64 from the start: one compiled lyapunov_block
    for t in range(T):
        pre = np.dot(inputs[e, b, t], w_ih_t[e]) + np.dot(h, w_hh_t[e])
        for j in range(H):
            h[j] = tanh(pre[j] + bias[j])
        np.dot(tangent, w_hh_t[e], image)  # rows v -> (W_hh v)ᵀ
        for i in range(tangent.shape[0]):
            for j in range(H):
                tangent[i, j] = (1.0 - h[j] * h[j]) * image[i, j]
        block_start, running = lyapunov_block(tangent, log_r, t, T, block_start, qr_every, warmup,
                                              growth[e, b], running)
        log_growth[e, b, t] = running
