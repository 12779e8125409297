"""Device buffers of the GPU driver, kept from one call to the next of the same sizes.

On an H200, allocating and freeing the gigabytes of activations and adjoints that one
``rnnsim.gradients`` call needs (cuMemAlloc, cuMemFree) took longer than its kernels:
40 to 170 ms of a 100 to 450 ms call at E=64, B=32, H=128, T=512. A sweep or a training
loop calls again and again with the same sizes, so :mod:`rnnsim.kernels.gpu` takes its
buffers from the calling thread's :class:`Workspace`, which keeps them while the sizes
stay the same (``config.GPU_REUSE_BUFFERS``), and frees them when they change, before
the next call plans its memory. Each thread has its own workspace, so concurrent calls
never share a buffer; :func:`release` gives the memory back.

Every kernel writes each buffer before it reads it, so reused memory needs no clearing.
"""
from __future__ import annotations

import threading

import numpy as np

from .. import config


class Workspace(threading.local):
    """The buffers of this thread's last call, by name."""

    def __init__(self):
        self.key = None
        self.networks_per_chunk = None
        self.buffers = {}

    def begin(self, key):
        """Start a call whose sizes and options are ``key`` (hashable): the buffers of the
        last call are kept if it had the same key, else freed. Returns the networks per
        chunk that the last call with this key planned, or None (plan afresh)."""
        reuse = bool(config.GPU_REUSE_BUFFERS)
        if not reuse or key != self.key:
            self.release()
            self.key = key if reuse else None
        return self.networks_per_chunk

    def planned(self, networks_per_chunk):
        if self.key is not None:
            self.networks_per_chunk = networks_per_chunk

    def release(self):
        had_buffers = bool(self.buffers)
        self.key, self.networks_per_chunk, self.buffers = None, None, {}
        if had_buffers:
            _flush_deallocations()

    def empty(self, cuda, name, shape, dtype):
        """An uninitialised device array ``shape`` of ``dtype``: the kept buffer ``name``
        (its first rows, for the smaller last chunk of an ensemble) where it fits."""
        shape = tuple(int(n) for n in shape)
        dtype = np.dtype(dtype)
        buf = self.buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            buf = cuda.device_array(shape, dtype=dtype)
            if self.key is not None:
                self.buffers[name] = buf
        return buf if buf.shape[0] == shape[0] else buf[:shape[0]]

    def upload(self, cuda, name, host):
        """``host`` copied into the buffer ``name`` (see :meth:`empty`)."""
        host = np.ascontiguousarray(host)
        buf = self.empty(cuda, name, host.shape, host.dtype)
        buf.copy_to_device(host)
        return buf


_workspace = Workspace()


def workspace():
    """The calling thread's :class:`Workspace`."""
    return _workspace


def release():
    """Free the device buffers that the calling thread's last GPU call kept."""
    _workspace.release()


def _flush_deallocations():
    """Hand freed buffers back to the driver now, so that the next plan sees the memory
    free (numba defers deallocations and flushes them in batches)."""
    from . import _cuda

    if _cuda.is_simulator():
        return
    try:
        _cuda.cuda().current_context().deallocations.clear()
    except Exception:  # an internal numba API: without it the memory returns later
        pass
