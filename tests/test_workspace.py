"""The CPU workspace that threads keep between calls (rnnsim.kernels.cpu, config.CPU_WORKSPACE_BYTES)."""
import sys

import numpy as np
import pytest
from numba import njit

import rnnsim
from rnnsim import cells, config, reference
from rnnsim.kernels import cpu

from helpers import FLOOR, RTOL, assert_close, assert_outputs_close, make_problem

# "every" and "mse-every" reach the kernels' two other loss paths: the fused per-step
# cross-entropy and the injected adjoints of a loss computed outside them.
LOSSES = ["last", "every", "mse-every"]


def _poison_workspaces(value):
    """Fill every kept workspace with ``value``: a kernel that reads a buffer before writing
    it then departs from the reference. NaN alone is not enough: a NaN log-norm compares
    false and can skip the very term that it should have spoilt."""
    with cpu._workspace_lock:
        for pools in list(cpu._workspace_threads):
            for pool in pools.values():
                pool.fill(value)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("poison", [np.nan, 7.0])
def test_a_warm_workspace_is_written_before_it_is_read(poison, cell, loss, dtype):
    # two networks x 5 sequences: items of different sizes share one thread's workspace
    params, x, y = make_problem(cell, 2, 5, 6, 3, 4, 3, loss=loss, dtype=dtype, seed=11)
    rnnsim.gradients(cell, params, x, y, loss=loss)  # grows the workspaces
    assert cpu.workspace_bytes() > 0
    _poison_workspaces(poison)
    got = rnnsim.gradients(cell, params, x, y, loss=loss)
    assert_outputs_close(got, reference.gradients(cell, params, x, y, loss=loss), dtype)
    _poison_workspaces(poison)
    states, ref = rnnsim.forward(cell, params, x), reference.forward(cell, params, x)
    for name in cells.get(cell).state:
        assert_close(states[name], ref[name][:, :, 1:], RTOL[np.dtype(dtype)], floor=FLOOR[np.dtype(dtype)],
                     name=name)


def test_a_larger_call_after_a_smaller_one_and_back():
    """A workspace too short for the call's items is topped up by fresh memory, then grown;
    the same call twice on a warm workspace is bitwise the same (same machine, same call)."""
    small = make_problem("lstm", 1, 2, 3, 2, 3, 2, seed=1)
    large = make_problem("lstm", 3, 4, 40, 2, 9, 2, seed=2)
    rnnsim.gradients("lstm", *small)
    first = rnnsim.gradients("lstm", *large)
    assert_outputs_close(first, reference.gradients("lstm", *large), np.float64)
    again = rnnsim.gradients("lstm", *large)
    for key in first:
        np.testing.assert_array_equal(again[key], first[key], err_msg=key)
    assert_outputs_close(rnnsim.gradients("lstm", *small), reference.gradients("lstm", *small), np.float64)


def test_the_kept_bytes_respect_the_limit_and_are_released(monkeypatch):
    params, x, y = make_problem("rnn", 2, 4, 30, 3, 8, 3)
    cpu.release_workspaces()
    assert cpu.workspace_bytes() == 0
    monkeypatch.setattr(config, "CPU_WORKSPACE_BYTES", 0)
    kept_nothing = rnnsim.gradients("rnn", params, x, y)
    assert cpu.workspace_bytes() == 0
    monkeypatch.setattr(config, "CPU_WORKSPACE_BYTES", 1 << 20)
    warm = rnnsim.gradients("rnn", params, x, y)
    assert 0 < cpu.workspace_bytes() <= 1 << 20
    assert_outputs_close(warm, kept_nothing, np.float64)
    cpu.release_workspaces()
    assert cpu.workspace_bytes() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="minor page faults: getrusage on Linux")
