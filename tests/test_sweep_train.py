"""The train:TASK sweep measure: columns, reproducibility per point, resume after kill -9, configuration.

Tiny sizes (H = 6, T = 10 and 12, 6 training steps). The tasks with a cross-entropy
readout (copy-first, temporal-order) are used here; the adding task's MSE loss is the
engine's and is tested with it.
"""
import json
import math
import signal

import numpy as np
import pytest
from test_faults import _run_killed, assert_consistent, assert_same_results

from rnnsim import sweep
from rnnsim.sweep import SweepConfig, plan, training
from rnnsim.train import SOLVED_RATE, task_dims, train

CONFIG = {"cell": "rnn,lstm", "hidden": 6, "input-size": 2, "classes": 3, "batch": 2, "lengths": "10,12",
          "scales": "0.5,1.5", "seeds": 2, "measure": "train:copy-first", "steps": 6, "train-batch": 4,
          "lr": 0.01}

GRADIENTS_ONLY = {k: v for k, v in CONFIG.items() if k not in ("measure", "steps", "train-batch", "lr")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep_train") / "reference"
    sweep.run_sweep(CONFIG, out)
    return out


def test_columns_rows_and_learning_curves(uninterrupted):
    config = SweepConfig.from_mapping(CONFIG)
    rows = sweep.read_summary(uninterrupted, config)
    assert len(rows) == config.n_points == 16
    names = sweep.measures.column_names(config.measure)
    assert [c[0] for c in training.COLUMNS] == [n for n in names if n.startswith("train_")]
    evals = training.eval_steps(config.steps)
    for row in rows:
        assert 0.0 <= row["train_rate"] <= 1.0 and row["train_loss"] > 0
        assert row["train_solved"] == int(row["train_rate"] >= SOLVED_RATE)
        assert row["train_diverged"] == 0 and row["train_diverged_at"] is None
        assert row["train_clipped"] == 0.0 and row["train_skipped"] == 0  # clipping off
        assert row["log10_ratio"] is not None  # the gradient map of the same point is there too
        prof = sweep.read_profiles(uninterrupted, row["cell"], row["T"], config)
        i = np.flatnonzero((prof["scale"] == row["scale"]) & (prof["seed"] == row["seed"]))[0]
        assert prof["train_eval_rate"].shape[1:] == (len(evals),)
        assert prof["train_loss_curve"].shape[1:] == (config.steps,)
        assert prof["train_eval_rate"][i, -1] == row["train_rate"]
        assert prof["train_eval_loss"][i, -1] == row["train_loss"]
        reached = np.flatnonzero(prof["train_eval_rate"][i] >= SOLVED_RATE)
        expected = float(evals[reached[0]]) if reached.size else None
        assert row["train_steps_to_success"] == expected
        curve = prof["train_log10_grad_norm_curve"][i].astype(np.float64)
        assert row["train_log10_grad_norm_init"] == pytest.approx(curve[0], rel=1e-6)
        assert row["train_log10_grad_norm_max"] == pytest.approx(curve.max(), rel=1e-6)


def test_a_point_is_its_own_network_trained_alone(uninterrupted):
    """The row (cell, T, S, s) is train() of init_params(..., seed=s) with the task's sizes, on
    stream s, alone: it does not depend on the rest of the grid (to float64 rounding)."""
    config = SweepConfig.from_mapping(CONFIG)
    rows = sweep.read_summary(uninterrupted, config)
    for cell, T, scale, seed in (("lstm", 12, 1.5, 1), ("rnn", 10, 0.5, 0)):
        row = next(r for r in rows if (r["cell"], r["T"], r["scale"], r["seed"]) == (cell, T, scale, seed))
        params = training.draw_networks(config, cell, [(scale, seed)], task_dims("copy-first"))
        # W_hh is the gradient map's network of the same point
        from rnnsim import init_params
        gradient_net = init_params(cell, 6, 2, 3, 1, scale=scale, forget_bias=1.0, seed=seed)
        np.testing.assert_array_equal(params["weight_hh_l0"], gradient_net["weight_hh_l0"])
        alone = train(cell, params, "copy-first", length=T, steps=6, batch=4, lr=0.01, seed=[seed],
                      eval_batch=training.EVAL_BATCH, eval_every=training.eval_every(6))
        assert row["train_rate"] == pytest.approx(float(alone.final["rate"][0]), abs=1e-12)
        assert row["train_loss"] == pytest.approx(float(alone.final["loss"][0]), rel=1e-10)
        assert row["train_log10_grad_norm_init"] == pytest.approx(
            float(alone.history["log_grad_norm"][0, 0]) / math.log(10), rel=1e-10)


def test_killed_train_sweep_resumes_bitwise(uninterrupted, tmp_path):
    """kill -9 after the first call's summary: every file parses, and --resume ends byte for byte
    equal to the uninterrupted sweep (summary, profiles with the learning curves, manifest config)."""
    out = tmp_path / "killed"
    code, stderr = _run_killed("replace:summary.csv", 2, json.dumps(CONFIG), out)
    assert code == -signal.SIGKILL, stderr
    assert_consistent(out)
    done = sweep.read_summary(out, SweepConfig.from_mapping(CONFIG))
    assert 0 < len(done) < 16
    stats = sweep.run_sweep(CONFIG, out, resume=True)
    assert stats["points_computed"] == 16 - len(done)
    assert_same_results(out, uninterrupted)


def test_resume_with_other_training_settings_is_refused(uninterrupted, tmp_path):
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    for key, value in (("steps", 7), ("lr", 0.02), ("clip", 1.0), ("optimizer", "sgd"), ("train-batch", 5),
                       ("measure", "train:temporal-order")):
        with pytest.raises(ValueError, match=f"{key} differ"):
            sweep.run_sweep({**CONFIG, key: value}, out, resume=True)
    assert sweep.run_sweep(CONFIG, out, resume=True)["nothing_to_do"]


@pytest.mark.parametrize("over, words", [
    ({"measure": "gradients", "steps": 5}, "steps is 5 but no train:TASK"),
    ({"measure": "gradients", "clip": 1}, "clip is 1.0 but no train:TASK"),
    ({"measure": "train"}, "needs a task"),
    ({"measure": "train:nope"}, "unknown task 'nope'"),
    ({"measure": "train:copy-first,train:adding"}, "at most one train:TASK"),
    ({"optimizer": "rmsprop"}, "unknown optimizer"),
    ({"lr": 0}, "lr must be > 0"),
    ({"clip": -1}, "clip must be >= 0"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"train-batch": 1.5}, "train-batch"),
    ({"measure": "train:temporal-order", "lengths": "5,12"}, "needs length >= 10"),
])
def test_bad_training_settings_are_one_line_errors(over, words):
    base = CONFIG if over.get("measure") != "gradients" else GRADIENTS_ONLY
    with pytest.raises((ValueError, TypeError)) as info:
        SweepConfig.from_mapping({**base, **over})
    assert words in str(info.value) and "\n" not in str(info.value)


