"""Compute kernels: one module per cell and backend, forward above backward.

``cpu_<cell>`` holds a cell's @njit kernels and ``gpu_<cell>`` their numba.cuda
twin; :class:`rnnsim.cells.Cell` names both (``cpu_kernels``, ``gpu_kernels``).
``cpu`` and ``gpu`` are the host drivers; neither knows a cell by name. Every
driver exposes ``gradients(problem, params, inputs, targets)`` returning the raw
log-domain results that ``rnnsim.logdomain.assemble`` turns into gradients, and
``forward(problem, params, inputs)``.
"""
