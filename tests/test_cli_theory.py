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
