"""Launch resources of the GPU kernels, checked without a GPU (issue 9).

Every kernel is linked for sm_90 through nvJitLink (``gpu_launch.sm90_build``: one link
per kernel, dtype, tile and threads per session, shared with ``test_gpu_ptx.py``), in
both dtypes, at the default configuration and, marked slow, at boundary ones. The
launch planner is then run over H = 1, 2, ... up to one past the largest H it accepts,
with the H100/H200 limits, and every accepted plan must fit:

* static + dynamic shared memory <= 232,448 B (the opt-in limit), with the opt-in
  whenever the total exceeds 48 KB (49,152 B), and <= 48 KB without it;
* static shared memory <= 48 KB; registers x threads <= 65,536 (also with the
  allocation granularity of the hardware);
* grid extents x <= 2^31 - 1, y and z <= 65,535;

and every refusal is a one-line ValueError that names the problem.
"""
import math
import warnings

import numpy as np
import pytest

from rnnsim import cells, config
from rnnsim._validate import Problem
from rnnsim.kernels import _cuda, gpu, gpu_common, gpu_launch

OPT_IN_LIMIT = 232_448  # bytes of shared memory per block with the opt-in (H100, H200)
DEFAULT_LIMIT = 49_152  # ... without it
REGISTERS = 65_536
GRID = (2**31 - 1, 65_535, 65_535)

DTYPES = ["float32", "float64"]
ROLES = ("forward", "backward")
DEFAULT = (128, 8)  # config.GPU_THREADS_PER_BLOCK, config.GPU_SEQUENCES_PER_BLOCK
# boundary configurations (threads, tile): the corners of 32..1024 x 1..16, and the
# thread counts at which the registers used to run out (256 and 512)
BOUNDARY = [(32, 1), (32, 16), (1024, 1), (1024, 16), (256, 8), (512, 8)]
COMMON = tuple(gpu_common.common_signatures(np.float32))


def _link_reason():
    if _cuda.is_simulator():
        return "the CUDA simulator is on (it cannot compile PTX)"
    try:
        from cuda.bindings import nvjitlink

        nvjitlink.version()
        gpu_launch.sm90_build(None, "scale_weights", "float64", 1, 32)
    except Exception as exc:  # numba-cuda, NVVM or nvJitLink missing
        return f"no sm_90 build here ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None


@pytest.fixture(scope="module")
def linker():
    reason = _link_reason()
    if reason is not None:
        pytest.skip(reason)


def _one_line_value_error(call, *words):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
    return message


def assert_fits(figures, plan, threads):
    assert figures.static_shared <= DEFAULT_LIMIT
    assert figures.registers * threads <= REGISTERS
    assert gpu_launch.block_registers(figures.registers, threads) <= REGISTERS
    assert threads <= figures.max_threads
    assert plan.static == figures.static_shared
    assert plan.total <= OPT_IN_LIMIT
    assert plan.opt_in == (plan.total > DEFAULT_LIMIT)
    if not plan.opt_in:
        assert plan.total <= DEFAULT_LIMIT


def scan_hidden_sizes(cell, role, dtype, threads, tile):
    """Plan H = 1, 2, ... until the planner refuses; check every plan; return the largest H."""
    H = 0
    while True:
        try:
            figures, plan = gpu_launch.plan_without_gpu(cell, role, dtype, tile, threads, H + 1)
        except ValueError:
            break
        assert_fits(figures, plan, threads)
        H += 1
        assert H < 1 << 16
    limit = f"{OPT_IN_LIMIT:,} B"
    _one_line_value_error(lambda: gpu_launch.plan_without_gpu(cell, role, dtype, tile, threads, H + 1),
                          "shared memory", f"H={H + 1}", limit, "config.GPU_")
    return H


