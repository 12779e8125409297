r"""Host driver of the numba.cuda kernels (same contract as :mod:`rnnsim.kernels.cpu`).

Per ensemble chunk the data go to the device once, then five launches run there:
the forward recurrence (one launch over all T steps), the output layer, the
log-domain backward recurrence (one launch), the per-network log-scale maximum
S* with the weights exp(s_bt - S*), and two weight-gradient GEMMs over (b, t).
The results come back once. Chunks are sized so that the activations of a chunk
fit in ``config.GPU_MEMORY_FRACTION`` of the free device memory.

numba.cuda is imported lazily (:mod:`rnnsim.kernels._cuda`): importing this module
needs neither a GPU nor the CUDA libraries.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .. import config
from . import _cuda, gpu_common, gpu_lstm, gpu_rnn

_CELL_MODULES = {"rnn": gpu_rnn, "lstm": gpu_lstm}
_DEFAULT_SHARED_LIMIT = 48 * 1024  # without the opt-in (and under the simulator)


# ----------------------------------------------------------------------------------
# availability
# ----------------------------------------------------------------------------------
def unavailable_reason():
    """None when a GPU (or the CUDA simulator) is usable, else a one-line reason."""
    try:
        cuda = _cuda.cuda()
    except ImportError as exc:
        return f"numba-cuda is not installed ({exc}); pip install 'rnnsim[cuda]'"
    try:
        if cuda.is_available():
            return None
    except Exception as exc:  # a broken driver install should read as "unavailable"
        return f"the CUDA driver could not be initialised ({type(exc).__name__}: {exc})"
    return ("no CUDA GPU or driver was found (set NUMBA_ENABLE_CUDASIM=1 before importing "
            "numba to use the CUDA simulator)")


def _require_gpu():
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"the GPU backend is not usable: {reason}")
    return _cuda.cuda()


# ----------------------------------------------------------------------------------
# private kernels: jitted once per (cell, dtype, tile, threads)
# ----------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _cell_kernels(cell, dtype_name, tile, threads):
    cuda = _cuda.cuda()
    funcs = _CELL_MODULES[cell].make_kernels(np.dtype(dtype_name), tile, threads)
    return {name: cuda.jit(fn) for name, fn in funcs.items()}


@lru_cache(maxsize=None)
def _common_kernels(threads):
    cuda = _cuda.cuda()
    return {name: cuda.jit(fn) for name, fn in gpu_common.make_common_kernels(threads).items()}


def _launch_config():
    """Threads per block and sequences per block, read at call time (tests patch them)."""
    threads = int(config.GPU_THREADS_PER_BLOCK)
    tile = int(config.GPU_SEQUENCES_PER_BLOCK)
    if not 1 <= threads <= 1024:
        raise ValueError(f"config.GPU_THREADS_PER_BLOCK must be in [1, 1024], got {threads}")
    if tile < 1:
        raise ValueError(f"config.GPU_SEQUENCES_PER_BLOCK must be at least 1, got {tile}")
    return threads, tile


def _shared_limit(cuda):
    """Bytes of shared memory one block may use (the opt-in limit on real hardware)."""
    override = config.GPU_MAX_SHARED_BYTES
    if override is not None:
        return int(override)
    if _cuda.is_simulator():
        return _DEFAULT_SHARED_LIMIT
    device = cuda.get_current_device()
    return int(getattr(device, "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN", _DEFAULT_SHARED_LIMIT))


def _plan_shared(cuda, problem, kernel, tile, threads, limit=None):
    """(dynamic bytes, W_hh in shared?) for ``kernel``; W_hh goes to L2 when it does not fit."""
    module = _CELL_MODULES[problem.cell]
    limit = _shared_limit(cuda) if limit is None else limit
    for w_in_shared in (True, False):
        dynamic, static = module.shared_bytes(kernel, problem.dtype, tile, threads, problem.H, w_in_shared)
        if dynamic + static <= limit:
            return dynamic, w_in_shared
    raise ValueError(f"{kernel} needs {dynamic + static} B of shared memory even with W_hh in "
                     f"global memory (H={problem.H}, {tile} sequences x {threads} threads per "
                     f"block) but a block may use {limit} B; lower config.GPU_SEQUENCES_PER_BLOCK")


def _allow_dynamic_shared(cuda, kernel, args, nbytes):
    """Opt in to more than 48 KB of dynamic shared memory (real hardware only).

    numba-cuda has no public API for it (numba-cuda issue 94); the driver call
    below is the recipe from ../shared/NOTES.md, checked on an H200.
    """
    if nbytes <= _DEFAULT_SHARED_LIMIT or _cuda.is_simulator():
        return
    from numba.cuda.cudadrv.driver import binding, driver

    argtypes = tuple(kernel.typeof_pyval(a) for a in args)
    cufunc = kernel.compile(argtypes)._codelibrary.get_cufunc()
    driver.cuKernelSetAttribute(
        binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        nbytes, cufunc.handle, cufunc.device.id)


def _launch_recurrence(cuda, problem, kernels, name, args_before_flag, tile, threads, n_nets):
    dynamic, w_in_shared = _plan_shared(cuda, problem, name, tile, threads)
    args = (*args_before_flag, w_in_shared)
    try:
        _allow_dynamic_shared(cuda, kernels[name], args, dynamic)
    except Exception as exc:  # an untested driver/binding combination: keep W_hh in L2
        import warnings

        warnings.warn(f"shared-memory opt-in failed ({type(exc).__name__}: {exc}); "
                      "reading W_hh from global memory", RuntimeWarning, stacklevel=2)
        dynamic, w_in_shared = _plan_shared(cuda, problem, name, tile, threads, _DEFAULT_SHARED_LIMIT)
        args = (*args_before_flag, w_in_shared)
    grid = (n_nets, -(-problem.B // tile))
    kernels[name][grid, threads, 0, dynamic](*args)


# ----------------------------------------------------------------------------------
# memory planning
# ----------------------------------------------------------------------------------
def _bytes_per_network(problem, with_gradients):
    """Device bytes that one network of the ensemble needs (activations + outputs)."""
    B, T, D, H, K, G = problem.B, problem.T, problem.D, problem.H, problem.K, problem.G
    item = problem.dtype.itemsize
    words = G * H * (D + 2 * H + 2) + K * (H + 1) + B * T * D  # params (W_hh twice) and inputs
    words += B * (T + 1) * H  # h
    if problem.cell == "lstm":
        words += B * (T + 1) * H + B * T * G * H  # c and the gates
    total = words * item
    if with_gradients:
        steps = T if problem.loss == "every" else 1
        total += item * (B * T * G * H + B * steps * K)  # da mantissas, dlogits
        total += 8 * (2 * B * T + 2 * B * (T + 1))  # da scales and weights, log profiles
        total += 8 * (G * H * (H + D + 1) + K * (H + 1) + 2 * B * steps + 1)  # gemm outputs, losses
    return total


def _networks_per_chunk(cuda, problem, with_gradients):
    per_network = _bytes_per_network(problem, with_gradients)
    budget = config.GPU_MEMORY_BUDGET_BYTES
    if budget is None:
        free = cuda.current_context().get_memory_info().free
        budget = float(config.GPU_MEMORY_FRACTION) * free
    if per_network > budget:
        raise ValueError(f"one network needs {per_network / 2**20:.1f} MiB of device memory "
                         f"(B={problem.B}, T={problem.T}, H={problem.H}, D={problem.D}, "
                         f"cell={problem.cell}) but only {budget / 2**20:.1f} MiB may be used; "
                         "use fewer sequences or shorter ones")
    return int(min(problem.E, budget // per_network)) if math.isfinite(budget) else problem.E


def _chunks(E, size):
    for start in range(0, E, size):
        yield slice(start, min(E, start + size))


# ----------------------------------------------------------------------------------
# private host driver
# ----------------------------------------------------------------------------------
def _params_to_device(cuda, params, nets):
    """The chunk's parameters on the device, plus W_hh transposed for the forward kernels."""
    d_params = {k: cuda.to_device(v[nets]) for k, v in params.items()}
    d_params["weight_hh_t"] = cuda.to_device(
        np.ascontiguousarray(params["weight_hh_l0"][nets].transpose(0, 2, 1)))
    return d_params


