"""rnnsim: exact forward passes and log-domain BPTT for ensembles of RNNs, LSTMs and GRUs.

Public API
----------
gradients(cell, params, inputs, targets, *, loss="last", mask=None, clip=None, device="cpu")
forward(cell, params, inputs, *, device="cpu")
lyapunov(cell, params, inputs, *, k=1, qr_every=1, warmup=100, device="cpu")
init_params(cell, hidden_size, input_size, num_classes, ensemble=1, ...)
cells                the cell registry: cells.names(), cells.get(name)
reference            the NumPy float64 time loop over the cells' steps
theory, sweep, plot  mean-field theory, sweeps and figures (imported on first use)
train                training ensembles on the long-memory tasks (imported on first use)
"""
import importlib

__version__ = "0.1.0"

from . import cells, reference  # noqa: E402
from .engine import forward, gradients, lyapunov  # noqa: E402
from .init import init_params  # noqa: E402

__all__ = ["gradients", "forward", "lyapunov", "init_params", "cells", "reference", "theory", "sweep", "plot",
           "train", "__version__"]

_LAZY = ("theory", "sweep", "plot", "train")  # SciPy/matplotlib imports the core does not need


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'rnnsim' has no attribute {name!r}")