def check_configuration(threads, tile):
    largest = {}
    for dtype in DTYPES:
        for name in COMMON:
            figures = gpu_launch.sm90_build(None, name, dtype, tile, threads)[1]
            block = gpu_common.block_threads(name, threads)
            gpu_launch.check_figures(name, figures, block)
            plan = gpu_launch.plan_shared(name, lambda w_in_shared: 0, figures.static_shared)
            assert_fits(figures, plan, block)
            assert not plan.opt_in
        for cell in cells.names():
            for role in ROLES:
                largest[cell, role, dtype] = scan_hidden_sizes(cell, role, dtype, threads, tile)
    return largest


def test_default_configuration_fits_for_every_accepted_hidden_size(linker):
    largest = check_configuration(*DEFAULT)
    # the benchmark shape (H = 128) runs in every kernel at the default configuration
    assert min(largest.values()) >= 128


@pytest.mark.slow
@pytest.mark.parametrize("threads, tile", BOUNDARY, ids=[f"{t}x{s}" for t, s in BOUNDARY])
def test_boundary_configurations_fit_or_are_refused(threads, tile, linker):
    largest = check_configuration(threads, tile)
    assert all(H >= 1 for (_, role, _), H in largest.items() if role == "forward")


def test_the_benchmark_shape_gets_the_opt_in(linker):
    """Issue 9, defect 1: lstm backward float32, H = 16, 32 and 128 at 128 threads x 8
    sequences exceed 48 KB in all; those launches need the opt-in, and get it."""
    for H in (16, 32, 128):
        figures, plan = gpu_launch.plan_without_gpu("lstm", "backward", "float32", 8, 128, H)
        assert plan.total > DEFAULT_LIMIT and plan.opt_in


def test_the_link_reports_the_system_reserve_on_top_of_the_static_size(linker):
    """nvJitLink's smem figure is the static size plus 1,024 B; the figures drop the reserve."""
    ptx = gpu_launch.sm90_build(None, "weight_gradient_gemm", "float64", 8, 128)[0]
    info = gpu_launch.link_info(ptx)
    declared = gpu_common.common_static_bytes("weight_gradient_gemm", 128)
    assert f"{declared + 1024} bytes smem" in info
    assert gpu_launch.parse_link_info(info).static_shared == declared
    for cell in cells.names():  # everything the recurrence kernels share is dynamic
        for role in ROLES:
            assert gpu_launch.sm90_build(cell, role, "float32", 8, 128)[1].static_shared == 0


@pytest.mark.slow
def test_without_launch_bounds_512_threads_are_refused_for_registers(linker):
    """Issue 9, defect 3: without a launch bound the rnn backward needs more registers than
    a 512-thread block has; the planner says so, and the driver's build (with the bound)
    fits."""
    module = cells.get("rnn").kernels("gpu")
    fn = module.make_kernels(np.float32, 8, 512)["backward"]
    ptx = gpu_launch.sm90_ptx(fn, module.kernel_signatures(np.float32)["backward"], None)
    figures = gpu_launch.parse_link_info(gpu_launch.link_info(ptx))
    assert figures.registers * 512 > REGISTERS
    _one_line_value_error(lambda: gpu_launch.check_figures("rnn backward", figures, 512),
                          "registers per thread", "65,536", "GPU_THREADS_PER_BLOCK")
    bounded = gpu_launch.sm90_build("rnn", "backward", "float32", 8, 512)[1]
    gpu_launch.check_figures("rnn backward", bounded, 512)


# ----------------------------------------------------------------------------------
# refusals that need no build
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("threads, tile, words", [
    (0, 8, "GPU_THREADS_PER_BLOCK must be in [1, 1024], got 0"),
    (1025, 8, "GPU_THREADS_PER_BLOCK must be in [1, 1024]"),
    (128, 0, "GPU_SEQUENCES_PER_BLOCK must be in [1, 16], got 0"),
    (128, 17, "GPU_SEQUENCES_PER_BLOCK must be in [1, 16]")])
def test_bad_configurations_are_refused_before_compiling(threads, tile, words):
    _one_line_value_error(lambda: gpu_launch.check_config(threads, tile), words)


