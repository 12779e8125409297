r"""numba.cuda kernels that every cell shares: output layer, S* weights, weight gradients.

Kernels are built by factories (``make_*``) because their shared-memory sizes and
per-thread register tiles are compile-time constants; the host driver
(:mod:`rnnsim.kernels.gpu`) jits and caches them, and the GPU tests compile every
one of them for sm_90 with the signatures of :func:`common_signatures`.

The math is that of :mod:`rnnsim.reference`; the kernels here are

* ``output_layer``: logits, cross-entropy and dL/dlogits of every (sequence, step)
  that carries a loss term, fully parallel, with a per-block sum of the losses;
* ``scale_weights``: identity 2 of :mod:`rnnsim.logdomain`: S* = the largest
  log-scale of a network and the weights exp(s_bt - S*), with the same cutoff as
  :func:`rnnsim.logdomain.relative_weights`;
* ``weight_gradient_gemm``: sum_n A[n, r] * w_n * [h_n, x_n, 1][c], a per-network
  batched GEMM over n = (b, t), tiled in shared memory, accumulated in float64.

The recurrence kernels' shared device functions are in
:mod:`rnnsim.kernels.gpu_recurrence`. Grids put the long axis (pairs of sequence and
step, GEMM row tiles) on x, which allows 2^31 - 1 blocks, and the network on the last
axis; the driver's chunks hold at most 65,535 networks (the y and z limit), see
:mod:`rnnsim.kernels.gpu_launch`.
"""
from __future__ import annotations

import math

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


def block_threads(kernel, threads):
    """Threads per block of a common kernel when the others run ``threads`` (its launch bound)."""
    return GEMM_THREADS * GEMM_THREADS if kernel == "weight_gradient_gemm" else threads


def common_static_bytes(kernel, threads):
    """Static shared memory of a common kernel as declared below (the planner's estimate
    before compiling; the compiled kernel's own figure replaces it)."""
    return {"output_layer": 8 * threads, "scale_weights": 8 * threads + 8,
            "weight_gradient_gemm": 2 * 8 * GEMM_DEPTH * GEMM_TILE}[kernel]


def make_common_kernels(threads):
    """Python functions of the cell-independent kernels for ``threads`` per block.

    Returns a dict name -> function (not yet jitted); see :func:`common_signatures`.
    """
    global cuda  # a module global, so that the simulator can swap in its fake module
    cuda = _numba_cuda()
    from numba import float64
    from numba.cuda.extending import register_jitable

    TPB = threads

    @register_jitable
    def logit(w_out, b_out, h_store, e, b, t, k):
        """z_k = b_out[k] + W_out[k] . h_t of sequence b, in float64."""
        z = b_out[e, k] + 0.0
        for u in range(h_store.shape[3]):
            z += w_out[e, k, u] * h_store[e, b, t, u]
        return z

    def output_layer(w_out, b_out, h_store, h_offset, targets, inv_count, dlogits, ce_partial):
        """Grid (ceil(B * steps / TPB), E): block (p, e) handles the TPB (sequence b,
        output step j) pairs from p * TPB on, one thread per pair.

        Output step j reads h_store[e, b, j + h_offset] (h_offset = T for
        loss="last", 1 for "every"); writes dL/dlogits (already divided by the
        number of loss terms) and ce_partial[e, p], the block's sum of cross-entropies.
        The logits are computed twice (an online log-sum-exp, then the gradients)
        rather than kept: K * H flops per pair, small beside the recurrence.
        """
        tid = cuda.threadIdx.x
        B = dlogits.shape[1]
        steps = dlogits.shape[2]
        K = dlogits.shape[3]
        e = cuda.blockIdx.y
        p = cuda.blockIdx.x
        n = p * TPB + tid
        ce_sum = cuda.shared.array(TPB, float64)
        ce = 0.0
        if n < B * steps:
            b = n // steps
            j = n % steps
            t = j + h_offset
            tgt = targets[e, b, j]
            z_max = -math.inf
            total = 0.0  # sum_k exp(z_k - z_max), rescaled whenever z_max grows
            z_tgt = 0.0
            for k in range(K):
                z = logit(w_out, b_out, h_store, e, b, t, k)
                if z > z_max:
                    total = total * math.exp(z_max - z) + 1.0
                    z_max = z
                else:
                    total += math.exp(z - z_max)
                if k == tgt:
                    z_tgt = z
            log_z = z_max + math.log(total)
            ce = log_z - z_tgt
            for k in range(K):
                q = math.exp(logit(w_out, b_out, h_store, e, b, t, k) - log_z)
                if k == tgt:
                    q -= 1.0
                dlogits[e, b, j, k] = q * inv_count
        ce_sum[tid] = ce
        cuda.syncthreads()
        if tid == 0:  # once per block, off the critical path: a serial sum is fine
            total = 0.0
            for i in range(TPB):
                total += ce_sum[i]
            ce_partial[e, p] = total

    def scale_weights(da_scale, log_cutoff, top, row_weight):
        """Grid (E,): identity 2 of :mod:`rnnsim.logdomain`. top[e] = S* = max_{b,t} s_bt
        and row_weight = exp(s_bt - S*), or 0 for s_bt = -inf and wherever
        s_bt - S* <= log_cutoff (:func:`rnnsim.logdomain.log_weight_cutoff`), exactly
        as :func:`rnnsim.logdomain.relative_weights`."""
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
            if s > -math.inf and s - m > log_cutoff:
                w = math.exp(s - m)
            row_weight[e, n // T, n % T] = w

    def weight_gradient_gemm(a, row_weight, weighted, h_store, h_offset, x, use_x, out):
        """Grid (ceil(R/64), ceil(C/64), E), block (16, 16): one 64 x 64 output tile of
        one network per block.

        out[e, r, c] = sum_{b,j} a[e,b,j,r] * w[e,b,j] * v[c] with
        v = (h_store[e, b, j + h_offset, :], x[e, b, j, :] if use_x, 1), so one launch
        gives the weight, input-weight and bias gradients of one layer.
        """
        e = cuda.blockIdx.z
        r0 = cuda.blockIdx.x * GEMM_TILE
        c0 = cuda.blockIdx.y * GEMM_TILE
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
        "scale_weights": (f64(3), types.float64, f64(1), f64(3)),
        "weight_gradient_gemm": (f(4), f64(3), types.boolean, f(4), i64, f(4), types.boolean, f64(3)),
    }
