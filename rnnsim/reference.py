r"""Plain NumPy float64 reference: forward pass and log-domain BPTT of both cells.

This is the one readable statement of the math. Every fast kernel (Numba CPU,
numba.cuda GPU) is tested against it, and it is tested against central finite
differences and torch autograd. It favours clarity over speed.

Models (torch.nn.RNN / torch.nn.LSTM conventions, h_0 = c_0 = 0)
---------------------------------------------------------------
rnn:   a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh,   h_t = tanh(a_t)
lstm:  a_t as above with 4H rows in the gate order (i, f, g, o);
       i, f, o = sigmoid(.), g = tanh(.);  c_t = f*c_{t-1} + i*g;  h_t = o*tanh(c_t)
output: z_t = W_out h_t + b_out, cross-entropy against class targets;
       loss="last": mean over sequences of CE at t = T;
       loss="every": mean over all (sequence, step) pairs.

Log-domain adjoints
-------------------
The adjoint dL/dh_t of one sequence is stored as exp(s_t) * u_t with a float64
log-scale s_t and a mantissa u_t of unit norm (for the lstm, the pair
(dL/dh_t, carried dL/dc_t) shares one scale and has unit joint norm). Every step
renormalises, and a per-step loss term g is added as
exp(s) u + g = exp(m) (exp(s - m) u + exp(ln|g| - m) g/|g|),  m = max(s, ln|g|),
so nothing under- or overflows at any T. Parameter gradients are sums of terms
exp(s_{b,t}) * (mantissa outer products); they are formed relative to the largest
scale S* = max s_{b,t}, which drops only terms more than the dtype's range below
the largest one, and multiplied by exp(S*) at the very end (see ``finalize``).
"""
from __future__ import annotations

import numpy as np

