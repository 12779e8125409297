"""The figures of a results folder, each drawn on its own :class:`~matplotlib.figure.Figure`."""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .. import cells
from ..sweep.measures import rate_grid
from ._common import (
    CellTheory,
    carry_paths,
    chosen_scales,
    edges,
    grid,
    has_column,
    pooled_interval,
    pooled_mean_rate,
    subtitle,
)

_MARKERS = ("o", "s", "^", "D", "v", "P")
_THEORY = "0.15"


def _invisible(ax, label):
    """A legend entry that is only text."""
    return ax.plot([], [], " ", label=label)[0]


def phase(rows, config, cell, th: CellTheory, per_sequence=None) -> Figure:
    """log10_ratio over (T, S) with the measured ±threshold contours; the annealed mean field's
    critical line and finite-T boundaries where the cell has a theory; the measured λ_max = 0
    where the lyapunov measure ran; the scales where the Pascanu bound guarantees vanishing;
    and, with the rates measure (``per_sequence``: {T: profile arrays}), a dot on every cell whose
    95% interval of log10_ratio over networks × sequences holds a ±threshold (its regime is
    not settled by the data)."""
    lengths, scales, Z = grid(rows, cell, "log10_ratio")
    thr = config.threshold
    fig = Figure(figsize=(7.2, 5.0))
    ax = fig.add_subplot()
    # Symmetric log colour scale, linear within ±threshold: ratios run from a few
    # decades to hundreds, and a linear scale would leave everything but the extremes
    # white. Symmetric limits keep 0 at the centre of the diverging colormap.
    finite = np.abs(Z[np.isfinite(Z)])
    limit = max(float(finite.max()) if finite.size else 0.0, 1.5 * thr)
    norm = SymLogNorm(linthresh=thr, linscale=0.6, vmin=-limit, vmax=limit, base=10)
    mesh = ax.pcolormesh(edges(lengths, log=True), edges(scales, log=False), Z,
                         cmap="RdBu_r", norm=norm, shading="flat")
    ax.set_xscale("log")
    cbar = fig.colorbar(mesh, ax=ax, format=FuncFormatter(lambda v, _: f"{v:g}"))
    cbar.set_label(r"$\log_{10}\,\|\partial L/\partial h_0\| \,/\, \|\partial L/\partial h_T\|$  (decades)")
    two_d = len(lengths) > 1 and len(scales) > 1
    if two_d:
        cs = ax.contour(lengths, scales, Z, levels=[-thr, thr], colors="k", linewidths=1.2,
                        linestyles="solid")
        ax.clabel(cs, fmt={-thr: f"−{thr:g}", thr: f"+{thr:g}"}, fontsize=8)
    handles = [ax.plot([], [], "k-", lw=1.2, label=f"measured ±{thr:g} decades")[0]]
    if th.applies:
        if th.critical_scale is not None:
            low, high = edges(scales, log=False)[[0, -1]]
            where = "" if low <= th.critical_scale <= high else ", off the plotted scales"
            label = rf"annealed mean field $\chi=1$ ($S_c$={th.critical_scale:.3f}{where})"
            handles.append(ax.axhline(th.critical_scale, color=_THEORY, ls="--", lw=1.5, label=label))
        else:
            handles.append(_invisible(ax, r"annealed mean field: $\chi$ does not cross 1 for "
                                          r"$S$ in [0.05, 50]"))
        per_step = 0.5 * np.log10(th.chi_fine)
        with np.errstate(divide="ignore"):
            t_boundary = thr / np.abs(per_step)
        for side in (per_step < 0, per_step > 0):
            ax.plot(np.where(side, t_boundary, np.nan), th.fine, color=_THEORY, ls=":", lw=1.8)
        label = rf"annealed mean field $T\cdot\frac{{1}}{{2}}\log_{{10}}\chi=\pm{thr:g}$"
        handles.append(ax.plot([], [], color=_THEORY, ls=":", lw=1.8, label=label)[0])
    if has_column(rows, cell, "lyap_max"):
        _, lyap_scales, L = grid(rows, cell, "lyap_max")
        if two_d and np.nanmin(L) < 0 < np.nanmax(L):
            ax.contour(lengths, lyap_scales, L, levels=[0.0], colors="tab:green", linewidths=1.6,
                       linestyles="dashdot")
            handles.append(ax.plot([], [], color="tab:green", ls="-.", lw=1.6,
                                   label=r"measured $\lambda_{max}=0$")[0])
        else:
            sign = "<" if np.nanmax(L) < 0 else ">"
            handles.append(_invisible(ax, rf"measured $\lambda_{{max}} {sign} 0$ everywhere"))
    if has_column(rows, cell, "sigma_max"):
        handles.append(_pascanu(ax, rows, cell, scales))
    if per_sequence:
        handles.append(_unsettled(ax, cell, lengths, scales, per_sequence, thr))
    ax.set_xlim(edges(lengths, log=True)[[0, -1]])
    ax.set_ylim(edges(scales, log=False)[[0, -1]])
    ax.set_xlabel("sequence length T (steps)")
    ax.set_ylabel(r"init scale $S$ of $W_{hh}$")
    ax.set_title(f"{cell}: gradient ratio over T steps\n{subtitle(config, cell)}", fontsize=9)
    ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.85)
    return fig


