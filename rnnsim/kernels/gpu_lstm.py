r"""numba.cuda kernels of the LSTM: forward, then log-domain BPTT.

Same block layout as :mod:`rnnsim.kernels.gpu_rnn`: one block runs one network
for a tile of sequences over all T steps; thread u owns hidden units u, u + TPB,
..., and for each of them all four gate rows (i, f, g, o) of every sequence in
the tile, so the cell update needs no extra barrier. W_hh (4H x H) sits in
dynamic shared memory when ``w_in_shared``, else it is read from global memory.

Notes
-----
Forward: :math:`a_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}` split into
(i, f, g, o); :math:`c_t = \sigma(f) c_{t-1} + \sigma(i)\tanh(g)`,
:math:`h_t = \sigma(o) \tanh(c_t)`.
Backward, per sequence, with the pair (dL/dh_t, carried dL/dc_t) = e^s (u_h, u_c):
:math:`dc = u_c + u_h\, o\,(1 - \tanh^2 c_t)` (the total dL/dc_t),
:math:`\delta = (dc\, g\, i(1-i),\; dc\, c_{t-1} f(1-f),\; dc\, i (1-g^2),\;
u_h \tanh(c_t)\, o(1-o))`, then :math:`u_h \leftarrow W_{hh}^T \delta`,
:math:`u_c \leftarrow dc\, f`, plus the loss term of step t-1, renormalised jointly.
"""
from __future__ import annotations

import math

import numpy as np

from ._cuda import cuda as _numba_cuda

cuda = None  # numba.cuda, bound by the factories below (never at import time)
from .gpu_common import array_type, log_add_coefficients

# Per-sequence sums reduced in every backward step.
SUM_BB, SUM_CC, SUM_LL, SUM_BL, SUM_DC = range(5)  # |back|^2 |carry|^2 |local|^2 back.local |dc|^2
NUM_SUMS = 5


