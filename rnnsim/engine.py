"""The public engine: validated entry points that dispatch to the kernels."""
from __future__ import annotations

import numpy as np

from ._validate import DEVICES, check_choice, check_clip, check_lyapunov, check_mask, check_problem
from .cells import OUTPUT_KEYS
from .logdomain import assemble
from .losses import FUSED_LOSSES, readout_loss


def resolve_device(device: str) -> str:
    """Map ``"cpu" | "cuda" | "auto"`` to the backend that will run.

    ``"cuda"`` without a usable GPU raises ``RuntimeError`` naming why; ``"auto"``
    falls back to the CPU.
    """
    device = check_choice("device", device, DEVICES)
    if device == "cpu":
        return "cpu"
    from .kernels import gpu  # imports numba.cuda lazily; never needs a GPU to import

    reason = gpu.unavailable_reason()
    if reason is None:
        return "cuda"
    if device == "auto":
        return "cpu"
    raise RuntimeError(f"device='cuda' requested but no GPU is usable: {reason}")


def _backend(device: str):
    if device == "cuda":
        from .kernels import gpu
        return gpu
    from .kernels import cpu
    return cpu


def gradients(cell, params, inputs, targets, *, loss="last", mask=None, clip=None, device="cpu"):
    r"""Loss, exact parameter gradients and log-domain gradient-norm profiles.

    Parameters
    ----------
    cell : str
        A name from :func:`rnnsim.cells.names` ("rnn", "lstm", "gru").
    params : dict of arrays
        ``weight_ih_l0`` (E, G·H, D), ``weight_hh_l0`` (E, G·H, H), ``bias_ih_l0``
        (E, G·H), ``bias_hh_l0`` (E, G·H), ``weight_out`` (E, K, H), ``bias_out``
        (E, K); G = 1 (rnn), 3 (gru, gate order r, z, n) or 4 (lstm, gate order
        i, f, g, o). Same dtype as inputs.
    inputs : array (E, B, T, D), float32 or float64
        The computation runs in this dtype.
    targets : array, shape by loss
        Cross-entropy losses: int class indices in [0, K), (E, B) for ``"last"``,
        (E, B, T) for ``"every"`` and ``"masked"``. MSE losses: floats in the inputs'
        dtype, (E, B, K) for ``"mse-last"``, (E, B, T, K) for ``"mse-every"`` and
        ``"mse-masked"``. Every entry must be valid, selected or not.
    loss : {"last", "every", "masked", "mse-last", "mse-every", "mse-masked"}
        Which (sequence, step) pairs carry a loss term (t = T; every t; where
        ``mask``), and the term: softmax cross-entropy, or squared error of the
        linear readout; averaged per network (see Notes).
    mask : bool array broadcastable to (E, B, T), or None
        Only for ``"masked"`` and ``"mse-masked"`` (required there): the selected
        pairs; every network needs at least one.
    clip : float or None
        Gradient clipping by global norm: network e's whole gradient (recurrent and
        readout) is multiplied by :math:`\min(1, c/\|g_e\|)`.
    device : {"cpu", "cuda", "auto"}

    Returns
    -------
    dict
        - one array per parameter key, same shape and dtype: dL_e/dθ of network e
          (clipped when ``clip`` is given); entries beyond the dtype's range are
          ±inf, never NaN;
        - ``loss`` (E,);
        - ``h_last`` (E, B, H): the final hidden state h_T of every sequence (the
          readout of the last step is ``h_last @ weight_out.T + bias_out``: accuracy
          needs no second forward pass);
        - ``log_grad_norm`` (E, B, T+1) float64: ln‖dL_e/dh_t‖ per sequence, t = 0..T;
        - ``log_grad_norm_c`` (E, B, T+1) float64, lstm only: ln‖dL_e/dc_t‖, the total
          derivative through c_{t+1} and h_t;
        - ``log_grad_norm_params`` (E,) float64: ln of the global norm of all of
          network e's parameter gradients, unclipped (finite even when entries overflow);
        - ``clipped`` (E,) bool, only with ``clip``: whether network e's gradient was
          scaled down.

    Raises
    ------
    ValueError, TypeError
        For bad shapes, dtypes, names, sizes, targets, masks, clip values, or
        non-finite values.
    RuntimeError
        ``device="cuda"`` without a usable GPU.

    Notes
    -----
    rnn: :math:`h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`.
    lstm: :math:`c_t = f_t \odot c_{t-1} + i_t \odot g_t`, :math:`h_t = o_t \odot \tanh c_t`.
    gru: :math:`h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}`.

    Readout :math:`z_{bt} = W_{out} h_{bt} + b_{out}`. With :math:`S_e` the selected
    (sequence, step) pairs of network e ({(b, T)}, all (b, t), or the mask's):

    - cross-entropy: :math:`L_e = \frac{1}{|S_e|}\sum_{(b,t)\in S_e}
      \big(\log\sum_k e^{z_{btk}} - z_{bty_{bt}}\big)`;
    - MSE: :math:`L_e = \frac{1}{K|S_e|}\sum_{(b,t)\in S_e}\sum_k (z_{btk} - y_{btk})^2`.

    ``"last"`` and ``"every"`` are computed inside the kernels. The other losses are
    computed by :mod:`rnnsim.losses` (float64) from the backend's forward states, and
    their per-step adjoints :math:`\partial L/\partial h_t` are injected into the
    backend's backward: the same recurrence, so every backend supports them.

    BPTT keeps each adjoint as a unit vector times :math:`e^{s_t}`, with the
    log-scale :math:`s_t` in float64, so the profiles stay exact at any T
    (see :mod:`rnnsim.reference`). Clipping (Pascanu et al. 2013) computes
    :math:`\ln\|g_e\|` and the factor in that log domain before any entry is
    formed, so a clipped float32 gradient is finite even where the unclipped one
    overflows.
    """
    problem, params, inputs, targets = check_problem(cell, params, inputs, targets, loss)
    mask = check_mask(problem, mask)
    clip = check_clip(clip)
    backend = _backend(resolve_device(device))
    if problem.loss in FUSED_LOSSES:
        raw = backend.gradients(problem, params, inputs, targets)
    else:
        raw = _injected_gradients(backend, problem, params, inputs, targets, mask)
    return assemble(problem, raw, clip)


