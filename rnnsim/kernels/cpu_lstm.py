r"""LSTM: @njit forward and log-domain backward for one work item.

The math is stated in :mod:`rnnsim.cells.lstm`. Gate order (i, f, g, o) as in
torch.nn.LSTM; buffers are time-major ``(T, nb, ...)`` and the entry points
:func:`gradients_item` and :func:`forward_item` have the signatures of
:mod:`rnnsim.kernels.cpu_rnn`'s.
"""
from __future__ import annotations

import numpy as np

from ._vmath import sigmoid, tanh
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
def lstm_forward(x, w_ih_t, w_hh_t_panels, bias, gates, hs, cs, tanh_cs, team, links):
    r"""Forward recurrence.

    Parameters
    ----------
    x : (T, nb, D) inputs
    w_ih_t : (D, 4H) transposed input weights
    w_hh_t_panels : the transposed recurrent weights (H, 4H) as panels of
        :func:`~rnnsim.kernels.cpu_matmul.pack_panels`
    bias : (4H,) b_ih + b_hh
    gates : (T, nb, 4H) out: activated gates (i, f, g, o) of every step
    hs, cs : (T+1, nb, H) out: h_t and c_t, with h_0 = c_0 = 0
    tanh_cs : (T, nb, H) out: tanh(c_t) for t = 1..T
    team : (TEAM_WORDS,) int64, the item's team for :func:`~rnnsim.kernels.cpu_matmul.step_product`
    links : the addresses of the helpers it calls (:func:`~rnnsim.kernels.cpu_common.call`)

    Notes
    -----
    :math:`i, f, o = \sigma(\cdot)`, :math:`g = \tanh(\cdot)` of
    :math:`W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}`;
    :math:`c_t = f \odot c_{t-1} + i \odot g`, :math:`h_t = o \odot \tanh c_t`.
    Keeps for the backward: ``gates``, ``cs``, ``tanh_cs`` and ``hs``.
    """
    T, nb, D = x.shape
    H = hs.shape[2]
    GH = 4 * H
    matmul(reshaped(x, (T * nb, D)), w_ih_t, reshaped(gates, (T * nb, GH)), 0.0)
    hs[0] = 0
    cs[0] = 0
    pre = reshaped(np.empty(nb * GH, x.dtype), (nb, GH))
    for t in range(T):
        call(links, step_product, hs[t], w_hh_t_panels, pre, team)
        for b in range(nb):
            # Short loops that each write one array: LLVM vectorises a loop only when
            # its runtime alias checks stay few (a fused loop over six arrays ran 3x slower).
            p = pre[b]
            row = gates[t, b]
            for j in range(GH):
                p[j] += row[j] + bias[j]
            for j in range(2 * H):
                row[j] = sigmoid(p[j])  # i, f
            # g and o through views indexed from 0: a loop over range(2H, 3H) keeps numba's
            # negative-index wraparound on every element, and vectorised ~1.5x slower
            g, g_pre = row[2 * H:3 * H], p[2 * H:3 * H]
            for j in range(H):
                g[j] = tanh(g_pre[j])
            o, o_pre = row[3 * H:], p[3 * H:]
            for j in range(H):
                o[j] = sigmoid(o_pre[j])
            c_prev = cs[t, b]
            c_new = cs[t + 1, b]
            for j in range(H):
                c_new[j] = row[H + j] * c_prev[j] + row[j] * row[2 * H + j]
            tc = tanh_cs[t, b]
            for j in range(H):
                tc[j] = tanh(c_new[j])
            h_new = hs[t + 1, b]
            for j in range(H):
                h_new[j] = row[3 * H + j] * tc[j]


