r"""numba.cuda kernels of the GRU: forward, then log-domain BPTT.

The math is stated in :mod:`rnnsim.cells.gru` (torch.nn.GRU: gate order (r, z, n),
b_hn inside r ⊙ (W_hn h + b_hn)); :mod:`rnnsim.kernels.cpu_gru` is the CPU twin.
Same block layout and module interface as :mod:`rnnsim.kernels.gpu_rnn` and
:mod:`rnnsim.kernels.gpu_lstm`: one block runs one network for a tile of ``TILE``
sequences over all T steps; thread u owns hidden units u, u + TPB, ..., and for each
of them all three gate rows (r, z, n) of every sequence in the tile, so the cell
update needs no extra barrier. W_hh (GH x H, GH = 3H rows of the G = 3 gate blocks)
sits in dynamic shared memory when ``w_in_shared``, else it is read from global memory.

The biases do not fold, so the n block's input-side and recurrent-side adjoints
differ: the backward writes the input-side rows (δa^r, δa^z, δa^n) for W_ih and b_ih,
and beside them δu = δa^n ⊙ r, the n block of the recurrent-side rows
(δa^r, δa^z, δu) for W_hh and b_hh (:func:`recurrent_only_rows`). The driver's second
weight-gradient GEMM turns δu into the n rows of dW_hh and db_hh, as the CPU does.

Notes
-----
Forward: :math:`r = \sigma(W_{ir} x + b_{ir} + W_{hr} h_{t-1} + b_{hr})`, z likewise,
:math:`u = W_{hn} h_{t-1} + b_{hn}`, :math:`n = \tanh(W_{in} x + b_{in} + r \odot u)`,
:math:`h_t = (1 - z) \odot n + z \odot h_{t-1}`.
Backward, per sequence, with the adjoint :math:`e^{s} m` (unit :math:`m`):
:math:`\delta a^n = m (1-z)(1-n^2)`, :math:`\delta a^z = m (h_{t-1} - n) z (1-z)`,
:math:`\delta a^r = \delta a^n u\, r(1-r)`, :math:`\delta u = \delta a^n r`, then
:math:`m \leftarrow W_{hh}^T (\delta a^r, \delta a^z, \delta u) + z \odot m` plus the
loss term of step t-1, renormalised in log form (identity 1 of :mod:`rnnsim.logdomain`):
the direct path :math:`z \odot m` is part of the propagated mantissa ("back") and
enters the renormalisation like the W_hhᵀ term.
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
G = 3  # gate blocks (r, z, n)


def make_kernels(dtype, tile, threads):
    """Python functions ``{"forward": gru_forward, "backward": gru_backward}`` for
    ``dtype``, ``tile`` sequences per block and ``threads`` per block (compile-time
    constants); see :func:`kernel_signatures`."""
    global cuda  # a module global, so that the simulator can swap in its fake module
    cuda = _numba_cuda()
    from numba import float64, from_dtype

    real = from_dtype(np.dtype(dtype))
    TILE, TPB = tile, threads
    gate_accumulators = 4 * TILE  # r, z, the input side of n, u: local.array needs a literal size
    dev = recurrence_device_functions(NUM_SUMS, STATE_COLUMNS, TILE, TPB)
    rows, f64_words = dev.rows, dev.words
    base = f64_words * 8 // np.dtype(dtype).itemsize  # first word of the dtype region
    # local names: numba cannot type attribute access on the namespace
    stage_matrix, zero_shared, zero_first_step = dev.stage_matrix, dev.zero_shared, dev.zero_first_step
    init_state, state_value, record_step = dev.init_state, dev.state_value, dev.record_step
    record_log_norm, loss_step, back_projection = dev.record_log_norm, dev.loss_step, dev.back_projection
    local_term, store_back_local, publish_sums = dev.local_term, dev.store_back_local, dev.publish_sums
    reduce_stage1, log_add_update = dev.reduce_stage1, dev.log_add_update

    def gru_forward(w_ih, w_hh_t, b_ih, b_hh, x, h_store, gates_store, u_store, w_in_shared):
        """Grid (ceil(B/tile), E); w_hh_t is W_hh transposed, (E, H, 3H), so that threads
        of consecutive units read consecutive words.

        Keeps for the backward: h_store[e, b, t] = h_t for t = 0..T (h_0 = 0; the readout
        reads h_t, the backward h_{t-1} for δa^z and dW_hh), the activated gates
        gates_store[e, b, t-1] = (r, z, n) of step t (every gate adjoint and the direct
        path z ⊙ m need them), and u_store[e, b, t-1] = u = W_hn h_{t-1} + b_hn (for δa^r).

        Dynamic shared memory: [W_hh^T (H*3H) if w_in_shared | h_{t-1}, h_t (2*tile*H)].
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
        cuda.syncthreads()
        # acc[g * TILE + s] for sequence s: g = 0, 1 the whole pre-activations of r and z,
        # then (in place) the gates; g = 2 the input side of n, then n; g = 3 u
        acc = cuda.local.array(gate_accumulators, real)
        for t in range(1, T + 1):
            prev = off_h + ((t - 1) % 2) * TILE * H  # double buffer: one barrier per step
            cur = off_h + (t % 2) * TILE * H
            for j in range(tid, H, TPB):
                # written out per gate so that the accumulators stay in registers (see gpu_lstm)
                bias_r = b_ih[e, j] + b_hh[e, j]
                bias_z = b_ih[e, H + j] + b_hh[e, H + j]
                bias_n = b_ih[e, 2 * H + j]
                bias_u = b_hh[e, 2 * H + j]  # b_hn stays inside r ⊙ (.): it does not fold
                for s in range(TILE):
                    a_r = bias_r
                    a_z = bias_z
                    a_n = bias_n
                    if b0 + s < B:
                        for d in range(D):
                            xv = x[e, b0 + s, t - 1, d]
                            a_r += w_ih[e, j, d] * xv
                            a_z += w_ih[e, H + j, d] * xv
                            a_n += w_ih[e, 2 * H + j, d] * xv
                    acc[s] = a_r
                    acc[TILE + s] = a_z
                    acc[2 * TILE + s] = a_n
                    acc[3 * TILE + s] = bias_u
                for k in range(H):
                    if w_in_shared:
                        w_r = sh[k * GH + j]
                        w_z = sh[k * GH + H + j]
                        w_u = sh[k * GH + 2 * H + j]
                    else:
                        w_r = w_hh_t[e, k, j]
                        w_z = w_hh_t[e, k, H + j]
                        w_u = w_hh_t[e, k, 2 * H + j]
                    for s in range(TILE):
                        hk = sh[prev + s * H + k]
                        acc[s] += w_r * hk
                        acc[TILE + s] += w_z * hk
                        acc[3 * TILE + s] += w_u * hk
                for s in range(TILE):
                    acc[s] = 0.5 * (1.0 + math.tanh(0.5 * acc[s]))  # r = sigmoid
                for s in range(TILE):
                    acc[TILE + s] = 0.5 * (1.0 + math.tanh(0.5 * acc[TILE + s]))  # z
                for s in range(TILE):
                    acc[2 * TILE + s] = math.tanh(acc[2 * TILE + s] + acc[s] * acc[3 * TILE + s])  # n
                for s in range(TILE):
                    b = b0 + s
                    hv = 0.0  # padding sequences of the last tile stay at zero
                    if b < B:
                        rg = acc[s]
                        zg = acc[TILE + s]
                        ng = acc[2 * TILE + s]
                        hv = (1.0 - zg) * ng + zg * sh[prev + s * H + j]
                        h_store[e, b, t, j] = hv
                        gates_store[e, b, t - 1, j] = rg
                        gates_store[e, b, t - 1, H + j] = zg
                        gates_store[e, b, t - 1, 2 * H + j] = ng
                        u_store[e, b, t - 1, j] = acc[3 * TILE + s]
                    sh[cur + s * H + j] = hv
            cuda.syncthreads()

    def gru_backward(w_hh, w_out, h_store, gates_store, u_store, dlogits, every,
                     da_store, du_store, da_scale, log_h, w_in_shared):
        """Grid (ceil(B/tile), E). Writes the input-side rows da_store[e, b, t-1] =
        (δa^r, δa^z, δa^n) of step t, the n block of the recurrent-side rows
        du_store[e, b, t-1] = δu (mantissas, both at the log-scale da_scale[e, b, t-1]),
        and log_h[e, b, t] = ln|dL/dh_t|.

        Dynamic shared memory: [float64 reduction buffers and state
        (:func:`~rnnsim.kernels.gpu_recurrence.backward_f64_layout`) | W_hh (3H*H) if
        w_in_shared | recurrent-side rows (δa^r, δa^z, δu) (tile*3H) | back, local
        (2*tile*H)]. Phases per step as in the rnn kernel; phase 1 leaves the direct
        path z ⊙ m in ``back``, where the same thread adds W_hh^T (δa^r, δa^z, δu) in phase 2.
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
        if w_in_shared:
            stage_matrix(sh, base, w_hh, e, tid)
        zero_shared(sh, off_da, TILE * GH + 2 * TILE * H, tid)
        init_state(sh64, tid)
        cuda.syncthreads()
        acc = cuda.local.array(TILE, real)
        sums = cuda.local.array(rows, float64)
        # t = T + 1 only brings in the loss term of step T (the rows and back are still zero)
        for t in range(T + 1, 0, -1):
            if t <= T:
                # ---- phase 1: the gate adjoints of step t and the direct path z * m
                for j in range(tid, H, TPB):
                    for s in range(TILE):
                        b = b0 + s
                        d_r = 0.0
                        d_z = 0.0
                        d_u = 0.0
                        direct = 0.0
                        if b < B:
                            mh = (state_value(sh64, s, STATE_CA) * sh[off_back + s * H + j]
                                  + state_value(sh64, s, STATE_CB) * sh[off_local + s * H + j])
                            rg = gates_store[e, b, t - 1, j]
                            zg = gates_store[e, b, t - 1, H + j]
                            ng = gates_store[e, b, t - 1, 2 * H + j]
                            d_n = mh * (1.0 - zg) * (1.0 - ng * ng)
                            d_z = mh * (h_store[e, b, t - 1, j] - ng) * zg * (1.0 - zg)
                            d_r = d_n * u_store[e, b, t - 1, j] * rg * (1.0 - rg)
                            d_u = d_n * rg
                            direct = zg * mh
                            da_store[e, b, t - 1, j] = d_r
                            da_store[e, b, t - 1, H + j] = d_z
                            da_store[e, b, t - 1, 2 * H + j] = d_n
                            du_store[e, b, t - 1, j] = d_u
                        sh[off_da + s * GH + j] = d_r
                        sh[off_da + s * GH + H + j] = d_z
                        sh[off_da + s * GH + 2 * H + j] = d_u
                        sh[off_back + s * H + j] = direct  # this thread owns unit j in phase 2 too
                record_step(sh64, da_scale, log_h, e, b0, t, tid)
                cuda.syncthreads()
            # ---- phase 2: back = W_hh^T (δa^r, δa^z, δu) + z * m, local = W_out^T dlogits of step t-1
            has_loss, j_out = loss_step(t, T, steps, every)
            for i in range(rows):
                sums[i] = 0.0
            for k in range(tid, H, TPB):
                back_projection(acc, sh, base, w_hh, off_da, e, k, w_in_shared, t <= T)
                for s in range(TILE):
                    loc = local_term(w_out, dlogits, has_loss, e, b0 + s, j_out, k)
                    back = acc[s] + sh[off_back + s * H + k]  # in the dtype, as it is stored
                    store_back_local(sh, off_back, off_local, H, sums, s, k, back + 0.0, loc)
            # ---- block reduction of the per-sequence sums: stage 1, `parts` threads per row
            publish_sums(sums, sh64, tid)
            cuda.syncthreads()
            reduce_stage1(sh64, tid)
            cuda.syncthreads()
            # ---- the log-domain update, one thread per sequence
            for s in range(tid, TILE, TPB):
                log_add_update(sh64, s, 0.0)  # the direct path is inside back, not carried apart
            cuda.syncthreads()
        record_log_norm(sh64, STATE_LOG_MH, log_h, e, b0, 0, tid)

    return {"forward": gru_forward, "backward": gru_backward}


def kernel_signatures(dtype):
    """Explicit signatures of :func:`make_kernels`' kernels for ``dtype``."""
    from numba import types

    f, f64 = signature_array_types(dtype)
    return {
        "forward": (f(3), f(3), f(2), f(2), f(4), f(4), f(4), f(4), types.boolean),
        "backward": (f(3), f(3), f(4), f(4), f(4), f(4), types.boolean,
                     f(4), f(4), f64(3), f64(3), types.boolean),
    }


