"""What rnnsim promises under faults: kill -9 at any point, a full disk, concurrent runs.

- A sweep killed at any point, before its manifest exists included, resumes to the
  uninterrupted result; every file on disk parses in the meantime.
- `rnnsim plot` killed mid-write leaves every figure whole or absent.
- A folder in use by one rnnsim process is refused to another, which names it;
  the lock dies with its holder, so kill -9 never leaves a folder locked.
- A full disk exits 2 with one line, and --resume completes afterwards.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from cli_helpers import CLI, assert_one_line_error, run, snapshot

from rnnsim import cells, sweep

CONFIG = {"cell": ",".join(cells.names()), "hidden": 5, "input-size": 2, "classes": 3, "batch": 2,
          "lengths": "4,7", "scales": "0.5,2", "seeds": 2}

# A child that runs a sweep (or a plot) and SIGKILLs itself just before the N-th call of one
# file-system operation: os.mkdir / os.replace of a named file, fcntl.flock, or os.fsync.
KILLER = textwrap.dedent("""
    import fcntl, json, os, signal, sys
    target, nth, job, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    seen = {}

    def hit(label):
        seen[label] = seen.get(label, 0) + 1
        if label == target and seen[label] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(module, name, label_of):
        real = getattr(module, name)
        def wrapped(*args, **kwargs):
            hit(label_of(*args))
            return real(*args, **kwargs)
        setattr(module, name, wrapped)

    wrap(os, "mkdir", lambda path, *a: "mkdir:" + os.path.basename(os.fspath(path)))
    wrap(os, "replace", lambda src, dst: "replace:" + os.path.basename(os.fspath(dst)))
    wrap(os, "fsync", lambda fd: "fsync")
    wrap(fcntl, "flock", lambda fd, op: "flock")
    if job == "plot":
        from rnnsim import plot
        plot.plot_results(out)
    else:
        from rnnsim import sweep
        sweep.run_sweep(json.loads(job), out)
