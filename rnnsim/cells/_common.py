"""NumPy pieces that several cells' steps share."""
from __future__ import annotations

import numpy as np


def sigmoid(x):
    """Logistic function, without overflow for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def affine(W, v):
    """Batched W v: W (E, R, C), v (E, B, C) -> (E, B, R) (matmul: BLAS per network)."""
    return np.matmul(v, np.swapaxes(W, 1, 2))


def back_affine(W, d):
    """Batched Wᵀ d: W (E, R, C), d (E, B, R) -> (E, B, C)."""
    return np.matmul(d, W)


def tangent_affine(W, v):
    """Batched W v over k tangent vectors: W (E, R, C), v (E, B, k, C) -> (E, B, k, R)."""
    return np.matmul(v, np.swapaxes(W, 1, 2)[:, None])


def split_gates(a, G):
    """The G gate blocks of the last axis of ``a``."""
    H = a.shape[-1] // G
    return tuple(a[..., k * H:(k + 1) * H] for k in range(G))
