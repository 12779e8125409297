"""The same computation in torch autograd (skipped when torch is not installed).

Forward and backward are checked separately (micrograd style): hidden states
against torch.nn.RNN/LSTM, then every gradient and the per-step adjoint norms
against autograd through an explicitly unrolled loop.
"""
import numpy as np
import pytest

import rnnsim
from rnnsim import cells, reference
from rnnsim.losses import LOSSES

from helpers import assert_close, make_problem

torch = pytest.importorskip("torch")
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
RTOL = {np.float64: 1e-12, np.float32: 1e-5}


# Steps from the input-side (W_ih x + b_ih) and recurrent-side (W_hh h + b_hh)
# pre-activations and the state (h, c); they return the new (h, c).
def _rnn_step(a_in, a_hid, h, c):
    return torch.tanh(a_in + a_hid), c


def _lstm_step(a_in, a_hid, h, c):
    i, f, g, o = (a_in + a_hid).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_step(a_in, a_hid, h, c):
    in_r, in_z, in_n = a_in.chunk(3, dim=1)
    hid_r, hid_z, hid_n = a_hid.chunk(3, dim=1)
    r, z = torch.sigmoid(in_r + hid_r), torch.sigmoid(in_z + hid_z)
    return (1 - z) * torch.tanh(in_n + r * hid_n) + z * h, c


# Each registered cell in torch: its nn module and its step from the pre-activations a
# (a cell missing here fails its tests with a KeyError naming it: add it).
TORCH_MODULE = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
TORCH_STEP = {"rnn": _rnn_step, "lstm": _lstm_step, "gru": _gru_step}


def _module(cell, params, e, dtype):
    D, H = params["weight_ih_l0"].shape[2], params["weight_hh_l0"].shape[2]
    mod = TORCH_MODULE[cell](D, H, batch_first=True, dtype=TORCH_DTYPE[dtype])
    with torch.no_grad():
        for key in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(mod, key).copy_(torch.from_numpy(params[key][e]))
    return mod


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", cells.names())
def test_forward_matches_torch_modules(cell, dtype):
    params, x, _ = make_problem(cell, 2, 3, 5, 3, 4, 3, dtype=dtype)
    ours = rnnsim.forward(cell, params, x)
    for e in range(2):
        out, _ = _module(cell, params, e, dtype)(torch.from_numpy(x[e]))
        assert_close(ours["h"][e], out.detach().numpy(), RTOL[dtype], name="h")


def _torch_unrolled(cell, params, x, y, loss, e, dtype):
    """Loss, parameter grads and per-step adjoints of network e via autograd."""
    p = {k: torch.tensor(v[e], dtype=TORCH_DTYPE[dtype], requires_grad=True) for k, v in params.items()}
    xs = torch.from_numpy(x[e])
    B, T, _ = xs.shape
    H = params["weight_hh_l0"].shape[2]
    h = torch.zeros(B, H, dtype=TORCH_DTYPE[dtype], requires_grad=True)
    c = torch.zeros(B, H, dtype=TORCH_DTYPE[dtype], requires_grad=True)
    hs, cs = [h], [c]
    for t in range(T):
        a_in = xs[:, t] @ p["weight_ih_l0"].T + p["bias_ih_l0"]
        a_hid = h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
        h, c = TORCH_STEP[cell](a_in, a_hid, h, c)
        if "c" in cells.get(cell).state:
            c.retain_grad()
            cs.append(c)
        h.retain_grad()
        hs.append(h)
    tgt = torch.from_numpy(y[e])
    if loss == "last":
        value = torch.nn.functional.cross_entropy(h @ p["weight_out"].T + p["bias_out"], tgt)
    else:
        logits = torch.stack(hs[1:], 1) @ p["weight_out"].T + p["bias_out"]
        value = torch.nn.functional.cross_entropy(logits.reshape(B * T, -1), tgt.reshape(-1))
    value.backward()
    norms = np.stack([np.linalg.norm(v.grad.double().numpy(), axis=1) for v in hs], axis=1)
    out = {k: v.grad.numpy() for k, v in p.items()}
    out["loss"] = value.item()
    out["log_grad_norm"] = np.log(norms)
    if "c" in cells.get(cell).state:
        out["log_grad_norm_c"] = np.log(np.stack([np.linalg.norm(v.grad.double().numpy(), axis=1)
                                                  for v in cs], axis=1))
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("shape", [(2, 3, 5, 3, 4, 3), (1, 1, 1, 1, 1, 2)], ids=["E2B3T5", "E1B1T1H1"])
def test_gradients_match_torch_autograd(cell, loss, dtype, shape):
    E = shape[0]
    params, x, y = make_problem(cell, *shape, loss=loss, dtype=dtype, seed=11)
    for impl in (rnnsim.gradients, reference.gradients):
        ours = impl(cell, params, x, y, loss=loss)
        for e in range(E):
            theirs = _torch_unrolled(cell, params, x, y, loss, e, dtype)
            # torch itself computes in the dtype: compare at that dtype's accuracy,
            # with the tolerance widened for float32 by its forward rounding.
            rtol = 1e-11 if dtype == np.float64 else 1e-4
            for key, value in theirs.items():
                assert_close(ours[key][e], value, rtol, floor=0.1, name=f"{impl.__module__}:{key}")
