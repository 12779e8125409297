r"""numba.cuda kernels of the LSTM: forward, then log-domain BPTT.

Same block layout and module interface as :mod:`rnnsim.kernels.gpu_rnn`: one block
runs one network for a tile of sequences over all T steps; thread u owns hidden
units u, u + TPB, ..., and for each of them all four gate rows (i, f, g, o) of
every sequence in the tile, so the cell update needs no extra barrier. W_hh
(GH x H, GH = 4H rows of the G = 4 gate blocks) sits in dynamic shared memory when
``w_in_shared``, else it is read from global memory.

Notes
-----
Forward: :math:`a_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}` split into
(i, f, g, o); :math:`c_t = \sigma(f) c_{t-1} + \sigma(i)\tanh(g)`,
:math:`h_t = \sigma(o) \tanh(c_t)`.
Backward, per sequence, with the pair (dL/dh_t, carried dL/dc_t) = e^s (u_h, u_c):
:math:`dc = u_c + u_h\, o\,(1 - \tanh^2 c_t)` (the total dL/dc_t),
:math:`\delta = (dc\, g\, i(1-i),\; dc\, c_{t-1} f(1-f),\; dc\, i (1-g^2),\;
u_h \tanh(c_t)\, o(1-o))`, then :math:`u_h \leftarrow W_{hh}^T \delta`,
:math:`u_c \leftarrow dc\, f`, plus the loss term of step t-1, renormalised jointly
(identity 1 of :mod:`rnnsim.logdomain`).
"""
from __future__ import annotations

import math

import numpy as np

from ._cuda import cuda as _numba_cuda
from .gpu_common import signature_array_types
from .gpu_recurrence import (
    NUM_COMMON_SUMS,
    STATE_CA,
    STATE_CB,
    STATE_LOG_MC,
    STATE_LOG_MH,
    STATE_SCALE,
    backward_f64_layout,
    recurrence_device_functions,
)

cuda = None  # numba.cuda, bound by the factories below (never at import time)

# Per-sequence sums reduced in every backward step: gpu_recurrence's SUM_BB, SUM_LL,
# SUM_BL, then these two.
SUM_CC, SUM_DC = NUM_COMMON_SUMS, NUM_COMMON_SUMS + 1  # |carry|^2, |dc|^2
NUM_SUMS = NUM_COMMON_SUMS + 2
STATE_COLUMNS = 5  # scale, ca, cb, log|mant_h|, log|mant_c|


