"""The log-domain identities of rnnsim.logdomain against plain float64 arithmetic."""
import math

import numpy as np
import pytest

from rnnsim import config, logdomain


def test_log_add_equals_the_plain_sum_and_renormalises():
    rng = np.random.default_rng(0)
    scale = np.array([0.3, -2.0, -np.inf, 1.0])
    mant = {"h": rng.standard_normal((4, 5)), "c": rng.standard_normal((4, 5))}
    local = rng.standard_normal((4, 5))
    local[3] = 0.0
    new_scale, new = logdomain.log_add(scale, mant, local)
    with np.errstate(invalid="ignore"):
        plain_h = np.where(np.isfinite(scale)[:, None], np.exp(scale)[:, None] * mant["h"], 0.0) + local
        plain_c = np.where(np.isfinite(scale)[:, None], np.exp(scale)[:, None] * mant["c"], 0.0)
    np.testing.assert_allclose(np.exp(new_scale)[:, None] * new["h"], plain_h, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.exp(new_scale)[:, None] * new["c"], plain_c, rtol=1e-13, atol=1e-15)
    joint = np.sqrt(np.sum(new["h"] ** 2, axis=1) + np.sum(new["c"] ** 2, axis=1))
    np.testing.assert_allclose(joint, 1.0, rtol=1e-14)


def test_log_add_never_overflows():
    """exp(800) u + g: the float64 value would overflow; the log form does not."""
    scale = np.array([800.0, -800.0])
    u = np.array([[0.6, 0.8], [1.0, 0.0]])
    g = np.array([[1.0, 0.0], [0.0, 2.0]])
    new_scale, new = logdomain.log_add(scale, {"h": u}, g)
    assert new_scale[0] == pytest.approx(800.0, abs=1e-12)        # g is negligible next to e^800
    assert new_scale[1] == pytest.approx(math.log(2.0), abs=1e-12)  # e^-800 u is negligible next to g
    np.testing.assert_allclose(new["h"], [[0.6, 0.8], [0.0, 1.0]], atol=1e-15)


