r"""Mean-field theory of gradient propagation in random tanh RNNs and LSTM cells.

Public functions
----------------
fixed_point(scale, input_scale, bias_scale)        q*, the stationary pre-activation variance
chi(scale, input_scale, bias_scale)                per-step multiplier of E‖∂L/∂h_t‖²
timescale(chi)                                     ξ = −1/ln χ
critical_scale(input_scale, bias_scale)            the scale where χ = 1
forget_timescale(forget_bias)                      lstm cell timescale −1/ln σ(b_f)
mean_field(scale, input_scale, bias_scale)         all of the above in one dict
for_cell(cell)                                     the theory module the cell registry names, or None
mean_field_of, critical_scale_of                   the rnn's theory in the form every theory module offers
lstm_mean_field, gru_mean_field, gated_critical_scale
                                                   the gated cells' theory (:mod:`rnnsim.theory_gated`)

Every function of ``scale`` is vectorised: pass an array of scales, get arrays back.

**One interface for every cell.** A cell names its theory module in the registry
(:attr:`rnnsim.cells.Cell.theory`); :func:`for_cell` imports it. Each such module
offers ``mean_field_of(cell, scales, input_scale, bias_scale, gate_bias)`` (a dict of
arrays over the scales: ``chi``, ``rate`` = ½ ln χ, ``timescale`` and the fixed-point
moments named in its ``MOMENTS[cell]``) and ``critical_scale_of(cell, input_scale,
bias_scale, gate_bias)`` (the scale where χ = 1, or None). ``gate_bias`` maps the
cell's init keyword (``forget_bias``, ``update_bias``) to its value.

Notes
-----
**Model.** The Elman cell of :func:`rnnsim.gradients`,

.. math:: a_t = W_{hh} h_{t-1} + W_{ih} x_t + b, \qquad h_t = \tanh(a_t), \qquad h_0 = 0,

with the initialisation of :func:`rnnsim.init_params` (scheme ``"gaussian"``):
:math:`W_{hh,ij} \sim N(0, S^2/H)`, :math:`W_{ih,ik} \sim N(0, U^2/D)`, total bias
:math:`b_i \sim N(0, B^2)` (``bias_hh`` is zero), and inputs :math:`x_{t,k} \sim N(0, 1)`
as drawn by :mod:`rnnsim.sweep`. Here S, U, B are ``scale``, ``input_scale`` and
``bias_scale``.

**Forward pass (the q-map).** For large H each pre-activation :math:`a_{t,i}` is a sum of
many independent terms, hence Gaussian over the draws, with variance

.. math:: q_t = \frac{S^2}{H}\sum_j h_{t-1,j}^2 + \frac{U^2}{D}\sum_k x_{t,k}^2 + B^2
          \;\to\; S^2\, \mathbb{E}_z\!\left[\tanh^2(\sqrt{q_{t-1}}\, z)\right] + U^2 + B^2,

:math:`z \sim N(0, 1)`, starting from :math:`q_1 = U^2 + B^2` because :math:`h_0 = 0`.
The map :math:`q \mapsto S^2 \mathbb{E}[\tanh^2(\sqrt{q} z)] + U^2 + B^2` is increasing and
concave, and it maps :math:`[c, c + S^2]` (:math:`c = U^2 + B^2`) into itself, so for
c > 0 the iteration from :math:`q_1 = c` converges monotonically to the map's unique
fixed point :math:`q^*` in that interval. We compute that limit as the root of
:math:`F(q) = S^2\mathbb{E}[\tanh^2(\sqrt{q} z)] + c - q` by bisection on
:math:`[c, c + S^2]` (F(c) ≥ 0 > F(c + S²)), to machine precision: the plain iteration
would give the same number but converges only algebraically near the c = 0 critical
point. For c = 0 the forward pass never leaves h = 0, so :math:`q^* = 0`.

**Backward pass.** BPTT maps :math:`g_t = \partial L/\partial h_t` to
:math:`g_{t-1} = W_{hh}^\top (\tanh'(a_t) \odot g_t)`. Treating :math:`W_{hh}` as
independent of :math:`g_t` and :math:`a_t` (the gradient-independence assumption that
mean-field theory makes; Chen, Pennington & Schoenholz 2018),
:math:`\mathbb{E}\|W^\top v\|^2 = H \cdot (S^2/H) \|v\|^2`, so

.. math:: \mathbb{E}\|g_{t-1}\|^2 = \chi\, \|g_t\|^2, \qquad
          \chi = S^2\, \mathbb{E}_z\!\left[\tanh'(\sqrt{q^*} z)^2\right]
               = S^2\, \mathbb{E}_z\!\left[\operatorname{sech}^4(\sqrt{q^*} z)\right].

Hence over T steps :math:`\|g_0\|/\|g_T\| \approx \chi^{T/2}`: the per-step rate of
:math:`\ln\|g_t\|` (going back in time) is :math:`\tfrac12 \ln\chi`, and
:math:`\log_{10}\|g_0\| - \log_{10}\|g_T\| \approx T \cdot \tfrac12 \log_{10}\chi`, the
``mf_log10_ratio`` of the sweep (same sign: negative = vanishing). The critical scale
:math:`S_c(U, B)` solves :math:`\chi(S_c) = 1`; for U = 1, B = 0 it is about 1.856, and for
U = B = 0 it is exactly 1 (:math:`\chi = S^2` at q* = 0).

**Timescale.** :math:`\xi = -1/\ln\chi`, so that :math:`\mathbb{E}\|g_{t-k}\|^2 =
e^{-k/\xi}\,\|g_t\|^2`. Sign convention: ξ > 0 is a decay time (vanishing), ξ < 0 means
growth by a factor e every :math:`|\xi|` steps (exploding), and ξ = +inf at χ = 1. The
norm ‖g‖ itself changes by e every :math:`2|\xi|` steps.

**LSTM.** Along the cell path :math:`\partial c_t/\partial c_{t-1} = \mathrm{diag}(f_t)`
with :math:`f_t = \sigma(\cdot + b_f)`; ignoring the fluctuations of the forget-gate
pre-activation, :math:`\|\partial L/\partial c\|` decays by :math:`\sigma(b_f)` per step,
a timescale :math:`-1/\ln\sigma(b_f)` steps.

**Expectations** over :math:`z \sim N(0, 1)` use Gauss–Hermite quadrature with the
probabilists' weight :math:`e^{-z^2/2}` for q ≤ ``LARGE_Q`` (= 20): the
``QUADRATURE_ORDER``-point rule of ``scipy.special.roots_hermitenorm``, keeping only its
nodes with non-negligible weight (318, all within |z| < 9.2), stored in
:mod:`rnnsim._hermite` so that the theory loads without SciPy. Against adaptive
quadrature its relative error is below 1e-12 for q ≤ 20 (S ≲ 4.3 at U = 1). Beyond
that the integrand :math:`\operatorname{sech}^4(\sqrt{q} z)` is too narrow in z for the
rule (relative error 2e-7 at q = 50, 7e-5 at q = 100, and 100% by q = 10⁴), so for
q > ``LARGE_Q`` we integrate in :math:`u = \sqrt{q} z` instead:
:math:`\mathbb{E}[f(\sqrt{q} z)] = \int f(u)\, \varphi(u/\sqrt{q})/\sqrt{q}\, du` by the
trapezoidal rule with step 1/8 on |u| ≤ 24, for :math:`f = \operatorname{sech}^4` and
:math:`f = \operatorname{sech}^2` (and :math:`\tanh^2 = 1 - \operatorname{sech}^2`). The
integrands are analytic in a strip of half-width π/2 and decay like :math:`e^{-2|u|}`,
so the rule's error is below 1e-14 relative at every q > 20 (checked against adaptive
quadrature up to q = 10¹²).
"""
from __future__ import annotations

