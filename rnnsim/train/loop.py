r"""Training whole ensembles: one exact gradients call per step for every network at once.

Each network has its own weights, its own data stream and its own optimiser state,
so the result of network e depends only on its initial parameters, its seed and
the settings, never on the other networks of the ensemble.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._parse import finite_float, parse_int, positive_int
from .._validate import check_choice
from ..engine import forward, gradients
from . import tasks
from .optim import OPTIMIZERS, make_optimizer

SOLVED_RATE = 0.9
"""A network has solved its task when its evaluation rate (accuracy, or the adding
task's fraction of sequences with squared error below 0.04) reaches this."""


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    params : dict of (E, ...) arrays, the final weights (in the compute dtype)
    history : dict of (steps, E) arrays, one row per step, measured on that step's
        training batch before its update: ``loss``, ``rate`` (float64), ``log_grad_norm``
        (ln of the unclipped global gradient norm), ``clipped`` and ``skipped`` (bool).
        A diverged network's rows are NaN (False) from its divergence on.
    evaluations : dict with ``step`` (n,) and ``loss``, ``rate`` (n, E) on the held-out
        evaluation batch, at step 0, every ``eval_every`` steps and after the last step.
    final : dict of (E,) arrays: ``loss`` and ``rate`` (the last evaluation), ``solved``
        (rate >= :data:`SOLVED_RATE`), ``steps_to_success`` (the first evaluation step
        with rate >= :data:`SOLVED_RATE`, NaN if none), ``diverged`` and ``diverged_at``
        (the step whose update made the network non-finite, NaN if none).
    task : str
    settings : dict, the arguments of the call (JSON-serialisable)
    """

    params: dict
    history: dict
    evaluations: dict
    final: dict
    task: str
    settings: dict


def evaluation_steps(steps: int, eval_every: int) -> np.ndarray:
    """The steps at which :func:`train` evaluates: 0, every ``eval_every`` steps, and ``steps``
    (after the last update)."""
    return np.array(sorted(set(range(0, steps, eval_every)) | {steps}))


def _seeds(seed, E):
    if np.ndim(seed) == 0:
        return np.full(E, parse_int("seed", seed, minimum=0), dtype=np.int64)
    seeds = np.asarray([parse_int("seed", s, minimum=0) for s in np.asarray(seed).ravel()], dtype=np.int64)
    if seeds.shape != (E,):
        raise ValueError(f"seed must be an int or one int per network ({E}), got {np.shape(seed)}")
    return seeds


def _readout(params, h_last):
    """The readout z_T = W_out h_T + b_out of every network, (E, B, K) float64."""
    return (np.einsum("ebh,ekh->ebk", h_last.astype(np.float64), params["weight_out"].astype(np.float64))
            + params["bias_out"].astype(np.float64)[:, None, :])


def _outputs(cell, params, inputs, device):
    """z_T from a forward pass (the evaluations, which need no gradients)."""
    return _readout(params, forward(cell, params, inputs, device=device)["h"][:, :, -1])


def _finite_rows(params, E):
    ok = np.ones(E, dtype=bool)
    for value in params.values():
        ok &= np.isfinite(value.reshape(E, -1)).all(axis=1)
    return ok


def train(cell, params, task, *, length, steps, batch=32, optimizer="adam", lr=1e-3, momentum=0.9, clip=None,
          seed=0, eval_batch=256, eval_every=None, device="cpu", progress=None) -> TrainResult:
    r"""Train every network of an ensemble on ``task``, each with its own optimiser state.

    Parameters
    ----------
    cell : str, a name from :func:`rnnsim.cells.names`
    params : dict of (E, ...) arrays from :func:`rnnsim.init_params` with the task's
        input size and outputs (:func:`rnnsim.train.task_dims`); their dtype is the compute dtype
    task : one of :data:`rnnsim.train.TASKS`
    length : int, the sequence length T
    steps : int, optimiser steps
    batch : int, training sequences per network and step (fresh every step)
    optimizer : {"adam", "sgd"}; ``momentum`` applies to SGD
    lr : float, learning rate
    clip : None, or c > 0: global-norm clipping per network
    seed : int or (E,) ints, each network's data stream
    eval_batch, eval_every : the held-out evaluation batch and its period (default steps // 20)
    device : {"cpu", "cuda", "auto"}
    progress : None or callable(done, steps)

    Returns
    -------
    TrainResult

    Notes
    -----
    One step: :math:`g = \nabla_\theta L` exactly (:func:`rnnsim.gradients`); with
    clipping (Pascanu, Mikolov & Bengio 2013), :math:`g \leftarrow g \cdot c/\|g\|` when
    :math:`\|g\| > c`, where the norm and the factor come from the log-domain mantissas,
    so the clipped gradient is exact even where the unclipped one overflows the dtype;
    a step whose norm is not finite is skipped. Then the optimiser updates float64
    master weights (:mod:`rnnsim.train.optim`), which are cast to the compute dtype for
    the next step. A network whose weights (in the compute dtype) or loss become
    non-finite has diverged: it keeps its last finite weights and stops training.
    """
    task = check_choice("task", task, tasks.TASKS)
    optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
    dims = tasks.task_dims(task)
    T = tasks.check_length(task, length)
    steps, batch = positive_int("steps", steps), positive_int("batch", batch)
    eval_batch = positive_int("eval_batch", eval_batch)
    eval_every = max(1, steps // 20) if eval_every is None else positive_int("eval_every", eval_every)
    if clip is not None:
        clip = finite_float("clip", clip, minimum=0.0, strict=True)
    first = params.get("weight_ih_l0") if isinstance(params, dict) else None
    if first is None or np.ndim(first) != 3:
        raise ValueError("params must be a dict of ensemble arrays from rnnsim.init_params")
    E, dtype = first.shape[0], first.dtype
    if first.shape[2] != dims.input_size or params["weight_out"].shape[1] != dims.outputs:
        raise ValueError(f"task {task!r} needs networks with input_size={dims.input_size} and num_classes="
                         f"{dims.outputs}, got {first.shape[2]} and {params['weight_out'].shape[1]}")
    seeds = _seeds(seed, E)
    master = {key: np.array(value, dtype=np.float64) for key, value in params.items()}
    current = {key: value.astype(dtype) for key, value in master.items()}
    opt = make_optimizer(optimizer, master, lr=lr, momentum=momentum)
    eval_x, eval_y = tasks.make_ensemble_batch(task, seeds, eval_batch, T, evaluation=True, dtype=dtype)

    history = {name: np.full((steps, E), np.nan) for name in ("loss", "rate", "log_grad_norm")}
    history.update(clipped=np.zeros((steps, E), dtype=bool), skipped=np.zeros((steps, E), dtype=bool))
    eval_steps = evaluation_steps(steps, eval_every)
    eval_row = {int(step): row for row, step in enumerate(eval_steps)}
    evaluations = {"step": eval_steps, "loss": np.full((len(eval_steps), E), np.nan),
                   "rate": np.full((len(eval_steps), E), np.nan)}
    alive = np.ones(E, dtype=bool)
    diverged_at = np.full(E, np.nan)

    def evaluate(row):
        loss, solved = tasks.score(task, _outputs(cell, current, eval_x, device), eval_y)
        evaluations["loss"][row] = np.where(alive, loss.mean(axis=1), np.nan)
        evaluations["rate"][row] = np.where(alive, solved.mean(axis=1), np.nan)

    for step in range(steps):
        if step in eval_row:
            evaluate(eval_row[step])
        x, y = tasks.make_ensemble_batch(task, seeds, batch, T, step=step, dtype=dtype)
        result = gradients(cell, current, x, y, loss=dims.loss, clip=clip, device=device)
        loss = np.asarray(result["loss"], dtype=np.float64)
        _, solved = tasks.score(task, _readout(current, result["h_last"]), y)  # the step's own forward
        norm = result["log_grad_norm_params"]
        skipped = alive & ~np.isfinite(norm) if clip is not None else np.zeros(E, dtype=bool)
        alive &= np.isfinite(loss)  # a non-finite loss: the forward already left the range
        history["loss"][step] = np.where(alive, loss, np.nan)
        history["rate"][step] = np.where(alive, solved.mean(axis=1), np.nan)
        history["log_grad_norm"][step] = np.where(alive, norm, np.nan)
        history["clipped"][step] = alive & result["clipped"] if clip is not None else False
        history["skipped"][step] = alive & skipped
        diverged_at[~alive & np.isnan(diverged_at)] = step
        before = {key: value.copy() for key, value in master.items()}
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging step is found just below
            opt.step(master, result, alive & ~skipped)
            candidate = {key: value.astype(dtype) for key, value in master.items()}
        ok = _finite_rows(candidate, E)
        broke = alive & ~ok
        if broke.any():  # keep the last finite weights of the networks this update broke
            for key in master:
                master[key][broke] = before[key][broke]
                candidate[key][broke] = current[key][broke]
            diverged_at[broke] = step
            alive &= ok
        current = candidate
        if progress is not None:
            progress(step + 1, steps)
    evaluate(len(eval_steps) - 1)

    rates = evaluations["rate"]
    reached = rates >= SOLVED_RATE
    first_hit = np.where(reached.any(axis=0), evaluations["step"][reached.argmax(axis=0)], np.nan)
    final = {"loss": evaluations["loss"][-1], "rate": rates[-1],
             "solved": np.nan_to_num(rates[-1]) >= SOLVED_RATE,
             "steps_to_success": first_hit.astype(np.float64), "diverged": ~alive, "diverged_at": diverged_at}
    settings = {"cell": cell, "task": task, "length": T, "steps": steps, "batch": batch,
                "optimizer": optimizer, "lr": float(lr), "momentum": float(momentum), "clip": clip,
                "seeds": seeds.tolist(), "eval_batch": eval_batch, "eval_every": eval_every, "device": device,
                "dtype": np.dtype(dtype).name}
    return TrainResult(params=current, history=history, evaluations=evaluations, final=final, task=task,
                       settings=settings)
