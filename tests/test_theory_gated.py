"""Mean-field theory of the gated cells against networks that draw fresh weights every step.

The annealed mean field (rnnsim.theory_gated) assumes that W_hh is independent of
everything at every step; a simulation that draws fresh weights at every step meets
that assumption exactly, so the theory's per-step rate ½ ln χ must match it. The
simulation runs each registered gated cell through its own NumPy steps
(rnnsim.cells), so it checks the algebra of the theory against the cell's math.
"""
import math

import numpy as np
import pytest

from rnnsim import cells, theory_gated

MEAN_FIELD = {"lstm": theory_gated.lstm_mean_field, "gru": theory_gated.gru_mean_field}


def _fresh_params(spec, H, D, S, U, gate_bias, rng):
    G = spec.G
    bias = np.zeros((1, G * H))
    for _, gate in spec.gate_bias:
        bias[0, spec.gate_rows(gate, H)] = gate_bias
    return {"weight_hh_l0": rng.standard_normal((1, G * H, H)) * (S / math.sqrt(H)),
            "weight_ih_l0": rng.standard_normal((1, G * H, D)) * (U / math.sqrt(D)),
            "bias_ih_l0": bias, "bias_hh_l0": np.zeros((1, G * H))}


def fresh_weight_rate(cell, S, U, gate_bias, *, H=512, D=64, B=16, warm=40, measure=40, skip=10, seed=0):
    """Per-step rate ½ ln E‖δ_{t-1}‖²/‖δ_t‖² going back, with fresh weights at every step.

    Each sequence's adjoint (all state components jointly) is renormalised at every
    step; the step's rate is ½ ln of the mean over sequences of its squared-norm
    ratio (the mean field speaks of E‖δ‖², not of E ln‖δ‖²), averaged over the
    steps after ``skip`` (the transient that aligns the lstm's (c, h) pair).
    """
    spec = cells.get(cell)

    def step_rng(t):
        return np.random.default_rng([seed, t])

    state = {name: np.zeros((1, B, H)) for name in spec.state}
    caches = []
    for t in range(warm + measure):
        rng = step_rng(t)
        p = _fresh_params(spec, H, D, S, U, gate_bias, rng)
        state, cache = spec.forward_step(p, rng.standard_normal((1, B, D)), state)
        if t >= warm:
            caches.append(cache)
    adjoint = {name: np.zeros((1, B, H)) for name in spec.state}
    adjoint["h"] = np.random.default_rng([seed, 1 << 30]).standard_normal((1, B, H))
    rates = []
    for t in range(warm + measure - 1, warm - 1, -1):
        sq_old = sum(np.sum(v ** 2, axis=-1) for v in adjoint.values())   # (1, B)
        adjoint = {name: v / np.sqrt(sq_old)[..., None] for name, v in adjoint.items()}
        p = _fresh_params(spec, H, D, S, U, gate_bias, step_rng(t))  # the same draw as the forward
        _, adjoint, _ = spec.backward_step(p, caches[t - warm], adjoint)
        rates.append(0.5 * math.log(np.mean(sum(np.sum(v ** 2, axis=-1) for v in adjoint.values()))))
    return float(np.mean(rates[skip:]))


GATED = [name for name in cells.names() if name in MEAN_FIELD]


def test_every_gated_cell_has_a_mean_field():
    assert [n for n in cells.names() if cells.get(n).G > 1] == GATED


@pytest.mark.slow
@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("scale, gate_bias", [(0.5, 0.0), (1.5, 1.0), (3.0, 2.0), (3.0, 0.0)])
def test_annealed_theory_matches_fresh_weight_networks(cell, scale, gate_bias):
    """Within 0.01 per step of ln‖dL/dh‖ (H = 512, 16 sequences, 30 measured steps)."""
    theory = MEAN_FIELD[cell](scale, 1.0, 0.0, gate_bias)
    simulated = fresh_weight_rate(cell, scale, 1.0, gate_bias)
    assert simulated == pytest.approx(theory["rate"], abs=0.01)


