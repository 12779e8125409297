r"""The Dask runner: a sweep's ensemble calls as tasks on a ``dask.distributed`` cluster.

The only module of rnnsim that imports dask (``pip install "rnnsim[distributed]"``).
:func:`rnnsim.sweep.run_sweep` with ``scheduler=ADDRESS`` (an existing cluster) or
``workers=N`` (a LocalCluster of N worker processes started here) hands its calls to
:func:`connect`; everything else stays in the client: the folder's lock, the
manifest, every write (the same atomic writes), ``--resume``.

What a task is
--------------
A task runs :func:`rnnsim.sweep.run.call_outputs`, the function the local runner
runs: networks from ``init_params`` and data from ``make_data`` of each (scale,
seed), the needed entries of ``COMPUTATIONS``, and the measures, which reduce the
call's results to the rows and profile arrays the client writes. A task is a chunk
of the points of one of the local runner's calls (:func:`split_calls`).

Identical numbers
-----------------
A network's numbers depend only on its (cell, T, scale, seed) and on how the CPU
driver tiles its B sequences into work items
(:func:`rnnsim.kernels.cpu.sequence_tile`): every item is one network's tile, the
items of a network are merged in a fixed order, and the tile is
``min(CPU_SEQUENCE_TILE, B)`` unless the call has fewer items than Numba threads, in
which case it may be halved (when the halves are large enough to be worth a thread:
:func:`local_halves`). So a task of n networks runs with at most n·ceil(B / tile)
Numba threads (:func:`task_threads`), which never halves its tiles, and a call is
split only if the local run (n networks, the client's thread count) did not halve
them either; otherwise it stays whole and runs with exactly the client's thread
count (bitwise identical on a worker that has that many). On the GPU calls are never
split. Each task sets its worker's Numba thread count for its own thread.

Granularity
-----------
Each call (cell, T) of n points carries work w = cost·T·n·B·H·(H + D) (multiply-adds
of the recurrence, weighted by the cell's cost). It is cut into
``k = min(n, round(w / target))`` chunks (at least 1) with
``target = max(MIN_TASK_WORK, total / (TASKS_PER_SLOT · slots))`` and ``slots`` the
cluster's worker threads: about 4 tasks per worker thread, so that the longest one
does not leave the others idle at the end, and none below :data:`MIN_TASK_WORK`
(about 0.4 s of one core), so that the scheduler's few milliseconds per task stay
below 1%. Tasks are submitted largest first.

Faults
------
A worker that dies mid-task costs a retry: the scheduler gives the task to another
worker (``distributed.scheduler.allowed-failures``, 3 by default), and a task that
raises is retried :data:`RETRIES` times. The client writes after every batch of
finished tasks, so a client killed at any moment loses at most the tasks in flight,
and ``--resume`` (through the same or another cluster) continues.

GPUs
----
``workers=N`` with ``device="cuda"`` starts one worker process per GPU, worker i
with ``CUDA_VISIBLE_DEVICES`` set to the i-th visible GPU (:func:`worker_env`); N
may not exceed the number of GPUs. On an existing cluster, start one ``dask worker
--nthreads 1`` per GPU, each with its own ``CUDA_VISIBLE_DEVICES`` (see the README).
"""
from __future__ import annotations

import contextlib
import math
import os

from .. import cells
from .. import config as settings
from .plan import Plan

MISSING = 'the Dask runner needs the distributed extra: pip install "rnnsim[distributed]"'

TASKS_PER_SLOT = 4
"""Tasks per worker thread the split aims for (load balance at the end of the sweep)."""

MIN_TASK_WORK = 1e9
"""The least work per task, in cost·T·networks·B·H·(H + D): about 0.4 s of one core of the
2-core Xeon the README's figures come from, against a few ms of scheduler overhead."""

RETRIES = 3
"""Retries of a task that raises (a task whose worker dies is rescheduled by the scheduler)."""


