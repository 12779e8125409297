r"""numba.cuda pieces shared by both cells: output layer, log-domain step, weight gradients.

Kernels are built by factories (``make_*``) because their shared-memory sizes and
per-thread register tiles are compile-time constants; the host driver
(:mod:`rnnsim.kernels.gpu`) jits and caches them, and ``tests/test_gpu_ptx.py``
compiles every one of them for sm_90 with :func:`kernel_signatures`.

The math is that of :mod:`rnnsim.reference`; the pieces here are

* ``output_layer``: logits, cross-entropy and dL/dlogits of every (sequence, step)
  that carries a loss term, fully parallel, with a per-block sum of the losses;
* ``log_add_coefficients``: one log-domain BPTT update, done by one thread per
  sequence from four block-reduced sums (see its docstring);
* ``recurrence_device_functions``: the steps that both cells' recurrence kernels
  share (W_hh staging, zeroing, the backward projection, the loss term, the
  block reduction of per-sequence sums and the log-domain state update);
* ``scale_weights``: S* = max log-scale of a network and the per-(b, t) weights
  exp(s_bt - S*);
* ``weight_gradient_gemm``: sum_n A[n, r] * w_n * [h_n, x_n, 1][c], a per-network
  batched GEMM over n = (b, t), tiled in shared memory, accumulated in float64.
"""
from __future__ import annotations

import math
from functools import lru_cache
from types import SimpleNamespace

import numpy as np

from ._cuda import cuda as _numba_cuda

cuda = None  # numba.cuda, bound by the factories below (never at import time)

# Weight-gradient GEMM: 16 x 16 threads, each owning a 4 x 4 register tile of the
# 64 x 64 output tile; 16 rows of n per shared-memory stage.
GEMM_THREADS = 16
GEMM_MICRO = 4
GEMM_TILE = GEMM_THREADS * GEMM_MICRO
GEMM_DEPTH = 16


def array_type(dtype, ndim):
    """The numba type of a C-contiguous device array (for explicit signatures)."""
    from numba import from_dtype, types

    return types.Array(from_dtype(np.dtype(dtype)), ndim, "C")


def signature_array_types(dtype):
    """(f, f64): ``f(n)`` is the n-d array type of ``dtype``, ``f64(n)`` that of float64."""
    return (lambda n: array_type(dtype, n)), (lambda n: array_type(np.float64, n))


