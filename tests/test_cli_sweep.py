"""`rnnsim sweep`, `rnnsim theory`, `rnnsim plot` through Click's CliRunner (and one real kill -9)."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from rnnsim import sweep
from rnnsim.cli import main

SMALL = ["--cell", "rnn", "--hidden", "6", "--input-size", "2", "--classes", "3", "--batch", "2",
         "--lengths", "4,9", "--scales", "0.5,2", "--seeds", "2"]


def run(*args):
    return CliRunner().invoke(main, list(args))


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "res"
    result = run("sweep", *SMALL, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def assert_one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_sweep_writes_results_and_reports(results):
    rows = sweep.read_summary(results)
    assert len(rows) == 8
    assert sweep.read_manifest(results)["config"]["hidden"] == 6


def test_progress_is_hidden_when_stderr_is_not_a_terminal(tmp_path):
    result = run("sweep", *SMALL, "--out", str(tmp_path / "r"))
    assert result.exit_code == 0
    assert result.stderr == ""
    assert "8 points (8 computed, 0 already done)" in result.stdout
    quiet = run("sweep", *SMALL, "--out", str(tmp_path / "q"), "--quiet")
    assert quiet.exit_code == 0 and quiet.output == ""


BAD_FLAGS = [
    ("--lengths", "1:2"), ("--lengths", "10,abc"), ("--lengths", "5,5"), ("--scales", "0.5:x:3"),
    ("--scales", "1:3"), ("--hidden", "0"), ("--batch", "-1"), ("--classes", "0"), ("--input-size", "0"),
    ("--seeds", "0"), ("--scales", "0,1"), ("--scales", "-1"), ("--lengths", "0,5"), ("--threshold", "0"),
    ("--input-scale", "-1"), ("--hidden", "many"), ("--cell", "gru"), ("--cell", "rnn,rnn"),
    ("--init", "xavier"), ("--loss", "mean"), ("--dtype", "float16"), ("--device", "gpu"),
]


@pytest.mark.parametrize("flag,value", BAD_FLAGS)
def test_bad_values_give_one_line_and_leave_the_folder_alone(results, flag, value):
    before = snapshot(results)
    assert_one_line_error(run("sweep", *SMALL, flag, value, "--out", str(results), "--resume"))
    assert snapshot(results) == before


def test_bad_config_files(results, tmp_path):
    before = snapshot(results)
    bad = {
        "missing.toml": None,
        "broken.toml": "hidden = = 4\n",
        "unknown.toml": "hiden = 4\n",
        "underscore.toml": "input_scale = 1.0\n",
        "badvalue.toml": 'init = "xavier"\n',  # not among SMALL's flags, so the file's value is used
        "badquiet.toml": 'quiet = "yes"\n',
        "baddevice.toml": 'device = "gpu"\n',
    }
    for name, text in bad.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        result = run("sweep", *SMALL, "--config", str(path), "--out", str(results), "--resume")
        assert_one_line_error(result)
        assert name in result.stderr or "device" in result.stderr or "init" in result.stderr
    assert snapshot(results) == before


def test_existing_folder_without_resume_or_overwrite(results):
    before = snapshot(results)
    result = run("sweep", *SMALL, "--out", str(results))
    assert_one_line_error(result)
    assert "--resume" in result.stderr and "--overwrite" in result.stderr
    assert_one_line_error(run("sweep", *SMALL, "--out", str(results), "--resume", "--overwrite"))
    assert snapshot(results) == before


def test_resume_with_another_configuration(results):
    before = snapshot(results)
    result = run("sweep", *SMALL, "--hidden", "7", "--out", str(results), "--resume")
    assert_one_line_error(result)
    assert "different configuration" in result.stderr and "hidden" in result.stderr
    assert snapshot(results) == before


def test_folder_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    assert_one_line_error(run("sweep", *SMALL, "--out", str(blocker / "sub")))
    assert_one_line_error(run("sweep", *SMALL, "--out", str(blocker)))
    assert blocker.read_text() == "keep"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder(results, tmp_path):
    import shutil
    out = tmp_path / "ro"
    shutil.copytree(results, out)
    before = snapshot(out)
    os.chmod(out, 0o555)
    try:
        assert_one_line_error(run("sweep", *SMALL, "--out", str(out), "--overwrite"))
    finally:
        os.chmod(out, 0o755)
    assert snapshot(out) == before


def test_resume_and_overwrite(results, tmp_path):
    import shutil
    out = tmp_path / "again"
    shutil.copytree(results, out)
    result = run("sweep", *SMALL, "--out", str(out), "--resume")
    assert result.exit_code == 0 and "0 computed, 8 already done" in result.stdout
    assert snapshot(out)["summary.csv"] == snapshot(results)["summary.csv"]
    result = run("sweep", *SMALL, "--lengths", "3", "--out", str(out), "--overwrite")
    assert result.exit_code == 0
    assert {r["T"] for r in sweep.read_summary(out)} == {3}


def test_config_file_gives_defaults_and_flags_win(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('cell = "rnn"\nhidden = 5\nlengths = [3, 6]\nscales = "1:2:2"\nseeds = 1\nbatch = 2\n'
                   f'input-scale = 0.5\nout = "{(tmp_path / "from_toml").as_posix()}"\nquiet = true\n')
    result = run("sweep", "--config", str(cfg), "--hidden", "4", "--lengths", "7")
    assert result.exit_code == 0, result.output
    assert result.output == ""  # quiet from the file
    config = sweep.read_manifest(tmp_path / "from_toml")["config"]
    assert config["hidden"] == 4 and config["lengths"] == [7]           # flags win
    assert config["input-scale"] == 0.5 and config["scales"] == [1.0, 2.0]  # file beats defaults
    assert config["classes"] == sweep.DEFAULTS["classes"]                # defaults fill the rest


def test_cuda_without_gpu_is_a_one_line_error(tmp_path):
    from rnnsim.engine import resolve_device
    try:
        resolve_device("cuda")
    except RuntimeError:
        result = run("sweep", *SMALL, "--device", "cuda", "--out", str(tmp_path / "gpu"))
        assert_one_line_error(result)
        assert not (tmp_path / "gpu").exists()
    else:
        pytest.skip("a GPU is usable here")


def test_kill_9_loses_at_most_the_points_in_flight(tmp_path):
    out = tmp_path / "killed"
    args = ["sweep", "--cell", "rnn", "--hidden", "16", "--batch", "4", "--lengths", "20:1500:40",
            "--scales", "0.5,1.9", "--seeds", "2", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", "from rnnsim.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


# ------------------------------------------------------------------ theory and plot commands

def test_theory_table_and_json():
    result = run("theory", "--scale", "1,2")
    assert result.exit_code == 0
    assert "critical scale S_c (chi = 1): 1.855589" in result.stdout
    assert "vanishing" in result.stdout and "exploding" in result.stdout
    data = json.loads(run("theory", "--scale", "1.5", "--bias-scale", "0.1", "--forget-bias", "1", "--json").stdout)
    assert data["bias_scale"] == 0.1 and len(data["points"]) == 1
    assert 0 < data["points"][0]["chi"] < 1 and data["points"][0]["timescale"] > 0
    assert data["lstm_forget_timescale"] == pytest.approx(-1 / math.log(1 / (1 + math.exp(-1))), rel=1e-12)


@pytest.mark.parametrize("args", [["--scale", "0"], ["--scale", "x"], [], ["--scale", "1", "--input-scale", "-1"],
                                  ["--scale", "1", "--bias-scale", "nan"]])
def test_theory_bad_input(args):
    assert_one_line_error(run("theory", *args))


def test_plot_command(results, tmp_path):
    import shutil
    out = tmp_path / "p"
    shutil.copytree(results, out)
    result = run("plot", str(out), "--scales", "2")
    assert result.exit_code == 0, result.output
    written = result.stdout.split()
    assert sorted(os.path.basename(p) for p in written) == sorted(
        ["phase_rnn.png", "phase_rnn.pdf", "profiles.png", "profiles.pdf", "rates.png", "rates.pdf"])
    for path in written:
        assert os.path.getsize(path) > 1000
    assert_one_line_error(run("plot", str(tmp_path / "nothing")))
    assert_one_line_error(run("plot", str(out), "--scales", "-1"))
