"""`rnnsim plot` of a train folder (learning curves) and of a sweep with train:TASK (trainability)."""
import os
import shutil

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run, snapshot

from rnnsim import sweep
from rnnsim.plot import training as train_figures
from rnnsim.plot._common import CellTheory, grid
from rnnsim.sweep import SweepConfig, trainrun

SWEEP = {"cell": "rnn,lstm", "hidden": 6, "input-size": 2, "classes": 3, "batch": 2, "lengths": "10,13,16",
         "scales": "0.5,1.5,2.5", "seeds": 2, "measure": "train:copy-first", "steps": 4, "train-batch": 4,
         "lr": 0.02}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("plot_train") / "train"
    trainrun.run_training({"task": "copy-first", "cell": "rnn,lstm", "hidden": 6, "length": 10, "steps": 5,
                           "batch": 4, "seeds": 3}, out)
    return out


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("plot_train") / "sweep"
    sweep.run_sweep(SWEEP, out)
    return out


def test_plot_of_a_train_folder_writes_the_learning_curves(trained, tmp_path):
    out = tmp_path / "t"
    shutil.copytree(trained, out)
    result = run("plot", out)
    assert result.exit_code == 0, result.output
    assert sorted(os.path.basename(p) for p in result.stdout.split()) == ["learning_curves.pdf",
                                                                          "learning_curves.png"]
    for name in ("learning_curves.png", "learning_curves.pdf"):
        assert (out / name).stat().st_size > 1000
    assert not [p for p in out.iterdir() if p.name.startswith(".rnnsim-tmp-")]


def test_learning_curves_draw_every_seed_and_the_clip(trained):
    data = trainrun.read_training(trained)
    data["settings"]["clip"] = 0.5  # the figure's clip line (the run itself trained without clipping)
    fig = train_figures.learning_curves(data)
    axes = np.array(fig.axes).reshape(3, 2)
    for column, cell in enumerate(("rnn", "lstm")):
        rate_ax, loss_ax, norm_ax = axes[:, column]
        seeds = [line for line in rate_ax.lines if line.get_label().startswith("seed")]
        assert len(seeds) == 3
        for s, line in enumerate(seeds):
            np.testing.assert_array_equal(line.get_ydata(), data["evaluations"][cell]["rate"][:, s])
        np.testing.assert_array_equal(norm_ax.lines[0].get_ydata(),
                                      data["history"][cell]["log10_grad_norm"][:, 0])
        clip_line = [line for line in norm_ax.lines if line.get_label().startswith("clip")]
        assert clip_line and clip_line[0].get_ydata()[0] == pytest.approx(np.log10(0.5))


def test_a_damaged_train_folder_is_one_line_and_untouched(trained, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(trained, out)
    text = (out / "history.csv").read_text().splitlines()
    (out / "history.csv").write_text("\n".join(text[:-3]) + "\n")  # rows missing
    before = snapshot(out)
    assert_one_line_error(run("plot", out), "history.csv is damaged")
    assert snapshot(out) == before
    (out / "history.csv").write_text("cell,seed\nrnn,0\n")
    assert_one_line_error(run("plot", out), "history.csv is damaged")


def test_plot_of_a_sweep_with_training_draws_the_trainability_diagrams(swept, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(swept, out)
    result = run("plot", out, "--quiet")
    assert result.exit_code == 0, result.output
    for cell in ("rnn", "lstm"):
        for ext in ("png", "pdf"):
            assert (out / f"trainability_{cell}.{ext}").stat().st_size > 1000
            assert (out / f"phase_{cell}.{ext}").is_file()  # and the gradient map's figures as before


def test_trainability_shows_the_fraction_solved_and_the_theory(swept):
    config = SweepConfig.from_mapping(SWEEP)
    rows = sweep.read_summary(swept, config)
    for cell in ("rnn", "lstm"):
        th = CellTheory(config, cell, config.scales)
        fig = train_figures.trainability(rows, config, cell, th)
        solved_ax, rate_ax = fig.axes[:2]  # the two panels; their colour bars come after
        for ax, column in ((solved_ax, "train_solved"), (rate_ax, "train_rate")):
            _, _, Z = grid(rows, cell, column)
            np.testing.assert_array_equal(np.asarray(ax.collections[0].get_array()).reshape(Z.shape), Z)
            labels = " ".join(h.get_label() for h in ax.get_legend().legend_handles) \
                if hasattr(ax.get_legend(), "legend_handles") else ""
            labels = labels or " ".join(t.get_text() for t in ax.get_legend().get_texts())
            assert "gradient map" in labels and r"T=|\xi|" in labels and r"\chi=1" in labels
        # the T = |xi| line follows the theory
        xi_line = [line for line in solved_ax.lines if line.get_linestyle() == "-."][0]
        expected = np.abs(-1.0 / np.log(th.chi_fine))
        np.testing.assert_allclose(xi_line.get_xdata(), expected, rtol=1e-12)
