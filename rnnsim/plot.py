r"""Figures of a sweep's results folder (PNG and PDF, matplotlib's Agg canvas, no display).

Public API
----------
plot_results(out, *, scales=None)   write every figure below into ``out``; returns the paths

Figures
-------
``phase_<cell>``
    log10_ratio (mean over seeds) over (T, scale) on a diverging colormap centred at 0
    (symmetric-log colour scale, linear within ±threshold), contours at ±threshold.
    Where the mean-field theory applies (rnn, gaussian init, loss="last") it overlays
    the critical line χ = 1 and the finite-T boundaries
    :math:`T \cdot \tfrac12\log_{10}\chi = \pm\,\mathrm{threshold}`.
``profiles``
    log10‖∂L/∂h_t‖ against t at the longest T, for chosen scales: mean ± standard
    deviation over all sequences and seeds; for the rnn with gaussian init the dashed
    lines are the mean-field slope ½log10 χ per step, anchored at t = T.
``rates``
    The measured per-step rate (``rate`` in the summary, at the longest T; mean ± std
    over seeds) against scale, with the theory curve ½ ln χ, and for the lstm the
    cell-path rate ln σ(b_f).

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
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from . import cells, theory
from ._io import atomic_write
from .sweep.config import SweepConfig
from .sweep.lock import FolderLock
from .sweep.store import (
    MANIFEST,
    manifest_config,
    read_manifest,
    read_profiles,
    read_summary,
    remove_stale_temps,
)

_FORMATS = ("png", "pdf")
_DPI = 130
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _save(fig, out: Path, stem: str):
    """Draw ``fig`` in every format; return [(path, bytes), ...] for :func:`plot_results` to write."""
    FigureCanvasAgg(fig)
    files = []
    for ext in _FORMATS:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=_DPI, bbox_inches="tight")
        files.append((out / f"{stem}.{ext}", buffer.getvalue()))
    return files


def _has_forget_bias(cell: str) -> bool:
    return any(keyword == "forget_bias" for keyword, _gate in cells.get(cell).gate_bias)


def _edges(centres, log):
    """Cell edges around sorted centres (geometric midpoints on a log axis)."""
    points = np.log(centres) if log else np.asarray(centres, dtype=float)
    if len(points) == 1:
        half = 0.1 * abs(points[0]) if not log else 0.2
        e = np.array([points[0] - (half or 0.5), points[0] + (half or 0.5)])
    else:
        mid = 0.5 * (points[1:] + points[:-1])
        e = np.concatenate([[points[0] - (mid[0] - points[0])], mid, [points[-1] + (points[-1] - mid[-1])]])
    return np.exp(e) if log else e


def _grid(rows, cell, column):
    """(lengths, scales, mean over seeds of ``column`` as an array [scale, T])."""
    sel = [r for r in rows if r["cell"] == cell and r[column] is not None]
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


def _theory_applies(config: SweepConfig, cell: str) -> bool:
    return config.theory_applies(cell) and config.loss == "last"


def _subtitle(config: SweepConfig, cell: str) -> str:
    parts = [f"init={config.init}", f"H={config.hidden}", f"input scale {config.input_scale:g}",
             f"bias scale {config.bias_scale:g}"]
    if _has_forget_bias(cell):
        parts.append(f"forget bias {config.forget_bias:g}")
    parts.append(f"{config.seeds} seed(s) × {config.batch} sequences, loss={config.loss}, {config.dtype}")
    return ", ".join(parts)


def plot_phase(rows, config: SweepConfig, cell: str, out: Path):
    lengths, scales, Z = _grid(rows, cell, "log10_ratio")
    thr = config.threshold
    fig = Figure(figsize=(7.2, 5.0))
    ax = fig.add_subplot()
    # Symmetric log colour scale, linear within ±threshold: ratios run from a few
    # decades to hundreds, and a linear scale would leave everything but the extremes
    # white. Symmetric limits keep 0 at the centre of the diverging colormap.
    finite = np.abs(Z[np.isfinite(Z)])
    limit = max(float(finite.max()) if finite.size else 0.0, 1.5 * thr)
    norm = SymLogNorm(linthresh=thr, linscale=0.6, vmin=-limit, vmax=limit, base=10)
    mesh = ax.pcolormesh(_edges(lengths, log=True), _edges(scales, log=False), Z,
                         cmap="RdBu_r", norm=norm, shading="flat")
    ax.set_xscale("log")
    cbar = fig.colorbar(mesh, ax=ax, format=FuncFormatter(lambda v, _: f"{v:g}"))
    cbar.set_label(r"$\log_{10}\,\|\partial L/\partial h_0\| \,/\, \|\partial L/\partial h_T\|$  (decades)")
    if len(lengths) > 1 and len(scales) > 1:
        cs = ax.contour(lengths, scales, Z, levels=[-thr, thr], colors="k", linewidths=1.2,
                        linestyles="solid")
        ax.clabel(cs, fmt={-thr: f"−{thr:g}", thr: f"+{thr:g}"}, fontsize=8)
    handles = [ax.plot([], [], "k-", lw=1.2, label=f"measured ±{thr:g} decades")[0]]
    if _theory_applies(config, cell):
        s_c = theory.critical_scale(config.input_scale, config.bias_scale)
        handles.append(ax.axhline(s_c, color="0.15", ls="--", lw=1.5,
                                  label=rf"mean field $\chi=1$ ($S_c$={s_c:.3f})"))
        s_fine = np.linspace(scales.min(), scales.max(), 600)
        per_step = 0.5 * np.log10(np.atleast_1d(theory.chi(s_fine, config.input_scale, config.bias_scale)))
        with np.errstate(divide="ignore"):
            t_boundary = thr / np.abs(per_step)
        for side in (per_step < 0, per_step > 0):
            ax.plot(np.where(side, t_boundary, np.nan), s_fine, color="0.15", ls=":", lw=1.8)
        handles.append(ax.plot([], [], color="0.15", ls=":", lw=1.8,
                               label=rf"mean field $T\cdot\frac{{1}}{{2}}\log_{{10}}\chi=\pm{thr:g}$")[0])
    ax.set_xlim(_edges(lengths, log=True)[[0, -1]])
    ax.set_ylim(_edges(scales, log=False)[[0, -1]])
    ax.set_xlabel("sequence length T (steps)")
    ax.set_ylabel(r"init scale $S$ of $W_{hh}$")
    ax.set_title(f"{cell}: gradient ratio over T steps\n{_subtitle(config, cell)}", fontsize=9)
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.85)
    return _save(fig, out, f"phase_{cell}")


def _chosen_scales(available, requested, config):
    if requested:
        return sorted({available[np.argmin(np.abs(available - s))] for s in requested})
    picks = list(np.quantile(available, [0.0, 0.25, 0.5, 0.75, 1.0]))
    if config.init == "gaussian":
        picks.append(theory.critical_scale(config.input_scale, config.bias_scale))
    return sorted({available[np.argmin(np.abs(available - s))] for s in picks})


def plot_profiles(out: Path, config: SweepConfig, scales=None, profiles=None):
    """``profiles``: {cell: the arrays of read_profiles at the longest T}; read from ``out`` if None."""
    T = max(config.lengths)
    if profiles is None:
        profiles = {cell: read_profiles(out, cell, T) for cell in config.cell}
    fig = Figure(figsize=(6.4 * len(config.cell), 4.6))
    axes = fig.subplots(1, len(config.cell), squeeze=False)[0]
    t = np.arange(T + 1)
    for ax, cell in zip(axes, config.cell):
        data = profiles[cell]
        available = np.unique(data["scale"])
        chosen = _chosen_scales(available, scales, config)
        colours = [colormaps["viridis"](0.9 * i / max(len(chosen) - 1, 1)) for i in range(len(chosen))]
        for colour, s in zip(colours, chosen):
            pick = data["scale"] == s
            means = data["log10_grad_norm_mean"][pick].astype(np.float64)
            stds = data["log10_grad_norm_std"][pick].astype(np.float64)
            mean = means.mean(axis=0)
            spread = np.sqrt((stds**2).mean(axis=0) + means.var(axis=0))  # pooled over seeds
            ax.plot(t, mean, color=colour, lw=1.4, label=f"S = {s:g}")
            ax.fill_between(t, mean - spread, mean + spread, color=colour, alpha=0.2, lw=0)
            if _theory_applies(config, cell):
                chi = theory.chi(s, config.input_scale, config.bias_scale)
                ax.plot(t, mean[T] + (T - t) * 0.5 * math.log10(chi), color=colour, ls="--", lw=0.9)
        if _theory_applies(config, cell):
            ax.plot([], [], color="0.3", ls="--", lw=0.9,
                    label=r"mean field slope $\frac{1}{2}\log_{10}\chi$")
        ax.set_xlabel("time step t")
        ax.set_ylabel(r"$\log_{10}\,\|\partial L/\partial h_t\|$")
        ax.set_xlim(0, T)
        ax.set_title(f"{cell}, T = {T}: mean ± std over sequences and seeds", fontsize=9)
        ax.legend(fontsize=8, loc="best")
    return _save(fig, out, "profiles")


def plot_rates(rows, out: Path, config: SweepConfig):
    T = max(config.lengths)
    fig = Figure(figsize=(6.6, 4.6))
    ax = fig.add_subplot()
    for index, cell in enumerate(config.cell):
        by_scale = defaultdict(list)
        for r in rows:
            if r["cell"] == cell and r["T"] == T and r["rate"] is not None:
                by_scale[r["scale"]].append(r["rate"])
        s = np.array(sorted(by_scale))
        mean = np.array([np.mean(by_scale[x]) for x in s])
        std = np.array([np.std(by_scale[x]) for x in s])
        ax.errorbar(s, mean, yerr=std, fmt=_MARKERS[index % len(_MARKERS)], ms=4, capsize=2, lw=1,
                    label=f"{cell}, measured (T = {T})")
        if _theory_applies(config, cell):
            fine = np.linspace(s.min(), s.max(), 400)
            chis = np.atleast_1d(theory.chi(fine, config.input_scale, config.bias_scale))
            ax.plot(fine, 0.5 * np.log(chis), "k-", lw=1.2, label=r"rnn mean field $\frac{1}{2}\ln\chi$")
        if _has_forget_bias(cell):
            ax.axhline(-1.0 / theory.forget_timescale(config.forget_bias), color="tab:orange", ls=":", lw=1.2,
                       label=rf"{cell} cell path $\ln\sigma(b_f)$, $b_f$={config.forget_bias:g}")
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xlabel(r"init scale $S$ of $W_{hh}$")
    ax.set_ylabel(r"per-step rate $\ln(\|\partial L/\partial h_{t-1}\|/\|\partial L/\partial h_t\|)$"
                  " (1/step)")
    ax.set_title(f"per-step gradient rate, fit over the middle half of T = {T}\n"
                 f"init={config.init}, H={config.hidden}, input scale {config.input_scale:g}, "
                 f"bias scale {config.bias_scale:g}", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, out, "rates")


def _load(out: Path):
    """Read and validate everything the figures need: (config, rows, profiles at the longest T)."""
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
    profiles = {cell: read_profiles(out, cell, longest) for cell in config.cell}
    return config, rows, profiles


def plot_results(out, *, scales=None):
    """Write the phase diagrams, profiles and rates figures of the results folder ``out``.

    Parameters
    ----------
    out : path
        A folder written by :func:`rnnsim.sweep.run_sweep`.
    scales : sequence of float, optional
        Scales for the profiles figure (the nearest ones in the sweep are used);
        default: five spread over the range plus the one nearest the critical scale.

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
    if scales is not None:
        from ._parse import parse_scales
        scales = parse_scales(list(scales) if not isinstance(scales, str) else scales)
    _load(out)  # read-only: refuse a damaged folder before the lock file is created
    with FolderLock(out, "plot") as lock:
        config, rows, profiles = _load(out)  # again, now that no sweep can change it
        files = []
        for cell in config.cell:
            files += plot_phase(rows, config, cell, out)
        files += plot_profiles(out, config, scales, profiles)
        files += plot_rates(rows, out, config)
        lock.claim()
        remove_stale_temps(out)
        for path, data in files:
            atomic_write(path, lambda fh, data=data: fh.write(data))
    return [path for path, _ in files]
