r"""Bootstrap intervals for the sweep's measures: seeded, deterministic and vectorised.

A row of ``summary.csv`` is one network and its B sequences, so its intervals
resample the sequences (the network fixed). The figures pool the networks (seeds)
of a point, and their intervals resample networks and then, within every drawn
network, its sequences (the two-level bootstrap over networks × sequences). Both
are the same computation: :func:`weights` with N = 1 network, or N networks.

Every interval is the percentile interval of :data:`RESAMPLES` resamples at
:data:`LEVEL`. The random numbers of a row come from :func:`point_rng`, a stream
keyed by the row's (cell, T, scale, seed), so a row's interval does not depend on
the rest of the grid, on how the sweep was cut into calls, or on a resume.

Coverage. The percentile interval of a mean of n i.i.d. values covers at about
the nominal rate once n is a few tens; for small n it is too narrow (it ignores
the t-distribution's tails): about 92% at n = 8, 94% at n = 16 for Gaussian data
(``tests/test_measures.py`` checks coverage against known answers). The
two-level interval needs several networks to say anything about the spread
between networks: with two seeds there are only three distinct network draws.
"""
from __future__ import annotations

import numpy as np

from .rates import slope_back

RESAMPLES = 1000
"""Bootstrap resamples per interval."""

LEVEL = 0.95
"""Coverage the percentile intervals aim at."""

BOOTSTRAP_STREAM = 0xB007
"""Spawn-key tag that separates the bootstrap's streams from the data's and the networks'."""


def point_rng(cell: str, T: int, scale: float, seed: int, tag: int = 0) -> np.random.Generator:
    """The random stream of one summary row (and ``tag``, one per measure that resamples)."""
    cell_code = int.from_bytes(cell.encode(), "little")
    scale_bits = int(np.float64(scale).view(np.uint64))
    return np.random.default_rng(np.random.SeedSequence(
        int(seed), spawn_key=(BOOTSTRAP_STREAM, int(tag), cell_code, int(T), scale_bits)))


def weights(rng: np.random.Generator, networks: int, sequences: int, resamples: int = RESAMPLES):
    """(resamples, networks, sequences) integer weights of the two-level bootstrap.

    Each resample draws ``networks`` networks with replacement; each drawn copy of a
    network draws its ``sequences`` sequences with replacement. The weight of a
    (network, sequence) is how often it was drawn in all; every resample's weights
    sum to networks × sequences. With one network this is the ordinary bootstrap of
    the sequences.
    """
    if networks == 1:
        copies = np.ones((resamples, 1), dtype=np.int64)
    else:
        copies = rng.multinomial(networks, np.full(networks, 1.0 / networks), size=resamples)
    # c independent resamples of B sequences add up to one multinomial draw of c·B.
    return rng.multinomial(copies * sequences, np.full(sequences, 1.0 / sequences))


def interval(replicates, axis=-1):
    """The percentile interval (lo, hi) at :data:`LEVEL` along ``axis``."""
    tail = 0.5 * (1.0 - LEVEL)
    lo, hi = np.quantile(np.asarray(replicates, dtype=np.float64), [tail, 1.0 - tail], axis=axis)
    return lo, hi


def weighted_mean(w, values):
    """Mean of ``values`` (N, B) under the weights ``w`` (R, N, B): (R,)."""
    w = np.asarray(w, dtype=np.float64)
    return np.einsum("rnb,nb->r", w, values) / w[0].sum()


def weighted_mean_rate(w, log_norm, steps):
    r"""The mean rate under the weights ``w`` (R, N, B), from ln‖g‖ ``log_norm`` (N, B, m) at ``steps``.

    Per resample, :math:`y_t = \tfrac12 \ln` of the weighted mean of :math:`\|g_t\|^2`,
    then its rate by :func:`slope_back`. Returns (R,). The squares are taken relative
    to the largest one at each step, so nothing overflows; a resample whose drawn
    squares all underflow there is redone as a log-sum-exp.
    """
    w = np.asarray(w, dtype=np.float64)
    R = w.shape[0]
    two = 2.0 * np.asarray(log_norm, dtype=np.float64)                   # (N, B, m)
    m = two.shape[2]
    shift = two.max(axis=(0, 1))                                          # (m,)
    flat_w = w.reshape(R, -1)
    sums = np.einsum("rk,km->rm", flat_w, np.exp(two - shift).reshape(-1, m))  # (R, m), no BLAS threads
    with np.errstate(divide="ignore"):
        total = np.log(sums) + shift
    redo = np.flatnonzero(~np.all(np.isfinite(total), axis=1))
    if redo.size:
        flat_two = two.reshape(-1, m)
        for r in redo:
            drawn = flat_w[r] > 0
            terms = np.log(flat_w[r, drawn])[:, None] + flat_two[drawn]
            top = terms.max(axis=0)
            total[r] = np.log(np.exp(terms - top).sum(axis=0)) + top
    y = 0.5 * (total - np.log(flat_w[0].sum()))
    return slope_back(y, steps)