def _run_forward(cuda, problem, kernels, d_params, d_x, n_nets, tile, threads):
    """Forward recurrence of one chunk; returns the device activations."""
    B, T, H = problem.B, problem.T, problem.H
    acts = {"h": cuda.device_array((n_nets, B, T + 1, H), dtype=problem.dtype)}
    weights = (d_params["weight_ih_l0"], d_params["weight_hh_t"],
               d_params["bias_ih_l0"], d_params["bias_hh_l0"], d_x)
    if problem.cell == "rnn":
        _launch_recurrence(cuda, problem, kernels, "rnn_forward", (*weights, acts["h"]),
                           tile, threads, n_nets)
    else:
        acts["c"] = cuda.device_array((n_nets, B, T + 1, H), dtype=problem.dtype)
        acts["gates"] = cuda.device_array((n_nets, B, T, 4 * H), dtype=problem.dtype)
        _launch_recurrence(cuda, problem, kernels, "lstm_forward",
                           (*weights, acts["h"], acts["c"], acts["gates"]), tile, threads, n_nets)
    return acts


def _chunk_gradients(cuda, problem, params, inputs, targets, nets, tile, threads):
    """All raw results of the networks ``nets`` (a slice), copied back once."""
    n = nets.stop - nets.start
    B, T, H, K, G = problem.B, problem.T, problem.H, problem.K, problem.G
    every = problem.loss == "every"
    steps = T if every else 1
    h_offset = 1 if every else T  # output step j reads h_{j + h_offset}
    kernels = _cell_kernels(problem.cell, problem.dtype.name, tile, threads)
    common = _common_kernels(threads)
    d_params = _params_to_device(cuda, params, nets)
    d_x = cuda.to_device(inputs[nets])
    d_targets = cuda.to_device(np.ascontiguousarray(targets[nets].reshape(n, B, steps)))
    acts = _run_forward(cuda, problem, kernels, d_params, d_x, n, tile, threads)

    out_blocks = -(-(B * steps) // threads)
    dlogits = cuda.device_array((n, B, steps, K), dtype=problem.dtype)
    ce_partial = cuda.device_array((n, out_blocks), dtype=np.float64)
    common["output_layer"][(n, out_blocks), threads](
        d_params["weight_out"], d_params["bias_out"], acts["h"], h_offset, d_targets,
        1.0 / (B * steps), dlogits, ce_partial)

    da = cuda.device_array((n, B, T, G * H), dtype=problem.dtype)
    da_scale = cuda.device_array((n, B, T), dtype=np.float64)
    log_h = cuda.device_array((n, B, T + 1), dtype=np.float64)
    if problem.cell == "rnn":
        _launch_recurrence(cuda, problem, kernels, "rnn_backward",
                           (d_params["weight_hh_l0"], d_params["weight_out"], acts["h"], dlogits,
                            every, da, da_scale, log_h), tile, threads, n)
    else:
        log_c = cuda.device_array((n, B, T + 1), dtype=np.float64)
        _launch_recurrence(cuda, problem, kernels, "lstm_backward",
                           (d_params["weight_hh_l0"], d_params["weight_out"], acts["h"], acts["c"],
                            acts["gates"], dlogits, every, da, da_scale, log_h, log_c),
                           tile, threads, n)

    top = cuda.device_array(n, dtype=np.float64)
    row_weight = cuda.device_array((n, B, T), dtype=np.float64)
    common["scale_weights"][n, threads](da_scale, top, row_weight)

    gemm = common["weight_gradient_gemm"]
    block = (gpu_common.GEMM_THREADS, gpu_common.GEMM_THREADS)
    tiles = gpu_common.GEMM_TILE
    rec = cuda.device_array((n, G * H, H + problem.D + 1), dtype=np.float64)
    gemm[(n, -(-G * H // tiles), -(-(H + problem.D + 1) // tiles)), block](
        da, row_weight, True, acts["h"], 0, d_x, True, rec)
    outw = cuda.device_array((n, K, H + 1), dtype=np.float64)
    gemm[(n, -(-K // tiles), -(-(H + 1) // tiles)), block](
        dlogits, row_weight, False, acts["h"], h_offset, d_x, False, outw)

    rec_host = rec.copy_to_host()
    outw_host = outw.copy_to_host()
    D = problem.D
    result = {
        "weight_hh_l0": rec_host[:, :, :H],
        "weight_ih_l0": rec_host[:, :, H:H + D],
        "bias_ih_l0": rec_host[:, :, H + D],
        "bias_hh_l0": rec_host[:, :, H + D].copy(),
        "weight_out": outw_host[:, :, :H],
        "bias_out": outw_host[:, :, H],
        "log_scale": top.copy_to_host(),
        "loss": ce_partial.copy_to_host().sum(axis=1) / (B * steps),
        "log_grad_norm": log_h.copy_to_host(),
    }
    if problem.cell == "lstm":
        result["log_grad_norm_c"] = log_c.copy_to_host()
    return result


# ----------------------------------------------------------------------------------
# public entry points (called by rnnsim.engine with validated arguments)
# ----------------------------------------------------------------------------------
def gradients(problem, params, inputs, targets):
    r"""Raw log-domain results (the contract of ``rnnsim.reference.raw_gradients``).

    Parameters
    ----------
    problem : rnnsim._validate.Problem
    params, inputs, targets : validated arrays from ``rnnsim._validate.check_problem``

    Returns
    -------
    dict
        ``mantissas`` (the four recurrent gradients relative to ``exp(log_scale)``),
        ``log_scale`` (E,), ``weight_out``, ``bias_out``, ``loss`` (E,),
        ``log_grad_norm`` (E, B, T+1) and, for the lstm, ``log_grad_norm_c``.

    Notes
    -----
    The recurrent gradients are :math:`\sum_{b,t} e^{s_{bt} - S^*}\, \delta_{bt} \otimes
    (h_{t-1}, x_t, 1)` with :math:`S^* = \max_{b,t} s_{bt}` per network, accumulated
    in float64 on the device.
    """
    cuda = _require_gpu()
    threads, tile = _launch_config()
    size = _networks_per_chunk(cuda, problem, with_gradients=True)
    parts = [_chunk_gradients(cuda, problem, params, inputs, targets, nets, tile, threads)
             for nets in _chunks(problem.E, size)]
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    raw = {k: joined.pop(k) for k in ("weight_out", "bias_out", "log_scale", "loss",
                                      "log_grad_norm", "log_grad_norm_c") if k in joined}
    raw["mantissas"] = joined
    return raw


def forward(problem, params, inputs):
    """Hidden states ``h`` (E, B, T, H) and, for the lstm, ``c``, in the inputs' dtype."""
    cuda = _require_gpu()
    threads, tile = _launch_config()
    size = _networks_per_chunk(cuda, problem, with_gradients=False)
    kernels = _cell_kernels(problem.cell, problem.dtype.name, tile, threads)
    out = {k: np.empty((problem.E, problem.B, problem.T, problem.H), dtype=problem.dtype)
           for k in (("h", "c") if problem.cell == "lstm" else ("h",))}
    for nets in _chunks(problem.E, size):
        d_params = _params_to_device(cuda, params, nets)
        acts = _run_forward(cuda, problem, kernels, d_params, cuda.to_device(inputs[nets]),
                            nets.stop - nets.start, tile, threads)
        for k in out:
            out[k][nets] = acts[k].copy_to_host()[:, :, 1:]
    return out
