r"""numba.cuda kernels of the Elman (tanh) RNN: forward, then log-domain BPTT.

One block runs one network for a tile of ``tile`` sequences over all T steps (the
time loop is inside the kernel). Thread u owns hidden units u, u + TPB, ... for
every sequence of the tile, so each weight it loads from shared memory is used
``tile`` times from registers. W_hh lives in dynamic shared memory when
``w_in_shared`` (the driver checks that it fits), else it is read from global
memory (L2). Padding sequences of the last tile compute on zeros and write nothing.

Notes
-----
Forward: :math:`h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`.
Backward, per sequence, with the adjoint :math:`e^{s} u` (unit :math:`u`):
:math:`\delta_t = u \odot (1 - h_t^2)`, then :math:`u \leftarrow W_{hh}^T \delta_t`
plus the loss term of step t-1, renormalised in log form
(:func:`rnnsim.kernels.gpu_common.log_add_coefficients`).
"""
from __future__ import annotations

import math

import numpy as np

from ._cuda import cuda as _numba_cuda

cuda = None  # numba.cuda, bound by the factories below (never at import time)
from .gpu_common import (STATE_CA, STATE_CB, STATE_LOG_MH, backward_static_bytes,
                         recurrence_device_functions, signature_array_types)

# Per-sequence sums reduced in every backward step: gpu_common's SUM_BB, SUM_LL, SUM_BL.
NUM_SUMS = 3
STATE_COLUMNS = 4  # scale, ca, cb, log|mant_h|


