"""`rnnsim train` and the sweep's training flags through the command line: files, provenance,
one-line errors, and a folder never clobbered."""
import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run, snapshot

from rnnsim.sweep import trainrun
from rnnsim.train import SOLVED_RATE, TASKS

ARGS = ["--task", "copy-first", "--cell", "rnn,gru", "--hidden", "6", "--length", "10", "--scale", "1.5",
        "--steps", "5", "--batch", "4", "--seeds", "2", "--lr", "0.01"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_train") / "run"
    result = run("train", *ARGS, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_files_and_their_contents(trained):
    out, result = trained
    assert {p.name for p in out.iterdir()} == {".rnnsim", ".rnnsim.lock", "manifest.json", "history.csv",
                                               "evaluations.csv", "final.json"}
    history = _rows(out / "history.csv")
    assert tuple(history[0]) == trainrun.HISTORY_COLUMNS
    assert len(history) == 2 * 2 * 5  # cells x seeds x steps
    assert {(r["cell"], r["seed"]) for r in history} == {(c, s) for c in ("rnn", "gru") for s in "01"}
    assert all(r["clipped"] == "0" and r["skipped"] == "0" for r in history)
    evaluations = _rows(out / "evaluations.csv")
    assert len(evaluations) == 2 * 2 * len(trainrun.training.eval_steps(5))
    final = json.loads((out / "final.json").read_text())  # strict JSON: NaN would not parse here
    assert final["task"] == "copy-first" and final["solved_rate"] == SOLVED_RATE
    for cell in ("rnn", "gru"):
        entry = final["cells"][cell]
        last = {int(r["seed"]): float(r["rate"]) for r in evaluations
                if r["cell"] == cell and r["step"] == "5"}
        assert entry["rate"] == [last[0], last[1]]
        assert entry["solved"] == [r >= SOLVED_RATE for r in entry["rate"]]
        assert entry["solved_fraction"] == np.mean(entry["solved"])
        assert f"{cell}: {sum(entry['solved'])} of 2 solved copy-first" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tool"] == "rnnsim train" and manifest["status"] == "complete"
    assert manifest["config"] == trainrun.train_settings({
        "task": "copy-first", "cell": "rnn,gru", "hidden": 6, "length": 10, "scale": 1.5, "steps": 5,
        "batch": 4, "seeds": 2, "lr": 0.01})
    assert manifest["config"]["clip"] is None
    for key in ("versions", "git_commit", "device", "device_name", "started", "finished", "stats"):
        assert key in manifest, key
    assert manifest["eval_steps"] == trainrun.training.eval_steps(5).tolist()


def test_train_equals_the_sweep_at_the_same_point(trained, tmp_path):
    """Seed s of `rnnsim train` is the sweep's point (cell, T, S, s) under train:TASK."""
    out, _ = trained
    sweep_out = tmp_path / "sweep"
    result = run("sweep", "--cell", "rnn", "--hidden", "6", "--lengths", "10", "--scales", "0.5,1.5",
                 "--seeds", "2", "--batch", "2", "--measure", "train:copy-first", "--steps", "5",
                 "--train-batch", "4", "--lr", "0.01", "--out", sweep_out, "--quiet")
    assert result.exit_code == 0, result.output
    from rnnsim import sweep
    rows = [r for r in sweep.read_summary(sweep_out) if r["scale"] == 1.5]
    final = json.loads((out / "final.json").read_text())["cells"]["rnn"]
    for row in rows:
        assert row["train_rate"] == pytest.approx(final["rate"][row["seed"]], abs=1e-12)
        assert row["train_loss"] == pytest.approx(final["loss"][row["seed"]], rel=1e-10)


def test_existing_results_need_overwrite(trained, tmp_path):
    out, _ = trained
    before = snapshot(out)
    assert_one_line_error(run("train", *ARGS, "--out", out), "--overwrite")
    assert snapshot(out) == before
    copy = tmp_path / "copy"
    import shutil
    shutil.copytree(out, copy)
    (copy / "learning_curves.png").write_bytes(b"old figure")
    result = run("train", *ARGS[:-6], "--steps", "3", "--seeds", "1", "--out", copy, "--overwrite", "--quiet")
    assert result.exit_code == 0 and result.output == ""
    assert len(_rows(copy / "history.csv")) == 2 * 1 * 3
    assert not (copy / "learning_curves.png").exists()  # the old run's figure went with its results


@pytest.mark.parametrize("args, words", [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--clip", "-2"], "clip must be >= 0"),
    (["--seeds", "0"], "seeds must be >= 1"),
    (["--steps", "2.5"], "steps"),
    (["--optimizer", "rmsprop"], "unknown optimizer"),
    (["--cell", "rnn,rnn"], "appears twice"),
    (["--task", "temporal-order", "--length", "5"], "needs length >= 10"),
    (["--scale", "0"], "scale must be > 0"),
    (["--batch", "100000000"], "needs about"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, words):
    out = tmp_path / "never"
    assert_one_line_error(run("train", *ARGS, *args, "--out", out), words)
    assert not out.exists()


def test_folders_that_are_not_training_results_are_refused(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    swept = tmp_path / "swept"
    assert run("sweep", "--cell", "rnn", "--hidden", "4", "--lengths", "3", "--scales", "1", "--seeds", "1",
               "--out", swept, "--quiet").exit_code == 0
    for out, words in ((foreign, "not an rnnsim results folder"), (a_file, "not a folder"),
                       (swept, "rnnsim sweep")):
        before = snapshot(out) if out.is_dir() else out.read_bytes()
        assert_one_line_error(run("train", *ARGS, "--out", out, "--overwrite"), words)
        assert before == (snapshot(out) if out.is_dir() else out.read_bytes())


def test_a_folder_in_use_is_refused(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from rnnsim.sweep.lock import FolderLock
        lock = FolderLock(sys.argv[1], "train").acquire()
        lock.claim()
        print("locked", flush=True)
        time.sleep(60)
    """), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert_one_line_error(run("train", *ARGS, "--out", out), "in use by another rnnsim train")
        assert not (out / "manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_help_names_every_task_and_the_sweep_flags_need_the_measure(tmp_path):
    text = run("train", "--help").output
    for task in TASKS:
        assert task in text
    sweep_help = run("sweep", "--help").output
    for flag in ("--steps", "--optimizer", "--lr", "--clip", "--train-batch", "train:TASK"):
        assert flag in sweep_help
    out = tmp_path / "never"
    assert_one_line_error(run("sweep", "--cell", "rnn", "--steps", "3", "--out", out), "no train:TASK")
    assert_one_line_error(run("sweep", "--measure", "train:nope", "--out", out), "unknown task")
    assert not out.exists()


def test_train_help_is_light():
    """`rnnsim train --help` loads neither the training code, the results store, numba nor matplotlib."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        from rnnsim.cli import main
        try:
            main(["train", "--help"])
        except SystemExit:
            pass
        heavy = ("numba", "matplotlib", "scipy", "rnnsim.train", "rnnsim.sweep.store",
                 "rnnsim.sweep.trainrun")
        print(sorted(m for m in sys.modules if m.startswith(heavy)), file=sys.stderr)
    """)], capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "[]"
