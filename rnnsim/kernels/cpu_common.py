"""@njit pieces shared by every cell's CPU kernels: the input gather, the readout and
its loss adjoints, log-domain renormalisation, and the weight-gradient products.

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


@jit
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
def output_layer(h_rows, w_out, b_out, targets, inv_count, dlogits, local):
    """Softmax cross-entropy on rows of hidden states, and its adjoints.

    Parameters
    ----------
    h_rows : (R, H) hidden states that feed the readout
    w_out, b_out : (K, H), (K,)
    targets : (R,) int64
    inv_count : 1/B (loss "last") or 1/(B*T) (loss "every")
    dlogits : (R, K) out, dL/dz = (softmax(z) - onehot) * inv_count
    local : (R, H) out, dL/dh from this row's loss term = dlogits @ w_out

    Returns
    -------
    Sum over rows of the cross-entropy (float64), not yet divided by the count.
    """
    R, K = dlogits.shape
    np.dot(h_rows, w_out.T, dlogits)
    total = 0.0
    for r in range(R):
        z_max = -np.inf
        for k in range(K):
            z = dlogits[r, k] + b_out[k]
            dlogits[r, k] = z
            z_max = max(z_max, float(z))
        sum_exp = 0.0
        for k in range(K):
            sum_exp += math.exp(float(dlogits[r, k]) - z_max)
        log_z = z_max + math.log(sum_exp)
        total += log_z - float(dlogits[r, targets[r]])
        for k in range(K):
            dlogits[r, k] = math.exp(float(dlogits[r, k]) - log_z) * inv_count
        dlogits[r, targets[r]] -= inv_count
    np.dot(dlogits, w_out, local)
    return total


@jit
def loss_adjoints(loss_every, targets, given, e, b0, hs, w_out, b_out, inv_count, part_out, part_bout,
                  h_last, pool, cursor, pool64, cursor64):
    """The readout of one work item: its loss terms and the adjoints they inject
    (:func:`rnnsim.losses.readout_loss` for one network and a tile of sequences).

    Parameters
    ----------
    loss_every : bool, loss "every" (else "last")
    targets : (E, B, steps) int64, steps = T or 1
    given : (E, B, T+1, H) per-step adjoints dL/dh_t of a loss computed outside the
        kernels (injected; then ``loss_every`` must be True and the targets, readout
        and outputs ``part_out``, ``part_bout`` are left alone, and the loss is 0), or
        an array with a zero-length first axis for the fused cross-entropy
    e, b0 : the item's network and first sequence
    hs : (T+1, nb, H) hidden states of the item
    w_out, b_out : (K, H), (K,) network e's readout
    inv_count : 1/B (loss "last") or 1/(B*T) (loss "every")
    part_out, part_bout : out, (K, H), (K,) the item's readout gradients
    h_last : out, (E, B, H): the item's final hidden states h_T go to ``h_last[e, b0:b0+nb]``
    pool, cursor, pool64, cursor64 : the item's workspaces in the dtype and in float64
        (:func:`take`); the per-step buffers of loss "every" come from them

    Returns
    -------
    (loss, mant_h, scale, local, local_log): the sum of the item's cross-entropies;
    dL/dh_T as a unit-norm mantissa (nb, H) at float64 log-scale ``scale`` (nb,);
    for loss "every" the per-step adjoints ``local`` (T+1, nb, H) and their log norms
    ``local_log`` (T+1, nb), zero-length for loss "last".
    """
    T1, nb, H = hs.shape
    T = T1 - 1
    K = w_out.shape[0]
    for b in range(nb):
        for j in range(H):
            h_last[e, b0 + b, j] = hs[T, b, j]
    if given.shape[0] > 0:
        local = take(pool, cursor, (T + 1) * nb * H).reshape((T + 1, nb, H))
        for b in range(nb):
            for t in range(T + 1):
                for j in range(H):
                    local[t, b, j] = given[e, b0 + b, t, j]
        local_log = take(pool64, cursor64, (T + 1) * nb).reshape((T + 1, nb))
        log_norms(local.reshape((T + 1) * nb, H), local_log.reshape((T + 1) * nb))
        mant_h = local[T].copy()
        scale = np.zeros(nb)
        renormalise(scale, mant_h, np.empty((nb, 0), hs.dtype), np.empty((0, H), hs.dtype), np.empty(0))
        return 0.0, mant_h, scale, local, local_log
    if loss_every:
        rows = T * nb
        tgt = np.empty(rows, np.int64)
        for t in range(T):
            for b in range(nb):
                tgt[t * nb + b] = targets[e, b0 + b, t]
        local = take(pool, cursor, (T + 1) * nb * H).reshape((T + 1, nb, H))
        for b in range(nb):
            for j in range(H):
                local[0, b, j] = 0  # no loss term at t = 0; output_layer writes t = 1..T
        h_rows = hs[1:].reshape(rows, H)
        dlogits = take(pool, cursor, rows * K).reshape((rows, K))
        loss = output_layer(h_rows, w_out, b_out, tgt, inv_count, dlogits, local[1:].reshape(rows, H))
        local_log = take(pool64, cursor64, (T + 1) * nb).reshape((T + 1, nb))
        log_norms(local.reshape((T + 1) * nb, H), local_log.reshape((T + 1) * nb))
        mant_h = local[T].copy()
    else:
        h_rows = hs[T]
        dlogits = np.empty((nb, K), hs.dtype)
        mant_h = np.empty((nb, H), hs.dtype)
        tgt = np.empty(nb, np.int64)
        for b in range(nb):
            tgt[b] = targets[e, b0 + b, 0]
        loss = output_layer(h_rows, w_out, b_out, tgt, inv_count, dlogits, mant_h)
        local = np.zeros((0, nb, H), hs.dtype)
        local_log = np.zeros((0, nb))
    np.dot(dlogits.T, h_rows, part_out)
    for k in range(K):
        acc = 0.0
        for r in range(dlogits.shape[0]):
            acc += dlogits[r, k]
        part_bout[k] = acc
    scale = np.zeros(nb)
    renormalise(scale, mant_h, np.empty((nb, 0), hs.dtype), np.empty((0, H), hs.dtype), np.empty(0))
    return loss, mant_h, scale, local, local_log


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
def weight_gradients(da_rows, scale_rows, h_rows, x_rows, log_cutoff, block_rows, g_ih, g_hh, g_b):
    """Mantissas of dW_ih, dW_hh, db relative to exp(S*), S* = max scale
    (identity 2 of :mod:`rnnsim.logdomain`).

    da_rows : (R, G*H) adjoint mantissas of the pre-activations (unit scale per row)
    scale_rows : (R,) float64 their log-scales
    h_rows : (R, H) h_{t-1} for each row
    x_rows : (R, D) x_t for each row
    log_cutoff : float, ``rnnsim.logdomain.log_weight_cutoff(dtype)``
    block_rows : int >= 1, rows per partial product (``rnnsim.config.CPU_WEIGHT_GRADIENT_ROWS``)
    g_ih, g_hh, g_b : out, (G*H, D), (G*H, H), (G*H,)

    Returns S* (float64; -inf when every adjoint is zero).

    Notes
    -----
    [dW_hh | dW_ih | db] = sum_r exp(s_r) da_r [h_r, x_r, 1]ᵀ = exp(S*) · DAᵀ Z, with
    Z_r = w_r [h_r, x_r, 1] and w_r = exp(s_r - S*) ≤ 1: one product instead of three,
    and the weights go on the narrow factor Z rather than on DA.
    The product runs over blocks of ``block_rows`` rows, summed: Z is built one block
    at a time, so it stays in cache and its memory does not grow with T.
    Rows with ln w_r <= log_cutoff (sqrt(tiny) by default: 1e-19 in float32, 1e-154
    in float64) are dropped: their products would be denormal numbers, which cost
    the CPU ~100x per operation (seen: 20x slower float32 weight gradients).
    """
    R, GH = da_rows.shape
    H, D = h_rows.shape[1], x_rows.shape[1]
    W = H + D + 1
    s_star = -np.inf
    for r in range(R):
        s_star = max(s_star, scale_rows[r])
    n_max = max(1, min(block_rows, R))
    z = np.empty((n_max, W), da_rows.dtype)
    g = np.zeros((GH, W), da_rows.dtype)
    part = np.empty((GH, W), da_rows.dtype)
    for r0 in range(0, R, n_max):
        n = min(n_max, R - r0)
        for i in range(n):
            r = r0 + i
            rel = scale_rows[r] - s_star
            w = typed(z, math.exp(rel) if rel > log_cutoff else 0.0)
            for j in range(H):
                z[i, j] = w * h_rows[r, j]
            for j in range(D):
                z[i, H + j] = w * x_rows[r, j]
            z[i, H + D] = w
        np.dot(da_rows[r0:r0 + n].T, z[:n], part)
        for i in range(GH):
            for j in range(W):
                g[i, j] += part[i, j]
    for i in range(GH):  # element loops: an array-to-array slice assignment compiles
        for j in range(H):  # numba's shape-mismatch error formatting (~1 s per rank)
            g_hh[i, j] = g[i, j]
        for j in range(D):
            g_ih[i, j] = g[i, H + j]
        g_b[i] = g[i, H + D]
    return s_star


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
