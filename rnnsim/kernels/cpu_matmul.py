r"""The products of the CPU kernels: the per-step product of the recurrences, on weights
packed once per work item; one BLAS call for each large product (:func:`matmul`:
the input projections, the readout); and the weight gradients (:func:`weight_gradients`).

Each step of a recurrence multiplies a tile of ``nb`` sequences, a few rows, by the
recurrent weights: ``out = a @ w`` with ``a`` (nb, K) and ``w`` (K, N), K and N
between H and 4H. BLAS packs all of ``w`` anew for each such call, and at a few
rows the packing costs as much as the product. One thread of this machine's
OpenBLAS runs 16 × 1024 × 1024 at 24–31 GFLOP/s in float64 and 19–29 in float32.
Here ``w`` is packed once per work item (:func:`pack_panels`), and every step reads
it in order with a register-blocked kernel (:func:`step_product`): 39–54 and
85–119 GFLOP/s on the same shapes (Intel Xeon, AVX-512), level with or ahead of BLAS at
16 × 64 × 64, behind it where N lies just past a whole number of panels (the last
panel is then mostly padding).

The kernel is written as LLVM vector IR (an ``@intrinsic``): numba's loop
vectoriser keeps accumulators in memory, and its SLP vectoriser does not combine
scalar ones (both measured at 2–12 GFLOP/s). Its shape is fixed at import from
the target's vector width (a compiled constant, so not a :mod:`rnnsim.config`
tunable): a tile is ``TILE_ROWS`` rows of ``a`` by one panel of
``PANEL_BYTES // itemsize`` columns of ``w``, held in
``TILE_ROWS * TILE_VECTORS`` vector registers: 8 × 2 of the 32 AVX-512 registers,
4 × 2 of the 16 AVX2 (or SSE) ones. With 16 registers an 8 × 2 tile spills, and an
8 × 1 tile loads a broadcast for every FMA: on an AMD EPYC Zen 3, one thread, from
16 × 64 × 64 to 16 × 1024 × 1024, 8 × 1 tiles ran 17–22 GFLOP/s in float64 and
35–64 in float32, 4 × 2 tiles 27–33 and 55–80, 8 × 2 tiles 13–14 and 27–37
(``benchmarks/bench_tiles.py``, ``results/bench/2026-12-06-cpu-tiles-zen3.txt``).
"""
from __future__ import annotations

import math

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.linalg import check_blas_return, ensure_blas, get_blas_kind

from .cpu_common import entry, jit, linked, reshaped, stage, take, typed
from .cpu_team import (
    A_ADDRESS,
    AHEAD,
    DONE,
    GEN,
    K_ROWS,
    M_ROWS,
    N_COLUMNS,
    N_PANELS,
    OUT_ADDRESS,
    PANELS_ADDRESS,
    QUIT,
    SIZE,
    add_acquire_release,
    share,
    store_release,
    view,
    wait_for_change,
    wait_for_value,
)


def _target_features():
    """The CPU features numba compiles for: the host's, or those of NUMBA_CPU_NAME /
    NUMBA_CPU_FEATURES (a portable cache, for example), where none means baseline x86-64."""
    if numba_config.CPU_NAME or numba_config.CPU_FEATURES:
        return {f[1:] for f in (numba_config.CPU_FEATURES or "").split(",") if f.startswith("+")}
    return {name for name, on in llvm.get_host_cpu_features().items() if on}


_FEATURES = _target_features()
VECTOR_BYTES = 64 if "avx512f" in _FEATURES else 32 if "avx2" in _FEATURES else 16
TILE_ROWS = 8 if VECTOR_BYTES == 64 else 4  # half the vector registers: 32 with AVX-512, else 16
TILE_VECTORS = 2
PANEL_BYTES = TILE_VECTORS * VECTOR_BYTES
# Weights larger than the cache (an lstm's W_hh at H=1024 is 32 MB in float64) come
# from memory every step, and the hardware prefetchers run too short a distance ahead
# to hide its latency: one thread at 16 x 1024 x 4096 ran 19-23 GFLOP/s, 52 with the
# tile asking for the panel's row k + PREFETCH_ROWS while it multiplies row k (float64).
# Panels of at most PREFETCH_MIN_BYTES stay in cache between steps and are not prefetched.
PREFETCH_ROWS = 64
PREFETCH_MIN_BYTES = 4 << 20


