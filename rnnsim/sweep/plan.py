"""How a sweep is cut into ensemble calls, and the memory check that comes before any write.

All points of one (cell, T) run as one ensemble call of E = scales × seeds networks,
because that is where the kernels' speed goes. A call whose estimated peak memory
exceeds :data:`CALL_MEMORY_BYTES` is split into several calls of whole networks
(the numbers do not change: every network's weights and data depend only on its
own (scale, seed)). What cannot fit at all, a single network of a (cell, T) or the
sweep's table of points, is refused with one line naming the size and the limit
(:func:`rnnsim._memory.require`), before the results folder is touched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _memory, cells
from .. import config as settings
from . import measures, training

CALL_MEMORY_BYTES = 1 << 30
"""Host memory one ensemble call should use; larger (cell, T) groups are split into several calls."""

TABLE_BYTES_PER_POINT = 2048
"""Memory per grid point of the runner's own bookkeeping (the rows and lines of summary.csv)."""


def _workers(device: str) -> int:
    """Work items the CPU kernels run at once (their activations are alive together); none on the GPU."""
    if device == "cuda":
        return 0
    import numba
    return numba.get_num_threads()


def call_bytes(config, cell: str, T: int, networks: int, *, workers: int) -> int:
    """Estimated peak host memory of one ensemble call of ``networks`` networks of (cell, T).

    The engine's own peak (:func:`rnnsim._memory.gradients_bytes`), plus what the
    runner holds for the call: the concatenated parameters, stacked inputs and
    targets, one network's init and one seed's data being drawn, the call's data,
    and the log10 profiles the measures derive.
    """
    spec = cells.get(cell)
    E, B, H, D, K = networks, config.batch, config.hidden, config.input_size, config.classes
    itemsize = np.dtype(config.dtype).itemsize
    steps = T if config.loss == "every" else 1
    tile = max(1, min(settings.CPU_SEQUENCE_TILE, B))
    engine = _memory.gradients_bytes(spec.G, len(spec.state), E, B, T, D, H, K, itemsize,
                                     loss_every=config.loss == "every", workers=workers, tile=tile)
    one_data = B * T * D * itemsize + B * steps * 8
    stacked = E * (_memory.params_bytes(spec.G, 1, H, D, K, itemsize) + one_data)
    drawing = _memory.init_bytes(spec.G, 1, H, D, K, itemsize) + B * T * D * 8
    data = min(E, config.seeds) * one_data
    derived = 4 * E * B * (T + 1) * 8
    if "lyapunov" in config.measure:  # runs after the gradients, whose results it sits beside
        n, k = len(spec.state) * H, config.lyap_k
        derived += (8 * E * B * (4 * k * n + T) + 8 * n * n           # what rnnsim.lyapunov checks for
                    + E * _memory.params_bytes(spec.G, 1, H, D, K, 8) + E * B * T * D * 8)  # float64 copies
    if config.train_task is not None:  # runs after the gradients too, beside their results
        derived += training.call_bytes(config, cell, T, E, workers=workers, tile=tile)
    return engine + stacked + drawing + data + derived


def _profile_bytes(config, T) -> int:
    """Bytes of one point's arrays in a profile file (float64 at most)."""
    return sum(8 * int(np.prod(a.shape(config, T))) for a in measures.profile_arrays(config.measure))


@dataclass(frozen=True)
class Plan:
    """The calls' sizes and what the runner may keep between calls."""

    networks_per_call: dict  # (cell, T) -> E
    keep_networks: dict      # cell -> whether its networks are kept from one T to the next
    keep_data: dict          # T -> whether every seed's data of that T is kept across its calls

    @staticmethod
    def work(config, cell: str, T: int, networks: int) -> float:
        """Estimated work of one call, for the progress bar: the cell's cost per step × T × networks,
        times (1 + the training's work per network, :func:`rnnsim.sweep.training.work_per_network`)
        with a train measure."""
        factor = 1.0 + (training.work_per_network(config) if config.train_task is not None else 0.0)
        return cells.get(cell).cost * T * networks * factor

    def calls(self, config, done) -> list:
        """[(cell, T, [(scale, seed), ...]), ...] for the points not in ``done``, in run order."""
        calls = []
        for cell in config.cell:
            for T in config.lengths:
                pending = [(scale, seed) for scale in config.scales for seed in range(config.seeds)
                           if (cell, T, scale, seed) not in done]
                step = self.networks_per_call[(cell, T)]
                calls += [(cell, T, pending[i:i + step]) for i in range(0, len(pending), step)]
        return calls


def plan_sweep(config, device: str) -> Plan:
    """Size every call of ``config`` on ``device`` ("cpu" or "cuda"); refuse what cannot fit.

    Raises ``ValueError`` (one line, naming the size and the limit) when the sweep's
    table of points, or a single network of some (cell, T), needs more memory than
    :func:`rnnsim._memory.available_bytes`.
    """
    limit = _memory.available_bytes()
    per_group = len(config.scales) * config.seeds
    table = config.n_points * TABLE_BYTES_PER_POINT
    _memory.require(table, f"the sweep's table of {config.n_points} points")
    itemsize = np.dtype(config.dtype).itemsize
    B, H, D, K = config.batch, config.hidden, config.input_size, config.classes
    workers = _workers(device)

    keep_networks = {}
    for cell in config.cell:
        held = _memory.params_bytes(cells.get(cell).G, per_group, H, D, K, itemsize)
        keep_networks[cell] = held <= CALL_MEMORY_BYTES and table + held <= limit // 2
    keep_data = {}
    for T in config.lengths:
        held = config.seeds * (B * T * D * itemsize + B * (T if config.loss == "every" else 1) * 8)
        keep_data[T] = held <= CALL_MEMORY_BYTES and table + held <= limit // 2

    sizes = {}
    for cell in config.cell:
        G = cells.get(cell).G
        for T in sorted(config.lengths, reverse=True):  # the largest call first: its refusal says most
            resident = table + 3 * per_group * _profile_bytes(config, T)  # the profile file being merged
            if keep_networks[cell]:
                resident += _memory.params_bytes(G, per_group, H, D, K, itemsize)
            if keep_data[T]:
                resident += config.seeds * B * T * D * itemsize
            _memory.require(resident + call_bytes(config, cell, T, 1, workers=workers),
                            f"one {cell} network at T={T} (hidden {H}, batch {B}, input size {D}, "
                            f"{K} classes, {config.dtype})")
            budget = min(CALL_MEMORY_BYTES, limit - resident)
            lo, hi = 1, per_group  # the largest E whose call fits the budget (at least 1)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if call_bytes(config, cell, T, mid, workers=workers) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            sizes[(cell, T)] = lo
    return Plan(sizes, keep_networks, keep_data)
