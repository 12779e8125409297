"""A catalogue of bad input over every command and the library (issue 8).

Command line: exit code 2, one line on stderr naming the problem, no traceback, and
every file that existed before byte-identical (nothing created either).
Library: a ValueError or TypeError (OSError for folders) naming the problem.
Sizes that cannot fit are judged against a fixed 8 GiB limit, so that the cases
do not depend on the machine.
"""
import json
import math
import shutil

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run, snapshot

from rnnsim import cells, plot, sweep, theory, theory_gated
from rnnsim import config as settings
from rnnsim._parse import parse_lengths, parse_scales
from rnnsim.sweep.lock import FolderLock

SMALL = {"cell": ",".join(cells.names()), "hidden": "4", "input-size": "2", "classes": "3", "batch": "2",
         "lengths": "4,9", "scales": "0.5,2", "seeds": "2"}
FLAGS = [item for key, value in SMALL.items() for item in (f"--{key}", value)]
LIMIT = 8 << 30


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_input") / "res"
    sweep.run_sweep(dict(SMALL), out)
    return out


MEASURED = {**SMALL, "measure": "rates,lyapunov,pascanu", "lyap-k": "2"}
MEASURED_FLAGS = [item for key, value in MEASURED.items() for item in (f"--{key}", value)]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_input") / "resm"
    sweep.run_sweep(dict(MEASURED), out)
    return out


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    """P.npz (a single lstm network, torch names) and X.npy (B, T, D) for rnnsim lyapunov."""
    import rnnsim
    folder = tmp_path_factory.mktemp("bad_input_files")
    np.savez(folder / "P.npz", **{k: v[0] for k, v in rnnsim.init_params("lstm", 4, 2, 3, 1).items()})
    np.save(folder / "X.npy", np.zeros((2, 12, 2)))
    return folder


@pytest.fixture
def ws(tmp_path, results, measured, torch_files, monkeypatch):
    """A workspace: a results folder (and one with every measure), a folder that is not rnnsim's,
    a plain file, the files of a torch network, no folder 'new'."""
    monkeypatch.setattr(settings, "MEMORY_LIMIT_BYTES", LIMIT)
    shutil.copytree(results, tmp_path / "res")
    shutil.copytree(measured, tmp_path / "resm")
    shutil.copy(torch_files / "P.npz", tmp_path / "P.npz")
    shutil.copy(torch_files / "X.npy", tmp_path / "X.npy")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.csv").write_text("precious")
    (tmp_path / "file").write_text("keep")
    return tmp_path


def _sweep(*flags, out="res"):
    return lambda ws: ["sweep", *FLAGS, *flags, "--out", ws / out]


def _new(*flags):  # a sweep into a folder that does not exist yet: it must not be created
    return _sweep(*flags, out="new")


def _resume(*flags):
    return _sweep(*flags, "--resume")


def _write(name, text):
    def setup(ws):
        (ws / name).write_text(text)
    return setup