import importlib
import math

import numpy as np

from . import _hermite
from ._parse import MAX_SCALE, finite_float

QUADRATURE_ORDER = _hermite.ORDER
LARGE_Q = 20.0  # above it, expectations are computed in u = sqrt(q) z (see the module Notes)
_BISECTION_STEPS = 200  # stops early once the bracket stops shrinking (machine precision)

_half_nodes = np.array([float.fromhex(x) for x in _hermite.POSITIVE_NODES])
_half_weights = np.array([float.fromhex(x) for x in _hermite.POSITIVE_WEIGHTS])
_nodes = np.concatenate([-_half_nodes[::-1], _half_nodes])          # E_z[f] = f(nodes) @ weights
_weights = np.concatenate([_half_weights[::-1], _half_weights])

_U_STEP = 0.125
_u = np.arange(0, 192 + 1) * _U_STEP  # 0 <= u <= 24; the integrands are even in u
_u_weights = np.where(_u == 0, 1.0, 2.0) * _U_STEP


def gaussian_expectation(func, q):
    """E_z[func(√q z)] for z ~ N(0, 1) by the Gauss-Hermite rule, vectorised over q ≥ 0.

    Accurate to 1e-12 for the smooth bounded functions of this module while q ≤ 20
    (see the module Notes); :func:`fixed_point` and :func:`chi` switch rules above it.
    """
    q = np.asarray(q, dtype=np.float64)
    x = np.sqrt(q)[..., None] * _nodes
    return func(x) @ _weights


