r"""What a sweep measures at each point: pluggable measures and the summary columns they add.

A :class:`Measure` has a name, the summary columns it adds (each with a one-line
meaning), the computations it needs (``"gradients"``: one :func:`rnnsim.gradients`
call per ensemble; ``"lyapunov"``: one :func:`rnnsim.lyapunov` call over the same
networks and inputs; ``"sigma_max"``: the largest singular value of every network's
W_hh), and a function from one ensemble call's results to one row of values per
point (and, optionally, per-point arrays for the profile files). The runner
performs each needed computation once per call and asks every chosen measure for
its columns, so a new measure is a new :class:`Measure` in :data:`MEASURES`.

The measures (``--measure``, a comma list; ``gradients`` and ``mean_field`` are
always on, the others only when asked):

``gradients``
    ``log10_ratio``, its spread, the per-step ``rate`` of ln‖∂L/∂h_t‖ (the typical
    rate: the fit of the mean over sequences of ln‖g_t‖, which is the mean over
    sequences of each sequence's fitted slope), the regime.
``mean_field``
    The annealed mean-field χ, ½ ln χ and T·½ log10 χ of every cell whose registry
    entry names a theory (:func:`rnnsim.theory.for_cell`), with gaussian init.
``rates``
    Bootstrap 95% intervals over the sequences for ``rate`` and ``log10_ratio``, and
    the mean rate: the rate of ½ ln of the mean over sequences of ‖g_t‖² (the growth
    of the mean, which the mean field speaks of, against the typical growth).
``lyapunov``
    The top Lyapunov exponent λ_max of the input-driven forward dynamics (its
    interval over sequences) and λ_k (``--lyap-k``), over the same networks and
    inputs; the spectrum goes into the profile file.
``pascanu``
    σ_max(W_hh) of every network, and the Pascanu, Mikolov & Bengio (2013) bound
    σ_max·γ where the cell has one (:attr:`rnnsim.cells.Cell.pascanu_gamma`).
``train:TASK``
    Every network trained on TASK (:mod:`rnnsim.sweep.training`): final loss and success
    rate, solved or not, steps to success, divergence, clipping; learning curves go
    into the profile file. At most one task per sweep.

``summary.csv`` has the columns :func:`columns`: the point's key
(:data:`KEY_COLUMNS`), then each chosen measure's columns in the order of
:data:`MEASURES`, then ``profile_file``. With the default measures they are
:data:`SUMMARY_COLUMNS`, as before the optional measures existed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import cells
from . import bootstrap, training
from .rates import MEAN_RATE_STEPS, REGIMES, fit_rate, rate_grid, rate_window, regime_of  # noqa: F401

_LN10 = math.log(10.0)


@dataclass(frozen=True)
class Column:
    """One summary column: its name, how it reads back (str, int or float), and what it means."""

    name: str
    kind: type
    meaning: str


@dataclass(frozen=True)
class Array:
    """One per-point array of the profile files: its name, its shape after the point axis
    as a function of (config, T), and what it holds."""

    name: str
    shape: Callable   # (config, T) -> tuple
    meaning: str


@dataclass(frozen=True)
class Call:
    """One ensemble call of one (cell, T): what every measure may read.

    ``points`` are the (scale, seed) of the networks in call order; ``results`` maps
    each computation a measure needs to its output (``"gradients"``: the dict of
    :func:`rnnsim.gradients`, with the ensemble axis over ``points``; ``"lyapunov"``:
    the dict of :func:`rnnsim.lyapunov`; ``"sigma_max"``: an (E,) array).
    """

    config: Any  # SweepConfig
    cell: str
    T: int
    points: tuple
    results: dict


@dataclass(frozen=True)
class Output:
    """What a measure returns for one call: one dict of column values per point, and
    per-point arrays (first axis over the points) for the profile file."""

    rows: list
    arrays: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Measure:
    """A pluggable measure (see the module notes)."""

    name: str
    columns: tuple                 # of Column, in summary order
    needs: tuple                   # computations: "gradients", "lyapunov", "sigma_max"
    evaluate: Callable             # (Call, prepared) -> Output
    prepare: Callable = field(default=lambda config: None)  # once per sweep: config -> prepared
    arrays: tuple = ()             # of Array: what it writes into the profile files
    always: bool = False           # on in every sweep, whatever --measure says


def lyapunov_warmup(T: int) -> int:
    """Steps the Lyapunov measure discards before averaging: min(100, T // 4)."""
    return min(100, T // 4)


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


def _steps(config, T):
    return (T + 1,)


GRADIENTS = Measure(
    name="gradients",
    columns=(
        Column("log10_ratio", float, "mean over sequences of log10‖∂L/∂h_0‖ − log10‖∂L/∂h_T‖"),
        Column("log10_ratio_std", float, "its standard deviation over the sequences"),
        Column("log10_grad_norm_params", float, "log10 of the global norm of all parameter gradients"),
        Column("loss", float, "the loss of the network on its sequences"),
        Column("regime", str, "vanishing / stable / exploding: log10_ratio against ∓threshold"),
        Column("rate", float, "typical per-step rate of ln‖∂L/∂h_t‖ going back: the fit of its mean over "
                              "sequences (see fit_rate)"),
    ),
    needs=("gradients",),
    evaluate=_gradients,
    arrays=(Array("log10_grad_norm_mean", _steps, "mean over sequences of log10‖∂L/∂h_t‖, t = 0..T "
                                                  "(float32)"),
            Array("log10_grad_norm_std", _steps, "its standard deviation over sequences (float32)")),
    always=True,
)


# --------------------------------------------------------------------------- mean field

def _mean_field_of_scale(config) -> dict:
    """{cell: {scale: χ}} for every cell of the sweep whose theory applies, computed once per
    sweep over the whole array of scales (through the theory module the registry names)."""
    from .. import theory

    found = {}
    for cell in config.cell:
        if config.theory_applies(cell):
            module = theory.for_cell(cell)
            mf = module.mean_field_of(cell, np.array(config.scales), config.input_scale, config.bias_scale,
                                      config.gate_bias(cell))
            found[cell] = dict(zip(config.scales, mf["chi"].tolist()))
    return found


def _mean_field(call: Call, chi_of_scale) -> Output:
    config = call.config
    rows = []
    for scale, _seed in call.points:
        row = {"mf_chi": None, "mf_rate": None, "mf_log10_ratio": None, "mf_regime": ""}
        chi = chi_of_scale.get(call.cell, {}).get(scale)
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
        Column("mf_chi", float, "annealed mean-field χ (cells whose registry entry names a theory, gaussian "
                                "init; else empty)"),
        Column("mf_rate", float, "½ ln χ, the mean field's rate of the mean growth, to compare with rate"),
        Column("mf_log10_ratio", float, "T · ½ log10 χ, to compare with log10_ratio (loss=\"last\" only)"),
        Column("mf_regime", str, "the regime mf_log10_ratio implies"),
    ),
    needs=(),
    evaluate=_mean_field,
    prepare=_mean_field_of_scale,
    always=True,
)