@pytest.mark.parametrize("cell", GATED)
def test_small_scale_limit_is_the_carry_path(cell):
    """As S -> 0 only the carry path is left: χ -> E[f²] (lstm) or E[z²] (gru)."""
    out = MEAN_FIELD[cell](1e-4, 1.0, 0.0, 1.5)
    carry = out["cell_path"] if cell == "lstm" else out["direct_path"]
    assert out["chi"] == pytest.approx(carry, rel=1e-6)
    # with no fluctuations in the gate (U = B = 0, S -> 0) E[σ²] is σ(b)² exactly
    out = MEAN_FIELD[cell](1e-6, 0.0, 0.0, 1.5)
    assert out["chi"] == pytest.approx((1 / (1 + math.exp(-1.5))) ** 2, rel=1e-6)


@pytest.mark.parametrize("cell", GATED)
def test_rate_grows_with_scale_and_gate_bias(cell):
    rates = [MEAN_FIELD[cell](s, 1.0, 0.0, 1.0)["rate"] for s in (0.5, 1.0, 2.0, 3.0)]
    assert np.all(np.diff(rates) > 0)
    by_bias = [MEAN_FIELD[cell](1.0, 1.0, 0.0, b)["rate"] for b in (-1.0, 0.0, 1.0, 3.0)]
    assert np.all(np.diff(by_bias) > 0)
    out = MEAN_FIELD[cell](1.0, 1.0, 0.0, 1.0)
    assert out["timescale"] == pytest.approx(-1 / math.log(out["chi"]))
    assert 0 < out["q_h"] < 1


def test_lstm_map_is_non_negative_and_chi_is_its_perron_root():
    out = theory_gated.lstm_mean_field(1.5, 1.0, 0.2, 1.0)
    m = out["map"]
    assert m.shape == (2, 2) and np.all(m >= 0)
    assert out["chi"] == pytest.approx(max(abs(np.linalg.eigvals(m))), rel=1e-14)


@pytest.mark.parametrize("cell", GATED)
def test_critical_scale_where_chi_crosses_one(cell):
    s_c = theory_gated.gated_critical_scale(cell, 1.0, 0.0, 0.0)
    assert s_c is not None and 1.0 < s_c < 10.0
    assert MEAN_FIELD[cell](s_c, 1.0, 0.0, 0.0)["chi"] == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("kw, exc", [(dict(scale=0.0), ValueError), (dict(scale=float("nan")), ValueError),
                                     (dict(input_scale=-1.0), ValueError), (dict(scale="big"), ValueError),
                                     (dict(scale=[1.0]), TypeError),
                                     (dict(scale=1e308 * 10), ValueError), (dict(scale=1e200), ValueError),
                                     (dict(bias_scale=True), TypeError)])
def test_bad_input_is_named(cell, kw, exc):
    args = dict(scale=1.0, input_scale=1.0, bias_scale=0.0)
    args.update(kw)
    with pytest.raises(exc, match=next(iter(kw))):
        MEAN_FIELD[cell](**args)


# ------------------------------------------------------------------ expectations at large variance

