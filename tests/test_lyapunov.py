"""Lyapunov spectra (rnnsim.lyapunov) against exact answers."""
import math

import numpy as np
import pytest
from scipy.optimize import brentq

import rnnsim
from rnnsim import cells, theory


def _silent_rnn(H, W, D=2, E=1):
    """An rnn with zero input weights and biases: h stays 0, so the Jacobian is exactly W."""
    params = rnnsim.init_params("rnn", H, D, 2, E, seed=0)
    params["weight_ih_l0"][:] = 0
    params["weight_hh_l0"][:] = W
    return params


@pytest.mark.parametrize("scale", [0.6, 1.3])
def test_linear_map_s_times_orthogonal_gives_ln_s(scale):
    H = 8
    q = np.linalg.qr(np.random.default_rng(2).standard_normal((H, H)))[0]
    params = _silent_rnn(H, scale * q)
    out = rnnsim.lyapunov("rnn", params, np.zeros((1, 3, 60, 2)), k=H, warmup=10)
    np.testing.assert_allclose(out["exponents"], math.log(scale), rtol=1e-12)
    assert out["exponents_per_sequence"].shape == (1, 3, H) and out["steps"] == 50


def test_diagonal_map_gives_its_sorted_log_moduli():
    d = np.array([0.5, -1.7, 0.9, 1.2, -0.3])
    params = _silent_rnn(5, np.diag(d))
    out = rnnsim.lyapunov("rnn", params, np.zeros((1, 2, 300, 2)), k=5, warmup=100)
    np.testing.assert_allclose(out["exponents"][0], np.sort(np.log(np.abs(d)))[::-1], atol=1e-3)
    top3 = rnnsim.lyapunov("rnn", params, np.zeros((1, 2, 300, 2)), k=3, warmup=100)["exponents"][0]
    np.testing.assert_allclose(top3, out["exponents"][0, :3], atol=1e-3)


def _trajectory_states(cell, params, x):
    spec = cells.get(cell)
    E, B, T, _ = x.shape
    H = params["weight_hh_l0"].shape[2]
    state = {n: np.zeros((E, B, H)) for n in spec.state}
    states, caches = [], []
    for t in range(T):
        state, cache = spec.forward_step(params, x[:, :, t], state)
        states.append(state)
        caches.append(cache)
    return states, caches


@pytest.mark.parametrize("cell", cells.names())
def test_brute_force_lambda_max_from_two_nearby_trajectories(cell):
    """A second trajectory, started 1e-7 away and pulled back to that distance every step,
    separates at the rate lambda_max (averaged, like the QR method, after the warm-up)."""
    spec = cells.get(cell)
    H, D, T, warmup = 16, 3, 400, 100
    params = rnnsim.init_params(cell, H, D, 2, 1, scale=2.5, seed=4)
    x = np.random.default_rng(5).standard_normal((1, 1, T, D))
    out = rnnsim.lyapunov(cell, params, x, k=1, warmup=warmup)
    states, _ = _trajectory_states(cell, params, x)
    eps = 1e-7
    rng = np.random.default_rng(6)
    delta = {n: rng.standard_normal((1, 1, H)) for n in spec.state}
    norm = math.sqrt(sum(np.sum(v ** 2) for v in delta.values()))
    other = {n: states[0][n] + eps * delta[n] / norm for n in spec.state}
    total = 0.0
    for t in range(1, T):
        other, _ = spec.forward_step(params, x[:, :, t], other)
        gap = {n: other[n] - states[t][n] for n in spec.state}
        dist = math.sqrt(sum(np.sum(v ** 2) for v in gap.values()))
        if t >= warmup:
            total += math.log(dist / eps)
        other = {n: states[t][n] + eps * gap[n] / dist for n in spec.state}
    # equal up to how far each has aligned with the top direction (the gru's spectrum is close-packed)
    assert total / (T - warmup) == pytest.approx(out["exponents"][0, 0], abs=1e-3)


@pytest.mark.parametrize("cell", cells.names())
def test_full_spectrum_sums_to_the_mean_log_determinant(cell):
    spec = cells.get(cell)
    H, D, T, warmup = 5, 2, 60, 10
    params = rnnsim.init_params(cell, H, D, 2, 1, scale=1.7, seed=8, bias_scale=0.3)
    x = np.random.default_rng(9).standard_normal((1, 1, T, D))
    n = len(spec.state) * H
    out = rnnsim.lyapunov(cell, params, x, k=n, warmup=warmup)
    _, caches = _trajectory_states(cell, params, x)
    eye = np.eye(n)[None, None]                                   # (1, 1, n, n): n tangent vectors
    logdets = []
    for t in range(warmup, T):
        split = {name: eye[..., i * H:(i + 1) * H] for i, name in enumerate(spec.state)}
        image = spec.tangent_step(params, caches[t], split)
        jac_t = np.concatenate([image[name] for name in spec.state], axis=-1)[0, 0]  # rows: J e_j
        logdets.append(np.linalg.slogdet(jac_t)[1])
    assert out["exponents"][0].sum() == pytest.approx(np.mean(logdets), rel=1e-10)
    assert np.all(np.diff(out["exponents"][0]) <= 1e-9)  # decreasing