def make_kernels(dtype, tile, threads):
    """Python functions of the lstm kernels for ``dtype``, ``tile`` sequences per block
    and ``threads`` per block (compile-time constants); see :func:`kernel_signatures`."""
    global cuda  # a module global, so that the simulator can swap in its fake module
    cuda = _numba_cuda()
    from numba import float64, from_dtype

    real = from_dtype(np.dtype(dtype))
    S, TPB = tile, threads
    rows = NUM_SUMS * S
    parts = max(1, TPB // rows)
    gate_accumulators = 4 * S  # a named constant: local.array needs a literal size
    coefficients = log_add_coefficients()

    def lstm_forward(w_ih, w_hh_t, b_ih, b_hh, x, h_store, c_store, gates_store, w_in_shared):
        """Grid (E, ceil(B/tile)); w_hh_t is W_hh transposed, (E, H, 4H), so that threads
        of consecutive units read consecutive words. Keeps h_store and c_store[e, b, t] for t = 0..T
        (zero at t = 0) and the activated gates gates_store[e, b, t-1] = (i, f, g, o)
        of step t: BPTT needs all three, and h_{t-1} for dW_hh.

        Dynamic shared memory: [W_hh^T (H*4H) if w_in_shared | h_{t-1}, h_t (2*tile*H)].
        """
        e = cuda.blockIdx.x
        b0 = cuda.blockIdx.y * S
        tid = cuda.threadIdx.x
        B = x.shape[1]
        T = x.shape[2]
        D = x.shape[3]
        H = w_hh_t.shape[1]
        G = 4 * H
        sh = cuda.shared.array(0, real)
        off_h = G * H if w_in_shared else 0
        if w_in_shared:
            for idx in range(tid, G * H, TPB):
                sh[idx] = w_hh_t[e, idx // G, idx % G]
        for idx in range(tid, 2 * S * H, TPB):
            sh[off_h + idx] = 0
        for idx in range(tid, S * H, TPB):
            if b0 + idx // H < B:
                h_store[e, b0 + idx // H, 0, idx % H] = 0
                c_store[e, b0 + idx // H, 0, idx % H] = 0
        cuda.syncthreads()
        acc = cuda.local.array(gate_accumulators, real)
        for t in range(1, T + 1):
            prev = off_h + ((t - 1) % 2) * S * H
            cur = off_h + (t % 2) * S * H
            for j in range(tid, H, TPB):
                # the four gate rows of unit j, written out so that the accumulators
                # stay in registers (a loop over gates left them in local memory)
                bias_i = b_ih[e, j] + b_hh[e, j]
                bias_f = b_ih[e, H + j] + b_hh[e, H + j]
                bias_g = b_ih[e, 2 * H + j] + b_hh[e, 2 * H + j]
                bias_o = b_ih[e, 3 * H + j] + b_hh[e, 3 * H + j]
                for s in range(S):
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
                    acc[S + s] = a_f
                    acc[2 * S + s] = a_g
                    acc[3 * S + s] = a_o
                for k in range(H):
                    if w_in_shared:
                        w_i = sh[k * G + j]
                        w_f = sh[k * G + H + j]
                        w_g = sh[k * G + 2 * H + j]
                        w_o = sh[k * G + 3 * H + j]
                    else:
                        w_i = w_hh_t[e, k, j]
                        w_f = w_hh_t[e, k, H + j]
                        w_g = w_hh_t[e, k, 2 * H + j]
                        w_o = w_hh_t[e, k, 3 * H + j]
                    for s in range(S):
                        hk = sh[prev + s * H + k]
                        acc[s] += w_i * hk
                        acc[S + s] += w_f * hk
                        acc[2 * S + s] += w_g * hk
                        acc[3 * S + s] += w_o * hk
                # pre-activations go through gates_store (this thread's own words) rather
                # than being indexed by s in a loop too large to unroll, which would
                # push the accumulators into local memory
                for s in range(S):
                    if b0 + s < B:
                        gates_store[e, b0 + s, t - 1, j] = acc[s]
                        gates_store[e, b0 + s, t - 1, H + j] = acc[S + s]
                        gates_store[e, b0 + s, t - 1, 2 * H + j] = acc[2 * S + s]
                        gates_store[e, b0 + s, t - 1, 3 * H + j] = acc[3 * S + s]
                for s in range(S):
                    b = b0 + s
                    hv = 0.0  # padding sequences of the last tile stay at zero
                    if b < B:
                        ig = 0.5 * (1.0 + math.tanh(0.5 * gates_store[e, b, t - 1, j]))  # sigmoid
                        fg = 0.5 * (1.0 + math.tanh(0.5 * gates_store[e, b, t - 1, H + j]))
                        gg = math.tanh(gates_store[e, b, t - 1, 2 * H + j])
                        og = 0.5 * (1.0 + math.tanh(0.5 * gates_store[e, b, t - 1, 3 * H + j]))
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
        """Grid (E, ceil(B/tile)). Writes the mantissas da_store[e, b, t-1] of dL/da_t,
        their log-scales da_scale[e, b, t-1], log_h[e, b, t] = ln|dL/dh_t| and
        log_c[e, b, t] = ln|dL/dc_t| (total derivative).

        Dynamic shared memory: [W_hh (4H*H) if w_in_shared | da (tile*4H) |
        back, local, carry (3*tile*H)]. Phases per step as in the rnn kernel.
        """
        e = cuda.blockIdx.x
        b0 = cuda.blockIdx.y * S
        tid = cuda.threadIdx.x
        B = h_store.shape[1]
        T = h_store.shape[2] - 1
        H = h_store.shape[3]
        G = 4 * H
        K = w_out.shape[1]
        steps = dlogits.shape[2]
        sh = cuda.shared.array(0, real)
        off_da = G * H if w_in_shared else 0
        off_back = off_da + S * G
        off_local = off_back + S * H
        off_carry = off_local + S * H
        red = cuda.shared.array((rows, TPB), float64)
        red2 = cuda.shared.array((rows, parts), float64)
        state = cuda.shared.array((S, 5), float64)  # scale, ca, cb, log|mant_h|, log|mant_c|
        if w_in_shared:
            for idx in range(tid, G * H, TPB):
                sh[idx] = w_hh[e, idx // H, idx % H]
        for idx in range(tid, S * G + 3 * S * H, TPB):
            sh[off_da + idx] = 0
        for s in range(tid, S, TPB):
            state[s, 0] = -math.inf
            state[s, 1] = 0.0
            state[s, 2] = 0.0
            state[s, 3] = -math.inf
            state[s, 4] = -math.inf
        cuda.syncthreads()
        acc = cuda.local.array(S, real)
        sums = cuda.local.array(rows, float64)
        for t in range(T + 1, 0, -1):
            for i in range(rows):
                sums[i] = 0.0
            if t <= T:
                # ---- phase 1: total dc, the four gate adjoints, and the carried dc * f
                for j in range(tid, H, TPB):
                    for s in range(S):
                        b = b0 + s
                        dc = 0.0
                        carry = 0.0
                        if b < B:
                            ca = state[s, 1]
                            mh = ca * sh[off_back + s * H + j] + state[s, 2] * sh[off_local + s * H + j]
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
                        sh[off_da + s * G + j] = d_i
                        sh[off_da + s * G + H + j] = d_f
                        sh[off_da + s * G + 2 * H + j] = d_g
                        sh[off_da + s * G + 3 * H + j] = d_o
                        sh[off_carry + s * H + j] = carry  # this thread owns unit j in phase 2 too
                        sums[SUM_DC * S + s] += dc * dc
                for s in range(tid, S, TPB):
                    if b0 + s < B:
                        da_scale[e, b0 + s, t - 1] = state[s, 0]
                        log_h[e, b0 + s, t] = state[s, 0] + state[s, 3]
                cuda.syncthreads()
            # ---- phase 2: back = W_hh^T da, local = W_out^T dlogits of step t-1
            u = t - 1
            has_loss = u == T or (every and u >= 1)
            j_out = steps - 1 if u == T else u - 1
            for k in range(tid, H, TPB):
                for s in range(S):
                    acc[s] = 0
                if t <= T:
                    for r in range(G):
                        w = sh[r * H + k] if w_in_shared else w_hh[e, r, k]
                        for s in range(S):
                            acc[s] += w * sh[off_da + s * G + r]
                for s in range(S):
                    loc = 0.0
                    if has_loss and b0 + s < B:
                        for c in range(K):
                            loc += w_out[e, c, k] * dlogits[e, b0 + s, j_out, c]
                    back = acc[s] + 0.0
                    carry = sh[off_carry + s * H + k] + 0.0
                    sh[off_back + s * H + k] = back
                    sh[off_local + s * H + k] = loc
                    sums[SUM_BB * S + s] += back * back
                    sums[SUM_CC * S + s] += carry * carry
                    sums[SUM_LL * S + s] += loc * loc
                    sums[SUM_BL * S + s] += back * loc
            for i in range(rows):
                red[i, tid] = sums[i]
            cuda.syncthreads()
            for idx in range(tid, rows * parts, TPB):
                row = idx // parts
                q = idx % parts
                total = 0.0
                for i in range(q, TPB, parts):
                    total += red[row, i]
                red2[row, q] = total
            cuda.syncthreads()
            for s in range(tid, S, TPB):
                bb = 0.0
                cc = 0.0
                ll = 0.0
                bl = 0.0
                dcs = 0.0
                for q in range(parts):
                    bb += red2[SUM_BB * S + s, q]
                    cc += red2[SUM_CC * S + s, q]
                    ll += red2[SUM_LL * S + s, q]
                    bl += red2[SUM_BL * S + s, q]
                    dcs += red2[SUM_DC * S + s, q]
                if t <= T and b0 + s < B:
                    log_c[e, b0 + s, t] = state[s, 0] + (0.5 * math.log(dcs) if dcs > 0.0 else -math.inf)
                scale, ca, cb, log_mh, log_mc = coefficients(state[s, 0], bb, cc, ll, bl)
                state[s, 0] = scale
                state[s, 1] = ca
                state[s, 2] = cb
                state[s, 3] = log_mh
                state[s, 4] = log_mc
            cuda.syncthreads()
        for s in range(tid, S, TPB):
            if b0 + s < B:
                log_h[e, b0 + s, 0] = state[s, 0] + state[s, 3]
                log_c[e, b0 + s, 0] = state[s, 0] + state[s, 4]

    return {"lstm_forward": lstm_forward, "lstm_backward": lstm_backward}


def kernel_signatures(dtype):
    """Explicit signatures of :func:`make_kernels`' kernels for ``dtype``."""
    from numba import types

    def f(n):
        return array_type(dtype, n)

    def f64(n):
        return array_type(np.float64, n)

    return {
        "lstm_forward": (f(3), f(3), f(2), f(2), f(4), f(4), f(4), f(4), types.boolean),
        "lstm_backward": (f(3), f(3), f(4), f(4), f(4), f(4), types.boolean,
                          f(4), f64(3), f64(3), f64(3), types.boolean),
    }


def shared_bytes(kernel, dtype, tile, threads, H, w_in_shared):
    """(dynamic, static) shared memory of ``kernel`` in bytes, matching the layouts above."""
    words = {"lstm_forward": 2 * tile * H, "lstm_backward": 7 * tile * H}[kernel]
    words += 4 * H * H if w_in_shared else 0
    static = 0
    if kernel == "lstm_backward":
        rows = NUM_SUMS * tile
        static = 8 * (rows * threads + rows * max(1, threads // rows) + 5 * tile)
    return words * np.dtype(dtype).itemsize, static
