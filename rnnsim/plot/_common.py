"""What the figures share: grids over (T, scale), the mean-field lines of a cell, pooled intervals."""
from __future__ import annotations

import functools
import textwrap
from collections import defaultdict

import numpy as np

from .. import cells, theory
from ..sweep import bootstrap

_FIGURE_POINTS = {"rnnsim.theory": 600}
"""Scales at which a theory module is evaluated for the lines of the figures (vectorised ones: many);
the others (a quadrature per scale) get :data:`_DEFAULT_POINTS`."""
_DEFAULT_POINTS = 41

FIGURE_TAG = 100
"""Bootstrap stream tag of the figures' pooled intervals (the summary's own use 1 and 2)."""


def edges(centres, log):
    """Cell edges around sorted centres (geometric midpoints on a log axis)."""
    points = np.log(centres) if log else np.asarray(centres, dtype=float)
    if len(points) == 1:
        half = 0.1 * abs(points[0]) if not log else 0.2
        e = np.array([points[0] - (half or 0.5), points[0] + (half or 0.5)])
    else:
        mid = 0.5 * (points[1:] + points[:-1])
        e = np.concatenate([[points[0] - (mid[0] - points[0])], mid, [points[-1] + (points[-1] - mid[-1])]])
    return np.exp(e) if log else e


def grid(rows, cell, column):
    """(lengths, scales, mean over seeds of ``column`` as an array [scale, T])."""
    sel = [r for r in rows if r["cell"] == cell and r.get(column) is not None]
    lengths = sorted({r["T"] for r in sel})
    scales = sorted({r["scale"] for r in sel})
    acc = defaultdict(list)
    for r in sel:
        acc[(r["scale"], r["T"])].append(r[column])
    Z = np.full((len(scales), len(lengths)), np.nan)
    for i, s in enumerate(scales):
        for j, T in enumerate(lengths):
            if acc[(s, T)]:
                Z[i, j] = np.mean(acc[(s, T)])
    return np.array(lengths), np.array(scales), Z


def has_column(rows, cell, column) -> bool:
    return any(r["cell"] == cell and r.get(column) is not None for r in rows)


def gate_bias_text(config, cell) -> str:
    return ", ".join(f"{kw.replace('_', ' ')} {v:g}" for kw, v in config.gate_bias(cell).items())


def subtitle(config, cell, width=None) -> str:
    """The settings of a figure's points, in one line or wrapped at ``width`` characters."""
    parts = [f"init={config.init}", f"H={config.hidden}", f"input scale {config.input_scale:g}",
             f"bias scale {config.bias_scale:g}"]
    if config.gate_bias(cell):
        parts.append(gate_bias_text(config, cell))
    parts.append(f"{config.seeds} seed(s) × {config.batch} sequences, loss={config.loss}, {config.dtype}")
    text = ", ".join(parts)
    return "\n".join(textwrap.wrap(text, width)) if width else text


@functools.lru_cache(maxsize=64)
def _mean_field(cell, scales: tuple, input_scale, bias_scale, gate_bias: tuple):
    """The theory's χ at ``scales`` (a pure function: kept, since a gated cell's theory takes a
    quadrature per scale and a session often draws the same folder again)."""
    module = theory.for_cell(cell)
    chi = module.mean_field_of(cell, np.array(scales), input_scale, bias_scale, dict(gate_bias))["chi"]
    chi.setflags(write=False)
    return chi


@functools.lru_cache(maxsize=64)
def _critical_scale(cell, input_scale, bias_scale, gate_bias: tuple):
    return theory.for_cell(cell).critical_scale_of(cell, input_scale, bias_scale, dict(gate_bias))


class CellTheory:
    """The annealed mean field of one cell for the figures, evaluated once per plot.

    ``applies`` where the registry names a theory for the cell, W_hh is gaussian and
    the loss is at the last step (:meth:`rnnsim.sweep.SweepConfig.theory_applies`).
    """

    def __init__(self, config, cell, scales):
        self.cell, self.config = cell, config
        self.applies = config.theory_applies(cell) and config.loss == "last"
        self.gate_bias = config.gate_bias(cell)
        if not self.applies:
            return
        self.module = theory.for_cell(cell)
        n = _FIGURE_POINTS.get(self.module.__name__, _DEFAULT_POINTS)
        self.fine = np.linspace(min(scales), max(scales), n) if len(scales) > 1 else np.array(scales, float)
        self.chi_fine = self.chi(self.fine)
        self.critical_scale = _critical_scale(cell, config.input_scale, config.bias_scale,
                                              tuple(sorted(self.gate_bias.items())))

    def chi(self, scales):
        scales = tuple(float(s) for s in np.atleast_1d(scales))
        return _mean_field(self.cell, scales, self.config.input_scale, self.config.bias_scale,
                           tuple(sorted(self.gate_bias.items())))


def carry_paths(config, cell):
    """[(label, ln σ(b))] for the cell's gate biases: the rate of its carry path alone (the lstm's
    cell path through f, the gru's direct path through z), ignoring the gates' fluctuations."""
    spec = cells.get(cell)
    out = []
    for keyword, gate in spec.gate_bias:
        b = config.gate_bias(cell)[keyword]
        path = _PATH_NAMES.get(gate, "carry path")
        out.append((rf"{cell} {path} alone $\ln\sigma(b_{gate})$, $b_{gate}$={b:g}",
                    -1.0 / theory.forget_timescale(b)))
    return out


_PATH_NAMES = {"f": "cell path", "z": "direct path"}
"""What the carry path through each gate is called (the lstm's c through f, the gru's h through z)."""


def pooled_interval(cell, T, scale, values):
    """(lo, hi) of the mean of ``values`` (N networks, B sequences) by the two-level bootstrap."""
    rng = bootstrap.point_rng(cell, T, scale, 0, tag=FIGURE_TAG)
    w = bootstrap.weights(rng, values.shape[0], values.shape[1])
    return bootstrap.interval(bootstrap.weighted_mean(w, values))


def pooled_mean_rate(cell, T, scale, log_norm, steps):
    """(point, lo, hi) of the mean rate of (N, B, m) profiles pooled over networks and sequences."""
    N, B = log_norm.shape[:2]
    point = bootstrap.weighted_mean_rate(np.ones((1, N, B)), log_norm, steps)[0]
    rng = bootstrap.point_rng(cell, T, scale, 0, tag=FIGURE_TAG + 1)
    lo, hi = bootstrap.interval(bootstrap.weighted_mean_rate(bootstrap.weights(rng, N, B), log_norm, steps))
    return point, lo, hi


def chosen_scales(available, requested, critical=None):
    """The scales of a figure: those nearest ``requested``, or five across the range and the one
    nearest the critical scale."""
    available = np.asarray(available)
    if requested:
        picks = list(requested)
    else:
        picks = list(np.quantile(available, [0.0, 0.25, 0.5, 0.75, 1.0]))
        if critical is not None:
            picks.append(critical)
    return sorted({float(available[np.argmin(np.abs(available - s))]) for s in picks})
