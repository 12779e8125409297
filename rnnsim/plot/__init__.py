r"""Figures of a sweep's results folder (PNG and PDF, matplotlib's Agg canvas, no display).

Public API
----------
plot_results(out, *, scales=None)   write every figure below into ``out``; returns the paths
                                    (for a folder of ``rnnsim train``: its learning curves)

Figures
-------
``phase_<cell>``
    log10_ratio (mean over seeds) over (T, scale) on a diverging colormap centred at 0
    (symmetric-log colour scale, linear within ±threshold), contours at ±threshold.
    Where the cell has a mean-field theory (the registry names one, gaussian init,
    loss="last") it overlays the annealed mean field's critical line χ = 1 (where χ
    crosses 1) and the finite-T boundaries
    :math:`T \cdot \tfrac12\log_{10}\chi = \pm\,\mathrm{threshold}`. With the
    ``lyapunov`` measure, the measured λ_max = 0 contour; with the ``pascanu`` measure,
    the scales at which every network has σ_max(W_hh)·γ < 1 (hatched: vanishing
    guaranteed; the gated cells have no such bound, see
    :attr:`rnnsim.cells.Cell.pascanu_gamma`); with the ``rates`` measure, a dot
    on every (T, S) whose 95% interval of log10_ratio over networks × sequences holds
    ±threshold, where the data do not settle the regime.
``profiles``
    log10‖∂L/∂h_t‖ against t at the longest T, for chosen scales: mean ± standard
    deviation over all sequences and seeds; where the theory applies the dashed lines
    are the annealed mean field's slope ½log10 χ per step, anchored at t = T.
``rates``
    One panel per cell, against scale at the longest T: the measured typical rate
    (``rate``), with the ``rates`` measure the mean rate, with the ``lyapunov`` measure
    λ_max, side by side; error bars are 95% bootstrap intervals over networks ×
    sequences where the folder holds per-sequence values (± std over seeds otherwise).
    Lines: the annealed mean field ½ ln χ, and the rate of the carry path alone ln σ(b)
    (the lstm's forget gate, the gru's update gate).
``spectrum`` (with the ``lyapunov`` measure)
    The top-k Lyapunov exponents λ_i against i / (state dimension) at the longest T,
    for chosen scales, mean over seeds.
``trainability_<cell>`` (with the ``train:TASK`` measure)
    The fraction of seeds that solved the task and the final held-out rate over (T, S),
    with the gradient map's ±threshold contours, the critical line and T = |ξ|
    (:mod:`rnnsim.plot.training`).
``learning_curves`` (a folder of ``rnnsim train``)
    Held-out rate and loss against the step and the gradient norm at every step, one
    line per seed, a column per cell (:mod:`rnnsim.plot.training`).

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, so no global
pyplot state or backend is touched.

Faults
------
Everything the figures need (manifest, summary, profiles) is read and validated
before the first figure is drawn, and every figure is drawn before the first file
is written: a damaged folder is a one-line ``ValueError`` naming the file, with
nothing written. Each file is written atomically (a temporary file beside it, then
a rename), so a ``kill -9`` leaves every figure whole or absent. The folder is
locked while ``plot_results`` runs (:mod:`rnnsim.sweep.lock`): a folder that a sweep
is writing is refused with :class:`~rnnsim.sweep.lock.FolderInUseError`.
"""
from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg

from .._io import atomic_write
from ..sweep import trainrun
from ..sweep.lock import FolderLock
from ..sweep.store import (
    MANIFEST,
    manifest_config,
    read_manifest,
    read_profiles,
    read_summary,
    remove_stale_temps,
)
from . import figures, training
from ._common import CellTheory

_FORMATS = ("png", "pdf")
_DPI = 130


def _save(fig, out: Path, stem: str):
    """Draw ``fig`` in every format; return [(path, bytes), ...] for :func:`plot_results` to write."""
    FigureCanvasAgg(fig)
    files = []
    for ext in _FORMATS:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=_DPI, bbox_inches="tight")
        files.append((out / f"{stem}.{ext}", buffer.getvalue()))
    return files


