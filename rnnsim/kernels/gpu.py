"""Host driver for the numba.cuda kernels (placeholder until the GPU kernels land)."""


def unavailable_reason():
    """None when a GPU (or the CUDA simulator) is usable, else a one-line reason."""
    return "the GPU kernels are not implemented yet"
