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
                                     (dict(input_scale=-1.0), ValueError), (dict(scale="big"), TypeError),
                                     (dict(scale=1e308 * 10), ValueError), (dict(scale=1e200), ValueError),
                                     (dict(bias_scale=True), TypeError)])
def test_bad_input_is_named(cell, kw, exc):
    args = dict(scale=1.0, input_scale=1.0, bias_scale=0.0)
    args.update(kw)
    with pytest.raises(exc, match=next(iter(kw))):
        MEAN_FIELD[cell](**args)
