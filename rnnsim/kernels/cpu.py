"""Host driver for the CPU kernels.

Three layers, as in stumpy: the per-cell @njit kernels (``cpu_rnn``, ``cpu_lstm``),
the per-item driver kernels below (run in parallel over work items, each writing
only its own output slots; see :func:`_run_items`), and the thin functions
:func:`gradients` / :func:`forward` that the engine calls.

A work item is one network and a tile of its sequences. Items never share an
output slot; the partial weight gradients of the tiles of one network are merged
afterwards in the log domain (:func:`_merge_tiles`).

Memory: the activations that BPTT keeps (see the forward kernels) live only while
their item runs, so at most O(threads · tile · T · G·H) at once, plus the (E, B, T+1)
log profiles; no chunking of the ensemble is needed on the CPU.
"""
from __future__ import annotations

import concurrent.futures
import functools
import math

import numpy as np
from numba import get_num_threads

from .. import config
from ..logdomain import RECURRENT_KEYS
from .cpu_common import jit, log_norms, output_layer, renormalise, weight_gradients
from .cpu_lstm import lstm_backward, lstm_forward
from .cpu_rnn import rnn_backward, rnn_forward


@jit
def _forward_item(is_lstm, inputs, e, b0, nb, w_ih_t, w_hh_t, bias):
    """Run one work item forward; returns the buffers that BPTT keeps.

    x (T, nb, D) time-major inputs; hs (T+1, nb, H); pre (T, nb, G*H) pre-activations
    (rnn) or activated gates (lstm); cs, tanh_cs (lstm only, empty for the rnn).
    """
    T, D = inputs.shape[2], inputs.shape[3]
    H, GH = w_hh_t.shape[1], w_hh_t.shape[2]
    x = np.empty((T, nb, D), inputs.dtype)
    for b in range(nb):
        for t in range(T):
            x[t, b] = inputs[e, b0 + b, t]
    hs = np.empty((T + 1, nb, H), inputs.dtype)
    pre = np.empty((T, nb, GH), inputs.dtype)
    cs = np.empty((T + 1 if is_lstm else 0, nb, H), inputs.dtype)
    tanh_cs = np.empty((T if is_lstm else 0, nb, H), inputs.dtype)
    if is_lstm:
        lstm_forward(x, w_ih_t[e], w_hh_t[e], bias[e], pre, hs, cs, tanh_cs)
    else:
        rnn_forward(x, w_ih_t[e], w_hh_t[e], bias[e], pre, hs)
    return x, hs, pre, cs, tanh_cs


@jit
def _gradients_item(item, is_lstm, loss_every, inputs, targets, w_ih_t, w_hh_t, w_hh, bias, w_out,
                    b_out, item_net, item_b0, item_b1, part_ih, part_hh, part_b, part_scale, part_out,
                    part_bout, part_loss, log_h, log_c):
    """Forward, readout and log-domain BPTT of one work item; writes only its own slots."""
    E, B, T, D = inputs.shape
    H = w_hh.shape[2]
    GH = w_hh.shape[1]
    K = w_out.shape[1]
    inv_count = 1.0 / (B * T) if loss_every else 1.0 / B
    e, b0, b1 = item_net[item], item_b0[item], item_b1[item]
    nb = b1 - b0
    # ``da`` holds the pre-activations/gates, then (in place) their adjoints.
    x, hs, da, cs, tanh_cs = _forward_item(is_lstm, inputs, e, b0, nb, w_ih_t, w_hh_t, bias)

    # Readout: loss terms and the per-step adjoints dl/dh they inject.
    if loss_every:
        rows = T * nb
        tgt = np.empty(rows, np.int64)
        for t in range(T):
            for b in range(nb):
                tgt[t * nb + b] = targets[e, b0 + b, t]
        local = np.zeros((T + 1, nb, H), inputs.dtype)
        h_rows = hs[1:].reshape(rows, H)
        dlogits = np.empty((rows, K), inputs.dtype)
        part_loss[item] = output_layer(h_rows, w_out[e], b_out[e], tgt, inv_count, dlogits,
                                       local[1:].reshape(rows, H))
        local_log = np.empty((T + 1, nb))
        log_norms(local.reshape((T + 1) * nb, H), local_log.reshape((T + 1) * nb))
        mant_h = local[T].copy()
    else:
        h_rows = hs[T]
        dlogits = np.empty((nb, K), inputs.dtype)
        mant_h = np.empty((nb, H), inputs.dtype)
        part_loss[item] = output_layer(h_rows, w_out[e], b_out[e], targets[e, b0:b1, 0], inv_count,
                                       dlogits, mant_h)
        local = np.zeros((0, nb, H), inputs.dtype)
        local_log = np.zeros((0, nb))
    np.dot(dlogits.T, h_rows, part_out[item])
    for k in range(K):
        acc = 0.0
        for r in range(dlogits.shape[0]):
            acc += dlogits[r, k]
        part_bout[item, k] = acc

    # BPTT in the log domain, starting from the unit-norm dL/dh_T.
    scale = np.zeros(nb)
    mant_c = np.zeros((nb, H if is_lstm else 0), inputs.dtype)
    renormalise(scale, mant_h, mant_c, local[:0, 0], local_log[:0, 0])
    da_scale = np.empty((T, nb))
    if is_lstm:
        lstm_backward(da, cs, tanh_cs, w_hh[e], local, local_log, mant_h, mant_c, scale,
                      da_scale, log_h[e, b0:b1], log_c[e, b0:b1])
    else:
        rnn_backward(hs, w_hh[e], local, local_log, mant_h, scale, da, da_scale, log_h[e, b0:b1])
    part_scale[item] = weight_gradients(
        da.reshape(T * nb, GH), da_scale.reshape(T * nb), hs[:T].reshape(T * nb, H),
        x.reshape(T * nb, D), part_ih[item], part_hh[item], part_b[item])