def _wide_expectation(func, q):
    """E_z[func(√q z)] = ∫ func(u) φ(u/√q)/√q du by the trapezoidal rule, for q > LARGE_Q only.

    ``func`` must be even and decay at least like e^{-2|u|} (sech², sech⁴).
    """
    q = np.asarray(q, dtype=np.float64)[..., None]
    density = np.exp(-0.5 * _u**2 / q) / np.sqrt(2.0 * math.pi * q)
    return (func(_u) * density) @ _u_weights


def _expectation(gh_func, wide_func, q, *, complement=False):
    """Gauss-Hermite for q ≤ LARGE_Q, the u-rule above; ``complement``: 1 − the u-rule's value.

    The Gauss-Hermite values are computed for the whole array, as they always
    were, so that results at q ≤ LARGE_Q do not depend on the other entries.
    """
    q = np.asarray(q, dtype=np.float64)
    out = gaussian_expectation(gh_func, q)
    wide = q > LARGE_Q
    if np.any(wide):
        value = _wide_expectation(wide_func, q[wide])
        out = np.array(out, dtype=np.float64)  # writable, also for 0-d
        out[wide] = 1.0 - value if complement else value
    return out


def _tanh_sq(x):
    return np.tanh(x) ** 2


def _sech2(x):
    return np.cosh(np.minimum(np.abs(x), 350.0)) ** -2.0  # cosh overflows past ~710; sech² is 0 there


def _sech4(x):
    return np.cosh(np.minimum(np.abs(x), 350.0)) ** -4.0


def _mean_tanh_sq(q):
    return _expectation(_tanh_sq, _sech2, q, complement=True)


def _mean_sech4(q):
    return _expectation(_sech4, _sech4, q)


def _scalar(name, value, *, minimum=None, maximum=None):
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return finite_float(name, value, minimum=minimum, maximum=maximum)


def _float_array(name, value):
    """``value`` as a float64 array; TypeError for None, bools and anything that is not numbers."""
    if value is None or isinstance(value, (bool, np.bool_)) or (
            isinstance(value, np.ndarray) and value.dtype == np.bool_):
        raise TypeError(f"{name} must be a number or an array of numbers, got {value!r}")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or an array of numbers, got {value!r}") from None


def _check_scale(scale):
    arr = _float_array("scale", scale)
    if arr.size == 0:
        raise ValueError("scale must hold at least one value")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0) or np.any(arr > MAX_SCALE):
        raise ValueError(f"scale must be finite, > 0 and <= {MAX_SCALE:g}, got {scale!r}")
    return arr


def _offset(input_scale, bias_scale) -> float:
    """c = U² + B², the pre-activation variance that input and bias contribute."""
    U = _scalar("input_scale", input_scale, minimum=0.0, maximum=MAX_SCALE)
    B = _scalar("bias_scale", bias_scale, minimum=0.0, maximum=MAX_SCALE)
    return U**2 + B**2


def fixed_point(scale, input_scale=1.0, bias_scale=0.0):
    r"""Stationary pre-activation variance q* of the tanh RNN.

    Parameters
    ----------
    scale : float or array
        Recurrent scale S (0 < S ≤ 1e6).
    input_scale, bias_scale : float
        U and B (0 ≤ U, B ≤ 1e6).

    Returns
    -------
    float or array like ``scale``

    Notes
    -----
    :math:`q^* = S^2\,\mathbb{E}[\tanh^2(\sqrt{q^*} z)] + U^2 + B^2`, the limit of the
    forward q-map from :math:`q_1 = U^2 + B^2`; see the module Notes.
    """
    S = _check_scale(scale)
    c = _offset(input_scale, bias_scale)
    if c == 0.0:
        return np.zeros_like(S)[()] if S.ndim else 0.0
    lo = np.full_like(S, c)
    hi = c + S**2
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        positive = S**2 * _mean_tanh_sq(mid) + c - mid > 0
        lo = np.where(positive, mid, lo)
        hi = np.where(positive, hi, mid)
        if np.all(hi - lo <= 4 * np.finfo(np.float64).eps * hi):
            break
    q = 0.5 * (lo + hi)
    return q[()] if q.ndim else float(q)


