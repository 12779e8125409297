"""@njit pieces shared by every cell's CPU kernels: the compile options, the workspace,
the input gather, log-domain renormalisation and the Lyapunov QR step (the products
are in :mod:`~rnnsim.kernels.cpu_matmul`, the readout and its loss in
:mod:`~rnnsim.kernels.cpu_readout`).

Conventions for one *work item* (one network, a tile of ``nb`` of its sequences):

- sequences are the middle axis of every time-major buffer, ``(T, nb, ...)``, so the
  rows of a buffer reshaped to ``(T*nb, ...)`` are (step, sequence) pairs and the
  weight gradients are single matrix products over those rows;
- an adjoint is stored as a mantissa row times ``exp(scale)``, with ``scale`` in
  float64 (see :mod:`rnnsim.reference`).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.extending import overload

from .. import config

FASTMATH = set(config.NUMBA_FASTMATH)
# Helpers are only called from @njit code: no Python or C wrapper to build for them.
jit = njit(cache=True, fastmath=FASTMATH, nogil=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
# The stages that an entry point calls once (a cell's forward and backward, the readout
# of each loss kind): typed inside their caller. Compiled on their own, numba would
# optimise their code twice, alone and again inside the caller.
stage = njit(cache=True, fastmath=FASTMATH, nogil=True, no_cpython_wrapper=True, no_cfunc_wrapper=True,
             inline="always")
# The per-item entry points that the driver calls from Python threads.
entry = njit(cache=True, fastmath=FASTMATH, nogil=True, no_cfunc_wrapper=True)


def typed(like, value):
    """``value`` cast to ``like``'s dtype, inside @njit code.

    numba promotes ``float32 op python-float`` to float64; constants built with this
    keep float32 kernels in float32 (and at float32 vector width).
    """
    raise TypeError("typed() is only for @njit code")


@overload(typed, inline="always")
def _typed(like, value):
    target = like.dtype  # a numba type: calling it in jitted code is a cast

    def impl(like, value):
        return target(value)
    return impl


# Alignment of every workspace buffer: the driver (rnnsim.kernels.cpu) aligns each
# workspace's first element to WORKSPACE_ALIGN_BYTES, and :func:`take` advances offsets
# by whole WORKSPACE_ALIGN elements, a multiple of those bytes in float32 and float64.
WORKSPACE_ALIGN_BYTES = 64
WORKSPACE_ALIGN = WORKSPACE_ALIGN_BYTES // 4


@jit
def take(pool, cursor, n):
    """The next ``n`` elements of a work item's workspace (1-D, C-contiguous).

    ``pool`` is the running thread's workspace, kept by the driver across calls
    (:mod:`rnnsim.kernels.cpu`), and ``cursor[0]`` the item's offset into it, advanced
    by ``n`` rounded up to ``WORKSPACE_ALIGN``. Offsets only grow, so the buffers of
    one item never overlap. When the pool is too short the elements are allocated afresh; the driver
    reads the final offset and grows the pool for the items that follow. Buffers that
    grow with T come from here, so a warm call allocates (and page-faults) nothing
    that scales with T.
    """
    start = cursor[0]
    # whole 64-byte lines (the driver aligns the pool's start): the vector loops and
    # BLAS run on aligned rows, as on numba's own allocations
    cursor[0] = start + (n + WORKSPACE_ALIGN - 1) // WORKSPACE_ALIGN * WORKSPACE_ALIGN
    if start + n <= pool.shape[0]:
        return pool[start:start + n]
    return np.empty(n, pool.dtype)


@stage
def gather_inputs(inputs, e, b0, nb, pool, cursor):
    """Network e's sequences b0..b0+nb-1 of ``inputs`` (E, B, T, D), time-major
    (T, nb, D), in the workspace (see :func:`take`)."""
    T, D = inputs.shape[2], inputs.shape[3]
    x = take(pool, cursor, T * nb * D).reshape((T, nb, D))
    for b in range(nb):
        for t in range(T):
            for d in range(D):
                x[t, b, d] = inputs[e, b0 + b, t, d]
    return x


@jit
def log_norms(rows, out):
    """out[r] = ln ||rows[r]|| (float64, -inf for a zero row)."""
    for r in range(rows.shape[0]):
        sq = 0.0
        for j in range(rows.shape[1]):
            sq += float(rows[r, j]) * float(rows[r, j])
        out[r] = 0.5 * math.log(sq) if sq > 0.0 else -np.inf


@jit
def renormalise(scale, mant_h, mant_c, local, local_log):
    """Replace exp(scale[b]) (mant_h[b], mant_c[b]) + (local[b], 0) by a unit-norm
    mantissa pair and a new float64 scale, for every sequence b.

    ``mant_c`` may have zero columns (the rnn has no cell state); ``local`` may have
    zero rows (loss "last" adds nothing before the final step).

    Notes
    -----
    With m = max(s, ln|g|): exp(s) u + g = exp(m) (exp(s - m) u + exp(ln|g| - m) g/|g|),
    and the bracket is renormalised, so no factor ever leaves the float range.
    """
    nb, H = mant_h.shape
    use_local = local.shape[0] > 0
    for b in range(nb):
        s = scale[b]
        # Norm of the incoming pair first: it turns s into the log norm of the adjoint.
        sq = 0.0
        for j in range(H):
            sq += float(mant_h[b, j]) * float(mant_h[b, j])
        for j in range(mant_c.shape[1]):
            sq += float(mant_c[b, j]) * float(mant_c[b, j])
        s = s + 0.5 * math.log(sq) if sq > 0.0 else -np.inf
        inv = 1.0 / math.sqrt(sq) if sq > 0.0 else 0.0
        if use_local and local_log[b] > -np.inf:
            m = max(s, local_log[b])
            a_old = math.exp(s - m) * inv if s > -np.inf else 0.0
            a_new = math.exp(-m)  # exp(ln|g| - m) / |g|, with |g| = exp(ln|g|)
            sq = 0.0
            for j in range(H):
                v = a_old * float(mant_h[b, j]) + a_new * float(local[b, j])
                mant_h[b, j] = v
                sq += v * v
            for j in range(mant_c.shape[1]):
                v = a_old * float(mant_c[b, j])
                mant_c[b, j] = v
                sq += v * v
            s = m + 0.5 * math.log(sq) if sq > 0.0 else -np.inf
            inv = 1.0 / math.sqrt(sq) if sq > 0.0 else 0.0
        inv_t = typed(mant_h, inv)
        for j in range(H):
            mant_h[b, j] *= inv_t
        for j in range(mant_c.shape[1]):
            mant_c[b, j] *= inv_t
        scale[b] = s


@jit
def reorthonormalise(tangent, log_r):
    """QR step of the Lyapunov spectra: the k rows of ``tangent`` (k, n) become orthonormal
    (Q of the QR factorisation of its transpose) and log_r[i] = ln|R_ii| (float64 kernels)."""
    q, r = np.linalg.qr(np.ascontiguousarray(tangent.T))
    for i in range(tangent.shape[0]):
        log_r[i] = math.log(abs(r[i, i])) if r[i, i] != 0.0 else -np.inf
    for i in range(tangent.shape[0]):
        for j in range(tangent.shape[1]):
            tangent[i, j] = q[j, i]


@jit
def lyapunov_block(tangent, log_r, t, T, block_start, qr_every, warmup, growth, running):
    """After step t: reorthonormalise at the end of a QR block, and sum its ln|R_ii| into
    ``growth`` (k,) when the block started at or after the warm-up (as
    :func:`rnnsim.reference.lyapunov_raw`). Returns the new (block_start, running)."""
    if t + 1 - block_start == qr_every or t == T - 1:
        reorthonormalise(tangent, log_r)
        if block_start >= warmup:
            for i in range(log_r.shape[0]):
                growth[i] += log_r[i]
                running += log_r[i]
        block_start = t + 1
    return block_start, running
