"""Teams of threads on one work item's per-step products (rnnsim.kernels.cpu_team).

A team's product is computed column by column by exactly one member with the same
code. Its products are checked against NumPy, and the kernels with teams against the
reference and against one thread, with the dtype's tolerances (two compiled code
paths: nothing here is compared bitwise except the same call run twice).
"""
import numpy as np
import pytest
from numba import njit

import rnnsim
from rnnsim import cells, config, reference
from rnnsim.kernels import cpu, cpu_team
from rnnsim.kernels.cpu_matmul import PANEL_BYTES, pack_panels, step_product

from helpers import FLOOR, RTOL, assert_close, assert_outputs_close, make_problem


@njit(cache=True)
def repeated_products(a, w, out, team, repeats):
    """``repeats`` products of a changing ``a`` (each step's input is the last output's
    first columns, as in a recurrence); the inputs and outputs of every step, stacked."""
    pool = np.empty(w.shape[0] * (w.shape[1] + PANEL_BYTES) + 64, w.dtype)
    panels = pack_panels(w, pool, np.zeros(1, np.int64))
    ins = np.empty((repeats,) + a.shape, a.dtype)
    outs = np.empty((repeats,) + out.shape, out.dtype)
    for r in range(repeats):
        ins[r] = a
        step_product(a, panels, out, team)
        outs[r] = out
        for i in range(a.shape[0]):
            for k in range(a.shape[1]):
                a[i, k] = np.tanh(out[i, k % out.shape[1]])
    return ins, outs


def _team(size):
    team = np.zeros(cpu_team.TEAM_WORDS, np.int64)
    team[cpu_team.SIZE] = size
    return team


# N: fewer panels than members (some members get none), uneven and even splits
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("size", [2, 3, 5])
@pytest.mark.parametrize("M, K, N", [(1, 8, 3), (3, 37, 70), (9, 64, 256)])
def test_a_teams_products_match_numpy_at_every_step(M, K, N, size, dtype):
    """Every product of 40 dependent steps, each within 2·K·eps·(|a|·|w|) of the exact one."""
    rng = np.random.default_rng(M + K + N)
    a0 = rng.standard_normal((M, K)).astype(dtype)
    w = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(dtype)
    team = _team(size)
    with cpu._helpers(team, np.empty(0, dtype)):
        ins, outs = repeated_products(a0.copy(), w, np.empty((M, N), dtype), team, 40)
    assert team[cpu_team.GEN] == 41  # 40 products and the dismissal
    exact = ins.astype(np.float64) @ w.astype(np.float64)
    bound = 2 * K * np.finfo(dtype).eps * (np.abs(ins).astype(np.float64) @ np.abs(w).astype(np.float64))
    assert np.all(np.abs(outs - exact) <= bound)


@pytest.fixture
def teams_everywhere(monkeypatch):
    """Every call with fewer items than threads gets a team, however small its products."""
    monkeypatch.setattr(config, "CPU_TEAM_MIN_SHARE", 0)
    monkeypatch.setattr(config, "CPU_TEAM_MIN_SHARE_SEQUENCES", 0)
    sizes = []
    run_items = cpu._run_items

    def spy(*args, **kwargs):
        sizes.append(kwargs.get("team_size", 1))
        return run_items(*args, **kwargs)

    monkeypatch.setattr(cpu, "_run_items", spy)
    return sizes


