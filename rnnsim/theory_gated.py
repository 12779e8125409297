r"""Mean-field theory of the gated cells (LSTM and GRU), by Gauss–Hermite quadrature.

Public functions (re-exported by :mod:`rnnsim.theory`)
------------------------------------------------------
lstm_mean_field(scale, input_scale, bias_scale, forget_bias)   fixed point, 2x2 map, χ, ξ
gru_mean_field(scale, input_scale, bias_scale, update_bias)    fixed point, χ, ξ
gated_critical_scale(cell, input_scale, bias_scale, gate_bias) the scale where χ = 1, or None
mean_field_of, critical_scale_of                               the same, in the form every theory
                                                               module offers (rnnsim.theory.for_cell)

Notes
-----
**Assumptions (annealed mean field).** With the initialisation of
:func:`rnnsim.init_params` (scheme ``"gaussian"``): every H x H block of W_hh has
entries N(0, S²/H), W_ih entries N(0, U²/D), the input-side biases N(0, B²) plus the
gate bias (b_f on the lstm's forget rows, b_z on the gru's update rows), b_hh = 0, and
inputs x ~ N(0, 1). Every pre-activation is then taken as Gaussian with mean the gate
bias and variance :math:`v = S^2 Q_h + U^2 + B^2`, :math:`Q_h = \mathbb{E}[h^2]`
(per unit), independent across gates, units and steps, and the backward pass treats
W_hh as independent of the adjoints (gradient independence). These assumptions hold
*exactly* for networks that draw fresh weights at every step, which is what the
tests check the algebra against; networks that keep one W_hh for all steps deviate
(see ``results/README.md`` for the measured gap). Below, σ' = σ(1-σ) and
:math:`\mathbb{E}_\mu[\cdot]` is over a ~ N(μ, v).

**LSTM forward.** With i, f, o, g independent and :math:`\mathbb{E}[g] = 0`,

.. math:: Q_c = \frac{\mathbb{E}_0[\sigma^2]\, \mathbb{E}_0[\tanh^2]}{1 - \mathbb{E}_{b_f}[\sigma^2]},
          \qquad Q_h = \mathbb{E}_0[\sigma^2]\, \mathbb{E}_z[\tanh^2(\sqrt{Q_c} z)],

treating c as N(0, Q_c); the fixed point :math:`Q_h \in [0, 1]` is found by bisection.

**LSTM backward.** For the per-unit second moments :math:`\Gamma_h` of dL/dh and
:math:`\Gamma_c` of the carried dL/dc (uncorrelated under W_hh's independence), with
:math:`\kappa = \mathbb{E}_0[\sigma^2]\,\mathbb{E}_z[\operatorname{sech}^4(\sqrt{Q_c} z)]`,
:math:`\Gamma_{dc} = \Gamma_c + \kappa\Gamma_h` (the total dL/dc) and

.. math:: P = \mathbb{E}_0[\tanh^2]\,\mathbb{E}_0[\sigma'^2] + Q_c\,\mathbb{E}_{b_f}[\sigma'^2]
              + \mathbb{E}_0[\sigma^2]\,\mathbb{E}_0[\operatorname{sech}^4]

(the i, f and g rows), one step back maps

.. math:: \Gamma_c \leftarrow \mathbb{E}_{b_f}[\sigma^2]\, \Gamma_{dc}, \qquad
          \Gamma_h \leftarrow S^2\left(P\, \Gamma_{dc} + \mathbb{E}_z[\tanh^2(\sqrt{Q_c}z)]\,
          \mathbb{E}_0[\sigma'^2]\, \Gamma_h\right),

a non-negative 2x2 matrix M on :math:`(\Gamma_c, \Gamma_h)`. χ is its spectral radius
(Perron root): both moments grow or decay by χ per step once aligned with its
eigenvector, so ln‖dL/dh‖ changes by ½ ln χ per step.

**GRU forward.** :math:`u = W_{hn} h` ~ N(0, S²Q_h), :math:`a_n = w + r u` with
w ~ N(0, U² + B²), so given r, :math:`a_n` ~ N(0, U² + B² + r² S² Q_h). With
:math:`\mathbb{E}[n h] = 0`,

.. math:: Q_h = \frac{\mathbb{E}_{b_z}[(1-\sigma)^2]\, \mathbb{E}[n^2]}{1 - \mathbb{E}_{b_z}[\sigma^2]},
          \qquad \mathbb{E}[n^2] = \mathbb{E}_r\,\mathbb{E}_z[\tanh^2(\sqrt{U^2 + B^2 + r^2 S^2 Q_h}\, z)].

**GRU backward.** From the step's vector-Jacobian product (:mod:`rnnsim.cells.gru`),

.. math:: \chi = \mathbb{E}_{b_z}[\sigma^2] + S^2\Big\{(Q_h + \mathbb{E}[n^2])\,\mathbb{E}_{b_z}[\sigma'^2]
          + \mathbb{E}_{b_z}[(1-\sigma)^2]\; \mathbb{E}\big[\operatorname{sech}^4(a_n)
          (r^2 + u^2 \sigma'(a_r)^2)\big]\Big\},

where the last expectation is over (a_r, u, w) jointly; given r, (u, a_n) are jointly
Gaussian, so :math:`\mathbb{E}[u^2 \operatorname{sech}^4 a_n \mid r]
= V\, \mathbb{E}[\operatorname{sech}^4 a_n] + \beta^2 \mathbb{E}[a_n^2 \operatorname{sech}^4 a_n]`
with :math:`\beta = r S^2 Q_h / q_r`,
:math:`V = S^2 Q_h - r^2 S^4 Q_h^2 / q_r`, :math:`q_r = U^2 + B^2 + r^2 S^2 Q_h`, leaving
nested one-dimensional quadratures.

**Timescale** :math:`\xi = -1/\ln\chi` as for the rnn (:func:`rnnsim.theory.timescale`).

**Expectations** over a ~ N(μ, v) use the Gauss-Hermite rule of :mod:`rnnsim.theory`
while v ≤ 20 (accurate to ~1e-13 here), and above it an exact step at a = 0 (the
integrand's limits at ±∞, weighted by erfc) plus the exponentially decaying rest by
Gauss-Legendre on [-40, 0] and [0, 40] (see :func:`_expect`; 1e-12 against adaptive
quadrature up to v = 1e12), so that large scales and large Q_c stay accurate.
"""
from __future__ import annotations