def _truncate(name):
    def setup(ws):
        data = (ws / name).read_bytes()
        (ws / name).write_bytes(data[: len(data) // 3])
    return setup


def _rewrite_profile(name, change):
    def setup(ws):
        with np.load(ws / name) as archive:
            arrays = {k: archive[k] for k in archive.files}
        np.savez(ws / name, **change(arrays))
    return setup


def _save(name, array):
    def setup(ws):
        np.save(ws / name, array)
    return setup


def _drop(key):
    return lambda arrays: {k: v for k, v in arrays.items() if k != key}


def _with_toml(ws):
    return ["sweep", *FLAGS, "--config", ws / "c.toml", "--out", ws / "res", "--resume"]


def _resume_measured(*flags):
    return lambda ws: ["sweep", *MEASURED_FLAGS, *flags, "--out", ws / "resm", "--resume"]


def _lyapunov(*flags, params="P.npz", inputs="X.npy", out="L.npz"):
    return lambda ws: ["lyapunov", "--cell", "lstm", "--params", ws / params, "--inputs", ws / inputs,
                       "--out", ws / out, *flags]


LAST = cells.names()[-1]
PROFILE = f"res/profiles/{LAST}_T9.npz"
PROFILE_M = f"resm/profiles/{LAST}_T9.npz"

CLI_CASES = [
    # --- A: impossible sizes, refused before anything is allocated or written
    ("sweep hidden 1e9", _new("--hidden", "1000000000"), None, "needs about"),
    ("sweep input-size 1e9", _new("--input-size", "1000000000"), None, "needs about"),
    ("sweep classes 1e9", _new("--classes", "1000000000"), None, "needs about"),
    ("sweep batch 1e9", _new("--batch", "1000000000"), None, "needs about"),
    ("sweep seeds 1e9", _new("--seeds", "1000000000"), None, "table of"),
    ("sweep lengths 1e8", _new("--lengths", "100000000"), None, "but only 8 GiB is available"),
    ("sweep scales range 1e9", _new("--scales", "0.5:3:1000000000"), None, "a range of 1000000000 values"),
    ("sweep lengths range 1e9", _new("--lengths", "1:10000000000:1000000000"), None, "a range of"),
    # --- B: overflowing and meaningless numbers
    ("sweep input-scale 1e200", _new("--input-scale", "1e200"), None, "input-scale must be <= 1e+06"),
    ("sweep bias-scale 1e300", _new("--bias-scale", "1e300"), None, "bias-scale must be <= 1e+06"),
    ("sweep forget-bias -1e300", _new("--forget-bias", "-1e300"), None, "forget-bias must be >= -1e+06"),
    ("sweep scales 1e308", _new("--scales", "1e308"), None, "scales must be <= 1e+06"),
    ("sweep input-scale nan", _new("--input-scale", "nan"), None, "input-scale must be finite"),
    ("sweep threshold inf", _new("--threshold", "inf"), None, "threshold must be finite"),
    ("sweep hidden 2.5", _new("--hidden", "2.5"), None, "hidden: '2.5' is not an integer"),
    ("sweep lengths 1e13", _new("--lengths", "10000000000000"), None, "lengths must be <="),
    ("sweep scales 0", _new("--scales", "0,1"), None, "scales must be > 0"),
    # --- malformed values
    ("sweep lengths A:B", _new("--lengths", "1:2"), None, "malformed range"),
    ("sweep lengths abc", _new("--lengths", "10,abc"), None, "'abc' is not an integer"),
    ("sweep scales A:B", _new("--scales", "1:3"), None, "malformed range"),
    ("sweep cell elman", _new("--cell", "elman"), None, "unknown cell 'elman'"),
    ("sweep cell empty", _new("--cell", ""), None, "cell"),
    ("sweep seeds 0", _new("--seeds", "0"), None, "seeds must be >= 1"),
    ("sweep init", _new("--init", "xavier"), None, "'xavier' is not one of"),
    ("sweep device", _new("--device", "gpu"), None, "'gpu' is not one of"),
    # --- the gated cells' and the optional measures' options
    ("sweep update-bias -1e300", _new("--update-bias", "-1e300"), None, "update-bias must be >= -1e+06"),
    ("sweep update-bias nan", _new("--update-bias", "nan"), None, "update-bias must be finite"),
    ("sweep measure unknown", _new("--measure", "gradient"), None, "unknown measure 'gradient'"),
    ("sweep measure twice", _new("--measure", "rates,rates"), None, "appears twice"),
    ("sweep measure empty item", _new("--measure", "rates,"), None, "malformed list"),
    ("sweep lyap-k without lyapunov", _new("--lyap-k", "2"), None, "add --measure lyapunov"),
    ("sweep lyap-k 0", _new("--measure", "lyapunov", "--lyap-k", "0"), None, "lyap-k must be >= 1"),
    ("sweep lyap-k above the state", _new("--measure", "lyapunov", "--lyap-k", "5"), None,
     "lyap-k must be <= 4, the rnn's state dimension"),
    ("sweep lyap-k 2.5", _new("--measure", "lyapunov", "--lyap-k", "2.5"), None, "is not an integer"),
    ("sweep resume another measure", _resume("--measure", "lyapunov"), None,
     "different configuration (measure differ)"),
    ("sweep resume another update-bias", _resume("--update-bias", "1"), None,
     "different configuration (update-bias differ)"),
    ("sweep resume another lyap-k", _resume_measured("--lyap-k", "3"), None,
     "different configuration (lyap-k differ)"),
    ("resume profile without spectrum", _resume_measured(),
     _rewrite_profile(PROFILE_M, _drop("lyap_spectrum")), "lacks the array 'lyap_spectrum'"),
    ("resume profile spectrum of wrong k", _resume_measured(),
     _rewrite_profile(PROFILE_M, lambda a: {**a, "lyap_spectrum": a["lyap_spectrum"][:, :1]}),
     "'lyap_spectrum' has shape"),
    ("resume summary without rates columns", _resume_measured(),
     _write("resm/summary.csv", ",".join(sweep.SUMMARY_COLUMNS) + "\n"), "lacks the summary columns"),
    ("toml measure", _with_toml, _write("c.toml", 'measure = "lyapunov,x"\n'), "unknown measure 'x'"),
    ("toml update-bias", _with_toml, _write("c.toml", 'update-bias = "big"\n'), "update-bias"),
    # --- folders
    ("sweep out is a file", _sweep(out="file"), None, "is not a folder"),
    ("sweep out is not rnnsim's", _sweep(out="foreign"), None, "not an rnnsim results folder"),
    ("sweep out holds results", _sweep(), None, "--resume"),
    ("sweep resume and overwrite", _sweep("--resume", "--overwrite"), None, "not both"),
    ("sweep resume another config", _resume("--hidden", "5"), None,
     "different configuration (hidden differ)"),
    # --- C: damaged results folders on --resume
    ("resume manifest array", _resume(), _write("res/manifest.json", "[1, 2]"),
     "manifest.json is not an rnnsim manifest: it holds a JSON list"),
    ("resume manifest not JSON", _resume(),
     _write("res/manifest.json", "{\"config\": "), "is not valid JSON"),
    ("resume manifest without config", _resume(), _write("res/manifest.json", "{}"), 'no "config" object'),
    ("resume truncated profile", _resume(), _truncate(PROFILE), f"{LAST}_T9.npz is damaged"),
    ("resume profile without scale", _resume(), _rewrite_profile(PROFILE, _drop("scale")),
     "lacks the array 'scale'"),
    ("resume profile of wrong length", _resume(),
     _rewrite_profile(PROFILE, lambda a: {**a, "log10_grad_norm_mean": a["log10_grad_norm_mean"][:, :3]}),
     "'log10_grad_norm_mean' has shape"),
    ("resume empty profile", _resume(), _write(PROFILE, ""), f"{LAST}_T9.npz is damaged"),
    ("resume summary bad number", _resume(), _write("res/summary.csv", ",".join(sweep.SUMMARY_COLUMNS) + "\n"
                                                    + ",".join(["x"] * len(sweep.SUMMARY_COLUMNS)) + "\n"),
     "summary.csv is damaged"),
    ("resume summary short row", _resume(),
     _write("res/summary.csv", ",".join(sweep.SUMMARY_COLUMNS) + "\nrnn\n"),
     "summary.csv is damaged"),
    # --- F: a folder in use
    ("sweep folder in use", _resume(), "lock", "is in use by another rnnsim sweep (pid"),
    # --- TOML files
    ("toml missing", lambda ws: ["sweep", "--config", ws / "none.toml"], None, "cannot read config file"),
    ("toml broken", _with_toml, _write("c.toml", "hidden = = 3\n"), "is not valid TOML"),
    ("toml unknown key", _with_toml, _write("c.toml", "hiden = 3\n"), "unknown key 'hiden'"),
    ("toml quiet", _with_toml, _write("c.toml", 'quiet = "yes"\n'), "quiet must be true or false"),
    ("toml out", _with_toml, _write("c.toml", "out = 3\n"), "out must be a folder name"),
    ("toml bool", _with_toml, _write("c.toml", "batch = true\n"), "batch must be an integer"),
    ("toml scales", _with_toml, _write("c.toml", 'scales = [0.5, "x"]\n'), "scales: 'x' is not a number"),
    ("toml input-scale", _with_toml, _write("c.toml", "input-scale = 1e200\n"),
     "input-scale must be <= 1e+06"),
    # --- theory
    ("theory scale 0", lambda ws: ["theory", "--scale", "0"], None, "scale must be > 0"),
    ("theory scale x", lambda ws: ["theory", "--scale", "x"], None, "'x' is not a number"),
    ("theory no scale", lambda ws: ["theory"], None, "Missing option '--scale'"),
    ("theory scale 1e308", lambda ws: ["theory", "--scale", "1e308", "--json"], None,
     "scale must be <= 1e+06"),
    ("theory input-scale 1e200", lambda ws: ["theory", "--scale", "1", "--input-scale", "1e200"], None,
     "input-scale must be <= 1e+06"),
    ("theory bias-scale nan", lambda ws: ["theory", "--scale", "1", "--bias-scale", "nan"], None,
     "bias-scale must be finite"),
    ("theory forget-bias 1e400", lambda ws: ["theory", "--scale", "1", "--forget-bias", "1e400"], None,
     "forget-bias must be finite"),
    ("theory scale range 1e9", lambda ws: ["theory", "--scale", "0.5:3:1000000000"], None, "a range of"),
    ("theory scale twice", lambda ws: ["theory", "--scale", "1,1"], None, "appears twice"),
    ("theory cell", lambda ws: ["theory", "--cell", "elman", "--scale", "1"], None, "'elman' is not one of"),
    ("theory forget-bias for the gru", lambda ws: ["theory", "--cell", "gru", "--scale", "1", "--forget-bias",
                                                   "1"], None, "--forget-bias applies to --cell lstm"),
    ("theory update-bias for the lstm", lambda ws: ["theory", "--cell", "lstm", "--scale", "1",
                                                    "--update-bias", "1"], None,
     "--update-bias applies to --cell gru"),
    ("theory update-bias x", lambda ws: ["theory", "--cell", "gru", "--scale", "1", "--update-bias", "x"],
     None, "update-bias: 'x' is not a number"),
    ("theory update-bias 1e300", lambda ws: ["theory", "--cell", "gru", "--scale", "1", "--update-bias",
                                             "1e300"], None, "update-bias must be <= 1e+06"),
    ("theory gru scale 0", lambda ws: ["theory", "--cell", "gru", "--scale", "0"], None, "scale must be > 0"),
    # --- lyapunov
    ("lyapunov cell", _lyapunov("--cell", "elman"), None, "'elman' is not one of"),
    ("lyapunov missing params", _lyapunov(params="none.npz"), None, "no such file"),
    ("lyapunov junk params", _lyapunov(params="file"), None, "cannot read"),
    ("lyapunov params are inputs", _lyapunov(params="X.npy"), None, "expected an .npz archive"),
    ("lyapunov inputs are params", _lyapunov(inputs="P.npz"), None, "expected a single .npy array"),
    ("lyapunov out exists", _lyapunov(out="file"), None, "already exists"),
    ("lyapunov out folder missing", _lyapunov(out="new/L.npz"), None, "does not exist"),
    ("lyapunov k 0", _lyapunov("--k", "0"), None, "k must be >= 1"),
    ("lyapunov k above the state", _lyapunov("--k", "9"), None, "k must lie in [1, 8], got 9"),
    ("lyapunov k x", _lyapunov("--k", "x"), None, "'x' is not an integer"),
    ("lyapunov warmup too long", _lyapunov("--warmup", "12"), None, "warmup must lie in [0, 11], got 12"),
    ("lyapunov qr-every 0", _lyapunov("--qr-every", "0"), None, "qr-every must be >= 1"),
    ("lyapunov inputs of 4 axes", _lyapunov(inputs="X4.npy"), _save("X4.npy", np.zeros((1, 2, 12, 2))),
     "inputs must be (B, T, D)"),
    ("lyapunov inputs with NaN", _lyapunov(inputs="Xnan.npy"), _save("Xnan.npy", np.full((2, 12, 2), np.nan)),
     "NaN"),
    # --- plot
    ("plot missing folder", lambda ws: ["plot", ws / "new"], None, "no such folder"),
    ("plot foreign folder", lambda ws: ["plot", ws / "foreign"], None, "not an rnnsim results folder"),
    ("plot a file", lambda ws: ["plot", ws / "file"], None, "not a folder"),
    ("plot manifest array", lambda ws: ["plot", ws / "res"], _write("res/manifest.json", "[]"),
     "is not an rnnsim manifest"),
    ("plot truncated profile", lambda ws: ["plot", ws / "res"], _truncate(PROFILE),
     f"{LAST}_T9.npz is damaged"),
    ("plot profile without scale", lambda ws: ["plot", ws / "res"], _rewrite_profile(PROFILE, _drop("scale")),
     "lacks the array 'scale'"),
    ("plot manifest bad config", lambda ws: ["plot", ws / "res"],
     _write("res/manifest.json", json.dumps({"config": {"hidden": -1}})), "holds an invalid configuration"),
    ("plot unfinished", lambda ws: ["plot", ws / "res"],
     _write("res/summary.csv", ",".join(sweep.SUMMARY_COLUMNS) + "\n"),
     "no finished points"),
    ("plot scales -1", lambda ws: ["plot", ws / "res", "--scales", "-1"], None, "scales must be > 0"),
    ("plot scales x", lambda ws: ["plot", ws / "res", "--scales", "x"], None, "'x' is not a number"),
    ("plot folder in use", lambda ws: ["plot", ws / "res"], "lock", "is in use by another rnnsim sweep (pid"),
    # --- grad
    ("grad cell", lambda ws: ["grad", "--cell", "elman", "--params", "p", "--inputs", "x", "--targets", "y",
                              "--out", ws / "g.npz"], None, "'elman' is not one of"),
    ("grad missing params", lambda ws: ["grad", "--cell", "rnn", "--params", ws / "none.npz", "--inputs", "x",
                                        "--targets", "y", "--out", ws / "g.npz"], None, "no such file"),
    ("grad junk params", lambda ws: ["grad", "--cell", "rnn", "--params", ws / "file", "--inputs", "x",
                                     "--targets", "y", "--out", ws / "g.npz"], None, "cannot read"),
    ("grad out exists", lambda ws: ["grad", "--cell", "rnn", "--params", "p", "--inputs", "x",
                                    "--targets", "y", "--out", ws / "file"], None, "already exists"),
]


@pytest.mark.parametrize("command, setup, words", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_bad_input_with_one_line_and_touches_nothing(ws, command, setup, words):
    lock = None
    if setup == "lock":
        lock = FolderLock(ws / "res", "sweep").acquire()
        lock.claim()
    elif setup is not None:
        setup(ws)
    before = snapshot(ws)
    try:
        result = run(*command(ws))
    finally:
        if lock is not None:
            lock.release()
    assert_one_line_error(result, words)
    assert snapshot(ws) == before
    assert not (ws / "new").exists()


def test_the_catalogue_covers_every_command():
    from pathlib import Path
    assert {case[1](Path("ws"))[0] for case in CLI_CASES} == {"sweep", "theory", "plot", "grad", "lyapunov"}
    assert len(CLI_CASES) >= 40 and len(API_CASES) >= 20


# ------------------------------------------------------------------ the library

def _api_sweep(mapping, *, out="api", **kwargs):
    return lambda ws: sweep.run_sweep(mapping, ws / out, **kwargs)


def _damaged(setup, call):
    def case(ws):
        setup(ws)
        return call(ws)
    return case


API_CASES = [
    ("config bool", lambda ws: sweep.SweepConfig.from_mapping({"hidden": True}), TypeError, "hidden"),
    ("config list for a number", lambda ws: sweep.SweepConfig.from_mapping({"hidden": [64]}), TypeError,
     "hidden must be an integer"),
    ("config scale range overflow", lambda ws: sweep.SweepConfig.from_mapping({"scales": "0.5:1e308:3"}),
     ValueError, "scales must be <= 1e+06"),
    ("config not a mapping", lambda ws: sweep.SweepConfig.from_mapping("hidden=3"), TypeError, "mapping"),
    ("configure out int", lambda ws: sweep.configure({"out": 3}), TypeError, "out must be a folder name"),
    ("configure out empty", lambda ws: sweep.configure({"out": " "}), ValueError,
     "out must be a folder name"),
    ("configure quiet", lambda ws: sweep.configure({"quiet": "yes"}), TypeError,
     "quiet must be true or false"),
    ("configure device", lambda ws: sweep.configure({"device": "gpu"}), ValueError, "unknown device 'gpu'"),
    ("run_sweep not a config", lambda ws: sweep.run_sweep(42, ws / "api"), TypeError,
     "SweepConfig or a mapping"),
    ("run_sweep hidden 1e9", _api_sweep({**SMALL, "hidden": 10**9}), ValueError, "needs about"),
    ("run_sweep input-scale 1e200", _api_sweep({**SMALL, "input-scale": 1e200}), ValueError, "input-scale"),
    ("run_sweep device", _api_sweep(SMALL, device="tpu"), ValueError, "unknown device 'tpu'"),
    ("run_sweep foreign folder", _api_sweep(SMALL, out="foreign"), FileExistsError, "not an rnnsim results"),
    ("run_sweep resume and overwrite", _api_sweep(SMALL, out="res", resume=True, overwrite=True), ValueError,
     "not both"),
    ("run_sweep damaged profile", _damaged(_truncate(PROFILE), _api_sweep(SMALL, out="res", resume=True)),
     ValueError, f"{LAST}_T9.npz is damaged"),
    ("read_manifest array",
     _damaged(_write("res/manifest.json", "[]"), lambda ws: sweep.read_manifest(ws / "res")),
     ValueError, "not an rnnsim manifest"),
    ("read_profiles truncated",
     _damaged(_truncate(PROFILE), lambda ws: sweep.read_profiles(ws / "res", LAST, 9)),
     ValueError, "is damaged"),
    ("read_summary damaged",
     _damaged(_write("res/summary.csv", "cell\nrnn\n"), lambda ws: sweep.read_summary(ws / "res")),
     ValueError, "lacks the summary"),
    ("plot damaged manifest",
     _damaged(_write("res/manifest.json", "[]"), lambda ws: plot.plot_results(ws / "res")),
     ValueError, "not an rnnsim manifest"),
    ("plot bad scales", lambda ws: plot.plot_results(ws / "res", scales=[-1.0]), ValueError,
     "scales must be > 0"),
    ("plot scales text", lambda ws: plot.plot_results(ws / "res", scales="x"), ValueError,
     "'x' is not a number"),
    ("plot missing folder", lambda ws: plot.plot_results(ws / "new"), OSError, "no such folder"),
    ("theory chi 1e308", lambda ws: theory.chi(1e308), ValueError, "scale must be finite, > 0 and <= 1e+06"),
    ("theory input 1e200", lambda ws: theory.fixed_point(1.0, 1e200), ValueError,
     "input_scale must be <= 1e+06"),
    ("theory chi text", lambda ws: theory.chi("x"), TypeError, "scale must be a number"),
    ("theory bias inf", lambda ws: theory.critical_scale(1.0, math.inf), ValueError,
     "bias_scale must be finite"),
    ("theory forget None", lambda ws: theory.forget_timescale(None), TypeError, "forget_bias"),
    ("theory empty scales", lambda ws: theory.mean_field([]), ValueError, "at least one value"),
    ("theory for an unknown cell", lambda ws: theory.for_cell("elman"), ValueError, "unknown cell 'elman'"),
    ("gated theory scale 0", lambda ws: theory.lstm_mean_field(0.0), ValueError, "scale must be > 0"),
    ("gated theory bias text", lambda ws: theory.gru_mean_field(1.0, update_bias="x"), ValueError,
     "update_bias: 'x' is not a number"),
    ("gated theory bias list", lambda ws: theory.gru_mean_field(1.0, update_bias=[1.0]), TypeError,
     "update_bias must be a number"),
    ("gated theory another cell's bias",
     lambda ws: theory.for_cell("gru").mean_field_of("gru", 1.0, 1.0, 0.0, {"forget_bias": 1.0}), ValueError,
     "the gru has no forget_bias"),
    ("gated theory no fixed point", lambda ws: theory.lstm_mean_field(1.0, forget_bias=900.0),
     theory_gated.NoFixedPoint, "no fixed point"),
    ("config measure", lambda ws: sweep.SweepConfig.from_mapping({"measure": ["rates", 3]}), TypeError,
     "measure"),
    ("config lyap-k", lambda ws: sweep.SweepConfig.from_mapping({"lyap-k": 3}), ValueError,
     "add --measure lyapunov"),
    ("run_sweep lyap-k above the state", _api_sweep({**SMALL, "measure": "lyapunov", "lyap-k": 99}),
     ValueError, "lyap-k must be <= 4"),
    ("read_profiles measured", _damaged(_rewrite_profile(PROFILE_M, _drop("rate_seq")),
                                        lambda ws: sweep.read_profiles(ws / "resm", LAST, 9,
                                                                       sweep.SweepConfig.from_mapping(MEASURED))),
     ValueError, "lacks the array 'rate_seq'"),
    ("parse lengths float range", lambda ws: parse_lengths("0.5:3:10"), ValueError, "is not an integer"),
    ("parse scales None", lambda ws: parse_scales(None), TypeError, "scales"),
    ("load broken TOML",
     _damaged(_write("c.toml", "x = = 1"), lambda ws: sweep.load_config_file(ws / "c.toml")),
     ValueError, "is not valid TOML"),
]


@pytest.mark.parametrize("call, error, words", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_library_refuses_bad_input_with_an_error_that_names_it(ws, call, error, words):
    before = {k: v for k, v in snapshot(ws).items() if not k.startswith(("res/", "resm/", "c.toml"))}
    with pytest.raises(error) as info:
        call(ws)
    assert type(info.value) is error or (error is OSError and isinstance(info.value, OSError))
    assert words in str(info.value) and "\n" not in str(info.value)
    assert {k: v for k, v in snapshot(ws).items() if not k.startswith(("res/", "resm/", "c.toml"))} == before
    assert not (ws / "api").exists() and not (ws / "new").exists()
