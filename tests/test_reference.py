"""The NumPy reference against central finite differences and analytic identities."""
import numpy as np
import pytest

from rnnsim import cells, reference
from rnnsim.cells import PARAM_KEYS
from rnnsim.losses import FUSED_LOSSES as LOSSES  # the other losses: test_losses.py

from helpers import make_problem


@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("loss", LOSSES)
def test_reference_matches_central_differences(cell, loss):
    params, x, y = make_problem(cell, E=2, B=3, T=4, D=3, H=3, K=4, loss=loss, seed=7)
    grads = reference.gradients(cell, params, x, y, loss=loss)
    eps = 1e-6
    for key in PARAM_KEYS:
        numeric = np.zeros_like(params[key])
        for idx in np.ndindex(params[key].shape):
            e = idx[0]
            shifted = {k: v.copy() for k, v in params.items()}
            shifted[key][idx] += eps
            up = reference.gradients(cell, shifted, x, y, loss=loss)["loss"][e]
            shifted[key][idx] -= 2 * eps
            down = reference.gradients(cell, shifted, x, y, loss=loss)["loss"][e]
            numeric[idx] = (up - down) / (2 * eps)
        # Central differences are accurate to ~eps^2 * f''' + roundoff/eps ~ 1e-9.
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-6, atol=1e-8, err_msg=key)


@pytest.mark.parametrize("cell", cells.names())
def test_network_gradients_are_independent(cell):
    """dL_e/dθ_e only: perturbing network 1 leaves network 0's loss and gradients alone."""
    params, x, y = make_problem(cell, E=2, B=2, T=3, D=2, H=3, K=3)
    before = reference.gradients(cell, params, x, y)
    params["weight_hh_l0"][1] *= 1.5
    after = reference.gradients(cell, params, x, y)
    for key in PARAM_KEYS + ("loss",):
        np.testing.assert_array_equal(before[key][0], after[key][0])
    assert not np.allclose(before["weight_hh_l0"][1], after["weight_hh_l0"][1])


def test_log_grad_norm_matches_unrolled_adjoints():
    """ln||dL/dh_t|| from the log-domain recursion equals a plain float64 recursion."""
    cell = "rnn"
    params, x, y = make_problem(cell, E=1, B=2, T=5, D=2, H=4, K=3, loss="every")
    out = reference.gradients(cell, params, x, y, loss="every")
    acts = reference.forward(cell, params, x)
    h = acts["h"][0]
    W = params["weight_hh_l0"][0]
    Wo, bo = params["weight_out"][0], params["bias_out"][0]
    T = x.shape[2]
    for b in range(2):
        adj = np.zeros(4)
        for t in range(T, -1, -1):
            if t >= 1:
                z = Wo @ h[b, t] + bo
                p = np.exp(z - z.max())
                p /= p.sum()
                p[y[0, b, t - 1]] -= 1
                adj = adj + Wo.T @ p / (2 * T)
            np.testing.assert_allclose(out["log_grad_norm"][0, b, t], np.log(np.linalg.norm(adj)), rtol=1e-12)
            if t >= 1:
                adj = W.T @ (adj * (1 - h[b, t] ** 2))
