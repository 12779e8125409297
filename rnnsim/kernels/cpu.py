"""Host driver for the CPU kernels (placeholder: NumPy reference until the @njit kernels land)."""
from .. import reference


def gradients(problem, params, inputs, targets):
    return reference.raw_gradients(problem, params, inputs, targets)


def forward(problem, params, inputs):
    acts = reference.forward(problem.cell, params, inputs)
    out = {"h": acts["h"][:, :, 1:].astype(problem.dtype)}
    if problem.cell == "lstm":
        out["c"] = acts["c"][:, :, 1:].astype(problem.dtype)
    return out
