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
* ``scale_weights``: S* = max log-scale of a network and the per-(b, t) weights
  exp(s_bt - S*);
* ``weight_gradient_gemm``: sum_n A[n, r] * w_n * [h_n, x_n, 1][c], a per-network
  batched GEMM over n = (b, t), tiled in shared memory, accumulated in float64.
"""
from __future__ import annotations

import math
from functools import lru_cache

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

    f, f64, i64 = (lambda n: array_type(dtype, n)), (lambda n: array_type(np.float64, n)), types.int64
    return {
        "output_layer": (f(3), f(2), f(4), i64, array_type(np.int64, 3), types.float64, f(4), f64(2)),
        "scale_weights": (f64(3), f64(1), f64(3)),
        "weight_gradient_gemm": (f(4), f64(3), types.boolean, f(4), i64, f(4), types.boolean, f64(3)),
    }