def test_static_shared_memory_above_48_kb_is_refused():
    figures = gpu_launch.Figures(static_shared=DEFAULT_LIMIT + 8, registers=32, max_threads=1024)
    _one_line_value_error(lambda: gpu_launch.check_figures("k", figures, 128), "static shared memory",
                          "49,160", "49,152")


def test_limits_are_read_from_the_device():
    from types import SimpleNamespace

    device = SimpleNamespace(compute_capability=(9, 0), MAX_SHARED_MEMORY_PER_BLOCK=49_152,
                             MAX_SHARED_MEMORY_PER_BLOCK_OPTIN=232_448, RESERVED_SHARED_MEMORY_PER_BLOCK=1024,
                             MAX_REGISTERS_PER_BLOCK=65_536, MAX_THREADS_PER_BLOCK=1024,
                             MAX_GRID_DIM_X=2**31 - 1, MAX_GRID_DIM_Y=65_535, MAX_GRID_DIM_Z=65_535)
    assert gpu_launch.Limits.of_device(device) == gpu_launch.Limits(name="sm_90")
    smaller = SimpleNamespace(**dict(vars(device), MAX_SHARED_MEMORY_PER_BLOCK_OPTIN=101_376))
    assert gpu_launch.Limits.of_device(smaller).shared_optin == 101_376
    capped = gpu_launch.SM90.with_shared_cap(1000)
    assert capped.shared_optin == capped.shared_per_block == 1000


def test_register_figures():
    assert gpu_launch.block_registers(255, 256) == REGISTERS  # 255 rounds up to 256 per thread
    assert gpu_launch.block_registers(253, 512) > REGISTERS
    assert gpu_launch.max_threads_for(255) == 256
    assert gpu_launch.max_threads_for(64) == 1024
    assert gpu_launch.max_threads_for(176) == 352  # 176 * 32 = 5,632 per warp: 11 warps


def test_shared_plan_prefers_w_hh_in_shared_and_refuses_clearly():
    plan = gpu_launch.plan_shared("k", lambda w: 60_000 if w else 10_000, 1_000)
    assert plan.w_in_shared and plan.opt_in and plan.total == 61_000
    plan = gpu_launch.plan_shared("k", lambda w: 240_000 if w else 10_000, 1_000)
    assert not plan.w_in_shared and not plan.opt_in
    without_opt_in = gpu_launch.Limits(opt_in=False)
    plan = gpu_launch.plan_shared("k", lambda w: 60_000 if w else 48_000, 1_000, without_opt_in)
    assert not plan.w_in_shared and plan.total == 49_000 and not plan.opt_in
    _one_line_value_error(lambda: gpu_launch.plan_shared("k", lambda w: 49_000, 1_000, without_opt_in),
                          "k needs 50,000 B of shared memory", "49,152 B")


# ----------------------------------------------------------------------------------
# grids
# ----------------------------------------------------------------------------------
def _within(grid):
    assert all(1 <= n <= most for n, most in zip(grid, GRID)), grid


@pytest.mark.parametrize("B, T, loss", [(1024, 8192, "every"), (600_000, 1, "last"), (1, 1, "last"),
                                        (2**20, 40, "every")])
def test_grids_of_large_problems_fit(B, T, loss):
    """Issue 9, defect 4: B * steps above 8.4 million (the output layer) and B above 524k
    (the recurrence) used to exceed the 65,535 blocks of grid y."""
    steps = T if loss == "every" else 1
    n = gpu_launch.networks_per_launch()
    for threads, tile in [DEFAULT, *BOUNDARY]:
        for cell in cells.names():
            G, H, D, K = cells.get(cell).G, 128, 16, 10
            rows = cells.get(cell).kernels("gpu").recurrent_only_rows(H)
            _within(gpu_launch.recurrence_grid(n, B, tile))
            grids = gpu_launch.common_grids(n, B, steps, H, D, G * H, K, threads,
                                            hh_rows=rows.stop - rows.start)
            assert hasattr(grids, "gemm_recurrent_hh") == (not cells.get(cell).folded_bias)
            for grid in vars(grids).values():
                _within(grid)
            assert grids.output_layer[0] * threads >= B * steps  # every pair has a thread
            assert gpu_launch.recurrence_grid(n, B, tile)[0] * tile >= B