def backward_static_bytes(num_sums, state_columns, tile, threads):
    """Static shared memory of a backward kernel: the float64 reduction buffers
    (rows, threads) and (rows, parts) of :func:`recurrence_device_functions` and
    the per-sequence state (tile, state_columns)."""
    rows = num_sums * tile
    return 8 * (rows * threads + rows * max(1, threads // rows) + state_columns * tile)


@lru_cache(maxsize=None)
def log_add_coefficients():
    r"""Device function: one renormalise + add-local-term step of log-domain BPTT.

    Given the old log-scale ``scale`` and, over the sequence's H units, the sums
    ``bb = |back|^2``, ``cc = |carry|^2``, ``ll = |local|^2`` and ``bl = back . local``,
    where ``back = W_hh^T da`` and ``carry`` (lstm) are the propagated mantissas and
    ``local`` the new loss term's gradient (ordinary scale), it returns
    ``(new_scale, ca, cb, log_mh, log_mc)`` such that the new unit mantissas are
    ``mant_h = ca * back + cb * local`` and ``mant_c = ca * carry``, with
    ``log_mh = ln|mant_h|`` and ``log_mc = ln|mant_c|``.

    Notes
    -----
    With :math:`n_1 = \sqrt{bb + cc}`, :math:`s_1 = s + \ln n_1`,
    :math:`s_l = \ln\sqrt{ll}` and :math:`m = \max(s_1, s_l)`:
    :math:`\alpha = e^{s_1 - m}/n_1`, :math:`\beta = e^{s_l - m}/\sqrt{ll}`,
    :math:`n_2^2 = \alpha^2 (bb + cc) + \beta^2 ll + 2\alpha\beta\, bl`,
    new scale :math:`m + \ln n_2`, :math:`c_a = \alpha/n_2`, :math:`c_b = \beta/n_2`.
    This is ``_renormalise`` followed by ``_log_add`` of the reference, with the
    norm of the combined vector taken from the sums instead of a second pass.
    """
    # register_jitable, not cuda.jit(device=True): a device dispatcher asks the
    # driver for the compute capability, which breaks compile_ptx without a GPU.
    from numba.cuda.extending import register_jitable

    @register_jitable
    def coefficients(scale, bb, cc, ll, bl):
        joint = bb + cc
        s1 = -math.inf
        n1 = 1.0
        if joint > 0.0 and scale > -math.inf:
            n1 = math.sqrt(joint)
            s1 = scale + math.log(n1)
        sl = -math.inf
        nl = 1.0
        if ll > 0.0:
            nl = math.sqrt(ll)
            sl = math.log(nl)
        m = max(s1, sl)
        if m == -math.inf:
            return -math.inf, 0.0, 0.0, -math.inf, -math.inf
        alpha = 0.0
        if s1 > -math.inf:
            alpha = math.exp(s1 - m) / n1
        beta = 0.0
        if sl > -math.inf:
            beta = math.exp(sl - m) / nl
        n2_sq = alpha * alpha * joint + beta * beta * ll + 2.0 * alpha * beta * bl
        if not n2_sq > 0.0:  # exact cancellation: the adjoint is zero
            return -math.inf, 0.0, 0.0, -math.inf, -math.inf
        n2 = math.sqrt(n2_sq)
        ca = alpha / n2
        cb = beta / n2
        mh_sq = ca * ca * bb + cb * cb * ll + 2.0 * ca * cb * bl
        mc_sq = ca * ca * cc
        log_mh = 0.5 * math.log(mh_sq) if mh_sq > 0.0 else -math.inf
        log_mc = 0.5 * math.log(mc_sq) if mc_sq > 0.0 else -math.inf
        return m + math.log(n2), ca, cb, log_mh, log_mc

    return coefficients


# Per-sequence sums that every backward step reduces over the block, as rows
# ``SUM_* * tile + s`` of the reduction buffers; the lstm appends its own after these.
SUM_BB, SUM_LL, SUM_BL = range(3)  # |back|^2, |local|^2, back . local

# Columns of the backward kernels' per-sequence state (shared memory, float64);
# STATE_LOG_MC exists only in the lstm's state.
STATE_SCALE, STATE_CA, STATE_CB, STATE_LOG_MH, STATE_LOG_MC = range(5)


@lru_cache(maxsize=None)
def recurrence_device_functions(num_sums, tile, threads):
    r"""Device functions that the rnn and lstm recurrence kernels share.

    Parameters
    ----------
    num_sums : int
        Per-sequence sums reduced in every backward step (rows ``num_sums * tile``).
    tile, threads : int
        Sequences and threads per block, compile-time constants of the kernels.

    Returns
    -------
    types.SimpleNamespace
        The device functions by name, and ``rows`` and ``parts``: the reduction
        buffers are (rows, threads) and (rows, parts). Kernels bind the functions to
        local names (numba cannot type attribute access on a Python object).

    Notes
    -----
    The block-wide functions take ``tid``, the thread index, and stride by the block
    size. None of them contains a barrier or refers to ``cuda``: every
    ``syncthreads`` stays in the kernels, where it is plain that all threads reach
    it, and the simulator swaps its per-launch ``cuda`` module only into the
    kernels' own globals. They are ``register_jitable`` for the reason given in
    :func:`log_add_coefficients`; NVVM inlines them (the sm_90 PTX has no calls),
    so shared and local arrays passed in keep their address spaces.
    """
    from numba.cuda.extending import register_jitable

    S, TPB = tile, threads
    rows = num_sums * S
    parts = max(1, TPB // rows)  # threads per sum in the first reduction stage
    coefficients = log_add_coefficients()

    @register_jitable
    def stage_matrix(sh, w, e, tid):
        """sh[r * C + c] = w[e, r, c]: network e's (R, C) matrix, row-major, in shared memory."""
        C = w.shape[2]
        for idx in range(tid, w.shape[1] * C, TPB):
            sh[idx] = w[e, idx // C, idx % C]

    @register_jitable
    def zero_shared(sh, start, count, tid):
        """sh[start:start + count] = 0."""
        for idx in range(tid, count, TPB):
            sh[start + idx] = 0

    @register_jitable
    def zero_first_step(store, e, b0, tid):
        """store[e, b, 0] = 0 for the real sequences b of the tile starting at b0."""
        B = store.shape[1]
        H = store.shape[3]
        for idx in range(tid, S * H, TPB):
            if b0 + idx // H < B:
                store[e, b0 + idx // H, 0, idx % H] = 0

    @register_jitable
    def init_state(state, tid):
        """The zero adjoint: log-scale and log-norms -inf, coefficients 0."""
        for s in range(tid, S, TPB):
            state[s, STATE_SCALE] = -math.inf
            state[s, STATE_CA] = 0.0
            state[s, STATE_CB] = 0.0
            for col in range(STATE_LOG_MH, state.shape[1]):
                state[s, col] = -math.inf

    @register_jitable
    def record_step(state, da_scale, log_h, e, b0, t, tid):
        """da_scale[e, b, t-1] = s_b and log_h[e, b, t] = s_b + ln|mant_h| (real sequences)."""
        B = log_h.shape[1]
        for s in range(tid, S, TPB):
            if b0 + s < B:
                da_scale[e, b0 + s, t - 1] = state[s, STATE_SCALE]
                log_h[e, b0 + s, t] = state[s, STATE_SCALE] + state[s, STATE_LOG_MH]

    @register_jitable
    def record_log_norm(state, col, out, e, b0, t, tid):
        """out[e, b, t] = s_b + state[s, col] (a log-norm column) for the real sequences."""
        B = out.shape[1]
        for s in range(tid, S, TPB):
            if b0 + s < B:
                out[e, b0 + s, t] = state[s, STATE_SCALE] + state[s, col]

    @register_jitable
    def loss_step(t, T, steps, every):
        """(has_loss, j): does step u = t - 1 carry a loss term, and its output index j.

        The last step always does (it is the only one for loss="last"); with
        loss="every", steps 1..T do and output j = u - 1 reads h_u.
        """
        u = t - 1
        has_loss = u == T or (every and u >= 1)
        j = steps - 1 if u == T else u - 1
        return has_loss, j

    @register_jitable
    def back_projection(acc, sh, w_hh, off_da, e, k, w_in_shared, active):
        """acc[s] = (W_hh^T da_s)[k] for the tile, or 0 where not ``active``.

        W_hh is (R, H) (R = H for the rnn, 4H for the lstm); da_s lies at
        sh[off_da + s * R:][:R] and W_hh at sh[0:R * H] when ``w_in_shared``.
        """
        R = w_hh.shape[1]
        H = w_hh.shape[2]
        for s in range(S):
            acc[s] = 0
        if active:
            for r in range(R):
                w = sh[r * H + k] if w_in_shared else w_hh[e, r, k]
                for s in range(S):
                    acc[s] += w * sh[off_da + s * R + r]

    @register_jitable
    def local_term(w_out, dlogits, has_loss, e, b, j, k):
        """(W_out^T dlogits[e, b, j])[k], the new loss term's dL/dh; 0 without one
        or for a padding sequence b >= B."""
        loc = 0.0
        if has_loss and b < dlogits.shape[1]:
            for c in range(w_out.shape[1]):
                loc += w_out[e, c, k] * dlogits[e, b, j, c]
        return loc

    @register_jitable
    def store_back_local(sh, off_back, off_local, H, sums, s, k, back, loc):
        """Keep unit k of back and local for sequence s, and add to its three pair sums."""
        sh[off_back + s * H + k] = back
        sh[off_local + s * H + k] = loc
        sums[SUM_BB * S + s] += back * back
        sums[SUM_LL * S + s] += loc * loc
        sums[SUM_BL * S + s] += back * loc

    @register_jitable
    def publish_sums(sums, red, tid):
        """red[:, tid] = this thread's per-sequence sums; red is (rows, TPB)."""
        for i in range(rows):
            red[i, tid] = sums[i]

    @register_jitable
    def reduce_stage1(red, red2, tid):
        """Block reduction, stage 1 (after a barrier on ``publish_sums``): red2[row, q] =
        the sum of red[row, q::parts], ``parts`` threads per row; red2 is (rows, parts)."""
        for idx in range(tid, rows * parts, TPB):
            row = idx // parts
            q = idx % parts
            total = 0.0
            for i in range(q, TPB, parts):
                total += red[row, i]
            red2[row, q] = total

    @register_jitable
    def sequence_sum(red2, row):
        """Block reduction, stage 2 (after a barrier on ``reduce_stage1``): the total of
        one row, i.e. one sum of one sequence."""
        total = 0.0
        for q in range(parts):
            total += red2[row, q]
        return total

    @register_jitable
    def log_add_update(red2, state, s, cc):
        """Sequence s's log-domain step (:func:`log_add_coefficients`) from its reduced
        pair sums and |carry|^2 = ``cc``; updates its state row in place."""
        bb = sequence_sum(red2, SUM_BB * S + s)
        ll = sequence_sum(red2, SUM_LL * S + s)
        bl = sequence_sum(red2, SUM_BL * S + s)
        scale, ca, cb, log_mh, log_mc = coefficients(state[s, STATE_SCALE], bb, cc, ll, bl)
        state[s, STATE_SCALE] = scale
        state[s, STATE_CA] = ca
        state[s, STATE_CB] = cb
        state[s, STATE_LOG_MH] = log_mh
        if state.shape[1] > STATE_LOG_MC:  # the lstm also carries dL/dc
            state[s, STATE_LOG_MC] = log_mc

    return SimpleNamespace(
        stage_matrix=stage_matrix, zero_shared=zero_shared, zero_first_step=zero_first_step,
        init_state=init_state, record_step=record_step, record_log_norm=record_log_norm,
        loss_step=loss_step, back_projection=back_projection, local_term=local_term,
        store_back_local=store_back_local, publish_sums=publish_sums, reduce_stage1=reduce_stage1,
        sequence_sum=sequence_sum, log_add_update=log_add_update, rows=rows, parts=parts)


def make_common_kernels(threads):
    """Python functions of the cell-independent kernels for ``threads`` per block.

    Returns a dict name -> function (not yet jitted); see :func:`kernel_signatures`.
    """
    global cuda  # a module global, so that the simulator can swap in its fake module
    cuda = _numba_cuda()
    from numba import float64

    TPB = threads

    def output_layer(w_out, b_out, h_store, h_offset, targets, inv_count, dlogits, ce_partial):
        """Grid (E, ceil(B*S/TPB)); one thread per (sequence b, output step j).

        Output step j reads h_store[e, b, j + h_offset] (h_offset = T for
        loss="last", 1 for "every"); writes dL/dlogits (already divided by the
        number of loss terms) and the block's sum of cross-entropies.
        """
        e = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        n = cuda.blockIdx.y * TPB + tid
        B = dlogits.shape[1]
        steps = dlogits.shape[2]
        K = dlogits.shape[3]
        H = h_store.shape[3]
        ce_sum = cuda.shared.array(TPB, float64)
        ce = 0.0
        if n < B * steps:
            b = n // steps
            j = n % steps
            t = j + h_offset
            z_max = -math.inf
            for k in range(K):
                z = b_out[e, k] + 0.0  # promote to float64 for the softmax
                for u in range(H):
                    z += w_out[e, k, u] * h_store[e, b, t, u]
                dlogits[e, b, j, k] = z  # logits first, turned into gradients below
                z_max = max(z_max, z)
            total = 0.0
            for k in range(K):
                total += math.exp(dlogits[e, b, j, k] - z_max)
            log_z = math.log(total)
            tgt = targets[e, b, j]
            ce = log_z + z_max - dlogits[e, b, j, tgt]
            for k in range(K):
                p = math.exp(dlogits[e, b, j, k] - z_max - log_z)
                if k == tgt:
                    p -= 1.0
                dlogits[e, b, j, k] = p * inv_count
        ce_sum[tid] = ce
        cuda.syncthreads()
        if tid == 0:  # once per block, off the critical path: a serial sum is fine
            total = 0.0
            for i in range(TPB):
                total += ce_sum[i]
            ce_partial[e, cuda.blockIdx.y] = total

    def scale_weights(da_scale, top, row_weight):
        """Grid (E,): S*[e] = max_{b,t} s_bt and row_weight = exp(s_bt - S*) (0 for -inf)."""
        e = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        B = da_scale.shape[1]
        T = da_scale.shape[2]
        partial = cuda.shared.array(TPB, float64)
        best = cuda.shared.array(1, float64)
        m = -math.inf
        for n in range(tid, B * T, TPB):
            m = max(m, da_scale[e, n // T, n % T])
        partial[tid] = m
        cuda.syncthreads()
        if tid == 0:
            for i in range(TPB):
                m = max(m, partial[i])
            best[0] = m
            top[e] = m
        cuda.syncthreads()
        m = best[0]
        for n in range(tid, B * T, TPB):
            s = da_scale[e, n // T, n % T]
            w = 0.0
            if s > -math.inf:
                w = math.exp(s - m)
            row_weight[e, n // T, n % T] = w

    def weight_gradient_gemm(a, row_weight, weighted, h_store, h_offset, x, use_x, out):
        """Grid (E, ceil(R/64), ceil(C/64)), block (16, 16).

        out[e, r, c] = sum_{b,j} a[e,b,j,r] * w[e,b,j] * v[c] with
        v = (h_store[e, b, j + h_offset, :], x[e, b, j, :] if use_x, 1), so one launch
        gives the weight, input-weight and bias gradients of one layer.
        """
        e = cuda.blockIdx.x
        r0 = cuda.blockIdx.y * GEMM_TILE
        c0 = cuda.blockIdx.z * GEMM_TILE
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * GEMM_THREADS + tx
        B = a.shape[1]
        steps = a.shape[2]
        R = a.shape[3]
        H = h_store.shape[3]
        Dx = x.shape[3] if use_x else 0
        C = H + Dx + 1
        N = B * steps
        a_tile = cuda.shared.array((GEMM_DEPTH, GEMM_TILE), float64)
        v_tile = cuda.shared.array((GEMM_DEPTH, GEMM_TILE), float64)
        acc = cuda.local.array((GEMM_MICRO, GEMM_MICRO), float64)
        a_reg = cuda.local.array(GEMM_MICRO, float64)
        for i in range(GEMM_MICRO):
            for j in range(GEMM_MICRO):
                acc[i, j] = 0.0
        for n0 in range(0, N, GEMM_DEPTH):
            for idx in range(tid, GEMM_DEPTH * GEMM_TILE, GEMM_THREADS * GEMM_THREADS):
                nn = idx // GEMM_TILE
                q = idx % GEMM_TILE
                n = n0 + nn
                b = n // steps
                j = n % steps
                av = 0.0
                vv = 0.0
                if n < N:
                    r = r0 + q
                    if r < R:
                        av = a[e, b, j, r] + 0.0
                        if weighted:
                            av *= row_weight[e, b, j]
                    c = c0 + q
                    if c < H:
                        vv = h_store[e, b, j + h_offset, c] + 0.0
                    elif c < H + Dx:
                        vv = x[e, b, j, c - H] + 0.0
                    elif c == H + Dx:
                        vv = 1.0
                a_tile[nn, q] = av
                v_tile[nn, q] = vv
            cuda.syncthreads()
            for nn in range(GEMM_DEPTH):
                # strided register tile: neighbouring threads read neighbouring words
                for i in range(GEMM_MICRO):
                    a_reg[i] = a_tile[nn, ty + GEMM_THREADS * i]
                for j in range(GEMM_MICRO):
                    vv = v_tile[nn, tx + GEMM_THREADS * j]
                    for i in range(GEMM_MICRO):
                        acc[i, j] += a_reg[i] * vv
            cuda.syncthreads()
        for i in range(GEMM_MICRO):
            r = r0 + ty + GEMM_THREADS * i
            for j in range(GEMM_MICRO):
                c = c0 + tx + GEMM_THREADS * j
                if r < R and c < C:
                    out[e, r, c] = acc[i, j]

    return {"output_layer": output_layer, "scale_weights": scale_weights,
            "weight_gradient_gemm": weight_gradient_gemm}


def common_signatures(dtype):
    """Explicit signatures of :func:`make_common_kernels`' kernels for ``dtype``."""
    from numba import types

    (f, f64), i64 = signature_array_types(dtype), types.int64
    return {
        "output_layer": (f(3), f(2), f(4), i64, array_type(np.int64, 3), types.float64, f(4), f64(2)),
        "scale_weights": (f64(3), f64(1), f64(3)),
        "weight_gradient_gemm": (f(4), f64(3), types.boolean, f(4), i64, f(4), types.boolean, f64(3)),
    }
