"""The same computation in torch autograd (skipped when torch is not installed).

Forward and backward are checked separately (micrograd style): hidden states
against torch.nn.RNN/LSTM, then every gradient and the per-step adjoint norms
against autograd through an explicitly unrolled loop.
"""
import numpy as np
import pytest

import rnnsim
from rnnsim import cells, reference
from rnnsim.losses import LOSSES, is_class_loss

from helpers import assert_close, make_mask, make_problem

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


def _torch_loss(loss, hs, p, y, mask):
    """Network e's loss in torch's own terms: CrossEntropyLoss / MSELoss (mean) on the
    selected positions (``mask``: network e's (B, T) bool mask, masked losses only)."""
    if loss.endswith("last"):
        z = hs[-1] @ p["weight_out"].T + p["bias_out"]
    else:
        z = torch.stack(hs[1:], 1) @ p["weight_out"].T + p["bias_out"]
        y = y if mask is None else y[torch.from_numpy(mask)]
        z = z.reshape(-1, z.shape[-1]) if mask is None else z[torch.from_numpy(mask)]
        y = y.reshape(-1) if is_class_loss(loss) else y.reshape(-1, y.shape[-1])
    if is_class_loss(loss):
        return torch.nn.functional.cross_entropy(z, y)
    return torch.nn.MSELoss(reduction="mean")(z, y)


def _torch_unrolled(cell, params, x, y, loss, e, dtype, mask=None):
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
    value = _torch_loss(loss, hs, p, torch.from_numpy(y[e]), None if mask is None else mask[e])
    value.backward()
    norms = np.stack([np.linalg.norm(v.grad.double().numpy(), axis=1) for v in hs], axis=1)
    out = {k: v.grad.numpy() for k, v in p.items()}
    out["loss"] = value.item()
    with np.errstate(divide="ignore"):  # a sequence whose every step a mask leaves out: ln 0
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
    mask = make_mask(loss, *shape[:3], seed=11)
    for impl in (rnnsim.gradients, reference.gradients):
        ours = impl(cell, params, x, y, loss=loss, mask=mask)
        for e in range(E):
            theirs = _torch_unrolled(cell, params, x, y, loss, e, dtype, mask)
            # torch itself computes in the dtype: compare at that dtype's accuracy,
            # with the tolerance widened for float32 by its forward rounding.
            rtol = 1e-11 if dtype == np.float64 else 1e-4
            for key, value in theirs.items():
                assert_close(ours[key][e], value, rtol, floor=0.1, name=f"{impl.__module__}:{key}")
