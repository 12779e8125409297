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


def test_stored_rule_is_scipys():
    """rnnsim._hermite holds roots_hermitenorm(3000)'s significant nodes, normalised, to SciPy's
    own accuracy: n·eps (6.7e-13) of the largest node and of each weight. Not to the last bit:
    SciPy refines the 3000 nodes by Newton steps on a 3000-term recurrence, whose rounding
    changes with the CPU kind (the stored rule is an Intel Xeon's; on an AMD EPYC Zen 3 nodes
    came back up to 4.9e-14 apart and weights 2.1e-13 relative)."""
    from scipy.special import roots_hermitenorm
    nodes, weights = roots_hermitenorm(theory.QUADRATURE_ORDER)
    keep = weights > 1e-18 * weights.max()
    accuracy = theory.QUADRATURE_ORDER * np.finfo(np.float64).eps
    np.testing.assert_allclose(theory._nodes, nodes[keep], rtol=0, atol=accuracy * np.abs(nodes[keep]).max())
    np.testing.assert_allclose(theory._weights, weights[keep] / math.sqrt(2 * math.pi), rtol=accuracy, atol=0)


@pytest.mark.parametrize("q", [20.0001, 50.0, 100.0, 1e3, 1e4, 1e6, 1e9, 1e12])
def test_large_q_expectations_match_adaptive_integration(q):
    """Above LARGE_Q the u-space rule keeps 1e-13, where Gauss-Hermite alone loses everything by q = 1e4."""
    assert theory._mean_sech4(q) == pytest.approx(_adaptive(theory._sech4, q), rel=1e-13)
    assert theory._mean_tanh_sq(q) == pytest.approx(1 - _adaptive(theory._sech2, q), rel=1e-13)


def test_switching_rules_leaves_small_q_untouched():
    q = np.array([0.5, 7.0, 19.99, 25.0, 1e4])
    small = q <= theory.LARGE_Q
    for mean, func in ((theory._mean_sech4, theory._sech4), (theory._mean_tanh_sq, theory._tanh_sq)):
        assert np.array_equal(mean(q)[small], theory.gaussian_expectation(func, q)[small])


def test_chi_at_large_scale_explodes_like_the_asymptote():
    """For large S, q* ≈ S² and χ ≈ S² · (4/3) / √(2π q*) ≈ 0.532 S: exploding, never 'vanishing'."""
    for S in (10.0, 100.0, 1e3, 1e6):
        c = theory.chi(S)
        assert theory.regime(c) == "exploding"
        assert c == pytest.approx(4 / 3 / math.sqrt(2 * math.pi) * S, rel=2 / S)


def test_critical_scale_matches_scipy_brentq():
    from scipy.optimize import brentq
    for U, B in ((1.0, 0.0), (1.0, 0.5), (0.3, 2.0), (5.0, 0.0)):
        hi = 2.0
        while math.log(theory.chi(hi, U, B)) < 0:
            hi *= 2
        expected = brentq(lambda s: math.log(theory.chi(s, U, B)), 0.5, hi, xtol=1e-13,
                          rtol=4 * np.finfo(float).eps)
        assert theory.critical_scale(U, B) == pytest.approx(expected, abs=2e-13)


def test_regime_never_labels_nan():
    assert [theory.regime(c) for c in (0.5, 1.0, 2.0, math.nan)] == ["vanishing", "critical", "exploding", ""]


@pytest.mark.parametrize("call, match", [
    (lambda: theory.chi(1e308), "scale must be finite, > 0 and <= 1e\\+06"),
    (lambda: theory.chi(1.0, 1e200), "input_scale must be <= 1e\\+06"),
    (lambda: theory.fixed_point(1.0, 1.0, 1e7), "bias_scale must be <= 1e\\+06"),
    (lambda: theory.critical_scale(1e200), "input_scale must be <= 1e\\+06"),
    (lambda: theory.forget_timescale(1e308), "forget_bias must be finite with \\|forget_bias\\| <= 1e\\+06"),
])
def test_out_of_range_values_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call", [lambda: theory.chi("x"), lambda: theory.chi(True),
                                  lambda: theory.chi(1.0, [1.0]), lambda: theory.forget_timescale(None),
                                  lambda: theory.critical_scale(True)])
def test_wrong_types_are_type_errors(call):
    with pytest.raises(TypeError):
        call()


def test_theory_loads_without_scipy():
    import subprocess
    import sys
    code = ("import sys, rnnsim.theory as t; t.critical_scale(); t.mean_field([1.0, 2.0]); "
            "t.for_cell('lstm').critical_scale_of('lstm', 1.0, 0.0, {'forget_bias': 1.0}); "
            "t.gru_mean_field(30.0); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'matplotlib', 'numba')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