def test_clip_off_and_zero_mean_no_clipping():
    for value in ("off", 0, "0", "none"):
        assert SweepConfig.from_mapping({**CONFIG, "clip": value}).clip is None
    config = SweepConfig.from_mapping({**CONFIG, "clip": "2.5"})
    assert config.clip == 2.5 and config.as_dict()["clip"] == 2.5
    assert SweepConfig.from_mapping(CONFIG).as_dict()["clip"] is None
    # a manifest written before the train keys existed reads them as their defaults
    stored = SweepConfig.from_mapping({k: v for k, v in CONFIG.items() if k == "cell"}).as_dict()
    for key in ("steps", "optimizer", "lr", "clip", "train-batch"):
        stored.pop(key)
    assert SweepConfig.from_mapping({"cell": "rnn,lstm"}).same_results_as(stored) == []


def test_plan_counts_the_training():
    with_train = SweepConfig.from_mapping(CONFIG)
    without = SweepConfig.from_mapping(GRADIENTS_ONLY)
    factor = 1 + (6 * 4 + len(training.eval_steps(6)) * training.EVAL_BATCH / 3) / 2
    base = plan.Plan.work(without, "lstm", 12, 3)
    assert base == pytest.approx(3.0 * 12 * 3)  # the cell's cost x T x networks
    assert plan.Plan.work(with_train, "lstm", 12, 3) == pytest.approx(base * factor)
    grown = (plan.call_bytes(with_train, "lstm", 12, 4, workers=2)
             - plan.call_bytes(without, "lstm", 12, 4, workers=2))
    assert grown == training.call_bytes(with_train, "lstm", 12, 4, workers=2, tile=2) > 0


def test_a_training_that_cannot_fit_is_refused_before_writing(tmp_path):
    """The gradient map of this sweep is tiny; its training batch is not."""
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="needs about .* of memory"):
        sweep.run_sweep({**CONFIG, "train-batch": 10**7}, out)
    assert not out.exists()


def test_a_sweep_never_overwrites_a_train_folder(tmp_path):
    """rnnsim sweep --overwrite on a folder of rnnsim train is refused and leaves it as it was."""
    from click.testing import CliRunner

    from rnnsim.cli import main

    out = tmp_path / "trained"
    runner = CliRunner()
    made = runner.invoke(main, ["train", "--task", "copy-first", "--cell", "rnn", "--hidden", "4", "--length",
                                "3", "--scale", "1", "--steps", "2", "--batch", "2", "--seeds", "1",
                                "--out", str(out)])
    assert made.exit_code == 0, made.output
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = runner.invoke(main, ["sweep", "--cell", "rnn", "--hidden", "3", "--lengths", "3", "--scales",
                                  "1", "--seeds", "1", "--batch", "1", "--out", str(out), "--overwrite",
                                  "--quiet"])
    assert result.exit_code == 2 and "holds training results, not a sweep" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