@stage
def lstm_backward(gates, cs, tanh_cs, w_hh_panels, local, local_log, mant_h, mant_c, scale,
                  da_scale, log_h, log_c, team, links):
    r"""Log-domain BPTT through the recurrence.

    Parameters
    ----------
    gates : (T, nb, 4H) from :func:`lstm_forward`; **overwritten** step by step with
        the mantissas of dL/da_t once that step's gates are no longer needed
    cs, tanh_cs : from :func:`lstm_forward`
    w_hh_panels : the recurrent weights (4H, H) as panels of
        :func:`~rnnsim.kernels.cpu_matmul.pack_panels`
    local, local_log : per-step loss adjoints as in :func:`rnn_backward`
    mant_h, mant_c : (nb, H) in: mantissas of dL/dh_T and 0 at scale ``scale``
    scale : (nb,) float64 in/out, shared by (dh, carried dc)
    da_scale : (T, nb) out: log-scales of the rows of dL/da
    log_h, log_c : (nb, T+1) out: ln ||dL/dh_t||, ln ||dL/dc_t|| (total derivative)
    team : (TEAM_WORDS,) int64, the item's team for :func:`~rnnsim.kernels.cpu_matmul.step_product`
    links : the addresses of the helpers it calls (:func:`~rnnsim.kernels.cpu_common.call`)

    Notes
    -----
    With :math:`\delta c_t = \delta c^{\to}_t + \delta h_t \odot o \odot (1-\tanh^2 c_t)`:
    :math:`\delta i = \delta c_t g\, i(1-i)`, :math:`\delta f = \delta c_t c_{t-1} f(1-f)`,
    :math:`\delta g = \delta c_t\, i (1-g^2)`, :math:`\delta o = \delta h_t \tanh c_t\, o(1-o)`;
    carried :math:`\delta c^{\to}_{t-1} = \delta c_t \odot f` and
    :math:`\delta h_{t-1} = W_{hh}^T \delta a_t + \partial\ell_{t-1}/\partial h_{t-1}`.
    """
    T = gates.shape[0]
    nb, H = mant_h.shape
    one = typed(gates, 1.0)
    use_local = local.shape[0] > 0
    # empty, and laid out as the rows they stand for: one renormalise signature
    no_local, no_local_log = reshaped(np.empty(0, gates.dtype), (0, H)), scale[:0]
    da = reshaped(np.empty(nb * 4 * H, gates.dtype), (nb, 4 * H))
    for t in range(T, 0, -1):
        for b in range(nb):
            # One array written per loop, as in lstm_forward, so each loop vectorises.
            row = gates[t - 1, b]
            tc = tanh_cs[t - 1, b]
            c_prev = cs[t - 1, b]
            dh = mant_h[b]
            dc = mant_c[b]  # becomes the total dL/dc_t, then the carry dL/dc_t * f
            d = da[b]
            s = scale[b]
            da_scale[t - 1, b] = s
            for j in range(H):
                d[3 * H + j] = dh[j] * tc[j] * row[3 * H + j] * (one - row[3 * H + j])
            for j in range(H):
                dc[j] += dh[j] * row[3 * H + j] * (one - tc[j] * tc[j])
            for j in range(H):
                d[j] = dc[j] * row[2 * H + j] * row[j] * (one - row[j])
            for j in range(H):
                d[2 * H + j] = dc[j] * row[j] * (one - row[2 * H + j] * row[2 * H + j])
            for j in range(H):
                d[H + j] = dc[j] * c_prev[j] * row[H + j] * (one - row[H + j])
            sq_h = 0.0
            sq_c = 0.0
            for j in range(H):
                sq_h += float(dh[j]) * float(dh[j])
                sq_c += float(dc[j]) * float(dc[j])
            for j in range(H):
                dc[j] *= row[H + j]
            log_h[b, t] = s + 0.5 * np.log(sq_h) if sq_h > 0.0 else -np.inf
            log_c[b, t] = s + 0.5 * np.log(sq_c) if sq_c > 0.0 else -np.inf
        for b in range(nb):  # the gates of step t are spent; keep dL/da_t for the weights
            for j in range(4 * H):
                gates[t - 1, b, j] = da[b, j]
        call(links, step_product, da, w_hh_panels, mant_h, team)
        if use_local:
            renormalise(scale, mant_h, mant_c, local[t - 1], local_log[t - 1])
        else:
            renormalise(scale, mant_h, mant_c, no_local, no_local_log)
    for b in range(nb):
        sq_h = 0.0
        sq_c = 0.0
        for j in range(H):
            sq_h += float(mant_h[b, j]) * float(mant_h[b, j])
            sq_c += float(mant_c[b, j]) * float(mant_c[b, j])
        log_h[b, 0] = scale[b] + 0.5 * np.log(sq_h) if sq_h > 0.0 else -np.inf
        log_c[b, 0] = scale[b] + 0.5 * np.log(sq_c) if sq_c > 0.0 else -np.inf


