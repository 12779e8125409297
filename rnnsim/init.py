"""Parameter initialisation for ensembles of networks."""
from __future__ import annotations

import math

import numpy as np

from . import _memory, cells
from ._parse import MAX_SCALE, finite_float, parse_int, positive_int
from ._validate import check_choice

SCHEMES = ("gaussian", "orthogonal", "uniform", "identity")


def _orthogonal(rng, n):
    """A Haar-random n x n orthogonal matrix (QR of a Gaussian, sign-corrected)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _recurrent_block(rng, scheme, scale, H):
    if scheme == "gaussian":
        return rng.standard_normal((H, H)) * (scale / math.sqrt(H))
    if scheme == "orthogonal":
        return scale * _orthogonal(rng, H)
    if scheme == "uniform":
        bound = 1.0 / math.sqrt(H)
        return rng.uniform(-bound, bound, size=(H, H)) * scale
    return scale * np.eye(H)  # identity (IRNN)


def init_params(cell, hidden_size, input_size, num_classes, ensemble=1, *, scheme="gaussian",
                scale=1.0, input_scale=1.0, bias_scale=0.0, forget_bias=0.0, update_bias=0.0, seed=0,
                dtype=np.float64):
    r"""Draw the parameters of ``ensemble`` independent networks.

    Parameters
    ----------
    cell : str
        A name from :func:`rnnsim.cells.names` ("rnn", "lstm", "gru").
    hidden_size, input_size, num_classes : int
        H, D and K.
    ensemble : int
        E, the number of networks.
    scheme : {"gaussian", "orthogonal", "uniform", "identity"}
        Distribution of each H x H gate block of ``weight_hh_l0``.
    scale : float
        Recurrent scale sigma (> 0).
    input_scale, bias_scale : float
        sigma_u and sigma_b (>= 0).
    forget_bias : float
        Added to the forget-gate rows of ``bias_ih_l0`` (cells with a gate ``f``: the lstm).
    update_bias : float
        Added to the update-gate rows of ``bias_ih_l0`` (cells with a gate ``z``: the gru),
        the gru's analogue of the forget bias: σ(b_z) is its carry-over fraction.
    seed : int
        Network e's weights depend only on (seed, e).
    dtype : float32 or float64

    Returns
    -------
    dict of arrays with a leading ensemble axis, keys as in torch.nn.RNN/LSTM plus
    ``weight_out`` and ``bias_out``.

    Notes
    -----
    Per gate block of W_hh:

    - gaussian: :math:`W_{ij} \sim N(0, \sigma^2/H)`;
    - orthogonal: :math:`\sigma Q` with Q Haar-random orthogonal;
    - uniform: :math:`\sigma\, U(-1/\sqrt{H}, 1/\sqrt{H})` (PyTorch's default times sigma);
    - identity: :math:`\sigma I` (IRNN).

    Always :math:`W_{ih} \sim N(0, \sigma_u^2/D)` and :math:`b_{ih} \sim N(0, \sigma_b^2)`;
    ``bias_hh_l0`` is zero so that the total bias variance is exactly
    :math:`\sigma_b^2`, the quantity the mean-field theory uses. The readout is
    :math:`W_{out} \sim N(0, 1/H)`, :math:`b_{out} = 0`.

    Network e draws from ``np.random.SeedSequence(seed, spawn_key=(e,))``, so an
    ensemble can be split or reordered without changing any network.
    """
    spec = cells.get(cell)
    scheme = check_choice("scheme", scheme, SCHEMES)
    H = positive_int("hidden_size", hidden_size)
    D = positive_int("input_size", input_size)
    K = positive_int("num_classes", num_classes)
    E = positive_int("ensemble", ensemble)
    scale = finite_float("scale", scale, minimum=0.0, strict=True, maximum=MAX_SCALE)
    input_scale = finite_float("input_scale", input_scale, minimum=0.0, maximum=MAX_SCALE)
    bias_scale = finite_float("bias_scale", bias_scale, minimum=0.0, maximum=MAX_SCALE)
    gate_bias = {name: finite_float(name, value, minimum=-MAX_SCALE, maximum=MAX_SCALE)
                 for name, value in (("forget_bias", forget_bias), ("update_bias", update_bias))}
    seed = parse_int("seed", seed, minimum=0)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")

    G = spec.G
    _memory.require(_memory.init_bytes(G, E, H, D, K, dtype.itemsize),
                    f"init_params({cell!r}, hidden_size={H}, input_size={D}, num_classes={K}, ensemble={E})")
    out = {k: np.zeros(s, dtype=np.float64) for k, s in spec.param_shapes(E, H, D, K).items()}
    for e in range(E):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(e,)))
        for k in range(G):
            out["weight_hh_l0"][e, k * H:(k + 1) * H] = _recurrent_block(rng, scheme, scale, H)
        out["weight_ih_l0"][e] = rng.standard_normal((G * H, D)) * (input_scale / math.sqrt(D))
        out["bias_ih_l0"][e] = rng.standard_normal(G * H) * bias_scale
        out["weight_out"][e] = rng.standard_normal((K, H)) / math.sqrt(H)
        for keyword, gate in spec.gate_bias:
            out["bias_ih_l0"][e, spec.gate_rows(gate, H)] += gate_bias[keyword]
    return {k: v.astype(dtype) for k, v in out.items()}
