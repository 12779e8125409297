"""`rnnsim grad` through Click's CliRunner: round trip, ensemble axis, bad input."""
import itertools

import numpy as np
import pytest
from click.testing import CliRunner

import rnnsim
from rnnsim import cells
from rnnsim.cli import main
from rnnsim.losses import LOSSES

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
    return params, x, y


def _args(tmp_path, cell="lstm", *extra):
    return ["grad", "--cell", cell, "--params", str(tmp_path / "P.npz"), "--inputs", str(tmp_path / "X.npy"),
            "--targets", str(tmp_path / "Y.npy"), "--out", str(tmp_path / "G.npz"), *extra]


@pytest.mark.parametrize("ensemble", [False, True])
# Every cell, each with one of the losses in turn (the last cell first, so that lstm gets "last").
@pytest.mark.parametrize("cell, loss", list(zip(reversed(cells.names()), itertools.cycle(LOSSES))))
def test_round_trip_matches_python_api(tmp_path, cell, loss, ensemble):
    params, x, y = _write_torch_style(tmp_path, cell, loss, ensemble)
    result = _run(*_args(tmp_path, cell, "--loss", loss))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    if not ensemble:
        params, x, y = {k: v[None] for k, v in params.items()}, x[None], y[None]
    expected = rnnsim.gradients(cell, params, x, y, loss=loss)
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