@entry
def gradients_item(item, pool, pool64, cursors, teams, links, inputs, targets, given, w_ih_t, w_hh_t, w_hh,
                   b_ih, b_hh, w_out, b_out, item_net, item_b0, item_b1, log_cutoff, block_rows, part_ih,
                   part_hh, part_bih, part_bhh, part_scale, part_out, part_bout, part_loss, profiles, h_last):
    """Forward, readout and log-domain BPTT of one work item (the loss kind follows
    from ``targets.ndim``, the per-step adjoints ``given`` injected when ``targets`` is
    1-d and empty, see :mod:`~rnnsim.kernels.cpu_readout`);
    writes only its own slots
    (``part_*[item]`` except ``part_bhh``, which the bias tie supplies, and
    ``profiles[:, e, b0:b1]``: ln‖dL/dh_t‖, ln‖dL/dc_t‖; ``cursors[item]`` and ``teams[item]`` as in
    :func:`rnnsim.kernels.cpu_rnn.gradients_item`)."""
    T, D = inputs.shape[2], inputs.shape[3]
    H, GH = w_hh.shape[2], w_hh.shape[1]
    e, b0, b1 = item_net[item], item_b0[item], item_b1[item]
    nb = b1 - b0
    cursor, cursor64 = cursors[item, 0:1], cursors[item, 1:2]
    x = gather_inputs(inputs, e, b0, nb, pool, cursor)
    bias = folded_bias(b_ih, b_hh, e, pool, cursor)
    hs = reshaped(take(pool, cursor, (T + 1) * nb * H), (T + 1, nb, H))
    cs = reshaped(take(pool, cursor, (T + 1) * nb * H), (T + 1, nb, H))
    tanh_cs = reshaped(take(pool, cursor, T * nb * H), (T, nb, H))
    # one (step, sequence) row per gate unit: the activated gates, which the backward
    # overwrites in place with dL/da_t once a step's gates are spent
    gate_rows = reshaped(take(pool, cursor, T * nb * GH), (T, nb, GH))
    w_hh_t_panels = call(links, pack_panels, w_hh_t[e], pool, cursor)
    lstm_forward(x, w_ih_t[e], w_hh_t_panels, bias, gate_rows, hs, cs, tanh_cs, teams[item], links)
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
    mant_c = reshaped(np.empty(nb * H, inputs.dtype), (nb, H))
    for b in range(nb):
        for j in range(H):
            mant_c[b, j] = 0
    da_scale = reshaped(take(pool64, cursor64, T * nb), (T, nb))
    w_hh_panels = call(links, pack_panels, w_hh[e], pool, cursor)
    lstm_backward(gate_rows, cs, tanh_cs, w_hh_panels, local, local_log, mant_h, mant_c, scale, da_scale,
                  profiles[0, e, b0:b1], profiles[1, e, b0:b1], teams[item], links)
    part_scale[item] = call(
        links, weight_gradients, reshaped(gate_rows, (T * nb, GH)), reshaped(da_scale, T * nb),
        reshaped(hs[:T], (T * nb, H)), reshaped(x, (T * nb, D)), log_cutoff, block_rows, part_ih[item],
        part_hh[item], part_bih[item], pool, cursor)