import math

import numpy as np

from ._parse import MAX_SCALE, finite_float
from .theory import LARGE_Q, _find_root, _sech4, gaussian_expectation, timescale

_BISECTION_STEPS = 200


def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _dsigmoid_sq(a):
    s = _sigmoid(a)
    return (s * (1.0 - s)) ** 2


_LEGENDRE_X, _LEGENDRE_W = np.polynomial.legendre.leggauss(400)
_TAIL = 40.0   # the integrands minus their limits are below e^-40 of their size beyond |a| = 40
_HALF = 0.5 * _TAIL * (_LEGENDRE_X + 1.0)   # Gauss-Legendre nodes on [0, 40]
_HALF_W = 0.5 * _TAIL * _LEGENDRE_W
_FAR = 60.0    # where every integrand of this module has reached its limit in float64


def _expect(func, mean, var):
    """E[func(a)] for a ~ N(mean, var) (var >= 0 scalar).

    Gauss-Hermite (:func:`rnnsim.theory.gaussian_expectation`) while var <= LARGE_Q
    (= 20), where it is accurate to ~1e-13 for every integrand here. Above, the
    integrands (sigmoid², tanh², sech⁴, σ'², and the gru's nested ones) change on a
    scale of 1 in a while the Gaussian is wider than 4.5, which the rule no longer
    resolves (7e-5 relative error for sech⁴ at var = 100, 100% at 1e4). There we
    write func = its limits at ±∞ times a step at 0, plus a remainder that decays
    like e^{-|a|}: the step's expectation is exact (erfc), the remainder's is a
    400-point Gauss-Legendre integral on each of [-40, 0] and [0, 40] against the
    Gaussian density (1e-12 relative against adaptive quadrature up to var = 1e12).
    """
    if var <= LARGE_Q:
        return float(gaussian_expectation(lambda x: func(mean + x), var))
    sd = math.sqrt(var)
    plus, minus = (float(np.asarray(func(np.array([side * _FAR])))[0]) for side in (1.0, -1.0))
    p_positive = 0.5 * math.erfc(-mean / (sd * math.sqrt(2.0)))

    def density(a):
        return np.exp(-0.5 * ((a - mean) / sd) ** 2) / (sd * math.sqrt(2.0 * math.pi))

    remainder = (_HALF_W @ ((np.asarray(func(_HALF)) - plus) * density(_HALF))
                 + _HALF_W @ ((np.asarray(func(-_HALF)) - minus) * density(-_HALF)))
    return plus * p_positive + minus * (1.0 - p_positive) + float(remainder)