@jit
def _forward_output_item(item, is_lstm, inputs, w_ih_t, w_hh_t, bias, item_net, item_b0, item_b1,
                         h_out, c_out):
    """Forward pass of one work item, copied into its own slots of h_out/c_out."""
    T = inputs.shape[2]
    e, b0, nb = item_net[item], item_b0[item], item_b1[item] - item_b0[item]
    _, hs, _, cs, _ = _forward_item(is_lstm, inputs, e, b0, nb, w_ih_t, w_hh_t, bias)
    for b in range(nb):
        for t in range(T):
            h_out[e, b0 + b, t] = hs[t + 1, b]
            if is_lstm:
                c_out[e, b0 + b, t] = cs[t + 1, b]


@functools.lru_cache(maxsize=None)
def _thread_pool(threads):
    return concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rnnsim")


def _run_items(item_kernel, n_items, *args):
    """Run ``item_kernel(item, *args)`` for every item on ``numba.get_num_threads()`` threads.

    The item kernels are ``nogil`` @njit functions, so Python threads run them in
    parallel. This replaces a ``prange`` driver whose parfor alone took ~20 s to
    compile on first use (numba re-optimises every inlined callee inside it); each
    item writes only its own output slots, exactly as a prange body would.
    """
    threads = min(get_num_threads(), n_items)
    if threads <= 1:
        for item in range(n_items):
            item_kernel(item, *args)
        return
    for _ in _thread_pool(threads).map(lambda item: item_kernel(item, *args), range(n_items)):
        pass  # re-raises the first exception of an item


@functools.lru_cache(maxsize=1)
def _blas_controller():
    # numba's np.dot calls SciPy's OpenBLAS; load it first so the controller sees it.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


def _single_threaded_blas():
    """BLAS runs inside our item threads: its own threads would oversubscribe the
    cores and spin against each other (seen: 6x slower float32 gradients)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def _work_items(E, B):
    """Split every network's B sequences into tiles; enough items to fill every thread."""
    tile = max(1, min(config.CPU_SEQUENCE_TILE, B))
    threads = get_num_threads()
    while E * math.ceil(B / tile) < threads and tile > 1:
        tile = math.ceil(tile / 2)
    starts = np.arange(0, B, tile)
    net = np.repeat(np.arange(E), len(starts))
    b0 = np.tile(starts, E)
    b1 = np.minimum(b0 + tile, B)
    return net.astype(np.int64), b0.astype(np.int64), b1.astype(np.int64)


def _prepared_weights(params):
    """Transposed, contiguous copies so every per-step product reads rows."""
    return (np.ascontiguousarray(params["weight_ih_l0"].transpose(0, 2, 1)),
            np.ascontiguousarray(params["weight_hh_l0"].transpose(0, 2, 1)),
            params["bias_ih_l0"] + params["bias_hh_l0"])


