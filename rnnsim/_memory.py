"""Memory estimates, checked before anything large is allocated.

Every entry point that could allocate more than the machine has (``init_params``,
``gradients``, ``forward``, the sweep) estimates its peak first and refuses, with
one line naming the size and the limit, what cannot fit. Work that is large but
feasible is split by the caller instead (the sweep's calls, the GPU's chunks).
"""
from __future__ import annotations

import os

from . import config

_GIB = 2.0 ** 30


def available_bytes() -> int:
    """The memory one call may use: ``config.MEMORY_LIMIT_BYTES``, else what the OS reports available."""
    if config.MEMORY_LIMIT_BYTES is not None:
        return int(config.MEMORY_LIMIT_BYTES)
    try:
        # one read of the raw bytes: the OS writes the whole file on each read anyway,
        # and a text file's line iteration doubled the cost of a small call's check
        fd = os.open("/proc/meminfo", os.O_RDONLY)
        try:
            data = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        start = data.index(b"MemAvailable:") + len(b"MemAvailable:")
        return int(data[start:data.index(b"kB", start)]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - exotic platforms
        return 1 << 62


def format_bytes(nbytes: float) -> str:
    if nbytes >= 0.1 * _GIB:
        return f"{nbytes / _GIB:.3g} GiB"
    return f"{nbytes / 2**20:.3g} MiB"


def require(nbytes: float, what) -> None:
    """ValueError when ``nbytes`` exceeds :func:`available_bytes`; ``what`` names the work
    (a string, or a function that returns it: formatted only for the error)."""
    limit = available_bytes()
    if nbytes > limit:
        what = what() if callable(what) else what
        raise ValueError(f"{what} needs about {format_bytes(nbytes)} of memory but only "
                         f"{format_bytes(limit)} is available; use smaller sizes")


def params_bytes(G: int, E: int, H: int, D: int, K: int, itemsize: int) -> int:
    """Bytes of one ensemble's parameters (the six arrays of ``init_params``)."""
    return E * (G * H * (D + H + 2) + K * (H + 1)) * itemsize


def init_bytes(G: int, E: int, H: int, D: int, K: int, itemsize: int) -> int:
    """Peak of ``init_params``: float64 parameters, the output copy, and one H x H draw."""
    return params_bytes(G, E, H, D, K, 8) + params_bytes(G, E, H, D, K, itemsize) + 3 * 8 * H * H


def gradients_bytes(G: int, n_states: int, E: int, B: int, T: int, D: int, H: int, K: int,
                    itemsize: int, *, loss_every: bool, workers: int, tile: int) -> int:
    """Peak of one ``gradients`` call on the CPU, beyond the caller's own arrays.

    Counts a contiguous copy of the inputs, the log-norm profiles, the gradients
    (float64 mantissas and the output copies), and the activations, packed
    recurrent weights and weight-gradient sums that ``workers`` work items of ``tile``
    sequences keep at once.
    Those live in the workspace that the CPU threads keep between calls (``config.CPU_WORKSPACE_BYTES``);
    they are counted as fresh memory, so after a first call, whose workspace the OS no
    longer reports available, the check errs on the safe side by at most what is kept.
    """
    inputs = E * B * T * D * itemsize
    profiles = n_states * E * B * (T + 1) * 8
    grads = 3 * params_bytes(G, E, H, D, K, 8)
    per_sequence = (T + 1) * (G * H + (2 + n_states) * H + D) * itemsize + 2 * (T + 1) * 8
    if loss_every:
        per_sequence += T * (K + H) * itemsize
    concurrent = min(workers, max(1, E * -(-B // tile)))
    panels = 2 * packed_weights_bytes(G, H, itemsize)  # W_hhᵀ for the forward, W_hh for the backward
    # the weight gradients' running sum (G·H, H+D+1) and one block of their factor Z
    block = min(max(1, int(config.CPU_WEIGHT_GRADIENT_ROWS)), T * min(tile, B))
    sums = (G * H + block) * (H + D + 1) * itemsize
    return inputs + profiles + grads + concurrent * (min(tile, B) * per_sequence + panels + sums)


def forward_bytes(G: int, n_states: int, E: int, B: int, T: int, D: int, H: int, itemsize: int, *,
                  workers: int, tile: int) -> int:
    """Peak of one ``forward`` call on the CPU: a contiguous copy of the inputs, the
    returned states, and the activations and packed recurrent weights of ``workers``
    work items at once."""
    inputs = E * B * T * D * itemsize
    states = n_states * E * B * T * H * itemsize
    per_sequence = (T + 1) * (G * H + (1 + n_states) * H + D) * itemsize
    concurrent = min(workers, max(1, E * -(-B // tile)))
    return inputs + states + concurrent * (min(tile, B) * per_sequence + packed_weights_bytes(G, H, itemsize))


def packed_weights_bytes(G: int, H: int, itemsize: int) -> int:
    """One work item's recurrent weights (G·H × H, either way round) packed for the
    per-step product (:func:`rnnsim.kernels.cpu_matmul.pack_panels`): each of the G·H
    or H rows is padded by less than one panel."""
    from .kernels.cpu_matmul import PANEL_BYTES  # here: importing it loads numba
    return G * H * (H * itemsize + PANEL_BYTES) + PANEL_BYTES


def injected_loss_bytes(n_states: int, E: int, B: int, T: int, H: int, K: int, itemsize: int) -> int:
    """Extra peak of a loss computed by :mod:`rnnsim.losses` and injected into the kernels.

    Counts the forward states the backend returns (``n_states`` (E, B, T, H) arrays),
    their float64 copy with h_0, the per-step adjoints (E, B, T+1, H) in float64 and
    their copy in the dtype, the selected states and the logits with their gradient
    (float64), and the (E, B, T) mask.
    """
    states = n_states * E * B * T * H * itemsize
    adjoints = E * B * (T + 1) * H * (3 * 8 + itemsize)  # h, local, selected h (float64); local cast
    logits = 3 * E * B * T * K * 8  # logits, their gradient, the targets' difference
    return states + adjoints + logits + E * B * T
