"""The one place that imports numba.cuda.

Importing rnnsim never needs a GPU or the CUDA libraries: everything that touches
numba.cuda calls :func:`cuda` at run time. The NumPy shim lives here because
numba-cuda 0.30.4 registers an overload for ``np.row_stack``, which NumPy 2.5
removed; without it every first kernel compile fails with
``module 'numpy' has no attribute 'row_stack'`` (seen on the GPU machine).
"""
from __future__ import annotations

import numpy as np


def cuda():
    """Return ``numba.cuda`` after applying the ``np.row_stack`` shim (idempotent)."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack  # same function; only the old name is missing
    from numba import cuda as numba_cuda

    return numba_cuda


def is_simulator() -> bool:
    """True when ``NUMBA_ENABLE_CUDASIM=1`` was set before numba was imported."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)
