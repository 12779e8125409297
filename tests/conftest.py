"""Split the suite between the two pytest processes that the test command runs.

The CUDA simulator must be chosen before numba is first imported, so it cannot
share a process with the CPU tests:

- ``pytest``                          runs everything except the ``cudasim`` tests;
- ``NUMBA_ENABLE_CUDASIM=1 pytest``   runs only the ``cudasim`` tests.

Deselected tests are reported as deselected, never as passed or skipped.
"""
import os

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        wants_simulator = item.get_closest_marker("cudasim") is not None
        (keep if wants_simulator == SIMULATOR else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
