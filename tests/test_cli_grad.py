"""`rnnsim grad` through Click's CliRunner: round trip, ensemble axis, bad input."""
import itertools

import numpy as np
import pytest
from click.testing import CliRunner

import rnnsim
from rnnsim import cells
from rnnsim.cli import main
from rnnsim.losses import LOSSES, MASKED_LOSSES

from helpers import make_problem


def _run(*args):
    result = CliRunner().invoke(main, list(args))
    return result


def _write_torch_style(tmp_path, cell="lstm", loss="last", ensemble=False, dtype=np.float64):
    params, x, y = make_problem(cell, 2 if ensemble else 1, 3, 5, 2, 4, 3, loss=loss, dtype=dtype)
    if not ensemble:
        params, x, y = {k: v[0] for k, v in params.items()}, x[0], y[0]
    np.savez(tmp_path / "P.npz", **params)
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "Y.npy", y)
    np.save(tmp_path / "M.npy", np.array([True, False, True, False, True]))  # (T,): any ensemble axis
    return params, x, y


def _args(tmp_path, cell="lstm", *extra):
    return ["grad", "--cell", cell, "--params", str(tmp_path / "P.npz"), "--inputs", str(tmp_path / "X.npy"),
            "--targets", str(tmp_path / "Y.npy"), "--out", str(tmp_path / "G.npz"), *extra]


