"""Figures: every file written, every axis labelled, every colorbar with a unit, theory only where it applies;
validation before any write, atomic files, the folder's lock."""
import os
import shutil

import numpy as np
import pytest

from rnnsim import cells, plot, sweep, theory
from rnnsim.sweep import SweepConfig, bootstrap

OLD_RESULTS = __import__("pathlib").Path(__file__).resolve().parent / "data" / "results_v1"

SMALL = {"cell": ",".join(cells.names()), "hidden": 8, "input-size": 3, "classes": 4, "batch": 3,
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
    stems = [f"phase_{c}" for c in cells.names()] + ["profiles", "rates"]
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{stem}.{ext}" for stem in stems for ext in ("png", "pdf"))
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else head.startswith(b"%PDF")
    assert set(captured) == set(stems)
    for fig in captured.values():
        _all_axes_labelled(fig)


def test_phase_diagram_is_centred_at_zero_with_theory_lines_where_a_theory_applies(results, default_plot):
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
    horizontal = [ln for ln in rnn_ax.get_lines()
                  if len(set(ln.get_ydata())) == 1 and len(ln.get_ydata()) == 2]
    assert any(abs(ln.get_ydata()[0] - s_c) < 1e-12 for ln in horizontal)
    legend = [t.get_text() for t in rnn_ax.get_legend().get_texts()]
    assert any("chi" in t for t in legend) and any("log_{10}" in t for t in legend)
    config = SweepConfig.from_mapping(SMALL)
    for cell in cells.names():
        legend = [t.get_text() for t in captured[f"phase_{cell}"].axes[0].get_legend().get_texts()]
        assert any("mean field" in t for t in legend) == config.theory_applies(cell), cell


def test_rates_figure_shows_the_measured_rates_and_the_theory_curve(default_plot):
    captured, _ = default_plot
    ax = captured["rates"].axes[0]
    theory_line = next(ln for ln in ax.get_lines() if "ln\\chi" in ln.get_label())
    s, r = theory_line.get_data()
    assert np.allclose(r, 0.5 * np.log(theory.chi(s, 1.0, 0.0)))
    config = SweepConfig.from_mapping(SMALL)
    panels = [a for a in captured["rates"].axes]
    assert len(panels) == len(cells.names())
    for ax, cell in zip(panels, cells.names()):
        assert ax.get_title().startswith(cell)
        line = next(ln for ln in ax.get_lines() if "annealed mean field" in ln.get_label())
        s, r = line.get_data()
        module = theory.for_cell(cell)
        expected = module.mean_field_of(cell, s, 1.0, 0.0, config.gate_bias(cell))["rate"]
        np.testing.assert_allclose(r, expected, rtol=1e-12)
        labels = [ln.get_label() for ln in ax.get_lines()]
        assert any("path alone" in label for label in labels) == bool(cells.get(cell).gate_bias)
        if cell == "lstm":
            assert any("lstm cell path alone" in label for label in labels)
        assert "± std over seeds" in ax.get_title()  # no per-sequence values without the rates measure


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


def _figures(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix in (".png", ".pdf")}


@pytest.mark.parametrize("damage, words", [
    (lambda out: (out / "manifest.json").write_text("[1, 2]"), "manifest.json is not an rnnsim manifest"),
    (lambda out: (out / "manifest.json").write_text("{"), "manifest.json is not valid JSON"),
    (lambda out: (out / "summary.csv").write_text("cell,T\nrnn,5\n"), "summary.csv is damaged"),
    (lambda out: _truncate(out / "profiles" / f"{cells.names()[-1]}_T30.npz"), "_T30.npz is damaged"),
    (lambda out: _drop_array(out / "profiles" / f"{cells.names()[0]}_T30.npz", "scale"),
     "_T30.npz is damaged: it lacks the array 'scale'"),
])
def test_a_damaged_folder_is_refused_before_any_figure_is_written(results, tmp_path, damage, words):
    """Issue 8 C: one ValueError naming the file; no figure written, no old figure touched."""
    out = tmp_path / "damaged"
    shutil.copytree(results, out)
    (out / "rates.png").write_bytes(b"old figure")  # pre-existing figures must stay as they are
    (out / "profiles.pdf").write_bytes(b"old pdf")
    damage(out)
    before = _figures(out)
    names = sorted(p.name for p in out.iterdir())
    with pytest.raises(ValueError, match=words):
        plot.plot_results(out)
    assert _figures(out) == before and sorted(p.name for p in out.iterdir()) == names


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_array(path, key):
    with np.load(path) as archive:
        kept = {k: archive[k] for k in archive.files if k != key}
    np.savez(path, **kept)


def test_a_folder_in_use_is_refused(results, tmp_path):
    """Issue 8 F: plot does not read a folder that a sweep is writing."""
    from rnnsim.sweep.lock import FolderLock
    out = tmp_path / "busy"
    shutil.copytree(results, out)
    before = _figures(out)
    with FolderLock(out, "sweep") as lock:
        lock.claim()
        with pytest.raises(sweep.FolderInUseError,
                           match=rf"in use by another rnnsim sweep \(pid {os.getpid()}\)"):
            plot.plot_results(out)
    assert _figures(out) == before


def test_figures_are_written_atomically(results, tmp_path, monkeypatch):
    """Issue 8 D: every figure goes through a temp file and a rename; none is ever written in place."""
    from rnnsim import _io
    out = tmp_path / "atomic"
    shutil.copytree(results, out)
    renamed = []
    real_replace = os.replace

    def replace(src, dst):
        assert os.path.basename(src).startswith(_io.TMP_PREFIX)
        assert os.path.dirname(src) == os.path.dirname(dst)
        renamed.append(os.path.basename(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    paths = plot.plot_results(out)
    assert sorted(renamed) == sorted(p.name for p in paths)
    assert not [p for p in out.iterdir() if p.name.startswith(_io.TMP_PREFIX)]


ALL = {**SMALL, "lengths": "6,30", "batch": 4, "measure": "rates,lyapunov,pascanu", "lyap-k": 4}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A sweep with every measure, and its figures."""
    out = tmp_path_factory.mktemp("plot_all") / "run"
    sweep.run_sweep(ALL, out)
    figures = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plot, "_save", _recording_save(figures))
        paths = plot.plot_results(out, scales=[0.5, 2.5])
    return out, figures, paths


def test_rates_figure_sets_rate_mean_rate_and_lambda_max_side_by_side(measured):
    out, figures, _ = measured
    config = SweepConfig.from_mapping(ALL)
    rows = sweep.read_summary(out, config)
    data = sweep.read_profiles(out, "rnn", 30, config)
    ax = figures["rates"].axes[0]
    assert "95% bootstrap over networks × sequences" in ax.get_title()
    containers = {c.get_label(): c for c in ax.containers}
    lam = next(c for label, c in containers.items() if "lambda_{max}" in label)
    x, y = lam.lines[0].get_data()
    scales = sorted({r["scale"] for r in rows})
    rnn = [r for r in rows if r["cell"] == "rnn" and r["T"] == 30]
    expected = [np.mean([r["lyap_max"] for r in rnn if r["scale"] == s]) for s in scales]
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert np.all(x > np.array(scales))  # set beside the typical rate, which sits to the left
    # its error bar is the two-level interval of the per-sequence exponents
    first = data["lyap_max_seq"][data["scale"] == scales[0]]
    lo, hi = plot._common.pooled_interval("rnn", 30, scales[0], first)
    segment = lam.lines[2][0].get_segments()[0]
    assert segment[0][1] == pytest.approx(lo) and segment[1][1] == pytest.approx(hi)
    assert any("mean rate" in label for label in containers)
    assert any("typical" in label for label in containers)


def test_spectrum_figure_for_chosen_scales(measured):
    out, figures, paths = measured
    assert {"spectrum.png", "spectrum.pdf"} <= {p.name for p in paths}
    config = SweepConfig.from_mapping(ALL)
    for ax, cell in zip(figures["spectrum"].axes, cells.names()):
        n = len(cells.get(cell).state) * config.hidden
        lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("S = ")]
        assert [ln.get_label().split(" (")[0] for ln in lines] == ["S = 0.5", "S = 2.5"]
        data = sweep.read_profiles(out, cell, 30, config)
        x, y = lines[1].get_data()
        np.testing.assert_allclose(x, np.arange(1, 5) / n)
        np.testing.assert_allclose(y, data["lyap_spectrum"][data["scale"] == 2.5].mean(axis=0))
        assert "state dimension" in ax.get_xlabel()


def test_phase_diagrams_mark_lambda_zero_and_the_pascanu_bound(measured):
    _, figures, _ = measured
    for cell in cells.names():
        legend = [t.get_text() for t in figures[f"phase_{cell}"].axes[0].get_legend().get_texts()]
        assert any("lambda_{max}" in t for t in legend), legend
        pascanu = [t for t in legend if "Pascanu" in t]
        assert len(pascanu) == 1
        if cells.get(cell).pascanu_gamma is not None:
            assert "vanishing guaranteed" in pascanu[0]
        else:
            assert "no Pascanu bound" in pascanu[0]


def test_pooled_interval_is_the_two_level_bootstrap():
    values = np.random.default_rng(0).standard_normal((3, 5))
    lo, hi = plot._common.pooled_interval("lstm", 7, 1.5, values)
    w = bootstrap.weights(bootstrap.point_rng("lstm", 7, 1.5, 0, tag=plot._common.FIGURE_TAG), 3, 5)
    assert (lo, hi) == bootstrap.interval(bootstrap.weighted_mean(w, values))
    assert lo < values.mean() < hi


def test_an_old_results_folder_still_plots(tmp_path, captured):
    """A folder written before the gru, --update-bias and --measure existed (its manifest lacks them)."""
    out = tmp_path / "results"
    shutil.copytree(OLD_RESULTS, out)
    names = sorted(p.name for p in plot.plot_results(out))
    assert names == sorted(f"{stem}.{ext}" for stem in ("phase_rnn", "phase_lstm", "profiles", "rates")
                           for ext in ("png", "pdf"))
    legend = [t.get_text() for t in captured["phase_lstm"].axes[0].get_legend().get_texts()]
    assert any("annealed mean field" in t for t in legend)


def test_phase_diagrams_dot_the_points_whose_regime_the_data_do_not_settle(measured):
    out, figures, _ = measured
    config = SweepConfig.from_mapping(ALL)
    for cell in cells.names():
        ax = figures[f"phase_{cell}"].axes[0]
        (dots,) = [c for c in ax.collections if "regime not settled" in c.get_label()]
        expected = set()
        for T in config.lengths:
            data = sweep.read_profiles(out, cell, T, config)
            for s in config.scales:
                lo, hi = plot._common.pooled_interval(cell, T, s, data["log10_ratio_seq"][data["scale"] == s])
                if lo < -1 < hi or lo < 1 < hi:
                    expected.add((T, s))
        assert {(float(x), float(y)) for x, y in dots.get_offsets()} == expected