""")


def _run_killed(target, nth, job, out):
    done = subprocess.run([sys.executable, "-c", KILLER, target, str(nth), job, str(out)],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "reference"
    sweep.run_sweep(CONFIG, out)
    return out


def _profiles(folder):
    found = {}
    for path in sorted((folder / "profiles").glob("*.npz")):
        with np.load(path) as data:
            found[path.name] = {k: data[k] for k in data.files}
    return found


def assert_same_results(folder, reference):
    """The summary byte for byte, the profiles array for array, a complete manifest, no temp files."""
    assert (folder / sweep.SUMMARY).read_bytes() == (reference / sweep.SUMMARY).read_bytes()
    got, want = _profiles(folder), _profiles(reference)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].keys() == want[name].keys()
        for key in want[name]:
            np.testing.assert_array_equal(got[name][key], want[name][key], err_msg=f"{name}:{key}")
    manifest = sweep.read_manifest(folder)
    assert manifest["status"] == "complete" and manifest["config"] == sweep.read_manifest(reference)["config"]
    assert not [p for p in folder.rglob(".rnnsim-tmp-*")]


def assert_consistent(folder):
    """What a killed sweep leaves: every file parses, and every listed point has its profile."""
    config = None
    if (folder / sweep.MANIFEST).is_file():
        config = sweep.store.manifest_config(folder)
    if (folder / sweep.SUMMARY).is_file():
        for row in sweep.read_summary(folder, config):
            prof = sweep.read_profiles(folder, row["cell"], row["T"], config)
            assert ((prof["scale"] == row["scale"]) & (prof["seed"] == row["seed"])).sum() == 1


n_calls = len(cells.names()) * 2  # one ensemble call per (cell, T)
KILL_POINTS = [
    ("mkdir:new", 1),            # nothing exists yet
    ("flock", 1),                # the lock file exists, unlocked: nothing else
    ("fsync", 1),                # the marker's temp file is written, not yet synced
    ("replace:.rnnsim", 1),      # the marker's temp file is whole, not renamed
    ("mkdir:profiles", 1),       # only the marker and the lock
    ("replace:manifest.json", 1),  # profiles/ exists, the manifest is still a temp file
    (f"replace:{cells.names()[0]}_T4.npz", 1),  # manifest 'running', no summary yet
    ("replace:summary.csv", 1),  # one profile on disk, not yet listed
    ("replace:summary.csv", 2),  # one call listed
    (f"replace:{cells.names()[-1]}_T7.npz", 1),  # all but the last call listed
    ("replace:summary.csv", n_calls),  # every profile, the last call not listed
    ("replace:manifest.json", 2),  # every point listed, the manifest still says 'running'
]


MEASURED = {**CONFIG, "measure": "rates,lyapunov,pascanu", "lyap-k": 2}


@pytest.fixture(scope="module")
def uninterrupted_measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "measured"
    sweep.run_sweep(MEASURED, out)
    return out


@pytest.mark.parametrize("target, nth", [
    ("replace:summary.csv", 2),
    pytest.param(f"replace:{cells.names()[-1]}_T7.npz", 1, marks=pytest.mark.slow),
    pytest.param("replace:manifest.json", 2, marks=pytest.mark.slow),
])
def test_a_killed_sweep_with_every_measure_resumes_bitwise(uninterrupted_measured, tmp_path, target, nth):
    """The optional measures' columns, intervals and arrays (Lyapunov spectra, per-sequence values)
    resume to the uninterrupted result byte for byte: the bootstrap streams are keyed by the point."""
    out = tmp_path / "new"
    code, stderr = _run_killed(target, nth, json.dumps(MEASURED), out)
    assert code == -signal.SIGKILL, stderr
    assert_consistent(out)
    sweep.run_sweep(MEASURED, out, resume=True)
    assert_same_results(out, uninterrupted_measured)


@pytest.mark.slow
@pytest.mark.parametrize("target, nth", KILL_POINTS)
def test_a_killed_sweep_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path, target, nth):
    """Issue 8 E and the kill storm: 12 kill points of a new sweep, 6 before its manifest exists."""
    out = tmp_path / "new"
    code, stderr = _run_killed(target, nth, json.dumps(CONFIG), out)
    assert code == -signal.SIGKILL, stderr
    assert_consistent(out)
    if out.exists() and not (out / sweep.MANIFEST).exists():  # before the manifest: every flag accepts it
        for flags in ({}, {"overwrite": True}):
            copy = tmp_path / f"copy{len(flags)}"
            shutil.copytree(out, copy)
            sweep.run_sweep(CONFIG, copy, **flags)
            assert_same_results(copy, uninterrupted)
    stats = sweep.run_sweep(CONFIG, out, resume=True)
    assert stats["points_total"] == stats["points_computed"] + stats["points_skipped"]
    assert_same_results(out, uninterrupted)


def test_kill_9_loses_at_most_the_points_in_flight(tmp_path):
    out = tmp_path / "killed"
    args = ["sweep", "--cell", "rnn", "--hidden", "16", "--batch", "4", "--lengths", "20:1500:40",
            "--scales", "0.5,1.9", "--seeds", "2", "--out", str(out)]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    summary = out / sweep.SUMMARY
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if summary.is_file() and len(summary.read_text().splitlines()) > 1 + 8:  # >= 2 calls done
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Every file on disk parses; every listed point has its profile.
    kept = sweep.read_summary(out)
    assert 8 <= len(kept) < 160
    for row in kept:
        prof = sweep.read_profiles(out, row["cell"], row["T"])
        assert ((prof["scale"] == row["scale"]) & (prof["seed"] == row["seed"])).sum() == 1
    assert sweep.read_manifest(out)["status"] == "running"
    result = run(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert f"{160 - len(kept)} computed, {len(kept)} already done" in result.stdout
    final = sweep.read_summary(out)
    assert len(final) == 160
    by_key = {(r["T"], r["scale"], r["seed"]): r for r in final}
    for row in kept:  # the finished points were kept as they were
        assert by_key[(row["T"], row["scale"], row["seed"])] == row
    assert not [p for p in out.rglob(".rnnsim-tmp-*")]


# ------------------------------------------------------------------ plot killed mid-write

def _whole(path):
    """A PNG that decodes to its end, or a PDF that ends with its trailer."""
    data = path.read_bytes()
    if path.suffix == ".png":
        import matplotlib.image
        matplotlib.image.imread(path)
        return data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82")
    return data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF") and b"startxref" in data[-64:]


FIGURES = [f"phase_{c}.{e}" for c in cells.names() for e in ("png", "pdf")] + \
    [f"{s}.{e}" for s in ("profiles", "rates") for e in ("png", "pdf")]


@pytest.mark.slow
def test_plot_killed_mid_write_leaves_every_figure_whole_or_absent(uninterrupted, tmp_path):
    """Issue 8 D: killed between and inside figure writes, with and without older figures."""
    plotted = tmp_path / "plotted"
    shutil.copytree(uninterrupted, plotted)
    from rnnsim import plot
    plot.plot_results(plotted)
    # Per figure: fsync of its temp file (odd), rename, fsync of the folder (even).
    kills = {True: [("fsync", 1), ("replace:rates.pdf", 1)],
             False: [("fsync", 5), ("replace:profiles.png", 1)]}
    for fresh in (True, False):
        for target, nth in kills[fresh]:
            out = tmp_path / f"{'fresh' if fresh else 'old'}-{target}-{nth}"
            shutil.copytree(uninterrupted if fresh else plotted, out)
            code, stderr = _run_killed(target, nth, "plot", out)
            assert code == -signal.SIGKILL, stderr
            for name in FIGURES:
                path = out / name
                if path.exists():  # the old figure as it was, or a new one, whole
                    assert _whole(path), (target, nth, name)
                else:
                    assert fresh, (target, nth, name)  # an old figure is never removed
            assert_consistent(out)
            result = run("plot", str(out), "--quiet")  # and plot completes afterwards, cleaning up
            assert result.exit_code == 0, result.output
            assert all(_whole(out / name) for name in FIGURES)
            assert not [p for p in out.iterdir() if p.name.startswith(".rnnsim-tmp-")]


@pytest.mark.slow
def test_plot_killed_at_random_times(uninterrupted, tmp_path):
    rng = np.random.default_rng(0)
    for attempt in range(3):
        out = tmp_path / f"random{attempt}"
        shutil.copytree(uninterrupted, out)
        proc = subprocess.Popen([*CLI, "plot", str(out), "--quiet"], stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.5, 4.0)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for name in FIGURES:
            if (out / name).exists():
                assert _whole(out / name), name


# ------------------------------------------------------------------ concurrent runs

def _flags(config):
    return [item for key, value in config.items() for item in (f"--{key}", str(value))]


HOLDER = textwrap.dedent("""
    import sys, time
    from rnnsim.sweep.lock import FolderLock
    lock = FolderLock(sys.argv[1], "sweep").acquire()
    lock.claim()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_folder_in_use_is_refused_until_its_holder_dies(uninterrupted, tmp_path):
    """Issue 8 F: exit 2 naming the holder's pid; after kill -9 of the holder the folder is free."""
    out = tmp_path / "busy"
    shutil.copytree(uninterrupted, out)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(out)
        args = [*_flags(CONFIG), "--out", str(out)]
        in_use = f"{out} is in use by another rnnsim sweep (pid {holder.pid})"
        for extra in (["--resume"], ["--overwrite"]):
            assert_one_line_error(run("sweep", *args, *extra), in_use)
        assert_one_line_error(run("plot", str(out)), in_use)
        assert snapshot(out) == before
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    result = run("sweep", *args, "--resume")
    assert result.exit_code == 0 and "nothing left to do" in result.stdout
    assert run("plot", str(out), "--quiet").exit_code == 0


