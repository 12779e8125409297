"""Training: tasks, optimisers step for step against torch, learning, clipping, bad input."""
import numpy as np
import pytest

import rnnsim
from rnnsim import cells
from rnnsim.train import TASKS, make_batch, task_dims, tasks, train

from helpers import assert_close

torch = pytest.importorskip("torch")
TORCH_MODULE = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def _networks(cell, task, E, H=5, scale=1.0, dtype=np.float64, seed=3):
    dims = task_dims(task)
    return rnnsim.init_params(cell, H, dims.input_size, dims.outputs, E, scale=scale, bias_scale=0.2,
                              forget_bias=0.5, seed=seed, dtype=dtype)


def _torch_training(cell, params, task, e, *, T, steps, batch, optimizer, lr, clip, seed):
    """Network e trained the way a torch user would: nn module, autograd, torch.optim, and
    Pascanu's clipping g <- g c/||g|| when ||g|| > c (torch's clip_grad_norm_ divides by
    ||g|| + 1e-6, which differs from the rule by 1e-6/||g|| relative)."""
    D, H = params["weight_ih_l0"].shape[2], params["weight_hh_l0"].shape[2]
    mod = TORCH_MODULE[cell](D, H, batch_first=True, dtype=torch.float64)
    out = torch.nn.Linear(H, params["weight_out"].shape[1], dtype=torch.float64)
    with torch.no_grad():
        for key in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(mod, key).copy_(torch.from_numpy(params[key][e]))
        out.weight.copy_(torch.from_numpy(params["weight_out"][e]))
        out.bias.copy_(torch.from_numpy(params["bias_out"][e]))
    weights = list(mod.parameters()) + list(out.parameters())
    opt = (torch.optim.Adam(weights, lr=lr) if optimizer == "adam"
           else torch.optim.SGD(weights, lr=lr, momentum=0.9))
    for step in range(steps):
        x, y = make_batch(task, batch, T, seed, step=step)
        z = out(mod(torch.from_numpy(x))[0][:, -1])
        if task == "adding":
            loss = torch.nn.functional.mse_loss(z, torch.from_numpy(y))
        else:
            loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            norm = torch.sqrt(sum((w.grad ** 2).sum() for w in weights))
            if norm > clip:
                for w in weights:
                    w.grad *= clip / norm
        opt.step()
    named = dict(zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), mod.parameters()))
    named.update(weight_out=out.weight, bias_out=out.bias)
    return {key: value.detach().numpy() for key, value in named.items()}