def make_kernels(dtype, tile, threads):
    """Python functions ``{"forward": lstm_forward, "backward": lstm_backward}`` for
    ``dtype``, ``tile`` sequences per block and ``threads`` per block (compile-time
    constants); see :func:`kernel_signatures`."""
    global cuda  # a module global, so that the simulator can swap in its fake module
    cuda = _numba_cuda()
    from numba import float64, from_dtype

    real = from_dtype(np.dtype(dtype))
    TILE, TPB = tile, threads
    gate_accumulators = 4 * TILE  # a named constant: local.array needs a literal size
    dev = recurrence_device_functions(NUM_SUMS, STATE_COLUMNS, TILE, TPB)
    rows, f64_words = dev.rows, dev.words
    base = f64_words * 8 // np.dtype(dtype).itemsize  # first word of the dtype region
    # local names: numba cannot type attribute access on the namespace
    stage_matrix, zero_shared, zero_first_step = dev.stage_matrix, dev.zero_shared, dev.zero_first_step
    init_state, state_value, record_step = dev.init_state, dev.state_value, dev.record_step
    record_log_norm, loss_step, back_projection = dev.record_log_norm, dev.loss_step, dev.back_projection
    local_term, store_back_local, publish_sums = dev.local_term, dev.store_back_local, dev.publish_sums
    reduce_stage1, sequence_sum, log_add_update = dev.reduce_stage1, dev.sequence_sum, dev.log_add_update

    def lstm_forward(w_ih, w_hh_t, b_ih, b_hh, x, h_store, c_store, gates_store, w_in_shared):
        """Grid (ceil(B/tile), E); w_hh_t is W_hh transposed, (E, H, 4H), so that threads
        of consecutive units read consecutive words. Keeps h_store and c_store[e, b, t] for t = 0..T
        (zero at t = 0) and the activated gates gates_store[e, b, t-1] = (i, f, g, o)
        of step t: BPTT needs all three, and h_{t-1} for dW_hh.

        Dynamic shared memory: [W_hh^T (H*4H) if w_in_shared | h_{t-1}, h_t (2*tile*H)].
        """
        tid = cuda.threadIdx.x
        B = x.shape[1]
        T = x.shape[2]
        D = x.shape[3]
        H = w_hh_t.shape[1]
        GH = w_hh_t.shape[2]
        b0 = cuda.blockIdx.x * TILE
        e = cuda.blockIdx.y
        sh = cuda.shared.array(0, real)
        off_h = GH * H if w_in_shared else 0
        if w_in_shared:
            stage_matrix(sh, 0, w_hh_t, e, tid)
        zero_shared(sh, off_h, 2 * TILE * H, tid)
        zero_first_step(h_store, e, b0, tid)
        zero_first_step(c_store, e, b0, tid)
        cuda.syncthreads()
        # acc[g * TILE + s]: gate row g of unit j for sequence s, the pre-activation a_t,
        # then (in place, in registers) the activated gate
        acc = cuda.local.array(gate_accumulators, real)
        for t in range(1, T + 1):
            prev = off_h + ((t - 1) % 2) * TILE * H
            cur = off_h + (t % 2) * TILE * H
            for j in range(tid, H, TPB):
                # the four gate rows of unit j, written out so that the accumulators
                # stay in registers (a loop over gates left them in local memory)
                bias_i = b_ih[e, j] + b_hh[e, j]
                bias_f = b_ih[e, H + j] + b_hh[e, H + j]
                bias_g = b_ih[e, 2 * H + j] + b_hh[e, 2 * H + j]
                bias_o = b_ih[e, 3 * H + j] + b_hh[e, 3 * H + j]
                for s in range(TILE):
                    a_i = bias_i
                    a_f = bias_f
                    a_g = bias_g
                    a_o = bias_o
                    if b0 + s < B:
                        for d in range(D):
                            xv = x[e, b0 + s, t - 1, d]
                            a_i += w_ih[e, j, d] * xv
                            a_f += w_ih[e, H + j, d] * xv
                            a_g += w_ih[e, 2 * H + j, d] * xv
                            a_o += w_ih[e, 3 * H + j, d] * xv
                    acc[s] = a_i
                    acc[TILE + s] = a_f
                    acc[2 * TILE + s] = a_g
                    acc[3 * TILE + s] = a_o
                for k in range(H):
                    if w_in_shared:
                        w_i = sh[k * GH + j]
                        w_f = sh[k * GH + H + j]
                        w_g = sh[k * GH + 2 * H + j]
                        w_o = sh[k * GH + 3 * H + j]
                    else:
                        w_i = w_hh_t[e, k, j]
                        w_f = w_hh_t[e, k, H + j]
                        w_g = w_hh_t[e, k, 2 * H + j]
                        w_o = w_hh_t[e, k, 3 * H + j]
                    for s in range(TILE):
                        hk = sh[prev + s * H + k]
                        acc[s] += w_i * hk
                        acc[TILE + s] += w_f * hk
                        acc[2 * TILE + s] += w_g * hk
                        acc[3 * TILE + s] += w_o * hk
                # the activations in place, one short loop per gate, so that each loop
                # unrolls and the accumulators stay in registers
                for s in range(TILE):
                    acc[s] = 0.5 * (1.0 + math.tanh(0.5 * acc[s]))  # i = sigmoid
                for s in range(TILE):
                    acc[TILE + s] = 0.5 * (1.0 + math.tanh(0.5 * acc[TILE + s]))  # f
                for s in range(TILE):
                    acc[2 * TILE + s] = math.tanh(acc[2 * TILE + s])  # g
                for s in range(TILE):
                    acc[3 * TILE + s] = 0.5 * (1.0 + math.tanh(0.5 * acc[3 * TILE + s]))  # o
                for s in range(TILE):
                    b = b0 + s
                    hv = 0.0  # padding sequences of the last tile stay at zero
                    if b < B:
                        ig = acc[s]
                        fg = acc[TILE + s]
                        gg = acc[2 * TILE + s]
                        og = acc[3 * TILE + s]
                        c_prev = c_store[e, b, t - 1, j]  # written by this thread last step
                        cv = fg * c_prev + ig * gg
                        hv = og * math.tanh(cv)
                        h_store[e, b, t, j] = hv
                        c_store[e, b, t, j] = cv
                        gates_store[e, b, t - 1, j] = ig
                        gates_store[e, b, t - 1, H + j] = fg
                        gates_store[e, b, t - 1, 2 * H + j] = gg
                        gates_store[e, b, t - 1, 3 * H + j] = og
                    sh[cur + s * H + j] = hv
            cuda.syncthreads()

    def lstm_backward(w_hh, w_out, h_store, c_store, gates_store, dlogits, every,
                      da_store, da_scale, log_h, log_c, w_in_shared):
        """Grid (ceil(B/tile), E). Writes the mantissas da_store[e, b, t-1] of dL/da_t,
        their log-scales da_scale[e, b, t-1], log_h[e, b, t] = ln|dL/dh_t| and
        log_c[e, b, t] = ln|dL/dc_t| (total derivative).

        Dynamic shared memory: [float64 reduction buffers and state
        (:func:`~rnnsim.kernels.gpu_recurrence.backward_f64_layout`) | W_hh (4H*H) if
        w_in_shared | da (tile*4H) | back, local, carry (3*tile*H)]. Phases per step as
        in the rnn kernel.
        """
        tid = cuda.threadIdx.x
        B = h_store.shape[1]
        T = h_store.shape[2] - 1
        H = h_store.shape[3]
        GH = w_hh.shape[1]
        steps = dlogits.shape[2]
        b0 = cuda.blockIdx.x * TILE
        e = cuda.blockIdx.y
        sh64 = cuda.shared.array(0, float64)  # the same memory as sh, seen as float64
        sh = cuda.shared.array(0, real)
        off_da = base + (GH * H if w_in_shared else 0)
        off_back = off_da + TILE * GH
        off_local = off_back + TILE * H
        off_carry = off_local + TILE * H
        if w_in_shared:
            stage_matrix(sh, base, w_hh, e, tid)
        zero_shared(sh, off_da, TILE * GH + 3 * TILE * H, tid)
        init_state(sh64, tid)
        cuda.syncthreads()
        acc = cuda.local.array(TILE, real)
        sums = cuda.local.array(rows, float64)
        for t in range(T + 1, 0, -1):
            for i in range(rows):
                sums[i] = 0.0
            if t <= T:
                # ---- phase 1: total dc, the four gate adjoints, and the carried dc * f
                for j in range(tid, H, TPB):
                    for s in range(TILE):
                        b = b0 + s
                        dc = 0.0
                        carry = 0.0
                        if b < B:
                            ca = state_value(sh64, s, STATE_CA)
                            mh = (ca * sh[off_back + s * H + j]
                                  + state_value(sh64, s, STATE_CB) * sh[off_local + s * H + j])
                            mc = ca * sh[off_carry + s * H + j]
                            ig = gates_store[e, b, t - 1, j]
                            fg = gates_store[e, b, t - 1, H + j]
                            gg = gates_store[e, b, t - 1, 2 * H + j]
                            og = gates_store[e, b, t - 1, 3 * H + j]
                            tanh_c = math.tanh(c_store[e, b, t, j])
                            dc = mc + mh * og * (1.0 - tanh_c * tanh_c)
                            d_i = dc * gg * ig * (1.0 - ig)
                            d_f = dc * c_store[e, b, t - 1, j] * fg * (1.0 - fg)
                            d_g = dc * ig * (1.0 - gg * gg)
                            d_o = mh * tanh_c * og * (1.0 - og)
                            carry = dc * fg
                            da_store[e, b, t - 1, j] = d_i
                            da_store[e, b, t - 1, H + j] = d_f
                            da_store[e, b, t - 1, 2 * H + j] = d_g
                            da_store[e, b, t - 1, 3 * H + j] = d_o
                        else:
                            d_i = 0.0
                            d_f = 0.0
                            d_g = 0.0
                            d_o = 0.0
                        sh[off_da + s * GH + j] = d_i
                        sh[off_da + s * GH + H + j] = d_f
                        sh[off_da + s * GH + 2 * H + j] = d_g
                        sh[off_da + s * GH + 3 * H + j] = d_o
                        sh[off_carry + s * H + j] = carry  # this thread owns unit j in phase 2 too
                        sums[SUM_DC * TILE + s] += dc * dc
                record_step(sh64, da_scale, log_h, e, b0, t, tid)
                cuda.syncthreads()
            # ---- phase 2: back = W_hh^T da, local = W_out^T dlogits of step t-1
            has_loss, j_out = loss_step(t, T, steps, every)
            for k in range(tid, H, TPB):
                back_projection(acc, sh, base, w_hh, off_da, e, k, w_in_shared, t <= T)
                for s in range(TILE):
                    loc = local_term(w_out, dlogits, has_loss, e, b0 + s, j_out, k)
                    store_back_local(sh, off_back, off_local, H, sums, s, k, acc[s] + 0.0, loc)
                    carry = sh[off_carry + s * H + k] + 0.0  # as stored by phase 1, in float64
                    sums[SUM_CC * TILE + s] += carry * carry
            # ---- block reduction of the per-sequence sums: stage 1, `parts` threads per row
            publish_sums(sums, sh64, tid)
            cuda.syncthreads()
            reduce_stage1(sh64, tid)
            cuda.syncthreads()
            # ---- the log-domain update, one thread per sequence; |dc|^2 gives log_c
            for s in range(tid, TILE, TPB):
                if t <= T and b0 + s < B:
                    dcs = sequence_sum(sh64, SUM_DC * TILE + s)
                    log_dc = 0.5 * math.log(dcs) if dcs > 0.0 else -math.inf
                    log_c[e, b0 + s, t] = state_value(sh64, s, STATE_SCALE) + log_dc
                log_add_update(sh64, s, sequence_sum(sh64, SUM_CC * TILE + s))
            cuda.syncthreads()
        record_log_norm(sh64, STATE_LOG_MH, log_h, e, b0, 0, tid)
        record_log_norm(sh64, STATE_LOG_MC, log_c, e, b0, 0, tid)

    return {"forward": lstm_forward, "backward": lstm_backward}