def _merge_tiles(parts, part_scale, item_net, E):
    """Sum per-tile mantissas into per-network ones, relative to each network's max scale.

    sum_i M_i exp(s_i) = exp(S) sum_i M_i exp(s_i - S),  S = max_i s_i.
    """
    top = np.full(E, -np.inf)
    np.maximum.at(top, item_net, part_scale)
    finite = np.isfinite(part_scale)  # a tile whose adjoints are all zero has scale -inf
    with np.errstate(invalid="ignore"):
        factor = np.where(finite, np.exp(np.where(finite, part_scale - top[item_net], 0.0)), 0.0)
    merged = {}
    for key, part in parts.items():
        out = np.zeros((E,) + part.shape[1:], dtype=np.float64)
        np.add.at(out, item_net, part * factor.reshape((-1,) + (1,) * (part.ndim - 1)))
        merged[key] = out
    return merged, top


def gradients(problem, params, inputs, targets):
    """Backend contract of :func:`rnnsim.reference.raw_gradients`, on the CPU."""
    E, B, T, H, D, K = problem.E, problem.B, problem.T, problem.H, problem.D, problem.K
    GH, dt = problem.G * H, problem.dtype
    is_lstm = problem.cell == "lstm"
    loss_every = problem.loss == "every"
    w_ih_t, w_hh_t, bias = _prepared_weights(params)
    tgt = targets if loss_every else targets[:, :, None]
    net, b0, b1 = _work_items(E, B)
    n = len(net)
    part_ih = np.empty((n, GH, D), dt)
    part_hh = np.empty((n, GH, H), dt)
    part_b = np.empty((n, GH), dt)
    part_scale = np.empty(n)
    part_out = np.empty((n, K, H), dt)
    part_bout = np.empty((n, K), dt)
    part_loss = np.empty(n)
    log_h = np.empty((E, B, T + 1))
    log_c = np.empty((E, B, T + 1) if is_lstm else (0, 0, 0))
    with _single_threaded_blas():
        _run_items(_gradients_item, n, is_lstm, loss_every, inputs, tgt, w_ih_t, w_hh_t,
                   params["weight_hh_l0"], bias, params["weight_out"], params["bias_out"], net, b0, b1,
                   part_ih, part_hh, part_b, part_scale, part_out, part_bout, part_loss, log_h, log_c)
    mantissas, log_scale = _merge_tiles(
        {"weight_ih_l0": part_ih, "weight_hh_l0": part_hh, "bias_ih_l0": part_b}, part_scale, net, E)
    mantissas["bias_hh_l0"] = mantissas["bias_ih_l0"].copy()
    assert set(mantissas) == set(RECURRENT_KEYS)
    count = B * T if loss_every else B
    raw = {
        "mantissas": mantissas,
        "log_scale": log_scale,
        "weight_out": _sum_by(net, part_out, E),
        "bias_out": _sum_by(net, part_bout, E),
        "loss": _sum_by(net, part_loss, E) / count,
        "log_grad_norm": log_h,
    }
    if is_lstm:
        raw["log_grad_norm_c"] = log_c
    return raw


def _sum_by(net, parts, E):
    out = np.zeros((E,) + parts.shape[1:], dtype=np.float64)
    np.add.at(out, net, parts)
    return out


def forward(problem, params, inputs):
    """Hidden (and cell) states for t = 1..T, (E, B, T, H), in the inputs' dtype."""
    E, B, T, H = problem.E, problem.B, problem.T, problem.H
    is_lstm = problem.cell == "lstm"
    w_ih_t, w_hh_t, bias = _prepared_weights(params)
    net, b0, b1 = _work_items(E, B)
    h_out = np.empty((E, B, T, H), problem.dtype)
    c_out = np.empty((E, B, T, H) if is_lstm else (0, 0, 0, 0), problem.dtype)
    with _single_threaded_blas():
        _run_items(_forward_output_item, len(net), is_lstm, inputs, w_ih_t, w_hh_t, bias, net, b0, b1,
                   h_out, c_out)
    out = {"h": h_out}
    if is_lstm:
        out["c"] = c_out
    return out
