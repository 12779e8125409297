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
from .gpu_common import array_type, log_add_coefficients

# Per-sequence sums reduced in every backward step: |back|^2, |local|^2, back.local.
SUM_BB, SUM_LL, SUM_BL = range(3)
NUM_SUMS = 3


def make_kernels(dtype, tile, threads):
    """Python functions of the rnn kernels for ``dtype``, ``tile`` sequences per block
    and ``threads`` per block (compile-time constants); see :func:`kernel_signatures`."""
    global cuda  # a module global, so that the simulator can swap in its fake module
    cuda = _numba_cuda()
    from numba import float64, from_dtype

    real = from_dtype(np.dtype(dtype))
    S, TPB = tile, threads
    rows = NUM_SUMS * S
    parts = max(1, TPB // rows)  # threads per sum in the first reduction stage
    coefficients = log_add_coefficients()

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
            for idx in range(tid, H * H, TPB):
                sh[idx] = w_hh_t[e, idx // H, idx % H]
        for idx in range(tid, 2 * S * H, TPB):
            sh[off_h + idx] = 0
        for idx in range(tid, S * H, TPB):
            if b0 + idx // H < B:
                h_store[e, b0 + idx // H, 0, idx % H] = 0
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
        K = w_out.shape[1]
        steps = dlogits.shape[2]
        sh = cuda.shared.array(0, real)
        off_da = H * H if w_in_shared else 0
        off_back = off_da + S * H
        off_local = off_back + S * H
        red = cuda.shared.array((rows, TPB), float64)
        red2 = cuda.shared.array((rows, parts), float64)
        state = cuda.shared.array((S, 4), float64)  # scale, ca, cb, log|mant_h|
        if w_in_shared:
            for idx in range(tid, H * H, TPB):
                sh[idx] = w_hh[e, idx // H, idx % H]
        for idx in range(tid, 3 * S * H, TPB):
            sh[off_da + idx] = 0
        for s in range(tid, S, TPB):
            state[s, 0] = -math.inf
            state[s, 1] = 0.0
            state[s, 2] = 0.0
            state[s, 3] = -math.inf
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
                            mant = state[s, 1] * sh[off_back + s * H + r] + state[s, 2] * sh[off_local + s * H + r]
                            hv = h_store[e, b, t, r]
                            da = mant * (1.0 - hv * hv)
                            da_store[e, b, t - 1, r] = da
                        sh[off_da + s * H + r] = da
                for s in range(tid, S, TPB):
                    if b0 + s < B:
                        da_scale[e, b0 + s, t - 1] = state[s, 0]
                        log_h[e, b0 + s, t] = state[s, 0] + state[s, 3]
                cuda.syncthreads()
            # ---- phase 2: back = W_hh^T da, local = W_out^T dlogits of step t-1
            u = t - 1
            has_loss = u == T or (every and u >= 1)
            j = steps - 1 if u == T else u - 1
            for i in range(rows):
                sums[i] = 0.0
            for k in range(tid, H, TPB):
                for s in range(S):
                    acc[s] = 0
                if t <= T:
                    for r in range(H):
                        w = sh[r * H + k] if w_in_shared else w_hh[e, r, k]
                        for s in range(S):
                            acc[s] += w * sh[off_da + s * H + r]
                for s in range(S):
                    loc = 0.0
                    if has_loss and b0 + s < B:
                        for c in range(K):
                            loc += w_out[e, c, k] * dlogits[e, b0 + s, j, c]
                    back = acc[s] + 0.0
                    sh[off_back + s * H + k] = back
                    sh[off_local + s * H + k] = loc
                    sums[SUM_BB * S + s] += back * back
                    sums[SUM_LL * S + s] += loc * loc
                    sums[SUM_BL * S + s] += back * loc
            for i in range(rows):
                red[i, tid] = sums[i]
            cuda.syncthreads()
            # ---- reduction stage 1: `parts` threads per (sum, sequence)
            for idx in range(tid, rows * parts, TPB):
                row = idx // parts
                q = idx % parts
                total = 0.0
                for i in range(q, TPB, parts):
                    total += red[row, i]
                red2[row, q] = total
            cuda.syncthreads()
            # ---- stage 2 and the log-domain update, one thread per sequence
            for s in range(tid, S, TPB):
                bb = 0.0
                ll = 0.0
                bl = 0.0
                for q in range(parts):
                    bb += red2[SUM_BB * S + s, q]
                    ll += red2[SUM_LL * S + s, q]
                    bl += red2[SUM_BL * S + s, q]
                scale, ca, cb, log_mh, log_mc = coefficients(state[s, 0], bb, 0.0, ll, bl)
                state[s, 0] = scale
                state[s, 1] = ca
                state[s, 2] = cb
                state[s, 3] = log_mh
            cuda.syncthreads()
        for s in range(tid, S, TPB):
            if b0 + s < B:
                log_h[e, b0 + s, 0] = state[s, 0] + state[s, 3]

    return {"rnn_forward": rnn_forward, "rnn_backward": rnn_backward}


def kernel_signatures(dtype):
    """Explicit signatures of :func:`make_kernels`' kernels for ``dtype``."""
    from numba import types

    def f(n):
        return array_type(dtype, n)

    def f64(n):
        return array_type(np.float64, n)

    return {
        "rnn_forward": (f(3), f(3), f(2), f(2), f(4), f(4), types.boolean),
        "rnn_backward": (f(3), f(3), f(4), f(4), types.boolean, f(4), f64(3), f64(3), types.boolean),
    }


def shared_bytes(kernel, dtype, tile, threads, H, w_in_shared):
    """(dynamic, static) shared memory of ``kernel`` in bytes, matching the layouts above."""
    words = {"rnn_forward": 2, "rnn_backward": 3}[kernel] * tile * H + (H * H if w_in_shared else 0)
    static = 0
    if kernel == "rnn_backward":
        rows = NUM_SUMS * tile
        static = 8 * (rows * threads + rows * max(1, threads // rows) + 4 * tile)
    return words * np.dtype(dtype).itemsize, static
