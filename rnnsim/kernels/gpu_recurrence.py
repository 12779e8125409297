r"""numba.cuda device functions that every cell's recurrence kernels share.

* :func:`log_add_coefficients`: one log-domain BPTT update (identity 1 of
  :mod:`rnnsim.logdomain`), done by one thread per sequence from four block-reduced sums;
* :func:`recurrence_device_functions`: W_hh staging, zeroing, the backward projection,
  the loss term, the block reduction of per-sequence sums and the log-domain state update;
* :func:`backward_f64_layout`: where the backward kernels keep their float64 buffers.

Shared memory of the backward kernels
-------------------------------------
Everything a backward kernel keeps in shared memory is *dynamic*, so that its size is
limited only by the device's opt-in limit (227 KB on sm_90) and not by the 48 KB that
static shared memory may never exceed. The dynamic block starts with a float64
region (this module's reduction buffers and per-sequence state, :func:`backward_f64_layout`),
followed by the cell's arrays in the compute dtype. Both are views of the one dynamic
allocation (``cuda.shared.array(0, float64)`` and ``cuda.shared.array(0, real)`` start
at the same address, on the device as in the simulator); the float64 region comes
first so that both stay aligned. Buffers are flat and indexed ``offset + row * width +
col`` with compile-time offsets: a 2-D view (``reshape``) of a shared slice puts the
array descriptor in local memory and loses the shared address space, and plain slices
cost registers (both seen in the sm_90 build).
"""
from __future__ import annotations

import math
from functools import lru_cache
from types import SimpleNamespace

# Per-sequence sums that every backward step reduces over the block, as rows
# ``SUM_* * tile + s`` of the reduction buffers; a cell appends its own after these.
SUM_BB, SUM_LL, SUM_BL = range(3)  # |back|^2, |local|^2, back . local
NUM_COMMON_SUMS = 3

# Columns of the backward kernels' per-sequence state (float64); STATE_LOG_MC exists
# only in the state of a cell with a carried second component (the lstm's dL/dc).
STATE_SCALE, STATE_CA, STATE_CB, STATE_LOG_MH, STATE_LOG_MC = range(5)


