"""GPU code paths that need no GPU: sm_90 compiles of every kernel, device selection.

``cuda.compile_ptx`` runs numba's real type inference and NVVM (the simulator does
neither), so typing errors in the kernels show up here. It needs numba-cuda with
its CUDA 13 extra (NVVM from PyPI) but no GPU or driver.
"""
import re

import numpy as np
import pytest

import rnnsim
from rnnsim import cells, config
from rnnsim.kernels import _cuda, gpu, gpu_common, gpu_launch

ROLES = ("forward", "backward")
INTERFACE = ("make_kernels", "kernel_signatures", "dynamic_shared_bytes", "recurrent_only_rows",
             "activation_shapes", "forward_args", "backward_args")


def _nvvm_reason():
    """None when compile_ptx can run here, else why not."""
    try:
        cuda = _cuda.cuda()
        from numba import void
    except ImportError as exc:
        return f"numba-cuda is not installed ({exc})"
    if _cuda.is_simulator():
        return "the CUDA simulator is on (it cannot compile PTX)"

    def probe(out):
        out[0] = 1.0

    try:
        cuda.compile_ptx(probe, void(gpu_common.array_type(np.float32, 1)), cc=(9, 0))
    except Exception as exc:  # NVVM missing or unloadable
        return f"NVVM is not usable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None


# (cell or None for the common kernels, kernel name or role), in the driver's terms
KERNELS = ([(None, name) for name in gpu_common.common_signatures(np.float32)]
           + [(cell, role) for cell in cells.names() for role in ROLES])


def _kernel_id(kernel):
    cell, name = kernel
    return name if cell is None else f"{cell}_{name}"


@pytest.fixture(scope="module")
def nvvm():
    reason = _nvvm_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.parametrize("cell", cells.names())
def test_every_cell_module_has_the_uniform_interface(cell):
    """gpu.py knows no cell by name: every gpu_<cell> module offers the same functions."""
    module = cells.get(cell).kernels("gpu")
    for name in INTERFACE:
        assert callable(getattr(module, name, None)), f"{module.__name__}.{name}"
    funcs = module.make_kernels(np.float64, 2, 4)
    assert set(funcs) == set(module.kernel_signatures(np.float64)) == set(ROLES)
    shapes = module.activation_shapes(3, 5, 7)
    assert set(cells.get(cell).state) <= set(shapes)


@pytest.mark.parametrize("cell", cells.names())
def test_recurrent_only_rows_agree_with_the_bias_fold(cell):
    """A cell whose biases fold has one set of rows for both sides; one whose biases do
    not (the gru) names the gate block whose recurrent-side rows differ, inside W_hh."""
    spec = cells.get(cell)
    module = spec.kernels("gpu")
    for H in (1, 5, 128):
        rows = module.recurrent_only_rows(H)
        assert isinstance(rows, slice) and rows.step is None
        assert 0 <= rows.start <= rows.stop <= spec.G * H
        assert (rows.stop > rows.start) == (not spec.folded_bias)
    if cell == "gru":  # δu = δa^n ⊙ r: the n block
        assert module.recurrent_only_rows(7) == spec.gate_rows("n", 7)


def test_backward_args_pass_the_recurrent_side_rows_only_where_they_differ():
    """The gru's backward kernel takes the δu rows after the input-side rows; a folded
    cell's kernel never sees them (the driver passes None)."""
    params = {k: k for k in ("weight_hh_l0", "weight_out")}
    acts = {"h": "h", "c": "c", "gates": "gates", "u": "u"}
    for cell in cells.names():
        spec = cells.get(cell)
        args = spec.kernels("gpu").backward_args(params, acts, "dlogits", True, "da", "da_hh", "scale",
                                                 {s: f"log_{s}" for s in spec.state})
        assert args.count("da") == 1 and ("da_hh" in args) == (not spec.folded_bias)
        if "da_hh" in args:
            assert args.index("da_hh") == args.index("da") + 1


def test_every_common_kernel_is_listed():
    assert set(gpu_common.make_common_kernels(128)) == set(gpu_common.common_signatures(np.float32))
    assert sorted(_kernel_id(k) for k in KERNELS) == sorted(
        ["output_layer", "scale_weights", "weight_gradient_gemm"]
        + [f"{cell}_{role}" for cell in cells.names() for role in ROLES])


