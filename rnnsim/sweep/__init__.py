r"""Sweeps over cells × sequence lengths × init scales × seeds, with resumable results.

Public API
----------
DEFAULTS, RUN_KEYS                 the default configuration and the run keys (flag names as keys)
parse_lengths, parse_scales, parse_cells
                                   "25,50,100" or "A:B:N" range syntax (from :mod:`rnnsim._parse`)
load_config_file(path)             a TOML file of settings (same keys as the flags)
open_dataset(out)                  a results folder as an xarray Dataset (needs rnnsim[xarray])
configure(*layers)                 (SweepConfig, RunOptions) from TOML tables and flags, as the CLI does
SweepConfig.from_mapping(mapping)  validated configuration
run_sweep(config, out, ...)        run (or resume) a sweep into a results folder
make_data(...)                     the inputs and targets of one (T, seed)
read_summary(out), read_profiles(out, cell, T), read_manifest(out)
fit_rate, rate_window, regime_of   the gradient measure's helpers
rate_grid, lyapunov_warmup         the steps of the mean rate's fit; the Lyapunov measure's warm-up
parse_measures, MEASURES           the measures (``--measure``) and their registry
SUMMARY_COLUMNS, COLUMN_MEANINGS   the columns of summary.csv with the default measures; what every
                                   column any measure writes means

Modules: :mod:`~rnnsim.sweep.config` (configuration), :mod:`~rnnsim.sweep.measures`
(what is measured: pluggable measures and their columns), :mod:`~rnnsim.sweep.bootstrap`
(seeded percentile intervals over sequences, or networks × sequences), :mod:`~rnnsim.sweep.plan`
(ensemble calls and the memory check), :mod:`~rnnsim.sweep.run` (the runner),
:mod:`~rnnsim.sweep.store` (the results folder), :mod:`~rnnsim.sweep.lock`,
:mod:`~rnnsim.sweep.provenance`, :mod:`~rnnsim.sweep.distributed` (the Dask runner),
:mod:`~rnnsim.sweep.dataset` (xarray, NetCDF, Zarr). The configuration loads eagerly; the runner and the
store load on first use, so that the command line's help and ``rnnsim theory`` stay
fast.

Results folder
--------------
``manifest.json``
    ``config`` (every key that shapes the results; ``--resume`` requires it to match,
    and a key that an older manifest lacks counts as its default), versions of
    rnnsim/numba/numpy/Python, git commit, device, dtype, start and end times, and run
    statistics (wall time, time inside the computations: :func:`rnnsim.gradients`,
    :func:`rnnsim.lyapunov`, the SVDs of W_hh).
``summary.csv``
    One row per (cell, init, hidden, T, scale, seed); the columns of the chosen
    measures (:func:`rnnsim.sweep.measures.columns`; :data:`SUMMARY_COLUMNS` with the
    default ones).
``profiles/<cell>_T<T>.npz``
    For the points of one (cell, T): ``scale`` (n,), ``seed`` (n,), and
    ``log10_grad_norm_mean``, ``log10_grad_norm_std`` (n, T+1), the mean and standard
    deviation over the B sequences of log10‖∂L/∂h_t‖, t = 0..T (stored as float32;
    the summary holds the float64 numbers); with the ``rates`` measure each sequence's
    rate and log10 ratio (n, B) and ln‖∂L/∂h_t‖ at :func:`rate_grid` (n, B, m), with
    ``lyapunov`` each sequence's λ_max (n, B) and the spectrum (n, k). A summary row's
    profile is the entry of its ``profile_file`` with the same (scale, seed).
``.rnnsim``, ``.rnnsim.lock``
    The marker (written first) and the lock (held for the whole run) of
    :mod:`rnnsim.sweep.store`.

Reproducibility
---------------
The networks of the row (cell, T, scale, seed = s) are exactly
``init_params(cell, hidden, input-size, classes, 1, scheme=init, scale=scale,
input_scale=..., bias_scale=..., forget_bias=..., update_bias=..., seed=s,
dtype=dtype)``, and its
data are ``make_data(T, s, ...)``: x ~ N(0, 1) per component and uniform class
targets from ``SeedSequence(s, spawn_key=(DATA_STREAM, T))``. Neither depends on the
rest of the grid, so sweeps that share points agree on them, and a resumed sweep
computes exactly what an uninterrupted one would. The bootstrap intervals draw from
a stream keyed by the row (:func:`rnnsim.sweep.bootstrap.point_rng`), so they too
are the same however the sweep is cut into calls or resumed.

Faults
------
Every file is written to a temporary file in the same folder, flushed, fsync'ed and
renamed over the old one, so a reader sees the old or the new file, never a torn
one. After each ensemble call the profiles and then the summary are replaced. A
sweep killed at any moment, even with SIGKILL and before its manifest exists, loses
at most the points of the call in flight, and ``resume=True`` recomputes exactly
the points missing from ``summary.csv``. A second sweep into a folder in use is
refused (:class:`~rnnsim.sweep.lock.FolderInUseError`). Sizes that cannot fit in
memory are refused before anything is written.
"""
from __future__ import annotations

import importlib

from .._parse import parse_cells, parse_lengths, parse_scales
from .config import (
    DEFAULT_OUT,
    DEFAULTS,
    DTYPES,
    RUN_KEYS,
    RunOptions,
    SweepConfig,
    configure,
    load_config_file,
)

_LAZY = {
    "run": ("run_sweep", "make_data", "DATA_STREAM", "COMPUTATIONS"),
    "store": ("read_summary", "read_profiles", "read_manifest", "prepare_folder", "open_sweep",
              "check_folder", "MANIFEST", "SUMMARY", "PROFILES_DIR", "MARKER", "FIGURE_PATTERNS",
              "atomic_write", "FolderInUseError"),
    "measures": ("fit_rate", "rate_window", "rate_grid", "regime_of", "lyapunov_warmup", "parse_measures",
                 "REGIMES", "SUMMARY_COLUMNS", "COLUMN_MEANINGS", "MEASURES", "Measure", "Column", "Array"),
    "plan": ("CALL_MEMORY_BYTES", "plan_sweep"),
    "bootstrap": (),
    "dataset": ("open_dataset",),
    "distributed": (),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["DEFAULTS", "DEFAULT_OUT", "DTYPES", "RUN_KEYS", "RunOptions", "SweepConfig", "configure",
           "load_config_file", "parse_cells", "parse_lengths", "parse_scales", *_WHERE]


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    if name in _LAZY:  # the submodules themselves
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'rnnsim.sweep' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE) | set(_LAZY))
