"""Numba CPU kernels against the NumPy reference (float64 to 1e-12, float32 to 1e-5)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

import rnnsim
from rnnsim import cells, config, reference
from rnnsim.kernels.cpu_common import call, link_addresses, reshaped, take, typed
from rnnsim.kernels.cpu_matmul import pack_panels, step_product, weight_gradients
from rnnsim.kernels.cpu_team import SIZE, TEAM_WORDS
from rnnsim.losses import FUSED_LOSSES as LOSSES  # the other losses: test_losses.py

from helpers import assert_close, assert_outputs_close, make_problem

SHAPES = [  # E, B, T, D, H, K
    (3, 5, 7, 3, 4, 3),
    (1, 1, 1, 1, 1, 2),  # every size at its minimum
    (2, 4, 1, 2, 5, 3),  # T = 1
    (1, 6, 9, 2, 1, 2),  # H = 1
    (4, 1, 6, 3, 6, 5),  # B = 1
    (2, 13, 4, 3, 37, 3),  # per-step products: 8 + 4 + 1 rows, full and partial panels
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "E{}B{}T{}D{}H{}K{}".format(*s))
def test_cpu_gradients_match_reference(shape, loss, cell, dtype):
    params, x, y = make_problem(cell, *shape, loss=loss, dtype=dtype, seed=sum(shape))
    got = rnnsim.gradients(cell, params, x, y, loss=loss, device="cpu")
    ref = reference.gradients(cell, params, x, y, loss=loss)
    for key in got:
        if key.startswith("log_") or key == "loss":
            continue
        assert got[key].dtype == dtype, key
    assert_outputs_close(got, ref, dtype)


@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("loss", LOSSES)
def test_sequence_tiles_merge_exactly(monkeypatch, cell, loss):
    """Several tiles per network (2, 2, 1 sequences) give the one-tile answer."""
    params, x, y = make_problem(cell, 2, 5, 6, 3, 4, 3, loss=loss, seed=3)
    whole = rnnsim.gradients(cell, params, x, y, loss=loss)
    monkeypatch.setattr(config, "CPU_SEQUENCE_TILE", 2)
    from rnnsim.kernels import cpu
    assert len(cpu._work_items(2, 5, 1)[0]) == 6
    tiled = rnnsim.gradients(cell, params, x, y, loss=loss)
    assert_outputs_close(tiled, whole, np.float64)


def test_tiles_halve_only_into_items_worth_a_thread(monkeypatch):
    """Fewer items than threads: the tiles halve while each half keeps enough sequences and
    enough work (sequences x work per sequence), and never past filling the threads."""
    from rnnsim.kernels import cpu
    monkeypatch.setattr(config, "CPU_SEQUENCE_TILE", 32)
    monkeypatch.setattr(config, "CPU_SPLIT_MIN_SEQUENCES", 8)
    monkeypatch.setattr(config, "CPU_SPLIT_MIN_WORK", 1000)
    assert cpu.sequence_tile(1, 32, 1000, 2) == 16  # two items fill two threads
    assert cpu.sequence_tile(1, 32, 1000, 8) == 8  # not below 8 sequences
    assert cpu.sequence_tile(1, 32, 100, 8) == 16  # 16 x 100 is enough work, 8 x 100 is not
    assert cpu.sequence_tile(1, 32, 10, 8) == 32  # 16 x 10 is not
    assert cpu.sequence_tile(1, 4, 10**9, 2) == 4  # 2 sequences an item: too few, whatever T and H
    assert cpu.sequence_tile(2, 32, 1000, 2) == 32  # two networks fill two threads already
    assert cpu.sequence_tile(1, 40, 1000, 2) == 32  # so do tiles of 32 and 8
    monkeypatch.setattr(config, "CPU_SPLIT_MIN_SEQUENCES", 1)
    monkeypatch.setattr(config, "CPU_SPLIT_MIN_WORK", 0)
    assert cpu.sequence_tile(1, 5, 1, 4) == 1  # 5 -> 3 -> 2 -> 1: five items for four threads
    assert cpu.sequence_tile(1, 5, 1, 3) == 2
    assert cpu.sequence_work(10, 4, 6, 2) == 10 * 4 * 6 * (6 + 2)
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 3)
    net, b0, b1 = cpu._work_items(1, 5, 1)
    assert net.tolist() == [0, 0, 0] and b0.tolist() == [0, 2, 4] and b1.tolist() == [2, 4, 5]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", cells.names())
def test_forward_matches_reference(cell, dtype):
    params, x, _ = make_problem(cell, 3, 4, 6, 2, 5, 3, dtype=dtype)
    got = rnnsim.forward(cell, params, x)
    ref = reference.forward(cell, params, x)
    assert set(got) == set(cells.get(cell).state)
    for name in got:
        assert got[name].shape == (3, 4, 6, 5) and got[name].dtype == dtype
        assert_close(got[name], ref[name][:, :, 1:], {np.float64: 1e-12, np.float32: 1e-5}[dtype], name=name)


def test_saturated_units_give_exact_zero_adjoints():
    """tanh saturates to exactly ±1 in float64: dL/dh_{t<T} is exactly 0, ln -> -inf, no NaN."""
    params, x, y = make_problem("rnn", 1, 2, 4, 2, 3, 2)
    params["bias_ih_l0"][:] = 50.0  # tanh(50) == 1.0 exactly
    got = rnnsim.gradients("rnn", params, x, y)
    ref = reference.gradients("rnn", params, x, y)
    assert np.all(got["log_grad_norm"][..., :4] == -np.inf)
    assert np.isfinite(got["log_grad_norm"][..., 4]).all()
    for key in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0"):
        assert np.all(got[key] == 0), key
    assert_outputs_close(got, ref, np.float64)


def test_zero_readout_gives_zero_gradients_and_minus_inf_logs():
    params, x, y = make_problem("lstm", 2, 3, 4, 2, 3, 3)
    params["weight_out"][:] = 0
    got = rnnsim.gradients("lstm", params, x, y)
    assert np.all(got["log_grad_norm"] == -np.inf) and np.all(got["log_grad_norm_c"] == -np.inf)
    for key in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        assert np.all(got[key] == 0), key
    assert np.any(got["weight_out"] != 0)  # the readout itself still learns
    assert np.isfinite(got["log_grad_norm_params"]).all()
    assert_outputs_close(got, reference.gradients("lstm", params, x, y), np.float64)


def test_results_are_deterministic_and_independent_of_thread_count():
    import numba

    params, x, y = make_problem("lstm", 4, 6, 9, 3, 5, 3, loss="every", dtype=np.float32)
    first = rnnsim.gradients("lstm", params, x, y, loss="every")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = rnnsim.gradients("lstm", params, x, y, loss="every")
    finally:
        numba.set_num_threads(before)
    again = rnnsim.gradients("lstm", params, x, y, loss="every")
    for key in first:
        np.testing.assert_array_equal(serial[key], first[key], err_msg=key)
        np.testing.assert_array_equal(again[key], first[key], err_msg=key)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("rows", [0, 1, 3, 10**9])
def test_weight_gradients_in_row_blocks_match_reference(monkeypatch, cell, dtype, rows):
    """The weight-gradient product summed over blocks of 1 and 3 (step, sequence) rows, and
    over one block of all rows, gives the reference's gradients (T*nb = 7*5 rows: the last
    block is partial); a setting below 1 counts as 1."""
    monkeypatch.setattr(config, "CPU_WEIGHT_GRADIENT_ROWS", rows)
    params, x, y = make_problem(cell, 2, 5, 7, 3, 4, 3, loss="every", dtype=dtype, seed=11)
    got = rnnsim.gradients(cell, params, x, y, loss="every")
    assert_outputs_close(got, reference.gradients(cell, params, x, y, loss="every"), dtype)


@njit
def _reshaped(a, rows, cols):
    return reshaped(a, (rows, cols))


@njit
def _flattened(a, n):
    return reshaped(a, n)


def test_reshaped_is_a_view_with_the_new_shape():
    """The kernels' reshape: a C-contiguous view of the same data, which keeps the data
    alive after the source is gone, and a ValueError for another size (negative sizes
    whose product matches included)."""
    source = np.arange(12.0)
    view = _reshaped(source, 3, 4)
    assert view.shape == (3, 4) and view.flags.c_contiguous
    np.testing.assert_array_equal(view, source.reshape(3, 4))
    np.testing.assert_array_equal(_flattened(view, 12), source)
    view[1, 2] = -1.0
    assert source[6] == -1.0
    del source
    assert view.sum() == 66.0 - 6.0 - 1.0
    assert _reshaped(np.arange(6, dtype=np.float32)[2:], 2, 2).dtype == np.float32
    assert _reshaped(np.empty(0), 0, 5).shape == (0, 5)
    for rows, cols in ((5, 3), (-3, -4), (0, 12)):
        with pytest.raises(ValueError, match="another size"):
            _reshaped(np.arange(12.0), rows, cols)


def test_reshaped_refuses_a_strided_array():
    with pytest.raises(TypingError, match="C-contiguous"):
        _reshaped(np.arange(12.0)[::2], 2, 3)


@njit
def _typed_third(like):
    return typed(like, 1.0 / 3.0)


def test_typed_casts_to_the_arrays_dtype():
    """numba returns a float32 as a Python float: its value shows the cast."""
    assert _typed_third(np.empty(0, np.float32)) == float(np.float32(1.0 / 3.0)) != 1.0 / 3.0
    assert _typed_third(np.empty((0, 2))) == 1.0 / 3.0
    with pytest.raises(TypingError, match="like must be an array"):
        _typed_third(1.0)


# --- helpers called through their addresses (cpu_common.call) ------------------------

_PRODUCT = (pack_panels, step_product)


@njit
def _product_direct(a, w, out):
    pool, cursor, team = np.empty(4096, a.dtype), np.zeros(1, np.int64), np.zeros(TEAM_WORDS, np.int64)
    team[SIZE] = 1
    step_product(a, pack_panels(w, pool, cursor), out, team)


@njit
def _product_linked(links, a, w, out):
    pool, cursor, team = np.empty(4096, a.dtype), np.zeros(1, np.int64), np.zeros(TEAM_WORDS, np.int64)
    team[SIZE] = 1
    call(links, step_product, a, call(links, pack_panels, w, pool, cursor), out, team)


@njit
def _weights_linked(links, da, scales, h, x, g_ih, g_hh, g_b):
    pool, cursor = np.empty(4096, da.dtype), np.zeros(1, np.int64)
    return call(links, weight_gradients, da, scales, h, x, -np.inf, 2, g_ih, g_hh, g_b, pool, cursor)


@njit
def _weights_direct(da, scales, h, x, g_ih, g_hh, g_b):
    pool, cursor = np.empty(4096, da.dtype), np.zeros(1, np.int64)
    return weight_gradients(da, scales, h, x, -np.inf, 2, g_ih, g_hh, g_b, pool, cursor)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_call_by_address_matches_the_direct_call(dtype):
    """The same helpers, linked into the caller (direct) and called through the addresses
    of link_addresses: the same results, bitwise (one compiled helper either way), a
    returned array (pack_panels) and a returned float (weight_gradients) included."""
    rng = np.random.default_rng(5)
    a, w = rng.standard_normal((5, 7)).astype(dtype), rng.standard_normal((7, 11)).astype(dtype)
    w.flags.writeable = False  # a read-only parameter (as users' weights may be) takes it as it is
    direct, linked = np.empty((5, 11), dtype), np.empty((5, 11), dtype)
    _product_direct(a, w, direct)
    _product_linked(link_addresses(dtype, _PRODUCT), a, w, linked)
    np.testing.assert_array_equal(linked, direct)
    np.testing.assert_allclose(linked, a.astype(np.float64) @ w, rtol=1e-5 if dtype == np.float32 else 1e-12)
    R, GH, H, D = 6, 4, 3, 2
    da, h, x = (rng.standard_normal(shape).astype(dtype) for shape in ((R, GH), (R, H), (R, D)))
    scales = rng.standard_normal(R)
    outs = [[np.empty(shape, dtype) for shape in ((GH, D), (GH, H), (GH,))] for _ in range(2)]
    s_linked = _weights_linked(link_addresses(dtype, [weight_gradients]), da, scales, h, x, *outs[0])
    s_direct = _weights_direct(da, scales, h, x, *outs[1])
    assert s_linked == s_direct == scales.max()
    for got, want in zip(*outs):
        np.testing.assert_array_equal(got, want)


def test_call_by_address_raises_the_helpers_errors_and_refuses_stale_links():
    """A helper's exception reaches the caller as from a direct call; a links array whose
    token for the helper differs (kernels compiled against another signature, a stale
    cache) or that is too short raises instead of calling anything."""
    a, w = np.ones((2, 3)), np.ones((3, 4))
    links = link_addresses(np.float64, _PRODUCT)
    with pytest.raises(ValueError, match="step_product: panels do not match"):
        _product_linked(links, a, w, np.empty((3, 4)))  # out has another number of rows
    stale = links.copy()
    stale[1::2] += 1
    with pytest.raises(RuntimeError, match="no address of the helper with this signature"):
        _product_linked(stale, a, w, np.empty((2, 4)))
    with pytest.raises(RuntimeError, match="no address of the helper"):  # step_product not linked
        _product_linked(link_addresses(np.float64, [pack_panels]), a, w, np.empty((2, 4)))
    with pytest.raises(RuntimeError, match="too short"):
        _product_linked(links[:1], a, w, np.empty((2, 4)))
    assert links.flags.writeable is False and link_addresses(np.float64, _PRODUCT) is links


@njit
def _take_linked(links, pool):
    return call(links, take, pool, np.zeros(1, np.int64), 2)


def test_call_refuses_an_unlinked_helper_and_other_types():
    with pytest.raises(TypingError, match="not a linked helper"):
        _take_linked(link_addresses(np.float64, _PRODUCT), np.empty(4))
    with pytest.raises(TypingError, match="pack_panels takes"):  # float64 weights into a float32 workspace
        _product_linked(link_addresses(np.float32, _PRODUCT), np.ones((2, 3), np.float32), np.ones((3, 4)),
                        np.empty((2, 4), np.float32))
    with pytest.raises(TypingError, match="1-d int64 array"):
        _product_linked(np.zeros(8), np.ones((2, 3)), np.ones((3, 4)), np.empty((2, 4)))


_FROM_CACHE = """
import numpy as np, rnnsim
params = rnnsim.init_params("lstm", 5, 3, 2, 2, seed=0, dtype="float32")
rng = np.random.default_rng(1)
x = rng.standard_normal((2, 3, 4, 3)).astype("float32")
y = rng.integers(0, 2, size=(2, 3))
g = rnnsim.gradients("lstm", params, x, y)
from rnnsim.kernels import cpu_lstm
print(sum(cpu_lstm.gradients_item.stats.cache_hits.values()))
print(repr(float(np.asarray(g["weight_hh_l0"], np.float64).sum())), repr(float(g["loss"].sum())))
"""


@pytest.mark.slow
def test_kernels_loaded_from_the_cache_find_their_helpers(tmp_path):
    """The item kernels hold no helper's code, only the links the driver passes: a second
    process that loads them from numba's cache (and the helpers, at other addresses)
    computes the same gradients as the process that compiled them."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, "-c", _FROM_CACHE], env=env, capture_output=True, text=True,
                           check=True).stdout for _ in range(2)]
    (hits_first, first), (hits_second, second) = (run.split("\n", 1) for run in runs)
    assert (hits_first, hits_second) == ("0", "1")  # compiled, then loaded from the cache
    assert first == second and first.strip()


_FORWARD_ONLY = """
import numpy as np, rnnsim
from rnnsim.kernels import cpu_matmul
params = rnnsim.init_params("gru", 5, 3, 2, 2, seed=0)
rnnsim.forward("gru", params, np.ones((2, 3, 4, 3)))
print(len(cpu_matmul.step_product.signatures), len(cpu_matmul.weight_gradients.signatures))
"""


def test_a_forward_pass_compiles_no_weight_gradients():
    """Only the helpers that the called kind of item kernel needs are compiled (or loaded)."""
    done = subprocess.run([sys.executable, "-c", _FORWARD_ONLY], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "0"]
