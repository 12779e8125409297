r"""Host driver of the numba.cuda kernels (same contract as :mod:`rnnsim.kernels.cpu`).

Per ensemble chunk the data go to the device once, then five launches run there:
the forward recurrence (one launch over all T steps), the output layer, the
log-domain backward recurrence (one launch), the per-network log-scale maximum
S* with the weights exp(s_bt - S*), and two weight-gradient GEMMs over (b, t), plus
a third for a cell whose biases do not fold (the gru): its backward writes the
input-side rows, which give dW_ih and db_ih, and beside them the recurrent-side rows
that differ (``recurrent_only_rows``), which replace those rows of dW_hh and db_hh.
The results come back once. Chunks are sized so that the activations of a chunk
fit in ``config.GPU_MEMORY_FRACTION`` of the free device memory.

The driver knows no cell by name: the cell's kernel module,
``rnnsim.cells.get(cell).kernels("gpu")`` (a ``gpu_<cell>`` module), builds its
kernels, sizes their shared memory, lists its activations and assembles their
arguments, behind the same function names in every module. Every launch is planned
by :mod:`rnnsim.kernels.gpu_launch` from the compiled kernel's own figures, and an
impossible one is refused with a ``ValueError`` before it is compiled or launched.

numba.cuda is imported lazily (:mod:`rnnsim.kernels._cuda`): importing this module
needs neither a GPU nor the CUDA libraries.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import replace
from functools import lru_cache

import numpy as np

from .. import cells, config
from ..logdomain import log_weight_cutoff
from . import _cuda, gpu_common, gpu_launch


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
def _cell_module(cell):
    return cells.get(cell).kernels("gpu")


def _jit(cuda, fn, threads):
    """cuda.jit with launch bounds: ptxas then keeps registers x threads within a block's
    65,536 (the simulator takes no launch bounds)."""
    if _cuda.is_simulator():
        return cuda.jit(fn)
    return cuda.jit(fn, launch_bounds=threads)


@lru_cache(maxsize=None)
def _cell_kernels(cell, dtype_name, tile, threads):
    cuda = _cuda.cuda()
    funcs = _cell_module(cell).make_kernels(np.dtype(dtype_name), tile, threads)
    return {role: _jit(cuda, fn, threads) for role, fn in funcs.items()}


@lru_cache(maxsize=None)
def _common_kernels(threads):
    cuda = _cuda.cuda()
    funcs = gpu_common.make_common_kernels(threads)
    return {name: _jit(cuda, fn, gpu_common.block_threads(name, threads)) for name, fn in funcs.items()}


def _launch_config():
    """Threads per block and sequences per block, read at call time (tests patch them)."""
    return gpu_launch.check_config(int(config.GPU_THREADS_PER_BLOCK), int(config.GPU_SEQUENCES_PER_BLOCK))


def _limits(cuda):
    """What one block and one grid may use on the current device (or the simulator)."""
    if _cuda.is_simulator():
        return gpu_launch.SIMULATOR
    return gpu_launch.Limits.of_device(cuda.get_current_device())


# ----------------------------------------------------------------------------------
# launches
# ----------------------------------------------------------------------------------
def _compiled(kernel, args, declared_static, limits):
    """(figures, compiled kernel) for these arguments; compiles on first use. Under the
    simulator nothing is compiled: the declared static size stands in."""
    if _cuda.is_simulator():
        return gpu_launch.Figures(static_shared=declared_static, registers=0,
                                  max_threads=limits.threads_per_block, source="declared (simulator)"), None
    compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
    return gpu_launch.device_figures(compiled), compiled


def _allow_dynamic_shared(compiled, nbytes):
    """Raise the kernel's dynamic shared-memory limit to ``nbytes`` (above 48 KB minus its
    static size). numba-cuda has no public API for it (numba-cuda issue 94); this driver
    call was checked on an H200."""
    from numba.cuda.cudadrv.driver import binding, driver

    cufunc = compiled._codelibrary.get_cufunc()
    driver.cuKernelSetAttribute(
        binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        nbytes, cufunc.handle, cufunc.device.id)


def _launch_recurrence(cuda, problem, role, args_before_flag, tile, threads, n_nets, limits):
    """Plan (tile, shared memory, registers, grid), compile, opt in if needed, launch.

    ``tile`` is the configured number of sequences per block; where its block cannot fit
    the device's shared memory even with W_hh in global memory (large H, float64), the
    largest smaller tile that fits is launched instead (:func:`gpu_launch.fitting_tile`).
    """
    module = _cell_module(problem.cell)
    label = f"the {problem.cell} {role} kernel ({problem.dtype.name})"
    capped = limits.with_shared_cap(config.GPU_MAX_SHARED_BYTES)
    tile = gpu_launch.fitting_tile(module, role, problem.dtype, tile, threads, problem.H, capped)
    kernel = _cell_kernels(problem.cell, problem.dtype.name, tile, threads)[role]
    grid = gpu_launch.recurrence_grid(n_nets, problem.B, tile, limits)

    def plan(static):
        return gpu_launch.recurrence_plan(module, role, problem.dtype, tile, threads, problem.H, static,
                                          capped, label)

    # before compiling: everything the kernels keep in shared memory is dynamic
    shared = plan(0)
    figures, compiled = _compiled(kernel, (*args_before_flag, shared.w_in_shared), 0, capped)
    gpu_launch.check_figures(label, figures, threads, capped)
    shared = plan(figures.static_shared)
    try:
        if shared.opt_in:
            _allow_dynamic_shared(compiled, shared.dynamic)
        kernel[grid, threads, 0, shared.dynamic](*args_before_flag, shared.w_in_shared)
        return shared
    except Exception as exc:
        if not shared.opt_in:
            raise
        cause = f"{type(exc).__name__}: {exc}"
    # the opt-in or the launch with it failed (an untested driver/binding combination):
    # plan again within 48 KB (W_hh in global memory, a smaller tile where needed)
    warnings.warn(f"{label}: the shared-memory opt-in failed ({cause}); planning within "
                  f"{limits.shared_per_block:,} B", RuntimeWarning, stacklevel=3)
    return _launch_recurrence(cuda, problem, role, args_before_flag, tile, threads, n_nets,
                              replace(limits, opt_in=False))


def _launch_common(kernel, name, grid, block, args, threads, limits):
    """Check a common kernel's own figures (static shared memory, registers), then launch;
    ``threads`` is the block size of the other kernels (the factory's constant)."""
    figures, _ = _compiled(kernel, args, gpu_common.common_static_bytes(name, threads), limits)
    gpu_launch.check_figures(f"the {name} kernel", figures, gpu_common.block_threads(name, threads), limits)
    gpu_launch.plan_shared(f"the {name} kernel", lambda w_in_shared: 0, figures.static_shared, limits)
    kernel[grid, block](*args)


# ----------------------------------------------------------------------------------
# memory planning
# ----------------------------------------------------------------------------------
def _bytes_per_network(problem, with_gradients, injected=False):
    """Device bytes that one network of the ensemble needs (activations + outputs);
    ``injected``: the per-step adjoints (B, T, H) of a loss computed on the host
    take the place of the logits' gradient."""
    B, T, D, H, K, G = problem.B, problem.T, problem.D, problem.H, problem.K, problem.G
    item = problem.dtype.itemsize
    words = G * H * (D + 2 * H + 2) + K * (H + 1) + B * T * D  # params (W_hh twice) and inputs
    module = _cell_module(problem.cell)
    words += sum(math.prod(shape) for shape in module.activation_shapes(B, T, H).values())
    total = words * item
    if with_gradients:
        steps = T if problem.loss == "every" else 1
        profiles = len(cells.get(problem.cell).state)
        hh_rows = _rows_count(module.recurrent_only_rows(H))
        adjoints = B * T * H if injected else B * steps * K
        total += item * (B * T * (G * H + hh_rows) + adjoints)  # da of both sides, dlogits or adjoints
        total += 8 * (2 * B * T + profiles * B * (T + 1))  # da scales and weights, log profiles
        total += 8 * (G * H * (H + D + 1) + (hh_rows + K) * (H + 1) + 2 * B * steps + 1)  # gemms, losses
    return total


def _networks_per_chunk(cuda, problem, with_gradients, limits, injected=False):
    per_network = _bytes_per_network(problem, with_gradients, injected)
    budget = config.GPU_MEMORY_BUDGET_BYTES
    if budget is None:
        free = cuda.current_context().get_memory_info().free
        budget = float(config.GPU_MEMORY_FRACTION) * free
    if per_network > budget:
        raise ValueError(f"one network needs {per_network / 2**20:.1f} MiB of device memory "
                         f"(B={problem.B}, T={problem.T}, H={problem.H}, D={problem.D}, "
                         f"cell={problem.cell}) but only {budget / 2**20:.1f} MiB may be used; "
                         "use fewer sequences or shorter ones")
    size = int(min(problem.E, budget // per_network)) if math.isfinite(budget) else problem.E
    return min(size, gpu_launch.networks_per_launch(limits))


def _rows_count(rows):
    """The number of rows in a ``recurrent_only_rows`` slice."""
    return rows.stop - rows.start


def _chunks(E, size):
    for start in range(0, E, size):
        yield slice(start, min(E, start + size))


# ----------------------------------------------------------------------------------
# private host driver
# ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _stage(cuda, name):
    """Add the seconds of this stage to ``config.GPU_STAGE_SECONDS[name]`` when that is a
    dict, synchronising the device before and after; nothing otherwise."""
    seconds = config.GPU_STAGE_SECONDS
    if seconds is None:
        yield
        return
    cuda.synchronize()
    start = time.perf_counter()
    yield
    cuda.synchronize()
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def _params_to_device(cuda, params, nets):
    """The chunk's parameters on the device, plus W_hh transposed for the forward kernels."""
    d_params = {k: cuda.to_device(v[nets]) for k, v in params.items()}
    d_params["weight_hh_t"] = cuda.to_device(
        np.ascontiguousarray(params["weight_hh_l0"][nets].transpose(0, 2, 1)))
    return d_params


def _run_forward(cuda, problem, d_params, d_x, n_nets, tile, threads, limits):
    """Forward recurrence of one chunk; returns the device activations by name."""
    module = _cell_module(problem.cell)
    acts = {name: cuda.device_array((n_nets, *shape), dtype=problem.dtype)
            for name, shape in module.activation_shapes(problem.B, problem.T, problem.H).items()}
    with _stage(cuda, "forward kernel"):
        _launch_recurrence(cuda, problem, "forward", module.forward_args(d_params, d_x, acts),
                           tile, threads, n_nets, limits)
    return acts


def _chunk_gradients(cuda, problem, params, inputs, targets, nets, tile, threads, limits, adjoints=None):
    """All raw results of the networks ``nets`` (a slice), copied back once; with
    ``adjoints`` (E, B, T+1, H) the backward injects them (see :func:`gradients`)."""
    n = nets.stop - nets.start
    B, T, H, D, K, G = problem.B, problem.T, problem.H, problem.D, problem.K, problem.G
    cell = cells.get(problem.cell)
    module = _cell_module(problem.cell)
    injected = adjoints is not None
    every = injected or problem.loss == "every"
    steps = T if every else 1
    h_offset = 1 if every else T  # output step j reads h_{j + h_offset}
    hh_rows = module.recurrent_only_rows(H)  # empty where the biases fold
    grids = gpu_launch.common_grids(n, B, steps, H, D, G * H, K, threads, limits, _rows_count(hh_rows))
    common = _common_kernels(threads)
    with _stage(cuda, "to device"):
        d_params = _params_to_device(cuda, params, nets)
        d_x = cuda.to_device(inputs[nets])
        if injected:
            # dL/dh_1..dL/dh_T in place of the logits' gradient, and a readout with no rows
            # (K = 0), which tells the backward's local_term to read them as they are
            dlogits = cuda.to_device(np.ascontiguousarray(adjoints[nets, :, 1:], dtype=problem.dtype))
            d_readout = dict(d_params, weight_out=cuda.device_array((n, 0, H), dtype=problem.dtype))
        else:
            d_targets = cuda.to_device(np.ascontiguousarray(targets[nets].reshape(n, B, steps)))
    acts = _run_forward(cuda, problem, d_params, d_x, n, tile, threads, limits)

    if not injected:
        d_readout = d_params
        dlogits = cuda.device_array((n, B, steps, K), dtype=problem.dtype)
        ce_partial = cuda.device_array((n, grids.output_layer[0]), dtype=np.float64)
        with _stage(cuda, "output layer"):
            _launch_common(common["output_layer"], "output_layer", grids.output_layer, threads,
                           (d_params["weight_out"], d_params["bias_out"], acts["h"], h_offset, d_targets,
                            1.0 / (B * steps), dlogits, ce_partial), threads, limits)

    da = cuda.device_array((n, B, T, G * H), dtype=problem.dtype)  # the input-side rows
    da_hh = (cuda.device_array((n, B, T, _rows_count(hh_rows)), dtype=problem.dtype)
             if _rows_count(hh_rows) else None)  # the recurrent-side rows that differ
    da_scale = cuda.device_array((n, B, T), dtype=np.float64)
    profiles = {state: cuda.device_array((n, B, T + 1), dtype=np.float64) for state in cell.state}
    with _stage(cuda, "backward kernel"):
        args = module.backward_args(d_readout, acts, dlogits, every, da, da_hh, da_scale, profiles)
        _launch_recurrence(cuda, problem, "backward", args, tile, threads, n, limits)

    top = cuda.device_array(n, dtype=np.float64)
    row_weight = cuda.device_array((n, B, T), dtype=np.float64)
    with _stage(cuda, "scale weights"):
        _launch_common(common["scale_weights"], "scale_weights", grids.scale_weights, threads,
                       (da_scale, log_weight_cutoff(problem.dtype), top, row_weight), threads, limits)

    def gemm(grid, *args):
        block = (gpu_common.GEMM_THREADS, gpu_common.GEMM_THREADS)
        _launch_common(common["weight_gradient_gemm"], "weight_gradient_gemm", grid, block, args, threads,
                       limits)

    rec = cuda.device_array((n, G * H, H + D + 1), dtype=np.float64)
    with _stage(cuda, "weight-gradient GEMMs"):
        gemm(grids.gemm_recurrent, da, row_weight, True, acts["h"], 0, d_x, True, rec)
        if da_hh is not None:  # (h_{t-1}, 1) columns only: these rows belong to W_hh and b_hh
            rec_hh = cuda.device_array((n, _rows_count(hh_rows), H + 1), dtype=np.float64)
            gemm(grids.gemm_recurrent_hh, da_hh, row_weight, True, acts["h"], 0, d_x, False, rec_hh)
        if not injected:
            outw = cuda.device_array((n, K, H + 1), dtype=np.float64)
            gemm(grids.gemm_output, dlogits, row_weight, False, acts["h"], h_offset, d_x, False, outw)
    with _stage(cuda, "to host"):
        # h_T of every sequence, gathered on the device: the states' whole copy would be
        # (T + 1) times larger (it was most of a call's time on an H200)
        h_last = cuda.device_array((n, B, H), dtype=problem.dtype)
        h_last[:] = acts["h"][:, :, T]
        rec_host = rec.copy_to_host()
        result = {
            "weight_hh_l0": rec_host[:, :, :H],
            "weight_ih_l0": rec_host[:, :, H:H + D],
            "bias_ih_l0": rec_host[:, :, H + D],
            "log_scale": top.copy_to_host(),
        }
        if not injected:
            outw_host = outw.copy_to_host()
            result.update(weight_out=outw_host[:, :, :H], bias_out=outw_host[:, :, H],
                          loss=ce_partial.copy_to_host().sum(axis=1) / (B * steps))
        if not cell.folded_bias:  # else bias_hh_l0 is left to rnnsim.logdomain.tie_biases (identity 4)
            result["bias_hh_l0"] = rec_host[:, :, H + D].copy()
        if da_hh is not None:  # the rows whose recurrent-side adjoints differ
            hh_host = rec_hh.copy_to_host()
            result["weight_hh_l0"] = rec_host[:, :, :H].copy()
            result["weight_hh_l0"][:, hh_rows] = hh_host[:, :, :H]
            result["bias_hh_l0"][:, hh_rows] = hh_host[:, :, H]
        for state, key in cell.profile_keys().items():
            result[key] = profiles[state].copy_to_host()
        result["h_last"] = h_last.copy_to_host()
    return result


# ----------------------------------------------------------------------------------
# public entry points (called by rnnsim.engine with validated arguments)
# ----------------------------------------------------------------------------------
def gradients(problem, params, inputs, targets, adjoints=None):
    r"""Raw log-domain results (the contract of ``rnnsim.reference.raw_gradients``).

    Parameters
    ----------
    problem : rnnsim._validate.Problem
    params, inputs, targets : validated arrays from ``rnnsim._validate.check_problem``
    adjoints : (E, B, T+1, H) array in the problem's dtype, or None
        Per-step dL/dh_t of a loss computed on the host (:mod:`rnnsim.losses`): the
        backward injects them instead of the fused cross-entropy's, no output-layer
        kernels run, and ``loss``, ``weight_out``, ``bias_out`` are left out.

    Returns
    -------
    dict
        ``mantissas`` (the recurrent gradients relative to ``exp(log_scale)``; for a
        cell whose biases fold the ``bias_hh_l0`` copy is added by
        ``rnnsim.logdomain.assemble``, otherwise it is here),
        ``log_scale`` (E,), ``weight_out``, ``bias_out``, ``loss`` (E,) and one
        (E, B, T+1) log-norm profile per state component (``log_grad_norm``, and
        ``log_grad_norm_c`` for the lstm).

    Notes
    -----
    The recurrent gradients are :math:`\sum_{b,t} e^{s_{bt} - S^*}\, \delta_{bt} \otimes
    (h_{t-1}, x_t, 1)` with :math:`S^* = \max_{b,t} s_{bt}` per network (identity 2 of
    :mod:`rnnsim.logdomain`, with its cutoff), accumulated in float64 on the device;
    where the biases do not fold, :math:`\delta_{bt}` is the input-side row for the
    (x_t, 1) columns of W_ih and b_ih, and the recurrent-side row for the (h_{t-1}, 1)
    columns of W_hh and b_hh.
    """
    cuda = _require_gpu()
    threads, tile = _launch_config()
    limits = _limits(cuda)
    size = _networks_per_chunk(cuda, problem, True, limits, adjoints is not None)
    parts = [_chunk_gradients(cuda, problem, params, inputs, targets, nets, tile, threads, limits, adjoints)
             for nets in _chunks(problem.E, size)]
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    plain = ("weight_out", "bias_out", "log_scale", "loss", "h_last",
             *cells.get(problem.cell).profile_keys().values())
    raw = {k: joined.pop(k) for k in plain if k in joined}
    raw["mantissas"] = joined
    return raw


def forward(problem, params, inputs):
    """Every state component (``h`` and, for the lstm, ``c``), (E, B, T, H) in the inputs' dtype."""
    cuda = _require_gpu()
    threads, tile = _launch_config()
    limits = _limits(cuda)
    size = _networks_per_chunk(cuda, problem, False, limits)
    # the device's states hold h_0 too: they are copied whole into these, then viewed
    # without it (a second host copy of every state would cost as much as the transfer)
    states = {k: np.empty((problem.E, problem.B, problem.T + 1, problem.H), dtype=problem.dtype)
              for k in cells.get(problem.cell).state}
    for nets in _chunks(problem.E, size):
        with _stage(cuda, "to device"):
            d_params = _params_to_device(cuda, params, nets)
            d_x = cuda.to_device(inputs[nets])
        acts = _run_forward(cuda, problem, d_params, d_x, nets.stop - nets.start, tile, threads, limits)
        with _stage(cuda, "to host"):
            for k in states:
                acts[k].copy_to_host(states[k][nets])
    return {k: v[:, :, 1:] for k, v in states.items()}
