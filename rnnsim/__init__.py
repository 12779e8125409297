"""rnnsim: exact forward passes and log-domain BPTT for ensembles of RNNs and LSTMs.

Public API
----------
gradients(cell, params, inputs, targets, *, loss="last", device="cpu")
forward(cell, params, inputs, *, device="cpu")
init_params(cell, hidden_size, input_size, num_classes, ensemble=1, ...)
reference            the NumPy float64 statement of the math
"""
__version__ = "0.1.0"

from . import reference  # noqa: E402
from .engine import forward, gradients  # noqa: E402
from .init import init_params  # noqa: E402

__all__ = ["gradients", "forward", "init_params", "reference", "__version__"]
