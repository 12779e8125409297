"""Host driver for the CPU kernels; it knows no cell by name.

Three layers, as in stumpy: each cell's @njit kernels (``cpu_<cell>.py``, named by
:attr:`rnnsim.cells.Cell.cpu_kernels`: the forward above the backward, and the two
per-item entry points ``gradients_item`` and ``forward_item``, run in parallel over
work items, each writing only its own output slots; see :func:`_run_items`), and the
thin functions :func:`gradients` / :func:`forward` that the engine calls.

A work item is one network and a tile of its sequences. Items never share an
output slot; the partial weight gradients of the tiles of one network are merged
afterwards in the log domain (identity 2 of :mod:`rnnsim.logdomain`). When there are
fewer items than threads (one network, one sequence), the threads left over join the
items as teams on their per-step products (:mod:`rnnsim.kernels.cpu_team`,
``config.CPU_TEAM_MIN_SHARE``).

Memory: the activations that BPTT keeps (see the forward kernels) live only while
their item runs, so at most O(threads · tile · T · G·H) at once, plus the (E, B, T+1)
log profiles; no chunking of the ensemble is needed on the CPU. They live in a
workspace that each thread keeps across calls (up to ``config.CPU_WORKSPACE_BYTES`` in
all; :func:`release_workspaces` frees it), so a repeated call allocates nothing that
grows with T: no page faults, no zeroing of fresh pages by the kernel.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import itertools
import threading
import weakref

import numpy as np
from numba import get_num_threads

from .. import cells, config, logdomain
from . import cpu_team
from .cpu_common import WORKSPACE_ALIGN_BYTES, link_addresses
from .cpu_matmul import pack_panels, step_product, team_helper, weight_gradients

# The linked helpers that each kind of item kernel calls, of every cell
# (rnnsim.kernels.cpu_common.call): only these compile for a call of that kind.
_FORWARD_HELPERS = (pack_panels, step_product)
_GRADIENTS_HELPERS = (pack_panels, step_product, weight_gradients)


@functools.lru_cache(maxsize=None)
def _thread_pool(threads):
    return concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rnnsim")


class _Pools(dict):
    """One thread's workspaces, {(role, dtype): 1-D array}; weakly referenced from
    ``_workspace_threads``, so a thread that ends takes its workspaces with it."""

    __eq__ = object.__eq__  # identity, not content: two threads' empty dicts are two members
    __hash__ = object.__hash__


_workspaces = threading.local()  # .pools: this thread's _Pools
_workspace_lock = threading.Lock()
_workspace_threads = weakref.WeakSet()  # every live thread's _Pools (release_workspaces, workspace_bytes)


def _workspace(key):
    """This thread's workspace for ``key`` = (role, dtype), 1-D; empty until kept."""
    pools = getattr(_workspaces, "pools", None)
    if pools is None:
        pools = _workspaces.pools = _Pools()
        with _workspace_lock:
            _workspace_threads.add(pools)
    pool = pools.get(key)
    return pool if pool is not None else np.empty(0, key[1])


