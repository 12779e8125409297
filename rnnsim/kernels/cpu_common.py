"""@njit pieces shared by every cell's CPU kernels: the compile options, the workspace,
the input gather, log-domain renormalisation and the Lyapunov QR step (the products
are in :mod:`~rnnsim.kernels.cpu_matmul`, the readout and its loss in
:mod:`~rnnsim.kernels.cpu_readout`).

Conventions for one *work item* (one network, a tile of ``nb`` of its sequences):

- sequences are the middle axis of every time-major buffer, ``(T, nb, ...)``, so the
  rows of a buffer reshaped to ``(T*nb, ...)`` are (step, sequence) pairs and the
  weight gradients are single matrix products over those rows;
- an adjoint is stored as a mantissa row times ``exp(scale)``, with ``scale`` in
  float64 (see :mod:`rnnsim.reference`);
- the max or min of two scalars is written as a conditional expression, ``b if b > a
  else a`` (Python's ``max(a, b)``): numba compiles the builtins as functions of their
  own, one per signature, each ~0.1 s of a first call;
- a buffer that does not come from the workspace is ``np.empty(n, dtype)``, reshaped:
  numba compiles np.empty once for each signature, and a shape tuple is one of its own.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from .. import config

FASTMATH = set(config.NUMBA_FASTMATH)
# Helpers are only called from @njit code: no Python or C wrapper to build for them.
jit = njit(cache=True, fastmath=FASTMATH, nogil=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
# The stages that an entry point calls once (a cell's forward and backward, the readout
# of each loss kind): typed inside their caller. Compiled on their own, numba would
# optimise and compile their code twice, alone and again inside the caller.
stage = njit(cache=True, fastmath=FASTMATH, nogil=True, no_cpython_wrapper=True, no_cfunc_wrapper=True,
             inline="always")
# The per-item entry points that the driver calls from Python threads.
entry = njit(cache=True, fastmath=FASTMATH, nogil=True, no_cfunc_wrapper=True)


@intrinsic
def typed(typingctx, like, value):
    """``value`` cast to the dtype of the array ``like``, inside @njit code.

    numba promotes ``float32 op python-float`` to float64; constants built with this
    keep float32 kernels in float32 (and at float32 vector width). An intrinsic, not an
    overload: the cast is emitted where it is called, with no function of its own to
    compile for each type of ``like``.
    """
    if not isinstance(like, types.Array) or not isinstance(value, (types.Float, types.Integer)):
        raise TypingError("typed(like, value): like must be an array and value a number")
    target = like.dtype

    def codegen(context, builder, sig, args):
        return context.cast(builder, args[1], sig.args[1], sig.return_type)
    return target(like, value), codegen


@intrinsic
def reshaped(typingctx, arr, shape):
    """The C-contiguous array ``arr`` seen with ``shape`` (an int or a tuple of ints), sharing
    its data and its owner; a ValueError when the sizes differ.

    What ``arr.reshape(shape)`` does for a C-contiguous array, emitted where it is called:
    numba's reshape calls two helpers and builds their shape and stride arrays at every
    call site, code that LLVM optimises and compiles at each of the kernels' dozens of
    reshapes.
    """
    dims = (shape,) if isinstance(shape, types.Integer) else shape
    if not (isinstance(arr, types.Array) and arr.layout == "C" and isinstance(dims, (tuple, types.BaseTuple))
            and all(isinstance(dim, types.Integer) for dim in dims)):
        raise TypingError("reshaped(arr, shape): arr must be a C-contiguous array and shape an int or a "
                          "tuple of ints")
    result = arr.copy(ndim=len(dims), layout="C")

    def codegen(context, builder, sig, args):
        intp = context.get_value_type(types.intp)
        source = context.make_array(sig.args[0])(context, builder, args[0])
        if isinstance(sig.args[1], types.Integer):
            sizes = [context.cast(builder, args[1], sig.args[1], types.intp)]
        else:
            sizes = [context.cast(builder, value, ty, types.intp)
                     for value, ty in zip(cgutils.unpack_tuple(builder, args[1]), sig.args[1])]
        total = ir.Constant(intp, 1)
        for size in sizes:
            total = builder.mul(total, size)
        negative = ir.Constant(ir.IntType(1), 0)
        for size in sizes:
            negative = builder.or_(negative, builder.icmp_signed("<", size, ir.Constant(intp, 0)))
        mismatch = builder.or_(negative, builder.icmp_signed("!=", total, source.nitems))
        with cgutils.if_unlikely(builder, mismatch):
            context.call_conv.return_user_exc(builder, ValueError,
                                              ("reshaped: the new shape has another size",))
        itemsize = source.itemsize
        strides, stride = [], itemsize
        for size in reversed(sizes):
            strides.insert(0, stride)
            stride = builder.mul(stride, size)
        view = context.make_array(sig.return_type)(context, builder)
        populate_array(view, data=source.data, shape=sizes, strides=strides, itemsize=itemsize,
                       meminfo=source.meminfo, parent=source.parent)
        return impl_ret_borrowed(context, builder, sig.return_type, view._getvalue())

    return result(arr, shape), codegen


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
    x = reshaped(take(pool, cursor, T * nb * D), (T, nb, D))
    for b in range(nb):
        for t in range(T):
            for d in range(D):
                x[t, b, d] = inputs[e, b0 + b, t, d]
    return x


@stage
def folded_bias(b_ih, b_hh, e, pool, cursor):
    """Network e's ``b_ih + b_hh`` (the biases of cells that fold them into one sum), in
    the workspace; an element loop, where an array expression would compile numba's
    broadcasting for this one sum."""
    GH = b_ih.shape[1]
    bias = take(pool, cursor, GH)
    for j in range(GH):
        bias[j] = b_ih[e, j] + b_hh[e, j]
    return bias


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
            m = local_log[b] if local_log[b] > s else s
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
