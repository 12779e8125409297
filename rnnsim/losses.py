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
Each loss averages its terms over the (sequence, step) pairs it *selects*, per
network: t = T only (``*last``), every t = 1..T (``*every``), or the pairs where a
boolean ``mask`` (broadcastable to (E, B, T)) is True (``*masked``).

``"last"``, ``"every"``, ``"masked"``
    Softmax cross-entropy against integer class targets:
    :math:`L = \frac{1}{|S|}\sum_{(b,t)\in S} \big(\log\sum_k e^{z_{btk}} - z_{bty_{bt}}\big)`,
    torch ``CrossEntropyLoss`` on the selected positions.
``"mse-last"``, ``"mse-every"``, ``"mse-masked"``
    Mean squared error of the linear readout against float targets:
    :math:`L = \frac{1}{K|S|}\sum_{(b,t)\in S}\sum_k (z_{btk} - y_{btk})^2`,
    torch ``MSELoss(reduction="mean")`` on the selected elements.

Every target entry must be valid (a class in [0, K), or a finite float), selected
or not.
"""
from __future__ import annotations

import numpy as np

LOSSES = ("last", "every", "masked", "mse-last", "mse-every", "mse-masked")
#: Losses whose targets are integer class indices (softmax cross-entropy).
CLASS_LOSSES = ("last", "every", "masked")
#: Losses whose targets are floats of the inputs' dtype (MSE of the linear readout).
FLOAT_LOSSES = ("mse-last", "mse-every", "mse-masked")
#: Losses that select steps with a boolean mask.
MASKED_LOSSES = ("masked", "mse-masked")
#: Losses that the kernels compute themselves, fused into the backward (the sweep's);
#: every other loss is computed here and its adjoints injected into the kernels.
FUSED_LOSSES = ("last", "every")


def is_class_loss(loss: str) -> bool:
    """True when ``loss`` takes integer class targets, False for float targets."""
    return loss in CLASS_LOSSES


def loss_steps(loss: str, T: int) -> np.ndarray:
    """The steps t (1..T) whose h_t may carry a loss term (a mask selects among them)."""
    return np.array([T]) if loss.endswith("last") else np.arange(1, T + 1)


def target_shape(loss: str, E: int, B: int, T: int, K: int | None = None) -> tuple:
    """The shape of the targets that ``loss`` needs: (E, B[, T]) class indices, or
    (E, B[, T], K) floats for the MSE losses."""
    shape = (E, B) if loss.endswith("last") else (E, B, T)
    return shape if is_class_loss(loss) else shape + (K,)


def selection(loss: str, E: int, B: int, T: int, mask=None) -> np.ndarray:
    """(E, B, S) bool: the (sequence, output step) pairs that carry a loss term, S =
    ``len(loss_steps(loss, T))``; the broadcast ``mask`` for a masked loss."""
    if loss in MASKED_LOSSES:
        return np.broadcast_to(np.asarray(mask, dtype=bool), (E, B, T))
    return np.ones((E, B, len(loss_steps(loss, T))), dtype=bool)


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


def readout_loss(loss, params, h, targets, mask=None):
    r"""Loss, per-step adjoints and readout gradients for hidden states ``h``.

    Parameters
    ----------
    loss : one of :data:`LOSSES`
    params : dict with ``weight_out`` (E, K, H) and ``bias_out`` (E, K), float64
    h : (E, B, T+1, H) float64, h_0..h_T
    targets : shape :func:`target_shape`; int class indices, or floats for the MSE losses
    mask : bool, broadcastable to (E, B, T); only for the masked losses, and selecting
        at least one (sequence, step) pair of every network

    Returns
    -------
    dict with ``loss`` (E,), ``local`` (E, B, T+1, H) = dL/dh_t from the loss terms,
    ``weight_out`` and ``bias_out``.

    Notes
    -----
    With the selected pairs S_e of network e and the per-pair gradient
    :math:`g_{bt} = \partial\ell_{bt}/\partial z_{bt}` (:math:`\mathrm{softmax} -
    \mathrm{onehot}` for cross-entropy, :math:`2(z - y)` for MSE), divided by the count
    :math:`n_e` (|S_e|, or K|S_e| for MSE):
    :math:`\partial L/\partial h_t = W_{out}^T g_{bt}/n_e`,
    :math:`\partial L/\partial W_{out} = \sum g_{bt} h_t^T / n_e`,
    :math:`\partial L/\partial b_{out} = \sum g_{bt} / n_e`.
    """
    E, B, T1, H = h.shape
    steps = loss_steps(loss, T1 - 1)
    selected = selection(loss, E, B, T1 - 1, mask).astype(np.float64)      # (E, B, S)
    count = selected.sum(axis=(1, 2))                                       # (E,)
    h_out = h[:, :, steps]                                                  # (E, B, S, H)
    logits = np.einsum("ebsh,ekh->ebsk", h_out, params["weight_out"]) + params["bias_out"][:, None, None, :]
    if is_class_loss(loss):
        tgt = targets[:, :, None] if loss == "last" else targets
        terms, dlogits = cross_entropy(logits, tgt)
    else:
        tgt = targets[:, :, None, :] if loss == "mse-last" else targets
        diff = logits - tgt
        terms = np.sum(diff * diff, axis=-1)
        dlogits = 2.0 * diff
        count = count * logits.shape[-1]  # the mean runs over every output element
    # unselected pairs carry no term: their weight is exactly 0 (the CE losses
    # "last"/"every" select every pair, so their numbers are those of a plain mean)
    dlogits = dlogits * selected[..., None] / count[:, None, None, None]
    local = np.zeros((E, B, T1, H))
    local[:, :, steps] = np.einsum("ebsk,ekh->ebsh", dlogits, params["weight_out"])
    return {
        "loss": (terms * selected).sum(axis=(1, 2)) / count,
        "local": local,
        "weight_out": np.einsum("ebsk,ebsh->ekh", dlogits, h_out),
        "bias_out": dlogits.sum(axis=(1, 2)),
    }
