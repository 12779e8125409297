"""The losses of rnnsim.losses beyond the fused cross-entropy: masked steps and MSE, their
injection into every backend's backward, gradient clipping, and bad input.

torch autograd checks every loss in test_torch.py, the GPU's injected path
test_gpu_sim.py; here: the CPU kernels against the NumPy reference, the reference
against central differences and hand-written NumPy losses, and clipping.
"""
import math

import numpy as np
import pytest

import rnnsim
from rnnsim import cells, losses, reference
from rnnsim.cells import PARAM_KEYS
from rnnsim.losses import target_shape

from helpers import RTOL, assert_close, assert_outputs_close, make_mask, make_problem

NEW_LOSSES = [loss for loss in losses.LOSSES if loss not in losses.FUSED_LOSSES]
SHAPES = [(2, 3, 5, 2, 4, 3), (1, 1, 1, 1, 1, 2), (3, 2, 6, 3, 1, 4)]  # E, B, T, D, H, K


def test_loss_families_partition_the_losses():
    assert set(losses.CLASS_LOSSES) | set(losses.FLOAT_LOSSES) == set(losses.LOSSES)
    assert not set(losses.CLASS_LOSSES) & set(losses.FLOAT_LOSSES)
    assert set(losses.FUSED_LOSSES) <= set(losses.CLASS_LOSSES)
    assert losses.target_shape("mse-every", 2, 3, 4, 5) == (2, 3, 4, 5)
    assert losses.target_shape("masked", 2, 3, 4, 5) == (2, 3, 4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("loss", NEW_LOSSES)
@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "E{}B{}T{}D{}H{}K{}".format(*s))
def test_cpu_matches_reference(shape, cell, loss, dtype):
    params, x, y = make_problem(cell, *shape, loss=loss, dtype=dtype, seed=sum(shape))
    mask = make_mask(loss, *shape[:3], seed=sum(shape))
    got = rnnsim.gradients(cell, params, x, y, loss=loss, mask=mask, device="cpu")
    ref = reference.gradients(cell, params, x, y, loss=loss, mask=mask)
    for key in PARAM_KEYS + ("loss",):
        assert got[key].dtype == dtype, key
    assert_outputs_close(got, ref, dtype)


@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("loss", NEW_LOSSES)
def test_reference_matches_central_differences(cell, loss):
    E, B, T = 2, 3, 4
    params, x, y = make_problem(cell, E, B, T, 2, 3, 3, loss=loss, seed=5)
    mask = make_mask(loss, E, B, T, seed=5)
    grads = reference.gradients(cell, params, x, y, loss=loss, mask=mask)
    eps = 1e-6
    for key in PARAM_KEYS:
        numeric = np.zeros_like(params[key])
        for idx in np.ndindex(params[key].shape):
            values = []
            for step in (eps, -eps):
                shifted = dict(params, **{key: params[key].copy()})
                shifted[key][idx] += step
                values.append(reference.gradients(cell, shifted, x, y, loss=loss, mask=mask)["loss"][idx[0]])
            numeric[idx] = (values[0] - values[1]) / (2 * eps)
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-6, atol=1e-8, err_msg=key)


def _numpy_losses(loss, params, h, y, mask):
    """Loss per network written out loop by loop (h: (E, B, T+1, H) with h_0)."""
    E, B, T1, _ = h.shape
    T = T1 - 1
    out = np.zeros(E)
    for e in range(E):
        terms = []
        for b in range(B):
            for t in range(1, T + 1):
                picked = t == T if loss.endswith("last") else (mask is None or mask[e, b, t - 1])
                if not picked:
                    continue
                z = params["weight_out"][e] @ h[e, b, t] + params["bias_out"][e]
                if loss.startswith("mse"):
                    target = y[e, b] if loss == "mse-last" else y[e, b, t - 1]
                    terms.extend((z - target) ** 2)
                else:
                    target = y[e, b] if loss == "last" else y[e, b, t - 1]
                    terms.append(math.log(np.sum(np.exp(z))) - z[target])
        out[e] = np.mean(terms)
    return out


