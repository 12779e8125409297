"""rnnsim._parse: the one set of number, list and range parsers (sweep, theory, CLI)."""
import math

import numpy as np
import pytest

from rnnsim import _parse, cells, config
from rnnsim._parse import finite_float, parse_cells, parse_int, parse_lengths, parse_scales, positive_int


@pytest.mark.parametrize("value, expected", [
    (3, 3), (np.int32(7), 7), ("12", 12), (" 12 ", 12), (4.0, 4), ("1e3", 1000), ("-2", -2),
    (np.float64(5), 5),
])
def test_parse_int_accepts_numbers_and_numeric_strings(value, expected):
    result = parse_int("hidden", value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value, error", [
    (True, TypeError), (np.bool_(False), TypeError), ([3], TypeError), (None, TypeError),
    ({"a": 1}, TypeError),
    (2.5, ValueError), ("2.5", ValueError), ("x", ValueError), ("", ValueError), (math.nan, ValueError),
    (math.inf, ValueError), ("inf", ValueError), ("nan", ValueError),
])
def test_parse_int_refuses(value, error):
    with pytest.raises(error, match="^hidden"):
        parse_int("hidden", value)


def test_parse_int_bounds():
    assert positive_int("batch", "1") == 1
    with pytest.raises(ValueError, match=r"^batch must be >= 1, got 0$"):
        positive_int("batch", 0)
    with pytest.raises(ValueError, match=r"^n must be <= 5, got 6$"):
        parse_int("n", 6, maximum=5)


@pytest.mark.parametrize("value, expected", [(0.5, 0.5), ("0.5", 0.5), (" 1e-3 ", 1e-3), (2, 2.0),
                                             (np.float32(0.25), 0.25)])
def test_finite_float_accepts(value, expected):
    assert finite_float("input-scale", value) == expected


@pytest.mark.parametrize("value, error", [
    (True, TypeError), ([1.0], TypeError), (None, TypeError), ("abc", ValueError), (math.nan, ValueError),
    (-math.inf, ValueError), ("1e400", ValueError), (10**400, ValueError), (1j, ValueError),
])
def test_finite_float_refuses(value, error):
    with pytest.raises(error, match="^input-scale"):
        finite_float("input-scale", value)


def test_finite_float_bounds():
    assert finite_float("t", 0.0, minimum=0.0) == 0.0
    with pytest.raises(ValueError, match=r"^t must be > 0, got 0$"):
        finite_float("t", 0.0, minimum=0.0, strict=True)
    with pytest.raises(ValueError, match=r"^t must be >= 0, got -1$"):
        finite_float("t", -1, minimum=0.0)
    with pytest.raises(ValueError, match=r"^t must be <= 10, got 11$"):
        finite_float("t", 11, maximum=10)


def test_errors_are_one_line_even_for_long_values():
    with pytest.raises(TypeError) as info:
        parse_int("hidden", list(range(1000)))
    assert "\n" not in str(info.value) and len(str(info.value)) < 120


def test_lists_and_ranges_take_a_name():
    assert parse_lengths("3,1", name="T") == (1, 3)
    with pytest.raises(ValueError, match="^scale:"):
        parse_scales("x", name="scale")
    assert parse_scales(np.array([2.0, 1.0])) == (1.0, 2.0)
    assert parse_lengths("1e1,20") == (10, 20)


def test_scales_and_lengths_have_upper_bounds():
    assert parse_scales(f"{_parse.MAX_SCALE:g}") == (_parse.MAX_SCALE,)
    for bad in ("1e7", "0.5:1e308:3", "1e308"):
        with pytest.raises(ValueError, match="scales must be <= 1e"):
            parse_scales(bad)
    with pytest.raises(ValueError, match="lengths must be <="):
        parse_lengths(str(_parse.MAX_LENGTH + 1))
    with pytest.raises(ValueError, match="cannot hold 5 distinct integers"):
        parse_lengths("1:3:5")


def test_huge_ranges_are_refused_before_they_are_made(monkeypatch):
    monkeypatch.setattr(config, "MEMORY_LIMIT_BYTES", 1 << 20)
    for parse, text in ((parse_scales, "0.5:3:1000000000"), (parse_lengths, "1:1000000000000:1000000000")):
        with pytest.raises(ValueError, match=r"a range of 1000000000 values needs about .* GiB of memory "
                                             r"but only 1 MiB is available"):
            parse(text)
    assert len(parse_scales("0.5:3:1000")) == 1000  # 128 kB: fits


def test_parse_cells_follows_the_registry():
    assert parse_cells(",".join(reversed(cells.names()))) == cells.names()
    assert parse_cells([" " + cells.names()[0]]) == cells.names()[:1]
    twice = f"{cells.names()[0]},{cells.names()[0]}"
    for bad, error in ((3, TypeError), (None, TypeError), ([1], TypeError), ([], ValueError),
                       ("", ValueError), ("elman", ValueError), (twice, ValueError)):
        with pytest.raises(error, match="cell"):
            parse_cells(bad)
