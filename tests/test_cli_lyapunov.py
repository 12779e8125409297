"""`rnnsim lyapunov` through Click's CliRunner: round trip against rnnsim.lyapunov, ensemble axis,
a torch state dict without a readout, atomic output, bad input."""
import os

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run, snapshot

import rnnsim
from rnnsim import cells


def _write(tmp_path, cell, ensemble=False, readout=True, T=30):
    E = 2 if ensemble else 1
    params = rnnsim.init_params(cell, 6, 3, 4, E, scale=2.0, seed=1)
    x = np.random.default_rng(2).standard_normal((E, 3, T, 3))
    if not readout:
        params = {k: v for k, v in params.items() if k not in ("weight_out", "bias_out")}
    saved = params if ensemble else {k: v[0] for k, v in params.items()}
    np.savez(tmp_path / "P.npz", **saved)
    np.save(tmp_path / "X.npy", x if ensemble else x[0])
    return params, x


def _args(tmp_path, cell, *extra):
    return ["lyapunov", "--cell", cell, "--params", tmp_path / "P.npz", "--inputs", tmp_path / "X.npy",
            "--out", tmp_path / "L.npz", *extra]


@pytest.mark.parametrize("ensemble", [False, True])
@pytest.mark.parametrize("cell", cells.names())
def test_round_trip_matches_python_api(tmp_path, cell, ensemble):
    params, x = _write(tmp_path, cell, ensemble)
    result = run(*_args(tmp_path, cell, "--k", "3", "--warmup", "10"))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "lambda_max" in result.stdout
    expected = rnnsim.lyapunov(cell, params, x, k=3, warmup=10)
    with np.load(tmp_path / "L.npz") as saved:
        assert set(saved.files) == set(expected)
        for key, value in expected.items():
            want = value if ensemble or not isinstance(value, np.ndarray) else value[0]
            np.testing.assert_array_equal(saved[key], want, err_msg=key)
        assert saved["exponents"].shape == ((2, 3) if ensemble else (3,))


def test_a_state_dict_without_readout(tmp_path):
    """torch.nn.LSTM's state dict has no readout; the spectrum does not need one."""
    params, x = _write(tmp_path, "lstm", readout=False)
    result = run(*_args(tmp_path, "lstm", "--qr-every", "2", "--warmup", "4"))
    assert result.exit_code == 0, result.output
    full = rnnsim.init_params("lstm", 6, 3, 4, 1, scale=2.0, seed=1)
    expected = rnnsim.lyapunov("lstm", full, x, k=1, qr_every=2, warmup=4)
    with np.load(tmp_path / "L.npz") as saved:
        np.testing.assert_array_equal(saved["exponents"], expected["exponents"][0])
        assert int(saved["steps"]) == expected["steps"]


def test_existing_output_needs_force(tmp_path):
    _write(tmp_path, "rnn")
    (tmp_path / "L.npz").write_bytes(b"precious")
    assert_one_line_error(run(*_args(tmp_path, "rnn", "--warmup", "5")), "already exists", "--force")
    assert (tmp_path / "L.npz").read_bytes() == b"precious"
    assert run(*_args(tmp_path, "rnn", "--warmup", "5", "--force")).exit_code == 0


def test_output_is_written_atomically(tmp_path, monkeypatch):
    from rnnsim import _io
    _write(tmp_path, "gru")
    renamed = []
    real = os.replace

    def replace(src, dst):
        assert os.path.basename(src).startswith(_io.TMP_PREFIX)
        renamed.append(os.path.basename(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert run(*_args(tmp_path, "gru", "--warmup", "5")).exit_code == 0
    assert renamed == ["L.npz"]


@pytest.mark.parametrize("extra, words", [
    (["--k", "0"], "k must be >= 1"),
    (["--k", "13"], "k"),                       # the rnn's state has 6 dimensions
    (["--k", "x"], "'x' is not an integer"),
    (["--k", "2.5"], "is not an integer"),
    (["--warmup", "-1"], "warmup must be >= 0"),
    (["--warmup", "30"], "warmup"),             # warmup + qr-every > T = 30
    (["--qr-every", "0"], "qr-every must be >= 1"),
    (["--cell", "elman"], "'elman' is not one of"),
])
def test_bad_options(tmp_path, extra, words):
    _write(tmp_path, "rnn")
    before = snapshot(tmp_path)
    assert_one_line_error(run(*_args(tmp_path, "rnn", *extra)), words)
    assert snapshot(tmp_path) == before


def test_bad_files(tmp_path):
    params, x = _write(tmp_path, "rnn")
    np.save(tmp_path / "X3.npy", x)  # (E, B, T, D) with single-network params
    (tmp_path / "junk.npz").write_text("not an archive")
    np.save(tmp_path / "single.npy", x[0])
    np.savez(tmp_path / "bad.npz", **{k: v[0] for k, v in params.items()}, extra=np.zeros(2))
    cases = [
        (["--params", tmp_path / "none.npz"], "no such file"),
        (["--params", tmp_path / "junk.npz"], "cannot read"),
        (["--params", tmp_path / "single.npy"], "expected an .npz archive"),
        (["--params", tmp_path / "bad.npz"], "unknown key(s): extra"),
        (["--inputs", tmp_path / "X3.npy"], "inputs must be (B, T, D)"),
        (["--inputs", tmp_path / "P.npz"], "expected a single .npy array"),
        (["--out", tmp_path / "missing" / "L.npz"], "does not exist"),
    ]
    for extra, words in cases:
        args = _args(tmp_path, "rnn", "--warmup", "5")
        for flag, value in zip(extra[::2], extra[1::2]):
            args[args.index(flag) + 1] = value
        before = snapshot(tmp_path)
        assert_one_line_error(run(*args), words)
        assert snapshot(tmp_path) == before