@pytest.mark.parametrize("var", [20.5, 100.0, 1e4, 1e8])
@pytest.mark.parametrize("mean", [0.0, 2.0, -5.0])
def test_expectations_at_large_variance_against_adaptive_quadrature(var, mean):
    """Above variance 20 the Gauss-Hermite rule fails (7e-5 for sech⁴ at 100, 100% at 1e4);
    the step-plus-remainder rule holds 1e-11 relative."""
    from scipy.integrate import quad

    from rnnsim.theory import _sech4
    from rnnsim.theory_gated import _dsigmoid_sq, _expect, _sigmoid
    sd = math.sqrt(var)
    for func in (lambda a: _sigmoid(a) ** 2, lambda a: np.tanh(a) ** 2, _sech4, _dsigmoid_sq,
                 lambda a: (1 - _sigmoid(a)) ** 2):
        def integrand(a, func=func):
            density = math.exp(-0.5 * (a - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)
            return float(func(np.array(a))) * density
        pieces = [(mean - 12 * sd, -40.0), (-40.0, 0.0), (0.0, 40.0), (40.0, mean + 12 * sd)]
        exact = sum(quad(integrand, lo, hi, limit=500, epsabs=0, epsrel=1e-13)[0]
                    for lo, hi in pieces if hi > lo)
        assert _expect(func, mean, var) == pytest.approx(exact, rel=1e-11, abs=1e-300)


@pytest.mark.parametrize("cell", GATED)
def test_values_below_variance_20_are_unchanged_by_the_wide_rule(cell):
    """The default sweep's scales (S <= 3) keep every pre-activation variance below 20: χ is the
    plain Gauss-Hermite value (checked against the quadrature of the nested integrals above)."""
    out = MEAN_FIELD[cell](3.0, 1.0, 0.0, 1.0)
    assert out["variance"] < 20


def test_an_lstm_without_a_stationary_cell_variance_has_no_fixed_point():
    with pytest.raises(theory_gated.NoFixedPoint, match="no fixed point"):
        theory_gated.lstm_mean_field(1.0, 1.0, 0.0, 800.0)
    mf = theory_gated.mean_field_of("lstm", [1.0, 2.0], 1.0, 0.0, {"forget_bias": 800.0})
    assert np.all(np.isnan(mf["chi"])) and np.all(np.isnan(mf["q_c"]))
    assert theory_gated.critical_scale_of("lstm", 1.0, 0.0, {"forget_bias": 800.0}) is None
    # large but finite: a huge Q_c, still a number
    out = theory_gated.lstm_mean_field(1.0, 1.0, 0.0, 30.0)
    assert out["q_c"] > 1e10 and 0 < out["chi"] <= 1 + 1e-6


@pytest.mark.parametrize("cell", GATED)
def test_the_uniform_interface(cell):
    from rnnsim import theory
    module = theory.for_cell(cell)
    assert module is theory_gated
    keyword = dict((c, kw) for c in GATED for kw, _ in cells.get(c).gate_bias)[cell]
    mf = module.mean_field_of(cell, [0.7, 1.9], 1.0, 0.1, {keyword: 0.5})
    for i, s in enumerate((0.7, 1.9)):
        direct = MEAN_FIELD[cell](s, 1.0, 0.1, 0.5)
        for key in ("chi", "rate", "timescale") + module.MOMENTS[cell]:
            assert mf[key][i] == direct[key]
    s_c = module.critical_scale_of(cell, 1.0, 0.0, {keyword: 0.0})
    assert s_c == theory_gated.gated_critical_scale(cell, 1.0, 0.0, 0.0)
    other = "update_bias" if keyword == "forget_bias" else "forget_bias"
    with pytest.raises(ValueError, match=f"has no {other}"):
        module.mean_field_of(cell, 1.0, 1.0, 0.0, {other: 1.0})
    assert getattr(theory, f"{cell}_mean_field") is MEAN_FIELD[cell]  # re-exported


def test_the_rnn_speaks_the_same_interface():
    from rnnsim import theory
    mf = theory.mean_field_of("rnn", np.array([0.5, 2.0]), 1.0, 0.0)
    assert np.array_equal(mf["chi"], theory.chi(np.array([0.5, 2.0]), 1.0, 0.0))
    assert np.array_equal(mf["q_star"], theory.fixed_point(np.array([0.5, 2.0]), 1.0, 0.0))
    assert theory.critical_scale_of("rnn", 1.0, 0.0) == theory.critical_scale(1.0, 0.0)
    with pytest.raises(ValueError, match="no forget_bias"):
        theory.mean_field_of("rnn", 1.0, 1.0, 0.0, {"forget_bias": 1.0})