def test_a_warm_call_does_not_page_fault_its_activations(monkeypatch):
    """Buffers above glibc's largest mmap threshold (32 MiB) are fresh pages on every call
    unless they are kept: counted as minor page faults of the process."""
    import resource

    # one item of 2 sequences (halves of 1 sequence are not worth a thread), its h_t and
    # gate rows 72 MiB each in float32
    E, B, T, H = 1, 2, 140_000, 64
    params = rnnsim.init_params("rnn", H, 2, 2, E, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((E, B, T, 2)).astype(np.float32)
    y = np.zeros((E, B), np.int64)

    def faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rnnsim.gradients("rnn", params, x, y)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    monkeypatch.setattr(config, "CPU_WORKSPACE_BYTES", 0)
    cpu.release_workspaces()
    fresh = faults()
    monkeypatch.setattr(config, "CPU_WORKSPACE_BYTES", 1 << 30)
    faults()  # grows the workspaces
    warm = faults()
    cpu.release_workspaces()
    # 4 KiB pages: the activations alone are ~36k faults when fresh (fewer where the
    # kernel backs them with huge pages); a warm call touches only small buffers
    assert warm <= max(300, fresh // 10), (warm, fresh)


def test_a_thread_that_ends_takes_its_workspace_with_it(monkeypatch):
    """A caller's own thread runs the items when numba has one thread; its workspace
    must not outlive it (a sweep or a Dask worker may call from many short-lived threads)."""
    import gc
    import threading

    import numba

    params, x, y = make_problem("rnn", 1, 2, 30, 3, 8, 3)
    cpu.release_workspaces()
    kept = []

    def call():
        numba.set_num_threads(1)  # numba's thread count is per calling thread
        rnnsim.gradients("rnn", params, x, y)
        kept.append(cpu.workspace_bytes())

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    del thread
    gc.collect()
    assert kept[0] > 0  # it ran the items itself, and kept a workspace while it lived
    assert cpu.workspace_bytes() == 0


@pytest.mark.parametrize("fails", [False, True], ids=["returns", "raises"])
def test_blas_is_single_threaded_inside_a_call_and_restored_after(monkeypatch, fails):
    """The items run BLAS on one thread each; the caller's setting comes back, even
    when an item raises."""
    libraries = cpu._blas_libraries()
    assert libraries, "SciPy's BLAS was not found"
    original = [library.get_num_threads() for library in libraries]
    seen = []

    def spy(*args, **kwargs):
        seen.append([library.get_num_threads() for library in libraries])
        if fails:
            raise RuntimeError("an item failed")
        return run_items(*args, **kwargs)

    run_items = cpu._run_items
    monkeypatch.setattr(cpu, "_run_items", spy)
    params, x, y = make_problem("rnn", 2, 3, 4, 2, 3, 2)
    try:
        for library in libraries:
            library.set_num_threads(2)
        if fails:
            with pytest.raises(RuntimeError, match="an item failed"):
                rnnsim.gradients("rnn", params, x, y)
        else:
            rnnsim.gradients("rnn", params, x, y)
        assert seen == [[1] * len(libraries)]
        assert [library.get_num_threads() for library in libraries] == [2] * len(libraries)
    finally:
        for library, threads in zip(libraries, original):
            library.set_num_threads(threads)


@njit(nogil=True, cache=True)
def _count_item(item, counts, bad):
    if item == bad:
        raise ValueError("bad item")
    counts[item] += 1


@pytest.mark.parametrize("n_items", [1, 2, 3, 9])
def test_every_item_runs_once_and_an_items_error_comes_back(n_items):
    counts = np.zeros(n_items, np.int64)
    cpu._run_items(_count_item, n_items, counts, -1)
    np.testing.assert_array_equal(counts, 1)
    with pytest.raises(ValueError, match="bad item"):
        cpu._run_items(_count_item, n_items, np.zeros(n_items, np.int64), n_items - 1)


def test_calls_from_several_threads_at_once_give_the_serial_results():
    import concurrent.futures

    cells_of = cells.names() * 2
    problems = [make_problem(cell, 2, 3, 5, 2, 4, 3, seed=seed) for seed, cell in enumerate(cells_of)]
    serial = [rnnsim.gradients(cell, *problem) for cell, problem in zip(cells_of, problems)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(problems)) as callers:
        together = list(callers.map(lambda job: rnnsim.gradients(job[0], *job[1]), zip(cells_of, problems)))
    for one, other in zip(serial, together):
        for key in one:
            np.testing.assert_array_equal(other[key], one[key], err_msg=key)