@pytest.mark.parametrize("clip", [None, 0.05], ids=["noclip", "clip"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("task", ["copy-first", "adding"])
@pytest.mark.parametrize("cell", cells.names())
def test_updates_equal_torch_step_for_step(cell, task, optimizer, clip):
    E, T, steps, batch, lr = 2, 6, 4, 3, 0.05
    params = _networks(cell, task, E)
    ours = train(cell, params, task, length=T, steps=steps, batch=batch, optimizer=optimizer, lr=lr,
                 clip=clip, seed=[4, 9], eval_batch=4)
    if clip is not None:  # the clipping branch must have been taken, or this test checks nothing of it
        assert ours.history["clipped"].any()
    for e, seed in enumerate([4, 9]):
        theirs = _torch_training(cell, params, task, e, T=T, steps=steps, batch=batch, optimizer=optimizer,
                                 lr=lr, clip=clip, seed=seed)
        for key, value in theirs.items():
            assert_close(ours.params[key][e], value, 1e-10, name=f"{key}[{e}]")


@pytest.mark.parametrize("task", TASKS)
def test_batches_follow_the_published_definitions(task):
    x, y = make_batch(task, 64, 40, seed=1, step=2)
    dims = task_dims(task)
    assert x.shape == (64, 40, dims.input_size)
    again = make_batch(task, 64, 40, seed=1, step=2)
    np.testing.assert_array_equal(x, again[0])  # same stream, same batch
    assert not np.array_equal(x, make_batch(task, 64, 40, seed=1, step=3)[0])  # a fresh batch every step
    if task == "adding":
        markers = x[:, :, 1]
        assert (markers.sum(axis=1) == 2).all()
        first, second = (np.argsort(-markers, axis=1, kind="stable")[:, :2]).T
        assert (first < 4).all() and (second < 20).all()  # first 10%, first half
        np.testing.assert_allclose(y[:, 0], 0.5 * (x[np.arange(64), first, 0] + x[np.arange(64), second, 0]))
    elif task == "temporal-order":
        symbols = x.argmax(axis=2)
        assert (x.sum(axis=2) == 1).all()
        relevant = symbols < 2
        assert (relevant.sum(axis=1) == 2).all()
        assert (relevant[:, 4:8].sum(axis=1) == 1).all() and (relevant[:, 20:24].sum(axis=1) == 1).all()
        np.testing.assert_array_equal(y, 2 * symbols[:, 4:8].min(axis=1) + symbols[:, 20:24].min(axis=1))
    else:
        np.testing.assert_array_equal(x[:, 0].argmax(axis=1), y)
        assert (x[:, 0].sum(axis=1) == 1).all()


@pytest.mark.parametrize("task", TASKS)
def test_training_lowers_the_loss_on_every_task(task):
    params = _networks("lstm", task, 2, H=16, seed=0)
    T = 10 if task == "temporal-order" else 5
    result = train("lstm", params, task, length=T, steps=60, batch=32, lr=1e-2, seed=[0, 1], eval_batch=128)
    first, last = result.evaluations["loss"][0], result.evaluations["loss"][-1]
    assert (last < 0.8 * first).all(), (first, last)


def test_a_network_depends_only_on_its_own_seed_and_weights():
    params = _networks("rnn", "copy-first", 3)
    both = train("rnn", params, "copy-first", length=5, steps=3, batch=4, seed=[7, 8, 9], eval_batch=4)
    alone = train("rnn", {k: v[1:2] for k, v in params.items()}, "copy-first", length=5, steps=3, batch=4,
                  seed=[8], eval_batch=4)
    for key, value in alone.params.items():
        assert_close(both.params[key][1:2], value, 1e-12, name=key)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"optimizer": "rmsprop"}, "unknown optimizer"),
    ({"lr": 0}, "lr must be > 0"),
    ({"lr": float("nan")}, "lr must be finite"),
    ({"clip": -1}, "clip must be > 0"),
    ({"steps": 0}, "steps"),
    ({"seed": [1, 2, 3]}, "one int per network"),
    ({"task": "parity"}, "unknown task"),
    ({"length": 5, "task": "temporal-order"}, "length >= 10"),
])
def test_bad_training_input_is_one_clear_error(kwargs, message):
    args = {"task": "copy-first", "length": 12, "steps": 2, "seed": [0, 1]} | kwargs
    params = _networks("rnn", "copy-first", 2)
    with pytest.raises(ValueError, match=message):
        train("rnn", params, args.pop("task"), **args)


def test_networks_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match="input_size=2 and num_classes=1"):
        train("rnn", _networks("rnn", "copy-first", 1), "adding", length=10, steps=1)


def test_copy_noise_is_the_documented_constant():
    x, _ = make_batch("copy-first", 4096, 3, seed=0)
    assert abs(x[:, 1:].std() - tasks.COPY_NOISE) < 0.02


@pytest.mark.slow
@pytest.mark.parametrize(("task", "steps", "chance"),
                         [("copy-first", 800, 1 / 8), ("temporal-order", 400, 1 / 4)])