@pytest.mark.parametrize("loss", losses.LOSSES)
def test_losses_match_handwritten_numpy(loss):
    E, B, T = 2, 3, 4
    params, x, y = make_problem("gru", E, B, T, 2, 3, 4, loss=loss, seed=2)
    mask = make_mask(loss, E, B, T, seed=2)
    h = reference.forward("gru", params, x)["h"]
    want = _numpy_losses(loss, params, h, y, mask)
    np.testing.assert_allclose(losses.readout_loss(loss, params, h, y, mask)["loss"], want, rtol=1e-13)
    np.testing.assert_allclose(rnnsim.gradients("gru", params, x, y, loss=loss, mask=mask)["loss"], want,
                               rtol=1e-12)


@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("masked, plain", [("masked", "every"), ("mse-masked", "mse-every")])
def test_all_true_mask_equals_every_step(cell, masked, plain):
    E, B, T = 2, 3, 5
    params, x, y = make_problem(cell, E, B, T, 2, 4, 3, loss=plain, seed=4)
    want = rnnsim.gradients(cell, params, x, y, loss=plain)
    for mask in (np.ones(T, bool), np.ones((B, T), bool), np.ones((E, B, T), bool)):
        got = rnnsim.gradients(cell, params, x, y, loss=masked, mask=mask)
        assert_outputs_close(got, want, np.float64)


def test_broadcast_masks_equal_the_full_mask():
    E, B, T = 2, 3, 5
    params, x, y = make_problem("rnn", E, B, T, 2, 4, 3, loss="masked", seed=6)
    steps = np.array([False, True, False, True, True])
    full = rnnsim.gradients("rnn", params, x, y, loss="masked", mask=np.broadcast_to(steps, (E, B, T)).copy())
    short = rnnsim.gradients("rnn", params, x, y, loss="masked", mask=steps)
    for key in full:
        np.testing.assert_array_equal(short[key], full[key], err_msg=key)
    # steps left out carry no term: changing their targets changes nothing
    y2 = y.copy()
    y2[:, :, ~steps] = (y2[:, :, ~steps] + 1) % 3
    again = rnnsim.gradients("rnn", params, x, y2, loss="masked", mask=steps)
    for key in full:
        np.testing.assert_array_equal(again[key], full[key], err_msg=key)


# ------------------------------------------------------------------ clipping

def _global_norm(grads):
    return math.sqrt(sum(float(np.sum(np.asarray(grads[k], np.float64) ** 2)) for k in PARAM_KEYS))


@pytest.mark.parametrize("loss", ["last", "mse-masked"])
@pytest.mark.parametrize("cell", cells.names())
def test_clip_scales_to_the_threshold(cell, loss):
    E, B, T = 3, 2, 6
    params, x, y = make_problem(cell, E, B, T, 2, 4, 3, loss=loss, seed=8, scale=1.5)
    mask = make_mask(loss, E, B, T, seed=8)
    plain = rnnsim.gradients(cell, params, x, y, loss=loss, mask=mask)
    norms = np.exp(plain["log_grad_norm_params"])
    low, mid = np.sort(norms)[:2]
    c = math.sqrt(low * mid)  # one network below the threshold, two above
    got = rnnsim.gradients(cell, params, x, y, loss=loss, mask=mask, clip=c)
    np.testing.assert_array_equal(got["clipped"], norms > c)
    np.testing.assert_array_equal(got["log_grad_norm_params"], plain["log_grad_norm_params"])
    for e in range(E):
        factor = min(1.0, c / norms[e])
        for key in PARAM_KEYS:
            assert_close(got[key][e], plain[key][e] * factor, 1e-13, floor=0.0, name=key)
        assert math.isclose(_global_norm({k: got[k][e] for k in PARAM_KEYS}), min(norms[e], c), rel_tol=1e-12)


def test_clip_above_the_norm_changes_nothing():
    params, x, y = make_problem("lstm", 2, 2, 4, 2, 3, 3, loss="mse-every", seed=9)
    plain = rnnsim.gradients("lstm", params, x, y, loss="mse-every")
    above = 1e3 * np.exp(plain["log_grad_norm_params"]).max()
    got = rnnsim.gradients("lstm", params, x, y, loss="mse-every", clip=above)
    assert not got["clipped"].any()
    for key in plain:
        np.testing.assert_array_equal(got[key], plain[key], err_msg=key)