# one network and one sequence: one work item, so every other thread helps it;
# "threads" 3 on this 2-core machine: a team larger than the cores still finishes
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("loss", ["last", "every", "mse-every"])
@pytest.mark.parametrize("threads", [2, 3])
def test_gradients_with_a_team_match_reference(teams_everywhere, monkeypatch, cell, loss, dtype, threads):
    monkeypatch.setattr(cpu, "get_num_threads", lambda: threads)
    params, x, y = make_problem(cell, 1, 1, 9, 3, 21, 3, loss=loss, dtype=dtype, seed=5)
    got = rnnsim.gradients(cell, params, x, y, loss=loss)
    assert threads in teams_everywhere
    assert_outputs_close(got, reference.gradients(cell, params, x, y, loss=loss), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", cells.names())
def test_a_team_gives_the_results_of_one_thread(teams_everywhere, monkeypatch, cell, dtype):
    """One item of three sequences, alone and then with a helper, forward and gradients."""
    params, x, y = make_problem(cell, 1, 3, 7, 2, 19, 3, loss="every", dtype=dtype, seed=2)
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 2)
    one_item = (np.zeros(1, np.int64), np.zeros(1, np.int64), np.full(1, 3, np.int64))
    monkeypatch.setattr(cpu, "_work_items", lambda E, B, work: one_item)
    monkeypatch.setattr(config, "CPU_TEAM_MIN_SHARE_SEQUENCES", 1 << 62)
    alone = rnnsim.gradients(cell, params, x, y, loss="every")
    alone_states = rnnsim.forward(cell, params, x)
    monkeypatch.setattr(config, "CPU_TEAM_MIN_SHARE_SEQUENCES", 0)
    together = rnnsim.gradients(cell, params, x, y, loss="every")
    states = rnnsim.forward(cell, params, x)
    assert teams_everywhere == [1, 1, 2, 2]
    assert_outputs_close(together, alone, dtype)
    rtol, floor = RTOL[np.dtype(dtype)], FLOOR[np.dtype(dtype)]
    for key in alone_states:
        assert_close(states[key], alone_states[key], rtol, floor=floor, name=key)


def test_teams_only_where_items_leave_threads_free_and_weights_are_large(monkeypatch):
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 8)
    monkeypatch.setattr(config, "CPU_TEAM_MIN_SHARE", 1000)
    monkeypatch.setattr(config, "CPU_TEAM_MIN_SHARE_SEQUENCES", 4000)
    assert cpu._team_size(8, 1, 1, 64) == 1  # no thread free
    assert cpu._team_size(2, 1, 1, 64) == 4  # W_hh of 4096: 4 members of 1024
    assert cpu._team_size(3, 1, 1, 64) == 2
    assert cpu._team_size(1, 1, 1, 44) == 1  # 1936: two members would get under 1000 each
    assert cpu._team_size(1, 1, 1, 45) == 2
    assert cpu._team_size(1, 1, 4, 64) == 8  # 16k: as many as the threads
    # several sequences: 4000 entries each, however many sequences
    assert cpu._team_size(1, 2, 1, 64) == 1  # 4096: two members would get 2048
    assert cpu._team_size(1, 64, 1, 89) == 1  # 7921
    assert cpu._team_size(1, 2, 1, 90) == 2  # 8100
    assert cpu._team_size(1, 2, 4, 64) == 4  # 16k


def test_helpers_that_started_are_dismissed_when_another_cannot_start(monkeypatch):
    import threading

    started = []
    real_start = threading.Thread.start

    def start(thread):
        if started:
            raise RuntimeError("can't start new thread")
        real_start(thread)
        started.append(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    team = _team(3)
    with pytest.raises(RuntimeError, match="can't start"):
        with cpu._helpers(team, np.empty(0)):
            pytest.fail("the item ran without its whole team")
    started[0].join(timeout=60)
    assert not started[0].is_alive()


def test_calls_with_teams_from_several_threads_at_once_give_the_serial_results(teams_everywhere):
    """Three callers, each leading a team of 2 on this 2-core machine (the waits yield),
    give what the same calls gave one after another: bitwise, the same call run twice."""
    import concurrent.futures

    jobs = [(cell, make_problem(cell, 1, 1, 12, 3, 33, 3, seed=seed))
            for seed, cell in enumerate(cells.names())]
    serial = [rnnsim.gradients(cell, *problem) for cell, problem in jobs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as callers:
        together = list(callers.map(lambda job: rnnsim.gradients(job[0], *job[1]), jobs))
    assert set(teams_everywhere) == {2}
    for one, other in zip(serial, together):
        for key in one:
            np.testing.assert_array_equal(other[key], one[key], err_msg=key)
