r"""Losses: the readout, the loss per network and the per-step adjoints it injects.

A loss maps the hidden states and the readout parameters to

- the loss per network (E,),
- the per-step adjoints :math:`\partial L/\partial h_t` that it injects, (E, B, T+1, H)
  (zero where a step carries no loss term; index 0 is h_0, which never does),
- the readout's own gradients ``weight_out`` (E, K, H) and ``bias_out`` (E, K).

The kernels take these per-step adjoints as input to the backward recurrence, so a
new loss needs no new kernel. Readout: :math:`z_t = W_{out} h_t + b_{out}`.

Losses
------
``"last"``
    Mean over sequences of the cross-entropy at t = T.
``"every"``
    Mean over all (sequence, step) pairs of the cross-entropy at t = 1..T.
"""
from __future__ import annotations

import numpy as np

LOSSES = ("last", "every")


def loss_steps(loss: str, T: int) -> np.ndarray:
    """The steps t (1..T) whose h_t carries a loss term."""
    return np.array([T]) if loss == "last" else np.arange(1, T + 1)


def target_shape(loss: str, E: int, B: int, T: int) -> tuple:
    """The shape of the integer class targets that ``loss`` needs."""
    return (E, B) if loss == "last" else (E, B, T)


def cross_entropy(logits, targets):
    r"""Softmax cross-entropy and its gradient with respect to the logits.

    Parameters
    ----------
    logits : (..., K) float64
    targets : (...) int class indices

    Returns
    -------
    ce : (...) :math:`\log\sum_k e^{z_k} - z_y`
    dlogits : (..., K) :math:`\mathrm{softmax}(z) - \mathrm{onehot}(y)`
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    ce = -np.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
    dlogits = np.exp(log_p)
    np.put_along_axis(dlogits, targets[..., None], np.take_along_axis(dlogits, targets[..., None], -1) - 1.0,
                      -1)
    return ce, dlogits


def readout_loss(loss, params, h, targets):
    """Loss, per-step adjoints and readout gradients for hidden states ``h``.

    Parameters
    ----------
    loss : one of :data:`LOSSES`
    params : dict with ``weight_out`` (E, K, H) and ``bias_out`` (E, K), float64
    h : (E, B, T+1, H) float64, h_0..h_T
    targets : int, shape :func:`target_shape`

    Returns
    -------
    dict with ``loss`` (E,), ``local`` (E, B, T+1, H) = dL/dh_t from the loss terms,
    ``weight_out`` and ``bias_out``.
    """
    E, B, T1, H = h.shape
    steps = loss_steps(loss, T1 - 1)
    tgt = targets[:, :, None] if loss == "last" else targets
    h_out = h[:, :, steps]                                  # (E, B, S, H)
    logits = np.einsum("ebsh,ekh->ebsk", h_out, params["weight_out"]) + params["bias_out"][:, None, None, :]
    ce, dlogits = cross_entropy(logits, tgt)
    count = B * len(steps)
    dlogits /= count
    local = np.zeros((E, B, T1, H))
    local[:, :, steps] = np.einsum("ebsk,ekh->ebsh", dlogits, params["weight_out"])
    return {
        "loss": ce.sum(axis=(1, 2)) / count,
        "local": local,
        "weight_out": np.einsum("ebsk,ebsh->ekh", dlogits, h_out),
        "bias_out": dlogits.sum(axis=(1, 2)),
    }