def kernel_signatures(dtype):
    """Explicit signatures of :func:`make_kernels`' kernels for ``dtype``."""
    from numba import types

    f, f64 = signature_array_types(dtype)
    return {
        "forward": (f(3), f(3), f(2), f(2), f(4), f(4), f(4), f(4), types.boolean),
        "backward": (f(3), f(3), f(4), f(4), f(4), f(4), types.boolean,
                          f(4), f64(3), f64(3), f64(3), types.boolean),
    }


def dynamic_shared_bytes(role, dtype, tile, threads, H, w_in_shared):
    """Dynamic shared memory of the ``role`` ("forward"/"backward") kernel, in bytes,
    matching the layouts in the kernels' docstrings (pure arithmetic, no numba)."""
    words = {"forward": 2 * tile * H, "backward": 7 * tile * H}[role]
    words += 4 * H * H if w_in_shared else 0
    nbytes = words * np.dtype(dtype).itemsize
    if role == "backward":
        nbytes += 8 * backward_f64_layout(NUM_SUMS, STATE_COLUMNS, tile, threads).words
    return nbytes


def recurrent_only_rows(H):
    """The rows of W_hh and b_hh whose adjoints differ from the input side's: none, the
    biases fold (``rnnsim.cells.get(cell).folded_bias``), so one set of rows serves both."""
    return slice(0, 0)


def activation_shapes(B, T, H):
    """Per network, the device arrays that the forward writes and the backward reads,
    in the kernels' argument order: h_store and c_store (t = 0 included) and the
    activated gates (i, f, g, o) of every step."""
    return {"h": (B, T + 1, H), "c": (B, T + 1, H), "gates": (B, T, 4 * H)}


def forward_args(params, x, acts):
    """Arguments of the forward kernel before ``w_in_shared`` (device arrays)."""
    return (params["weight_ih_l0"], params["weight_hh_t"], params["bias_ih_l0"], params["bias_hh_l0"],
            x, acts["h"], acts["c"], acts["gates"])


def backward_args(params, acts, dlogits, every, da, da_hh, da_scale, profiles):
    """Arguments of the backward kernel before ``w_in_shared``; ``profiles`` maps each
    state component to its (E, B, T+1) log-norm output. The biases fold, so the rows
    ``da`` serve both sides and ``da_hh`` is None (see :func:`recurrent_only_rows`)."""
    return (params["weight_hh_l0"], params["weight_out"], acts["h"], acts["c"], acts["gates"], dlogits,
            every, da, da_scale, profiles["h"], profiles["c"])