def backward_f64_layout(num_sums, state_columns, tile, threads):
    """Word offsets of the float64 region at the start of a backward kernel's dynamic
    shared memory: reduction buffer ``red`` (rows x threads) at 0, ``red2`` (rows x parts)
    at ``off_red2``, the state (tile x state_columns) at ``off_state``; ``words`` in all.

    Pure arithmetic (no numba): the launch planner uses it before anything is compiled.
    """
    rows = num_sums * tile
    parts = max(1, threads // rows)  # threads per sum in the first reduction stage
    off_red2 = rows * threads
    off_state = off_red2 + rows * parts
    return SimpleNamespace(rows=rows, parts=parts, off_red2=off_red2, off_state=off_state,
                           words=off_state + tile * state_columns)


@lru_cache(maxsize=None)
def log_add_coefficients():
    r"""Device function: identity 1 of :mod:`rnnsim.logdomain` (renormalise, then add
    the loss term), for one sequence.

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
    This is :func:`rnnsim.logdomain.log_add` with the norm of the combined vector
    taken from the sums instead of a second pass over the units.
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


@lru_cache(maxsize=None)
def recurrence_device_functions(num_sums, state_columns, tile, threads):
    r"""Device functions that the recurrence kernels of every cell share.

    Parameters
    ----------
    num_sums : int
        Per-sequence sums reduced in every backward step (rows ``num_sums * tile``).
    state_columns : int
        Columns of the per-sequence state (4, or 5 with STATE_LOG_MC).
    tile, threads : int
        Sequences and threads per block, compile-time constants of the kernels.

    Returns
    -------
    types.SimpleNamespace
        The device functions by name, and the fields of :func:`backward_f64_layout`.
        Kernels bind the functions to local names (numba cannot type attribute
        access on a Python object).

    Notes
    -----
    The block-wide functions take ``tid``, the thread index, and stride by the block
    size. None of them contains a barrier or refers to ``cuda``: every
    ``syncthreads`` stays in the kernels, where it is plain that all threads reach
    it, and the simulator swaps its per-launch ``cuda`` module only into the
    kernels' own globals. They are ``register_jitable`` for the reason given in
    :func:`log_add_coefficients`; NVVM inlines them (the sm_90 PTX has no calls),
    so shared and local arrays passed in keep their address spaces. ``sh64`` is the
    kernel's dynamic shared memory as float64, holding ``red``, ``red2`` and the state
    at the offsets of :func:`backward_f64_layout` (compile-time constants: slices of
    it would carry their runtime bounds in registers).
    """
    from numba.cuda.extending import register_jitable

    TILE, TPB, COLS = tile, threads, state_columns
    layout = backward_f64_layout(num_sums, state_columns, tile, threads)
    rows, parts, RED2, STATE = layout.rows, layout.parts, layout.off_red2, layout.off_state
    coefficients = log_add_coefficients()

    @register_jitable
    def stage_matrix(sh, off, w, e, tid):
        """sh[off + r * C + c] = w[e, r, c]: network e's (R, C) matrix, row-major, in shared memory."""
        C = w.shape[2]
        for idx in range(tid, w.shape[1] * C, TPB):
            sh[off + idx] = w[e, idx // C, idx % C]

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
        for idx in range(tid, TILE * H, TPB):
            if b0 + idx // H < B:
                store[e, b0 + idx // H, 0, idx % H] = 0

    @register_jitable
    def init_state(sh64, tid):
        """The zero adjoint: log-scale and log-norms -inf, coefficients 0."""
        for s in range(tid, TILE, TPB):
            row = STATE + s * COLS
            sh64[row + STATE_SCALE] = -math.inf
            sh64[row + STATE_CA] = 0.0
            sh64[row + STATE_CB] = 0.0
            for col in range(STATE_LOG_MH, COLS):
                sh64[row + col] = -math.inf

    @register_jitable
    def state_value(sh64, s, col):
        """Column ``col`` of sequence s's state."""
        return sh64[STATE + s * COLS + col]

    @register_jitable
    def record_step(sh64, da_scale, log_h, e, b0, t, tid):
        """da_scale[e, b, t-1] = s_b and log_h[e, b, t] = s_b + ln|mant_h| (real sequences)."""
        B = log_h.shape[1]
        for s in range(tid, TILE, TPB):
            if b0 + s < B:
                row = STATE + s * COLS
                da_scale[e, b0 + s, t - 1] = sh64[row + STATE_SCALE]
                log_h[e, b0 + s, t] = sh64[row + STATE_SCALE] + sh64[row + STATE_LOG_MH]

    @register_jitable
    def record_log_norm(sh64, col, out, e, b0, t, tid):
        """out[e, b, t] = s_b + (column ``col`` of s's state, a log-norm), real sequences."""
        B = out.shape[1]
        for s in range(tid, TILE, TPB):
            if b0 + s < B:
                out[e, b0 + s, t] = sh64[STATE + s * COLS + STATE_SCALE] + sh64[STATE + s * COLS + col]

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
    def back_projection(acc, sh, off_w, w_hh, off_da, e, k, w_in_shared, active):
        """acc[s] = (W_hh^T da_s)[k] for the tile, or 0 where not ``active``.

        W_hh is (R, H) (R = G·H rows of the G gate blocks); da_s lies at
        sh[off_da + s * R:][:R] and W_hh at sh[off_w:][:R * H] when ``w_in_shared``.
        """
        R = w_hh.shape[1]
        H = w_hh.shape[2]
        for s in range(TILE):
            acc[s] = 0
        if active:
            for r in range(R):
                w = sh[off_w + r * H + k] if w_in_shared else w_hh[e, r, k]
                for s in range(TILE):
                    acc[s] += w * sh[off_da + s * R + r]

    @register_jitable
    def local_term(w_out, dlogits, has_loss, e, b, j, k):
        """(W_out^T dlogits[e, b, j])[k], the new loss term's dL/dh; 0 without one
        or for a padding sequence b >= B. A readout with no rows (K = 0) marks
        injected adjoints: ``dlogits`` (E, B, T, H) then holds dL/dh itself."""
        loc = 0.0
        if has_loss and b < dlogits.shape[1]:
            if w_out.shape[1] == 0:
                loc = dlogits[e, b, j, k]
            else:
                for c in range(w_out.shape[1]):
                    loc += w_out[e, c, k] * dlogits[e, b, j, c]
        return loc

    @register_jitable
    def store_back_local(sh, off_back, off_local, H, sums, s, k, back, loc):
        """Keep unit k of back and local for sequence s, and add to its three pair sums."""
        sh[off_back + s * H + k] = back
        sh[off_local + s * H + k] = loc
        sums[SUM_BB * TILE + s] += back * back
        sums[SUM_LL * TILE + s] += loc * loc
        sums[SUM_BL * TILE + s] += back * loc

    @register_jitable
    def publish_sums(sums, sh64, tid):
        """red[i, tid] = this thread's sum i; red is (rows x TPB)."""
        for i in range(rows):
            sh64[i * TPB + tid] = sums[i]

    @register_jitable
    def reduce_stage1(sh64, tid):
        """Block reduction, stage 1 (after a barrier on ``publish_sums``): red2[row, q] =
        the sum of red[row, q::parts], ``parts`` threads per row; red2 is (rows x parts)."""
        for idx in range(tid, rows * parts, TPB):
            row = idx // parts
            q = idx % parts
            total = 0.0
            for i in range(q, TPB, parts):
                total += sh64[row * TPB + i]
            sh64[RED2 + row * parts + q] = total

    @register_jitable
    def sequence_sum(sh64, row):
        """Block reduction, stage 2 (after a barrier on ``reduce_stage1``): the total of
        one row of red2, i.e. one sum of one sequence."""
        total = 0.0
        for q in range(parts):
            total += sh64[RED2 + row * parts + q]
        return total

    @register_jitable
    def log_add_update(sh64, s, cc):
        """Sequence s's log-domain step (:func:`log_add_coefficients`) from its reduced
        pair sums and |carry|^2 = ``cc``; updates its state row in place."""
        bb = sequence_sum(sh64, SUM_BB * TILE + s)
        ll = sequence_sum(sh64, SUM_LL * TILE + s)
        bl = sequence_sum(sh64, SUM_BL * TILE + s)
        row = STATE + s * COLS
        scale, ca, cb, log_mh, log_mc = coefficients(sh64[row + STATE_SCALE], bb, cc, ll, bl)
        sh64[row + STATE_SCALE] = scale
        sh64[row + STATE_CA] = ca
        sh64[row + STATE_CB] = cb
        sh64[row + STATE_LOG_MH] = log_mh
        if COLS > STATE_LOG_MC:  # a carried second component (the lstm's dL/dc)
            sh64[row + STATE_LOG_MC] = log_mc

    return SimpleNamespace(
        stage_matrix=stage_matrix, zero_shared=zero_shared, zero_first_step=zero_first_step,
        init_state=init_state, state_value=state_value, record_step=record_step,
        record_log_norm=record_log_norm, loss_step=loss_step, back_projection=back_projection,
        local_term=local_term, store_back_local=store_back_local, publish_sums=publish_sums,
        reduce_stage1=reduce_stage1, sequence_sum=sequence_sum, log_add_update=log_add_update,
        **vars(layout))