@pytest.mark.parametrize("ensemble", [False, True])
# Every loss, each with one of the cells in turn (the last cell first, so that lstm gets "every").
@pytest.mark.parametrize("cell, loss", list(zip(itertools.cycle(reversed(cells.names())), LOSSES)))
def test_round_trip_matches_python_api(tmp_path, cell, loss, ensemble):
    params, x, y = _write_torch_style(tmp_path, cell, loss, ensemble)
    masked = loss in MASKED_LOSSES
    result = _run(*_args(tmp_path, cell, "--loss", loss, *(["--mask", str(tmp_path / "M.npy")] * masked)))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    if not ensemble:
        params, x, y = {k: v[None] for k, v in params.items()}, x[None], y[None]
    mask = np.load(tmp_path / "M.npy") if masked else None
    expected = rnnsim.gradients(cell, params, x, y, loss=loss, mask=mask)
    with np.load(tmp_path / "G.npz") as saved:
        assert set(saved.files) == set(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(saved[key], value if ensemble else value[0], err_msg=key)


@pytest.mark.parametrize("ensemble", [False, True])
def test_clip_writes_clipped_gradients(tmp_path, ensemble):
    params, x, y = _write_torch_style(tmp_path, "gru", "mse-every", ensemble)
    if not ensemble:
        params, x, y = {k: v[None] for k, v in params.items()}, x[None], y[None]
    norm = np.exp(rnnsim.gradients("gru", params, x, y, loss="mse-every")["log_grad_norm_params"][0])
    clip = 0.5 * float(norm)
    result = _run(*_args(tmp_path, "gru", "--loss", "mse-every", "--clip", repr(clip)))
    assert result.exit_code == 0, result.output
    expected = rnnsim.gradients("gru", params, x, y, loss="mse-every", clip=clip)
    assert expected["clipped"][0]
    with np.load(tmp_path / "G.npz") as saved:
        assert set(saved.files) == set(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(saved[key], value if ensemble else value[0], err_msg=key)


def test_existing_output_needs_force(tmp_path):
    _write_torch_style(tmp_path)
    (tmp_path / "G.npz").write_bytes(b"precious")
    result = _run(*_args(tmp_path))
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    assert (tmp_path / "G.npz").read_bytes() == b"precious"
    assert _run(*_args(tmp_path, "lstm", "--force")).exit_code == 0
    with np.load(tmp_path / "G.npz") as saved:
        assert "log_grad_norm" in saved.files


def _with_params(tmp_path, name):
    args = _args(tmp_path)
    return args[:4] + [str(tmp_path / name)] + args[5:]


def _bad_cases(tmp_path):
    yield "missing params file", _with_params(tmp_path, "nope.npz"), "no such file"
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    yield "unreadable params", _with_params(tmp_path, "junk.npz"), "cannot read"
    yield "unknown cell", ["grad", "--cell", "elman"] + _args(tmp_path)[3:], "'elman' is not one of"
    yield "wrong cell for weights", _args(tmp_path, "rnn"), "weight_hh_l0"
    yield "unknown loss", _args(tmp_path, "lstm", "--loss", "mean"), "'mean' is not one of"
    yield "unknown device", _args(tmp_path, "lstm", "--device", "tpu"), "'tpu' is not one of"
    yield "targets per step for loss last", _args(tmp_path, "lstm", "--loss", "every"), "targets"
    np.save(tmp_path / "YT.npy", np.zeros((3, 5), np.int64))
    per_step = [str(tmp_path / "YT.npy") if a.endswith("Y.npy") else a for a in _args(tmp_path, "lstm")]
    yield "masked without a mask", per_step + ["--loss", "masked"], "needs a mask"
    mask = ["--mask", str(tmp_path / "M.npy")]
    yield "a mask for loss last", _args(tmp_path, "lstm", *mask), "takes no mask"
    yield "missing mask file", _args(tmp_path, "lstm", "--mask", str(tmp_path / "none.npy")), "no such file"
    np.save(tmp_path / "I.npy", np.ones(5, np.int64))
    yield "an int mask", per_step + ["--loss", "masked", "--mask", str(tmp_path / "I.npy")], "bool"
    np.save(tmp_path / "E.npy", np.zeros(5, bool))
    yield "an empty mask", per_step + ["--loss", "masked", "--mask", str(tmp_path / "E.npy")], "selects no"
    yield "clip 0", _args(tmp_path, "lstm", "--clip", "0"), "--clip"
    yield "clip inf", _args(tmp_path, "lstm", "--clip", "inf"), "clip must be a positive finite"
    yield "int targets for mse", _args(tmp_path, "lstm", "--loss", "mse-last"), "targets"


def test_bad_input_exits_2_with_one_line(tmp_path):
    _write_torch_style(tmp_path)
    for label, args, words in _bad_cases(tmp_path):
        result = _run(*args)
        assert result.exit_code == 2, (label, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:"), (label, result.output)
        assert words in lines[0], (label, lines[0])
        assert result.exception is None or isinstance(result.exception, SystemExit), label
        assert not (tmp_path / "G.npz").exists(), label


@pytest.mark.parametrize("bad, words", [
    (lambda x, y: (np.where(x > 1, np.nan, x), y), "NaN"),
    (lambda x, y: (x, y + 7), "targets must lie in"),
    (lambda x, y: (x, y.astype(np.float64)), "integer"),
    (lambda x, y: (x[:, :0], y), "T (time steps)"),
    (lambda x, y: (x.astype(np.float32), y), "dtype"),
])
def test_bad_arrays_exit_2(tmp_path, bad, words):
    _, x, y = _write_torch_style(tmp_path)
    x, y = bad(x, y)
    np.save(tmp_path / "X.npy", x)
    np.save(tmp_path / "Y.npy", y)
    result = _run(*_args(tmp_path))
    assert result.exit_code == 2, result.output
    assert words in result.output and result.output.count("\n") == 1


def test_cuda_without_gpu_is_a_clear_error(tmp_path, monkeypatch):
    from rnnsim.kernels import gpu
    monkeypatch.setattr(gpu, "unavailable_reason", lambda: "no CUDA driver found")
    _write_torch_style(tmp_path)
    result = _run(*_args(tmp_path, "lstm", "--device", "cuda"))
    assert result.exit_code == 2
    assert "no CUDA driver found" in result.output and "Traceback" not in result.output
    result = _run(*_args(tmp_path, "lstm", "--device", "auto"))
    assert result.exit_code == 0, result.output
