"""Mean-field theory: quadrature, fixed point, chi, timescales, critical scale."""
import math

import numpy as np
import pytest
from scipy.integrate import quad

from rnnsim import theory


def _adaptive(func, q):
    """E_z[func(√q z)] by adaptive quadrature in u = √q z."""
    def density(u):
        return func(u) * math.exp(-u * u / (2 * q)) / math.sqrt(2 * math.pi * q)
    if func is theory._sech4:  # narrow peak at 0, negligible beyond |u| = 60
        return quad(density, -60, 60, points=[0], limit=500, epsabs=0, epsrel=1e-13)[0]
    return quad(density, -np.inf, np.inf, limit=500, epsabs=0, epsrel=1e-13)[0]


@pytest.mark.parametrize("q", [1e-3, 0.3, 1.0, 4.0, 10.0, 20.0])
@pytest.mark.parametrize("func", [theory._tanh_sq, theory._sech4])
def test_quadrature_matches_adaptive_integration(func, q):
    assert theory.gaussian_expectation(func, q) == pytest.approx(_adaptive(func, q), rel=1e-11)


def test_quadrature_weights_are_a_probability_measure():
    assert theory.gaussian_expectation(lambda x: np.ones_like(x), 1.0) == pytest.approx(1.0, abs=1e-14)
    assert theory.gaussian_expectation(lambda x: x**2, 2.5) == pytest.approx(2.5, rel=1e-13)  # E[(√q z)²] = q


@pytest.mark.parametrize("S,U,B", [(0.5, 1.0, 0.0), (1.5, 1.0, 0.0), (3.0, 1.0, 0.3), (1.2, 0.0, 0.5)])
def test_fixed_point_is_the_limit_of_the_forward_q_map(S, U, B):
    c = U**2 + B**2
    q = c  # q_1: h_0 = 0
    for _ in range(5000):
        q = S**2 * theory.gaussian_expectation(theory._tanh_sq, q) + c
    q_star = theory.fixed_point(S, U, B)
    assert q_star == pytest.approx(q, rel=1e-12)
    assert S**2 * theory.gaussian_expectation(theory._tanh_sq, q_star) + c == pytest.approx(q_star, rel=1e-13)


def test_zero_input_and_bias_keep_h_at_zero():
    # q* = 0, so chi = S² exactly: the analytic case of the core tests.
    assert theory.fixed_point(0.7, 0.0, 0.0) == 0.0
    assert theory.chi([0.5, 0.9, 1.5], 0.0, 0.0) == pytest.approx([0.25, 0.81, 2.25], rel=1e-14)
    assert theory.critical_scale(0.0, 0.0) == pytest.approx(1.0, abs=1e-10)


def test_critical_scale_for_unit_input_scale():
    s_c = theory.critical_scale(1.0, 0.0)
    assert s_c == pytest.approx(1.856, abs=1e-3)
    assert theory.chi(s_c, 1.0, 0.0) == pytest.approx(1.0, abs=1e-12)
    # Bias adds variance, saturates tanh more, and so moves the critical scale up.
    assert theory.critical_scale(1.0, 0.5) > s_c + 0.01


def test_chi_is_vectorised_and_increasing_in_scale():
    scales = np.linspace(0.2, 5.0, 60)
    c = theory.chi(scales, 1.0, 0.2)
    assert c.shape == scales.shape
    assert np.all(np.diff(c) > 0)
    # Not bitwise: the array call reduces with a matrix-vector product, the scalar one
    # with a dot product, and their summation order depends on the CPU's vector width.
    assert c[7] == pytest.approx(theory.chi(scales[7], 1.0, 0.2), rel=1e-14, abs=0)
    assert np.all(c < scales**2)  # tanh'² < 1 whenever q* > 0


def test_timescale_sign_convention():
    assert theory.timescale(1.0) == math.inf
    assert theory.timescale(math.exp(-0.5)) == pytest.approx(2.0)   # decay: e-fold of E||g||² in 2 steps
    assert theory.timescale(math.exp(0.25)) == pytest.approx(-4.0)  # growth: negative
    assert np.array_equal(theory.timescale(np.array([1.0, 1.0])), [math.inf, math.inf])


def test_forget_timescale():
    assert theory.forget_timescale(0.0) == pytest.approx(1 / math.log(2))
    assert theory.forget_timescale(1.0) == pytest.approx(-1 / math.log(1 / (1 + math.exp(-1))))
    assert math.isfinite(theory.forget_timescale(40.0)) and theory.forget_timescale(40.0) > 1e16
    assert theory.forget_timescale(-800.0) == pytest.approx(1 / 800.0)


def test_mean_field_bundle_is_consistent():
    mf = theory.mean_field([1.0, 2.0], 1.0, 0.0)
    assert mf["rate"] == pytest.approx(0.5 * np.log(mf["chi"]))
    assert mf["log10_rate"] == pytest.approx(0.5 * np.log10(mf["chi"]))
    assert mf["timescale"] == pytest.approx(-1 / np.log(mf["chi"]))
    assert mf["critical_scale"] == pytest.approx(theory.critical_scale(1.0, 0.0))


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, []])
def test_bad_scale(bad):
    with pytest.raises(ValueError, match="scale"):
        theory.chi(bad)


def test_bad_input_and_bias_scale():
    with pytest.raises(ValueError, match="input_scale"):
        theory.fixed_point(1.0, -1.0)
    with pytest.raises(ValueError, match="bias_scale"):
        theory.critical_scale(1.0, math.nan)
    with pytest.raises(ValueError, match="forget_bias"):
        theory.forget_timescale(math.inf)
