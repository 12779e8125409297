"""The configuration of a sweep: defaults, TOML files, validation, and the run options.

One spelling everywhere: the keys of a ``--config`` TOML file, of
``manifest.json["config"]`` and of the mappings below are the command-line flag
names without the leading dashes (``input-scale``, not ``input_scale``). ``cell``,
``lengths`` and ``scales`` take the flag's string syntax or a list. Precedence:
explicit flags > TOML > :data:`DEFAULTS`. Unknown keys are an error.

Two kinds of keys: the :data:`DEFAULTS` keys shape the results (a resume must
match them), and the :data:`RUN_KEYS` (``out``, ``device``, ``quiet``, ``scheduler``,
``workers``) say where and how to run. :func:`configure` is the one place that applies both, for the command
line and for library callers alike.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from .. import cells
from .._parse import (
    MAX_SCALE,
    finite_float,
    parse_bool,
    parse_cells,
    parse_lengths,
    parse_scales,
    positive_int,
)
from .._validate import DEVICES, check_choice
from ..init import SCHEMES
from ..losses import FUSED_LOSSES
from . import training
from .measures import parse_measures

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10, whose stdlib has no TOML reader
    tomllib = None

DTYPES = ("float64", "float32")

DEFAULTS = {
    "cell": ",".join(cells.names()),
    "hidden": 64,
    "input-size": 8,
    "classes": 10,
    "batch": 8,
    "lengths": "10:1000:11",
    "scales": "0.5:3:26",
    "init": "gaussian",
    "input-scale": 1.0,
    "bias-scale": 0.0,
    "forget-bias": 1.0,
    "update-bias": 0.0,
    "seeds": 2,
    "loss": "last",
    "threshold": 1.0,
    "dtype": "float64",
    "measure": "gradients,mean_field",
    "lyap-k": 1,
    "steps": 500,
    "optimizer": "adam",
    "lr": 0.001,
    "clip": "off",
    "train-batch": 32,
}
"""Defaults of every key that shapes the results (flag names as keys)."""

RUN_KEYS = ("device", "out", "quiet", "scheduler", "workers")
"""Keys that say where and how to run, not what: not compared by resume."""

DEFAULT_OUT = "rnnsim-sweep"
DEFAULT_DEVICE = "cpu"


def _name(key, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{key} must be a name, got {type(value).__name__} {value!r}")
    return value


def _scale_like(key):
    return lambda value: finite_float(key, value, minimum=0.0, maximum=MAX_SCALE)


_PARSERS = {
    "cell": parse_cells,
    "hidden": lambda value: positive_int("hidden", value),
    "input-size": lambda value: positive_int("input-size", value),
    "classes": lambda value: positive_int("classes", value),
    "batch": lambda value: positive_int("batch", value),
    "lengths": parse_lengths,
    "scales": parse_scales,
    "init": lambda value: check_choice("init", value, SCHEMES),
    "input-scale": _scale_like("input-scale"),
    "bias-scale": _scale_like("bias-scale"),
    "forget-bias": lambda value: finite_float("forget-bias", value, minimum=-MAX_SCALE, maximum=MAX_SCALE),
    "update-bias": lambda value: finite_float("update-bias", value, minimum=-MAX_SCALE, maximum=MAX_SCALE),
    "seeds": lambda value: positive_int("seeds", value),
    "loss": lambda value: check_choice("loss", value, FUSED_LOSSES),
    "threshold": lambda value: finite_float("threshold", value, minimum=0.0, strict=True),
    "dtype": lambda value: check_choice("dtype", value, DTYPES),
    "measure": parse_measures,
    "lyap-k": lambda value: positive_int("lyap-k", value),
    "steps": lambda value: positive_int("steps", value),
    "optimizer": lambda value: _name("optimizer", value),
    "lr": lambda value: finite_float("lr", value, minimum=0.0, strict=True, maximum=MAX_SCALE),
    "clip": training.parse_clip,
    "train-batch": lambda value: positive_int("train-batch", value),
}
# The optimizer's name is checked against rnnsim.train.OPTIMIZERS only when a train measure is
# chosen (SweepConfig._check_train), so that a sweep without one never loads the training code.
TRAIN_KEYS = ("steps", "optimizer", "lr", "clip", "train-batch")
"""The keys that shape the train:TASK measure only (at their defaults without it)."""
"""Validation of each configuration key: value -> the canonical value, or a one-line error."""


def _parse_out(value) -> str:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"out must be a folder name, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError("out must be a folder name, got an empty string")
    return value


def _parse_scheduler(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"scheduler must be an address such as tcp://host:8786, got {type(value).__name__}")
    if not value.strip() or any(c.isspace() for c in value.strip()):
        raise ValueError(f"scheduler must be an address such as tcp://host:8786, got {value!r}")
    return value.strip()


_RUN_PARSERS = {
    "out": _parse_out,
    "device": lambda value: check_choice("device", value, DEVICES),
    "quiet": lambda value: parse_bool("quiet", value),
    "scheduler": _parse_scheduler,
    "workers": lambda value: positive_int("workers", value),
}


@dataclass(frozen=True)
class SweepConfig:
    """The validated configuration of a sweep: every setting that shapes the results."""

    cell: tuple
    hidden: int
    input_size: int
    classes: int
    batch: int
    lengths: tuple
    scales: tuple
    init: str
    input_scale: float
    bias_scale: float
    forget_bias: float
    update_bias: float
    seeds: int
    loss: str
    threshold: float
    dtype: str
    measure: tuple
    lyap_k: int
    steps: int
    optimizer: str
    lr: float
    clip: float | None  # None: no clipping ("off" or 0)
    train_batch: int

    @classmethod
    def from_mapping(cls, mapping) -> "SweepConfig":
        """Build from flag-named keys; missing keys take :data:`DEFAULTS`.

        :data:`RUN_KEYS` are allowed and ignored here: they are not part of the
        configuration. Use :func:`configure` (or pass the mapping to
        :func:`rnnsim.sweep.run_sweep`) to apply them as well.
        """
        if not isinstance(mapping, Mapping):
            raise TypeError(f"a sweep configuration must be a mapping of flag names, "
                            f"got {type(mapping).__name__}")
        unknown = sorted(str(k) for k in mapping if k not in DEFAULTS and k not in RUN_KEYS)
        if unknown:
            raise ValueError(f"unknown configuration key(s): {', '.join(unknown)}")
        merged = {**DEFAULTS, **{k: v for k, v in mapping.items() if k in DEFAULTS}}
        config = cls(**{key.replace("-", "_"): parse(merged[key]) for key, parse in _PARSERS.items()})
        config._check_lyapunov()
        config._check_train()
        return config

    @property
    def train_task(self):
        """The task of the ``train:TASK`` measure, or None without one."""
        return training.task_of(self.measure)

    def _check_train(self) -> None:
        if self.train_task is None:
            for key in TRAIN_KEYS:
                value, default = getattr(self, key.replace("-", "_")), _PARSERS[key](DEFAULTS[key])
                if value != default:
                    raise ValueError(f"{key} is {value} but no train:TASK measure is chosen; add --measure "
                                     f"train:{training.tasks()[0]} (or another task)")
            return
        check_choice("optimizer", self.optimizer, training.optimizers())
        training.check_lengths(self.train_task, self.lengths)

    def _check_lyapunov(self) -> None:
        if "lyapunov" not in self.measure:
            if self.lyap_k != 1:
                raise ValueError(f"lyap-k is {self.lyap_k} but the lyapunov measure is not chosen; "
                                 "add --measure lyapunov")
            return
        for cell in self.cell:
            n = len(cells.get(cell).state) * self.hidden
            if self.lyap_k > n:
                raise ValueError(f"lyap-k must be <= {n}, the {cell}'s state dimension at hidden "
                                 f"{self.hidden}, got {self.lyap_k}")

    def as_dict(self) -> dict:
        """JSON-ready, with flag names as keys (the form stored in the manifest)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name.replace("_", "-")] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def n_points(self) -> int:
        return len(self.cell) * len(self.lengths) * len(self.scales) * self.seeds

    def theory_applies(self, cell: str) -> bool:
        """Whether the mean-field theory describes this cell's points: the registry names a
        theory for the cell (:attr:`rnnsim.cells.Cell.theory`) and W_hh is gaussian."""
        return bool(cells.get(cell).theory) and self.init == "gaussian"

    def gate_bias(self, cell: str) -> dict:
        """The cell's gate biases as init keywords (``{"forget_bias": 1.0}`` for the lstm, ``{}``
        for the rnn), from :attr:`rnnsim.cells.Cell.gate_bias`."""
        return {keyword: getattr(self, keyword) for keyword, _gate in cells.get(cell).gate_bias}

    def same_results_as(self, stored) -> list:
        """The keys in which ``stored`` (a manifest's config) differs from this configuration;
        [] when they agree. A key ``stored`` lacks (written before it existed) counts as its
        default, so folders written by earlier versions resume and plot unchanged."""
        old = SweepConfig.from_mapping(stored).as_dict()
        new = self.as_dict()
        return [k for k in new if old.get(k) != new[k]]


