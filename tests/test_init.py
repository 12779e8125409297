"""The initializer: shapes, schemes, determinism per (seed, network), bad arguments."""
import numpy as np
import pytest

import rnnsim
from rnnsim import cells


@pytest.mark.parametrize("cell", cells.names())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_and_dtype(cell, dtype):
    p = rnnsim.init_params(cell, 5, 3, 4, 2, dtype=dtype)
    assert {k: v.shape for k, v in p.items()} == cells.get(cell).param_shapes(2, 5, 3, 4)
    assert all(v.dtype == dtype for v in p.values())


def test_networks_depend_only_on_seed_and_index():
    big = rnnsim.init_params("lstm", 4, 3, 2, 5, seed=3, scheme="orthogonal")
    small = rnnsim.init_params("lstm", 4, 3, 2, 3, seed=3, scheme="orthogonal")
    for k in big:
        np.testing.assert_array_equal(big[k][:3], small[k])
    other = rnnsim.init_params("lstm", 4, 3, 2, 3, seed=4, scheme="orthogonal")
    assert not np.allclose(other["weight_hh_l0"], small["weight_hh_l0"])
    assert not np.allclose(big["weight_hh_l0"][0], big["weight_hh_l0"][1])


def test_orthogonal_and_identity_blocks():
    H = 6
    p = rnnsim.init_params("lstm", H, 2, 2, 2, scheme="orthogonal", scale=0.7)
    for e in range(2):
        for k in range(4):
            block = p["weight_hh_l0"][e, k * H:(k + 1) * H]
            np.testing.assert_allclose(block @ block.T, 0.49 * np.eye(H), atol=1e-12)
    p = rnnsim.init_params("rnn", H, 2, 2, 1, scheme="identity", scale=1.2)
    np.testing.assert_array_equal(p["weight_hh_l0"][0], 1.2 * np.eye(H))


def test_gaussian_and_uniform_statistics():
    H = 400
    g = rnnsim.init_params("rnn", H, 50, 2, 1, scheme="gaussian", scale=2.0, input_scale=0.5,
                           bias_scale=0.3)
    assert abs(g["weight_hh_l0"].var() * H / 4.0 - 1) < 0.02
    assert abs(g["weight_ih_l0"].var() * 50 / 0.25 - 1) < 0.05
    assert abs(g["bias_ih_l0"].std() / 0.3 - 1) < 0.15
    assert np.all(g["bias_hh_l0"] == 0)
    u = rnnsim.init_params("rnn", H, 2, 2, 1, scheme="uniform", scale=3.0)
    bound = 3.0 / np.sqrt(H)
    assert np.abs(u["weight_hh_l0"]).max() <= bound
    assert np.abs(u["weight_hh_l0"]).max() > 0.99 * bound


def test_forget_bias_lands_in_the_forget_rows():
    p = rnnsim.init_params("lstm", 3, 2, 2, 1, forget_bias=4.0, bias_scale=0.0)
    np.testing.assert_array_equal(p["bias_ih_l0"][0], [0, 0, 0, 4, 4, 4, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("kw, exc, words", [
    (dict(cell="elman"), ValueError, "cell"),
    (dict(scheme="xavier"), ValueError, "scheme"),
    (dict(hidden_size=0), ValueError, "hidden_size"),
    (dict(ensemble=-1), ValueError, "ensemble"),
    (dict(scale=0.0), ValueError, "scale"),
    (dict(scale=float("nan")), ValueError, "scale"),
    (dict(input_scale=-1.0), ValueError, "input_scale"),
    (dict(seed=-3), ValueError, "seed"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(forget_bias="big"), ValueError, "forget_bias"),
    (dict(update_bias=[1.0]), TypeError, "update_bias"),
    (dict(scale=True), TypeError, "scale"),
    (dict(scale=1e200), ValueError, "scale"),
    (dict(hidden_size=2.5), ValueError, "hidden_size"),
    (dict(seed="x"), ValueError, "seed"),
])
def test_bad_arguments(kw, exc, words):
    """The same parsers as the sweep and the CLI (rnnsim._parse): numeric strings are
    numbers, bool never is, and the message starts with the argument's name."""
    args = dict(cell="rnn", hidden_size=3, input_size=2, num_classes=2)
    args.update(kw)
    with pytest.raises(exc, match=words):
        rnnsim.init_params(**args)


@pytest.mark.parametrize("kw", [dict(hidden_size=10**9), dict(cell="lstm", hidden_size=10**5),
                                dict(ensemble=10**12), dict(input_size=10**12), dict(num_classes=10**12)])
def test_impossible_sizes_are_refused_before_allocating(kw):
    args = dict(cell="rnn", hidden_size=3, input_size=2, num_classes=2)
    args.update(kw)
    with pytest.raises(ValueError, match=r"init_params\(.*needs about .* of memory but only .* is available"):
        rnnsim.init_params(**args)


def test_memory_limit_is_a_tunable(monkeypatch):
    from rnnsim import config
    monkeypatch.setattr(config, "MEMORY_LIMIT_BYTES", 10_000)
    with pytest.raises(ValueError, match="only 0.00954 MiB is available"):
        rnnsim.init_params("rnn", 64, 8, 4, 2)
    monkeypatch.setattr(config, "MEMORY_LIMIT_BYTES", None)
    assert rnnsim.init_params("rnn", 64, 8, 4, 2)["weight_hh_l0"].shape == (2, 64, 64)


def test_numbers_may_come_as_strings():
    a = rnnsim.init_params("rnn", "3", 2, 2, 1, scale="1.5", seed="4")
    b = rnnsim.init_params("rnn", 3, 2, 2, 1, scale=1.5, seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