def _tile(rows, vector_bytes=VECTOR_BYTES, vectors=TILE_VECTORS):
    """An intrinsic ``tile(a, panels, out, i0, p, ncols, ahead)``: out[i0:i0+rows, p*NR : p*NR+ncols]
    = a[i0:i0+rows] @ panel p, with NR = vectors * vector_bytes // itemsize and ncols <= NR,
    prefetching ``ahead`` panel rows ahead, or nothing when ``ahead`` is 0 (tests build
    the other hosts' widths)."""

    @intrinsic
    def tile(typingctx, a, panels, out, i0, p, ncols, ahead):
        for name, arr, ndim in (("a", a, 2), ("panels", panels, 3), ("out", out, 2)):
            if not (isinstance(arr, types.Array) and arr.ndim == ndim and arr.layout == "C"
                    and arr.dtype in (types.float32, types.float64) and arr.dtype == a.dtype):
                raise TypingError(f"tile: {name} must be a C-contiguous {ndim}-d array of a's float dtype")

        def codegen(context, builder, sig, args):
            a_t, panels_t, out_t = sig.args[:3]
            fty = context.get_value_type(a_t.dtype)
            itemsize = a_t.dtype.bitwidth // 8
            lanes = vector_bytes // itemsize
            width = vectors * lanes
            vty = ir.VectorType(fty, lanes)
            vptr = vty.as_pointer()
            idx = lambda n: ir.Constant(ir.IntType(64), n)  # noqa: E731
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{lanes}f{itemsize * 8}")
            arr_a = context.make_array(a_t)(context, builder, args[0])
            arr_w = context.make_array(panels_t)(context, builder, args[1])
            arr_o = context.make_array(out_t)(context, builder, args[2])
            i0, p, ncols, ahead = args[3], args[4], args[5], args[6]
            K = cgutils.unpack_tuple(builder, arr_a.shape)[1]
            out_cols = cgutils.unpack_tuple(builder, arr_o.shape)[1]
            # accumulators as allocas: LLVM promotes them to vector registers
            acc = [[cgutils.alloca_once_value(builder, ir.Constant(vty, None)) for _ in range(vectors)]
                   for _ in range(rows)]
            a_rows = [builder.gep(arr_a.data, [builder.mul(builder.add(i0, idx(i)), K)]) for i in range(rows)]
            panel = builder.gep(arr_w.data, [builder.mul(builder.mul(p, K), idx(width))])
            undef = ir.Constant(vty, ir.Undefined)
            col0 = builder.mul(p, idx(width))
            splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)

            def out_row(i):
                first = builder.add(builder.mul(builder.add(i0, idx(i)), out_cols), col0)
                return builder.gep(arr_o.data, [first])

            def store_vectors(i, dest):
                for v in range(vectors):
                    target = builder.bitcast(builder.gep(dest, [idx(v * lanes)]), vptr)
                    builder.store(builder.load(acc[i][v]), target, align=itemsize)

            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            prefetch = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")
            read_keep_data = [ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
            prefetching = builder.icmp_signed("!=", ahead, idx(0))  # loop-invariant: LLVM unswitches it
            with cgutils.for_range(builder, K) as loop:
                k = loop.index
                w_row = builder.gep(panel, [builder.mul(k, idx(width))])
                with builder.if_then(prefetching):
                    # past the last panel's end it asks for memory nobody uses: a prefetch never faults
                    later_row = builder.bitcast(builder.gep(w_row, [builder.mul(ahead, idx(width))]), i8p)
                    for line in range(0, width * itemsize, 64):  # every 64-byte cache line of a panel row
                        builder.call(prefetch, [builder.gep(later_row, [idx(line)])] + read_keep_data)
                w = [builder.load(builder.bitcast(builder.gep(w_row, [idx(v * lanes)]), vptr), align=itemsize)
                     for v in range(vectors)]
                for i in range(rows):
                    scalar = builder.load(builder.gep(a_rows[i], [k]))
                    lane0 = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
                    broadcast = builder.shuffle_vector(lane0, undef, splat)
                    for v in range(vectors):
                        total = builder.call(fma, [broadcast, w[v], builder.load(acc[i][v])])
                        builder.store(total, acc[i][v])
            full = builder.icmp_signed("==", ncols, idx(width))
            with builder.if_else(full) as (whole, partial):
                with whole:
                    for i in range(rows):
                        store_vectors(i, out_row(i))
                with partial:  # the last panel of an N that is not a multiple of its width
                    spill = cgutils.alloca_once(builder, fty, size=width)
                    for i in range(rows):
                        store_vectors(i, spill)
                        row = out_row(i)
                        with cgutils.for_range(builder, ncols) as copy:
                            builder.store(builder.load(builder.gep(spill, [copy.index])),
                                          builder.gep(row, [copy.index]))
            return context.get_dummy_value()

        return types.void(a, panels, out, types.int64, types.int64, types.int64, types.int64), codegen

    return tile


# Blocks of TILE_ROWS rows (8 or 4), then 4 (after 8), 2 and 1 for the remainder of a tile of sequences.
_tile4, _tile2, _tile1 = _tile(4), _tile(2), _tile(1)
_tile_full = _tile(TILE_ROWS) if TILE_ROWS != 4 else _tile4


@linked(lambda f: (types.Array(f, 2, "C", readonly=True), f[::1], types.int64[::1]))
@jit
def pack_panels(w, pool, cursor):
    """``w`` (K, N) as panels (P, K, NR) in the workspace (:func:`~rnnsim.kernels.cpu_common.take`):
    panel p holds columns p*NR .. p*NR+NR-1 row after row, NR = PANEL_BYTES // itemsize,
    the columns past N zero."""
    K, N = w.shape
    width = PANEL_BYTES // w.itemsize
    n_panels = (N + width - 1) // width
    panels = reshaped(take(pool, cursor, n_panels * K * width), (n_panels, K, width))
    for p in range(n_panels):
        for k in range(K):
            for c in range(width):
                j = p * width + c
                panels[p, k, c] = w[k, j] if j < N else 0
    return panels


@linked(lambda f: (f[:, ::1], f[:, :, ::1], f[:, ::1], types.int64[::1]))
@jit
def step_product(a, panels, out, team):
    r"""``out = a @ w`` for ``w`` packed by :func:`pack_panels`, shared with the helpers of
    ``team`` when it has any (:mod:`~rnnsim.kernels.cpu_team`).

    Parameters
    ----------
    a : (M, K) C-contiguous
    panels : (P, K, NR) from :func:`pack_panels`
    out : (M, N) C-contiguous, N <= P * NR; overwritten
    team : (TEAM_WORDS,) int64, the item's team control block (``team[SIZE]`` 1: alone)

    Notes
    -----
    :math:`\mathrm{out}_{ij} = \sum_k a_{ik} w_{kj}`, summed in order of k with one
    fused multiply-add per term, whoever computes column j.
    """
    M = a.shape[0]
    N = out.shape[1]
    width = panels.shape[2]
    # the tiles index raw pointers: a mismatch here would read or write out of bounds
    if (width * a.itemsize != PANEL_BYTES or panels.shape[1] != a.shape[1] or panels.shape[0] * width < N
            or out.shape[0] != M):
        raise ValueError("step_product: panels do not match a and out")
    ahead = PREFETCH_ROWS if panels.size * panels.itemsize > PREFETCH_MIN_BYTES else 0
    size = team[SIZE]
    start, stop = 0, panels.shape[0]
    if size > 1:
        team[A_ADDRESS], team[M_ROWS], team[K_ROWS] = a.ctypes.data, M, a.shape[1]
        team[PANELS_ADDRESS], team[N_PANELS] = panels.ctypes.data, panels.shape[0]
        team[OUT_ADDRESS], team[N_COLUMNS], team[AHEAD] = out.ctypes.data, N, ahead
        team[DONE] = 0
        store_release(team, GEN, team[GEN] + 1)  # publishes the fields above and a's rows
        start, stop = share(panels.shape[0], 0, size)
    _panel_products(a, panels, out, start, stop, ahead)  # one call site: the tiles are compiled once
    if size > 1:
        wait_for_value(team, DONE, size - 1)


@stage
def _panel_products(a, panels, out, start, stop, ahead):
    """Columns of panels [start, stop) of ``out = a @ w``, in tiles of rows."""
    M = a.shape[0]
    N = out.shape[1]
    width = panels.shape[2]
    for p in range(start, stop):  # one panel stays in cache over all the row blocks
        ncols = N - p * width if N - p * width < width else width
        i0 = 0
        while M - i0 >= TILE_ROWS:
            _tile_full(a, panels, out, i0, p, ncols, ahead)
            i0 += TILE_ROWS
        if TILE_ROWS > 4 and M - i0 >= 4:  # a compiled constant: no branch with 4-row tiles
            _tile4(a, panels, out, i0, p, ncols, ahead)
            i0 += 4
        if M - i0 >= 2:
            _tile2(a, panels, out, i0, p, ncols, ahead)
            i0 += 2
        if M - i0 >= 1:
            _tile1(a, panels, out, i0, p, ncols, ahead)


@entry
def team_helper(team, rank, like):
    """A helper thread of ``team`` (rank >= 1): computes its share of every product the
    leader publishes, until dismissed (:func:`~rnnsim.kernels.cpu_team.dismiss`);
    ``like`` is an empty array of the products' dtype."""
    seen = 0
    while True:
        seen = wait_for_change(team, GEN, seen)
        if team[QUIT]:
            return
        M, K, P = team[M_ROWS], team[K_ROWS], team[N_PANELS]
        a = view(team[A_ADDRESS], (M, K), like)
        panels = view(team[PANELS_ADDRESS], (P, K, PANEL_BYTES // like.itemsize), like)
        out = view(team[OUT_ADDRESS], (M, team[N_COLUMNS]), like)
        start, stop = share(P, rank, team[SIZE])
        _panel_products(a, panels, out, start, stop, team[AHEAD])
        add_acquire_release(team, DONE, 1)


@intrinsic
def matmul(typingctx, a, b, out, beta):
    """``out = a @ b + beta * out`` (2-d, ``a`` and ``b`` C- or F-contiguous, ``out``
    C-contiguous), in one BLAS call; ``beta`` is a float, 0.0 to overwrite ``out`` (its
    old values are then never read, NaN included) or 1.0 to add to it. A ValueError when
    the shapes do not match or a dimension does not fit BLAS's 32-bit integers.

    np.dot calls the same BLAS helper of numba, but compiles, at every call site, its
    own checks, copies of strided operands and error formatting, and one dispatch per
    layout. This is an intrinsic: a few instructions at each call site and no function
    of its own to compile for each layout (an @njit function took ~0.1 s of a first call
    for each of three). ``beta`` is a float, not a bool: every float constant is typed
    alike.
    """
    ensure_blas()  # SciPy's BLAS, as np.dot: the same clear error when it is missing
    for name, arr, layouts in (("a", a, "CF"), ("b", b, "CF"), ("out", out, "C")):
        if not (isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout in layouts
                and arr.dtype in (types.float32, types.float64) and arr.dtype == out.dtype):
            raise TypingError(f"matmul: {name} must be a 2-d {'/'.join(layouts)}-contiguous array "
                              "of out's float dtype")

    def codegen(context, builder, sig, args):
        char, void_p = ir.IntType(8), ir.IntType(8).as_pointer()
        intp = context.get_value_type(types.intp)
        dtype = sig.args[2].dtype
        arrays = [context.make_array(ty)(context, builder, value)
                  for ty, value in zip(sig.args[:3], args[:3])]
        (M, K), (K_b, N), (M_out, N_out) = (cgutils.unpack_tuple(builder, arr.shape) for arr in arrays)
        mismatch = builder.or_(builder.icmp_signed("!=", K_b, K), builder.or_(
            builder.icmp_signed("!=", M_out, M), builder.icmp_signed("!=", N_out, N)))
        with cgutils.if_unlikely(builder, mismatch):
            context.call_conv.return_user_exc(builder, ValueError,
                                              ("matmul: the shapes of a, b and out do not match",))
        limit = ir.Constant(intp, 2**31 - 1)
        too_big = builder.or_(builder.icmp_signed(">", M, limit), builder.or_(
            builder.icmp_signed(">", N, limit), builder.icmp_signed(">", K, limit)))
        with cgutils.if_unlikely(builder, too_big):
            context.call_conv.return_user_exc(builder, ValueError,
                                              ("matmul: a dimension does not fit BLAS's 32-bit integers",))
        zero = ir.Constant(intp, 0)
        # K = 0 included: BLAS then sets out = beta * out (0 for beta = 0, whatever out held)
        nonempty = builder.and_(builder.icmp_signed("!=", M, zero), builder.icmp_signed("!=", N, zero))
        with builder.if_then(nonempty, likely=True):
            gemm = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
                ir.IntType(32), [char, char, char, intp, intp, intp, void_p, void_p, intp, void_p, intp,
                                 void_p, void_p, intp]), "numba_xxgemm")

            def operand(ty, arr, rows, cols):
                # BLAS is column-major: a C array is its own transpose there, an F array needs 't'
                trans = ir.Constant(char, ord("n" if ty.layout == "C" else "t"))
                # BLAS refuses a leading dimension below 1 even where it reads nothing (K = 0)
                ld = cols if ty.layout == "C" else rows
                one = ir.Constant(ld.type, 1)
                ld = builder.select(builder.icmp_signed("<", ld, one), one, ld)
                return trans, ld, builder.bitcast(arr.data, void_p)

            # out (M, N) row-major is outᵀ = bᵀ aᵀ column-major: BLAS's A is b and its B is a
            trans_b, ld_b, data_b = operand(sig.args[1], arrays[1], K, N)
            trans_a, ld_a, data_a = operand(sig.args[0], arrays[0], M, K)
            alpha = cgutils.alloca_once_value(builder, context.get_constant(dtype, 1.0))
            scale = cgutils.alloca_once_value(builder, context.cast(builder, args[3], sig.args[3], dtype))
            status = builder.call(gemm, [
                ir.Constant(char, ord(get_blas_kind(dtype))), trans_b, trans_a, N, M, K,
                builder.bitcast(alpha, void_p), data_b, ld_b, data_a, ld_a, builder.bitcast(scale, void_p),
                builder.bitcast(arrays[2].data, void_p), N])
            check_blas_return(context, builder, status)  # fails only without BLAS: aborts, as np.dot
        return context.get_dummy_value()

    return types.void(a, b, out, types.float64), codegen


@linked(lambda f: (f[:, ::1], types.float64[::1], f[:, ::1], f[:, ::1], types.float64, types.int64, f[:, ::1],
                    f[:, ::1], f[::1], f[::1], types.int64[::1]))
@jit
def weight_gradients(da_rows, scale_rows, h_rows, x_rows, log_cutoff, block_rows, g_ih, g_hh, g_b, pool,
                     cursor):
    """Mantissas of dW_ih, dW_hh, db relative to exp(S*), S* = max scale
    (identity 2 of :mod:`rnnsim.logdomain`).

    da_rows : (R, G*H) adjoint mantissas of the pre-activations (unit scale per row)
    scale_rows : (R,) float64 their log-scales
    h_rows : (R, H) h_{t-1} for each row
    x_rows : (R, D) x_t for each row
    log_cutoff : float, ``rnnsim.logdomain.log_weight_cutoff(dtype)``
    block_rows : int, rows per partial product (``rnnsim.config.CPU_WEIGHT_GRADIENT_ROWS``; below 1 means 1)
    g_ih, g_hh, g_b : out, (G*H, D), (G*H, H), (G*H,)
    pool, cursor : the item's workspace (:func:`~rnnsim.kernels.cpu_common.take`), for a
        block of Z and the running sum (G*H, H+D+1)

    Returns S* (float64; -inf when every adjoint is zero).

    Notes
    -----
    [dW_hh | dW_ih | db] = sum_r exp(s_r) da_r [h_r, x_r, 1]ᵀ = exp(S*) · DAᵀ Z, with
    Z_r = w_r [h_r, x_r, 1] and w_r = exp(s_r - S*) ≤ 1: one product instead of three,
    and the weights go on the narrow factor Z rather than on DA.
    The product runs over blocks of ``block_rows`` rows, which BLAS sums in place
    (beta = 1): Z is built one block at a time, so it stays in cache and its memory
    does not grow with T.
    Rows with ln w_r <= log_cutoff (sqrt(tiny) by default: 1e-19 in float32, 1e-154
    in float64) are dropped: their products would be denormal numbers, which cost
    the CPU ~100x per operation (seen: 20x slower float32 weight gradients).
    """
    R, GH = da_rows.shape
    H, D = h_rows.shape[1], x_rows.shape[1]
    W = H + D + 1
    s_star = -np.inf
    for r in range(R):
        s_star = scale_rows[r] if scale_rows[r] > s_star else s_star
    n_max = block_rows if block_rows < R else R
    n_max = n_max if n_max > 1 else 1
    z = reshaped(take(pool, cursor, n_max * W), (n_max, W))
    g = reshaped(take(pool, cursor, GH * W), (GH, W))
    if R == 0:
        for i in range(GH):
            for j in range(W):
                g[i, j] = 0
    for r0 in range(0, R, n_max):
        n = R - r0 if R - r0 < n_max else n_max
        for i in range(n):
            r = r0 + i
            rel = scale_rows[r] - s_star
            w = typed(z, math.exp(rel) if rel > log_cutoff else 0.0)
            for j in range(H):
                z[i, j] = w * h_rows[r, j]
            for j in range(D):
                z[i, H + j] = w * x_rows[r, j]
            z[i, H + D] = w
        matmul(da_rows[r0:r0 + n].T, z[:n], g, 1.0 if r0 > 0 else 0.0)  # BLAS sums the blocks in place
    for i in range(GH):  # element loops: an array-to-array slice assignment compiles
        for j in range(H):  # numba's shape-mismatch error formatting (~1 s per rank)
            g_hh[i, j] = g[i, j]
        for j in range(D):
            g_ih[i, j] = g[i, H + j]
        g_b[i] = g[i, H + D]
    return s_star
