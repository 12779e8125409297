"""The public engine: validated entry points that dispatch to the kernels."""
from __future__ import annotations

from ._validate import DEVICES, check_choice, check_problem
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
        A name from :func:`rnnsim.cells.names` ("rnn", "lstm").
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