# --------------------------------------------------------------------------- rates with intervals

def _per_sequence(call: Call):
    """Per-sequence slopes and log10 ratios (E, B), and ln‖g‖ on the mean rate's grid (E, B, m)."""
    log_norm = call.results["gradients"]["log_grad_norm"]
    T = call.T
    ratio = (log_norm[..., 0] - log_norm[..., T]) / _LN10
    return fit_rate(log_norm, T), ratio, log_norm[..., rate_grid(T)]


def _rates(call: Call, _prepared) -> Output:
    slopes, ratio, grid_norm = _per_sequence(call)
    steps = rate_grid(call.T)
    B = slopes.shape[1]
    rows = []
    for e, (scale, seed) in enumerate(call.points):
        w = bootstrap.weights(bootstrap.point_rng(call.cell, call.T, scale, seed, tag=1), 1, B)
        rate_lo, rate_hi = bootstrap.interval(bootstrap.weighted_mean(w, slopes[e][None]))
        ratio_lo, ratio_hi = bootstrap.interval(bootstrap.weighted_mean(w, ratio[e][None]))
        mean_rate = bootstrap.weighted_mean_rate(np.ones((1, 1, B)), grid_norm[e][None], steps)[0]
        mean_lo, mean_hi = bootstrap.interval(bootstrap.weighted_mean_rate(w, grid_norm[e][None], steps))
        rows.append({"rate_lo": float(rate_lo), "rate_hi": float(rate_hi), "rate_mean": float(mean_rate),
                     "rate_mean_lo": float(mean_lo), "rate_mean_hi": float(mean_hi),
                     "log10_ratio_lo": float(ratio_lo), "log10_ratio_hi": float(ratio_hi)})
    arrays = {"rate_seq": slopes, "log10_ratio_seq": ratio, "log_grad_norm_grid": grid_norm}
    return Output(rows, arrays)


