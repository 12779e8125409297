r"""The GRU, as torch.nn.GRU: gate order (r, z, n), h_0 = 0.

.. math::
    r &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
    z &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
    u &= W_{hn} h_{t-1} + b_{hn}, \qquad n = \tanh(W_{in} x_t + b_{in} + r \odot u) \\
    h_t &= (1 - z) \odot n + z \odot h_{t-1}

b_hn sits inside :math:`r \odot (\cdot)`, so the biases do not fold into one sum, and
the n block's input-side and recurrent-side adjoints differ. Backward:

.. math::
    \delta a^n &= \delta h_t (1 - z)(1 - n^2), \quad
    \delta a^z = \delta h_t (h_{t-1} - n)\, z(1 - z), \quad
    \delta a^r = \delta a^n\, u\, r(1 - r) \\
    \delta u &= \delta a^n \odot r, \qquad
    \delta h_{t-1} = W_{hh}^\top (\delta a^r, \delta a^z, \delta u) + z \odot \delta h_t

The input side (W_ih, b_ih) takes the rows :math:`(\delta a^r, \delta a^z, \delta a^n)`,
the recurrent side (W_hh, b_hh) the rows :math:`(\delta a^r, \delta a^z, \delta u)`. The
direct path :math:`z \odot \delta h_t` enters the log-domain renormalisation like the
W_hhᵀ term.

Kernels implementing the same equations:

- CPU: :func:`rnnsim.kernels.cpu_gru.gru_forward` above
  :func:`rnnsim.kernels.cpu_gru.gru_backward`;
- GPU: ``gru_forward`` above ``gru_backward`` in :mod:`rnnsim.kernels.gpu_gru`.

Mean-field theory: :func:`rnnsim.theory_gated.gru_mean_field`.
"""
from __future__ import annotations

import numpy as np

from . import Cell
from ._common import affine, back_affine, sigmoid, split_gates, tangent_affine


def forward_step(p, x_t, state):
    """One GRU step.

    Keeps for the backward: r, z, n, u = W_hn h_{t-1} + b_hn, and h_{t-1}.
    """
    h_prev = state["h"]
    in_r, in_z, in_n = split_gates(affine(p["weight_ih_l0"], x_t) + p["bias_ih_l0"][:, None, :], 3)
    hid_r, hid_z, u = split_gates(affine(p["weight_hh_l0"], h_prev) + p["bias_hh_l0"][:, None, :], 3)
    r = sigmoid(in_r + hid_r)
    z = sigmoid(in_z + hid_z)
    n = np.tanh(in_n + r * u)
    h = (1.0 - z) * n + z * h_prev
    return {"h": h}, {"r": r, "z": z, "n": n, "u": u, "h_prev": h_prev}


def backward_step(p, cache, adjoint):
    """Input-side rows (δa^r, δa^z, δa^n), recurrent-side rows (δa^r, δa^z, δu) and
    δh_{t−1} = W_hhᵀ (δa^r, δa^z, δu) + z ⊙ δh_t."""
    r, z, n, u = cache["r"], cache["z"], cache["n"], cache["u"]
    dh = adjoint["h"]
    da_n = dh * (1.0 - z) * (1.0 - n ** 2)
    da_z = dh * (cache["h_prev"] - n) * z * (1.0 - z)
    da_r = da_n * u * r * (1.0 - r)
    d_u = da_n * r
    rows_ih = np.concatenate([da_r, da_z, da_n], axis=-1)
    rows_hh = np.concatenate([da_r, da_z, d_u], axis=-1)
    previous = {"h": back_affine(p["weight_hh_l0"], rows_hh) + z * dh}
    return {"ih": rows_ih, "hh": rows_hh}, previous, {"h": dh}


def tangent_step(p, cache, tangent):
    """Forward-mode derivative of one step: with (δr', δz', δu) = W_hh δh_{t−1} by block,
    δr = σ'(a_r) δr', δz = σ'(a_z) δz', δn = (1 − n²)(δr u + r δu),
    δh_t = (1 − z) δn + z δh_{t−1} + (h_{t−1} − n) δz.

    ``tangent`` maps "h" to (E, B, k, H): k tangent vectors per sequence.
    """
    r, z, n, u, h_prev = (cache[k][:, :, None, :] for k in ("r", "z", "n", "u", "h_prev"))
    d_r, d_z, d_u = split_gates(tangent_affine(p["weight_hh_l0"], tangent["h"]), 3)
    d_r = d_r * r * (1.0 - r)
    d_z = d_z * z * (1.0 - z)
    d_n = (1.0 - n ** 2) * (d_r * u + r * d_u)
    return {"h": (1.0 - z) * d_n + z * tangent["h"] + (h_prev - n) * d_z}


CELL = Cell(name="gru", gates=("r", "z", "n"), state=("h",), cost=2.5, folded_bias=False,
            forward_step=forward_step, backward_step=backward_step, tangent_step=tangent_step,
            cpu_kernels="cpu_gru", gpu_kernels="gpu_gru", gate_bias=(("update_bias", "z"),),
            theory="rnnsim.theory_gated")
