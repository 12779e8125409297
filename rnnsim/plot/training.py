r"""Figures of training: learning curves of a train folder, and the trainability phase diagram.

``learning_curves`` (a folder of ``rnnsim train``)
    One column per cell; rows: the held-out success rate, the held-out loss, and
    log10 of the unclipped global gradient norm at every training step (with the
    clipping threshold), one line per seed.
``trainability_<cell>`` (a sweep with ``--measure train:TASK``)
    Over the same (T, S) grid as the gradient map: the fraction of the point's seeds
    that solved the task, and the mean final held-out rate. Overlaid: the gradient
    map's measured ±threshold contours of ``log10_ratio`` (the same summary), and where
    the cell has a mean-field theory its critical line χ = 1 and the line T = |ξ(S)|,
    the annealed mean field's timescale :math:`\xi = -1/\ln\chi` (the number of steps
    over which the mean squared gradient falls, or grows, by a factor e).
"""
from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .. import theory
from ._common import CellTheory, edges, grid, subtitle

_THEORY = "0.15"


def learning_curves(data) -> Figure:
    """The learning curves of a train folder (:func:`rnnsim.sweep.trainrun.read_training`)."""
    settings, manifest = data["settings"], data["manifest"]
    cell_names = settings["cell"]
    fig = Figure(figsize=(5.4 * len(cell_names), 9.0))
    axes = fig.subplots(3, len(cell_names), squeeze=False, sharex="col")
    seeds = settings["seeds"]
    colours = [colormaps["tab10"](i % 10) for i in range(seeds)]
    clip = settings["clip"]
    for column, cell in enumerate(cell_names):
        ev, hist = data["evaluations"][cell], data["history"][cell]
        rate_ax, loss_ax, norm_ax = axes[:, column]
        steps = np.arange(hist["loss"].shape[0])
        for s in range(seeds):
            rate_ax.plot(ev["step"], ev["rate"][:, s], color=colours[s], lw=1.3, label=f"seed {s}")
            loss_ax.plot(ev["step"], ev["loss"][:, s], color=colours[s], lw=1.3)
            norm_ax.plot(steps, hist["log10_grad_norm"][:, s], color=colours[s], lw=0.7, alpha=0.8)
        solved = manifest.get("solved_rate")
        if solved is not None:
            rate_ax.axhline(solved, color="0.4", ls="--", lw=0.9, label=f"solved at rate {solved:g}")
        positive = ev["loss"][np.isfinite(ev["loss"])]
        if positive.size and positive.min() > 0:
            loss_ax.set_yscale("log")
        if clip is not None:
            norm_ax.axhline(math.log10(clip), color="tab:red", ls=":", lw=1.2, label=f"clip at {clip:g}")
            norm_ax.legend(fontsize=7, loc="best")
        rate_ax.set_ylim(-0.02, 1.02)
        rate_ax.set_ylabel("held-out success rate")
        loss_ax.set_ylabel("held-out loss")
        norm_ax.set_ylabel(r"$\log_{10}$ global gradient norm (unclipped)")
        norm_ax.set_xlabel("training step")
        clip_text = "no clipping" if clip is None else f"clip {clip:g}"
        rate_ax.set_title(f"{cell}: {settings['task']}, T = {settings['length']}, S = {settings['scale']:g}, "
                          f"H = {settings['hidden']}\n{settings['optimizer']} lr {settings['lr']:g}, "
                          f"batch {settings['batch']}, {clip_text}, {settings['init']} init, "
                          f"{settings['dtype']}", fontsize=8)
        rate_ax.legend(fontsize=7, loc="best")
    fig.text(0.5, 0.005, manifest.get("rate_meaning", ""), ha="center", va="bottom", fontsize=6.5, wrap=True)
    return fig


def _theory_lines(ax, th: CellTheory, scales):
    """The critical line and T = |ξ(S)| where the cell has a theory; returns the legend handles."""
    handles = []
    if not th.applies:
        return handles
    if th.critical_scale is not None:
        low, high = edges(scales, log=False)[[0, -1]]
        where = "" if low <= th.critical_scale <= high else ", off the plotted scales"
        label = rf"annealed mean field $\chi=1$ ($S_c$={th.critical_scale:.3f}{where})"
        handles.append(ax.axhline(th.critical_scale, color=_THEORY, ls="--", lw=1.5, label=label))
    xi = np.abs(np.asarray(theory.timescale(th.chi_fine), dtype=float))
    ax.plot(np.where(np.isfinite(xi), xi, np.nan), th.fine, color="tab:orange", ls="-.", lw=1.6)
    handles.append(ax.plot([], [], color="tab:orange", ls="-.", lw=1.6,
                           label=r"annealed mean field $T=|\xi|$, $\xi=-1/\ln\chi$")[0])
    return handles


def trainability(rows, config, cell, th: CellTheory) -> Figure:
    """Fraction of seeds solved and mean final held-out rate over (T, S), with the gradient map's
    ±threshold contours, the critical line and T = |ξ| (see the module notes)."""
    thr = config.threshold
    _, _, ratio = grid(rows, cell, "log10_ratio")
    fig = Figure(figsize=(13.0, 5.2))
    axes = fig.subplots(1, 2)
    panels = (("train_solved", "fraction of seeds that solved the task", "Greens"),
              ("train_rate", "final held-out success rate (mean over seeds)", "viridis"))
    for ax, (column, label, cmap) in zip(axes, panels):
        lengths, scales, Z = grid(rows, cell, column)
        mesh = ax.pcolormesh(edges(lengths, log=True), edges(scales, log=False), Z, cmap=cmap, vmin=0.0,
                             vmax=1.0, shading="flat")
        ax.set_xscale("log")
        fig.colorbar(mesh, ax=ax).set_label(label)
        handles = []
        if len(lengths) > 1 and len(scales) > 1 and ratio.shape == Z.shape and np.isfinite(ratio).any():
            cs = ax.contour(lengths, scales, ratio, levels=[-thr, thr], colors="k", linewidths=1.2,
                            linestyles="solid")
            ax.clabel(cs, fmt={-thr: f"−{thr:g}", thr: f"+{thr:g}"}, fontsize=8)
        handles.append(ax.plot([], [], "k-", lw=1.2,
                               label=rf"gradient map: log10 ratio $=\pm{thr:g}$ decades")[0])
        handles += _theory_lines(ax, th, scales)
        ax.set_xlim(edges(lengths, log=True)[[0, -1]])
        ax.set_ylim(edges(scales, log=False)[[0, -1]])
        ax.set_xlabel("sequence length T (steps)")
        ax.set_ylabel(r"init scale $S$ of $W_{hh}$")
        ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.85)
    clip = "no clipping" if config.clip is None else f"clip {config.clip:g}"
    fig.suptitle(f"{cell}: trainability on {config.train_task}, {config.steps} steps of {config.optimizer} "
                 f"(lr {config.lr:g}, batch {config.train_batch}, {clip})\n{subtitle(config, cell)}",
                 fontsize=9)
    return fig