def test_zero_adjoint_stays_minus_inf():
    scale, new = logdomain.log_add(np.array([-np.inf]), {"h": np.zeros((1, 3))}, np.zeros((1, 3)))
    assert scale[0] == -np.inf and np.all(new["h"] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cutoff_is_the_configured_power_of_tiny(dtype, monkeypatch):
    assert logdomain.log_weight_cutoff(dtype) == pytest.approx(0.5 * math.log(np.finfo(dtype).tiny))
    monkeypatch.setattr(config, "LOG_WEIGHT_CUTOFF_POWER", 1.0)
    assert logdomain.log_weight_cutoff(dtype) == pytest.approx(math.log(np.finfo(dtype).tiny))


def test_relative_weights_equal_the_plain_exponentials():
    rng = np.random.default_rng(1)
    scales = rng.uniform(-5, 5, size=(2, 3, 4))
    scales[1, 0, 0] = -np.inf
    top, w = logdomain.relative_weights(scales, (1, 2), -700.0)
    np.testing.assert_array_equal(top, scales.reshape(2, -1).max(axis=1))
    plain = np.where(np.isfinite(scales), np.exp(scales), 0)
    np.testing.assert_allclose(w * np.exp(top)[:, None, None], plain, rtol=1e-14)


# several parts per group, then one part per group (the merge's shortcut: no sums)
@pytest.mark.parametrize("group, part_scale", [
    ([0, 0, 1, 1, 1], [1.0, -3.0, 2.0, -np.inf, 0.5]),
    ([0, 1, 2, 3, 4], [1.0, -3.0, 2.0, -np.inf, 0.5]),
], ids=["several", "one-each"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_merge_equals_the_plain_sums(group, part_scale, dtype):
    rng = np.random.default_rng(1)
    parts = {"a": rng.standard_normal((5, 3)).astype(dtype), "b": rng.standard_normal(5).astype(dtype)}
    part_scale = np.array(part_scale)
    n_groups = max(group) + 1
    merged, s_star = logdomain.merge_scaled(parts, part_scale, np.array(group), n_groups, -700.0)
    np.testing.assert_array_equal(s_star, [part_scale[np.array(group) == g].max() for g in range(n_groups)])
    for key, part in parts.items():
        plain = np.zeros((n_groups,) + part.shape[1:])
        for i, g in enumerate(group):
            if np.isfinite(part_scale[i]):
                plain[g] += part[i].astype(np.float64) * math.exp(part_scale[i])
        assert merged[key].dtype == np.float64
        scale = np.where(np.isfinite(s_star), np.exp(s_star), 0.0).reshape((-1,) + (1,) * (part.ndim - 1))
        np.testing.assert_allclose(merged[key] * scale, plain, rtol=1e-14)


def test_terms_below_the_cutoff_are_dropped():
    top, w = logdomain.relative_weights(np.array([[0.0, -50.0, -10.0]]), (1,), -20.0)
    np.testing.assert_array_equal(w, [[1.0, 0.0, math.exp(-10.0)]])


def test_finalize_gives_inf_never_nan_and_a_finite_log_norm():
    mant = {k: np.array([[0.5, -0.5, 0.0]]) for k in logdomain.RECURRENT_KEYS}
    readout = {"weight_out": np.ones((1, 2)), "bias_out": np.ones(1)}
    out = logdomain.finalize(mant, np.array([1000.0]), readout, np.float64)
    np.testing.assert_array_equal(out["bias_ih_l0"], [[np.inf, -np.inf, 0.0]])
    assert out["log_grad_norm_params"][0] == pytest.approx(1000.0 + 0.5 * math.log(4 * 0.5), abs=1e-12)


@pytest.mark.parametrize("group", [[0, 0, 1, 3, 3, 3], [2, 0, 1, 0, 2, 1], [0, 1, 2, 3], [1, 0, 2, 3]],
                         ids=["consecutive", "scattered", "one-each", "one-each-permuted"])
def test_group_sum_equals_the_plain_sum_per_group(group):
    values = np.random.default_rng(0).standard_normal((len(group), 2, 3)).astype(np.float32)
    expected = np.stack([values[np.asarray(group) == g].astype(np.float64).sum(axis=0) for g in range(4)])
    out = logdomain.group_sum(values, np.array(group), 4)
    assert out.dtype == np.float64 and not np.shares_memory(out, values)
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_finalize_equals_mantissa_times_exp_scale_at_every_scale(dtype):
    """Identity 3 at log-scales inside and beyond exp's float64 range (|S| >= 700 takes the
    ldexp path): within rounding of sign(M) exp(ln|M| + S), exact zeros stay 0, overflow
    gives +-inf, S = -inf gives 0 and S = NaN gives NaN (but 0 for exact zeros)."""
    rng = np.random.default_rng(3)
    scale = np.array([0.0, -3.0, 88.0, 650.0, 699.9, 700.1, 709.5, 745.0, -700.5, -744.0, -np.inf, np.nan])
    E = scale.size
    mantissas = {key: rng.standard_normal((E, 4, 3)) for key in logdomain.RECURRENT_KEYS}
    mantissas["weight_hh_l0"][:, 0, 0] = 0.0
    grads = {"weight_out": rng.standard_normal((E, 2, 3)), "bias_out": rng.standard_normal((E, 2))}
    out = logdomain.finalize({k: v.copy() for k, v in mantissas.items()}, scale, grads, dtype)
    for key, m in mantissas.items():
        with np.errstate(all="ignore"):
            want = (np.sign(m) * np.where(m == 0, 0.0, np.exp(np.log(np.abs(m)) + scale[:, None, None])))
            want = want.astype(dtype)
        got = out[key]
        assert got.dtype == dtype
        assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(got[-1][m[-1] != 0]).all()
        assert np.array_equal(np.isinf(got), np.isinf(want)) and np.array_equal(got == 0, want == 0)
        finite = np.isfinite(want) & (np.abs(want) >= np.finfo(dtype).tiny)
        rtol = 1e-12 if dtype == np.float64 else 1e-6  # exp(ln|M| + S) itself rounds at |S| ~ 700
        np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=0)
    assert (out["weight_hh_l0"][:-1, 0, 0] == 0).all()