def make_kernels(dtype, tile, threads):
    """Python functions of the rnn kernels for ``dtype``, ``tile`` sequences per block
    and ``threads`` per block (compile-time constants); see :func:`kernel_signatures`."""
    global cuda  # a module global, so that the simulator can swap in its fake module
    cuda = _numba_cuda()
    from numba import float64, from_dtype

    real = from_dtype(np.dtype(dtype))
    S, TPB = tile, threads
    dev = recurrence_device_functions(NUM_SUMS, S, TPB)
    rows, parts = dev.rows, dev.parts
    # local names: numba cannot type attribute access on the namespace
    stage_matrix, zero_shared, zero_first_step = dev.stage_matrix, dev.zero_shared, dev.zero_first_step
    init_state, record_step, record_log_norm = dev.init_state, dev.record_step, dev.record_log_norm
    loss_step, back_projection, local_term = dev.loss_step, dev.back_projection, dev.local_term
    store_back_local, publish_sums, reduce_stage1 = dev.store_back_local, dev.publish_sums, dev.reduce_stage1
    log_add_update = dev.log_add_update

    def rnn_forward(w_ih, w_hh_t, b_ih, b_hh, x, h_store, w_in_shared):
        """Grid (E, ceil(B/tile)); w_hh_t is W_hh transposed, (E, H, H), so that threads
        of consecutive units read consecutive words. Keeps h_store[e, b, t] = h_t for
        t = 0..T (h_0 = 0):
        BPTT needs h_t for tanh' and h_{t-1} for dW_hh.

        Dynamic shared memory: [W_hh^T (H*H) if w_in_shared | h_{t-1}, h_t (2*tile*H)].
        """
        e = cuda.blockIdx.x
        b0 = cuda.blockIdx.y * S
        tid = cuda.threadIdx.x
        B = x.shape[1]
        T = x.shape[2]
        D = x.shape[3]
        H = w_hh_t.shape[2]
        sh = cuda.shared.array(0, real)
        off_h = H * H if w_in_shared else 0
        if w_in_shared:
            stage_matrix(sh, w_hh_t, e, tid)
        zero_shared(sh, off_h, 2 * S * H, tid)
        zero_first_step(h_store, e, b0, tid)
        cuda.syncthreads()
        acc = cuda.local.array(S, real)
        for t in range(1, T + 1):
            prev = off_h + ((t - 1) % 2) * S * H  # double buffer: one barrier per step
            cur = off_h + (t % 2) * S * H
            for r in range(tid, H, TPB):
                bias = b_ih[e, r] + b_hh[e, r]
                for s in range(S):
                    a = bias
                    if b0 + s < B:
                        for d in range(D):
                            a += w_ih[e, r, d] * x[e, b0 + s, t - 1, d]
                    acc[s] = a
                for k in range(H):
                    w = sh[k * H + r] if w_in_shared else w_hh_t[e, k, r]
                    for s in range(S):
                        acc[s] += w * sh[prev + s * H + k]
                for s in range(S):
                    hv = math.tanh(acc[s])
                    sh[cur + s * H + r] = hv
                    if b0 + s < B:
                        h_store[e, b0 + s, t, r] = hv
            cuda.syncthreads()

    def rnn_backward(w_hh, w_out, h_store, dlogits, every, da_store, da_scale, log_h, w_in_shared):
        """Grid (E, ceil(B/tile)). Writes the mantissas da_store[e, b, t-1] of dL/da_t,
        their log-scales da_scale[e, b, t-1] and log_h[e, b, t] = ln|dL/dh_t|.

        Dynamic shared memory: [W_hh (H*H) if w_in_shared | da, back, local (3*tile*H)].
        Per step: phase 1 (da from the current mantissa), phase 2 (back = W_hh^T da,
        the next loss term, partial sums), two reduction stages, one barrier each.
        """
        e = cuda.blockIdx.x
        b0 = cuda.blockIdx.y * S
        tid = cuda.threadIdx.x
        B = h_store.shape[1]
        T = h_store.shape[2] - 1
        H = h_store.shape[3]
        steps = dlogits.shape[2]
        sh = cuda.shared.array(0, real)
        off_da = H * H if w_in_shared else 0
        off_back = off_da + S * H
        off_local = off_back + S * H
        red = cuda.shared.array((rows, TPB), float64)
        red2 = cuda.shared.array((rows, parts), float64)
        state = cuda.shared.array((S, STATE_COLUMNS), float64)
        if w_in_shared:
            stage_matrix(sh, w_hh, e, tid)
        zero_shared(sh, off_da, 3 * S * H, tid)
        init_state(state, tid)
        cuda.syncthreads()
        acc = cuda.local.array(S, real)
        sums = cuda.local.array(rows, float64)
        # t = T + 1 only brings in the loss term of step T (da is still zero)
        for t in range(T + 1, 0, -1):
            if t <= T:
                # ---- phase 1: da_t = mant_h * (1 - h_t^2)
                for r in range(tid, H, TPB):
                    for s in range(S):
                        b = b0 + s
                        da = 0.0
                        if b < B:
                            mant = (state[s, STATE_CA] * sh[off_back + s * H + r]
                                    + state[s, STATE_CB] * sh[off_local + s * H + r])
                            hv = h_store[e, b, t, r]
                            da = mant * (1.0 - hv * hv)
                            da_store[e, b, t - 1, r] = da
                        sh[off_da + s * H + r] = da
                record_step(state, da_scale, log_h, e, b0, t, tid)
                cuda.syncthreads()
            # ---- phase 2: back = W_hh^T da, local = W_out^T dlogits of step t-1
            has_loss, j = loss_step(t, T, steps, every)
            for i in range(rows):
                sums[i] = 0.0
            for k in range(tid, H, TPB):
                back_projection(acc, sh, w_hh, off_da, e, k, w_in_shared, t <= T)
                for s in range(S):
                    loc = local_term(w_out, dlogits, has_loss, e, b0 + s, j, k)
                    store_back_local(sh, off_back, off_local, H, sums, s, k, acc[s] + 0.0, loc)
            # ---- block reduction of the per-sequence sums: stage 1, `parts` threads per row
            publish_sums(sums, red, tid)
            cuda.syncthreads()
            reduce_stage1(red, red2, tid)
            cuda.syncthreads()
            # ---- the log-domain update, one thread per sequence
            for s in range(tid, S, TPB):
                log_add_update(red2, state, s, 0.0)  # no carried cell adjoint
            cuda.syncthreads()
        record_log_norm(state, STATE_LOG_MH, log_h, e, b0, 0, tid)

    return {"rnn_forward": rnn_forward, "rnn_backward": rnn_backward}


def kernel_signatures(dtype):
    """Explicit signatures of :func:`make_kernels`' kernels for ``dtype``."""
    from numba import types

    f, f64 = signature_array_types(dtype)
    return {
        "rnn_forward": (f(3), f(3), f(2), f(2), f(4), f(4), types.boolean),
        "rnn_backward": (f(3), f(3), f(4), f(4), types.boolean, f(4), f64(3), f64(3), types.boolean),
    }


def shared_bytes(kernel, dtype, tile, threads, H, w_in_shared):
    """(dynamic, static) shared memory of ``kernel`` in bytes, matching the layouts above."""
    words = {"rnn_forward": 2, "rnn_backward": 3}[kernel] * tile * H + (H * H if w_in_shared else 0)
    static = 0
    if kernel == "rnn_backward":
        static = backward_static_bytes(NUM_SUMS, STATE_COLUMNS, tile, threads)
    return words * np.dtype(dtype).itemsize, static
