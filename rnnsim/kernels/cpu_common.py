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
import threading
import zlib

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.core.imputils import impl_ret_borrowed, impl_ret_new_ref
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


# --- Helpers linked by address -------------------------------------------------------
#
# numba links the LLVM IR of a compiled helper into every function that calls it, and
# LLVM then optimises and compiles that copy once more in each caller: an lstm item
# kernel's module held ~5.8k lines of linked helpers' optimised IR (step_product's
# tiles, weight_gradients, renormalise, pack_panels) beside ~10k of its own. The
# helpers marked with :func:`linked` are compiled once per dtype on their own, and the
# item kernels call them through their addresses: the ``links`` array that the driver
# passes in (:func:`link_addresses`), read by the intrinsic :func:`call`. Each is
# called once per step or per item, and none was inlined into its callers before, so
# the indirect call costs nothing measurable. renormalise stays linked as IR: LLVM
# specialises its copy to the caller's empty arrays (the rnn's and gru's cell state,
# loss "last"), and by address an rnn call at E=1, B=4, H=64, T=256 took 1.10-1.48x as long.
_LINKED = []  # (dispatcher, its parameter types as a function of the float type, like); slot = index


def linked(parameters, like=0):
    """Decorator for an @njit helper that item kernels call by address (:func:`call`).

    ``parameters(f)`` gives the helper's parameter types (numba types) for the float type
    ``f`` (``types.float32`` or ``types.float64``): the one signature compiled per dtype,
    the dtype of argument ``like``. A read-only array parameter accepts writable arrays too.
    """
    def register(dispatcher):
        _LINKED.append((dispatcher, parameters, like))
        return dispatcher
    return register


def _slot(dispatcher):
    for slot, (known, _, _) in enumerate(_LINKED):
        if known is dispatcher:
            return slot
    raise TypingError(f"call: {dispatcher.py_func.__name__} is not a linked helper (cpu_common.linked)")


def _compiled_link(slot, float_type):
    """(parameter types, return type, token) of linked helper ``slot`` for ``float_type``,
    compiled for that signature (or loaded from numba's cache). The token, a hash of the
    helper's name, parameter types and return type, is stored beside its address, so that
    a kernel compiled against another signature (a stale cache) raises instead of calling
    it wrongly."""
    dispatcher, parameters, _ = _LINKED[slot]
    params = tuple(parameters(float_type))
    dispatcher.compile(params)
    restype = dispatcher.overloads[params].signature.return_type
    text = f"{dispatcher.py_func.__module__}.{dispatcher.py_func.__qualname__}{params} -> {restype}"
    return params, restype, zlib.crc32(text.encode()) & 0x7FFFFFFF or 1  # 0 marks an empty slot


_FLOAT_TYPES = {np.dtype(np.float32): types.float32, np.dtype(np.float64): types.float64}
_link_lock = threading.Lock()
_link_tables = {}


def link_addresses(dtype, helpers):
    """The ``links`` array of an item kernel of ``dtype`` that calls the linked ``helpers``
    (their @njit functions): int64 (2 * every linked helper,), the address and token of
    each of these at its slot, 0 at the others (which :func:`call` refuses). Only these
    are compiled (or loaded from numba's cache), on first use: a forward pass compiles no
    weight gradients. Read-only, shared by every call."""
    key = (np.dtype(dtype), tuple(helpers))
    table = _link_tables.get(key)
    if table is not None:
        return table
    with _link_lock:
        table = np.zeros(2 * len(_LINKED), np.int64)
        for helper in key[1]:
            slot = _slot(helper)
            params, _, token = _compiled_link(slot, _FLOAT_TYPES[key[0]])
            result = helper.overloads[params]
            table[2 * slot] = result.library.get_pointer_to_function(result.fndesc.llvm_func_name)
            table[2 * slot + 1] = token
            if not table[2 * slot]:
                raise RuntimeError(f"rnnsim: {helper.py_func.__name__} has no address after compiling")
        table.flags.writeable = False
        _link_tables[key] = table
        return table


@intrinsic
def call(typingctx, links, helper, *args):
    """``helper(*args)`` for a :func:`linked` helper, through its address in ``links``
    (:func:`link_addresses` of the kernel's dtype); its exceptions propagate as from a
    direct call. The arguments are converted to the helper's one signature for the
    dtype of its argument ``like`` (see :func:`linked`); a RuntimeError when ``links``
    holds no address of the helper with that signature (kernels compiled by an older
    rnnsim, or a helper the driver did not link)."""
    if not (isinstance(links, types.Array) and links.ndim == 1 and links.dtype == types.int64):
        raise TypingError("call(links, helper, ...): links must be a 1-d int64 array")
    if not isinstance(helper, types.Dispatcher):
        raise TypingError("call(links, helper, ...): helper must be an @njit function")
    slot = _slot(helper.dispatcher)
    like = _LINKED[slot][2]
    float_type = args[like].dtype if len(args) > like and isinstance(args[like], types.Array) else None
    if float_type not in _FLOAT_TYPES.values():
        name = helper.dispatcher.py_func.__name__
        raise TypingError(f"call: argument {like} of {name} must be a float32 or float64 array")
    params, restype, token = _compiled_link(slot, float_type)
    if len(params) != len(args) or any(typingctx.can_convert(a, p) is None for a, p in zip(args, params)):
        raise TypingError(f"call: {helper.dispatcher.py_func.__name__} takes {params}, got {args}")

    def codegen(context, builder, sig, llargs):
        i64 = ir.IntType(64)
        table = context.make_array(sig.args[0])(context, builder, llargs[0])
        nitems = table.nitems
        short = builder.icmp_signed("<", nitems, ir.Constant(nitems.type, 2 * slot + 2))
        with cgutils.if_unlikely(builder, short):
            context.call_conv.return_user_exc(builder, RuntimeError, ("call: links is too short",))
        address = builder.load(builder.gep(table.data, [ir.Constant(i64, 2 * slot)]))
        found = builder.load(builder.gep(table.data, [ir.Constant(i64, 2 * slot + 1)]))
        with cgutils.if_unlikely(builder, builder.icmp_signed("!=", found, ir.Constant(i64, token))):
            context.call_conv.return_user_exc(builder, RuntimeError, (
                "call: links has no address of the helper with this signature (a helper the driver did not "
                "link, or kernels compiled by an older rnnsim: clear NUMBA_CACHE_DIR or the __pycache__ "
                "folders)",))
        fnty = context.call_conv.get_function_type(restype, params)
        fn = builder.inttoptr(address, fnty.as_pointer())
        arguments = cgutils.unpack_tuple(builder, llargs[2])  # *args arrive as one tuple, cast to params
        status, result = context.call_conv.call_function(builder, fn, restype, params, arguments)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return impl_ret_new_ref(context, builder, restype, result)

    return restype(links, helper, types.StarArgTuple.from_types(params)), codegen


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
