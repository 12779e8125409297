r"""GRU: @njit forward and log-domain backward for one work item.

The math is stated in :mod:`rnnsim.cells.gru`. Gate order (r, z, n) as in
torch.nn.GRU; buffers are time-major ``(T, nb, ...)`` and the entry points
:func:`gradients_item` and :func:`forward_item` have the signatures of
:mod:`rnnsim.kernels.cpu_rnn`'s. Unlike the rnn and lstm, the biases do not fold
into one sum (b_hn sits inside r ⊙ (W_hn h + b_hn)), so the item also writes its own
``bias_hh_l0`` gradient.
"""
from __future__ import annotations

import numpy as np

from ._vmath import sigmoid, tanh
from .cpu_common import (
    call,
    entry,
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
def gru_forward(x, w_ih_t, w_hh_t_panels, b_ih, b_hh, gates, u_rows, hs, team, links):
    r"""Forward recurrence.

    Parameters
    ----------
    x : (T, nb, D) inputs
    w_ih_t : (D, 3H) transposed input weights
    w_hh_t_panels : the transposed recurrent weights (H, 3H) as panels of
        :func:`~rnnsim.kernels.cpu_matmul.pack_panels`
    b_ih, b_hh : (3H,) the two biases (they do not fold)
    gates : (T, nb, 3H) out: r, z, n of every step
    u_rows : (T, nb, H) out: u = W_hn h_{t-1} + b_hn of every step
    hs : (T+1, nb, H) out: h_t, with h_0 = 0
    team : (TEAM_WORDS,) int64, the item's team for :func:`~rnnsim.kernels.cpu_matmul.step_product`
    links : the addresses of the helpers it calls (:func:`~rnnsim.kernels.cpu_common.call`)

    Notes
    -----
    :math:`r, z = \sigma(\cdot)`, :math:`n = \tanh(W_{in} x + b_{in} + r \odot u)`,
    :math:`h_t = (1 - z) \odot n + z \odot h_{t-1}`.
    Keeps for the backward: ``gates``, ``u_rows`` and ``hs``.
    """
    T, nb, D = x.shape
    H = hs.shape[2]
    GH = 3 * H
    one = typed(x, 1.0)
    # input projections, all steps
    matmul(reshaped(x, (T * nb, D)), w_ih_t, reshaped(gates, (T * nb, GH)), 0.0)
    hs[0] = 0
    hid = reshaped(np.empty(nb * GH, x.dtype), (nb, GH))
    r_u = np.empty(H, x.dtype)
    for t in range(T):
        call(links, step_product, hs[t], w_hh_t_panels, hid, team)
        for b in range(nb):
            # One array written per loop, so that each loop vectorises (see cpu_lstm), and
            # no loop reads the array it writes at another offset: LLVM cannot prove such
            # a loop free of overlap, and it ran at the scalar rate (the n loop reading r
            # from its own row, ~4x slower per element; its vector version is compiled
            # behind a runtime overlap test, which it evidently did not pass).
            row = gates[t, b]
            p = hid[b]
            for j in range(2 * H):
                row[j] = sigmoid(row[j] + b_ih[j] + p[j] + b_hh[j])  # r, z
            u = u_rows[t, b]
            for j in range(H):
                u[j] = p[2 * H + j] + b_hh[2 * H + j]
            for j in range(H):
                r_u[j] = row[j] * u[j]
            for j in range(H):
                row[2 * H + j] = tanh(row[2 * H + j] + b_ih[2 * H + j] + r_u[j])  # n
            h_prev = hs[t, b]
            h_new = hs[t + 1, b]
            for j in range(H):
                h_new[j] = (one - row[H + j]) * row[2 * H + j] + row[H + j] * h_prev[j]


@stage
def gru_backward(gates, u_rows, hs, w_hh_panels, local, local_log, mant_h, scale, da_scale, log_h, team,
                 links):
    r"""Log-domain BPTT through the recurrence.

    Parameters
    ----------
    gates : (T, nb, 3H) from :func:`gru_forward`; **overwritten** step by step with the
        recurrent-side rows (δa^r, δa^z, δu), δu = δa^n ⊙ r, once that step's gates are spent
    u_rows : (T, nb, H) from :func:`gru_forward`; **overwritten** with δa^n, the n block
        of the input-side rows
    hs : (T+1, nb, H)
    w_hh_panels : the recurrent weights (3H, H) as panels of
        :func:`~rnnsim.kernels.cpu_matmul.pack_panels`
    local, local_log : per-step loss adjoints as in :func:`rnnsim.kernels.cpu_rnn.rnn_backward`
    mant_h : (nb, H) in: unit mantissa of dL/dh_T at scale ``scale``; clobbered
    scale : (nb,) float64 in/out
    da_scale : (T, nb) out: log-scales of the rows
    log_h : (nb, T+1) out: ln ||dL/dh_t||
    team : (TEAM_WORDS,) int64, the item's team for :func:`~rnnsim.kernels.cpu_matmul.step_product`
    links : the addresses of the helpers it calls (:func:`~rnnsim.kernels.cpu_common.call`)

    Notes
    -----
    :math:`\delta a^n = \delta h (1-z)(1-n^2)`, :math:`\delta a^z = \delta h (h_{t-1}-n) z(1-z)`,
    :math:`\delta a^r = \delta a^n u\, r(1-r)`, :math:`\delta u = \delta a^n r`;
    :math:`\delta h_{t-1} = W_{hh}^\top(\delta a^r, \delta a^z, \delta u) + z \odot \delta h`,
    then the loss term of step t-1, renormalised in log form (identity 1 of
    :mod:`rnnsim.logdomain`).
    """
    T = gates.shape[0]
    nb, H = mant_h.shape
    one = typed(gates, 1.0)
    use_local = local.shape[0] > 0
    rows_hid = reshaped(np.empty(nb * 3 * H, gates.dtype), (nb, 3 * H))
    d_n = np.empty(H, gates.dtype)
    direct = reshaped(np.empty(nb * H, gates.dtype), (nb, H))
    no_c = reshaped(np.empty(0, gates.dtype), (nb, 0))
    # empty, and laid out as the rows they stand for: one renormalise signature
    no_local, no_local_log = reshaped(no_c, (0, H)), scale[:0]
    for t in range(T, 0, -1):
        for b in range(nb):
            # one array written per loop, none read at another offset (see gru_forward)
            row = gates[t - 1, b]
            u = u_rows[t - 1, b]
            h_prev = hs[t - 1, b]
            dh = mant_h[b]
            d_hid = rows_hid[b]
            log_h[b, t] = scale[b]  # mant_h has unit norm (or is zero with scale -inf)
            da_scale[t - 1, b] = scale[b]
            for j in range(H):
                d_n[j] = dh[j] * (one - row[H + j]) * (one - row[2 * H + j] * row[2 * H + j])
            for j in range(H):
                d_hid[j] = d_n[j] * u[j] * row[j] * (one - row[j])
            for j in range(H):
                d_hid[H + j] = dh[j] * (h_prev[j] - row[2 * H + j]) * row[H + j] * (one - row[H + j])
            for j in range(H):
                d_hid[2 * H + j] = d_n[j] * row[j]
            for j in range(H):
                direct[b, j] = row[H + j] * dh[j]
            for j in range(H):  # u is spent: it keeps δa^n, the n block of the input side
                u[j] = d_n[j]
        for b in range(nb):  # the gates of step t are spent; keep the recurrent-side rows
            for j in range(3 * H):
                gates[t - 1, b, j] = rows_hid[b, j]
        call(links, step_product, rows_hid, w_hh_panels, mant_h, team)
        for b in range(nb):
            for j in range(H):
                mant_h[b, j] += direct[b, j]
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
    (``part_*[item]``, ``profiles[0, e, b0:b1]``, the ln‖dL/dh_t‖ profile, and
    ``cursors[item]``, ``teams[item]`` and ``links`` as in :func:`rnnsim.kernels.cpu_rnn.gradients_item`)."""
    T, D = inputs.shape[2], inputs.shape[3]
    H, GH = w_hh.shape[2], w_hh.shape[1]
    e, b0, b1 = item_net[item], item_b0[item], item_b1[item]
    nb = b1 - b0
    cursor, cursor64 = cursors[item, 0:1], cursors[item, 1:2]
    x = gather_inputs(inputs, e, b0, nb, pool, cursor)
    hs = reshaped(take(pool, cursor, (T + 1) * nb * H), (T + 1, nb, H))
    # one (step, sequence) row per gate unit: r, z, n, which the backward overwrites in
    # place with the recurrent-side adjoint rows (δa^r, δa^z, δu); u_rows likewise becomes δa^n
    gate_rows = reshaped(take(pool, cursor, T * nb * GH), (T, nb, GH))
    u_rows = reshaped(take(pool, cursor, T * nb * H), (T, nb, H))
    w_hh_t_panels = call(links, pack_panels, w_hh_t[e], pool, cursor)
    gru_forward(x, w_ih_t[e], w_hh_t_panels, b_ih[e], b_hh[e], gate_rows, u_rows, hs, teams[item], links)
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
    gru_backward(gate_rows, u_rows, hs, w_hh_panels, local, local_log, mant_h, scale, da_scale,
                 profiles[0, e, b0:b1], teams[item], links)
    # The recurrent side of every block, and the input side of r and z, share their rows
    # (δa^r, δa^z, δu): one product with [h, x, 1]. Its n block's x columns (δu x) are
    # not a gradient; the second product, δa^n with [x, 1] only, overwrites them. Both
    # products together are the (3H, H+D+2) gradients plus H·D, where δa^n with [h, x, 1]
    # beside them would add H·(H+D+1).
    rows = T * nb
    x_rows = reshaped(x, (rows, D))
    s_star = call(links, weight_gradients, reshaped(gate_rows, (rows, GH)), reshaped(da_scale, rows),
                  reshaped(hs[:T], (rows, H)), x_rows, log_cutoff, block_rows, part_ih[item], part_hh[item],
                  part_bih[item], pool, cursor)
    for j in range(GH):  # db_hr, db_hz equal db_ir, db_iz; Σ δu is db_hn
        part_bhh[item, j] = part_bih[item, j]
    no_columns = reshaped(np.empty(0, inputs.dtype), (rows, 0))  # the factor Z is then [x, 1]
    unused_ih = reshaped(no_columns, (H, 0))
    call(links, weight_gradients, reshaped(u_rows, (rows, H)), reshaped(da_scale, rows), x_rows, no_columns,
         log_cutoff, block_rows, unused_ih, part_ih[item, 2 * H:], part_bih[item, 2 * H:], pool, cursor)
    part_scale[item] = s_star


@entry
def forward_item(item, pool, pool64, cursors, teams, links, inputs, w_ih_t, w_hh_t, b_ih, b_hh, item_net,
                 item_b0, item_b1, states):
    """Forward pass of one work item into its own slots of ``states[0]`` = h (E, B, T, H)
    (and ``cursors[item]``, ``teams[item]`` and ``links`` as in :func:`gradients_item`;
    ``pool64`` is unused)."""
    T = inputs.shape[2]
    H, GH = w_hh_t.shape[1], w_hh_t.shape[2]
    e, b0, nb = item_net[item], item_b0[item], item_b1[item] - item_b0[item]
    cursor = cursors[item, 0:1]
    x = gather_inputs(inputs, e, b0, nb, pool, cursor)
    hs = reshaped(take(pool, cursor, (T + 1) * nb * H), (T + 1, nb, H))
    gate_rows = reshaped(take(pool, cursor, T * nb * GH), (T, nb, GH))
    u_rows = reshaped(take(pool, cursor, T * nb * H), (T, nb, H))
    w_hh_t_panels = call(links, pack_panels, w_hh_t[e], pool, cursor)
    gru_forward(x, w_ih_t[e], w_hh_t_panels, b_ih[e], b_hh[e], gate_rows, u_rows, hs, teams[item], links)
    for b in range(nb):
        for t in range(T):
            for j in range(H):
                states[0, e, b0 + b, t, j] = hs[t + 1, b, j]


@entry
def lyapunov_item(item, inputs, w_ih_t, w_hh_t, b_ih, b_hh, item_net, item_b, tangent0, qr_every, warmup,
                  growth, log_growth):
    """Lyapunov spectrum of one (network, sequence), float64: the tangent rows follow
    :func:`rnnsim.cells.gru.tangent_step`."""
    T = inputs.shape[2]
    H = w_hh_t.shape[1]
    e, b = item_net[item], item_b[item]
    h = np.zeros(H)
    r_gate = np.empty(H)
    z_gate = np.empty(H)
    n_gate = np.empty(H)
    tangent = tangent0.copy()
    image = np.empty((tangent.shape[0], 3 * H))
    log_r = np.empty(tangent.shape[0])
    block_start, running = np.int64(0), 0.0  # typed as int64 from the start: one compiled lyapunov_block
    for t in range(T):
        x_side = np.dot(inputs[e, b, t], w_ih_t[e]) + b_ih[e]
        h_side = np.dot(h, w_hh_t[e]) + b_hh[e]
        for j in range(H):
            r_gate[j] = sigmoid(x_side[j] + h_side[j])
            z_gate[j] = sigmoid(x_side[H + j] + h_side[H + j])
            n_gate[j] = tanh(x_side[2 * H + j] + r_gate[j] * h_side[2 * H + j])
        h_prev = h.copy()
        for j in range(H):
            h[j] = (1.0 - z_gate[j]) * n_gate[j] + z_gate[j] * h_prev[j]
        np.dot(tangent, w_hh_t[e], image)  # rows δh -> (W_hh δh)ᵀ, 3H
        for i in range(tangent.shape[0]):
            for j in range(H):
                r, z, n, u = r_gate[j], z_gate[j], n_gate[j], h_side[2 * H + j]
                d_r = image[i, j] * r * (1.0 - r)
                d_z = image[i, H + j] * z * (1.0 - z)
                d_n = (1.0 - n * n) * (d_r * u + r * image[i, 2 * H + j])
                tangent[i, j] = (1.0 - z) * d_n + z * tangent[i, j] + (h_prev[j] - n) * d_z
        block_start, running = lyapunov_block(tangent, log_r, t, T, block_start, qr_every, warmup,
                                              growth[e, b], running)
        log_growth[e, b, t] = running