@entry
def forward_item(item, pool, pool64, cursors, teams, links, inputs, w_ih_t, w_hh_t, b_ih, b_hh, item_net,
                 item_b0, item_b1, states):
    """Forward pass of one work item into its own slots of ``states`` = (h, c), each (E, B, T, H)
    (and ``cursors[item]``, ``teams[item]`` and ``links`` as in :func:`gradients_item`;
    ``pool64`` is unused)."""
    T = inputs.shape[2]
    H, GH = w_hh_t.shape[1], w_hh_t.shape[2]
    e, b0, nb = item_net[item], item_b0[item], item_b1[item] - item_b0[item]
    cursor = cursors[item, 0:1]
    x = gather_inputs(inputs, e, b0, nb, pool, cursor)
    bias = folded_bias(b_ih, b_hh, e, pool, cursor)
    hs = reshaped(take(pool, cursor, (T + 1) * nb * H), (T + 1, nb, H))
    cs = reshaped(take(pool, cursor, (T + 1) * nb * H), (T + 1, nb, H))
    gates = reshaped(take(pool, cursor, T * nb * GH), (T, nb, GH))
    tanh_cs = reshaped(take(pool, cursor, T * nb * H), (T, nb, H))
    w_hh_t_panels = call(links, pack_panels, w_hh_t[e], pool, cursor)
    lstm_forward(x, w_ih_t[e], w_hh_t_panels, bias, gates, hs, cs, tanh_cs, teams[item], links)
    for b in range(nb):
        for t in range(T):
            for j in range(H):
                states[0, e, b0 + b, t, j] = hs[t + 1, b, j]
                states[1, e, b0 + b, t, j] = cs[t + 1, b, j]


@entry
def lyapunov_item(item, inputs, w_ih_t, w_hh_t, b_ih, b_hh, item_net, item_b, tangent0, qr_every, warmup,
                  growth, log_growth):
    """Lyapunov spectrum of one (network, sequence) on the full state (h, c), float64: the
    tangent rows are [δh | δc] (length 2H) and follow :func:`rnnsim.cells.lstm.tangent_step`."""
    T = inputs.shape[2]
    H = w_hh_t.shape[1]
    e, b = item_net[item], item_b[item]
    bias = b_ih[e] + b_hh[e]
    h = np.zeros(H)
    c = np.zeros(H)
    gates = np.empty(4 * H)
    tangent = tangent0.copy()
    image = np.empty((tangent.shape[0], 4 * H))
    log_r = np.empty(tangent.shape[0])
    block_start, running = np.int64(0), 0.0  # typed as int64 from the start: one compiled lyapunov_block
    for t in range(T):
        pre = np.dot(inputs[e, b, t], w_ih_t[e]) + np.dot(h, w_hh_t[e])
        for j in range(2 * H):
            gates[j] = sigmoid(pre[j] + bias[j])  # i, f
        for j in range(2 * H, 3 * H):
            gates[j] = tanh(pre[j] + bias[j])  # g
        for j in range(3 * H, 4 * H):
            gates[j] = sigmoid(pre[j] + bias[j])  # o
        c_prev = c.copy()
        for j in range(H):
            c[j] = gates[H + j] * c_prev[j] + gates[j] * gates[2 * H + j]
        tanh_c = np.empty(H)
        for j in range(H):
            tanh_c[j] = tanh(c[j])
            h[j] = gates[3 * H + j] * tanh_c[j]
        np.dot(np.ascontiguousarray(tangent[:, :H]), w_hh_t[e], image)  # rows δh -> (W_hh δh)ᵀ, 4H
        for r in range(tangent.shape[0]):
            for j in range(H):
                i, f, g, o = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
                dc = (image[r, H + j] * f * (1.0 - f) * c_prev[j] + f * tangent[r, H + j]
                      + image[r, j] * i * (1.0 - i) * g + i * (1.0 - g * g) * image[r, 2 * H + j])
                tangent[r, H + j] = dc
                tangent[r, j] = (image[r, 3 * H + j] * o * (1.0 - o) * tanh_c[j]
                                 + o * (1.0 - tanh_c[j] * tanh_c[j]) * dc)
        block_start, running = lyapunov_block(tangent, log_r, t, T, block_start, qr_every, warmup,
                                              growth[e, b], running)
        log_growth[e, b, t] = running