def test_driver_names_no_cell():
    import inspect

    source = inspect.getsource(gpu)
    for cell in cells.names():
        assert f'"{cell}"' not in source and f"'{cell}'" not in source and f"gpu_{cell}" not in source
    assert "is_lstm" not in source and "_CELL_MODULES" not in source


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kernel", KERNELS, ids=_kernel_id)
def test_kernel_compiles_for_sm90(kernel, dtype, nvvm):
    """The kernel at the default configuration, as the driver builds it (launch bound
    included); the build is shared with tests/test_gpu_launch.py."""
    cell, name = kernel
    ptx, figures = gpu_launch.sm90_build(cell, name, dtype, 8, 128)
    assert ".target sm_90" in ptx
    assert ".visible .entry" in ptx
    assert ".maxntid" in ptx  # the launch bound reached the PTX
    # the arrays really are in the requested precision (scale_weights only sees float64)
    if name != "scale_weights":
        single_precision_memory = re.search(r"\b(ld|st)\.global(\.\w+)*\.f32\b", ptx) is not None
        assert single_precision_memory == (dtype == np.float32)
    assert figures.registers > 0


def _tiny_problem():
    params = rnnsim.init_params("rnn", 2, 1, 2, 1, seed=0)
    return params, np.zeros((1, 1, 2, 1)), np.zeros((1, 1), dtype=np.int64)


def test_cuda_without_gpu_is_a_clear_runtime_error(monkeypatch):
    monkeypatch.setattr(gpu, "unavailable_reason", lambda: "no CUDA GPU or driver was found")
    with pytest.raises(RuntimeError, match="device='cuda' requested but no GPU is usable: no CUDA GPU"):
        rnnsim.gradients("rnn", *_tiny_problem(), device="cuda")


def test_real_unavailable_reason_is_one_line():
    reason = gpu.unavailable_reason()
    if reason is None:
        pytest.skip("a GPU (or the simulator) is usable in this process")
    assert isinstance(reason, str) and reason and "\n" not in reason


def test_gpu_entry_points_refuse_without_gpu(monkeypatch):
    """Called directly (not through the engine), the driver still says why."""
    from rnnsim._validate import check_problem

    monkeypatch.setattr(gpu, "unavailable_reason", lambda: "no CUDA GPU or driver was found")
    problem, params, inputs, targets = check_problem("rnn", *_tiny_problem())
    with pytest.raises(RuntimeError, match="GPU backend is not usable: no CUDA GPU"):
        gpu.gradients(problem, params, inputs, targets)
    with pytest.raises(RuntimeError, match="GPU backend is not usable"):
        gpu.forward(problem, params, inputs)


def test_auto_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(gpu, "unavailable_reason", lambda: "no CUDA GPU or driver was found")
    called = []
    monkeypatch.setattr(gpu, "gradients", lambda *a: called.append(a))
    got = rnnsim.gradients("rnn", *_tiny_problem(), device="auto")
    want = rnnsim.gradients("rnn", *_tiny_problem(), device="cpu")
    assert not called
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_auto_picks_cuda_when_usable(monkeypatch):
    from rnnsim.engine import resolve_device

    monkeypatch.setattr(gpu, "unavailable_reason", lambda: None)
    assert resolve_device("auto") == "cuda"


def test_missing_numba_cuda_is_reported(monkeypatch):
    def no_numba_cuda():
        raise ImportError("No module named 'numba.cuda'")

    monkeypatch.setattr(_cuda, "cuda", no_numba_cuda)
    assert gpu.unavailable_reason().startswith("numba-cuda is not installed")


def test_row_stack_shim(monkeypatch):
    monkeypatch.delattr(np, "row_stack", raising=False)
    _cuda.cuda()
    assert np.row_stack is np.vstack


def test_bad_launch_config_is_a_value_error(monkeypatch):
    monkeypatch.setattr(config, "GPU_THREADS_PER_BLOCK", 0)
    with pytest.raises(ValueError, match="GPU_THREADS_PER_BLOCK"):
        gpu._launch_config()
    monkeypatch.setattr(config, "GPU_THREADS_PER_BLOCK", 128)
    monkeypatch.setattr(config, "GPU_SEQUENCES_PER_BLOCK", 17)
    with pytest.raises(ValueError, match=r"GPU_SEQUENCES_PER_BLOCK must be in \[1, 16\], got 17"):
        gpu._launch_config()


def test_importing_rnnsim_does_not_import_numba_cuda():
    import subprocess
    import sys

    code = ("import sys, rnnsim, rnnsim.kernels.gpu; "
            "sys.exit(1 if any(m.startswith('numba.cuda') or m == 'numba_cuda' for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
