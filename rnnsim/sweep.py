r"""Sweeps over cells × sequence lengths × init scales × seeds, with resumable results.

Public API
----------
DEFAULTS                           the default configuration (flag names as keys)
parse_lengths, parse_scales, parse_cells
                                   "25,50,100" or "A:B:N" range syntax
load_config_file(path)             a TOML file of defaults (same keys as the flags)
SweepConfig.from_mapping(mapping)  validated configuration
run_sweep(config, out, ...)        run (or resume) a sweep into a results folder
make_data(...)                     the inputs and targets of one (T, seed)
read_summary(out), read_profiles(out, cell, T), read_manifest(out)

Configuration keys
------------------
One spelling everywhere: the keys of a ``--config`` TOML file and of
``manifest.json["config"]`` are the command-line flag names without the leading
dashes (``input-scale``, not ``input_scale``). ``cell``, ``lengths`` and ``scales``
take the flag's string syntax or a TOML array. Precedence: explicit flags > TOML >
:data:`DEFAULTS`. Unknown keys are an error.

Results folder
--------------
``manifest.json``
    ``config`` (every key that shapes the results; ``--resume`` requires it to match),
    versions of rnnsim/numba/numpy/Python, git commit, device, dtype, start and end
    times, and run statistics (wall time, time inside :func:`rnnsim.gradients`).
``summary.csv``
    One row per (cell, init, hidden, T, scale, seed); columns in :data:`SUMMARY_COLUMNS`.
``profiles/<cell>_T<T>.npz``
    For the points of one (cell, T): ``scale`` (n,), ``seed`` (n,), and
    ``log10_grad_norm_mean``, ``log10_grad_norm_std`` (n, T+1), the mean and standard
    deviation over the B sequences of log10‖∂L/∂h_t‖, t = 0..T (stored as float32;
    the summary holds the float64 numbers). A summary row's profile is the entry of
    its ``profile_file`` with the same (scale, seed).

Reproducibility
---------------
The networks of the row (cell, T, scale, seed = s) are exactly
``init_params(cell, hidden, input-size, classes, 1, scheme=init, scale=scale,
input_scale=..., bias_scale=..., forget_bias=..., seed=s, dtype=dtype)``, and its
data are ``make_data(T, s, ...)``: x ~ N(0, 1) per component and uniform class
targets from ``SeedSequence(s, spawn_key=(DATA_STREAM, T))``. Neither depends on the
rest of the grid, so sweeps that share points agree on them, and a resumed sweep
computes exactly what an uninterrupted one would.

Crash safety
------------
Every file is written to a temporary file in the same folder, flushed, fsync'ed and
renamed over the old one (``os.replace`` is atomic), so a reader sees the old or the
new file, never a torn one. Points run in ensemble calls of one (cell, T); after each
call the profiles and then the summary are replaced. A sweep killed at any moment,
even with SIGKILL, loses at most the points of the call in flight; ``resume=True``
recomputes exactly the points missing from ``summary.csv``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__, theory
from ._io import TMP_PREFIX as _TMP_PREFIX, atomic_write
from ._machine import cpu_model
from . import cells
from ._validate import check_choice
from .losses import LOSSES
from .engine import gradients, resolve_device
from .init import SCHEMES, init_params

DEFAULTS = {
    "cell": "rnn,lstm",
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
    "seeds": 2,
    "loss": "last",
    "threshold": 1.0,
    "dtype": "float64",
}
"""Defaults of every key that shapes the results (flag names as keys)."""

RUN_KEYS = ("device", "out", "quiet")
"""Keys a TOML file may also set that do not change the results (not compared by resume)."""

DTYPES = ("float64", "float32")
REGIMES = ("vanishing", "stable", "exploding")
DATA_STREAM = 0xDA7A  # spawn-key tag that separates the data streams from init_params' streams

MANIFEST = "manifest.json"
SUMMARY = "summary.csv"
PROFILES_DIR = "profiles"
FIGURE_PATTERNS = ("phase_*.png", "phase_*.pdf", "profiles.png", "profiles.pdf", "rates.png", "rates.pdf")
_MANIFEST_FORMAT = 1

# Host memory one ensemble call may use for the activations BPTT keeps; larger
# (cell, T) groups are split into several calls of whole networks.
CALL_MEMORY_BYTES = 1 << 30

SUMMARY_COLUMNS = (
    "cell", "init", "hidden", "T", "scale", "seed",
    "log10_ratio",             # mean over sequences of log10‖∂L/∂h_0‖ − log10‖∂L/∂h_T‖
    "log10_ratio_std",         # its standard deviation over the sequences
    "log10_grad_norm_params",  # log10 of the global norm of all parameter gradients
    "loss",
    "regime",                  # vanishing / stable / exploding: log10_ratio vs ∓threshold
    "rate",                    # measured per-step rate of ln‖∂L/∂h_t‖ going back (see fit_rate)
    "mf_chi",                  # mean-field χ (rnn + gaussian only, else empty)
    "mf_rate",                 # ½ ln χ, to compare with rate
    "mf_log10_ratio",          # T · ½ log10 χ, to compare with log10_ratio (loss="last" only)
    "mf_regime",               # the regime mf_log10_ratio implies
    "profile_file",            # the .npz that holds this row's per-step profile
)


# --------------------------------------------------------------------------- parsing

def _parse_int(name, text):
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {text!r} is not an integer") from None
    return value


def _parse_float(name, text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: {text!r} is not finite")
    return value


def _split_range(name, value):
    """``"a,b,c"`` -> ("list", [...]); ``"A:B:N"`` -> ("range", (A, B, N)); lists pass through."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{name}: empty list")
        return "list", list(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{name}: expected a comma list or A:B:N, got {value!r}")
    text = str(value).strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ValueError(f"{name}: malformed range {text!r}; expected A:B:N")
        return "range", [p.strip() for p in parts]
    items = [p.strip() for p in text.split(",")]
    if not text or not all(items):
        raise ValueError(f"{name}: malformed list {text!r}; expected values separated by commas")
    return "list", items


def _no_duplicates(name, values):
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{name}: {v!r} appears twice")
        seen.add(v)
    return sorted(values)


def parse_lengths(value) -> tuple:
    """Sequence lengths from ``"25,50,100"``, ``"A:B:N"`` (N log-spaced integers) or a list.

    Raises ``ValueError`` for malformed text, values < 1, duplicates, or a range
    that cannot hold N distinct integers. Returns a sorted tuple of ints.
    """
    kind, items = _split_range("lengths", value)
    if kind == "range":
        lo, hi, n = (_parse_int("lengths", p) for p in items)
        if lo < 1 or hi < lo or n < 1 or (n == 1 and lo != hi):
            raise ValueError(f"lengths: range {value!r} needs 1 <= A <= B and N >= 1 (N = 1 only if A = B)")
        lengths = np.unique(np.rint(np.geomspace(lo, hi, n)).astype(np.int64))
        if len(lengths) != n:
            raise ValueError(f"lengths: {value!r} holds only {len(lengths)} distinct integers; use a smaller N")
        return tuple(int(t) for t in lengths)
    lengths = []
    for item in items:
        if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
            raise ValueError(f"lengths: {item!r} is not an integer")
        t = _parse_int("lengths", item)
        if t < 1:
            raise ValueError(f"lengths must be >= 1, got {t}")
        lengths.append(t)
    return tuple(_no_duplicates("lengths", lengths))


def _tidy(x: float) -> float:
    """Round away linspace noise (0.6000000000000001 -> 0.6) so that keys read back exactly."""
    return float(f"{x:.12g}")


def parse_scales(value) -> tuple:
    """Init scales from ``"0.5,1,2"``, ``"A:B:N"`` (N evenly spaced, ends included) or a list.

    Every scale must be finite and > 0. Returns a sorted tuple of floats.
    """
    kind, items = _split_range("scales", value)
    if kind == "range":
        lo, hi = (_parse_float("scales", p) for p in items[:2])
        n = _parse_int("scales", items[2])
        if n < 1 or hi < lo or (n == 1 and lo != hi):
            raise ValueError(f"scales: range {value!r} needs A <= B and N >= 1 (N = 1 only if A = B)")
        values = [_tidy(s) for s in np.linspace(lo, hi, n)]
    else:
        values = [_tidy(_parse_float("scales", item)) for item in items]
    for s in values:
        if s <= 0:
            raise ValueError(f"scales must be > 0, got {s:g}")
    return tuple(_no_duplicates("scales", values))


def parse_cells(value) -> tuple:
    """Cells from ``"rnn,lstm"`` or a list; unknown or repeated names are an error."""
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",")]
    elif isinstance(value, (list, tuple)) and value:
        items = list(value)
    else:
        raise ValueError(f"cell: expected a comma list such as 'rnn,lstm', got {value!r}")
    if not all(items):
        raise ValueError(f"cell: malformed list {value!r}; expected names separated by commas")
    names = [cells.get(item).name for item in items]
    _no_duplicates("cell", names)
    return tuple(n for n in cells.names() if n in names)  # the registry's canonical order