def _pascanu(ax, rows, cell, scales):
    """Hatch the scales at which every network has σ_max(W_hh)·γ < 1 (Pascanu et al. 2013)."""
    if cells.get(cell).pascanu_gamma is None:
        return _invisible(ax, f"no Pascanu bound for the {cell}: its carry gate can reach 1")
    bounds = defaultdict(list)
    for r in rows:
        if r["cell"] == cell and r.get("pascanu_bound") is not None:
            bounds[r["scale"]].append(r["pascanu_bound"])
    safe = [s for s in scales if bounds.get(s) and max(bounds[s]) < 1.0]
    label = (rf"Pascanu bound: $\sigma_{{max}}(W_{{hh}})\,\gamma<1$ in every network ($\gamma$ = "
             rf"{cells.get(cell).pascanu_gamma:g}), vanishing guaranteed")
    if not safe:
        return _invisible(ax, label.replace("in every network", "at no scale here"))
    e = edges(scales, log=False)
    index = {s: i for i, s in enumerate(scales)}
    for s in safe:
        ax.axhspan(e[index[s]], e[index[s] + 1], fill=False, hatch="//", edgecolor="0.3", lw=0)
    return ax.fill_between([], [], [], facecolor="none", hatch="//", edgecolor="0.3", label=label)


def _unsettled(ax, cell, lengths, scales, per_sequence, thr):
    """Dot the (T, S) cells whose pooled 95% interval of log10_ratio reaches across ±threshold."""
    xs, ys = [], []
    for T in lengths:
        data = per_sequence.get(int(T))
        if data is None:
            continue
        for s in scales:
            values = data["log10_ratio_seq"][data["scale"] == s]
            if values.size:
                lo, hi = pooled_interval(cell, int(T), float(s), values)
                if lo < -thr < hi or lo < thr < hi:
                    xs.append(T)
                    ys.append(s)
    label = rf"95% interval of the ratio holds $\pm{thr:g}$ (regime not settled)"
    return ax.scatter(xs, ys, s=9, c="k", marker=".", label=label)


def profiles(config, profiles_at_T, ths, scales=None) -> Figure:
    """log10‖∂L/∂h_t‖ against t at the longest T for chosen scales, with the mean field's slope."""
    T = max(config.lengths)
    fig = Figure(figsize=(6.4 * len(config.cell), 4.6))
    axes = fig.subplots(1, len(config.cell), squeeze=False)[0]
    t = np.arange(T + 1)
    for ax, cell in zip(axes, config.cell):
        data, th = profiles_at_T[cell], ths[cell]
        chosen = chosen_scales(np.unique(data["scale"]), scales, th.critical_scale if th.applies else None)
        colours = [colormaps["viridis"](0.9 * i / max(len(chosen) - 1, 1)) for i in range(len(chosen))]
        chis = th.chi(chosen) if th.applies else [None] * len(chosen)
        for colour, s, chi in zip(colours, chosen, chis):
            pick = data["scale"] == s
            means = data["log10_grad_norm_mean"][pick].astype(np.float64)
            stds = data["log10_grad_norm_std"][pick].astype(np.float64)
            mean = means.mean(axis=0)
            spread = np.sqrt((stds**2).mean(axis=0) + means.var(axis=0))  # pooled over seeds
            ax.plot(t, mean, color=colour, lw=1.4, label=f"S = {s:g}")
            ax.fill_between(t, mean - spread, mean + spread, color=colour, alpha=0.2, lw=0)
            if chi is not None:
                ax.plot(t, mean[T] + (T - t) * 0.5 * math.log10(chi), color=colour, ls="--", lw=0.9)
        if th.applies:
            ax.plot([], [], color="0.3", ls="--", lw=0.9,
                    label=r"annealed mean field slope $\frac{1}{2}\log_{10}\chi$")
        ax.set_xlabel("time step t")
        ax.set_ylabel(r"$\log_{10}\,\|\partial L/\partial h_t\|$")
        ax.set_xlim(0, T)
        ax.set_title(f"{cell}, T = {T}: mean ± std over sequences and seeds", fontsize=9)
        ax.legend(fontsize=8, loc="best")
    return fig


def _by_scale(rows, cell, T, column):
    by = defaultdict(list)
    for r in rows:
        if r["cell"] == cell and r["T"] == T and r.get(column) is not None:
            by[r["scale"]].append(r[column])
    return by


def _series(ax, x, y, lo, hi, marker, colour, label):
    y, lo, hi = (np.asarray(v, dtype=float) for v in (y, lo, hi))
    ax.errorbar(x, y, yerr=np.vstack([y - lo, hi - y]), fmt=marker, color=colour, ms=4, capsize=2, lw=1,
                label=label)


