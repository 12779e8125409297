"""Issue 13: the sweep on a Dask cluster gives the local run's results, bit for bit, through
worker and client kills; the base install stays free of dask and xarray."""
import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run
from test_faults import _run_killed, assert_consistent, assert_same_results

from rnnsim import config as engine_config
from rnnsim import sweep
from rnnsim.sweep import distributed

CONFIG = {"cell": "rnn,gru", "hidden": 8, "input-size": 3, "classes": 4, "batch": 3, "lengths": "5,12",
          "scales": "0.5,1.5,2.5", "seeds": 2, "measure": "rates,lyapunov,pascanu"}
ROOT = Path(__file__).resolve().parents[1]


def _flags(config):
    return [item for key, value in config.items() for item in (f"--{key}", str(value))]


# ------------------------------------------------------------------ tasks (no cluster)

@pytest.mark.parametrize("halving", ["configured", "always"])
def test_split_keeps_every_point_once_and_never_halves_a_tile(monkeypatch, halving):
    """Tiles halve only for halves worth a thread (rnnsim.config; these calls are too small),
    or, as before 2026-12-07, whenever the items do not fill the threads."""
    if halving == "always":
        monkeypatch.setattr(engine_config, "CPU_SPLIT_MIN_SEQUENCES", 1)
        monkeypatch.setattr(engine_config, "CPU_SPLIT_MIN_WORK", 0)
    config = sweep.SweepConfig.from_mapping({**CONFIG, "batch": 40, "scales": "0.5:3:7", "seeds": 3})
    calls = sweep.plan_sweep(config, "cpu").calls(config, {})
    halved = []
    for threads, slots in ((2, 2), (8, 100), (200, 1000)):
        old, distributed.MIN_TASK_WORK = distributed.MIN_TASK_WORK, 0
        try:
            tasks = distributed.split_calls(config, calls, "cpu", slots, threads)
        finally:
            distributed.MIN_TASK_WORK = old
        for cell, T, points in calls:
            mine = [t for t in tasks if t[:2] == (cell, T)]
            assert sorted(p for t in mine for p in t[2]) == sorted(points)
            # B = 40, tile 32: 2 items per network
            halves = len(points) * 2 < threads and halving == "always"
            assert distributed.local_halves(config, cell, T, len(points), threads) == halves
            halved.append(halves)
            if not halves:
                assert all(t[3] is None for t in mine)
                assert all(distributed.task_threads(config, len(t[2]), threads) <= 2 * len(t[2])
                           for t in mine)
            else:  # the local call halves its tiles: whole, at the client's thread count
                assert [(len(t[2]), t[3]) for t in mine] == [(len(points), threads)]
        if threads == 2:
            assert len(tasks) > len(calls)  # the cut happens
    assert any(halved) == (halving == "always")
    work = [distributed.task_work(config, t[0], t[1], len(t[2])) for t in tasks]
    assert work == sorted(work, reverse=True)  # largest first
    # The default floor keeps tiny calls whole; on the GPU calls are never cut.
    assert len(distributed.split_calls(config, calls, "cpu", 2, 2)) == len(calls)
    assert [t[2] for t in distributed.split_calls(config, calls, "cuda", 1000, 2)] == \
        sorted([list(p) for _, _, p in calls], key=len, reverse=True)


def test_one_worker_per_gpu():
    assert distributed.worker_env(2, "cpu") == [{}, {}]
    assert distributed.worker_env(2, "cuda", gpus=["3", "5", "7"]) == [{"CUDA_VISIBLE_DEVICES": "3"},
                                                                      {"CUDA_VISIBLE_DEVICES": "5"}]
    with pytest.raises(ValueError, match="workers is 3 but only 2 GPU"):
        distributed.worker_env(3, "cuda", gpus=[0, 1])


