r"""Launch planning of the numba.cuda kernels: device limits, compiled resource figures, plans.

Every launch of :mod:`rnnsim.kernels.gpu` is planned here before it happens, and an
impossible one is refused with one line (``ValueError``) naming the problem:

* **launch configuration** (:func:`check_config`): threads per block and sequences
  per block (the tile) within the ranges that are compiled and tested;
* **shared memory** (:func:`plan_shared`): static + dynamic bytes within the device's
  opt-in limit (232,448 B on sm_90), with W_hh in shared memory when it fits and in
  global memory otherwise. The opt-in (``CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES``)
  is needed whenever static + dynamic exceeds 48 KB (49,152 B), since the driver's
  limit on dynamic memory without it is 48 KB minus the static size;
* **registers and static shared memory** (:func:`check_figures`), from the compiled
  kernel's own figures (:class:`Figures`): registers per block, with the allocation
  granularity of the hardware, within 65,536, and static shared memory within 48 KB;
* **grid extents** (:func:`recurrence_grid`, :func:`common_grids`): x <= 2^31 - 1,
  y, z <= 65,535. The long axes (tiles of sequences, pairs of sequence and step, GEMM
  row tiles) lie along x and the networks along y or z, in chunks of at most 65,535
  (:func:`networks_per_launch`), so every problem that fits in memory launches.

Where the figures come from
---------------------------
On a GPU, from the dispatcher: ``get_regs_per_thread``, ``get_shared_mem_per_block``,
``get_max_threads_per_block``, ``get_local_mem_per_thread`` (:func:`device_figures`).
Without a GPU, from an sm_90 link (:func:`link_figures`), which works with numba-cuda
0.30.4 and its cu13 extra and no driver: ``cuda.compile_ptx(..., cc=(9, 0))`` gives
PTX, and nvJitLink (``cuda.bindings.nvjitlink``, options ``-arch=sm_90 -verbose``)
links it and writes ptxas-style lines into its info log::

    info    : used 250 registers, used 1 barriers, 0 stack, 43264 bytes smem, ... 0 bytes lmem

The ``smem`` figure there is the static size *plus* the 1,024 B per block that sm_80
and later reserve for the system (a kernel without shared arrays reports 1024), so
:func:`link_figures` subtracts ``Limits.reserved_shared``. The limits themselves
(48 KB, 232,448 B) are on the user's bytes, excluding that reserve; ptxas refuses a
kernel whose static size alone exceeds 0xc000 bytes. Under the CUDA simulator nothing
is compiled and nothing is limited: the plan uses the declared static sizes and skips
the register check.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from types import SimpleNamespace

import numpy as np

WARP = 32
MAX_TILE = 16  # sequences per block: the largest tile compiled and tested (local arrays of 4*tile)


@dataclass(frozen=True)
class Limits:
    """What the device allows one block and one grid (defaults: sm_90, H100 and H200)."""

    shared_per_block: int = 48 * 1024  # static + dynamic without the opt-in
    shared_optin: int = 232_448        # static + dynamic with the opt-in (227 KB)
    static_shared: int = 48 * 1024     # static alone, whatever the opt-in
    reserved_shared: int = 1024        # per block, for the system (not in the limits above)
    registers_per_block: int = 65_536
    register_unit: int = 256           # registers are allocated per warp in units of 256
    threads_per_block: int = 1024
    grid: tuple = (2**31 - 1, 65_535, 65_535)
    opt_in: bool = True                # False under the simulator, or after a failed opt-in
    name: str = "sm_90 (H100/H200)"

    @classmethod
    def of_device(cls, device):
        """The limits that a numba.cuda ``Device`` reports (sm_90 defaults where it does not)."""
        base = cls()

        def attr(name, default):
            try:
                return int(getattr(device, name))
            except Exception:  # an attribute this driver/binding does not expose
                return default

        cc = getattr(device, "compute_capability", None)
        return cls(
            shared_per_block=attr("MAX_SHARED_MEMORY_PER_BLOCK", base.shared_per_block),
            shared_optin=attr("MAX_SHARED_MEMORY_PER_BLOCK_OPTIN", base.shared_optin),
            reserved_shared=attr("RESERVED_SHARED_MEMORY_PER_BLOCK", base.reserved_shared),
            registers_per_block=attr("MAX_REGISTERS_PER_BLOCK", base.registers_per_block),
            threads_per_block=attr("MAX_THREADS_PER_BLOCK", base.threads_per_block),
            grid=(attr("MAX_GRID_DIM_X", base.grid[0]), attr("MAX_GRID_DIM_Y", base.grid[1]),
                  attr("MAX_GRID_DIM_Z", base.grid[2])),
            name=f"sm_{cc[0]}{cc[1]}" if cc else "the current device")

    def with_shared_cap(self, cap):
        """These limits with no block using more than ``cap`` bytes (config.GPU_MAX_SHARED_BYTES)."""
        if cap is None:
            return self
        cap = int(cap)
        return replace(self, shared_optin=min(self.shared_optin, cap),
                       shared_per_block=min(self.shared_per_block, cap))


SM90 = Limits()
SIMULATOR = Limits(opt_in=False, name="the CUDA simulator")


@dataclass(frozen=True)
class Figures:
    """Resources of one compiled kernel."""

    static_shared: int   # bytes of static shared memory, without the system reserve
    registers: int       # per thread; 0 = unknown (the simulator)
    max_threads: int     # the most threads per block it can launch with
    local_bytes: int = 0  # local memory per thread (stack and spills)
    source: str = ""     # "device", "sm_90 link" or "declared (simulator)"


def block_registers(registers, threads, limits=SM90):
    """Registers one block of ``threads`` holds: per warp, registers x 32 rounded up to
    the allocation unit (256), times the warps of the block."""
    per_warp = -(-registers * WARP // limits.register_unit) * limits.register_unit
    return -(-threads // WARP) * per_warp


def max_threads_for(registers, limits=SM90, launch_bound=None):
    """The most threads per block (a multiple of 32) whose registers fit in one block."""
    if registers <= 0:
        return limits.threads_per_block
    per_warp = block_registers(registers, WARP, limits)
    most = min(limits.threads_per_block, (limits.registers_per_block // per_warp) * WARP)
    return most if launch_bound is None else min(most, launch_bound)


def _fmt(nbytes):
    return f"{nbytes:,} B"


def check_config(threads, tile, limits=SM90):
    """Threads and sequences per block, before anything is compiled; ValueError otherwise."""
    if not 1 <= threads <= limits.threads_per_block:
        raise ValueError(f"config.GPU_THREADS_PER_BLOCK must be in [1, {limits.threads_per_block}], "
                         f"got {threads}")
    if not 1 <= tile <= MAX_TILE:
        raise ValueError(f"config.GPU_SEQUENCES_PER_BLOCK must be in [1, {MAX_TILE}], got {tile}")
    return threads, tile


def check_figures(label, figures, threads, limits=SM90):
    """Refuse a compiled kernel that cannot launch with ``threads`` per block."""
    if figures.static_shared > limits.static_shared:
        raise ValueError(f"{label} declares {_fmt(figures.static_shared)} of static shared memory, above "
                         f"the {_fmt(limits.static_shared)} that {limits.name} allows; lower "
                         "config.GPU_THREADS_PER_BLOCK or config.GPU_SEQUENCES_PER_BLOCK")
    if figures.registers > 0:
        need = block_registers(figures.registers, threads, limits)
        if need > limits.registers_per_block or threads > figures.max_threads:
            raise ValueError(f"{label} uses {figures.registers} registers per thread: {need:,} per block "
                             f"of {threads} threads, above the {limits.registers_per_block:,} of "
                             f"{limits.name}; lower config.GPU_THREADS_PER_BLOCK to at most "
                             f"{max_threads_for(figures.registers, limits)}")
    return figures


@dataclass(frozen=True)
class SharedPlan:
    """Shared memory of one launch."""

    static: int
    dynamic: int
    w_in_shared: bool
    opt_in: bool  # static + dynamic > 48 KB: raise the kernel's dynamic limit before launching

    @property
    def total(self):
        return self.static + self.dynamic


def plan_shared(label, dynamic_bytes, static, limits=SM90, *, smaller_tile=None):
    """W_hh in shared memory when the block's total fits, else in global memory.

    Parameters
    ----------
    label : str, names the kernel and its configuration in the refusal
    dynamic_bytes : callable ``w_in_shared -> bytes``
    static : int, the kernel's static shared bytes
    smaller_tile : optional callable ``limit -> largest tile that would fit, or 0``,
        for the hint of the refusal
    """
    limit = limits.shared_optin if limits.opt_in else limits.shared_per_block
    for w_in_shared in (True, False):
        total = static + dynamic_bytes(w_in_shared)
        if total <= limit:
            return SharedPlan(static, total - static, w_in_shared, total > limits.shared_per_block)
    hint = ("lower config.GPU_SEQUENCES_PER_BLOCK or config.GPU_THREADS_PER_BLOCK, or use "
            "device='cpu'")
    tile = smaller_tile(limit) if smaller_tile is not None else 0
    if tile:
        hint = f"lower config.GPU_SEQUENCES_PER_BLOCK to {tile} or less"
    raise ValueError(f"{label} needs {_fmt(total)} of shared memory even with W_hh in global memory, "
                     f"but a block may use {_fmt(limit)} on {limits.name}; {hint}")


def recurrence_plan(module, role, dtype, tile, threads, H, static, limits=SM90, label="kernel"):
    """:func:`plan_shared` for a cell's ``role`` kernel (module: a ``gpu_<cell>`` module)."""
    def dynamic(w_in_shared, t=tile):
        return module.dynamic_shared_bytes(role, dtype, t, threads, H, w_in_shared)

    def smaller_tile(limit):
        return next((t for t in range(tile - 1, 0, -1) if static + dynamic(False, t) <= limit), 0)

    return plan_shared(f"{label} (H={H}, {tile} sequences x {threads} threads per block)",
                       dynamic, static, limits, smaller_tile=smaller_tile)