def test_lstm_keeps_context_at_T50_where_the_rnn_stays_at_chance(task, steps, chance):
    """The seed's claim, at one fixed initialisation: six networks per cell, H=32, Adam lr 1e-2,
    32 sequences a step; rnn at scale 0.5, lstm at scale 1 with forget bias 3.

    Training is chaotic: rounding that differs between CPUs (vector widths) moves single
    runs (seen: one lstm network in six stalls at ~0.45 on copy-first, and a run that ends
    at 0.99 on one machine ended at 0.89 on another). So the test asserts the claim over
    the ensemble: some lstm network reaches 90% and the lstm networks' mean rate is at
    least 0.6 (seen here: copy-first 0.99, 0.43, 0.90, 0.85, 0.99, 0.70), while every rnn
    network stays within 0.1 of chance. Broken training fails the first two; a broken task
    generator (say, the symbol lost) fails them too.
    """
    dims = task_dims(task)
    rates = {}
    for cell, scale, forget_bias in (("rnn", 0.5, 0.0), ("lstm", 1.0, 3.0)):
        params = rnnsim.init_params(cell, 32, dims.input_size, dims.outputs, 6, scale=scale, seed=0,
                                    forget_bias=forget_bias)
        result = train(cell, params, task, length=50, steps=steps, batch=32, lr=1e-2, seed=list(range(6)),
                       eval_every=100)
        rates[cell] = result.final["rate"]
    assert rates["lstm"].max() >= 0.9 and rates["lstm"].mean() >= 0.6, rates
    assert (rates["rnn"] <= chance + 0.1).all(), rates


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_clipping_keeps_float32_training_finite_where_plain_training_diverges(optimizer):
    """rnn, H=64, scale 3, T=600: ln||g|| at init is ~140 > ln(float32 max) + ln(sqrt(n)) = 93
    (n entries per network), so the largest entry of the float32 gradient, at least ||g||/sqrt(n),
    is inf and an unclipped step makes the weights non-finite (diverged); clipped at c=1 the
    step is exact and every network stays finite. (At T=400 one network's ln||g|| came out 89.6
    on an AMD EPYC: above ln(float32 max) but with every entry finite. The network is chaotic,
    so the CPU kind's last bits move that figure by nats.)"""
    params = rnnsim.init_params("rnn", 64, 8, 8, 2, scale=3.0, seed=1, dtype=np.float32)
    kwargs = dict(length=600, steps=3, batch=8, optimizer=optimizer, lr=1e-2, seed=[0, 1], eval_batch=8)
    plain = train("rnn", params, "copy-first", **kwargs)
    clipped = train("rnn", params, "copy-first", clip=1.0, **kwargs)
    entries = sum(value[0].size for value in params.values())
    some_entry_overflows = np.log(np.finfo(np.float32).max) + 0.5 * np.log(entries)
    assert (plain.history["log_grad_norm"][0] > some_entry_overflows).all()
    assert plain.final["diverged"].all() and (plain.final["diverged_at"] == 0).all()
    assert not clipped.final["diverged"].any()
    assert np.isfinite(clipped.history["loss"]).all() and clipped.history["clipped"].all()
    for value in clipped.params.values():
        assert np.isfinite(value).all()
    # it trained: the clipped step moves W_hh, which carries nearly all of the norm
    assert not np.array_equal(clipped.params["weight_hh_l0"], params["weight_hh_l0"])


@pytest.mark.parametrize("task", ["copy-first", "adding"])
def test_evaluations_score_the_reference_readout(task):
    """The held-out loss and rate at step 0 are the task's loss and success rate of the
    untrained networks' readout, computed here from the NumPy reference's forward pass."""
    from rnnsim.train import make_ensemble_batch

    params = _networks("gru", task, 2)
    result = train("gru", params, task, length=7, steps=1, seed=[3, 5], eval_batch=64)
    x, y = make_ensemble_batch(task, [3, 5], 64, 7, evaluation=True)
    h_last = rnnsim.reference.forward("gru", params, x)["h"][:, :, -1]
    z = np.einsum("ebh,ekh->ebk", h_last, params["weight_out"]) + params["bias_out"][:, None, :]
    if task == "adding":
        loss, solved = ((z - y) ** 2).mean(axis=2), ((z - y) ** 2)[..., 0] < 0.04
    else:
        log_p = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
        loss, solved = -np.take_along_axis(log_p, y[..., None], axis=2)[..., 0], z.argmax(axis=2) == y
    assert_close(result.evaluations["loss"][0], loss.mean(axis=1), 1e-12, name="loss")
    np.testing.assert_allclose(result.evaluations["rate"][0], solved.mean(axis=1))
    assert result.evaluations["step"].tolist() == [0, 1]