def _centered(func, q):
    """E_z[func(√q z)] over an array of q >= 0: Gauss-Hermite, and :func:`_expect` where q > LARGE_Q."""
    q = np.asarray(q, dtype=np.float64)
    out = gaussian_expectation(func, q)
    wide = q > LARGE_Q
    if np.any(wide):
        out = np.array(out, dtype=np.float64)
        out[wide] = [_expect(func, 0.0, float(value)) for value in q[wide]]
    return out


class NoFixedPoint(ValueError):
    """The mean field has no stationary point at these settings (an lstm whose E[f²] rounds to 1)."""


def _check(name, value, *, positive=False, nonneg=False):
    """A number through :mod:`rnnsim._parse` (the parsers of every entry point), within
    ±MAX_SCALE: beyond it every gate saturates and the squares come near overflow."""
    lower = 0.0 if (positive or nonneg) else -MAX_SCALE
    return finite_float(name, value, minimum=lower, strict=positive, maximum=MAX_SCALE)


def _bisect_fixed_point(residual):
    """The root of residual(Q) on [0, 1], residual(0) >= 0 >= residual(1) (|h| <= 1 for gated cells)."""
    lo, hi = 0.0, 1.0
    if residual(lo) <= 0.0:
        return 0.0
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if residual(mid) > 0.0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 4 * np.finfo(np.float64).eps * max(hi, 1e-300):
            break
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------- lstm

def _lstm_forward_moments(S, c0, bf, q_h):
    v = S * S * q_h + c0
    e_sig2 = _expect(lambda a: _sigmoid(a) ** 2, 0.0, v)
    e_f2 = _expect(lambda a: _sigmoid(a) ** 2, bf, v)
    e_tanh2 = _expect(lambda a: np.tanh(a) ** 2, 0.0, v)
    if e_f2 >= 1.0:
        raise NoFixedPoint(f"forget_bias={bf:g}: E[f²] rounds to 1, so the cell state has no stationary "
                           "variance and the lstm's mean field no fixed point")
    q_c = e_sig2 * e_tanh2 / (1.0 - e_f2)
    return v, e_sig2, e_f2, e_tanh2, q_c