def test_grids_refuse_clearly_what_cannot_launch():
    _one_line_value_error(lambda: gpu_launch.recurrence_grid(65_536, 8, 8), "65,536 blocks", "axis y")
    _one_line_value_error(lambda: gpu_launch.common_grids(1, 1, 1, 16, 5_000_000, 16, 2, 128),
                          "gemm recurrent", "axis y", "65,535", "fewer inputs per step (D)")


def test_chunks_hold_at_most_the_networks_one_grid_takes(monkeypatch):
    monkeypatch.setattr(config, "GPU_MEMORY_BUDGET_BYTES", math.inf)
    problem = Problem("rnn", "last", E=200_000, B=1, T=1, D=1, H=1, K=2, dtype=np.dtype(np.float32))
    assert gpu._networks_per_chunk(None, problem, True, gpu_launch.SM90) == 65_535
    assert [s.stop - s.start for s in gpu._chunks(200_000, 65_535)] == [65_535] * 3 + [3_395]


# ----------------------------------------------------------------------------------
# the driver's launch path, with the sm_90 figures and a recording kernel
# ----------------------------------------------------------------------------------
class RecordingKernel:
    def __init__(self):
        self.launches = []

    def __getitem__(self, launch_config):
        return lambda *args: self.launches.append((launch_config, args))


@pytest.fixture
def offline_driver(monkeypatch, linker):
    """gpu._launch_recurrence with the sm_90 link's figures in place of a device's."""
    opt_ins = []
    monkeypatch.setattr(gpu, "_allow_dynamic_shared", lambda compiled, nbytes: opt_ins.append(nbytes))

    def launch(cell, role, dtype, H, tile=8, threads=128, limits=gpu_launch.SM90):
        figures = gpu_launch.sm90_build(cell, role, dtype, tile, threads)[1]
        monkeypatch.setattr(gpu, "_compiled", lambda *a: (figures, "compiled"))
        problem = Problem(cell, "last", E=2, B=20, T=3, D=2, H=H, K=2, dtype=np.dtype(dtype))
        kernel = RecordingKernel()
        monkeypatch.setattr(gpu, "_cell_kernels", lambda *key: {role: kernel})
        opt_ins.clear()
        plan = gpu._launch_recurrence(None, problem, role, ("args",), tile, threads, 2, limits)
        return figures, plan, kernel.launches, list(opt_ins)

    return launch


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", cells.names())
def test_driver_applies_the_opt_in_whenever_the_total_exceeds_48_kb(cell, dtype, offline_driver):
    for role in ROLES:
        for H in (1, 16, 32, 66, 128, 200):
            figures, plan, launches, opt_ins = offline_driver(cell, role, dtype, H)
            ((grid, threads, stream, dynamic), args), = launches
            assert grid == (3, 2) and threads == 128 and dynamic == plan.dynamic
            assert args == ("args", plan.w_in_shared)
            assert opt_ins == ([plan.dynamic] if plan.total > DEFAULT_LIMIT else [])
            assert_fits(figures, plan, 128)


def test_failed_opt_in_falls_back_within_48_kb(monkeypatch, offline_driver):
    def refuse(compiled, nbytes):
        raise RuntimeError("CUDA_ERROR_INVALID_VALUE")

    monkeypatch.setattr(gpu, "_allow_dynamic_shared", refuse)
    with pytest.warns(RuntimeWarning, match="opt-in failed .*CUDA_ERROR_INVALID_VALUE"):
        figures, plan, launches, _ = offline_driver("lstm", "backward", "float32", 16)
    ((_, _, _, dynamic), args), = launches
    assert not plan.opt_in and not args[-1] and plan.total <= DEFAULT_LIMIT and dynamic == plan.dynamic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # H = 128 fits 48 KB only with fewer sequences per block: 5 of the 20 per block, 4 blocks
        _, plan, launches, _ = offline_driver("lstm", "backward", "float32", 128)
        ((grid, _, _, dynamic), _), = launches
        assert grid == (4, 2) and not plan.opt_in and plan.total <= DEFAULT_LIMIT
        # one float64 sequence at H = 1024 needs 63,504 B: refused with one line
        _one_line_value_error(lambda: offline_driver("lstm", "backward", "float64", 1024), "shared memory",
                              "49,152 B")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", cells.names())