def _keep_workspace(key, n):
    """Grow this thread's workspace ``key`` to ``n`` elements for the items that follow,
    within a thread's share of ``config.CPU_WORKSPACE_BYTES`` (else, or when the memory
    is not there, it stays as it is and the items allocate what is missing, as without
    a workspace)."""
    share = max(0, int(config.CPU_WORKSPACE_BYTES)) // max(1, get_num_threads())
    pools = _workspaces.pools
    others = sum(pool.nbytes for other, pool in pools.items() if other != key)
    itemsize = key[1].itemsize
    if n * itemsize + others > share:
        return
    pools.pop(key, None)  # the old one goes first: never both at once
    try:
        raw = np.empty(n + WORKSPACE_ALIGN_BYTES // itemsize, key[1])  # numpy asks for huge pages; numba not
    except MemoryError:
        return
    first = (-raw.ctypes.data % WORKSPACE_ALIGN_BYTES) // itemsize  # take() keeps the offsets aligned
    pools[key] = raw[first:first + n]


def workspace_bytes():
    """Bytes of the CPU workspaces that the threads keep between calls."""
    with _workspace_lock:
        return sum(pool.nbytes for pools in list(_workspace_threads) for pool in list(pools.values()))


def release_workspaces():
    """Free the CPU workspaces that the threads keep between calls (the next call
    allocates afresh and keeps them again)."""
    with _workspace_lock:
        for pools in list(_workspace_threads):
            pools.clear()


def _run_items(item_kernel, n_items, *args, dtype=None, team_size=1, helpers=()):
    """Run ``item_kernel(item, *args)`` for every item on ``numba.get_num_threads()`` threads
    (the calling thread and a pool's), and re-raise the first exception of an item.

    The item kernels are ``nogil`` @njit functions, so Python threads run them in
    parallel. This replaces a ``prange`` driver whose parfor alone took ~20 s to
    compile on first use (numba re-optimises every inlined callee inside it); each
    item writes only its own output slots, exactly as a prange body would.

    With ``dtype``, the kernel is called as ``item_kernel(item, pool, pool64, cursors,
    teams, links, *args)``: the running thread's workspaces in ``dtype`` and in float64, the
    (n_items, 2) elements each item took from them
    (:func:`rnnsim.kernels.cpu_common.take`), by which a short workspace grows,
    the items' team control blocks, (n_items, TEAM_WORDS): with ``team_size`` > 1,
    each item's thread leads ``team_size - 1`` helper threads of its own on the
    per-step products (:mod:`rnnsim.kernels.cpu_team`), and the addresses of the linked
    ``helpers`` that the kernel calls (:func:`rnnsim.kernels.cpu_common.link_addresses`).
    """
    if dtype is None:
        def run(item):
            item_kernel(item, *args)
    else:
        # two roles, so that a float64 call's two workspaces never alias
        keys = (("values", np.dtype(dtype)), ("scales", np.dtype(np.float64)))
        cursors = np.zeros((n_items, 2), np.int64)
        teams = np.zeros((n_items, cpu_team.TEAM_WORDS), np.int64)
        teams[:, cpu_team.SIZE] = team_size
        like = np.empty(0, dtype)
        links = link_addresses(dtype, helpers)

        def run(item):
            pools = [_workspace(key) for key in keys]
            with _helpers(teams[item], like):
                item_kernel(item, pools[0], pools[1], cursors, teams, links, *args)
            sizes = [pool.size for pool in pools]
            del pools  # a short workspace is freed before its larger successor is made
            for key, size, used in zip(keys, sizes, cursors[item]):
                if used > size:
                    _keep_workspace(key, int(used))
    threads = min(get_num_threads(), n_items)
    if threads <= 1:
        for item in range(n_items):
            run(item)
        return
    # The calling thread works too, beside threads - 1 pool threads, and each takes the
    # next item until none is left: one handoff per helper thread, not one per item
    # (a future per item cost ~80 us at 2 items, more than a small item itself).
    next_item = itertools.count().__next__  # one C call: atomic under the GIL
    failed = []

    def take_items():
        while not failed:
            item = next_item()
            if item >= n_items:
                return
            try:
                run(item)
            except BaseException as exc:  # the caller re-raises it, after every thread stopped
                failed.append(exc)

    helpers = [_thread_pool(threads - 1).submit(take_items) for _ in range(threads - 1)]
    take_items()
    for helper in helpers:
        helper.cancel()  # one that has not started yet finds no item left anyway
    concurrent.futures.wait(helpers)
    if failed:
        raise failed[0]


@contextlib.contextmanager
def _helpers(team, like):
    """Threads of their own for the helpers of ``team`` while its leader runs the item.

    Never pool threads: a helper queued behind another call's work would leave its
    leader waiting. The helper's code is compiled here first, in the leader's thread,
    so that a compile error is raised, not lost in a helper while the leader waits."""
    size = int(team[cpu_team.SIZE])
    if size <= 1:
        yield
        return
    dismissed = np.zeros(cpu_team.TEAM_WORDS, np.int64)
    cpu_team.dismiss(dismissed)
    team_helper(dismissed, 1, like)  # returns at once: compiles (or loads) it
    helpers = []
    try:
        for rank in range(1, size):
            helper = threading.Thread(target=team_helper, args=(team, rank, like), name="rnnsim-team",
                                      daemon=True)
            helper.start()  # if a later one cannot start, the item does not run and these are dismissed
            helpers.append(helper)
        yield
    finally:
        cpu_team.dismiss(team)
        for helper in helpers:
            helper.join()


def _team_size(n_items, nb, G, H):
    """Threads per item: the threads that the items leave free, shared between them, but
    no more than leave each member ``config.CPU_TEAM_MIN_SHARE`` entries of W_hh (H x G·H),
    the columns of every step's product that it computes, when the item has one sequence,
    and ``config.CPU_TEAM_MIN_SHARE_SEQUENCES`` when it has more.

    One sequence's product streams W_hh at the memory's pace, and each member streams
    only its share; several sequences share that stream, run nearer the core's peak, and
    every step their rows (and the members' columns of the result) cross between cores."""
    threads = get_num_threads()
    if n_items >= threads:
        return 1
    least = config.CPU_TEAM_MIN_SHARE if nb == 1 else config.CPU_TEAM_MIN_SHARE_SEQUENCES
    return max(1, min(threads // n_items, G * H * H // max(1, int(least))))


@functools.lru_cache(maxsize=1)
def _blas_libraries():
    # numba's BLAS calls go to SciPy's OpenBLAS; load it first so the controller sees it.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


@contextlib.contextmanager
def _single_threaded_blas():
    """BLAS runs inside our item threads: its own threads would oversubscribe the
    cores and spin against each other (seen: 6x slower float32 gradients).

    threadpoolctl's ``limit`` as a direct call on each library's controller: the
    same setting and restore, without its per-call survey of every library (~15 us
    of a ~0.3 ms call at the smallest shapes)."""
    libraries = _blas_libraries()
    before = [library.get_num_threads() for library in libraries]
    for library, threads in zip(libraries, before):
        if threads != 1:
            library.set_num_threads(1)
    try:
        yield
    finally:
        for library, threads in zip(libraries, before):
            if threads != 1:
                library.set_num_threads(threads)


def sequence_tile(E, B, work, threads):
    """Sequences per work item of a call of E networks of B sequences on ``threads`` threads.

    ``config.CPU_SEQUENCE_TILE`` (at most B), halved while the call has fewer items than
    threads and each halved tile keeps at least ``config.CPU_SPLIT_MIN_SEQUENCES``
    sequences and ``config.CPU_SPLIT_MIN_WORK`` multiply-adds, ``work`` per sequence
    (T·G·H·(H + D), :func:`sequence_work`). A smaller item costs its thread more than it saves:
    a handoff, fixed costs of its own, and a per-step product that streams all of W_hh for
    fewer rows (see ``rnnsim.config``).
    """
    tile = max(1, min(int(config.CPU_SEQUENCE_TILE), B))
    while E * -(-B // tile) < threads:
        half = -(-tile // 2)
        if (half == tile or half < int(config.CPU_SPLIT_MIN_SEQUENCES)
                or half * work < int(config.CPU_SPLIT_MIN_WORK)):
            break
        tile = half
    return tile


def sequence_work(T, G, H, D):
    """Multiply-adds of one sequence's forward recurrence and input projections, T·G·H·(H + D):
    the measure of an item's work in :func:`sequence_tile` (its backward costs about twice that)."""
    return T * G * H * (H + D)


def _work_items(E, B, work):
    """Split every network's B sequences into tiles of :func:`sequence_tile` sequences.

    Returns int64 ``(net, b0, b1)``: item i is sequences ``b0[i]:b1[i]`` of network
    ``net[i]``. Only a network's last tile can be short, so item 0's is the largest."""
    tile = sequence_tile(E, B, work, get_num_threads())
    tiles = -(-B // tile)
    item = np.arange(E * tiles, dtype=np.int64)  # network-major: a network's tiles are consecutive
    net, b0 = item // tiles, item % tiles * tile
    return net, b0, np.minimum(b0 + tile, B)


def _prepared_weights(params):
    """Transposed, contiguous copies so every per-step product reads rows."""
    return (np.ascontiguousarray(params["weight_ih_l0"].transpose(0, 2, 1)),
            np.ascontiguousarray(params["weight_hh_l0"].transpose(0, 2, 1)))


def gradients(problem, params, inputs, targets, adjoints=None):
    """Backend contract of :func:`rnnsim.reference.raw_gradients`, on the CPU.

    With ``adjoints`` (E, B, T+1, H) in the problem's dtype, the item kernels inject
    them as the per-step dL/dh_t instead of computing the fused cross-entropy, and
    ``loss``, ``weight_out``, ``bias_out`` are left out of the result.
    """
    spec = cells.get(problem.cell)
    E, B, T, H, D, K = problem.E, problem.B, problem.T, problem.H, problem.D, problem.K
    GH, dt = problem.G * H, problem.dtype
    injected = adjoints is not None
    loss_every = injected or problem.loss == "every"
    w_ih_t, w_hh_t = _prepared_weights(params)
    # the loss kind goes in by the targets' ndim, so that only its path compiles
    # (rnnsim.kernels.cpu_readout): (E, B, T) for loss "every", (E, B) for "last",
    # empty 1-d beside injected adjoints
    given = np.ascontiguousarray(adjoints, dtype=dt) if injected else None
    tgt = np.empty(0, np.int64) if injected else np.ascontiguousarray(targets, dtype=np.int64)
    net, b0, b1 = _work_items(E, B, sequence_work(T, problem.G, H, D))
    n = len(net)
    part_ih = np.empty((n, GH, D), dt)
    part_hh = np.empty((n, GH, H), dt)
    part_bih = np.empty((n, GH), dt)
    part_bhh = np.empty((n, GH), dt)
    part_scale = np.empty(n)
    part_out = np.empty((n, K, H), dt)
    part_bout = np.empty((n, K), dt)
    part_loss = np.empty(n)
    profiles = np.empty((len(spec.state), E, B, T + 1))  # ln‖dL/d(state_t)‖, in spec.state order
    h_last = np.empty((E, B, H), dt)
    cutoff = logdomain.log_weight_cutoff(dt)
    block_rows = int(config.CPU_WEIGHT_GRADIENT_ROWS)  # weight_gradients takes at least 1
    with _single_threaded_blas():
        _run_items(spec.kernels("cpu").gradients_item, n, inputs, tgt, given, w_ih_t, w_hh_t,
                   params["weight_hh_l0"], params["bias_ih_l0"], params["bias_hh_l0"], params["weight_out"],
                   params["bias_out"], net, b0, b1, cutoff, block_rows, part_ih, part_hh, part_bih, part_bhh,
                   part_scale, part_out, part_bout, part_loss, profiles, h_last, dtype=dt,
                   team_size=_team_size(n, int(b1[0] - b0[0]), problem.G, H), helpers=_GRADIENTS_HELPERS)
    parts = {"weight_ih_l0": part_ih, "weight_hh_l0": part_hh, "bias_ih_l0": part_bih}
    if not spec.folded_bias:  # else bias_hh_l0 follows from the bias tie (logdomain.tie_biases)
        parts["bias_hh_l0"] = part_bhh
    mantissas, log_scale = logdomain.merge_scaled(parts, part_scale, net, E, cutoff)
    count = B * T if loss_every else B
    raw = {"mantissas": mantissas, "log_scale": log_scale, "h_last": h_last}
    if not injected:
        raw.update(weight_out=_sum_by(net, part_out, E), bias_out=_sum_by(net, part_bout, E),
                   loss=_sum_by(net, part_loss, E) / count)
    for i, key in enumerate(spec.profile_keys().values()):
        raw[key] = profiles[i]
    return raw


def _sum_by(net, parts, E):
    return logdomain.group_sum(parts, net, E)


def forward(problem, params, inputs):
    """Every state component for t = 1..T, each (E, B, T, H), in the inputs' dtype."""
    spec = cells.get(problem.cell)
    w_ih_t, w_hh_t = _prepared_weights(params)
    net, b0, b1 = _work_items(problem.E, problem.B, sequence_work(problem.T, problem.G, problem.H, problem.D))
    states = np.empty((len(spec.state), problem.E, problem.B, problem.T, problem.H), problem.dtype)
    with _single_threaded_blas():
        _run_items(spec.kernels("cpu").forward_item, len(net), inputs, w_ih_t, w_hh_t, params["bias_ih_l0"],
                   params["bias_hh_l0"], net, b0, b1, states, dtype=problem.dtype,
                   team_size=_team_size(len(net), int(b1[0] - b0[0]), problem.G, problem.H),
                   helpers=_FORWARD_HELPERS)
    return dict(zip(spec.state, states))


def lyapunov(problem, params, inputs, k, qr_every, warmup, seed=0):
    """Lyapunov spectra (the contract of :func:`rnnsim.reference.lyapunov_raw`), on the CPU,
    in float64 whatever the inputs' dtype; one work item per (network, sequence)."""
    from ..reference import initial_tangents, lyapunov_steps

    spec = cells.get(problem.cell)
    E, B, T = problem.E, problem.B, problem.T
    p64 = {key: v.astype(np.float64) for key, v in params.items()}
    w_ih_t, w_hh_t = _prepared_weights(p64)
    tangent0 = initial_tangents(len(spec.state) * problem.H, k, seed)
    net = np.repeat(np.arange(E, dtype=np.int64), B)
    seq = np.tile(np.arange(B, dtype=np.int64), E)
    growth = np.zeros((E, B, k))
    log_growth = np.empty((E, B, T))
    with _single_threaded_blas():
        _run_items(spec.kernels("cpu").lyapunov_item, E * B, inputs.astype(np.float64), w_ih_t, w_hh_t,
                   p64["bias_ih_l0"], p64["bias_hh_l0"], net, seq, tangent0, qr_every, warmup, growth,
                   log_growth)
    steps = lyapunov_steps(T, qr_every, warmup)
    return {"exponents_per_sequence": growth / steps, "log_growth": log_growth, "steps": steps}
