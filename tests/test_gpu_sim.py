"""GPU kernels against the NumPy reference and the CPU backend, under the CUDA
simulator (or on a real GPU).

Run in its own process, because the simulator must be chosen before numba is
imported::

    NUMBA_ENABLE_CUDASIM=1 pytest tests/test_gpu_sim.py

Without the simulator and without a GPU the whole module is skipped. Every cell of
the registry runs every generic test; the end of the module adds what is specific to
a cell whose biases do not fold (the gru): its own bias_hh gradient and the direct
path z ⊙ δh of its backward, checked against analytic values. The
simulator runs every thread in Python, so the shapes are tiny and the launch
configuration is shrunk (2-4 threads, 2 sequences per block) so that several
blocks, sequence tiles, thread strides and padded tiles are still exercised.
"""
import math

import numpy as np
import pytest

from rnnsim import cells, config, forward, gradients, init_params, logdomain, losses, reference
from rnnsim._validate import check_problem
from rnnsim.kernels import gpu, gpu_launch

from helpers import assert_outputs_close, make_mask, make_problem

pytestmark = pytest.mark.cudasim

if gpu.unavailable_reason() is not None:
    pytest.skip(f"no GPU and no CUDA simulator: {gpu.unavailable_reason()}", allow_module_level=True)

# Closeness to the reference and the cpu backend: helpers.assert_outputs_close,
# float64 to 1e-12 and float32 to 1e-5 relative, plus a floor relative to each array's
# largest entry for entries that are sums of cancelling terms (helpers.FLOOR).
CELLS = cells.names()


@pytest.fixture(autouse=True)
def small_launch(monkeypatch):
    monkeypatch.setattr(config, "GPU_THREADS_PER_BLOCK", 4)
    monkeypatch.setattr(config, "GPU_SEQUENCES_PER_BLOCK", 2)


def assert_same_dtypes(got, want):
    for key in want:
        assert got[key].dtype == want[key].dtype, key


def compare(cell, loss, dtype, **sizes):
    """cuda against the NumPy reference and against the cpu backend."""
    params, inputs, targets = make_problem(cell, **sizes, loss=loss, dtype=dtype)
    got = gradients(cell, params, inputs, targets, loss=loss, device="cuda")
    assert_outputs_close(got, reference.gradients(cell, params, inputs, targets, loss=loss), dtype)
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
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("sizes", SHAPES, ids=["small", "minimal"])
def test_gradients_match_reference_and_cpu(cell, loss, dtype, sizes):
    compare(cell, loss, dtype, **sizes)


INJECTED = [loss for loss in losses.LOSSES if loss not in losses.FUSED_LOSSES]
# every (cell, loss) in float64; float32 for one loss per cell in turn (the simulator is slow)
INJECTED_CASES = ([(cell, loss, np.float64) for cell in CELLS for loss in INJECTED]
                  + [(cell, INJECTED[i % len(INJECTED)], np.float32) for i, cell in enumerate(CELLS)])


@pytest.mark.parametrize("cell, loss, dtype", INJECTED_CASES,
                         ids=[f"{c}-{loss}-{np.dtype(d).name}" for c, loss, d in INJECTED_CASES])
def test_injected_losses_match_reference_and_cpu(cell, loss, dtype):
    """The losses of rnnsim.losses: their adjoints go through the backward kernels'
    injected path (a readout with no rows); clipped, which scales on the host."""
    sizes = SHAPES[0]
    params, inputs, targets = make_problem(cell, **sizes, loss=loss, dtype=dtype)
    kwargs = dict(loss=loss, mask=make_mask(loss, sizes["E"], sizes["B"], sizes["T"]))
    got = gradients(cell, params, inputs, targets, device="cuda", **kwargs)
    assert_outputs_close(got, reference.gradients(cell, params, inputs, targets, **kwargs), dtype)
    want = gradients(cell, params, inputs, targets, device="cpu", **kwargs)
    assert_outputs_close(got, want, dtype)
    assert_same_dtypes(got, want)
    clip = 0.5 * float(np.exp(got["log_grad_norm_params"]).min())
    clipped = gradients(cell, params, inputs, targets, device="cuda", clip=clip, **kwargs)
    assert clipped["clipped"].all()
    assert_outputs_close(clipped, gradients(cell, params, inputs, targets, device="cpu", clip=clip, **kwargs),
                         dtype)


