"""`rnnsim plot` through Click's CliRunner: the figures written, and one-line errors."""
import os
import shutil

import pytest
from cli_helpers import assert_one_line_error, run, snapshot


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_plot") / "res"
    result = run("sweep", "--cell", "rnn", "--hidden", "6", "--input-size", "2", "--classes", "3",
                 "--batch", "2", "--lengths", "4,9", "--scales", "0.5,2", "--seeds", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_plot_command(results, tmp_path):
    out = tmp_path / "p"
    shutil.copytree(results, out)
    result = run("plot", str(out), "--scales", "2")
    assert result.exit_code == 0, result.output
    written = result.stdout.split()
    assert sorted(os.path.basename(p) for p in written) == sorted(
        ["phase_rnn.png", "phase_rnn.pdf", "profiles.png", "profiles.pdf", "rates.png", "rates.pdf"])
    for path in written:
        assert os.path.getsize(path) > 1000
    assert not [p for p in out.iterdir() if p.name.startswith(".rnnsim-tmp-")]
    assert_one_line_error(run("plot", str(tmp_path / "nothing")))
    assert not (tmp_path / "nothing").exists()
    before = snapshot(out)
    assert_one_line_error(run("plot", str(out), "--scales", "-1"))
    assert snapshot(out) == before


def test_quiet_lists_nothing(results, tmp_path):
    out = tmp_path / "q"
    shutil.copytree(results, out)
    result = run("plot", str(out), "--quiet")
    assert result.exit_code == 0 and result.output == ""
    assert (out / "rates.pdf").is_file()
