"""Figures: every file written, every axis labelled, every colorbar with a unit, theory only where it applies."""
import numpy as np
import pytest

from rnnsim import plot, sweep, theory
from rnnsim.sweep import SweepConfig

SMALL = {"cell": "rnn,lstm", "hidden": 8, "input-size": 3, "classes": 4, "batch": 3,
         "lengths": "5,12,30", "scales": "0.5,1.5,2,2.5", "seeds": 2}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("plot") / "run"
    sweep.run_sweep(SweepConfig.from_mapping(SMALL), out)
    return out


def _recording_save(figures):
    real_save = plot._save

    def save(fig, out, stem):
        figures[stem] = fig
        return real_save(fig, out, stem)
    return save


@pytest.fixture
def captured(monkeypatch):
    """Record the figures as well as saving them."""
    figures = {}
    monkeypatch.setattr(plot, "_save", _recording_save(figures))
    return figures


@pytest.fixture(scope="module")
def default_plot(results):
    """The figures of one plot_results call on ``results``, and the paths written."""
    figures = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plot, "_save", _recording_save(figures))
        paths = plot.plot_results(results)
    return figures, paths


def _all_axes_labelled(fig):
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            assert "decades" in ax.get_ylabel(), "colorbar without a unit"
        else:
            assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), ax.get_title()


def test_writes_png_and_pdf_of_every_figure(default_plot):
    captured, paths = default_plot
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{stem}.{ext}" for stem in ("phase_rnn", "phase_lstm", "profiles", "rates")
                           for ext in ("png", "pdf"))
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else head.startswith(b"%PDF")
    assert set(captured) == {"phase_rnn", "phase_lstm", "profiles", "rates"}
    for fig in captured.values():
        _all_axes_labelled(fig)


def test_phase_diagram_is_centred_at_zero_with_theory_lines_for_the_rnn_only(results, default_plot):
    captured, _ = default_plot
    rnn_ax = captured["phase_rnn"].axes[0]
    mesh = rnn_ax.collections[0]
    rows = [r for r in sweep.read_summary(results) if r["cell"] == "rnn"]
    seed_mean = [np.mean([r["log10_ratio"] for r in rows if (r["T"], r["scale"]) == key])
                 for key in {(r["T"], r["scale"]) for r in rows}]
    assert np.sort(mesh.get_array().compressed()) == pytest.approx(np.sort(seed_mean))
    assert mesh.norm(0.0) == pytest.approx(0.5)  # white at 0
    assert mesh.norm.vmin == -mesh.norm.vmax and mesh.norm.vmax == pytest.approx(max(np.abs(seed_mean)))
    assert mesh.norm(-1.0) == pytest.approx(1 - mesh.norm(1.0))
    s_c = theory.critical_scale(1.0, 0.0)
    horizontal = [ln for ln in rnn_ax.get_lines() if len(set(ln.get_ydata())) == 1 and len(ln.get_ydata()) == 2]
    assert any(abs(ln.get_ydata()[0] - s_c) < 1e-12 for ln in horizontal)
    legend = [t.get_text() for t in rnn_ax.get_legend().get_texts()]
    assert any("chi" in t for t in legend) and any("log_{10}" in t for t in legend)
    lstm_legend = [t.get_text() for t in captured["phase_lstm"].axes[0].get_legend().get_texts()]
    assert not any("mean field" in t for t in lstm_legend)


def test_rates_figure_shows_the_measured_rates_and_the_theory_curve(default_plot):
    captured, _ = default_plot
    ax = captured["rates"].axes[0]
    theory_line = next(ln for ln in ax.get_lines() if "ln\\chi" in ln.get_label())
    s, r = theory_line.get_data()
    assert np.allclose(r, 0.5 * np.log(theory.chi(s, 1.0, 0.0)))


def test_profiles_for_chosen_scales(results, captured):
    plot.plot_results(results, scales=[1.4, 2.4])
    labels = [ln.get_label() for ln in captured["profiles"].axes[0].get_lines()]
    assert "S = 1.5" in labels and "S = 2.5" in labels and "S = 0.5" not in labels


def test_orthogonal_sweep_has_no_theory_overlay(tmp_path, captured):
    sweep.run_sweep(SweepConfig.from_mapping({**SMALL, "cell": "rnn", "init": "orthogonal", "seeds": 1}),
                    tmp_path / "o")
    plot.plot_results(tmp_path / "o")
    for fig in captured.values():
        _all_axes_labelled(fig)
        for ax in fig.axes:
            assert not any("mean field" in ln.get_label() for ln in ax.get_lines())


def test_refuses_an_unfinished_sweep(tmp_path):
    config = SweepConfig.from_mapping(SMALL)
    out = tmp_path / "empty"
    sweep.prepare_folder(out, config)
    (out / sweep.MANIFEST).write_text('{"config": %s}' % __import__("json").dumps(config.as_dict()))
    (out / sweep.SUMMARY).write_text(",".join(sweep.SUMMARY_COLUMNS) + "\n")
    with pytest.raises(ValueError, match="no finished points"):
        plot.plot_results(out)
    with pytest.raises(OSError):
        plot.plot_results(tmp_path / "missing")
