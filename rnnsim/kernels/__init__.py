"""Compute kernels.

``cpu_rnn``/``cpu_lstm`` hold the @njit kernels (each cell's forward next to its
backward) and ``cpu`` their host driver; ``gpu_rnn``/``gpu_lstm`` and ``gpu`` are
the numba.cuda twins. Every driver exposes ``gradients(problem, params, inputs,
targets)`` returning the raw log-domain results that ``rnnsim.logdomain.assemble``
turns into gradients, and ``forward(problem, params, inputs)``.
"""