def load_config_file(path) -> dict:
    """Read a TOML file of defaults; its keys must be flag names (see module notes).

    Raises ``OSError`` if the file cannot be read and ``ValueError`` for invalid TOML
    or unknown keys.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
    allowed = set(DEFAULTS) | set(RUN_KEYS)
    for key in table:
        if key not in allowed:
            hint = f"; did you mean {key.replace('_', '-')!r}?" if key.replace("_", "-") in allowed else ""
            raise ValueError(f"config file {path}: unknown key {key!r}{hint} "
                             f"(allowed: {', '.join(sorted(allowed))})")
    return table


# --------------------------------------------------------------------------- config

def _positive_int(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, str)):
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    v = _parse_int(key, value)
    if v < 1:
        raise ValueError(f"{key} must be a positive integer, got {v}")
    return v


def _number(key, value, *, minimum=None, strict=False):
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number, got {value!r}")
    v = _parse_float(key, value)
    if minimum is not None and (v < minimum or (strict and v == minimum)):
        raise ValueError(f"{key} must be {'>' if strict else '>='} {minimum:g}, got {v:g}")
    return v


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
    seeds: int
    loss: str
    threshold: float
    dtype: str

    @classmethod
    def from_mapping(cls, mapping) -> "SweepConfig":
        """Build from flag-named keys; missing keys take :data:`DEFAULTS`; ``RUN_KEYS`` are ignored."""
        unknown = sorted(k for k in mapping if k not in DEFAULTS and k not in RUN_KEYS)
        if unknown:
            raise ValueError(f"unknown configuration key(s): {', '.join(unknown)}")
        m = {**DEFAULTS, **{k: v for k, v in mapping.items() if k in DEFAULTS}}
        return cls(
            cell=parse_cells(m["cell"]),
            hidden=_positive_int("hidden", m["hidden"]),
            input_size=_positive_int("input-size", m["input-size"]),
            classes=_positive_int("classes", m["classes"]),
            batch=_positive_int("batch", m["batch"]),
            lengths=parse_lengths(m["lengths"]),
            scales=parse_scales(m["scales"]),
            init=check_choice("init", m["init"], SCHEMES),
            input_scale=_number("input-scale", m["input-scale"], minimum=0.0),
            bias_scale=_number("bias-scale", m["bias-scale"], minimum=0.0),
            forget_bias=_number("forget-bias", m["forget-bias"]),
            seeds=_positive_int("seeds", m["seeds"]),
            loss=check_choice("loss", m["loss"], LOSSES),
            threshold=_number("threshold", m["threshold"], minimum=0.0, strict=True),
            dtype=check_choice("dtype", m["dtype"], DTYPES),
        )

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
        """Whether the mean-field theory of :mod:`rnnsim.theory` describes this cell's points."""
        return cell == "rnn" and self.init == "gaussian"