@pytest.mark.parametrize("cell", CELLS)
def test_weights_in_global_memory_match_reference(cell, monkeypatch):
    """Too little shared memory for W_hh: the kernels read it from global memory."""
    H, tile, threads = 10, 2, 4
    module = cells.get(cell).kernels("gpu")
    roles = ("forward", "backward")
    without_w = max(module.dynamic_shared_bytes(r, np.float64, tile, threads, H, False) for r in roles)
    with_w = min(module.dynamic_shared_bytes(r, np.float64, tile, threads, H, True) for r in roles)
    assert without_w < with_w
    monkeypatch.setattr(config, "GPU_MAX_SHARED_BYTES", without_w)
    plans = []
    original = gpu_launch.recurrence_plan
    monkeypatch.setattr(gpu_launch, "recurrence_plan", lambda *a: plans.append(original(*a)) or plans[-1])
    compare(cell, "every", np.float64, E=1, B=3, T=3, D=2, H=H, K=2)
    assert len(plans) == 4  # forward and backward, each before and after compiling
    assert not any(plan.w_in_shared for plan in plans)


@pytest.mark.parametrize("cell", CELLS)
def test_a_tile_too_large_for_shared_memory_runs_as_smaller_tiles(cell, monkeypatch):
    """Issue 15: where the configured sequences per block cannot fit shared memory even
    with W_hh in global memory (the lstm float64 backward at H = 512 on sm_90), the
    dispatcher launches the largest tile that fits, here one sequence per block."""
    H, threads = 6, 4
    module = cells.get(cell).kernels("gpu")
    one = max(module.dynamic_shared_bytes(role, np.float64, 1, threads, H, False)
              for role in ("forward", "backward"))
    monkeypatch.setattr(config, "GPU_MAX_SHARED_BYTES", one)
    assert module.dynamic_shared_bytes("backward", np.float64, 2, threads, H, False) > one  # the tile of 2
    tiles = []
    original = gpu_launch.recurrence_plan
    monkeypatch.setattr(gpu_launch, "recurrence_plan", lambda *a: tiles.append(a[3]) or original(*a))
    compare(cell, "every", np.float64, E=2, B=3, T=4, D=2, H=H, K=3)
    assert 1 in tiles and set(tiles) <= {1, 2}


@pytest.mark.parametrize("cell", CELLS)
def test_ensemble_split_into_chunks(cell, monkeypatch):
    E = 3
    params, inputs, targets = make_problem(cell, E=E, B=2, T=3, D=2, H=3, K=2)
    problem = check_problem(cell, params, inputs, targets, "last")[0]
    per_network = gpu._bytes_per_network(problem, with_gradients=True)
    monkeypatch.setattr(config, "GPU_MEMORY_BUDGET_BYTES", per_network)  # one network per chunk
    launches = []
    original = gpu._chunk_gradients
    monkeypatch.setattr(gpu, "_chunk_gradients",
                        lambda *a: launches.append(a[5]) or original(*a))
    got = gradients(cell, params, inputs, targets, device="cuda")
    assert [(s.start, s.stop) for s in launches] == [(0, 1), (1, 2), (2, 3)]
    want = gradients(cell, params, inputs, targets, device="cpu")
    assert_outputs_close(got, want, np.float64)
    assert_outputs_close(got, reference.gradients(cell, params, inputs, targets), np.float64)


