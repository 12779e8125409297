"""The sweep's configuration: parsers, SweepConfig, TOML files, data streams, rates and regimes."""
import math

import numpy as np
import pytest

from rnnsim import sweep
from rnnsim.sweep import SweepConfig, parse_cells, parse_lengths, parse_scales

# ------------------------------------------------------------------ parsing

def test_parse_lengths():
    assert parse_lengths("100,25,50") == (25, 50, 100)
    assert parse_lengths("10:1000:3") == (10, 100, 1000)
    assert parse_lengths("7:7:1") == (7,)
    assert parse_lengths([3, 1]) == (1, 3)
    assert parse_lengths(" 4 , 8 ") == (4, 8)


@pytest.mark.parametrize("bad", ["", "1:2", "1:2:3:4", "a,b", "10,,20", "0,5", "-3", "5,5", "1:3:10",
                                 "10:1:3", "2.5", "1:10:0", "3:9:1", [], [2.5], ":5:2"])
def test_parse_lengths_rejects(bad):
    with pytest.raises(ValueError, match="lengths"):
        parse_lengths(bad)


def test_parse_scales():
    scales = parse_scales("0.5:3:26")
    assert len(scales) == 26 and scales[1] == 0.6 and scales[-1] == 3.0  # tidy, exact keys
    assert parse_scales("2,0.5") == (0.5, 2.0)
    assert parse_scales([1, 2.5]) == (1.0, 2.5)


@pytest.mark.parametrize("bad", ["", "0", "-1,2", "nan", "inf", "1:2:x", "1:2", "2:1:3", "1,1", "0:2:3", "a"])
def test_parse_scales_rejects(bad):
    with pytest.raises(ValueError, match="scales"):
        parse_scales(bad)


def test_parse_cells():
    assert parse_cells("lstm,rnn") == ("rnn", "lstm")
    assert parse_cells(["lstm"]) == ("lstm",)
    for bad in ("elman", "rnn,rnn", "rnn,", "", "rnn:lstm"):
        with pytest.raises(ValueError, match="cell"):
            parse_cells(bad)
    with pytest.raises(TypeError, match="cell"):  # a wrong type, not a bad value
        parse_cells(3)


# ------------------------------------------------------------------ configuration

def test_defaults_round_trip_through_the_manifest_form():
    config = SweepConfig.from_mapping({})
    assert SweepConfig.from_mapping(config.as_dict()) == config
    assert set(config.as_dict()) == set(sweep.DEFAULTS)


@pytest.mark.parametrize("key,value,error,match", [
    ("hidden", 0, ValueError, "hidden"), ("batch", -2, ValueError, "batch"),
    ("seeds", 0, ValueError, "seeds"),
    ("classes", True, TypeError, "classes"),  # bool is never a number: a wrong type
    ("input-size", 2.5, ValueError, "input-size"), ("init", "xavier", ValueError, "init"),
    ("loss", "mean", ValueError, "loss"), ("dtype", "float16", ValueError, "dtype"),
    ("threshold", 0, ValueError, "threshold"), ("input-scale", -1, ValueError, "input-scale"),
    ("bias-scale", math.nan, ValueError, "bias-scale"), ("forget-bias", "x", ValueError, "forget-bias"),
    ("input_scale", 1.0, ValueError, "unknown configuration key"),
])
def test_config_rejects(key, value, error, match):
    with pytest.raises(error, match=match):
        SweepConfig.from_mapping({key: value})


def test_load_config_file(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('hidden = 32\nlengths = [10, 20]\ninput-scale = 0.5\ndevice = "cpu"\n')
    assert sweep.load_config_file(good) == {"hidden": 32, "lengths": [10, 20], "input-scale": 0.5,
                                            "device": "cpu"}
    assert SweepConfig.from_mapping(sweep.load_config_file(good)).lengths == (10, 20)
    underscore = tmp_path / "u.toml"
    underscore.write_text("input_scale = 0.5\n")
    with pytest.raises(ValueError, match="did you mean 'input-scale'"):
        sweep.load_config_file(underscore)
    broken = tmp_path / "broken.toml"
    broken.write_text("hidden = = 3\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        sweep.load_config_file(broken)
    with pytest.raises(OSError, match="cannot read config file"):
        sweep.load_config_file(tmp_path / "missing.toml")


# ------------------------------------------------------------------ measures

def test_make_data_is_reproducible_and_keyed_by_T_and_seed():
    x1, y1 = sweep.make_data(20, 3, 4, 5, 7)
    x2, y2 = sweep.make_data(20, 3, 4, 5, 7)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert x1.shape == (4, 20, 5) and y1.shape == (4,) and y1.min() >= 0 and y1.max() < 7
    assert not np.array_equal(sweep.make_data(20, 4, 4, 5, 7)[0], x1)
    assert not np.array_equal(sweep.make_data(21, 3, 4, 5, 7)[0][:, :20], x1)
    assert sweep.make_data(20, 3, 4, 5, 7, loss="every")[1].shape == (4, 20)
    assert sweep.make_data(20, 3, 4, 5, 7, dtype="float32")[0].dtype == np.float32


def test_fit_rate_recovers_a_linear_profile():
    T = 40
    t = np.arange(T + 1)
    profile = np.stack([5.0 - 0.3 * (T - t), 2.0 + 0.1 * (T - t)])  # ln||g_t||, rates -0.3, +0.1
    profile[:, :5] += 3.0  # a transient at small t is outside the fit window
    assert sweep.fit_rate(profile, T) == pytest.approx([-0.3, 0.1], abs=1e-12)
    assert sweep.rate_window(1) == (0, 1) and sweep.rate_window(100) == (25, 75)


@pytest.mark.parametrize("T", [12, 40, 400])
def test_a_rate_depends_on_its_own_profile_alone(T):
    """The same profile gives the same bits in any call: a sweep cut into other calls
    (a cluster's tasks) must give the local sweep's rates. A matrix product over the
    rows did not (about half of the rows differed in the last bit from the row alone)."""
    rng = np.random.default_rng(T)
    profiles = rng.standard_normal((13, 3, T + 1)).cumsum(axis=-1)  # (networks, sequences, t)
    together = sweep.fit_rate(profiles, T)  # per sequence, (13, 3)
    means = profiles.mean(axis=1)
    of_means = sweep.fit_rate(means, T)  # per network, (13,): the summary's rate
    for e in range(13):
        assert np.array_equal(sweep.fit_rate(profiles[e:e + 1], T)[0], together[e])
        assert sweep.fit_rate(means[e:e + 1], T)[0] == of_means[e]
        for b in range(3):
            assert sweep.fit_rate(profiles[e, b], T) == together[e, b]


def test_regime_of():
    assert list(sweep.regime_of([-2.0, -0.5, 0.5, 1.0, 2.0], 1.0)) == [
        "vanishing", "stable", "stable", "stable", "exploding"]