# --------------------------------------------------------------------------- data and measures

def make_data(T, seed, batch, input_size, classes, loss="last", dtype="float64"):
    """Inputs (batch, T, input_size) ~ N(0, 1) and uniform targets for one (T, seed).

    Targets are (batch,) for ``loss="last"`` and (batch, T) for ``loss="every"``.
    The stream is ``SeedSequence(seed, spawn_key=(DATA_STREAM, T))``.
    """
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(DATA_STREAM, int(T))))
    x = rng.standard_normal((batch, T, input_size)).astype(dtype)
    y = rng.integers(0, classes, size=(batch,) if loss == "last" else (batch, T))
    return x, y


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
    """'vanishing' below −threshold, 'exploding' above +threshold, else 'stable'."""
    r = np.asarray(log10_ratio, dtype=np.float64)
    return np.where(r < -threshold, "vanishing", np.where(r > threshold, "exploding", "stable"))


# --------------------------------------------------------------------------- files

def _write_json(path, obj):
    atomic_write(path, lambda fh: fh.write((json.dumps(obj, indent=2, allow_nan=True) + "\n").encode()))


def read_manifest(out) -> dict:
    path = Path(out) / MANIFEST
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


_INT_COLUMNS = ("hidden", "T", "seed")
_STR_COLUMNS = ("cell", "init", "regime", "mf_regime", "profile_file")