def rates(rows, config, profiles_at_T, ths) -> Figure:
    """Per cell, against S at the longest T: the measured typical rate, the mean rate and λ_max
    (side by side, 95% bootstrap intervals over networks × sequences where the folder holds the
    per-sequence values, else ± std over seeds), the annealed mean field ½ ln χ, and the rate
    of the carry path alone."""
    T = max(config.lengths)
    fig = Figure(figsize=(5.6 * len(config.cell), 4.8))
    axes = fig.subplots(1, len(config.cell), squeeze=False)[0]
    for ax, cell in zip(axes, config.cell):
        data, th = profiles_at_T[cell], ths[cell]
        by_scale = _by_scale(rows, cell, T, "rate")
        s = np.array(sorted(by_scale))
        step = float(np.min(np.diff(s))) if len(s) > 1 else max(0.1 * abs(s[0]), 0.05)
        typical = np.array([np.mean(by_scale[x]) for x in s])
        if "rate_seq" in data:
            bars = np.array([pooled_interval(cell, T, x, data["rate_seq"][data["scale"] == x]) for x in s])
            what = "95% bootstrap over networks × sequences"
        else:
            std = np.array([np.std(by_scale[x]) for x in s])
            bars = np.stack([typical - std, typical + std], axis=1)
            what = "± std over seeds"
        _series(ax, s - 0.2 * step, typical, bars[:, 0], bars[:, 1], "o", "tab:blue",
                r"measured typical rate of $\ln\|\partial L/\partial h_t\|$")
        if "log_grad_norm_grid" in data:
            steps = rate_grid(T)
            grids = data["log_grad_norm_grid"]
            mean = np.array([pooled_mean_rate(cell, T, x, grids[data["scale"] == x], steps) for x in s])
            _series(ax, s, mean[:, 0], mean[:, 1], mean[:, 2], "s", "tab:purple",
                    r"measured mean rate, $\frac{1}{2}\ln$ mean $\|\partial L/\partial h_t\|^2$")
        if "lyap_max_seq" in data:
            lyap = _by_scale(rows, cell, T, "lyap_max")
            ls = np.array(sorted(lyap))
            lam = np.array([np.mean(lyap[x]) for x in ls])
            lam_bars = np.array([pooled_interval(cell, T, x, data["lyap_max_seq"][data["scale"] == x])
                                 for x in ls])
            _series(ax, ls + 0.2 * step, lam, lam_bars[:, 0], lam_bars[:, 1], "^", "tab:green",
                    r"measured $\lambda_{max}$ of the forward dynamics")
        if th.applies:
            ax.plot(th.fine, 0.5 * np.log(th.chi_fine), "k-", lw=1.2,
                    label=rf"{cell} annealed mean field $\frac{{1}}{{2}}\ln\chi$ (fresh weights every step)")
        for label, value in carry_paths(config, cell):
            ax.axhline(value, color="tab:orange", ls=":", lw=1.2, label=label)
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlabel(r"init scale $S$ of $W_{hh}$")
        ax.set_ylabel(r"per-step rate $\ln(\|\partial L/\partial h_{t-1}\|/\|\partial L/\partial h_t\|)$"
                      " (1/step)")
        ax.set_title(f"{cell}: per-step gradient rate, fit over the middle half of T = {T}\n"
                     f"{subtitle(config, cell, 80)}\nerror bars: {what}", fontsize=8)
        ax.legend(fontsize=7, loc="best")
    return fig


def spectrum(rows, config, profiles_at_T, ths, scales=None) -> Figure:
    """Lyapunov exponents λ_i against i / (state dimension) at the longest T, for chosen scales."""
    T = max(config.lengths)
    fig = Figure(figsize=(5.6 * len(config.cell), 4.4))
    axes = fig.subplots(1, len(config.cell), squeeze=False)[0]
    for ax, cell in zip(axes, config.cell):
        data, th = profiles_at_T[cell], ths[cell]
        n = len(cells.get(cell).state) * config.hidden
        k = data["lyap_spectrum"].shape[1]
        chosen = chosen_scales(np.unique(data["scale"]), scales, th.critical_scale if th.applies else None)
        colours = [colormaps["viridis"](0.9 * i / max(len(chosen) - 1, 1)) for i in range(len(chosen))]
        index = np.arange(1, k + 1) / n
        for colour, s in zip(colours, chosen):
            spectra = data["lyap_spectrum"][data["scale"] == s]
            ax.plot(index, spectra.mean(axis=0), marker="o", ms=3, lw=1.2, color=colour,
                    label=f"S = {s:g} (mean over {len(spectra)} network(s))")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlabel(f"exponent index i / state dimension ({n})")
        ax.set_ylabel(r"Lyapunov exponent $\lambda_i$ (nats/step)")
        ax.set_title(f"{cell}, T = {T}: top {k} of {n} Lyapunov exponents\n{subtitle(config, cell, 80)}",
                     fontsize=8)
        ax.legend(fontsize=7, loc="best")
    return fig
