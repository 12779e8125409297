r"""What a sweep measures at each point: pluggable measures and the summary columns they add.

A :class:`Measure` has a name, the summary columns it adds (each with a one-line
meaning), the computations it needs (today ``"gradients"``: one
:func:`rnnsim.gradients` call per ensemble; later Lyapunov exponents or training),
and a function from one ensemble call's results to one row of values per point
(and, optionally, per-step arrays for the profile files). The runner performs
each needed computation once per call and asks every chosen measure for its
columns, so a new measure is a new :class:`Measure` in :data:`MEASURES`.

``summary.csv`` has the columns :data:`SUMMARY_COLUMNS`: the point's key
(:data:`KEY_COLUMNS`), then each measure's columns in the order of
:data:`DEFAULT_MEASURES`, then ``profile_file``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

REGIMES = ("vanishing", "stable", "exploding")
_LN10 = math.log(10.0)


@dataclass(frozen=True)
class Column:
    """One summary column: its name, how it reads back (str, int or float), and what it means."""

    name: str
    kind: type
    meaning: str


@dataclass(frozen=True)
class Call:
    """One ensemble call of one (cell, T): what every measure may read.

    ``points`` are the (scale, seed) of the networks in call order; ``results`` maps
    each computation a measure needs to its output (``"gradients"``: the dict of
    :func:`rnnsim.gradients`, with the ensemble axis over ``points``).
    """

    config: Any  # SweepConfig
    cell: str
    T: int
    points: tuple
    results: dict


@dataclass(frozen=True)
class Output:
    """What a measure returns for one call: one dict of column values per point, and
    per-step arrays (first axis over the points) for the profile file."""

    rows: list
    arrays: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Measure:
    """A pluggable measure (see the module notes)."""

    name: str
    columns: tuple                 # of Column, in summary order
    needs: tuple                   # computations: "gradients" (later "lyapunov", "train")
    evaluate: Callable             # (Call, prepared) -> Output
    prepare: Callable = field(default=lambda config: None)  # once per sweep: config -> prepared
    arrays: tuple = ()             # names of the per-step arrays it writes into the profile files


# --------------------------------------------------------------------------- helpers

def rate_window(T: int):
    """The steps [lo, hi] over which :func:`fit_rate` fits, the middle half of 0..T.

    The first quarter is skipped because the forward pass starts at h_0 = 0 and needs
    some steps before the pre-activation variance reaches q*; the last quarter keeps
    the fit away from the readout end.
    """
    lo, hi = T // 4, T - T // 4
    return (0, T) if hi - lo < 2 else (lo, hi)


def fit_rate(log_profile, T):
    r"""Least-squares per-step rate of ln‖∂L/∂h_t‖ going back in time.

    Parameters
    ----------
    log_profile : array (..., T+1)
        ln‖∂L/∂h_t‖ (natural log), t = 0..T, usually the mean over sequences.

    Returns
    -------
    array (...): :math:`r = -\,\mathrm{d}\ln\|g_t\|/\mathrm{d}t` over :func:`rate_window`,
    so that :math:`\|g_{t-1}\| \approx e^{r}\|g_t\|`; the mean field predicts
    :math:`r = \tfrac12\ln\chi`.
    """
    lo, hi = rate_window(T)
    t = np.arange(lo, hi + 1, dtype=np.float64)
    y = np.asarray(log_profile, dtype=np.float64)[..., lo:hi + 1]
    tc = t - t.mean()
    slope = ((y - y.mean(axis=-1, keepdims=True)) @ tc) / (tc @ tc)
    return -slope


def regime_of(log10_ratio, threshold):
    """'vanishing' below −threshold, 'exploding' above +threshold, 'stable' between, '' for NaN."""
    r = np.asarray(log10_ratio, dtype=np.float64)
    labels = np.where(r < -threshold, "vanishing", np.where(r > threshold, "exploding", "stable"))
    return np.where(np.isnan(r), "", labels)


# --------------------------------------------------------------------------- gradients

def _gradients(call: Call, _prepared) -> Output:
    result = call.results["gradients"]
    T = call.T
    log_norm = result["log_grad_norm"]                       # (E, B, T+1), natural log
    log10_norm = log_norm / _LN10
    ratio = log10_norm[..., 0] - log10_norm[..., T]          # (E, B)
    ratio_mean, ratio_std = ratio.mean(axis=1), ratio.std(axis=1)
    rates = fit_rate(log_norm.mean(axis=1), T)
    regimes = regime_of(ratio_mean, call.config.threshold)
    rows = [{
        "log10_ratio": float(ratio_mean[e]),
        "log10_ratio_std": float(ratio_std[e]),
        "log10_grad_norm_params": float(result["log_grad_norm_params"][e]) / _LN10,
        "loss": float(result["loss"][e]),
        "regime": str(regimes[e]),
        "rate": float(rates[e]),
    } for e in range(len(call.points))]
    arrays = {
        "log10_grad_norm_mean": log10_norm.mean(axis=1).astype(np.float32),
        "log10_grad_norm_std": log10_norm.std(axis=1).astype(np.float32),
    }
    return Output(rows, arrays)


GRADIENTS = Measure(
    name="gradients",
    columns=(
        Column("log10_ratio", float, "mean over sequences of log10‖∂L/∂h_0‖ − log10‖∂L/∂h_T‖"),
        Column("log10_ratio_std", float, "its standard deviation over the sequences"),
        Column("log10_grad_norm_params", float, "log10 of the global norm of all parameter gradients"),
        Column("loss", float, "the loss of the network on its sequences"),
        Column("regime", str, "vanishing / stable / exploding: log10_ratio against ∓threshold"),
        Column("rate", float, "measured per-step rate of ln‖∂L/∂h_t‖ going back (see fit_rate)"),
    ),
    needs=("gradients",),
    evaluate=_gradients,
    arrays=("log10_grad_norm_mean", "log10_grad_norm_std"),
)


# --------------------------------------------------------------------------- mean field

def _chi_of_scale(config) -> dict:
    """χ of every scale of the sweep, computed once, over the whole array of scales."""
    if not any(config.theory_applies(cell) for cell in config.cell):
        return {}
    from .. import theory
    chis = np.atleast_1d(theory.chi(np.array(config.scales), config.input_scale, config.bias_scale))
    return dict(zip(config.scales, chis.tolist()))


def _mean_field(call: Call, chi_of_scale) -> Output:
    config = call.config
    rows = []
    for scale, _seed in call.points:
        row = {"mf_chi": None, "mf_rate": None, "mf_log10_ratio": None, "mf_regime": ""}
        chi = chi_of_scale.get(scale) if config.theory_applies(call.cell) else None
        if chi is not None and math.isfinite(chi) and chi > 0:
            row["mf_chi"] = chi
            row["mf_rate"] = 0.5 * math.log(chi)
            if config.loss == "last":  # with loss="every" h_0 also collects the early loss terms
                row["mf_log10_ratio"] = call.T * 0.5 * math.log10(chi)
                row["mf_regime"] = str(regime_of(row["mf_log10_ratio"], config.threshold))
        rows.append(row)
    return Output(rows)


MEAN_FIELD = Measure(
    name="mean_field",
    columns=(
        Column("mf_chi", float, "mean-field χ (cells with a theory and gaussian init only, else empty)"),
        Column("mf_rate", float, "½ ln χ, to compare with rate"),
        Column("mf_log10_ratio", float, "T · ½ log10 χ, to compare with log10_ratio (loss=\"last\" only)"),
        Column("mf_regime", str, "the regime mf_log10_ratio implies"),
    ),
    needs=(),
    evaluate=_mean_field,
    prepare=_chi_of_scale,
)


# --------------------------------------------------------------------------- registry and columns

MEASURES = {m.name: m for m in (GRADIENTS, MEAN_FIELD)}
DEFAULT_MEASURES = ("gradients", "mean_field")

KEY_COLUMNS = (
    Column("cell", str, "the recurrent cell"),
    Column("init", str, "the W_hh init scheme"),
    Column("hidden", int, "hidden size H"),
    Column("T", int, "sequence length (time steps)"),
    Column("scale", float, "init scale S of W_hh"),
    Column("seed", int, "the network's seed (its data use the same seed)"),
)
PROFILE_COLUMN = Column("profile_file", str, "the .npz that holds this row's per-step profile")


def get(name: str) -> Measure:
    if name not in MEASURES:
        raise ValueError(f"unknown measure {name!r}; expected one of {', '.join(MEASURES)}")
    return MEASURES[name]


def chosen(names=DEFAULT_MEASURES) -> tuple:
    return tuple(get(n) for n in names)


def columns(names=DEFAULT_MEASURES) -> tuple:
    """Every summary column (:class:`Column`), in file order."""
    return KEY_COLUMNS + tuple(column for m in chosen(names) for column in m.columns) + (PROFILE_COLUMN,)


def profile_arrays(names=DEFAULT_MEASURES) -> tuple:
    """Names of the per-step arrays of the profile files, besides ``scale`` and ``seed``."""
    return tuple(a for m in chosen(names) for a in m.arrays)


SUMMARY_COLUMNS = tuple(column.name for column in columns())
"""The columns of summary.csv, in order."""

COLUMN_MEANINGS = {column.name: column.meaning for column in columns()}