def require_dask() -> None:
    """Raise RuntimeError (one line naming the extra) unless dask.distributed is installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise RuntimeError(MISSING) from None


def _items_per_network(config) -> int:
    """The fewest work items any of the call's engine calls makes per network: the gradient
    map's batch, and with a train measure also the training batch (the evaluations run
    more sequences, so more items)."""
    batches = [config.batch] + ([config.train_batch] if config.train_task is not None else [])
    return min(math.ceil(b / max(1, min(settings.CPU_SEQUENCE_TILE, b))) for b in batches)


def local_halves(config, cell: str, T: int, n: int, threads: int) -> bool:
    """Whether the local run's call of n networks of (cell, T) at ``threads`` Numba threads
    halves its tiles (:func:`rnnsim.kernels.cpu.sequence_tile`).

    With a train measure, whenever it has fewer work items than threads: the training's
    calls run other batches and lengths, and a call counted as halving is only kept whole,
    which gives the local run's numbers all the same."""
    if n * _items_per_network(config) >= threads:
        return False
    if config.train_task is not None:
        return True
    from ..kernels import cpu

    work = cpu.sequence_work(T, cells.get(cell).G, config.hidden, config.input_size)
    return cpu.sequence_tile(n, config.batch, work, threads) < min(settings.CPU_SEQUENCE_TILE, config.batch)


def task_threads(config, n: int, wanted: int) -> int:
    """Numba threads for a task of n networks: at most ``wanted``, and never more than its work
    items, so that the CPU driver keeps every network's tiles as in the local run."""
    return max(1, min(wanted, n * _items_per_network(config)))


def task_work(config, cell, T, n) -> float:
    """Estimated work of n networks of (cell, T): cost·T·n·B·H·(H + D), times the training's
    factor with a train measure (:meth:`rnnsim.sweep.plan.Plan.work`)."""
    return Plan.work(config, cell, T, n) * config.batch * config.hidden * (config.hidden + config.input_size)


def split_calls(config, calls, device, slots, threads):
    """The tasks of ``calls``: ``[(cell, T, points, threads), ...]``, largest first.

    ``threads`` is the client's Numba thread count; a task's own count is ``None``
    (its worker's, capped by :func:`task_threads`) when it may be split, else
    ``threads`` (see the module notes). ``slots``: the cluster's worker threads.
    """
    if not calls:
        return []
    total = sum(task_work(config, cell, T, len(points)) for cell, T, points in calls)
    target = max(MIN_TASK_WORK, total / (TASKS_PER_SLOT * max(1, slots)))
    tasks = []
    for cell, T, points in calls:
        n = len(points)
        if device == "cuda" or local_halves(config, cell, T, n, threads):  # whole, as the local runner ran it
            tasks.append((cell, T, list(points), threads if device != "cuda" else None))
            continue
        k = max(1, min(n, round(task_work(config, cell, T, n) / target)))
        bounds = [round(i * n / k) for i in range(k + 1)]  # k near-equal chunks
        tasks += [(cell, T, list(points[a:b]), None) for a, b in zip(bounds, bounds[1:])]
    return sorted(tasks, key=lambda t: -task_work(config, t[0], t[1], len(t[2])))


def run_task(config, cell, T, points, device, needed, prepared, threads):
    """One task on a worker: :func:`rnnsim.sweep.run.call_outputs` under ``threads`` Numba threads."""
    import numba

    from .run import call_outputs
    if threads is None:  # a split chunk: the worker's threads, no more than the chunk's work items
        threads = task_threads(config, len(points), numba.get_num_threads())
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return call_outputs(config, cell, T, points, device, needed, prepared)


def _visible_gpus() -> list:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    try:
        from numba import cuda
        return [str(i) for i in range(len(cuda.gpus))]
    except Exception:  # no driver: no GPUs
        return []