def chi(scale, input_scale=1.0, bias_scale=0.0):
    r"""Per-step multiplier χ of E‖∂L/∂h_t‖² going back one step.

    Notes
    -----
    :math:`\chi = S^2\, \mathbb{E}_z[\operatorname{sech}^4(\sqrt{q^*} z)]`; χ < 1 vanishing,
    χ > 1 exploding. See the module Notes for the derivation.
    """
    S = _check_scale(scale)
    q = np.asarray(fixed_point(S, input_scale, bias_scale))
    out = S**2 * _mean_sech4(q)
    return out[()] if out.ndim else float(out)


def timescale(chi_value):
    r"""ξ = −1/ln χ in steps: > 0 decay time, < 0 growth time, +inf at χ = 1.

    Notes
    -----
    :math:`\mathbb{E}\|g_{t-k}\|^2 = e^{-k/\xi}\|g_t\|^2`.
    """
    chis = np.asarray(chi_value, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_chi = np.log(chis)
        out = np.where(log_chi == 0.0, np.inf, -1.0 / np.where(log_chi == 0.0, 1.0, log_chi))
    return out[()] if out.ndim else float(out)


def regime(chi_value) -> str:
    """'vanishing' (χ < 1), 'critical' (χ = 1), 'exploding' (χ > 1), or '' when χ is not a number."""
    value = float(chi_value)
    if value < 1.0:
        return "vanishing"
    if value > 1.0:
        return "exploding"
    return "critical" if value == 1.0 else ""


def _find_root(func, lo, hi, *, xtol, rtol, max_steps=200):
    """A root of ``func`` in [lo, hi], where func(lo) and func(hi) differ in sign.

    Brent's method (R. P. Brent, *Algorithms for Minimization without Derivatives*,
    1973, ch. 4): inverse quadratic or secant steps while they shrink the bracket
    fast enough, bisection otherwise. Stops when the bracket is narrower than
    xtol + rtol·|x|.
    """
    last, best = float(lo), float(hi)  # the previous estimate and the best one
    f_last, f_best = func(last), func(best)
    if f_last == 0.0:
        return last
    if f_best == 0.0:
        return best
    if (f_last > 0) == (f_best > 0):
        raise ValueError(f"no sign change of the function on [{last:g}, {best:g}]")
    far, f_far = last, f_last  # the other end of the bracket around the root
    step = step_before = best - last
    for _ in range(max_steps):
        if (f_best > 0) == (f_far > 0):  # keep the root between best and far
            far, f_far = last, f_last
            step = step_before = best - last
        if abs(f_far) < abs(f_best):  # best must be the point with the smallest |f|
            last, best, far = best, far, best
            f_last, f_best, f_far = f_best, f_far, f_best
        tol = 0.5 * (xtol + rtol * abs(best))
        half = 0.5 * (far - best)
        if abs(half) <= tol or f_best == 0.0:
            return best
        if abs(step_before) >= tol and abs(f_last) > abs(f_best):
            s = f_best / f_last
            if last == far:  # secant
                p, q = 2.0 * half * s, 1.0 - s
            else:  # inverse quadratic interpolation through last, best, far
                q_last, r = f_last / f_far, f_best / f_far
                p = s * (2.0 * half * q_last * (q_last - r) - (best - last) * (r - 1.0))
                q = (q_last - 1.0) * (r - 1.0) * (s - 1.0)
            if p > 0:
                q = -q
            else:
                p = -p
            if 2.0 * p < min(3.0 * half * q - abs(tol * q), abs(step_before * q)):
                step_before, step = step, p / q
            else:
                step_before = step = half
        else:
            step_before = step = half
        last, f_last = best, f_best
        best += step if abs(step) > tol else (tol if half > 0 else -tol)
        f_best = func(best)
    raise RuntimeError(f"root finding did not converge in {max_steps} steps")


def critical_scale(input_scale=1.0, bias_scale=0.0):
    r"""The recurrent scale :math:`S_c` at which χ = 1, for given U and B.

    Found by Brent's method on :math:`\ln\chi(S)`, which increases with S; the bracket
    starts at [0.5, 2] and is widened until it changes sign.
    """
    U = _scalar("input_scale", input_scale, minimum=0.0, maximum=MAX_SCALE)
    B = _scalar("bias_scale", bias_scale, minimum=0.0, maximum=MAX_SCALE)

    def log_chi(s):
        return math.log(chi(s, U, B))

    lo, hi = 0.5, 2.0
    while log_chi(lo) > 0:  # never for tanh (χ ≤ S²), kept for safety
        lo /= 2
    while log_chi(hi) < 0:
        if hi * 2 > MAX_SCALE:
            raise ValueError(f"no critical scale below {MAX_SCALE:g} for input_scale={U:g}, bias_scale={B:g}")
        hi *= 2
    return _find_root(log_chi, lo, hi, xtol=1e-13, rtol=4 * np.finfo(float).eps)


def forget_timescale(forget_bias):
    r"""LSTM cell-path timescale :math:`-1/\ln\sigma(b_f)` in steps (> 0; +inf where σ(b_f) rounds to 1).

    Notes
    -----
    :math:`\partial c_t/\partial c_{t-1} = \mathrm{diag}(f_t)`, :math:`f_t \approx \sigma(b_f)`.
    """
    bf = _float_array("forget_bias", forget_bias)
    if not np.all(np.isfinite(bf)) or np.any(np.abs(bf) > MAX_SCALE):
        raise ValueError(f"forget_bias must be finite with |forget_bias| <= {MAX_SCALE:g}, "
                         f"got {forget_bias!r}")
    log_sigma = -np.logaddexp(0.0, -bf)  # ln σ(b), stable for large |b|
    with np.errstate(divide="ignore"):
        out = -1.0 / log_sigma
    return out[()] if out.ndim else float(out)


def mean_field(scale, input_scale=1.0, bias_scale=0.0):
    """All mean-field values for an array of scales.

    Returns
    -------
    dict of arrays over ``scale``: ``scale``, ``q_star``, ``chi``, ``rate``
    (½ ln χ, the per-step rate of ln‖∂L/∂h_t‖ going back in time), ``log10_rate``
    (½ log10 χ) and ``timescale`` (ξ); plus the float ``critical_scale``.
    """
    S = np.atleast_1d(_check_scale(scale))
    q = np.atleast_1d(fixed_point(S, input_scale, bias_scale))
    chis = np.atleast_1d(chi(S, input_scale, bias_scale))
    return {
        "scale": S,
        "q_star": q,
        "chi": chis,
        "rate": 0.5 * np.log(chis),
        "log10_rate": 0.5 * np.log10(chis),
        "timescale": np.atleast_1d(timescale(chis)),
        "critical_scale": critical_scale(input_scale, bias_scale),
    }


# ----------------------------------------------------------------------------- the uniform interface

MOMENTS = {"rnn": ("q_star",)}
"""The fixed-point moments the rnn's theory reports (q*, the pre-activation variance)."""


def for_cell(cell):
    """The theory module that the cell registry names for ``cell``, or None when it has none.

    The sweep, the figures and ``rnnsim theory`` learn from here, and only here, which
    cells have a mean-field theory (:attr:`rnnsim.cells.Cell.theory`).
    """
    from . import cells

    name = cells.get(cell).theory
    return importlib.import_module(name) if name else None


def _no_gate_bias(cell, gate_bias):
    if cell != "rnn":
        raise ValueError(f"rnnsim.theory covers the rnn only, not {cell!r}; use rnnsim.theory.for_cell")
    if gate_bias:
        raise ValueError(f"the rnn has no {', '.join(sorted(gate_bias))}")


def mean_field_of(cell, scale, input_scale=1.0, bias_scale=0.0, gate_bias=None) -> dict:
    """The rnn's theory over an array of scales: ``scale``, ``chi``, ``rate``, ``timescale``
    and ``q_star`` (see the module notes: the interface every theory module offers)."""
    _no_gate_bias(cell, gate_bias)
    S = np.atleast_1d(_check_scale(scale))
    chis = np.atleast_1d(chi(S, input_scale, bias_scale))
    return {"scale": S, "chi": chis, "rate": 0.5 * np.log(chis), "timescale": np.atleast_1d(timescale(chis)),
            "q_star": np.atleast_1d(fixed_point(S, input_scale, bias_scale))}


def critical_scale_of(cell, input_scale=1.0, bias_scale=0.0, gate_bias=None):
    """The rnn's critical scale (:func:`critical_scale`); it always exists."""
    _no_gate_bias(cell, gate_bias)
    return critical_scale(input_scale, bias_scale)


_GATED = ("lstm_mean_field", "gru_mean_field", "gated_critical_scale")


def __getattr__(name):
    if name in _GATED:  # loaded on first use: rnnsim.theory_gated imports this module
        return getattr(importlib.import_module(".theory_gated", __package__), name)
    raise AttributeError(f"module 'rnnsim.theory' has no attribute {name!r}")