def test_network_too_large_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(config, "GPU_MEMORY_BUDGET_BYTES", 1000)
    params, inputs, targets = make_problem("rnn", E=1, B=2, T=3, D=2, H=3, K=2)
    with pytest.raises(ValueError, match=r"one network needs .* MiB .*B=2, T=3, H=3"):
        gradients("rnn", params, inputs, targets, device="cuda")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_forward_matches_cpu(cell, dtype, monkeypatch):
    params, inputs, targets = make_problem(cell, E=3, B=3, T=3, D=2, H=4, K=2, dtype=dtype)
    problem = check_problem(cell, params, inputs, targets, "last")[0]
    per_network = gpu._bytes_per_network(problem, with_gradients=False)
    monkeypatch.setattr(config, "GPU_MEMORY_BUDGET_BYTES", 2 * per_network)  # chunks of 2 and 1
    got = forward(cell, params, inputs, device="cuda")
    want = forward(cell, params, inputs, device="cpu")
    assert set(got) == set(want) == set(cells.get(cell).state)
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
    assert_outputs_close(got, reference.gradients("rnn", params, inputs, targets), np.float64)


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


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_scale_weights_apply_the_cutoff_of_identity_2(dtype):
    """S* and the weights exp(s - S*) of the kernel are those of logdomain.relative_weights,
    cutoff included: terms at or below it get weight 0."""
    cutoff = logdomain.log_weight_cutoff(dtype)
    E, B, T = 2, 3, 4
    rng = np.random.default_rng(0)
    da_scale = rng.uniform(-5.0, 5.0, size=(E, B, T))
    da_scale[0, 0, 0] = 10.0  # S* of network 0
    da_scale[0, 1, 1] = 10.0 + cutoff  # exactly at the cutoff: dropped
    da_scale[0, 1, 2] = 10.0 + cutoff + 1e-3  # just above it: kept
    da_scale[0, 2, 3] = 10.0 + 2 * cutoff  # far below: dropped
    da_scale[1] = -np.inf  # a network with a zero adjoint everywhere
    da_scale[1, 2, 1] = 3.0
    top, weights = np.empty(E), np.empty((E, B, T))
    kernel = gpu._common_kernels(config.GPU_THREADS_PER_BLOCK)["scale_weights"]
    kernel[(E,), config.GPU_THREADS_PER_BLOCK](da_scale, cutoff, top, weights)
    want_top, want_weights = logdomain.relative_weights(da_scale, (1, 2), cutoff)
    np.testing.assert_array_equal(top, want_top)
    np.testing.assert_allclose(weights, want_weights, rtol=1e-15, atol=0)
    assert weights[0, 1, 1] == 0.0 and weights[0, 2, 3] == 0.0 and weights[0, 1, 2] > 0.0
    assert np.count_nonzero(weights[1]) == 1


# ----------------------------------------------------------------------------------
# what is specific to a cell whose biases do not fold (the gru)
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
def test_raw_results_carry_bias_hh_only_where_the_biases_do_not_fold(cell):
    """The driver returns its own bias_hh_l0 mantissa for the gru (from the recurrent-side
    rows); for a folded cell it leaves the copy to logdomain.tie_biases."""
    params, inputs, targets = make_problem(cell, E=1, B=1, T=2, D=1, H=2, K=2)
    problem = check_problem(cell, params, inputs, targets, "last")[0]
    raw = gpu.gradients(problem, params, inputs, targets)
    assert ("bias_hh_l0" in raw["mantissas"]) == (not cells.get(cell).folded_bias)
    assert set(raw["mantissas"]) <= set(logdomain.RECURRENT_KEYS)


