r"""numba.cuda kernels of the Elman (tanh) RNN: forward, then log-domain BPTT.

One block runs one network for a tile of ``tile`` sequences over all T steps (the
time loop is inside the kernel); the 1-D grid has one block per (network, tile)
pair. Thread u owns hidden units u, u + TPB, ... for every sequence of the tile,
so each weight it loads from shared memory is used ``tile`` times from registers.
W_hh lives in dynamic shared memory when ``w_in_shared`` (the launch planner,
:mod:`rnnsim.kernels.gpu_launch`, checks that it fits), else it is read from global
memory (L2). Padding sequences of the last tile compute on zeros and write nothing.

The module interface that :mod:`rnnsim.kernels.gpu` uses, the same in every
``gpu_<cell>`` module: :func:`make_kernels`, :func:`kernel_signatures`,
:func:`dynamic_shared_bytes`, :func:`recurrent_only_rows`, :func:`activation_shapes`,
:func:`forward_args`, :func:`backward_args`.

Notes
-----
Forward: :math:`h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`.
Backward, per sequence, with the adjoint :math:`e^{s} u` (unit :math:`u`):
:math:`\delta_t = u \odot (1 - h_t^2)`, then :math:`u \leftarrow W_{hh}^T \delta_t`
plus the loss term of step t-1, renormalised in log form (identity 1 of
:mod:`rnnsim.logdomain`, :func:`rnnsim.kernels.gpu_recurrence.log_add_coefficients`).
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
    STATE_LOG_MH,
    backward_f64_layout,
    recurrence_device_functions,
)

cuda = None  # numba.cuda, bound by the factories below (never at import time)

# Per-sequence sums reduced in every backward step: gpu_recurrence's SUM_BB, SUM_LL, SUM_BL.
NUM_SUMS = NUM_COMMON_SUMS
STATE_COLUMNS = 4  # scale, ca, cb, log|mant_h|


def make_kernels(dtype, tile, threads):
    """Python functions ``{"forward": rnn_forward, "backward": rnn_backward}`` for
    ``dtype``, ``tile`` sequences per block and ``threads`` per block (compile-time
    constants); see :func:`kernel_signatures`."""
    global cuda  # a module global, so that the simulator can swap in its fake module
    cuda = _numba_cuda()
    from numba import float64, from_dtype

    real = from_dtype(np.dtype(dtype))
    TILE, TPB = tile, threads
    dev = recurrence_device_functions(NUM_SUMS, STATE_COLUMNS, TILE, TPB)
    rows, f64_words = dev.rows, dev.words
    base = f64_words * 8 // np.dtype(dtype).itemsize  # first word of the dtype region
    # local names: numba cannot type attribute access on the namespace
    stage_matrix, zero_shared, zero_first_step = dev.stage_matrix, dev.zero_shared, dev.zero_first_step
    init_state, state_value, record_step = dev.init_state, dev.state_value, dev.record_step
    record_log_norm, loss_step, back_projection = dev.record_log_norm, dev.loss_step, dev.back_projection
    local_term, store_back_local, publish_sums = dev.local_term, dev.store_back_local, dev.publish_sums
    reduce_stage1, log_add_update = dev.reduce_stage1, dev.log_add_update

    def rnn_forward(w_ih, w_hh_t, b_ih, b_hh, x, h_store, w_in_shared):
        """Grid (ceil(B/tile), E); w_hh_t is W_hh transposed, (E, H, H), so that threads
        of consecutive units read consecutive words. Keeps h_store[e, b, t] = h_t for
        t = 0..T (h_0 = 0): BPTT needs h_t for tanh' and h_{t-1} for dW_hh.

        Dynamic shared memory: [W_hh^T (H*H) if w_in_shared | h_{t-1}, h_t (2*tile*H)].
        """
        tid = cuda.threadIdx.x
        B = x.shape[1]
        T = x.shape[2]
        D = x.shape[3]
        H = w_hh_t.shape[2]
        b0 = cuda.blockIdx.x * TILE
        e = cuda.blockIdx.y
        sh = cuda.shared.array(0, real)
        off_h = H * H if w_in_shared else 0
        if w_in_shared:
            stage_matrix(sh, 0, w_hh_t, e, tid)
        zero_shared(sh, off_h, 2 * TILE * H, tid)
        zero_first_step(h_store, e, b0, tid)
        cuda.syncthreads()
        acc = cuda.local.array(TILE, real)
        for t in range(1, T + 1):
            prev = off_h + ((t - 1) % 2) * TILE * H  # double buffer: one barrier per step
            cur = off_h + (t % 2) * TILE * H
            for r in range(tid, H, TPB):
                bias = b_ih[e, r] + b_hh[e, r]
                for s in range(TILE):
                    a = bias
                    if b0 + s < B:
                        for d in range(D):
                            a += w_ih[e, r, d] * x[e, b0 + s, t - 1, d]
                    acc[s] = a
                for k in range(H):
                    w = sh[k * H + r] if w_in_shared else w_hh_t[e, k, r]
                    for s in range(TILE):
                        acc[s] += w * sh[prev + s * H + k]
                for s in range(TILE):
                    hv = math.tanh(acc[s])
                    sh[cur + s * H + r] = hv
                    if b0 + s < B:
                        h_store[e, b0 + s, t, r] = hv
            cuda.syncthreads()

    def rnn_backward(w_hh, w_out, h_store, dlogits, every, da_store, da_scale, log_h, w_in_shared):
        """Grid (ceil(B/tile), E). Writes the mantissas da_store[e, b, t-1] of dL/da_t,
        their log-scales da_scale[e, b, t-1] and log_h[e, b, t] = ln|dL/dh_t|.

        Dynamic shared memory: [float64 reduction buffers and state
        (:func:`~rnnsim.kernels.gpu_recurrence.backward_f64_layout`) | W_hh (H*H) if
        w_in_shared | da, back, local (3*tile*H)].
        Per step: phase 1 (da from the current mantissa), phase 2 (back = W_hh^T da,
        the next loss term, partial sums), two reduction stages, one barrier each.
        """
        tid = cuda.threadIdx.x
        B = h_store.shape[1]
        T = h_store.shape[2] - 1
        H = h_store.shape[3]
        steps = dlogits.shape[2]
        b0 = cuda.blockIdx.x * TILE
        e = cuda.blockIdx.y
        sh64 = cuda.shared.array(0, float64)  # the same memory as sh, seen as float64
        sh = cuda.shared.array(0, real)
        off_da = base + (H * H if w_in_shared else 0)
        off_back = off_da + TILE * H
        off_local = off_back + TILE * H
        if w_in_shared:
            stage_matrix(sh, base, w_hh, e, tid)
        zero_shared(sh, off_da, 3 * TILE * H, tid)
        init_state(sh64, tid)
        cuda.syncthreads()
        acc = cuda.local.array(TILE, real)
        sums = cuda.local.array(rows, float64)
        # t = T + 1 only brings in the loss term of step T (da is still zero)
        for t in range(T + 1, 0, -1):
            if t <= T:
                # ---- phase 1: da_t = mant_h * (1 - h_t^2)
                for r in range(tid, H, TPB):
                    for s in range(TILE):
                        b = b0 + s
                        da = 0.0
                        if b < B:
                            mant = (state_value(sh64, s, STATE_CA) * sh[off_back + s * H + r]
                                    + state_value(sh64, s, STATE_CB) * sh[off_local + s * H + r])
                            hv = h_store[e, b, t, r]
                            da = mant * (1.0 - hv * hv)
                            da_store[e, b, t - 1, r] = da
                        sh[off_da + s * H + r] = da
                record_step(sh64, da_scale, log_h, e, b0, t, tid)
                cuda.syncthreads()
            # ---- phase 2: back = W_hh^T da, local = W_out^T dlogits of step t-1
            has_loss, j = loss_step(t, T, steps, every)
            for i in range(rows):
                sums[i] = 0.0
            for k in range(tid, H, TPB):
                back_projection(acc, sh, base, w_hh, off_da, e, k, w_in_shared, t <= T)
                for s in range(TILE):
                    loc = local_term(w_out, dlogits, has_loss, e, b0 + s, j, k)
                    store_back_local(sh, off_back, off_local, H, sums, s, k, acc[s] + 0.0, loc)
            # ---- block reduction of the per-sequence sums: stage 1, `parts` threads per row
            publish_sums(sums, sh64, tid)
            cuda.syncthreads()
            reduce_stage1(sh64, tid)
            cuda.syncthreads()
            # ---- the log-domain update, one thread per sequence
            for s in range(tid, TILE, TPB):
                log_add_update(sh64, s, 0.0)  # no carried cell adjoint
            cuda.syncthreads()
        record_log_norm(sh64, STATE_LOG_MH, log_h, e, b0, 0, tid)

    return {"forward": rnn_forward, "backward": rnn_backward}


def kernel_signatures(dtype):
    """Explicit signatures of :func:`make_kernels`' kernels for ``dtype``."""
    from numba import types

    f, f64 = signature_array_types(dtype)
    return {
        "forward": (f(3), f(3), f(2), f(2), f(4), f(4), types.boolean),
        "backward": (f(3), f(3), f(4), f(4), types.boolean, f(4), f64(3), f64(3), types.boolean),
    }


def dynamic_shared_bytes(role, dtype, tile, threads, H, w_in_shared):
    """Dynamic shared memory of the ``role`` ("forward"/"backward") kernel, in bytes,
    matching the layouts in the kernels' docstrings (pure arithmetic, no numba)."""
    words = {"forward": 2, "backward": 3}[role] * tile * H + (H * H if w_in_shared else 0)
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
    in the kernels' argument order: h_store (h_0 = 0 included)."""
    return {"h": (B, T + 1, H)}


def forward_args(params, x, acts):
    """Arguments of the forward kernel before ``w_in_shared`` (device arrays)."""
    return (params["weight_ih_l0"], params["weight_hh_t"], params["bias_ih_l0"], params["bias_hh_l0"],
            x, acts["h"])


def backward_args(params, acts, dlogits, every, da, da_hh, da_scale, profiles):
    """Arguments of the backward kernel before ``w_in_shared``; ``profiles`` maps each
    state component to its (E, B, T+1) log-norm output. The biases fold, so the rows
    ``da`` serve both sides and ``da_hh`` is None (see :func:`recurrent_only_rows`)."""
    return (params["weight_hh_l0"], params["weight_out"], acts["h"], dlogits, every, da, da_scale,
            profiles["h"])