def _exploding(dtype):
    """An rnn at scale 3 held exactly at its fixed point h = 0 (no inputs, no recurrent
    biases): the forward is exact in any dtype, and ||dL/dh_t|| grows like 3^(T-t), so
    the T = 200 gradient is ~e^200, beyond float32 (~e^88.7) but not float64."""
    E, B, T, D, H, K = 2, 2, 200, 2, 8, 3
    params = rnnsim.init_params("rnn", H, D, K, E, scale=3.0, bias_scale=0.0, seed=1, dtype=dtype)
    params["bias_out"] = np.random.default_rng(1).standard_normal((E, K)).astype(dtype)
    y = np.random.default_rng(2).integers(0, K, (E, B))
    return params, np.zeros((E, B, T, D), dtype), y


@pytest.mark.parametrize("device", ["cpu", "reference"])
def test_clip_keeps_an_overflowing_float32_gradient_finite(device):
    run = reference.gradients if device == "reference" else rnnsim.gradients
    p32, x32, y = _exploding(np.float32)
    p64, x64, _ = _exploding(np.float64)
    with np.errstate(over="ignore"):
        plain = run("rnn", p32, x32, y)
    assert any(np.isinf(plain[k]).any() for k in PARAM_KEYS)  # the unclipped float32 overflows
    assert np.all(plain["log_grad_norm_params"] > 100)
    exact = run("rnn", p64, x64, y)
    assert all(np.isfinite(exact[k]).all() for k in PARAM_KEYS)
    got = run("rnn", p32, x32, y, clip=1.0)
    assert got["clipped"].all()
    for e in range(2):
        g = {k: got[k][e] for k in PARAM_KEYS}
        assert all(np.isfinite(v).all() for v in g.values())
        assert math.isclose(_global_norm(g), 1.0, rel_tol=1e-5)
        # one vector, so that entries too small for float32 after the factor (the
        # readout's, ~e^-200) are judged against the whole gradient's scale
        flat = np.concatenate([g[k].ravel() for k in PARAM_KEYS])
        unit = np.concatenate([exact[k][e].ravel() for k in PARAM_KEYS]) * np.exp(
            -exact["log_grad_norm_params"][e])
        assert_close(flat, unit, 1e-4, floor=1e-3, name="direction")
    np.testing.assert_allclose(got["log_grad_norm_params"], exact["log_grad_norm_params"], rtol=1e-5)


# ------------------------------------------------------------------ bad input

def _call(loss="masked", *, targets=None, **kwargs):
    params, x, y = make_problem("rnn", 2, 3, 4, 2, 3, 3, loss=loss)
    return rnnsim.gradients("rnn", params, x, y if targets is None else targets, loss=loss, **kwargs)


BAD = [
    ("float targets for cross-entropy", lambda: _call("every", targets=np.zeros((2, 3, 4))), TypeError,
     "class indices"),
    ("int targets for mse", lambda: _call("mse-last", targets=np.zeros((2, 3, 3), np.int64)), TypeError,
     "targets.astype(np.float64)"),
    ("float32 targets for float64 mse", lambda: _call("mse-last", targets=np.zeros((2, 3, 3), np.float32)),
     TypeError, "inputs' dtype float64"),
    ("mse target shape", lambda: _call("mse-every", targets=np.zeros((2, 3, 4))), ValueError, "(2, 3, 4, 3)"),
    ("mse target nan", lambda: _call("mse-last", targets=np.full((2, 3, 3), np.nan)), ValueError, "NaN"),
    ("class out of range", lambda: _call("masked", targets=np.full((2, 3, 4), 3), mask=np.ones(4, bool)),
     ValueError, "[0, 2]"),
    ("no mask", lambda: _call("masked"), ValueError, "needs a mask"),
    ("mask for every", lambda: _call("every", mask=np.ones(4, bool)), ValueError, "takes no mask"),
    ("int mask", lambda: _call("masked", mask=np.ones(4, int)), TypeError, "mask must be a bool array"),
    ("mask shape", lambda: _call("masked", mask=np.ones(5, bool)), ValueError, "must broadcast to"),
    ("mask 4-d", lambda: _call("masked", mask=np.ones((1, 2, 3, 4), bool)), ValueError, "must broadcast"),
    ("empty mask", lambda: _call("mse-masked", mask=np.arange(2 * 3 * 4).reshape(2, 3, 4) >= 12),
     ValueError, "network(s) 0"),
    ("clip 0", lambda: _call("every", clip=0.0), ValueError, "clip must be a positive"),
    ("clip inf", lambda: _call("every", clip=math.inf), ValueError, "clip must be a positive"),
    ("clip text", lambda: _call("every", clip="1"), TypeError, "clip must be None or a positive number"),
    ("clip bool", lambda: _call("every", clip=True), TypeError, "clip must be None"),
    ("unknown loss", lambda: _call("mse"), ValueError, "unknown loss 'mse'"),
]


