"""The public engine: validated entry points that dispatch to the kernels."""
from __future__ import annotations

from ._validate import DEVICES, check_choice, check_lyapunov, check_problem
from .logdomain import assemble


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


def gradients(cell, params, inputs, targets, *, loss="last", device="cpu"):
    r"""Loss, exact parameter gradients and log-domain gradient-norm profiles.

    Parameters
    ----------
    cell : str
        A name from :func:`rnnsim.cells.names` ("rnn", "lstm", "gru").
    params : dict of arrays
        ``weight_ih_l0`` (E, G·H, D), ``weight_hh_l0`` (E, G·H, H), ``bias_ih_l0``
        (E, G·H), ``bias_hh_l0`` (E, G·H), ``weight_out`` (E, K, H), ``bias_out``
        (E, K); G = 1 (rnn) or 4 (lstm, gate order i, f, g, o). Same dtype as inputs.
    inputs : array (E, B, T, D), float32 or float64
        The computation runs in this dtype.
    targets : int array, (E, B) for ``loss="last"`` or (E, B, T) for ``loss="every"``
    loss : {"last", "every"}
        Cross-entropy at the final step, averaged over sequences; or averaged over
        all (sequence, step) pairs.
    device : {"cpu", "cuda", "auto"}

    Returns
    -------
    dict
        - one array per parameter key, same shape and dtype: dL_e/dθ of network e;
          entries beyond the dtype's range are ±inf, never NaN;
        - ``loss`` (E,);
        - ``log_grad_norm`` (E, B, T+1) float64: ln‖dL_e/dh_t‖ per sequence, t = 0..T;
        - ``log_grad_norm_c`` (E, B, T+1) float64, lstm only: ln‖dL_e/dc_t‖, the total
          derivative through c_{t+1} and h_t;
        - ``log_grad_norm_params`` (E,) float64: ln of the global norm of all of
          network e's parameter gradients (finite even when entries overflow).

    Raises
    ------
    ValueError, TypeError
        For bad shapes, dtypes, names, sizes, targets, or non-finite values.
    RuntimeError
        ``device="cuda"`` without a usable GPU.

    Notes
    -----
    rnn: :math:`h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})`.
    lstm: :math:`c_t = f_t \odot c_{t-1} + i_t \odot g_t`, :math:`h_t = o_t \odot \tanh c_t`.
    BPTT keeps each adjoint as a unit vector times :math:`e^{s_t}`, with the
    log-scale :math:`s_t` in float64, so the profiles stay exact at any T
    (see :mod:`rnnsim.reference`).
    """
    problem, params, inputs, targets = check_problem(cell, params, inputs, targets, loss)
    return assemble(problem, _backend(resolve_device(device)).gradients(problem, params, inputs, targets))


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
