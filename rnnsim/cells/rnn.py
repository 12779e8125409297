r"""The Elman (tanh) RNN, as torch.nn.RNN(nonlinearity="tanh").

.. math:: a_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \qquad h_t = \tanh(a_t)

Backward (vector-Jacobian product of one step):

.. math:: \delta a_t = \delta h_t \odot (1 - h_t^2), \qquad
          \delta h_{t-1} = W_{hh}^\top \delta a_t

Kernels implementing the same equations:

- CPU: :func:`rnnsim.kernels.cpu_rnn.rnn_forward` above
  :func:`rnnsim.kernels.cpu_rnn.rnn_backward`;
- GPU: ``rnn_forward`` above ``rnn_backward`` in :mod:`rnnsim.kernels.gpu_rnn`.

Mean-field theory: :mod:`rnnsim.theory` (q*, χ, ξ and the critical scale).
"""
from __future__ import annotations

import numpy as np

from . import Cell
from ._common import affine, back_affine, tangent_affine


def forward_step(p, x_t, state):
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    Keeps for the backward: h_t (tanh' = 1 - h_t² needs nothing else).
    """
    a = affine(p["weight_ih_l0"], x_t) + affine(p["weight_hh_l0"], state["h"]) \
        + (p["bias_ih_l0"] + p["bias_hh_l0"])[:, None, :]
    h = np.tanh(a)
    return {"h": h}, {"h": h}


def backward_step(p, cache, adjoint):
    """δa_t = δh_t ⊙ (1 − h_t²); δh_{t−1} = W_hhᵀ δa_t."""
    dh = adjoint["h"]
    da = dh * (1.0 - cache["h"] ** 2)
    return {"ih": da, "hh": da}, {"h": back_affine(p["weight_hh_l0"], da)}, {"h": dh}


def tangent_step(p, cache, tangent):
    """Forward-mode derivative (Jacobian-vector product) of one step: δh_t = (1 − h_t²) ⊙ W_hh δh_{t−1}.

    ``tangent`` maps each state name to (E, B, k, H): k tangent vectors per sequence.
    """
    return {"h": (1.0 - cache["h"][:, :, None, :] ** 2) * tangent_affine(p["weight_hh_l0"], tangent["h"])}


CELL = Cell(name="rnn", gates=("h",), state=("h",), cost=1.0, folded_bias=True,
            forward_step=forward_step, backward_step=backward_step, tangent_step=tangent_step,
            cpu_kernels="cpu_rnn", gpu_kernels="gpu_rnn", theory="rnnsim.theory", pascanu_gamma=1.0)