def fitting_tile(module, role, dtype, tile, threads, H, limits=SM90):
    """Sequences per block for a cell's ``role`` kernel: ``tile`` (the configured one)
    where its block fits the shared memory of ``limits`` with W_hh in shared or in global
    memory, else the largest smaller tile that fits with W_hh in global memory; ``tile``
    itself where none fits (its :func:`recurrence_plan` then refuses, naming the sizes).
    Everything these kernels keep in shared memory is dynamic, so this needs no compile."""
    limit = limits.shared_optin if limits.opt_in else limits.shared_per_block
    for candidate in range(tile, 0, -1):
        if module.dynamic_shared_bytes(role, dtype, candidate, threads, H, False) <= limit:
            return candidate
    return tile


def _check_grid(label, grid, limits, hint="use fewer networks or sequences per call"):
    for axis, (n, most) in enumerate(zip(grid, limits.grid)):
        if n > most:
            raise ValueError(f"{label} needs {n:,} blocks along grid axis {'xyz'[axis]}, above the "
                             f"{most:,} of {limits.name}; {hint}")
    return grid


def recurrence_grid(n_nets, B, tile, limits=SM90):
    """The recurrence kernels' grid (ceil(B / tile), n_nets): one block per tile of
    sequences of one network."""
    return _check_grid("the recurrence", (-(-B // tile), n_nets), limits)


def common_grids(n_nets, B, steps, H, D, GH, K, threads, limits=SM90, hh_rows=0):
    """Grids of the common kernels (:mod:`rnnsim.kernels.gpu_common`), by use:
    ``output_layer`` (ceil(B * steps / threads), n_nets), ``scale_weights`` (n_nets,),
    ``gemm_recurrent`` over the GH x (H + D + 1) gradient and ``gemm_output`` over the
    K x (H + 1) one, both (row tiles, column tiles, n_nets); for a cell whose biases do
    not fold, also ``gemm_recurrent_hh`` over the hh_rows x (H + 1) gradient of the W_hh
    and b_hh rows that take the recurrent-side adjoints (``recurrent_only_rows``).

    The long axes are on x (2^31 - 1 blocks); y holds the networks or the GEMM's column
    tiles, and is refused beyond 65,535 only for H + D + 1 above 4,194,240 columns.
    """
    from .gpu_common import GEMM_TILE

    def gemm(rows, cols):
        return (-(-rows // GEMM_TILE), -(-cols // GEMM_TILE), n_nets)

    grids = {"output_layer": (max(1, -(-(B * steps) // threads)), n_nets),
             "scale_weights": (n_nets,),
             "gemm_recurrent": gemm(GH, H + D + 1),
             "gemm_output": gemm(K, H + 1)}
    if hh_rows:
        grids["gemm_recurrent_hh"] = gemm(hh_rows, H + 1)
    for name, grid in grids.items():
        _check_grid(f"the {name.replace('_', ' ')}", grid, limits,
                    "use fewer inputs per step (D)" if name == "gemm_recurrent" and grid[1] > limits.grid[1]
                    else "use fewer networks or sequences per call")
    return SimpleNamespace(**grids)


def networks_per_launch(limits=SM90):
    """The most networks one launch may hold: they lie along grid y or z."""
    return min(limits.grid[1], limits.grid[2])


# ----------------------------------------------------------------------------------
# the figures
# ----------------------------------------------------------------------------------
def device_figures(compiled):
    """Figures of a kernel compiled on the current device (``dispatcher.compile(argtypes)``)."""
    return Figures(static_shared=int(compiled.shared_mem_per_block), registers=int(compiled.regs_per_thread),
                   max_threads=int(compiled.max_threads_per_block),
                   local_bytes=int(compiled.local_mem_per_thread), source="device")


@contextlib.contextmanager
def _compute_capability(cc):
    """Pin the compute capability numba-cuda asks the driver for when it types a device
    function called from a kernel (``dispatcher.compile_device``); needed only where no
    driver is present. Device functions compiled inside stay cached for that target."""
    import numba.cuda.dispatcher as dispatcher

    from . import _cuda

    if _cuda.cuda().is_available():
        yield
        return
    original = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = original


def sm90_ptx(pyfunc, signature, launch_bounds=None, cc=(9, 0)):
    """PTX of a kernel for ``cc`` (default sm_90), without a GPU."""
    from numba import void

    from . import _cuda

    cuda = _cuda.cuda()
    with _compute_capability(cc):
        ptx, _ = cuda.compile_ptx(pyfunc, void(*signature), cc=cc, launch_bounds=launch_bounds)
    return ptx


def link_info(ptx, cc=(9, 0)):
    """nvJitLink's info log for ``ptx`` linked for ``sm_<cc>`` (``-verbose``)."""
    from cuda.bindings import nvjitlink

    handle = nvjitlink.create(2, [f"-arch=sm_{cc[0]}{cc[1]}", "-verbose"])
    try:
        data = ptx.encode()
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel.ptx")
        try:
            nvjitlink.complete(handle)
        except Exception as exc:
            log = bytearray(nvjitlink.get_error_log_size(handle))
            nvjitlink.get_error_log(handle, log)
            raise RuntimeError(f"nvJitLink failed for sm_{cc[0]}{cc[1]}: "
                               f"{log.decode(errors='replace').strip() or exc}") from None
        log = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, log)
    finally:
        nvjitlink.destroy(handle)
    return log.decode(errors="replace")


_INFO = re.compile(r"used (\d+) registers.*?(\d+) stack, (\d+) bytes smem.*?(\d+) bytes lmem")


def parse_link_info(info, limits=SM90, launch_bound=None):
    """:class:`Figures` from an nvJitLink info log holding one kernel."""
    found = _INFO.findall(info)
    if len(found) != 1:
        raise ValueError(f"expected one kernel's figures in the nvJitLink log, found {len(found)}")
    registers, stack, smem, lmem = (int(v) for v in found[0])
    return Figures(static_shared=max(0, smem - limits.reserved_shared), registers=registers,
                   max_threads=max_threads_for(registers, limits, launch_bound),
                   local_bytes=stack + lmem, source="sm_90 link")


def link_figures(pyfunc, signature, launch_bounds=None, limits=SM90):
    """Figures of a kernel from an sm_90 link (no GPU needed): PTX, nvJitLink, its log."""
    ptx = sm90_ptx(pyfunc, signature, launch_bounds)
    return parse_link_info(link_info(ptx), limits, launch_bounds)


def sm90_build(cell, name, dtype, tile, threads):
    """(PTX, :class:`Figures`) of one kernel exactly as the driver builds it (same factory
    constants, signature and launch bound), linked for sm_90 without a GPU.

    ``cell`` None means a common kernel (``name`` from
    :func:`rnnsim.kernels.gpu_common.make_common_kernels`; ``tile`` is ignored), else
    ``name`` is a role ("forward", "backward") of that cell's kernel module. Builds are
    cached per process, keyed by what the kernel depends on (the GEMM on nothing).
    """
    if cell is None:
        tile = 0
        threads = 0 if name == "weight_gradient_gemm" else threads
    return _sm90_build(cell, name, np.dtype(dtype).name, tile, threads)


@lru_cache(maxsize=None)
def _sm90_build(cell, name, dtype_name, tile, threads):
    from .. import cells
    from . import gpu_common

    dtype = np.dtype(dtype_name)
    if cell is None:
        fn = gpu_common.make_common_kernels(max(threads, 1))[name]
        signature = gpu_common.common_signatures(dtype)[name]
        bound = gpu_common.block_threads(name, threads)
    else:
        module = cells.get(cell).kernels("gpu")
        fn = module.make_kernels(dtype, tile, threads)[name]
        signature = module.kernel_signatures(dtype)[name]
        bound = threads
    ptx = sm90_ptx(fn, signature, bound)
    return ptx, parse_link_info(link_info(ptx), SM90, bound)


def plan_without_gpu(cell, role, dtype, tile, threads, H, limits=SM90):
    """The driver's plan of a cell's recurrence launch on an sm_90 device, from the
    kernel's sm_90 link: its figures and its shared-memory plan, or a ValueError."""
    from .. import cells

    check_config(threads, tile, limits)
    label = f"the {cell} {role} kernel ({np.dtype(dtype).name})"
    figures = check_figures(label, sm90_build(cell, role, dtype, tile, threads)[1], threads, limits)
    module = cells.get(cell).kernels("gpu")
    plan = recurrence_plan(module, role, dtype, tile, threads, H, figures.static_shared, limits, label)
    return figures, plan