def read_summary(out) -> list:
    """The rows of ``summary.csv`` as dicts, numbers parsed (empty cells -> None)."""
    path = Path(out) / SUMMARY
    rows = []
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not set(SUMMARY_COLUMNS) <= set(reader.fieldnames):
                raise ValueError(f"{path} lacks the summary columns")
            for raw in reader:
                row = {}
                for key, text in raw.items():
                    if key in _STR_COLUMNS:
                        row[key] = text
                    elif text == "":
                        row[key] = None
                    elif key in _INT_COLUMNS:
                        row[key] = int(text)
                    else:
                        row[key] = float(text)
                rows.append(row)
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (TypeError, ValueError, csv.Error) as exc:
        raise ValueError(f"{path} is malformed: {exc}") from None
    return rows


def _profile_name(cell, T):
    return f"{PROFILES_DIR}/{cell}_T{T}.npz"


def read_profiles(out, cell, T) -> dict:
    """The profile arrays of one (cell, T); see the module notes for the keys."""
    path = Path(out) / _profile_name(cell, T)
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is malformed: {exc}") from None


def _format(value):
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def _csv_line(row) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_format(row[c]) for c in SUMMARY_COLUMNS])
    return buf.getvalue()


def _summary_bytes(lines) -> bytes:
    """The summary file from already formatted rows (formatted once: the file is rewritten often)."""
    return (",".join(SUMMARY_COLUMNS) + "\n" + "".join(lines)).encode()


def _owned_files(out: Path):
    """Every file of a results folder that rnnsim wrote (and may replace with overwrite)."""
    found = [out / MANIFEST, out / SUMMARY]
    found += sorted((out / PROFILES_DIR).glob("*_T*.npz")) if (out / PROFILES_DIR).is_dir() else []
    for pattern in FIGURE_PATTERNS:
        found += sorted(out.glob(pattern))
    found += sorted(out.glob(_TMP_PREFIX + "*"))
    if (out / PROFILES_DIR).is_dir():
        found += sorted((out / PROFILES_DIR).glob(_TMP_PREFIX + "*"))
    return [p for p in found if p.is_file()]