def lstm_mean_field(scale, input_scale=1.0, bias_scale=0.0, forget_bias=0.0):
    r"""Annealed mean-field theory of the LSTM at one recurrent scale.

    Returns
    -------
    dict with ``q_h``, ``q_c`` (fixed-point second moments of h and c), ``variance``
    (of the pre-activations), ``map`` (the 2x2 matrix M on (Γ_c, Γ_h)), ``chi`` (its
    spectral radius), ``rate`` (½ ln χ, per-step rate of ln‖dL/dh‖ going back),
    ``timescale`` (ξ = −1/ln χ) and ``cell_path`` (E[f²], the rate of the cell path
    alone, ½ ln of which compares with ln σ(b_f)). See the module Notes.

    Raises :class:`NoFixedPoint` (a ValueError) where E[f²] rounds to 1 (a forget bias
    above about 37): the cell state's variance then grows without bound.
    """
    S = _check("scale", scale, positive=True)
    U = _check("input_scale", input_scale, nonneg=True)
    B = _check("bias_scale", bias_scale, nonneg=True)
    bf = _check("forget_bias", forget_bias)
    c0 = U * U + B * B

    def residual(q_h):
        _, e_sig2, _, _, q_c = _lstm_forward_moments(S, c0, bf, q_h)
        return e_sig2 * _expect(lambda x: np.tanh(x) ** 2, 0.0, q_c) - q_h

    q_h = _bisect_fixed_point(residual)
    v, e_sig2, e_f2, e_tanh2, q_c = _lstm_forward_moments(S, c0, bf, q_h)
    e_tanh2_c = _expect(lambda x: np.tanh(x) ** 2, 0.0, q_c)
    kappa = e_sig2 * _expect(_sech4, 0.0, q_c)
    e_ds2 = _expect(_dsigmoid_sq, 0.0, v)
    p_rows = e_tanh2 * e_ds2 + q_c * _expect(_dsigmoid_sq, bf, v) + e_sig2 * _expect(_sech4, 0.0, v)
    m = np.array([[e_f2, e_f2 * kappa],
                  [S * S * p_rows, S * S * (p_rows * kappa + e_tanh2_c * e_ds2)]])
    chi = float(np.max(np.abs(np.linalg.eigvals(m))))
    return {"q_h": q_h, "q_c": q_c, "variance": v, "map": m, "chi": chi, "rate": 0.5 * math.log(chi),
            "timescale": float(timescale(chi)), "cell_path": e_f2}


# ----------------------------------------------------------------------------- gru

def _gru_moments(S, c0, bz, q_h):
    """E[z²], E[(1-z)²], E[σ'(a_z)²] and E[n²] at the second moment q_h."""
    v = S * S * q_h + c0
    var_u = S * S * q_h

    def n_sq(a_r):
        q_r = c0 + _sigmoid(a_r) ** 2 * var_u
        return _centered(lambda x: np.tanh(x) ** 2, q_r)

    return (v, _expect(lambda a: _sigmoid(a) ** 2, bz, v), _expect(lambda a: (1.0 - _sigmoid(a)) ** 2, bz, v),
            _expect(_dsigmoid_sq, bz, v), _expect(n_sq, 0.0, v))


def gru_mean_field(scale, input_scale=1.0, bias_scale=0.0, update_bias=0.0):
    r"""Annealed mean-field theory of the GRU at one recurrent scale.

    Returns
    -------
    dict with ``q_h`` (fixed-point E[h²]), ``variance`` (of the r and z
    pre-activations), ``chi``, ``rate`` (½ ln χ), ``timescale`` and ``direct_path``
    (E[z²], the multiplier of the direct path z ⊙ dL/dh alone). See the module Notes.
    """
    S = _check("scale", scale, positive=True)
    U = _check("input_scale", input_scale, nonneg=True)
    B = _check("bias_scale", bias_scale, nonneg=True)
    bz = _check("update_bias", update_bias)
    c0 = U * U + B * B

    def residual(q_h):
        _, e_z2, e_1mz2, _, e_n2 = _gru_moments(S, c0, bz, q_h)
        return e_1mz2 * e_n2 + e_z2 * q_h - q_h

    q_h = _bisect_fixed_point(residual)
    v, e_z2, e_1mz2, e_dz2, e_n2 = _gru_moments(S, c0, bz, q_h)
    var_u = S * S * q_h

    def joint(a_r):
        r = _sigmoid(a_r)
        q_r = c0 + r * r * var_u
        sech4 = _centered(_sech4, q_r)
        y2_sech4 = _centered(lambda y: y * y * _sech4(y), q_r)
        with np.errstate(invalid="ignore", divide="ignore"):
            beta = np.where(q_r > 0, r * var_u / np.where(q_r > 0, q_r, 1.0), 0.0)
        cond_var = var_u - beta * r * var_u
        return r * r * sech4 + (r * (1.0 - r)) ** 2 * (cond_var * sech4 + beta * beta * y2_sech4)

    chi = e_z2 + S * S * ((q_h + e_n2) * e_dz2 + e_1mz2 * _expect(joint, 0.0, v))
    return {"q_h": q_h, "variance": v, "chi": chi, "rate": 0.5 * math.log(chi),
            "timescale": float(timescale(chi)), "direct_path": e_z2}