@pytest.mark.parametrize("call, error, words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_a_one_line_error(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error
    assert words in str(info.value) and "\n" not in str(info.value)


def test_reference_injects_given_adjoints():
    """reference.raw_gradients with the loss's own adjoints injected gives its recurrent results."""
    from rnnsim._validate import check_mask, check_problem
    E, B, T = 2, 3, 4
    params, x, y = make_problem("lstm", E, B, T, 2, 3, 3, loss="mse-masked", seed=12)
    problem, p, xs, ys = check_problem("lstm", params, x, y, "mse-masked")
    mask = check_mask(problem, make_mask("mse-masked", E, B, T, seed=12))
    own = reference.raw_gradients(problem, p, xs, ys, mask)
    h = reference.forward("lstm", p, xs)["h"]
    local = losses.readout_loss("mse-masked", p, h, ys, mask)["local"]
    given = reference.raw_gradients(problem, p, xs, None, adjoints=local)
    assert set(own) - set(given) == {"loss", "weight_out", "bias_out"}
    for key in given:
        values = given[key].items() if isinstance(given[key], dict) else [(key, given[key])]
        for name, value in values:
            want = own[key][name] if isinstance(given[key], dict) else own[key]
            np.testing.assert_array_equal(value, want, err_msg=name)


def test_memory_counts_the_injected_adjoints(monkeypatch):
    """A limit that the fused loss fits but the injected adjoints do not: refused before allocating."""
    import os

    from rnnsim import _memory, config
    from rnnsim.kernels import cpu
    E, B, T, D, H, K = 2, 64, 256, 2, 64, 3
    params, x, y = make_problem("rnn", E, B, T, D, H, K, loss="every")
    extra = _memory.injected_loss_bytes(1, E, B, T, H, K, 8)
    fused = _memory.gradients_bytes(1, 1, E, B, T, D, H, K, 8, loss_every=True, workers=os.cpu_count() or 1,
                                    tile=max(1, int(config.CPU_SEQUENCE_TILE)))
    assert extra > 4 * E * B * T * H * 8  # the float64 states and adjoints at least
    monkeypatch.setattr(config, "MEMORY_LIMIT_BYTES", fused + extra // 2)

    class Reached(Exception):
        pass

    def reached(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(cpu, "gradients", reached)
    monkeypatch.setattr(cpu, "forward", reached)
    with pytest.raises(Reached):  # the fused loss passes the check
        rnnsim.gradients("rnn", params, x, y, loss="every")
    with pytest.raises(ValueError, match="needs about"):
        rnnsim.gradients("rnn", params, x, y, loss="masked", mask=np.ones(T, bool))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss", ["last", "every", "mse-last"])
@pytest.mark.parametrize("cell", cells.names())
def test_h_last_is_the_forward_pass_final_state(cell, loss, dtype):
    """``h_last`` comes from the gradients call's own forward: rnnsim.forward's numbers."""
    E, B, T, D, H, K = 2, 3, 5, 3, 4, 3
    params, x, _ = make_problem(cell, E, B, T, D, H, K, dtype=dtype, seed=5)
    rng = np.random.default_rng(0)
    y = (rng.standard_normal(target_shape(loss, E, B, T, K)).astype(dtype) if loss.startswith("mse")
         else rng.integers(0, K, size=target_shape(loss, E, B, T)))
    out = rnnsim.gradients(cell, params, x, y, loss=loss)
    assert out["h_last"].dtype == dtype
    # two compiled code paths (gradients_item, forward_item): equal to the dtype's rounding, not bitwise
    assert_close(out["h_last"], rnnsim.forward(cell, params, x)["h"][:, :, -1], RTOL[np.dtype(dtype)],
                 name="h_last vs forward")
    assert_close(out["h_last"], reference.gradients(cell, params, x, y, loss=loss)["h_last"],
                 RTOL[np.dtype(dtype)], name="h_last")
