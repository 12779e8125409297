r"""Mean-field theory of gradient propagation in random tanh RNNs and LSTM cells.

Public functions
----------------
fixed_point(scale, input_scale, bias_scale)        q*, the stationary pre-activation variance
chi(scale, input_scale, bias_scale)                per-step multiplier of E‖∂L/∂h_t‖²
timescale(chi)                                     ξ = −1/ln χ
critical_scale(input_scale, bias_scale)            the scale where χ = 1
forget_timescale(forget_bias)                      lstm cell timescale −1/ln σ(b_f)
mean_field(scale, input_scale, bias_scale)         all of the above in one dict

Every function of ``scale`` is vectorised: pass an array of scales, get arrays back.

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
probabilists' weight :math:`e^{-z^2/2}` (``scipy.special.roots_hermitenorm``, whose
weights sum to :math:`\sqrt{2\pi}`; we divide by that). For large q the integrand
:math:`\operatorname{sech}^4(\sqrt{q} z)` is narrow in z, so the rule needs densely
packed central nodes: we take the ``QUADRATURE_ORDER``-point rule and keep only its
nodes with non-negligible weight (about 320, all within |z| < 9). Against adaptive
quadrature the relative error is below 1e-12 for q ≤ 20 (S ≲ 4.3 at U = 1), 2e-7 at
q = 50 and 7e-5 at q = 100.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import roots_hermitenorm

QUADRATURE_ORDER = 3000
_BISECTION_STEPS = 200  # stops early once the bracket stops shrinking (machine precision)

_nodes, _weights = roots_hermitenorm(QUADRATURE_ORDER)
_keep = _weights > 1e-18 * _weights.max()  # the rest cannot change a sum of terms <= 1
_nodes, _weights = _nodes[_keep], _weights[_keep] / math.sqrt(2.0 * math.pi)  # E_z[f] = w @ f(nodes)
del _keep


def gaussian_expectation(func, q):
    """E_z[func(√q z)] for z ~ N(0, 1), vectorised over an array ``q`` (q ≥ 0)."""
    q = np.asarray(q, dtype=np.float64)
    x = np.sqrt(q)[..., None] * _nodes
    return func(x) @ _weights


def _tanh_sq(x):
    return np.tanh(x) ** 2


def _sech4(x):
    return np.cosh(np.minimum(np.abs(x), 350.0)) ** -4.0  # cosh overflows past ~710; sech⁴ is 0 there


def _check_nonneg(name, value):
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return arr


def _check_scale(scale):
    arr = np.asarray(scale, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("scale must hold at least one value")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"scale must be finite and > 0, got {scale!r}")
    return arr


def fixed_point(scale, input_scale=1.0, bias_scale=0.0):
    r"""Stationary pre-activation variance q* of the tanh RNN.

    Parameters
    ----------
    scale : float or array
        Recurrent scale S (> 0).
    input_scale, bias_scale : float
        U and B (≥ 0).

    Returns
    -------
    float or array like ``scale``

    Notes
    -----
    :math:`q^* = S^2\,\mathbb{E}[\tanh^2(\sqrt{q^*} z)] + U^2 + B^2`, the limit of the
    forward q-map from :math:`q_1 = U^2 + B^2`; see the module Notes.
    """
    S = _check_scale(scale)
    c = float(_check_nonneg("input_scale", input_scale)) ** 2 + float(_check_nonneg("bias_scale", bias_scale)) ** 2
    if c == 0.0:
        return np.zeros_like(S)[()] if S.ndim else 0.0
    lo = np.full_like(S, c)
    hi = c + S**2
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        positive = S**2 * gaussian_expectation(_tanh_sq, mid) + c - mid > 0
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
    out = S**2 * gaussian_expectation(_sech4, q)
    return out[()] if out.ndim else float(out)


def timescale(chi_value):
    r"""ξ = −1/ln χ in steps: > 0 decay time, < 0 growth time, +inf at χ = 1.

    Notes
    -----
    :math:`\mathbb{E}\|g_{t-k}\|^2 = e^{-k/\xi}\|g_t\|^2`.
    """
    c = np.asarray(chi_value, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_chi = np.log(c)
        out = np.where(log_chi == 0.0, np.inf, -1.0 / np.where(log_chi == 0.0, 1.0, log_chi))
    return out[()] if out.ndim else float(out)


def critical_scale(input_scale=1.0, bias_scale=0.0):
    r"""The recurrent scale :math:`S_c` at which χ = 1, for given U and B.

    Found by Brent's method on :math:`\ln\chi(S)`, which increases with S; the bracket
    starts at [0.5, 2] and is widened until it changes sign.
    """
    U = float(_check_nonneg("input_scale", input_scale))
    B = float(_check_nonneg("bias_scale", bias_scale))

    def log_chi(s):
        return math.log(chi(s, U, B))

    lo, hi = 0.5, 2.0
    while log_chi(lo) > 0:  # never for tanh (χ ≤ S²), kept for safety
        lo /= 2
    while log_chi(hi) < 0:
        hi *= 2
        if hi > 1e6:
            raise ValueError(f"no critical scale below 1e6 for input_scale={U}, bias_scale={B}")
    return brentq(log_chi, lo, hi, xtol=1e-13, rtol=4 * np.finfo(float).eps)


def forget_timescale(forget_bias):
    r"""LSTM cell-path timescale :math:`-1/\ln\sigma(b_f)` in steps (> 0 for every finite b_f).

    Notes
    -----
    :math:`\partial c_t/\partial c_{t-1} = \mathrm{diag}(f_t)`, :math:`f_t \approx \sigma(b_f)`.
    """
    bf = np.asarray(forget_bias, dtype=np.float64)
    if not np.all(np.isfinite(bf)):
        raise ValueError(f"forget_bias must be finite, got {forget_bias!r}")
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
    c = np.atleast_1d(chi(S, input_scale, bias_scale))
    return {
        "scale": S,
        "q_star": q,
        "chi": c,
        "rate": 0.5 * np.log(c),
        "log10_rate": 0.5 * np.log10(c),
        "timescale": np.atleast_1d(timescale(c)),
        "critical_scale": critical_scale(input_scale, bias_scale),
    }
