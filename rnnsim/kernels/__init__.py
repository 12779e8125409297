"""Compute kernels: one module per cell and backend, forward above backward.

``cpu_<cell>`` holds a cell's @njit kernels and ``gpu_<cell>`` their numba.cuda
twin; :class:`rnnsim.cells.Cell` names both (``cpu_kernels``, ``gpu_kernels``).
``cpu_common``, ``cpu_matmul`` (the products), ``cpu_readout`` (the loss) and
``gpu_common``/``gpu_recurrence`` hold the pieces every cell's kernels share,
``gpu_launch`` plans every launch from the compiled kernel's own resource figures,
and ``cpu`` and ``gpu`` are the host drivers; neither knows a cell by name. Every
driver exposes ``gradients(problem, params, inputs, targets)`` returning the raw
log-domain results that ``rnnsim.logdomain.assemble`` turns into gradients, and
``forward(problem, params, inputs)``.
"""
