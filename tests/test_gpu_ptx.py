"""GPU code paths that need no GPU: sm_90 compiles of every kernel, device selection.

``cuda.compile_ptx`` runs numba's real type inference and NVVM (the simulator does
neither), so typing errors in the kernels show up here. It needs numba-cuda with
its CUDA 13 extra (NVVM from PyPI) but no GPU or driver.
"""
import re
import types

import numpy as np
import pytest

import rnnsim
from rnnsim import config
from rnnsim.kernels import _cuda, gpu, gpu_common, gpu_lstm, gpu_rnn


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


def _all_kernels(dtype):
    """(name, python function, signature) of every kernel, as the driver builds them."""
    threads, tile = 128, 8
    groups = [(gpu_common.make_common_kernels(threads), gpu_common.common_signatures(dtype)),
              (gpu_rnn.make_kernels(dtype, tile, threads), gpu_rnn.kernel_signatures(dtype)),
              (gpu_lstm.make_kernels(dtype, tile, threads), gpu_lstm.kernel_signatures(dtype))]
    for funcs, signatures in groups:
        assert set(funcs) == set(signatures)
        for name, fn in funcs.items():
            yield name, fn, signatures[name]


KERNEL_NAMES = ["output_layer", "scale_weights", "weight_gradient_gemm",
                "rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward"]


@pytest.fixture
def pinned_compute_capability(monkeypatch):
    """numba-cuda asks the driver for the compute capability when it types a device
    function called from a kernel (``dispatcher.compile_device``); without a GPU we
    pin it to the sm_90 target that ``compile_ptx`` builds for."""
    reason = _nvvm_reason()
    if reason is not None:
        pytest.skip(reason)
    import numba.cuda.dispatcher as dispatcher

    if gpu.unavailable_reason() is not None:
        monkeypatch.setattr(dispatcher, "get_current_device",
                            lambda: types.SimpleNamespace(compute_capability=(9, 0)))


def test_every_kernel_is_listed():
    names = [name for name, _, _ in _all_kernels(np.float32)]
    assert sorted(names) == sorted(KERNEL_NAMES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kernel_compiles_for_sm90(name, dtype, pinned_compute_capability):
    cuda = _cuda.cuda()
    from numba import void

    fn, signature = next((f, s) for n, f, s in _all_kernels(dtype) if n == name)
    ptx, _ = cuda.compile_ptx(fn, void(*signature), cc=(9, 0))
    assert ".target sm_90" in ptx
    assert ".visible .entry" in ptx
    # the arrays really are in the requested precision (scale_weights only sees float64)
    if name != "scale_weights":
        single_precision_memory = re.search(r"\b(ld|st)\.global(\.\w+)*\.f32\b", ptx) is not None
        assert single_precision_memory == (dtype == np.float32)


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


def test_importing_rnnsim_does_not_import_numba_cuda():
    import subprocess
    import sys

    code = ("import sys, rnnsim, rnnsim.kernels.gpu; "
            "sys.exit(1 if any(m.startswith('numba.cuda') or m == 'numba_cuda' for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
