r"""Optimisers for ensembles: every network has its own state and its own step count.

The update rules are torch's (``torch.optim.SGD`` with momentum, dampening 0, no
Nesterov; ``torch.optim.Adam`` without weight decay or amsgrad), applied to each
network independently, in float64. ``active`` (E,) bool masks the networks that
step: a network that skips a step keeps its parameters, its moments and its step
count, as a torch optimiser whose ``step()`` is not called.
"""
from __future__ import annotations

import numpy as np

from .._parse import finite_float

OPTIMIZERS = ("adam", "sgd")


def _rows(active, value):
    """``active`` (E,) shaped to broadcast against ``value`` (E, ...)."""
    return active.reshape((-1,) + (1,) * (value.ndim - 1))


class SGD:
    r"""SGD with momentum, per network.

    Notes
    -----
    :math:`b \leftarrow \mu b + g` (:math:`b = g` on a network's first step),
    :math:`\theta \leftarrow \theta - \eta b`; :math:`\mu = 0` is plain SGD.
    """

    def __init__(self, params, *, lr, momentum=0.9):
        self.lr = finite_float("lr", lr, minimum=0.0, strict=True)
        self.momentum = finite_float("momentum", momentum, minimum=0.0, maximum=1.0)
        if self.momentum == 1.0:
            raise ValueError("momentum must be below 1")
        E = next(iter(params.values())).shape[0]
        self.steps = np.zeros(E, dtype=np.int64)
        self.buffers = {key: np.zeros_like(value, dtype=np.float64) for key, value in params.items()}

    def step(self, params, grads, active):
        """Update ``params`` (float64, in place) with ``grads`` where ``active``."""
        first = self.steps == 0
        for key, p in params.items():
            g = np.asarray(grads[key], dtype=np.float64)
            b = self.buffers[key]
            new_b = np.where(_rows(first, g), g, self.momentum * b + g)
            b[...] = np.where(_rows(active, g), new_b, b)
            p -= np.where(_rows(active, g), self.lr * b, 0.0)
        self.steps += active


class Adam:
    r"""Adam, per network.

    Notes
    -----
    :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
    :math:`\theta \leftarrow \theta - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)` with
    :math:`\hat m = m / (1-\beta_1^t)`, :math:`\hat v = v / (1-\beta_2^t)` and t the
    network's own step count (torch's order of operations).
    """

    def __init__(self, params, *, lr, betas=(0.9, 0.999), eps=1e-8):
        self.lr = finite_float("lr", lr, minimum=0.0, strict=True)
        self.beta1 = finite_float("beta1", betas[0], minimum=0.0, maximum=1.0)
        self.beta2 = finite_float("beta2", betas[1], minimum=0.0, maximum=1.0)
        if max(self.beta1, self.beta2) == 1.0:
            raise ValueError("Adam's betas must be below 1")
        self.eps = finite_float("eps", eps, minimum=0.0)
        E = next(iter(params.values())).shape[0]
        self.steps = np.zeros(E, dtype=np.int64)
        self.m = {key: np.zeros_like(value, dtype=np.float64) for key, value in params.items()}
        self.v = {key: np.zeros_like(value, dtype=np.float64) for key, value in params.items()}

    def step(self, params, grads, active):
        """Update ``params`` (float64, in place) with ``grads`` where ``active``."""
        t = self.steps + active  # the step count after this step, per network
        with np.errstate(divide="ignore", invalid="ignore"):
            bias1 = 1.0 - self.beta1 ** t
            bias2_sqrt = np.sqrt(1.0 - self.beta2 ** t)
        for key, p in params.items():
            g = np.asarray(grads[key], dtype=np.float64)
            on = _rows(active, g)
            m, v = self.m[key], self.v[key]
            m[...] = np.where(on, self.beta1 * m + (1.0 - self.beta1) * g, m)
            v[...] = np.where(on, self.beta2 * v + (1.0 - self.beta2) * g * g, v)
            with np.errstate(divide="ignore", invalid="ignore"):
                # torch: denom = sqrt(v) / sqrt(1 - beta2^t) + eps; p -= (lr / (1 - beta1^t)) * m / denom
                denom = np.sqrt(v) / _rows(bias2_sqrt, g) + self.eps
                update = (self.lr / _rows(bias1, g)) * m / denom
            p -= np.where(on, update, 0.0)
        self.steps = t


def make_optimizer(name, params, *, lr, momentum=0.9):
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`) over ``params`` (float64 master copies)."""
    if name == "adam":
        return Adam(params, lr=lr)
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