def test_a_tile_too_large_for_shared_memory_gives_way_to_the_largest_that_fits(cell, dtype, offline_driver):
    """Issue 15: at H = 512 the lstm float64 backward needs 271,616 B with 8 sequences per
    block, over sm_90's 232,448, and the dispatcher refused it (so did the gru at H = 1024).
    It now launches the largest tile that fits, and refuses only where one sequence per
    block does not fit."""
    module = cells.get(cell).kernels("gpu")
    for role in ROLES:
        for H in (128, 512, 1024):
            need = [module.dynamic_shared_bytes(role, np.dtype(dtype), t, 128, H, False) for t in range(1, 9)]
            fits = [t for t, nbytes in enumerate(need, start=1) if nbytes <= gpu_launch.SM90.shared_optin]
            _, plan, launches, _ = offline_driver(cell, role, dtype, H)
            ((grid, _, _, _), _), = launches
            assert grid == (math.ceil(20 / max(fits)), 2) and plan.total <= gpu_launch.SM90.shared_optin
    assert gpu_launch.fitting_tile(cells.get("lstm").kernels("gpu"), "backward", np.dtype("float64"),
                                   8, 128, 512) == 6


# ----------------------------------------------------------------------------------
# on a real GPU: the dispatcher's own figures agree with the sm_90 link
# ----------------------------------------------------------------------------------
def test_device_figures_agree_with_the_link(linker):
    if _cuda.is_simulator() or gpu.unavailable_reason() is not None:
        pytest.skip("needs a real GPU")
    cuda = _cuda.cuda()
    if cuda.get_current_device().compute_capability != (9, 0):
        pytest.skip("the link figures are for sm_90")
    threads, tile = DEFAULT
    for dtype in DTYPES:
        for cell in cells.names():
            module = cells.get(cell).kernels("gpu")
            for role, fn in module.make_kernels(np.dtype(dtype), tile, threads).items():
                kernel = cuda.jit(fn, launch_bounds=threads)
                got = gpu_launch.device_figures(kernel.compile(module.kernel_signatures(dtype)[role]))
                want = gpu_launch.sm90_build(cell, role, dtype, tile, threads)[1]
                # ptxas versions differ (the driver's JIT on the device, nvJitLink offline):
                # the H200's driver 580 gave 147 registers where the link gives 164. Both
                # must let a block of `threads` launch; the shared sizes are the source's.
                assert got.static_shared == want.static_shared
                assert got.max_threads >= threads
                for figures in (got, want):
                    assert gpu_launch.block_registers(figures.registers, threads) <= 65_536


def test_gru_at_the_benchmark_shape(linker):
    """H = 128 at 128 threads x 8 sequences: the gru forward keeps its 3H x H W_hh in shared
    memory in float32 (204,800 B, with the opt-in); both backward kernels read W_hh from
    global memory, since 3H^2 words, their buffers and the float64 reduction region exceed
    232,448 B, and the float32 one then fits within 48 KB."""
    _, forward = gpu_launch.plan_without_gpu("gru", "forward", "float32", 8, 128, 128)
    assert forward.w_in_shared and forward.opt_in and forward.total == 204_800
    for dtype, opt_in in (("float32", False), ("float64", True)):
        _, backward = gpu_launch.plan_without_gpu("gru", "backward", dtype, 8, 128, 128)
        assert not backward.w_in_shared and backward.opt_in == opt_in