@dataclass(frozen=True)
class RunOptions:
    """Where and how to run a sweep (the :data:`RUN_KEYS`); they never change the results."""

    out: str = DEFAULT_OUT
    device: str = DEFAULT_DEVICE
    quiet: bool = False
    scheduler: str | None = None  # a Dask scheduler's address (rnnsim.sweep.distributed)
    workers: int | None = None    # or a LocalCluster of this many worker processes


def configure(*layers) -> tuple:
    """The configuration and run options of a sweep from layers of flag-named settings.

    Each layer is a mapping such as the table of a TOML file or the flags a user
    gave; later layers win, and :data:`DEFAULTS` (and :class:`RunOptions`' defaults)
    fill the rest. Both the command line and :func:`rnnsim.sweep.run_sweep` call
    this, so a TOML file's ``out``, ``device`` and ``quiet`` mean the same to both.

    Returns
    -------
    (SweepConfig, RunOptions)
    """
    merged = {}
    for layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            raise TypeError(f"sweep settings must be mappings of flag names, got {type(layer).__name__}")
        merged.update(layer)
    config = SweepConfig.from_mapping(merged)
    options = RunOptions(**{key: parse(merged[key]) for key, parse in _RUN_PARSERS.items() if key in merged})
    if options.scheduler is not None and options.workers is not None:
        raise ValueError("choose one of scheduler (an existing Dask cluster) and workers (a new local one)")
    return config, options


def load_config_file(path) -> dict:
    """Read a TOML file of settings; its keys must be flag names (see the module notes).

    Every value is checked here, and an error names the file. Returns the table as
    read (pass it to :func:`configure` or :func:`rnnsim.sweep.run_sweep`).

    Raises ``OSError`` if the file cannot be read and ``ValueError``/``TypeError`` for
    invalid TOML, unknown keys, or bad values.
    """
    path = Path(path)
    if tomllib is None:  # pragma: no cover
        raise RuntimeError("reading a TOML config file needs Python 3.11 or newer (tomllib)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"config file {path} is not valid TOML: {' '.join(str(exc).split())}") from None
    allowed = set(DEFAULTS) | set(RUN_KEYS)
    for key, value in table.items():
        if key not in allowed:
            hint = f"; did you mean {key.replace('_', '-')!r}?" if key.replace("_", "-") in allowed else ""
            raise ValueError(f"config file {path}: unknown key {key!r}{hint} "
                             f"(allowed: {', '.join(sorted(allowed))})")
        parse = _PARSERS.get(key) or _RUN_PARSERS[key]
        try:
            parse(value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"config file {path}: {exc}") from None
    return table