_MEAN_FIELD = {"lstm": (lstm_mean_field, "forget_bias"), "gru": (gru_mean_field, "update_bias")}


def gated_critical_scale(cell, input_scale=1.0, bias_scale=0.0, gate_bias=0.0, *, lo=0.05, hi=50.0):
    """The recurrent scale where χ = 1 for ``cell`` ("lstm" or "gru"), or None when χ
    does not cross 1 for scales in [lo, hi] (a gated cell can stay below 1 throughout)."""
    func, keyword = _MEAN_FIELD[cell]

    def log_chi(s):
        return math.log(func(s, input_scale, bias_scale, **{keyword: gate_bias})["chi"])

    try:
        a, b = log_chi(lo), log_chi(hi)
    except NoFixedPoint:
        return None
    if not (a <= 0 <= b):
        return None
    return _find_root(log_chi, lo, hi, xtol=1e-10, rtol=1e-12)


# ----------------------------------------------------------------------------- the uniform interface

MOMENTS = {"lstm": ("q_h", "q_c"), "gru": ("q_h",)}
"""The fixed-point second moments each cell's theory reports (E[h²], and E[c²] for the lstm)."""


def _gate_bias(cell, gate_bias):
    func, keyword = _MEAN_FIELD[cell]
    extra = sorted(set(gate_bias or {}) - {keyword})
    if extra:
        raise ValueError(f"the {cell} has no {', '.join(extra)}; its gate bias is {keyword}")
    return func, keyword, (gate_bias or {}).get(keyword, 0.0)


def mean_field_of(cell, scale, input_scale=1.0, bias_scale=0.0, gate_bias=None) -> dict:
    """The theory of ``cell`` ("lstm" or "gru") over an array of scales, in the form that
    :func:`rnnsim.theory.for_cell` promises: ``scale``, ``chi``, ``rate`` (½ ln χ),
    ``timescale`` and the moments of :data:`MOMENTS`, arrays over ``scale``.

    ``gate_bias`` maps the cell's init keyword (``forget_bias`` or ``update_bias``,
    :attr:`rnnsim.cells.Cell.gate_bias`) to its value (default 0). Where the theory has
    no fixed point (:class:`NoFixedPoint`) every entry is NaN; bad input raises.
    """
    func, keyword, bias = _gate_bias(cell, gate_bias)
    scales = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    keys = ("chi", "rate", "timescale") + MOMENTS[cell]
    out = {"scale": scales, **{key: np.full(scales.shape, np.nan) for key in keys}}
    for i, s in enumerate(scales):
        try:
            point = func(float(s), input_scale, bias_scale, **{keyword: bias})
        except NoFixedPoint:
            continue  # NaN: no stationary point, so no χ (see lstm_mean_field)
        for key in keys:
            out[key][i] = point[key]
    return out


def critical_scale_of(cell, input_scale=1.0, bias_scale=0.0, gate_bias=None):
    """The scale where χ = 1 for ``cell``, or None (see :func:`gated_critical_scale`)."""
    _, _, bias = _gate_bias(cell, gate_bias)
    return gated_critical_scale(cell, input_scale, bias_scale, bias)