def test_lstm_spectrum_includes_the_cell_path():
    """W_hh = 0, zero inputs and biases except b_f: c stays 0 and the gates are constant,
    so J = [[0, o f], [0, f]] per unit: H exponents ln σ(b_f), and H directions that die."""
    H, bf = 4, 1.5
    params = rnnsim.init_params("lstm", H, 2, 2, 1, seed=0)
    for key in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0"):
        params[key][:] = 0
    params["bias_ih_l0"][:, H:2 * H] = bf
    out = rnnsim.lyapunov("lstm", params, np.zeros((1, 2, 40, 2)), k=2 * H, warmup=5)
    f = 1 / (1 + math.exp(-bf))
    np.testing.assert_allclose(out["exponents"][0, :H], math.log(f), rtol=1e-12)
    assert np.all(out["exponents"][0, H:] < -30)


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2.0, 4.0])
def test_autonomous_rnn_lambda_max_is_half_log_chi(scale):
    """Molgedey, Schuchhardt & Schuster 1992: for h <- tanh(W h), W ~ N(0, S²/N), λ_max -> ½ ln χ,
    with χ = S² E[tanh'(√q* z)²] at the nonzero fixed point q* of the variance map."""
    H, T, kick, warmup = 1024, 2000, 5, 300

    def residual(q):
        return scale ** 2 * theory.gaussian_expectation(lambda v: np.tanh(v) ** 2, q) - q

    q_star = brentq(residual, 1e-3, scale ** 2)
    chi = scale ** 2 * theory.gaussian_expectation(lambda v: np.cosh(v) ** -4.0, q_star)
    params = rnnsim.init_params("rnn", H, 4, 2, 1, scheme="gaussian", scale=scale, seed=11)
    x = np.zeros((1, 1, T, 4))
    x[:, :, :kick] = np.random.default_rng(12).standard_normal((1, 1, kick, 4))  # kick h off 0
    out = rnnsim.lyapunov("rnn", params, x, k=1, warmup=warmup)
    assert out["exponents"][0, 0] == pytest.approx(0.5 * math.log(chi), abs=0.01)


@pytest.mark.parametrize("kw, exc, words", [
    (dict(k=0), ValueError, "k must lie in"), (dict(k=9), ValueError, r"k must lie in \[1, 8\]"),
    (dict(k=1.5), TypeError, "k must be an integer"), (dict(qr_every=0), ValueError, "qr_every"),
    (dict(warmup=30), ValueError, "warmup"), (dict(warmup=-1), ValueError, "warmup"),
    (dict(device="cuda"), ValueError, "CPU only"), (dict(device="tpu"), ValueError, "device"),
])
def test_bad_options(kw, exc, words):
    params = rnnsim.init_params("lstm", 4, 2, 2, 1)
    with pytest.raises(exc, match=words):
        rnnsim.lyapunov("lstm", params, np.zeros((1, 1, 30, 2)), **{"warmup": 5, **kw})


@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("k, qr_every, warmup", [(1, 1, 0), (3, 1, 7), (4, 3, 5)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpu_kernels_match_the_reference(cell, k, qr_every, warmup, dtype):
    """Below the critical scale (no chaos to amplify rounding), to 1e-10."""
    from rnnsim._validate import check_problem
    from rnnsim.reference import lyapunov_raw

    params = rnnsim.init_params(cell, 4, 3, 2, 2, scale=0.9, bias_scale=0.3, seed=1, dtype=dtype)
    x = np.random.default_rng(2).standard_normal((2, 3, 25, 3)).astype(dtype)
    got = rnnsim.lyapunov(cell, params, x, k=k, qr_every=qr_every, warmup=warmup)
    problem, p, xs, _ = check_problem(cell, params, x, None, need_targets=False)
    want = lyapunov_raw(problem, p, xs, k, qr_every, warmup)
    assert got["steps"] == want["steps"]
    np.testing.assert_allclose(got["exponents_per_sequence"], want["exponents_per_sequence"], rtol=1e-10)
    np.testing.assert_allclose(got["log_growth"], want["log_growth"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["exponents"], want["exponents_per_sequence"].mean(axis=1), rtol=1e-10)