@pytest.mark.slow
def test_two_sweeps_started_at_once_never_both_succeed(tmp_path):
    """Issue 8 F: the race of 3 in 43 tries in which B reported success with its points missing."""
    base = {"cell": "rnn", "hidden": "5", "input-size": "2", "classes": "3", "batch": "2", "seeds": "2"}
    configs = [{**base, "lengths": "4,7", "scales": "0.5,2"},
               {**base, "lengths": "5,9,13", "scales": "1,1.5,2.5"}]
    for attempt in range(4):
        out = tmp_path / f"race{attempt}"
        procs = [subprocess.Popen([*CLI, "sweep", *_flags(c), "--quiet", "--out", str(out)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in configs]
        outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        codes = [code for code, _ in outcomes]
        assert sorted(codes) == [0, 2], outcomes
        loser = outcomes[codes.index(2)][1]
        assert "is in use by another rnnsim sweep" in loser or "already holds results" in loser, loser
        config = sweep.SweepConfig.from_mapping(configs[codes.index(0)])
        rows = sweep.read_summary(out, config)
        assert len(rows) == config.n_points and sweep.read_manifest(out)["config"] == config.as_dict()
        for T in config.lengths:
            prof = sweep.read_profiles(out, "rnn", T)
            assert len(prof["scale"]) == len(config.scales) * config.seeds


# ------------------------------------------------------------------ a full disk

def test_a_full_disk_exits_2_and_resume_completes(uninterrupted, tmp_path, monkeypatch):
    """The fsync of the first summary's temp file fails with ENOSPC: one line, exit 2, the temp file
    removed; --resume then completes."""
    out = tmp_path / "full"
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    args = [*_flags(CONFIG), "--out", str(out)]
    assert_one_line_error(run("sweep", *args), "No space left on device")
    assert not [p for p in out.rglob(".rnnsim-tmp-*")]
    assert_consistent(out)
    monkeypatch.setattr(os, "fsync", real_fsync)
    result = run("sweep", *args, "--resume")
    assert result.exit_code == 0, result.output
    assert_same_results(out, uninterrupted)