def _injected_gradients(backend, problem, params, inputs, targets, mask):
    """A loss of :mod:`rnnsim.losses` on the backend's forward states, its per-step
    adjoints injected into the backend's backward."""
    states = backend.forward(problem, params, inputs)["h"]  # (E, B, T, H), h_1..h_T
    h = np.zeros((problem.E, problem.B, problem.T + 1, problem.H))
    h[:, :, 1:] = states
    del states
    readout = {key: params[key].astype(np.float64) for key in OUTPUT_KEYS}
    out = readout_loss(problem.loss, readout, h, targets, mask)
    del h
    raw = backend.gradients(problem, params, inputs, None, adjoints=out["local"].astype(problem.dtype))
    raw.update(loss=out["loss"], weight_out=out["weight_out"], bias_out=out["bias_out"])
    return raw


def forward(cell, params, inputs, *, device="cpu"):
    """Hidden states of every network (no gradients).

    Returns a dict with ``h`` (E, B, T, H) for t = 1..T and, for the lstm, ``c``
    (E, B, T, H); arrays in the inputs' dtype. Validation as in :func:`gradients`.
    """
    problem, params, inputs, _ = check_problem(cell, params, inputs, None, need_targets=False)
    return _backend(resolve_device(device)).forward(problem, params, inputs)


def lyapunov(cell, params, inputs, *, k=1, qr_every=1, warmup=100, device="cpu"):
    r"""Top-k Lyapunov exponents of the input-driven forward dynamics of every network.

    Parameters
    ----------
    cell, params, inputs : as in :func:`gradients` (no targets: no loss is involved)
    k : int
        Number of exponents, 1 to the state dimension (H; 2H for the lstm's (h, c)).
    qr_every : int
        Steps between QR reorthonormalisations of the k tangent vectors.
    warmup : int
        Steps discarded before averaging (the trajectory starts at the zero state, and
        the tangent vectors need some steps to align with the top directions);
        ``warmup + qr_every <= T``.
    device : {"cpu", "cuda", "auto"}
        The spectra run on the CPU; ``"cuda"`` is refused, ``"auto"`` runs on the CPU.

    Returns
    -------
    dict
        - ``exponents`` (E, k) float64, nats per step, the mean over sequences,
          in decreasing order;
        - ``exponents_per_sequence`` (E, B, k);
        - ``log_growth`` (E, B, T): running sum of :math:`\sum_i \ln|R_{ii}|`, the log
          growth of the k-volume after the warm-up (for convergence plots);
        - ``steps``: the number of steps the exponents average over.

    Notes
    -----
    The standard QR method (Benettin et al. 1980): :math:`V_t = J_t Q_{t-1}`,
    :math:`V_t = Q_t R_t`, :math:`\lambda_i = \frac{1}{n}\sum_t \ln|R_{t,ii}|`, with
    :math:`J_t` the Jacobian of the cell's step on its full state (the lstm's is
    2H x 2H, so its spectrum includes the c-directions). The typical growth rate of
    :math:`\|\partial L/\partial h_{t-k}\|` in k is :math:`\lambda_{max}`.
    """
    problem, params, inputs, _ = check_problem(cell, params, inputs, None, need_targets=False)
    k, qr_every, warmup = check_lyapunov(problem, k, qr_every, warmup)
    device = check_choice("device", device, DEVICES)
    if device == "cuda":
        raise ValueError("lyapunov runs on the CPU only; use device='cpu' or 'auto'")
    from .kernels import cpu

    raw = cpu.lyapunov(problem, params, inputs, k, qr_every, warmup)
    return {"exponents": raw["exponents_per_sequence"].mean(axis=1), **raw}
