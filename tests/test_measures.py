"""The optional measures (rates, lyapunov, pascanu), the gated cells' mean field in the sweep, the
bootstrap against known answers, and folders written before these existed."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import rnnsim
from rnnsim import cells, sweep, theory
from rnnsim.sweep import SweepConfig, bootstrap, measures

RESULTS = Path(__file__).resolve().parents[1] / "results"
# The two-cell reference folder as committed before the gru, --update-bias and --measure
# existed (manifest, summary and profiles; no figures): what an older rnnsim wrote.
OLD_RESULTS = Path(__file__).resolve().parent / "data" / "results_v1"
SMALL = {"cell": ",".join(cells.names()), "hidden": 8, "input-size": 3, "classes": 4, "batch": 4,
         "lengths": "6,20", "scales": "0.5,2.5", "seeds": 2, "forget-bias": 0.5, "update-bias": -0.5,
         "measure": "rates,lyapunov,pascanu", "lyap-k": 3}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("measures") / "run"
    sweep.run_sweep(SMALL, out)
    return out


def _key(row):
    return row["cell"], row["T"], row["scale"], row["seed"]


# ------------------------------------------------------------------ configuration

def test_measure_and_new_keys_parse_and_validate():
    config = SweepConfig.from_mapping(SMALL)
    assert config.measure == ("gradients", "mean_field", "rates", "lyapunov", "pascanu")
    assert SweepConfig.from_mapping({"measure": "lyapunov"}).measure == ("gradients", "mean_field",
                                                                         "lyapunov")
    assert config.gate_bias("lstm") == {"forget_bias": 0.5}
    assert config.gate_bias("gru") == {"update_bias": -0.5}
    assert config.gate_bias("rnn") == {}
    assert SweepConfig.from_mapping({}).update_bias == 0.0 and SweepConfig.from_mapping({}).lyap_k == 1
    for bad, error, words in [({"measure": "gradient"}, ValueError, "unknown measure 'gradient'"),
                              ({"measure": "rates,rates"}, ValueError, "appears twice"),
                              ({"measure": "rates,"}, ValueError, "malformed"),
                              ({"measure": 3}, TypeError, "measure"),
                              ({"lyap-k": 2}, ValueError, "add --measure lyapunov"),
                              ({"lyap-k": 0, "measure": "lyapunov"}, ValueError, "lyap-k"),
                              ({"lyap-k": 17, "measure": "lyapunov", "hidden": 8, "cell": "rnn"}, ValueError,
                               "lyap-k must be <= 8"),
                              ({"update-bias": "x"}, ValueError, "update-bias"),
                              ({"update-bias": 1e7}, ValueError, r"update-bias must be <= 1e\+06")]:
        with pytest.raises(error, match=words):
            SweepConfig.from_mapping(bad)
    # the lstm's state (h, c) has 2H dimensions
    assert SweepConfig.from_mapping({"lyap-k": 16, "measure": "lyapunov", "hidden": 8,
                                     "cell": "lstm"}).lyap_k == 16


def test_columns_follow_the_chosen_measures(run):
    config = SweepConfig.from_mapping(SMALL)
    rows = sweep.read_summary(run, config)
    assert tuple(rows[0]) == measures.column_names(config.measure)
    assert len(rows) == config.n_points
    for r in rows:
        assert all(r[c] is not None
                   for c in ("rate_lo", "rate_mean", "log10_ratio_hi", "lyap_max", "sigma_max"))


# ------------------------------------------------------------------ mean field of every cell with a theory

def test_every_cell_with_a_theory_gets_mean_field_columns_with_its_gate_bias(run):
    config = SweepConfig.from_mapping(SMALL)
    for r in sweep.read_summary(run, config):
        module = theory.for_cell(r["cell"])
        assert module is not None  # every registered cell has one today
        # bitwise: the same function over the sweep's array of scales
        mf = module.mean_field_of(r["cell"], np.array(config.scales), 1.0, 0.0, config.gate_bias(r["cell"]))
        expected = mf["chi"][config.scales.index(r["scale"])]
        assert r["mf_chi"] == expected
        assert r["mf_rate"] == 0.5 * math.log(expected)
    lstm = next(r for r in sweep.read_summary(run) if r["cell"] == "lstm")
    assert lstm["mf_chi"] == theory.lstm_mean_field(lstm["scale"], 1.0, 0.0, 0.5)["chi"]
    gru = next(r for r in sweep.read_summary(run) if r["cell"] == "gru")
    assert gru["mf_chi"] == theory.gru_mean_field(gru["scale"], 1.0, 0.0, -0.5)["chi"]


def test_theory_applies_comes_from_the_registry(monkeypatch):
    config = SweepConfig.from_mapping({})
    assert [c for c in cells.names() if config.theory_applies(c)] == [c for c in cells.names()
                                                                      if cells.get(c).theory]
    assert theory.for_cell("rnn") is theory and theory.for_cell("lstm").__name__ == "rnnsim.theory_gated"
    assert not SweepConfig.from_mapping({"init": "orthogonal"}).theory_applies("gru")


def test_the_update_bias_reaches_the_gru_networks(run):
    row = next(r for r in sweep.read_summary(run) if r["cell"] == "gru" and r["T"] == 6 and r["seed"] == 1)
    params = rnnsim.init_params("gru", 8, 3, 4, 1, scale=row["scale"], forget_bias=0.5, update_bias=-0.5,
                                seed=1)
    x, y = sweep.make_data(6, 1, 4, 3, 4)
    g = rnnsim.gradients("gru", params, x[None], y[None])
    ratio = (g["log_grad_norm"][0, :, 0] - g["log_grad_norm"][0, :, 6]) / math.log(10)
    assert row["log10_ratio"] == pytest.approx(ratio.mean(), rel=1e-12)
    other = rnnsim.init_params("gru", 8, 3, 4, 1, scale=row["scale"], update_bias=0.0, seed=1)
    assert not np.array_equal(other["bias_ih_l0"], params["bias_ih_l0"])


def _reproduction_tolerance(column, committed_row):
    """Relative tolerance for ``column`` of a results/ row recomputed on another CPU kind.

    The CPU kind changes the last bits (vector widths differ: the results were made on an
    Intel Xeon with AVX-512, CI also runs on AMD EPYCs with and without it), and most
    columns then agree to ~1e-12. The Lyapunov columns follow one trajectory of the forward
    map for T steps, and a chaotic network (λ_max > 0) grows a last-bit difference in its
    states by up to exp(λ_max T): seen on an AMD EPYC (Zen 3, AVX2) against the committed
    rnn row at scale 3.0, T=100 (λ_max ≈ 0.21, growth ≈ 1e9), 2.5e-6 relative. So those
    columns get 1e-13 · exp(λ T) with λ the upper end of the row's interval, and never less
    than the others' 1e-10.
    """
    if column.startswith("lyap"):
        growth = math.exp(max(0.0, committed_row["lyap_max_hi"]) * committed_row["T"])
        return max(1e-10, 1e-13 * growth)
    return 1e-10


def test_rows_reproduce_the_committed_results(tmp_path):
    """The committed results/ (every cell, every measure) is reproduced from its manifest's
    configuration, at two of its lengths: to 1e-10, or for the Lyapunov columns of chaotic
    networks to the growth of a last-bit difference (:func:`_reproduction_tolerance`)."""
    committed = {_key(r): r for r in sweep.read_summary(RESULTS)}
    config = sweep.read_manifest(RESULTS)["config"]
    sweep.run_sweep({**config, "lengths": "10,100"}, tmp_path / "again")
    rows = sweep.read_summary(tmp_path / "again")
    assert len(rows) == 2 * len(config["cell"]) * len(config["scales"]) * config["seeds"]
    for row in rows:
        old = committed[_key(row)]
        for column, value in row.items():
            if isinstance(value, float):
                rel = _reproduction_tolerance(column, old)
                assert value == pytest.approx(old[column], rel=rel, abs=1e-12), (row["cell"], column)
            else:
                assert value == old[column], (row["cell"], column)


def test_the_reproduction_tolerance_widens_only_for_chaotic_lyapunov_columns():
    """A contracting row (λ_max < 0) keeps 1e-10 in every column; a chaotic one widens its
    Lyapunov columns by exp(λ T) and nothing else."""
    contracting = {"T": 100, "lyap_max_hi": -0.3}
    chaotic = {"T": 100, "lyap_max_hi": 0.2}
    assert _reproduction_tolerance("lyap_max", contracting) == 1e-10
    assert _reproduction_tolerance("log10_ratio", chaotic) == 1e-10
    assert _reproduction_tolerance("lyap_max", chaotic) == pytest.approx(1e-13 * math.exp(20.0))


def test_rnn_and_lstm_rows_are_those_of_the_two_cell_reference():
    """The regenerated results/ keeps the numbers of the reference made before the registry:
    the rnn's every column, the lstm's gradient columns (its mean-field columns were empty)."""
    new = {_key(r): r for r in sweep.read_summary(RESULTS)}
    old_rows = sweep.read_summary(OLD_RESULTS)
    assert {r["cell"] for r in old_rows} == {"rnn", "lstm"}
    for old in old_rows:
        row = new[_key(old)]
        for column, value in old.items():
            if old["cell"] == "lstm" and column.startswith("mf_"):
                assert value in (None, "")
            elif isinstance(value, float):
                assert row[column] == pytest.approx(value, rel=1e-10, abs=1e-12), (old["cell"], column)
            else:
                assert row[column] == value, (old["cell"], column)


# ------------------------------------------------------------------ folders written before these keys existed

def test_an_old_results_folder_resumes_and_compares_with_missing_keys_as_defaults(tmp_path):
    out = tmp_path / "results"
    shutil.copytree(OLD_RESULTS, out)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    stored = sweep.read_manifest(out)["config"]
    assert "update-bias" not in stored and "measure" not in stored  # written before they existed
    config = SweepConfig.from_mapping(stored)
    assert config.same_results_as(stored) == []
    stats = sweep.run_sweep(stored, out, resume=True)
    assert stats["nothing_to_do"] and stats["points_computed"] == 0
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".rnnsim.lock"} == \
        {k: v for k, v in before.items() if k != ".rnnsim.lock"}
    # An explicit non-default value of a new key is a different configuration.
    with pytest.raises(ValueError, match=r"different configuration \(update-bias differ\)"):
        sweep.run_sweep({**stored, "update-bias": 1.0}, out, resume=True)
    with pytest.raises(ValueError, match=r"different configuration \(measure differ\)"):
        sweep.run_sweep({**stored, "measure": "lyapunov"}, out, resume=True)


def test_a_resume_refreshes_the_theory_columns_of_finished_rows(tmp_path):
    """A folder resumed by a newer rnnsim holds one theory in every row: here the lstm rows of an
    'old' folder lack mean-field values, and a resume that has work to do fills them in."""
    config = {**SMALL, "measure": "gradients", "lyap-k": 1, "lengths": "6", "cell": "rnn,lstm"}
    out = tmp_path / "old"
    sweep.run_sweep(config, out)
    full = sweep.read_summary(out)
    lines = (out / sweep.SUMMARY).read_text().splitlines()
    header = lines[0].split(",")
    blanked = []
    for line in lines[1:-1]:  # drop the last point; blank the lstm's mean field as older versions wrote it
        cells_ = line.split(",")
        if cells_[0] == "lstm":
            for c in ("mf_chi", "mf_rate", "mf_log10_ratio", "mf_regime"):
                cells_[header.index(c)] = ""
        blanked.append(",".join(cells_))
    (out / sweep.SUMMARY).write_text("\n".join([lines[0], *blanked]) + "\n")
    assert sweep.run_sweep(config, out, resume=True)["points_computed"] == 1
    assert sweep.read_summary(out) == full


# ------------------------------------------------------------------ the measures against their definitions

def test_lyapunov_columns_are_rnnsim_lyapunov_on_the_same_networks_and_inputs(run):
    config = SweepConfig.from_mapping(SMALL)
    for cell in cells.names():
        row = next(r for r in sweep.read_summary(run) if r["cell"] == cell and r["T"] == 20 and r["seed"] == 1
                   and r["scale"] == 2.5)
        params = rnnsim.init_params(cell, 8, 3, 4, 1, scale=2.5, forget_bias=0.5, update_bias=-0.5, seed=1)
        x, _ = sweep.make_data(20, 1, 4, 3, 4)
        out = rnnsim.lyapunov(cell, params, x[None], k=3, warmup=measures.lyapunov_warmup(20))
        assert row["lyap_max"] == pytest.approx(out["exponents"][0, 0], rel=1e-12)
        assert row["lyap_k"] == pytest.approx(out["exponents"][0, 2], rel=1e-12)
        assert row["lyap_max_lo"] <= row["lyap_max"] <= row["lyap_max_hi"]
        data = sweep.read_profiles(run, cell, 20, config)
        i = np.flatnonzero((data["scale"] == 2.5) & (data["seed"] == 1))[0]
        np.testing.assert_allclose(data["lyap_spectrum"][i], out["exponents"][0], rtol=1e-12)
        np.testing.assert_allclose(data["lyap_max_seq"][i], out["exponents_per_sequence"][0, :, 0],
                                   rtol=1e-12)
    assert measures.lyapunov_warmup(20) == 5 and measures.lyapunov_warmup(10**4) == 100


def test_rates_columns_against_their_definitions(run):
    config = SweepConfig.from_mapping(SMALL)
    row = next(r for r in sweep.read_summary(run) if r["cell"] == "lstm" and r["T"] == 20 and r["seed"] == 0
               and r["scale"] == 0.5)
    params = rnnsim.init_params("lstm", 8, 3, 4, 1, scale=0.5, forget_bias=0.5, seed=0)
    x, y = sweep.make_data(20, 0, 4, 3, 4)
    log_norm = rnnsim.gradients("lstm", params, x[None], y[None])["log_grad_norm"][0]   # (B, T+1)
    slopes = sweep.fit_rate(log_norm, 20)
    assert row["rate"] == pytest.approx(slopes.mean(), rel=1e-12)  # typical rate = mean of the slopes
    steps = sweep.rate_grid(20)
    y_mean = 0.5 * np.log(np.mean(np.exp(2 * log_norm[:, steps]), axis=0))
    assert row["rate_mean"] == pytest.approx(bootstrap.slope_back(y_mean, steps), rel=1e-10)
    assert row["rate_lo"] <= row["rate"] <= row["rate_hi"]
    assert row["log10_ratio_lo"] <= row["log10_ratio"] <= row["log10_ratio_hi"]
    data = sweep.read_profiles(run, "lstm", 20, config)
    i = np.flatnonzero((data["scale"] == 0.5) & (data["seed"] == 0))[0]
    np.testing.assert_allclose(data["rate_seq"][i], slopes, rtol=1e-12)
    np.testing.assert_allclose(data["log_grad_norm_grid"][i], log_norm[:, steps], rtol=1e-12)


def test_rate_grid():
    assert list(sweep.rate_grid(20)) == list(range(5, 16))
    grid = sweep.rate_grid(1000)
    assert len(grid) == measures.MEAN_RATE_STEPS and grid[0] == 250 and grid[-1] == 750
    assert np.all(np.diff(grid) > 0)


def test_pascanu_columns(run):
    config = SweepConfig.from_mapping(SMALL)
    for r in sweep.read_summary(run, config):
        params = rnnsim.init_params(r["cell"], 8, 3, 4, 1, scale=r["scale"], forget_bias=0.5,
                                    update_bias=-0.5, seed=r["seed"])
        assert r["sigma_max"] == pytest.approx(np.linalg.norm(params["weight_hh_l0"][0], 2), rel=1e-12)
        gamma = cells.get(r["cell"]).pascanu_gamma
        if gamma is not None:
            assert r["pascanu_bound"] == r["sigma_max"] * gamma
        else:
            assert r["pascanu_bound"] is None
    assert cells.get("rnn").pascanu_gamma == 1.0  # |tanh'| <= 1
    assert all(cells.get(c).pascanu_gamma is None for c in cells.names() if cells.get(c).G > 1)


def test_a_contraction_certified_by_the_bound_vanishes():
    """σ_max(W_hh) < 1 for the rnn: every step shrinks the gradient, so ln‖g_t‖ falls at least
    by -ln σ_max per step going back."""
    params = rnnsim.init_params("rnn", 32, 3, 4, 1, scale=0.4, seed=3)
    sigma = np.linalg.norm(params["weight_hh_l0"][0], 2)
    assert sigma < 1
    x, y = sweep.make_data(50, 0, 4, 3, 4)
    log_norm = rnnsim.gradients("rnn", params, x[None], y[None])["log_grad_norm"][0]
    assert np.all(np.diff(log_norm, axis=1) >= math.log(1 / sigma) - 1e-9)  # g_{t-1} <= σ g_t


# ------------------------------------------------------------------ resume and splitting keep the intervals

def test_intervals_do_not_depend_on_calls_or_resume(run, tmp_path, monkeypatch):
    config = {**SMALL, "cell": "rnn,gru", "lengths": "20"}
    reference = {_key(r): r for r in sweep.read_summary(run) if r["cell"] in ("rnn", "gru") and r["T"] == 20}
    monkeypatch.setattr(sweep.plan, "CALL_MEMORY_BYTES", 1)  # one network per call
    sweep.run_sweep(config, tmp_path / "split")
    split = {_key(r): r for r in sweep.read_summary(tmp_path / "split")}
    assert split.keys() == reference.keys()
    for key, row in split.items():
        for column in ("rate_lo", "rate_hi", "rate_mean_lo", "rate_mean_hi", "lyap_max_lo", "lyap_max_hi",
                       "log10_ratio_lo", "sigma_max"):
            assert row[column] == pytest.approx(reference[key][column], rel=1e-12, abs=1e-15), column


# ------------------------------------------------------------------ the bootstrap against known answers

def _synthetic_profiles(rng, E, B, T, rate, step_sd, walk):
    """ln‖g_t‖ = offset + rate·(T - t) + noise: a random walk going back from t = T (walk) or
    independent noise at every step. The typical rate is ``rate`` exactly."""
    k = np.arange(T, -1, -1.0)
    if walk:
        steps = rng.standard_normal((E, B, T)) * step_sd
        back = np.cumsum(steps[..., ::-1], axis=-1)[..., ::-1]
        noise = np.concatenate([back, np.zeros((E, B, 1))], axis=-1)
    else:
        noise = rng.standard_normal((E, B, T + 1)) * step_sd
    return rng.standard_normal((E, B, 1)) * 0.1 + rate * k + noise


def _rates_rows(config, T, points, log_norm):
    call = measures.Call(config, "rnn", T, points, {"gradients": {"log_grad_norm": log_norm}})
    return measures._rates(call, None).rows


def _coverage(rows, column, truth):
    return np.mean([r[f"{column}_lo"] <= truth <= r[f"{column}_hi"] for r in rows])


def test_intervals_cover_a_known_rate_at_about_the_nominal_rate():
    """400 synthetic points with a known typical rate and log10 ratio, through the measure's own
    code: the percentile intervals of B = 16 sequences cover at 90-98% (nominal 95%; the
    percentile interval runs a little short at small B), and those of λ_max likewise."""
    E, B, T, rate = 400, 16, 200, -0.3
    config = SweepConfig.from_mapping({"batch": B, "measure": "rates,lyapunov"})
    rng = np.random.default_rng(11)
    points = tuple((1.0 + 1e-3 * i, 0) for i in range(E))
    log_norm = _synthetic_profiles(rng, E, B, T, rate, 0.1, walk=True)
    rows = _rates_rows(config, T, points, log_norm)
    assert 0.90 <= _coverage(rows, "rate", rate) <= 0.98
    assert 0.88 <= _coverage(rows, "log10_ratio", rate * T / math.log(10)) <= 0.98
    lyap = rng.standard_normal((E, B, 1)) * 0.02 + 0.1
    rows = measures._lyapunov(measures.Call(config, "rnn", T, points,
                                            {"lyapunov": {"exponents_per_sequence": lyap}}), None).rows
    assert 0.90 <= _coverage(rows, "lyap_max", 0.1) <= 0.98
    # the mean rate, where no sequence dominates the mean of ‖g‖² (independent noise per step)
    log_norm = _synthetic_profiles(rng, E, B, T, rate, 0.3, walk=False)
    rows = _rates_rows(config, T, points, log_norm)
    assert 0.90 <= _coverage(rows, "rate_mean", rate) <= 0.98


def test_the_mean_rate_is_biased_when_the_spread_grows():
    """A limit, stated: when ln‖g_t‖ spreads like a random walk (variance growing with the steps
    back), the mean of ‖g‖² over B sequences is dominated by the largest one, and the mean rate
    falls short of the true growth of the mean (rate + σ² per step); no bootstrap fixes a bias.
    The typical rate stays unbiased."""
    E, B, T, rate, sd = 400, 16, 200, -0.3, 0.1
    config = SweepConfig.from_mapping({"batch": B, "measure": "rates"})
    log_norm = _synthetic_profiles(np.random.default_rng(12), E, B, T, rate, sd, walk=True)
    rows = measures._rates(measures.Call(config, "rnn", T, tuple((1.0 + 1e-3 * i, 0) for i in range(E)),
                                         {"gradients": {"log_grad_norm": log_norm}}), None).rows
    truth = rate + sd**2
    assert np.mean([r["rate_mean"] for r in rows]) < truth - 0.002
    assert _coverage(rows, "rate_mean", truth) < 0.8
    assert np.mean(sweep.fit_rate(log_norm, T)) == pytest.approx(rate, abs=0.002)


@pytest.mark.parametrize("networks, sequences, low", [(10, 8, 0.91), (20, 16, 0.91)])
def test_two_level_intervals_cover_a_known_mean(networks, sequences, low):
    """Values = mean + network effect + sequence noise; the two-level bootstrap over networks ×
    sequences covers the mean at about 95% (300 trials)."""
    rng = np.random.default_rng(networks)
    hits = 0
    for _ in range(300):
        x = 0.5 * rng.standard_normal((networks, 1)) + rng.standard_normal((networks, sequences))
        lo, hi = bootstrap.interval(bootstrap.weighted_mean(bootstrap.weights(rng, networks, sequences), x))
        hits += lo <= 0 <= hi
    assert low <= hits / 300 <= 0.99


def test_bootstrap_weights_and_streams():
    w = bootstrap.weights(np.random.default_rng(0), 3, 5, resamples=200)
    assert w.shape == (200, 3, 5) and np.all(w.sum(axis=(1, 2)) == 15)
    assert np.all(bootstrap.weights(np.random.default_rng(0), 1, 5, resamples=50).sum(axis=(1, 2)) == 5)
    a = bootstrap.point_rng("rnn", 10, 0.5, 1).random(3)
    assert np.array_equal(a, bootstrap.point_rng("rnn", 10, 0.5, 1).random(3))
    for other in (("lstm", 10, 0.5, 1), ("rnn", 11, 0.5, 1), ("rnn", 10, 0.5 + 1e-15, 1),
                  ("rnn", 10, 0.5, 2)):
        assert not np.array_equal(a, bootstrap.point_rng(*other).random(3))
    # the log-sum-exp path: drawn squares that all underflow next to one huge sequence
    log_norm = np.array([[[0.0, 0.0, 0.0], [-800.0, -801.0, -802.0]]])
    w = np.array([[[0, 2]], [[1, 1]]]).reshape(2, 1, 2)
    rates = bootstrap.weighted_mean_rate(w, log_norm, np.arange(3))
    assert rates[0] == pytest.approx(1.0) and rates[1] == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ the backward rate is λ_max

@pytest.mark.parametrize("cell, scale", [("rnn", 2.5), ("rnn", 3.0), ("lstm", 1.0), ("lstm", 3.0),
                                         ("gru", 2.5)])
def test_the_backward_gradient_rate_is_lambda_max(tmp_path, cell, scale):
    """At long T (2000 steps, H = 64) the measured rate of ln‖∂L/∂h_t‖ equals the top Lyapunov
    exponent of the same networks on the same inputs: their difference (per sequence, over
    8 networks × 16 sequences, two-level bootstrap) has a narrow 95% interval and is within
    4 bootstrap standard deviations of 0. For the rnn above the critical scale both are
    positive (the chaotic phase).

    Why 4 standard deviations and not the 95% interval: in the chaotic phase the gradient
    kernel's trajectory and the Lyapunov kernel's part within a few hundred steps (their last
    bits differ, and differently on each CPU kind: AVX-512 or AVX2), so each CPU kind draws
    its own sample of both estimates. A 95% interval would miss 0 on about one CPU kind and
    case in 20 by chance alone (seen: 2 networks on an AMD EPYC Zen 3, rnn at 3.0, z = 3.0);
    4 standard deviations miss a true 0 about once in 16,000.
    """
    config = {"cell": cell, "hidden": 64, "lengths": "2000", "scales": str(scale), "seeds": 8, "batch": 16,
              "measure": "rates,lyapunov"}
    sweep.run_sweep(config, tmp_path / "run")
    data = sweep.read_profiles(tmp_path / "run", cell, 2000, SweepConfig.from_mapping(config))
    difference = data["rate_seq"] - data["lyap_max_seq"]                     # (networks, sequences)
    w = bootstrap.weights(bootstrap.point_rng(cell, 2000, scale, 0), *difference.shape)
    replicates = bootstrap.weighted_mean(w, difference)
    lo, hi = bootstrap.interval(replicates)
    assert abs(difference.mean()) <= 4.0 * replicates.std() and hi - lo < 0.01, (difference.mean(), lo, hi)
    if cell == "rnn":
        assert np.all(data["lyap_max_seq"] > 0.05) and data["rate_seq"].mean() > 0.05
    rows = sweep.read_summary(tmp_path / "run")
    for r in rows:  # and the intervals of the two, row by row, overlap
        assert r["rate_lo"] <= r["lyap_max_hi"] and r["lyap_max_lo"] <= r["rate_hi"]
    json.dumps(rows)