def _sequences(config, T):
    return (config.batch,)


def _grid_shape(config, T):
    return (config.batch, len(rate_grid(T)))


RATES = Measure(
    name="rates",
    columns=(
        Column("rate_lo", float, "bootstrap 95% interval of rate over the sequences: lower end"),
        Column("rate_hi", float, "… upper end"),
        Column("rate_mean", float, "mean rate: per-step rate of ½ ln of the mean over sequences of "
                                   "‖∂L/∂h_t‖², fitted on rate_grid(T)"),
        Column("rate_mean_lo", float, "bootstrap 95% interval of rate_mean over sequences: lower end"),
        Column("rate_mean_hi", float, "… upper end"),
        Column("log10_ratio_lo", float, "bootstrap 95% interval of log10_ratio over sequences: lower end"),
        Column("log10_ratio_hi", float, "… upper end"),
    ),
    needs=("gradients",),
    evaluate=_rates,
    arrays=(Array("rate_seq", _sequences, "each sequence's fitted rate (float64)"),
            Array("log10_ratio_seq", _sequences, "each sequence's log10 ratio (float64)"),
            Array("log_grad_norm_grid", _grid_shape, "each sequence's ln‖∂L/∂h_t‖ at the steps "
                                                     "rate_grid(T)")),
)


# --------------------------------------------------------------------------- Lyapunov exponents

def _lyapunov(call: Call, _prepared) -> Output:
    per_sequence = call.results["lyapunov"]["exponents_per_sequence"]      # (E, B, k)
    B = per_sequence.shape[1]
    top = per_sequence[..., 0]
    spectrum = per_sequence.mean(axis=1)                                    # (E, k)
    rows = []
    for e, (scale, seed) in enumerate(call.points):
        w = bootstrap.weights(bootstrap.point_rng(call.cell, call.T, scale, seed, tag=2), 1, B)
        lo, hi = bootstrap.interval(bootstrap.weighted_mean(w, top[e][None]))
        rows.append({"lyap_max": float(spectrum[e, 0]), "lyap_max_lo": float(lo), "lyap_max_hi": float(hi),
                     "lyap_k": float(spectrum[e, -1])})
    return Output(rows, {"lyap_max_seq": top.copy(), "lyap_spectrum": spectrum})


def _spectrum_shape(config, T):
    return (config.lyap_k,)


LYAPUNOV = Measure(
    name="lyapunov",
    columns=(
        Column("lyap_max", float, "top Lyapunov exponent λ_max of the forward dynamics (nats per step, "
                                  "mean over sequences; warm-up min(100, T//4) steps, QR every step)"),
        Column("lyap_max_lo", float, "bootstrap 95% interval of lyap_max over the sequences: lower end"),
        Column("lyap_max_hi", float, "… upper end"),
        Column("lyap_k", float, "λ_k, the k-th exponent (k = lyap-k; λ_max when k = 1)"),
    ),
    needs=("lyapunov",),
    evaluate=_lyapunov,
    arrays=(Array("lyap_max_seq", _sequences, "each sequence's λ_max"),
            Array("lyap_spectrum", _spectrum_shape, "λ_1 ≥ … ≥ λ_k, mean over sequences")),
)


# --------------------------------------------------------------------------- Pascanu bound


# γ of the Pascanu, Mikolov & Bengio (2013) bound is the cell's (Cell.pascanu_gamma, with
# the reason why the gated cells have none); the sweep records σ_max(W_hh) for every cell.