from ._validate import check_problem
from .logdomain import assemble


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def _unit(v, axis=-1):
    """Split v into (log norm, v / norm) along ``axis``; zero vectors give (-inf, 0)."""
    norm = np.sqrt(np.sum(v * v, axis=axis, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.where(norm > 0, v / np.where(norm > 0, norm, 1.0), 0.0)
        return np.log(norm[..., 0]), unit


def _log_add(scale, mant_h, mant_c, local):
    """exp(scale) * (mant_h, mant_c) + (local, 0), renormalised to unit joint norm.

    scale: (E, B) float64 log-scales (may be -inf); mant_*: (E, B, H); local: (E, B, H).
    """
    log_local, unit_local = _unit(local)
    m = np.maximum(scale, log_local)
    finite = np.isfinite(m)
    m_safe = np.where(finite, m, 0.0)
    with np.errstate(invalid="ignore"):
        w_old = np.where(np.isfinite(scale), np.exp(scale - m_safe), 0.0)[..., None]
        w_new = np.where(np.isfinite(log_local), np.exp(log_local - m_safe), 0.0)[..., None]
    h = w_old * mant_h + w_new * unit_local
    c = w_old * mant_c
    log_n, _ = _unit(np.concatenate([h, c], axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.where(np.isfinite(log_n), np.exp(-log_n), 0.0)[..., None]
    return np.where(finite, m_safe + log_n, -np.inf), h * inv, c * inv


def _renormalise(scale, mant_h, mant_c):
    return _log_add(scale, mant_h, mant_c, np.zeros_like(mant_h))


def forward(cell, params, inputs):
    """Run the recurrence; return the activations that BPTT needs.

    Returns a dict with ``h`` (E, B, T+1, H) including h_0 = 0 and, for the lstm,
    ``c`` (E, B, T+1, H) and the activated gates ``gates`` (E, B, T, 4H) in the
    order (i, f, g, o).
    """
    x = np.asarray(inputs, dtype=np.float64)
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    E, B, T, _ = x.shape
    H = p["weight_hh_l0"].shape[2]
    h = np.zeros((E, B, T + 1, H))
    c = np.zeros((E, B, T + 1, H))
    gates = np.zeros((E, B, T, p["weight_hh_l0"].shape[1]))
    bias = (p["bias_ih_l0"] + p["bias_hh_l0"])[:, None, :]
    for t in range(T):
        a = (np.einsum("ebd,egd->ebg", x[:, :, t], p["weight_ih_l0"])
             + np.einsum("ebh,egh->ebg", h[:, :, t], p["weight_hh_l0"]) + bias)
        if cell == "rnn":
            h[:, :, t + 1] = np.tanh(a)
        else:
            i, f, g, o = (a[..., k * H:(k + 1) * H] for k in range(4))
            i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
            gates[:, :, t] = np.concatenate([i, f, g, o], axis=-1)
            c[:, :, t + 1] = f * c[:, :, t] + i * g
            h[:, :, t + 1] = o * np.tanh(c[:, :, t + 1])
    out = {"h": h}
    if cell == "lstm":
        out["c"] = c
        out["gates"] = gates
    return out


def _output_layer(p, h_steps, targets):
    """Cross-entropy per (e, b, step) and its gradient wrt the logits.

    h_steps: (E, B, S, H) hidden states that feed the output; targets: (E, B, S).
    """
    logits = np.einsum("ebsh,ekh->ebsk", h_steps, p["weight_out"]) + p["bias_out"][:, None, None, :]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    log_p = shifted - log_z
    ce = -np.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
    dlogits = np.exp(log_p)
    np.put_along_axis(dlogits, targets[..., None], np.take_along_axis(dlogits, targets[..., None], -1) - 1.0, -1)
    return ce, dlogits


def gradients(cell, params, inputs, targets, *, loss="last"):
    """Loss, parameter gradients and log gradient-norm profiles, in float64.

    Same contract and keys as :func:`rnnsim.gradients`; always computes in
    float64 whatever the inputs' dtype (the gradients are returned in the inputs'
    dtype, the log profiles in float64).
    """
    problem, params, inputs, targets = check_problem(cell, params, inputs, targets, loss)
    return assemble(problem, raw_gradients(problem, params, inputs, targets))


def raw_gradients(problem, params, inputs, targets):
    """The backend contract: log-domain results before ``rnnsim.logdomain.assemble``.

    Takes validated arguments (see ``rnnsim._validate.check_problem``) and returns
    ``mantissas`` (dict of the four recurrent-parameter gradients relative to
    ``exp(log_scale)``), ``log_scale`` (E,), ``weight_out``, ``bias_out``, ``loss``
    (E,), ``log_grad_norm`` (E, B, T+1) and, for the lstm, ``log_grad_norm_c``.
    Every kernel backend returns the same dict.
    """
    cell, loss = problem.cell, problem.loss
    p = {k: v.astype(np.float64) for k, v in params.items()}
    x = inputs.astype(np.float64)
    E, B, T, H = problem.E, problem.B, problem.T, problem.H
    acts = forward(cell, p, x)
    h = acts["h"]

    # ---- output layer and the local (per-step) adjoints dL/dh_t from the loss
    if loss == "last":
        ce, dlogits = _output_layer(p, h[:, :, T:T + 1], targets[:, :, None])
        loss_value = ce.mean(axis=(1, 2))
        dlogits /= B
        local = np.zeros((E, B, T + 1, H))
        local[:, :, T] = np.einsum("ebk,ekh->ebh", dlogits[:, :, 0], p["weight_out"])
        h_out = h[:, :, T:T + 1]
    else:
        ce, dlogits = _output_layer(p, h[:, :, 1:], targets)
        loss_value = ce.mean(axis=(1, 2))
        dlogits /= B * T
        local = np.zeros((E, B, T + 1, H))
        local[:, :, 1:] = np.einsum("ebsk,ekh->ebsh", dlogits, p["weight_out"])
        h_out = h[:, :, 1:]
    grads = {
        "weight_out": np.einsum("ebsk,ebsh->ekh", dlogits, h_out),
        "bias_out": dlogits.sum(axis=(1, 2)),
    }

    # ---- backward through time, log domain
    G = problem.G
    log_h = np.full((E, B, T + 1), -np.inf)
    log_c = np.full((E, B, T + 1), -np.inf)
    da_mant = np.zeros((E, B, T, G * H))  # mantissas of dL/da_t
    da_scale = np.full((E, B, T), -np.inf)  # their log-scales
    scale, mant_h, mant_c = _log_add(np.full((E, B), -np.inf), np.zeros((E, B, H)),
                                     np.zeros((E, B, H)), local[:, :, T])
    w_hh = p["weight_hh_l0"]
    for t in range(T, 0, -1):
        with np.errstate(divide="ignore"):
            log_h[:, :, t] = scale + np.log(np.linalg.norm(mant_h, axis=-1))
        if cell == "rnn":
            da = mant_h * (1.0 - h[:, :, t] ** 2)
            carry_c = np.zeros_like(mant_h)
        else:
            gt = acts["gates"][:, :, t - 1]
            i, f, g, o = (gt[..., k * H:(k + 1) * H] for k in range(4))
            tanh_c = np.tanh(acts["c"][:, :, t])
            dc = mant_c + mant_h * o * (1.0 - tanh_c ** 2)  # total dL/dc_t (mantissa)
            with np.errstate(divide="ignore"):
                log_c[:, :, t] = scale + np.log(np.linalg.norm(dc, axis=-1))
            da = np.concatenate([dc * g * i * (1.0 - i),
                                 dc * acts["c"][:, :, t - 1] * f * (1.0 - f),
                                 dc * i * (1.0 - g ** 2),
                                 mant_h * tanh_c * o * (1.0 - o)], axis=-1)
            carry_c = dc * f  # dL/dc_{t-1} through c_t
        da_mant[:, :, t - 1] = da
        da_scale[:, :, t - 1] = scale
        back_h = np.einsum("ebg,egh->ebh", da, w_hh)  # W_hh^T da
        scale, mant_h, mant_c = _renormalise(scale, back_h, carry_c)
        scale, mant_h, mant_c = _log_add(scale, mant_h, mant_c, local[:, :, t - 1])
    with np.errstate(divide="ignore"):
        log_h[:, :, 0] = scale + np.log(np.linalg.norm(mant_h, axis=-1))
        log_c[:, :, 0] = scale + np.log(np.linalg.norm(mant_c, axis=-1))

    # ---- parameter gradients: sum_{b,t} exp(s_bt) da_bt (x) input, relative to S*
    top = np.max(da_scale, axis=(1, 2))  # S* per network, may be -inf
    top_safe = np.where(np.isfinite(top), top, 0.0)
    weight = np.where(np.isfinite(da_scale), np.exp(da_scale - top_safe[:, None, None]), 0.0)
    da_rel = da_mant * weight[..., None]
    mant = {
        "weight_hh_l0": np.einsum("ebtg,ebth->egh", da_rel, h[:, :, :T]),
        "weight_ih_l0": np.einsum("ebtg,ebtd->egd", da_rel, x),
        "bias_ih_l0": da_rel.sum(axis=(1, 2)),
    }
    mant["bias_hh_l0"] = mant["bias_ih_l0"].copy()
    raw = dict(grads, mantissas=mant, log_scale=top, loss=loss_value, log_grad_norm=log_h)
    if cell == "lstm":
        raw["log_grad_norm_c"] = log_c
    return raw
