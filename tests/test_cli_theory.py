"""`rnnsim theory` through Click's CliRunner: table, JSON, bounds, and bad input."""
import json
import math

import pytest
from cli_helpers import assert_one_line_error, run


def test_theory_table_and_json():
    result = run("theory", "--scale", "1,2")
    assert result.exit_code == 0
    assert "critical scale S_c (chi = 1): 1.855589" in result.stdout
    assert "vanishing" in result.stdout and "exploding" in result.stdout
    data = json.loads(run("theory", "--scale", "1.5", "--bias-scale", "0.1", "--forget-bias", "1",
                          "--json").stdout)
    assert data["bias_scale"] == 0.1 and len(data["points"]) == 1
    assert 0 < data["points"][0]["chi"] < 1 and data["points"][0]["timescale"] > 0
    assert data["lstm_forget_timescale"] == pytest.approx(-1 / math.log(1 / (1 + math.exp(-1))), rel=1e-12)


def test_json_holds_no_inf_or_nan():
    """A forget bias whose sigmoid rounds to 1 has an infinite timescale: JSON null, not a crash."""
    result = run("theory", "--scale", "1", "--forget-bias", "800", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["lstm_forget_timescale"] is None


def test_largest_allowed_scale_is_exploding_and_finite():
    result = run("theory", "--scale", "1e6", "--input-scale", "1e6", "--json")
    assert result.exit_code == 0, result.output
    (point,) = json.loads(result.stdout)["points"]
    assert point["regime"] == "exploding" and math.isfinite(point["chi"]) and point["chi"] > 1


@pytest.mark.parametrize("args", [["--scale", "0"], ["--scale", "x"], [],
                                  ["--scale", "1", "--input-scale", "-1"],
                                  ["--scale", "1", "--bias-scale", "nan"]])
def test_theory_bad_input(args):
    assert_one_line_error(run("theory", *args))


@pytest.mark.parametrize("args, words", [
    (["--scale", "1e308"], "scale must be <= 1e+06"),
    (["--scale", "1", "--input-scale", "1e200"], "input-scale must be <= 1e+06"),
    (["--scale", "1", "--input-scale", "1e200", "--json"], "input-scale must be <= 1e+06"),
    (["--scale", "1", "--forget-bias", "1e400"], "forget-bias must be finite"),
    (["--scale", "1", "--bias-scale", "inf"], "bias-scale must be finite"),
])
def test_overflowing_numbers_are_refused(args, words):
    """Issue 8 B: these gave OverflowError tracebacks, or rows of inf/NaN labelled 'critical'."""
    assert_one_line_error(run("theory", *args), words)


def test_gated_cells_table_and_json():
    from rnnsim import theory_gated
    result = run("theory", "--cell", "lstm", "--scale", "0.5,3", "--forget-bias", "1")
    assert result.exit_code == 0, result.output
    assert "Q_h" in result.stdout and "Q_c" in result.stdout and "annealed" in result.stdout
    s_c = theory_gated.gated_critical_scale("lstm", 1.0, 0.0, 1.0)
    assert f"critical scale S_c (chi = 1): {s_c:.6f}" in result.stdout
    assert "ln sigmoid(b_f) = -0.31326" in result.stdout
    data = json.loads(run("theory", "--cell", "gru", "--scale", "1,2", "--update-bias", "0.5",
                          "--json").stdout)
    assert data["cell"] == "gru" and data["update_bias"] == 0.5 and len(data["points"]) == 2
    expected = theory_gated.gru_mean_field(2.0, 1.0, 0.0, 0.5)
    point = data["points"][1]
    assert point["chi"] == expected["chi"] and point["q_h"] == expected["q_h"]
    assert point["rate"] == pytest.approx(0.5 * math.log(expected["chi"]))
    assert data["critical_scale"] == pytest.approx(theory_gated.gated_critical_scale("gru", 1.0, 0.0, 0.5))


def test_no_critical_scale_is_none():
    """A gru with a strong update bias and no input: χ stays below 1 for every S up to 50."""
    result = run("theory", "--cell", "lstm", "--scale", "1", "--input-scale", "0", "--forget-bias", "-3")
    assert result.exit_code == 0, result.output
    data = json.loads(run("theory", "--cell", "lstm", "--scale", "1", "--input-scale", "0",
                          "--forget-bias", "-3", "--json").stdout)
    line = next(x for x in result.stdout.splitlines() if x.startswith("critical scale"))
    if data["critical_scale"] is None:
        assert "none" in line
    else:
        assert f"{data['critical_scale']:.6f}" in line


def test_no_fixed_point_is_null_in_json_and_explained_in_the_table():
    data = json.loads(run("theory", "--cell", "lstm", "--scale", "1", "--forget-bias", "800",
                          "--json").stdout)
    assert data["points"][0]["chi"] is None and data["critical_scale"] is None
    table = run("theory", "--cell", "lstm", "--scale", "1", "--forget-bias", "800")
    assert table.exit_code == 0 and "no fixed point" in table.stdout


@pytest.mark.parametrize("args, words", [
    (["--cell", "gru", "--scale", "1", "--forget-bias", "1"], "--forget-bias applies to --cell lstm"),
    (["--cell", "lstm", "--scale", "1", "--update-bias", "1"], "--update-bias applies to --cell gru"),
    (["--cell", "rnn", "--scale", "1", "--update-bias", "1"], "--update-bias applies to --cell gru"),
    (["--cell", "gru", "--scale", "1", "--update-bias", "nan"], "update-bias must be finite"),
    (["--cell", "lstm", "--scale", "1", "--forget-bias", "2e6"], "forget-bias must be <= 1e+06"),
    (["--cell", "elman", "--scale", "1"], "'elman' is not one of"),
    (["--cell", "gru", "--scale", "0"], "scale must be > 0"),
])
def test_gated_bad_input(args, words):
    assert_one_line_error(run("theory", *args), words)