def _gru_with_a_constant_update_gate(dtype, update_bias, reset_bias, T=8, H=4, D=2, K=3, E=2, B=3):
    """W_hh = 0, zero inputs, and biases zero except b_iz = ``update_bias`` and b_ir =
    ``reset_bias``: h stays 0, z = σ(update_bias) and r = σ(reset_bias) in every unit and step."""
    params = init_params("gru", H, D, K, E, seed=4, dtype=dtype)
    spec = cells.get("gru")
    params["weight_hh_l0"][:] = 0
    params["bias_ih_l0"][:] = 0
    params["bias_hh_l0"][:] = 0
    params["bias_ih_l0"][:, spec.gate_rows("z", H)] = update_bias
    params["bias_ih_l0"][:, spec.gate_rows("r", H)] = reset_bias
    params["bias_out"][:] = np.linspace(-0.5, 0.5, K, dtype=dtype)
    inputs = np.zeros((E, B, T, D), dtype=dtype)
    targets = np.arange(E * B).reshape(E, B) % K
    return params, inputs, targets


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@pytest.mark.parametrize("update_bias", [2.0, -1.0])
def test_gru_direct_path_alone_gives_an_exact_log_ratio(update_bias):
    """With W_hh = 0 the backward map is δh_{t-1} = z ⊙ δh_t alone: the profile falls by
    exactly ln σ(b_z) per step, so a kernel that dropped (or doubled) the direct path
    fails. The gradients are analytic too: dW_ih = 0 (x = 0), dW_hh = 0 (h = 0), the r
    and z rows of db_hh equal those of db_ih, and the n rows are db_hn = r ⊙ db_in."""
    T, reset_bias = 8, 0.7
    params, inputs, targets = _gru_with_a_constant_update_gate(np.float64, update_bias, reset_bias, T=T)
    got = gradients("gru", params, inputs, targets, device="cuda")
    ratio = got["log_grad_norm"][..., 0] - got["log_grad_norm"][..., T]
    np.testing.assert_allclose(ratio, T * math.log(_sigmoid(update_bias)), rtol=1e-12)
    assert not np.any(got["weight_ih_l0"]) and not np.any(got["weight_hh_l0"])
    H = params["weight_hh_l0"].shape[2]
    spec = cells.get("gru")
    r_and_z = slice(0, 2 * H)
    np.testing.assert_array_equal(got["bias_hh_l0"][:, r_and_z], got["bias_ih_l0"][:, r_and_z])
    n = spec.gate_rows("n", H)
    assert np.all(np.abs(got["bias_ih_l0"][:, n]) > 0)
    np.testing.assert_allclose(got["bias_hh_l0"][:, n], _sigmoid(reset_bias) * got["bias_ih_l0"][:, n],
                               rtol=1e-12)
    assert_outputs_close(got, reference.gradients("gru", params, inputs, targets), np.float64)


def test_gru_direct_path_underflows_only_outside_the_log_domain():
    """float32, z = σ(-14) ≈ 8e-7 per step over 8 steps: the adjoint falls by e^-112, below
    the smallest float32 (1.4e-45); the log profile stays finite and exact, on cuda and cpu."""
    T, update_bias = 8, -14.0
    params, inputs, targets = _gru_with_a_constant_update_gate(np.float32, update_bias, 0.0, T=T, E=1, B=2)
    want = T * math.log(_sigmoid(update_bias))
    assert want < math.log(np.finfo(np.float32).smallest_subnormal)
    for device in ("cuda", "cpu"):
        got = gradients("gru", params, inputs, targets, device=device)
        assert np.all(np.isfinite(got["log_grad_norm"])), device
        np.testing.assert_allclose(got["log_grad_norm"][..., 0] - got["log_grad_norm"][..., T], want,
                                   rtol=1e-5, err_msg=device)


@pytest.mark.parametrize("loss", ["last", "every"])
def test_gru_with_the_direct_path_dominant_matches_reference_and_cpu(loss):
    """An update bias of 3 (z ≈ 0.95): the direct path carries most of the adjoint, beside a
    full W_hh, nonzero b_hh and inputs; every output key against the reference and the cpu."""
    sizes = dict(E=1, B=3, T=6, D=2, H=3, K=2)
    params, inputs, targets = make_problem("gru", **sizes, loss=loss)
    params["bias_ih_l0"][:, cells.get("gru").gate_rows("z", sizes["H"])] += 3.0
    got = gradients("gru", params, inputs, targets, loss=loss, device="cuda")
    assert_outputs_close(got, reference.gradients("gru", params, inputs, targets, loss=loss), np.float64)
    assert_outputs_close(got, gradients("gru", params, inputs, targets, loss=loss, device="cpu"), np.float64)
    assert not np.allclose(got["bias_hh_l0"], got["bias_ih_l0"])