def test_the_base_install_pulls_in_neither_dask_nor_xarray():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    heavy = ("dask", "distributed", "xarray", "zarr", "h5netcdf", "h5py", "netcdf4")
    assert not [d for d in project["dependencies"] if d.lower().startswith(heavy)]
    extras = project["optional-dependencies"]
    assert any(d.startswith("dask[distributed]") for d in extras["distributed"])
    assert {"xarray", "h5netcdf", "zarr"} <= {d.split(">")[0].split("[")[0] for d in extras["xarray"]}
    assert set(extras["distributed"] + extras["xarray"]) <= set(extras["test"])
    from importlib.metadata import requires
    for requirement in requires("rnnsim") or []:  # the installed metadata: heavy ones only as extras
        if requirement.lower().startswith(heavy):
            assert "extra ==" in requirement, requirement
    code = ("import sys, rnnsim, rnnsim.sweep, rnnsim.cli\n"
            "from rnnsim.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "try:\n    main(['sweep', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'xarray')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_without_dask_the_cluster_options_say_which_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    out = tmp_path / "none"
    for flag in (["--workers", "2"], ["--scheduler", "tcp://127.0.0.1:8786"]):
        assert_one_line_error(run("sweep", *_flags(CONFIG), "--out", out, *flag),
                              'pip install "rnnsim[distributed]"')
    assert not out.exists()
    assert_one_line_error(run("sweep", *_flags(CONFIG), "--out", out, "--workers", "2", "--scheduler", "x:1"),
                          "choose one of scheduler")
    assert_one_line_error(run("sweep", *_flags(CONFIG), "--out", out, "--workers", "0"), "workers")


# ------------------------------------------------------------------ on a cluster

@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("dask") / "local"
    sweep.run_sweep(CONFIG, out)
    return out


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 worker processes, 1 thread each, no dashboard."""
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      host="127.0.0.1") as running:
        yield running.scheduler_address


@pytest.fixture
def small_tasks(monkeypatch):
    """No floor on a task's work, so that the tiny sweep's calls are cut into chunks."""
    monkeypatch.setattr(distributed, "MIN_TASK_WORK", 0)


def test_a_sweep_through_the_scheduler_equals_the_local_sweep(local_reference, cluster, small_tasks,
                                                              tmp_path):
    out = tmp_path / "dask"
    result = run("sweep", *_flags(CONFIG), "--out", out, "--scheduler", cluster)
    assert result.exit_code == 0, result.output
    assert_same_results(out, local_reference)  # summary byte for byte, every profile array
    manifest = sweep.read_manifest(out)
    assert manifest["runner"] == f"dask scheduler {cluster}"
    assert manifest["stats"]["calls"] > 2 * 2  # the (cell, T) calls were cut into smaller tasks


def _killing_task(marker):
    real = distributed.run_task

    def task(*args):
        if not os.path.exists(marker):  # the first task to start kills its own worker process
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args)
    return task


def test_a_worker_killed_mid_task_costs_a_retry_not_a_point(local_reference, cluster, small_tasks, tmp_path,
                                                            monkeypatch):
    import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    marker = tmp_path / "killed"
    monkeypatch.setattr(distributed, "run_task", _killing_task(str(marker)))
    out = tmp_path / "dask"
    stats = sweep.run_sweep(CONFIG, out, scheduler=cluster)
    assert marker.exists()  # a worker did die
    assert stats["points_computed"] == stats["points_total"]
    assert_same_results(out, local_reference)


def test_a_client_killed_mid_sweep_resumes_through_the_cluster(local_reference, cluster, tmp_path):
    out = tmp_path / "killed"
    code, stderr = _run_killed("replace:summary.csv", 2, json.dumps({**CONFIG, "scheduler": cluster}), out)
    assert code == -signal.SIGKILL, stderr
    assert_consistent(out)
    kept = len(sweep.read_summary(out))
    assert 0 < kept < sweep.SweepConfig.from_mapping(CONFIG).n_points
    stats = sweep.run_sweep(CONFIG, out, scheduler=cluster, resume=True)
    assert stats["points_skipped"] == kept
    assert_same_results(out, local_reference)


def test_workers_starts_a_local_cluster_with_the_same_results(local_reference, tmp_path):
    out = tmp_path / "workers"
    result = run("sweep", *_flags(CONFIG), "--out", out, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert_same_results(out, local_reference)
    assert sweep.read_manifest(out)["runner"] == "dask LocalCluster, 2 worker processes"
