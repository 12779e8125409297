"""Per-step rates of the gradient profile, and the regime labels they imply."""
from __future__ import annotations

import numpy as np

REGIMES = ("vanishing", "stable", "exploding")


def rate_window(T: int):
    """The steps [lo, hi] over which :func:`fit_rate` fits, the middle half of 0..T.

    The first quarter is skipped because the forward pass starts at h_0 = 0 and needs
    some steps before the pre-activation variance reaches q*; the last quarter keeps
    the fit away from the readout end.
    """
    lo, hi = T // 4, T - T // 4
    return (0, T) if hi - lo < 2 else (lo, hi)


MEAN_RATE_STEPS = 65
"""At most this many evenly spaced steps of the fit window carry the mean rate (see :func:`rate_grid`)."""


def rate_grid(T: int) -> np.ndarray:
    """The steps of :func:`rate_window` on which the mean rate is fitted: all of them, or
    :data:`MEAN_RATE_STEPS` evenly spaced ones (ends included) when the window is longer.

    The mean rate needs every sequence's profile at these steps for its bootstrap (in
    the summary and, pooled over networks, in the figures), so they are kept few.
    """
    lo, hi = rate_window(T)
    if hi - lo + 1 <= MEAN_RATE_STEPS:
        return np.arange(lo, hi + 1)
    return np.unique(np.rint(np.linspace(lo, hi, MEAN_RATE_STEPS)).astype(np.int64))


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
    :math:`r = \tfrac12\ln\chi` for the mean growth.
    """
    lo, hi = rate_window(T)
    return slope_back(np.asarray(log_profile, dtype=np.float64)[..., lo:hi + 1], np.arange(lo, hi + 1))


def slope_back(y, steps):
    r"""Least-squares rate :math:`-\mathrm{d}y/\mathrm{d}t` of ``y`` (..., m) over ``steps`` (m,).

    Each row's rate depends on that row alone: it is an element-wise product summed
    along the row, not a matrix product, which BLAS blocks by the number of rows, so
    that a row's last bits would follow the other rows of its call, and a sweep cut
    into other calls (``--scheduler``, ``--workers``) would differ from the local one.
    """
    t = np.asarray(steps, dtype=np.float64)
    tc = t - t.mean()
    y = np.asarray(y, dtype=np.float64)
    return -(np.sum((y - y.mean(axis=-1, keepdims=True)) * tc, axis=-1) / np.sum(tc * tc))


def regime_of(log10_ratio, threshold):
    """'vanishing' below −threshold, 'exploding' above +threshold, 'stable' between, '' for NaN."""
    r = np.asarray(log10_ratio, dtype=np.float64)
    labels = np.where(r < -threshold, "vanishing", np.where(r > threshold, "exploding", "stable"))
    return np.where(np.isnan(r), "", labels)