def _load(out: Path):
    """Read and validate everything the figures need: (config, rows, profiles at the longest T, and
    with the rates measure every finished (cell, T)'s per-sequence arrays)."""
    if not out.is_dir():
        raise OSError(f"cannot read {out}: {'not a folder' if out.exists() else 'no such folder'}")
    if not (out / MANIFEST).is_file():
        raise OSError(f"{out} holds no {MANIFEST}; it is not an rnnsim results folder")
    config = manifest_config(out, read_manifest(out))
    rows = read_summary(out, config)
    if not rows:
        raise ValueError(f"{out} holds no finished points yet")
    done = {(r["cell"], r["T"]) for r in rows}
    longest = max(config.lengths)
    missing = [cell for cell in config.cell if (cell, longest) not in done]
    if missing:
        raise ValueError(f"{out} has no finished points at T={longest} for {', '.join(missing)}; "
                         "finish the sweep with --resume first")
    profiles = {cell: read_profiles(out, cell, longest, config) for cell in config.cell}
    per_sequence = {cell: {} for cell in config.cell}
    if "rates" in config.measure:
        for cell, T in sorted(done, key=lambda key: (config.cell.index(key[0]), key[1])):
            per_sequence[cell][T] = profiles[cell] if T == longest else read_profiles(out, cell, T, config)
    return config, rows, profiles, per_sequence


def plot_results(out, *, scales=None):
    """Write the phase diagrams, profiles, rates (and spectrum) figures of the results folder ``out``.

    Parameters
    ----------
    out : path
        A folder written by :func:`rnnsim.sweep.run_sweep`.
    scales : sequence of float, optional
        Scales for the profiles and spectrum figures (the nearest ones in the sweep are
        used); default: five spread over the range plus the one nearest the cell's
        critical scale.

    Returns
    -------
    list of Path, the files written.

    Raises
    ------
    OSError
        ``out`` is not a results folder or cannot be written.
    ValueError
        A damaged manifest, summary or profile (named), or no finished points.
    FolderInUseError
        A sweep (or another plot) is writing ``out``.
    """
    out = Path(out)
    if trainrun.is_train_folder(out):
        return _plot_training(out)
    if scales is not None:
        from .._parse import parse_scales
        scales = parse_scales(list(scales) if not isinstance(scales, str) else scales)
    _load(out)  # read-only: refuse a damaged folder before the lock file is created
    with FolderLock(out, "plot") as lock:
        config, rows, profiles, per_sequence = _load(out)  # again, now that no sweep can change it
        ths = {cell: CellTheory(config, cell, config.scales) for cell in config.cell}
        files = []
        for cell in config.cell:
            figure = figures.phase(rows, config, cell, ths[cell], per_sequence[cell])
            files += _save(figure, out, f"phase_{cell}")
        files += _save(figures.profiles(config, profiles, ths, scales), out, "profiles")
        files += _save(figures.rates(rows, config, profiles, ths), out, "rates")
        if "lyapunov" in config.measure:
            files += _save(figures.spectrum(rows, config, profiles, ths, scales), out, "spectrum")
        if config.train_task is not None:
            for cell in config.cell:
                figure = training.trainability(rows, config, cell, ths[cell])
                files += _save(figure, out, f"trainability_{cell}")
        lock.claim()
        remove_stale_temps(out)
        for path, data in files:
            atomic_write(path, lambda fh, data=data: fh.write(data))
    return [path for path, _ in files]


def _plot_training(out: Path):
    """The learning curves of a folder of ``rnnsim train``: read and validated, drawn, then written
    atomically, under the folder's lock (as :func:`plot_results`)."""
    trainrun.read_training(out)  # read-only: refuse a damaged folder before the lock file is touched
    with FolderLock(out, "plot") as lock:
        data = trainrun.read_training(out)
        files = _save(training.learning_curves(data), out, "learning_curves")
        lock.claim()
        remove_stale_temps(out)
        for path, payload in files:
            atomic_write(path, lambda fh, payload=payload: fh.write(payload))
    return [path for path, _ in files]
