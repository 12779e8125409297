"""Split the suite between the two pytest processes that the test command runs.

The CUDA simulator must be chosen before numba is first imported, so it cannot
share a process with the CPU tests:

- ``pytest``                          runs everything except the ``cudasim`` (GPU
  kernel) tests, unless a real GPU is usable, in which case it runs them too;
- ``NUMBA_ENABLE_CUDASIM=1 pytest``   runs only the ``cudasim`` tests.

Deselected tests are reported as deselected, never as passed or skipped.
"""
import os

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _real_gpu():
    from rnnsim.kernels import gpu

    return gpu.unavailable_reason() is None


def pytest_collection_modifyitems(config, items):
    if not SIMULATOR and _real_gpu():
        return  # on a GPU machine the GPU tests run on the device, beside the rest
    keep, drop = [], []
    for item in items:
        wants_simulator = item.get_closest_marker("cudasim") is not None
        (keep if wants_simulator == SIMULATOR else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
