"""Bad input to rnnsim.gradients: a ValueError/TypeError whose message names the problem."""
import os

import numpy as np
import pytest

import rnnsim

from helpers import make_problem


@pytest.fixture
def problem():
    return make_problem("lstm", 2, 3, 4, 2, 3, 4)


def _call(params, x, y, **kw):
    return rnnsim.gradients(kw.pop("cell", "lstm"), params, x, y, **kw)


@pytest.mark.parametrize("mutate, exc, words", [
    (lambda p, x, y: (p, x[0], y), ValueError, "(E, B, T, D)"),
    (lambda p, x, y: (p, x[:, :, :, :1], y), ValueError, "inputs"),
    (lambda p, x, y: (p, x[:1], y), ValueError, "inputs"),
    (lambda p, x, y: ({**p, "weight_hh_l0": p["weight_hh_l0"][:, :, :2]}, x, y), ValueError, "weight_hh_l0"),
    (lambda p, x, y: ({**p, "weight_out": p["weight_out"][:1]}, x, y), ValueError, "weight_out"),
    (lambda p, x, y: ({**p, "bias_ih_l0": p["bias_ih_l0"][:, :5]}, x, y), ValueError, "bias_ih_l0"),
    (lambda p, x, y: ({k: v for k, v in p.items() if k != "bias_out"}, x, y), ValueError, "bias_out"),
    (lambda p, x, y: ({**p, "weight_hr_l0": p["bias_out"]}, x, y), ValueError, "weight_hr_l0"),
    (lambda p, x, y: (p, x, y.astype(np.float64)), TypeError, "integer"),
    (lambda p, x, y: (p, x, y.astype(bool)), TypeError, "integer"),
    (lambda p, x, y: (p, x, y + 4), ValueError, "[0, 3]"),
    (lambda p, x, y: (p, x, y - 1), ValueError, "[0, 3]"),
    (lambda p, x, y: (p, x, y[:, :2]), ValueError, "targets"),
    (lambda p, x, y: (p, np.where(np.arange(4)[:, None] == 1, np.nan, x), y), ValueError, "NaN"),
    (lambda p, x, y: ({**p, "weight_hh_l0": p["weight_hh_l0"] * np.inf}, x, y), ValueError, "weight_hh_l0"),
    (lambda p, x, y: (p, x[:, :, :0], y), ValueError, "T (time steps)"),
    (lambda p, x, y: (p, x[:, :0], y[:, :0]), ValueError, "B (sequences)"),
    (lambda p, x, y: ({k: v.astype(np.float32) for k, v in p.items()}, x, y), TypeError, "dtype"),
    (lambda p, x, y: ({**p, "bias_out": p["bias_out"].astype(np.float32)}, x, y), TypeError, "bias_out"),
    (lambda p, x, y: (p, x.astype(np.int64), y), TypeError, "float32 or float64"),
    (lambda p, x, y: (list(p.values()), x, y), TypeError, "dict"),
])
def test_bad_input_is_named(problem, mutate, exc, words):
    params, x, y = mutate(*problem)
    with pytest.raises(exc) as info:
        _call(params, x, y)
    message = str(info.value)
    assert words in message and "\n" not in message


def test_zero_hidden_size():
    params, x, y = make_problem("rnn", 1, 2, 3, 2, 1, 2)
    params = {k: v[:, :0] if k != "bias_out" and k != "weight_out" else v for k, v in params.items()}
    params["weight_hh_l0"] = np.zeros((1, 0, 0))
    params["weight_out"] = np.zeros((1, 2, 0))
    with pytest.raises(ValueError, match="H .hidden size. must be at least 1"):
        rnnsim.gradients("rnn", params, x, y)


@pytest.mark.parametrize("kw, words", [
    (dict(cell="elman"), "unknown cell 'elman'"),
    (dict(loss="mean"), "unknown loss 'mean'"),
    (dict(device="tpu"), "unknown device 'tpu'"),
])
def test_unknown_names(problem, kw, words):
    with pytest.raises(ValueError, match=words):
        _call(*problem, **kw)


def test_loss_every_needs_per_step_targets(problem):
    params, x, y = problem
    with pytest.raises(ValueError, match=r"loss='every' needs \(2, 3, 4\)"):
        _call(params, x, y, loss="every")


def test_inputs_are_not_modified(problem):
    params, x, y = problem
    copies = ({k: v.copy() for k, v in params.items()}, x.copy(), y.copy())
    _call(params, x, y)
    for k in params:
        np.testing.assert_array_equal(params[k], copies[0][k])
    np.testing.assert_array_equal(x, copies[1])
    np.testing.assert_array_equal(y, copies[2])


def test_non_contiguous_inputs_are_accepted(problem):
    params, x, y = problem
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],))
    wide[..., ::2] = x
    np.testing.assert_array_equal(_call(params, wide[..., ::2], y)["weight_hh_l0"],
                                  _call(params, x, y)["weight_hh_l0"])


@pytest.mark.parametrize("entry", ["gradients", "forward"])
def test_impossible_sizes_are_refused_before_copying(entry):
    """A broadcast view of 3e10 elements: refused by size, never copied or scanned."""
    params = rnnsim.init_params("rnn", 3, 3, 2, 1)
    x = np.broadcast_to(np.zeros(1), (1, 100_000, 100_000, 3))
    args = (params, x, np.zeros((1, 100_000), dtype=np.int64)) if entry == "gradients" else (params, x)
    with pytest.raises(ValueError, match=rf"{entry}\(\) for E=1, B=100000, T=100000.*needs about "
                                         r".* GiB of memory but only"):
        getattr(rnnsim, entry)("rnn", *args)


def test_validation_does_not_copy_its_input():
    """The NaN/inf check runs over blocks of a broadcast view: peak memory stays far
    below the 256 MB that one boolean copy of it would take."""
    import tracemalloc

    params = rnnsim.init_params("rnn", 3, 8, 2, 1)
    x = np.broadcast_to(np.array(np.nan), (1, 2000, 2000, 8))  # 32e6 elements, no memory
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="inputs contains 32000000 NaN/inf value"):
            rnnsim.forward("rnn", params, x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, peak


def test_memory_limit_refuses_a_normal_call(problem, monkeypatch):
    from rnnsim import config
    monkeypatch.setattr(config, "MEMORY_LIMIT_BYTES", 1000)
    with pytest.raises(ValueError, match="needs about .* of memory but only"):
        _call(*problem)


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="Linux only: /proc/meminfo")
def test_available_memory_is_the_os_figure(monkeypatch):
    """Without a configured limit, the memory a call may use is MemAvailable of
    /proc/meminfo (read here line by line, as a second reading of the same file;
    the OS's figure moves between the two reads, so within 5%)."""
    from rnnsim import _memory, config
    monkeypatch.setattr(config, "MEMORY_LIMIT_BYTES", None)
    with open("/proc/meminfo") as fh:
        kib = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:"))
    assert _memory.available_bytes() == pytest.approx(kib * 1024, rel=0.05)


def test_available_memory_without_meminfo_falls_back(monkeypatch):
    """Where /proc/meminfo cannot be read, the OS's free pages count instead (within 5%:
    they move between the two reads)."""
    from rnnsim import _memory, config
    monkeypatch.setattr(config, "MEMORY_LIMIT_BYTES", None)

    def refuse(*args, **kwargs):
        raise OSError("no /proc here")
    monkeypatch.setattr(_memory.os, "open", refuse)
    expected = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert _memory.available_bytes() == pytest.approx(expected, rel=0.05)