def _check_writable(folder: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=_TMP_PREFIX + "probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(f"cannot write to results folder {folder}: {exc.strerror or exc}") from None


def prepare_folder(out, config: SweepConfig, *, resume=False, overwrite=False) -> list:
    """Check the results folder before anything is written; return the finished rows.

    Creates the folder (and ``profiles/``) if needed. With ``overwrite`` the files
    rnnsim wrote there are removed, and only after every check has passed.

    Raises
    ------
    ValueError
        resume and overwrite together; a resume whose configuration differs.
    FileExistsError
        The folder holds results and neither resume nor overwrite was given.
    OSError
        The folder is not a folder, is not empty without being a results folder,
        or cannot be written.
    """
    if resume and overwrite:
        raise ValueError("choose one of resume and overwrite, not both")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"results folder {out} exists and is not a folder")
    finished = []
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise FileExistsError(f"{out} is not empty and holds no {MANIFEST}; "
                                  "it is not an rnnsim results folder, choose another --out")
        if not (resume or overwrite):
            raise FileExistsError(f"{out} already holds results; use --resume to continue "
                                  "them or --overwrite to replace them")
        if resume:
            old = read_manifest(out).get("config")
            new = config.as_dict()
            if old != new:
                diff = [k for k in sorted(set(new) | set(old or {})) if (old or {}).get(k) != new.get(k)]
                raise ValueError(f"cannot resume {out}: it was written with a different configuration "
                                 f"({', '.join(diff)} differ)")
            if (out / SUMMARY).is_file():
                finished = read_summary(out)
    try:
        (out / PROFILES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create results folder {out}: {exc.strerror or exc}") from None
    _check_writable(out)
    _check_writable(out / PROFILES_DIR)
    for stale in _owned_files(out):
        if overwrite or stale.name.startswith(_TMP_PREFIX):
            stale.unlink()
    return finished


# --------------------------------------------------------------------------- provenance

def _git_commit():
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def _device_name(device: str) -> str:
    if device == "cuda":
        try:
            from numba import cuda
            name = cuda.get_current_device().name
            return name.decode() if isinstance(name, bytes) else str(name)
        except Exception as exc:  # the name is provenance only; never fail a sweep over it
            return f"cuda ({type(exc).__name__})"
    import numba
    return f"{cpu_model()}, {numba.get_num_threads()} threads"


def _provenance(device: str) -> dict:
    import numba
    commit, dirty = _git_commit()
    return {
        "versions": {"rnnsim": __version__, "numba": numba.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "git_commit": commit,
        "git_dirty": dirty,
        "device": device,
        "device_name": _device_name(device),
        "platform": platform.platform(),
    }


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- running

def _networks_per_call(config, cell, T):
    G = cells.get(cell).G
    itemsize = np.dtype(config.dtype).itemsize
    per_network = config.batch * (T + 1) * config.hidden * itemsize * (2 * G + 4)
    return max(1, CALL_MEMORY_BYTES // per_network)


def _run_call(config, cell, T, points, device, data_cache, network_cache):
    """One ensemble call for ``points`` = [(scale, seed), ...]; returns (rows, profiles, seconds).

    ``network_cache`` keeps each (cell, scale, seed) network for the next T (the same
    weights at every length); ``data_cache`` keeps each seed's data of this T.
    """
    for scale, seed in points:
        if (cell, scale, seed) not in network_cache:
            network_cache[(cell, scale, seed)] = init_params(
                cell, config.hidden, config.input_size, config.classes, 1, scheme=config.init, scale=scale,
                input_scale=config.input_scale, bias_scale=config.bias_scale, forget_bias=config.forget_bias,
                seed=seed, dtype=config.dtype)
    networks = [network_cache[(cell, scale, seed)] for scale, seed in points]
    params = {k: np.concatenate([p[k] for p in networks]) for k in networks[0]}
    for _, seed in points:
        if seed not in data_cache:
            data_cache[seed] = make_data(T, seed, config.batch, config.input_size, config.classes,
                                         config.loss, config.dtype)
    inputs = np.stack([data_cache[seed][0] for _, seed in points])
    targets = np.stack([data_cache[seed][1] for _, seed in points])

    start = time.perf_counter()
    result = gradients(cell, params, inputs, targets, loss=config.loss, device=device)
    seconds = time.perf_counter() - start

    log_norm = result["log_grad_norm"]                       # (E, B, T+1), natural log
    log10_norm = log_norm / math.log(10.0)
    ratio = log10_norm[..., 0] - log10_norm[..., T]          # (E, B)
    ratio_mean, ratio_std = ratio.mean(axis=1), ratio.std(axis=1)
    rates = fit_rate(log_norm.mean(axis=1), T)
    regimes = regime_of(ratio_mean, config.threshold)
    rows = []
    for e, (scale, seed) in enumerate(points):
        rows.append({
            "cell": cell, "init": config.init, "hidden": config.hidden, "T": T, "scale": scale, "seed": seed,
            "log10_ratio": float(ratio_mean[e]), "log10_ratio_std": float(ratio_std[e]),
            "log10_grad_norm_params": float(result["log_grad_norm_params"][e]) / math.log(10.0),
            "loss": float(result["loss"][e]), "regime": str(regimes[e]), "rate": float(rates[e]),
            "mf_chi": None, "mf_rate": None, "mf_log10_ratio": None, "mf_regime": "",
            "profile_file": _profile_name(cell, T),
        })
    profiles = {
        "scale": np.array([p[0] for p in points], dtype=np.float64),
        "seed": np.array([p[1] for p in points], dtype=np.int64),
        "log10_grad_norm_mean": log10_norm.mean(axis=1).astype(np.float32),
        "log10_grad_norm_std": log10_norm.std(axis=1).astype(np.float32),
    }
    return rows, profiles, seconds


def _add_mean_field(rows, config, chi_of_scale):
    for row in rows:
        if not config.theory_applies(row["cell"]):
            continue
        c = chi_of_scale[row["scale"]]
        row["mf_chi"] = c
        row["mf_rate"] = 0.5 * math.log(c)
        if config.loss == "last":  # with loss="every" h_0 also collects the early loss terms
            row["mf_log10_ratio"] = row["T"] * 0.5 * math.log10(c)
            row["mf_regime"] = str(regime_of(row["mf_log10_ratio"], config.threshold))


def _merge_profiles(out: Path, cell, T, new):
    path = out / _profile_name(cell, T)
    if path.is_file():
        old = read_profiles(out, cell, T)
        replaced = {(s, d) for s, d in zip(new["scale"].tolist(), new["seed"].tolist())}
        keep = np.array([(s, d) not in replaced for s, d in zip(old["scale"].tolist(), old["seed"].tolist())],
                        dtype=bool)
        new = {k: np.concatenate([old[k][keep], new[k]]) for k in new}
    order = np.lexsort((new["seed"], new["scale"]))
    new = {k: v[order] for k, v in new.items()}
    atomic_write(path, lambda fh: np.savez(fh, **new))


def _profile_keys(out: Path, cell, T):
    path = out / _profile_name(cell, T)
    if not path.is_file():
        return set()
    try:
        data = read_profiles(out, cell, T)
    except (OSError, ValueError):
        return set()
    return set(zip(data["scale"].tolist(), data["seed"].tolist()))


def run_sweep(config: SweepConfig, out, *, device="cpu", resume=False, overwrite=False, progress=None) -> dict:
    """Run the sweep ``config`` into the results folder ``out``.

    Parameters
    ----------
    config : SweepConfig
    out : path
        The results folder; created if missing. An existing results folder needs
        ``resume`` (continue it; the configuration must match) or ``overwrite``
        (replace the files rnnsim wrote there; other files are left alone).
    device : {"cpu", "cuda", "auto"}
    progress : callable, optional
        Called as ``progress(advance, total, label)`` once with ``advance=0`` before
        the first call and then after every ensemble call; ``advance`` and ``total``
        are in units of estimated work (network·steps, lstm weighted 3×).

    Returns
    -------
    dict
        ``points_total``, ``points_computed``, ``points_skipped``, ``calls``,
        ``wall_seconds`` (the whole call), ``kernel_seconds`` (inside
        :func:`rnnsim.gradients`), ``kernel_share``. Also stored in the manifest.

    Notes
    -----
    All points of one (cell, T) run as one ensemble call of E = scales × seeds
    networks (split into several calls only above ``CALL_MEMORY_BYTES``), because
    that is where the kernels' speed goes. Every check (configuration, device,
    folder) happens before the first byte is written.
    """
    wall_start = time.perf_counter()
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}")
    resolved = resolve_device(device)
    out = Path(out)
    finished = prepare_folder(out, config, resume=resume, overwrite=overwrite)

    # Points listed in the summary whose profile is also on disk are done.
    on_disk = {}
    done_rows = {}
    for row in finished:
        key = (row["cell"], row["T"])
        if key not in on_disk:
            on_disk[key] = _profile_keys(out, *key)
        if (row["scale"], row["seed"]) in on_disk[key]:
            done_rows[(row["cell"], row["T"], row["scale"], row["seed"])] = row

    chi_of_scale = {}
    if any(config.theory_applies(c) for c in config.cell):
        chis = np.atleast_1d(theory.chi(np.array(config.scales), config.input_scale, config.bias_scale))
        chi_of_scale = dict(zip(config.scales, chis.tolist()))

    old_manifest = read_manifest(out) if resume and (out / MANIFEST).is_file() else {}
    run = {"started": _now(), "finished": None, **_provenance(resolved), "dtype": config.dtype}
    manifest = {
        "format": _MANIFEST_FORMAT,
        "tool": "rnnsim sweep",
        "config": config.as_dict(),
        "points_total": config.n_points,
        "status": "running",
        **run,
        "stats": None,
        "earlier_runs": old_manifest.get("earlier_runs", []) + (
            [{k: old_manifest.get(k) for k in ("started", "finished", "status", "device", "device_name",
                                               "git_commit", "versions", "stats")}] if old_manifest else []),
    }
    _write_json(out / MANIFEST, manifest)

    calls = []
    for cell in config.cell:
        for T in config.lengths:
            pending = [(s, d) for s in config.scales for d in range(config.seeds)
                       if (cell, T, s, d) not in done_rows]
            step = _networks_per_call(config, cell, T)
            calls += [(cell, T, pending[i:i + step]) for i in range(0, len(pending), step)]
    cost = {c: cells.get(c).cost for c in config.cell}
    total = sum(cost[c] * T * len(p) for c, T, p in calls)
    if progress is not None:
        progress(0, total, "")

    order = {c: i for i, c in enumerate(config.cell)}
    lines = {(order[r["cell"]], r["T"], r["scale"], r["seed"]): _csv_line(r) for r in done_rows.values()}
    kernel_seconds = 0.0
    computed = 0
    data_cache, data_key = {}, None
    network_cache, network_key = {}, None
    for cell, T, points in calls:
        if data_key != T:
            data_cache, data_key = {}, T
        if network_key != cell:  # calls run cell by cell: keep one cell's networks at a time
            network_cache, network_key = {}, cell
        rows, profiles, seconds = _run_call(config, cell, T, points, resolved, data_cache, network_cache)
        kernel_seconds += seconds
        _add_mean_field(rows, config, chi_of_scale)
        # Profiles first: a summary row never points at a profile that is not on disk.
        _merge_profiles(out, cell, T, profiles)
        for row in rows:
            done_rows[(cell, T, row["scale"], row["seed"])] = row
            lines[(order[cell], T, row["scale"], row["seed"])] = _csv_line(row)
        ordered = [lines[k] for k in sorted(lines)]
        atomic_write(out / SUMMARY, lambda fh: fh.write(_summary_bytes(ordered)))
        computed += len(points)
        if progress is not None:
            progress(cost[cell] * T * len(points), total, f"{cell} T={T}")

    if not calls and not (out / SUMMARY).is_file():
        atomic_write(out / SUMMARY, lambda fh: fh.write(_summary_bytes([])))
    wall = time.perf_counter() - wall_start
    stats = {
        "points_total": config.n_points,
        "points_computed": computed,
        "points_skipped": config.n_points - computed,
        "calls": len(calls),
        "wall_seconds": wall,
        "kernel_seconds": kernel_seconds,
        "kernel_share": kernel_seconds / wall if wall > 0 else None,
    }
    manifest.update(status="complete", finished=_now(), stats=stats)
    _write_json(out / MANIFEST, manifest)
    return stats
