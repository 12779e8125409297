r"""The LSTM, as torch.nn.LSTM: gate order (i, f, g, o), h_0 = c_0 = 0.

.. math::
    a_t &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} = (a^i, a^f, a^g, a^o) \\
    i, f, o &= \sigma(a^i), \sigma(a^f), \sigma(a^o), \qquad g = \tanh(a^g) \\
    c_t &= f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh c_t

Backward, with :math:`\delta c^{\to}_t` the adjoint carried from :math:`c_{t+1}`:

.. math::
    \delta c_t &= \delta c^{\to}_t + \delta h_t \odot o \odot (1 - \tanh^2 c_t)
        \quad\text{(the total } \partial L/\partial c_t\text{)} \\
    \delta a^i &= \delta c_t\, g\, i(1-i), \quad \delta a^f = \delta c_t\, c_{t-1} f(1-f), \quad
    \delta a^g = \delta c_t\, i (1-g^2), \quad \delta a^o = \delta h_t \tanh(c_t)\, o(1-o) \\
    \delta h_{t-1} &= W_{hh}^\top \delta a_t, \qquad \delta c^{\to}_{t-1} = \delta c_t \odot f

Kernels implementing the same equations:

- CPU: :func:`rnnsim.kernels.cpu_lstm.lstm_forward` above
  :func:`rnnsim.kernels.cpu_lstm.lstm_backward`;
- GPU: ``lstm_forward`` above ``lstm_backward`` in :mod:`rnnsim.kernels.gpu_lstm`.

Mean-field theory: :func:`rnnsim.theory_gated.lstm_mean_field` (the annealed fixed point
and the 2x2 map on the (c, h) adjoint moments), beside the cell-path timescale
:func:`rnnsim.theory.forget_timescale` (−1/ln σ(b_f)).
"""
from __future__ import annotations

import numpy as np

from . import Cell
from ._common import affine, back_affine, sigmoid, split_gates, tangent_affine


def forward_step(p, x_t, state):
    """One LSTM step.

    Keeps for the backward: the activated gates (i, f, g, o), c_{t-1} and tanh(c_t).
    """
    a = affine(p["weight_ih_l0"], x_t) + affine(p["weight_hh_l0"], state["h"]) \
        + (p["bias_ih_l0"] + p["bias_hh_l0"])[:, None, :]
    a_i, a_f, a_g, a_o = split_gates(a, 4)
    i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
    c = f * state["c"] + i * g
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return {"h": h, "c": c}, {"i": i, "f": f, "g": g, "o": o, "c_prev": state["c"], "tanh_c": tanh_c}


def backward_step(p, cache, adjoint):
    """The gate adjoints from (δh_t, carried δc_t); δh_{t−1} = W_hhᵀ δa_t, δc_{t−1} = δc_t ⊙ f."""
    i, f, g, o, tanh_c = cache["i"], cache["f"], cache["g"], cache["o"], cache["tanh_c"]
    dh = adjoint["h"]
    dc = adjoint["c"] + dh * o * (1.0 - tanh_c ** 2)  # total dL/dc_t
    da = np.concatenate([dc * g * i * (1.0 - i),
                         dc * cache["c_prev"] * f * (1.0 - f),
                         dc * i * (1.0 - g ** 2),
                         dh * tanh_c * o * (1.0 - o)], axis=-1)
    previous = {"h": back_affine(p["weight_hh_l0"], da), "c": dc * f}
    return {"ih": da, "hh": da}, previous, {"h": dh, "c": dc}


def tangent_step(p, cache, tangent):
    """Forward-mode derivative of one step on the full state (h, c): the lstm's
    Jacobian is 2H x 2H, and the c-directions carry the cell path.

    ``tangent`` maps "h" and "c" to (E, B, k, H): k tangent vectors per sequence.
    """
    i, f, g, o, tanh_c = (cache[k][:, :, None, :] for k in ("i", "f", "g", "o", "tanh_c"))
    d_i, d_f, d_g, d_o = split_gates(tangent_affine(p["weight_hh_l0"], tangent["h"]), 4)
    dc = (d_f * f * (1.0 - f) * cache["c_prev"][:, :, None, :] + f * tangent["c"]
          + d_i * i * (1.0 - i) * g + i * (1.0 - g ** 2) * d_g)
    dh = d_o * o * (1.0 - o) * tanh_c + o * (1.0 - tanh_c ** 2) * dc
    return {"h": dh, "c": dc}


CELL = Cell(name="lstm", gates=("i", "f", "g", "o"), state=("h", "c"), cost=3.0, folded_bias=True,
            forward_step=forward_step, backward_step=backward_step, tangent_step=tangent_step,
            cpu_kernels="cpu_lstm", gpu_kernels="gpu_lstm", gate_bias=(("forget_bias", "f"),),
            theory="rnnsim.theory_gated")