def _pascanu(call: Call, _prepared) -> Output:
    sigma = call.results["sigma_max"]
    gamma = cells.get(call.cell).pascanu_gamma
    rows = [{"sigma_max": float(s), "pascanu_bound": None if gamma is None else float(s) * gamma}
            for s in sigma]
    return Output(rows)


PASCANU = Measure(
    name="pascanu",
    columns=(
        Column("sigma_max", float, "largest singular value of the network's W_hh (all G·H rows)"),
        Column("pascanu_bound", float, "σ_max·γ (Pascanu et al. 2013): below 1 vanishing is guaranteed; "
                                       "empty for cells without a γ (the gated cells)"),
    ),
    needs=("sigma_max",),
    evaluate=_pascanu,
)


# --------------------------------------------------------------------------- training

TRAIN = Measure(
    name="train",  # chosen as "train:TASK"; the computation and the columns are in sweep/training.py
    columns=tuple(Column(*c) for c in training.COLUMNS),
    needs=("train",),
    evaluate=lambda call, _prepared: Output(*training.evaluate(call)),
    arrays=tuple(Array(*a) for a in training.ARRAYS),
)


# --------------------------------------------------------------------------- registry and columns

MEASURES = {m.name: m for m in (GRADIENTS, MEAN_FIELD, RATES, LYAPUNOV, PASCANU, TRAIN)}
"""Every measure, in summary order."""

DEFAULT_MEASURES = tuple(name for name, m in MEASURES.items() if m.always)

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
    if name.startswith(training.PREFIX):  # "train:TASK", checked by parse_measures
        return MEASURES["train"]
    if name not in MEASURES:
        raise ValueError(f"unknown measure {name!r}; expected one of {', '.join(MEASURES)}")
    return MEASURES[name]


def parse_measures(value, name: str = "measure") -> tuple:
    """Measure names from ``"gradients,lyapunov"`` or a list, in :data:`MEASURES` order, the
    always-on ones (gradients, mean_field) included whether named or not; the train measure
    as ``"train:TASK"`` (at most one task)."""
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",")]
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise TypeError(f"{name}: expected a comma list such as 'gradients,lyapunov', got {value!r}")
    if not all(items):
        raise ValueError(f"{name}: malformed list {value!r}; expected names separated by commas")
    known = [n for n in MEASURES if n != "train"] + ["train:TASK"]
    for item in items:
        if item == "train" or item.startswith(training.PREFIX):
            training.parse_task(item, name)
        elif item not in MEASURES:
            raise ValueError(f"{name}: unknown measure {item!r}; expected some of {', '.join(known)}")
    if len(set(items)) != len(items):
        raise ValueError(f"{name}: a measure appears twice in {value!r}")
    tasks = [item for item in items if item.startswith(training.PREFIX)]
    if len(tasks) > 1:
        raise ValueError(f"{name}: at most one train:TASK per sweep (one task per results folder), "
                         f"got {', '.join(tasks)}")
    return tuple(tasks[0] if n == "train" else n for n, m in MEASURES.items()
                 if m.always or n in items or (n == "train" and tasks))


def chosen(names=DEFAULT_MEASURES) -> tuple:
    return tuple(get(n) for n in names)


def columns(names=DEFAULT_MEASURES) -> tuple:
    """Every summary column (:class:`Column`) of the measures ``names``, in file order."""
    return KEY_COLUMNS + tuple(column for m in chosen(names) for column in m.columns) + (PROFILE_COLUMN,)


def column_names(names=DEFAULT_MEASURES) -> tuple:
    return tuple(c.name for c in columns(names))


def profile_arrays(names=DEFAULT_MEASURES) -> tuple:
    """The :class:`Array` of the profile files of the measures ``names``, besides ``scale`` and ``seed``."""
    return tuple(a for m in chosen(names) for a in m.arrays)


SUMMARY_COLUMNS = column_names()
"""The columns of summary.csv with the default measures, in order."""

ALL_COLUMNS = KEY_COLUMNS + tuple(c for m in MEASURES.values() for c in m.columns) + (PROFILE_COLUMN,)

COLUMN_MEANINGS = {column.name: column.meaning for column in ALL_COLUMNS}
"""What every column any measure can write means."""
