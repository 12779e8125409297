"""GPU kernels against the CPU backend, under the CUDA simulator (or on a real GPU).

Run in its own process, because the simulator must be chosen before numba is
imported::

    NUMBA_ENABLE_CUDASIM=1 pytest tests/test_gpu_sim.py

Without the simulator and without a GPU the whole module is skipped. The
simulator runs every thread in Python, so the shapes are tiny and the launch
configuration is shrunk (2-4 threads, 2 sequences per block) so that several
blocks, sequence tiles, thread strides and padded tiles are still exercised.
"""
import math

import numpy as np
import pytest
from helpers import assert_outputs_close, make_problem

from rnnsim import config, gradients, forward, init_params
from rnnsim._validate import check_problem
from rnnsim.kernels import gpu

pytestmark = pytest.mark.cudasim

if gpu.unavailable_reason() is not None:
    pytest.skip(f"no GPU and no CUDA simulator: {gpu.unavailable_reason()}", allow_module_level=True)

# Closeness to the cpu backend: helpers.assert_outputs_close, float64 to 1e-12 and
# float32 to 1e-5 relative, plus a floor relative to each array's largest entry for
# entries that are sums of cancelling terms (helpers.FLOOR).


@pytest.fixture(autouse=True)
def small_launch(monkeypatch):
    monkeypatch.setattr(config, "GPU_THREADS_PER_BLOCK", 4)
    monkeypatch.setattr(config, "GPU_SEQUENCES_PER_BLOCK", 2)


def assert_same_dtypes(got, want):
    for key in want:
        assert got[key].dtype == want[key].dtype, key


def compare(cell, loss, dtype, **sizes):
    params, inputs, targets = make_problem(cell, **sizes, loss=loss, dtype=dtype)
    got = gradients(cell, params, inputs, targets, loss=loss, device="cuda")
    want = gradients(cell, params, inputs, targets, loss=loss, device="cpu")
    assert_outputs_close(got, want, dtype)
    assert_same_dtypes(got, want)
    return got


SHAPES = [
    dict(E=2, B=3, T=4, D=2, H=5, K=3),  # odd sizes: padded tiles, strided units
    dict(E=1, B=1, T=1, D=1, H=1, K=2),  # every size at its minimum
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("loss", ["last", "every"])
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("sizes", SHAPES, ids=["small", "minimal"])
def test_gradients_match_cpu(cell, loss, dtype, sizes):
    compare(cell, loss, dtype, **sizes)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_weights_in_global_memory_match_cpu(cell, monkeypatch):
    """Too little shared memory for W_hh: the kernels read it from global memory."""
    H, tile, threads = 10, 2, 4
    module = gpu._CELL_MODULES[cell]
    kernels = (f"{cell}_forward", f"{cell}_backward")
    without_w = max(sum(module.shared_bytes(k, np.float64, tile, threads, H, False)) for k in kernels)
    with_w = min(sum(module.shared_bytes(k, np.float64, tile, threads, H, True)) for k in kernels)
    assert without_w < with_w
    monkeypatch.setattr(config, "GPU_MAX_SHARED_BYTES", without_w)
    plans = []
    original = gpu._plan_shared
    monkeypatch.setattr(gpu, "_plan_shared", lambda *a: plans.append(original(*a)) or plans[-1])
    compare(cell, "every", np.float64, E=1, B=3, T=3, D=2, H=H, K=2)
    assert len(plans) == 2 and not any(in_shared for _, in_shared in plans)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_ensemble_split_into_chunks(cell, monkeypatch):
    E = 3
    params, inputs, targets = make_problem(cell, E=E, B=2, T=3, D=2, H=3, K=2)
    problem = check_problem(cell, params, inputs, targets, "last")[0]
    per_network = gpu._bytes_per_network(problem, with_gradients=True)
    monkeypatch.setattr(config, "GPU_MEMORY_BUDGET_BYTES", per_network)  # one network per chunk
    launches = []
    original = gpu._chunk_gradients
    monkeypatch.setattr(gpu, "_chunk_gradients",
                        lambda *a: launches.append(a[-3]) or original(*a))
    got = gradients(cell, params, inputs, targets, device="cuda")
    assert [(s.start, s.stop) for s in launches] == [(0, 1), (1, 2), (2, 3)]
    want = gradients(cell, params, inputs, targets, device="cpu")
    assert_outputs_close(got, want, np.float64)


def test_network_too_large_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(config, "GPU_MEMORY_BUDGET_BYTES", 1000)
    params, inputs, targets = make_problem("rnn", E=1, B=2, T=3, D=2, H=3, K=2)
    with pytest.raises(ValueError, match=r"one network needs .* MiB .*B=2, T=3, H=3"):
        gradients("rnn", params, inputs, targets, device="cuda")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_forward_matches_cpu(cell, dtype, monkeypatch):
    params, inputs, targets = make_problem(cell, E=3, B=3, T=3, D=2, H=4, K=2, dtype=dtype)
    problem = check_problem(cell, params, inputs, targets, "last")[0]
    per_network = gpu._bytes_per_network(problem, with_gradients=False)
    monkeypatch.setattr(config, "GPU_MEMORY_BUDGET_BYTES", 2 * per_network)  # chunks of 2 and 1
    got = forward(cell, params, inputs, device="cuda")
    want = forward(cell, params, inputs, device="cpu")
    assert set(got) == set(want) == ({"h", "c"} if cell == "lstm" else {"h"})
    assert_outputs_close(got, want, dtype)
    for key in want:
        assert got[key].dtype == np.dtype(dtype)


@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_long_horizon_log_ratio_is_exact(scale):
    """Zero inputs and biases: h stays 0, the backward map is W_hh^T = scale * Q^T."""
    T, H = 8, 4
    params = init_params("rnn", H, 2, 3, 2, scheme="orthogonal", scale=scale, seed=3)
    inputs = np.zeros((2, 2, T, 2))
    targets = np.zeros((2, 2), dtype=np.int64)
    got = gradients("rnn", params, inputs, targets, device="cuda")
    ratio = got["log_grad_norm"][..., 0] - got["log_grad_norm"][..., T]
    np.testing.assert_allclose(ratio, T * math.log(scale), rtol=1e-12)


def test_underflowing_gradients_stay_finite_in_log_domain():
    """float32 with a decay of 0.05 per step: the adjoint leaves the float range, the
    log profile does not, and the cpu and cuda backends still agree."""
    T = 8
    params = init_params("rnn", 3, 2, 2, 1, scheme="orthogonal", scale=1e-6, seed=5,
                         dtype=np.float32)
    inputs = np.zeros((1, 2, T, 2), dtype=np.float32)
    targets = np.zeros((1, 2), dtype=np.int64)
    got = gradients("rnn", params, inputs, targets, device="cuda")
    assert np.all(np.isfinite(got["log_grad_norm"]))
    np.testing.assert_allclose(got["log_grad_norm"][..., 0] - got["log_grad_norm"][..., T],
                               T * math.log(1e-6), rtol=1e-5)