def worker_env(workers: int, device: str, gpus=None) -> list:
    """The environment of each of ``workers`` local worker processes: {} on the CPU; with
    ``device="cuda"`` worker i sees only the i-th GPU (``CUDA_VISIBLE_DEVICES``).

    ``gpus``: the visible GPUs' ids (default: ``CUDA_VISIBLE_DEVICES``, else every GPU
    Numba finds). ValueError if there are fewer GPUs than workers.
    """
    if device != "cuda":
        return [{} for _ in range(workers)]
    gpus = _visible_gpus() if gpus is None else [str(g) for g in gpus]
    if workers > len(gpus):
        raise ValueError(f"workers is {workers} but only {len(gpus)} GPU(s) are visible; with device cuda "
                         "start one worker per GPU")
    return [{"CUDA_VISIBLE_DEVICES": gpus[i]} for i in range(workers)]


def _local_cluster(workers, device):
    import logging

    from distributed import Nanny, Scheduler, SpecCluster
    options = {"nthreads": 1, "host": "127.0.0.1", "dashboard": False, "silence_logs": logging.ERROR}
    specs = {f"rnnsim-{i}": {"cls": Nanny, "options": {**options, "env": env}}
             for i, env in enumerate(worker_env(workers, device))}
    scheduler = {"dashboard": False, "dashboard_address": "127.0.0.1:0", "host": "127.0.0.1"}
    return SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": scheduler},
                       silence_logs=logging.ERROR)


@contextlib.contextmanager
def connect(scheduler=None, workers=None, device="cpu"):
    """Connect to the scheduler at ``scheduler``, or start a LocalCluster of ``workers``
    processes; yield the runner that :func:`rnnsim.sweep.run._run` drives, and close what
    was opened. ``RuntimeError`` (one line) when the scheduler cannot be reached."""
    require_dask()
    from distributed import Client

    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = stack.enter_context(Client(scheduler, timeout="20s", set_as_default=False))
            except (OSError, TimeoutError, ValueError) as exc:
                raise RuntimeError(f"cannot reach the Dask scheduler at {scheduler}: "
                                   f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
            client.wait_for_workers(1, timeout=120)
            description = f"dask scheduler {scheduler}"
        else:
            cluster = stack.enter_context(_local_cluster(workers, device))
            client = stack.enter_context(Client(cluster, set_as_default=False))
            client.wait_for_workers(workers, timeout=120)
            description = f"dask LocalCluster, {workers} worker processes"
        yield _Runner(client, description, local_workers=workers)


class _Runner:
    """Submits the tasks of :func:`split_calls` and yields the finished ones in batches."""

    def __init__(self, client, description, local_workers=None):
        self.client, self.description, self.local_workers = client, description, local_workers

    def __call__(self, config, device, plan, calls, needed, prepared):
        import numba
        from distributed import as_completed

        threads = numba.get_num_threads()
        slots = sum(w["nthreads"] for w in self.client.scheduler_info(n_workers=-1)["workers"].values())
        share = max(1, threads // self.local_workers) if self.local_workers else None  # no oversubscription
        tasks = split_calls(config, calls, device, slots, threads)
        futures = {}
        for cell, T, points, own in tasks:
            if own is None and share is not None:
                own = task_threads(config, len(points), share)
            future = self.client.submit(run_task, config, cell, T, points, device, needed, prepared, own,
                                        retries=RETRIES, pure=False,
                                        priority=int(task_work(config, cell, T, len(points)) // 1e6))
            futures[future] = (cell, T, points)
        finished = 0
        try:
            for batch in as_completed(futures, with_results=True, raise_errors=False,
                                      loop=self.client.loop).batches():
                done = []
                for future, result in batch:
                    if future.status != "finished":
                        raise RuntimeError(f"a sweep task failed on the cluster: {_reason(result)}")
                    cell, T, points = futures.pop(future)
                    done.append((cell, T, points, *result))
                finished += len(done)
                running = min(len(futures), slots)
                yield done, f"{finished}/{len(tasks)} tasks done, {running} running"
        finally:
            if futures:  # the client stops early (an error, Ctrl-C): leave nothing queued
                self.client.cancel(list(futures))


def _reason(exc) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