def dynamic_shared_bytes(role, dtype, tile, threads, H, w_in_shared):
    """Dynamic shared memory of the ``role`` ("forward"/"backward") kernel, in bytes,
    matching the layouts in the kernels' docstrings (pure arithmetic, no numba)."""
    words = {"forward": 2 * tile * H, "backward": G * tile * H + 2 * tile * H}[role]
    words += G * H * H if w_in_shared else 0
    nbytes = words * np.dtype(dtype).itemsize
    if role == "backward":
        nbytes += 8 * backward_f64_layout(NUM_SUMS, STATE_COLUMNS, tile, threads).words
    return nbytes


def recurrent_only_rows(H):
    """The rows of W_hh and b_hh whose adjoints differ from the input side's: the n block,
    whose recurrent-side row is δu = δa^n ⊙ r (the backward writes it apart)."""
    return slice(2 * H, 3 * H)


def activation_shapes(B, T, H):
    """Per network, the device arrays that the forward writes and the backward reads,
    in the kernels' argument order: h_store (h_0 = 0 included), the activated gates
    (r, z, n) and u = W_hn h_{t-1} + b_hn of every step."""
    return {"h": (B, T + 1, H), "gates": (B, T, G * H), "u": (B, T, H)}


def forward_args(params, x, acts):
    """Arguments of the forward kernel before ``w_in_shared`` (device arrays)."""
    return (params["weight_ih_l0"], params["weight_hh_t"], params["bias_ih_l0"], params["bias_hh_l0"],
            x, acts["h"], acts["gates"], acts["u"])


def backward_args(params, acts, dlogits, every, da, da_hh, da_scale, profiles):
    """Arguments of the backward kernel before ``w_in_shared``; ``da`` takes the
    input-side rows, ``da_hh`` the rows of :func:`recurrent_only_rows` (δu), and
    ``profiles`` maps each state component to its (E, B, T+1) log-norm output."""
    return (params["weight_hh_l0"], params["weight_out"], acts["h"], acts["gates"], acts["u"], dlogits,
            every, da, da_hh, da_scale, profiles["h"])
