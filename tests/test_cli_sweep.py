"""`rnnsim sweep` through Click's CliRunner: reports, flags, TOML files, bad values, existing folders."""
import os

import pytest
from cli_helpers import assert_one_line_error, run, snapshot

from rnnsim import cells, sweep

SMALL = ["--cell", "rnn", "--hidden", "6", "--input-size", "2", "--classes", "3", "--batch", "2",
         "--lengths", "4,9", "--scales", "0.5,2", "--seeds", "2"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "res"
    result = run("sweep", *SMALL, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


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


def test_progress_bar_counts_the_cells_costs(tmp_path, monkeypatch):
    """The registry's costs are floats (lstm 3.0): the bar must take them (it raised TypeError)."""
    import click

    seen = {}
    real = click.progressbar

    def recording(*args, **kwargs):
        bar = real(*args, **kwargs)
        seen["length"] = kwargs["length"]
        return bar

    monkeypatch.setattr(click, "progressbar", recording)
    result = run("sweep", *SMALL, "--cell", ",".join(cells.names()), "--out", str(tmp_path / "p"))
    assert result.exit_code == 0, result.output
    expected = sum(cells.get(c).cost for c in cells.names()) * (4 + 9) * 2 * 2  # cost x T x scales x seeds
    assert seen["length"] == round(expected)


BAD_FLAGS = [
    ("--lengths", "1:2"), ("--lengths", "10,abc"), ("--lengths", "5,5"), ("--scales", "0.5:x:3"),
    ("--scales", "1:3"), ("--hidden", "0"), ("--batch", "-1"), ("--classes", "0"), ("--input-size", "0"),
    ("--seeds", "0"), ("--scales", "0,1"), ("--scales", "-1"), ("--lengths", "0,5"), ("--threshold", "0"),
    ("--input-scale", "-1"), ("--hidden", "many"), ("--cell", "elman"), ("--cell", "rnn,rnn"),
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


def test_resume_and_overwrite_flags_reach_the_library(results, tmp_path):
    """What resume and overwrite do is tested in test_sweep.py; here, the flags and the report."""
    import shutil
    out = tmp_path / "again"
    shutil.copytree(results, out)
    result = run("sweep", *SMALL, "--out", str(out), "--resume")
    assert result.exit_code == 0 and "0 computed, 8 already done" in result.stdout
    assert "nothing left to do" in result.stdout
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


def test_flags_beat_the_files_run_keys(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'cell = "rnn"\nhidden = 3\nlengths = "3"\nscales = "1"\nseeds = 1\nbatch = 1\n'
                   f'out = "{(tmp_path / "file_out").as_posix()}"\ndevice = "auto"\n')
    result = run("sweep", "--config", str(cfg), "--out", str(tmp_path / "flag_out"), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "file_out").exists()
    assert sweep.read_manifest(tmp_path / "flag_out")["device"] == "cpu"


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


def test_gated_and_measure_flags_reach_the_configuration(tmp_path):
    out = tmp_path / "m"
    result = run("sweep", *SMALL, "--cell", "gru", "--update-bias", "0.5", "--measure", "lyapunov,rates",
                 "--lyap-k", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    config = sweep.read_manifest(out)["config"]
    assert config["update-bias"] == 0.5 and config["lyap-k"] == 2
    assert config["measure"] == ["gradients", "mean_field", "rates", "lyapunov"]
    rows = sweep.read_summary(out)
    assert {"lyap_max", "lyap_k", "rate_mean", "rate_lo"} <= set(rows[0]) and "sigma_max" not in rows[0]
    again = run("sweep", *SMALL, "--cell", "gru", "--update-bias", "0.5", "--measure", "rates,lyapunov",
                "--lyap-k", "2", "--out", str(out), "--resume")
    assert again.exit_code == 0 and "nothing left to do" in again.stdout  # the order of the list is free
