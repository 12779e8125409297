r"""Trainability as a sweep measure: train every network of a point on a long-memory task.

``--measure train:TASK`` (TASK one of :data:`rnnsim.train.TASKS`) adds, at every point
(cell, T, scale, seed) of the sweep, the outcome of training that point's network on
TASK at sequence length T with :func:`rnnsim.train.train`: its final held-out loss and
success rate, whether it solved the task, after how many steps, whether it diverged,
and what its gradient norm did. The summary and the phase diagram then set learning
beside the gradient map of the same grid.

One task per sweep: the summary's columns are ``train_*`` without a task prefix, and
the task is part of the configuration (``measure`` names it), so a resume with another
task is refused. A second task is a second results folder; the grids are the same, so
the folders line up point for point.

The networks
------------
The networks of the gradient map have ``input-size`` inputs and ``classes`` outputs; a
task needs its own (:func:`rnnsim.train.task_dims`). The point (cell, T, scale, seed = s)
therefore trains ``init_params(cell, hidden, D_task, K_task, 1, scheme=init,
scale=scale, input_scale=..., bias_scale=..., forget_bias=..., update_bias=..., seed=s,
dtype=dtype)``, whose recurrent weights W_hh are exactly those of the gradient map's
network at that point (``init_params`` draws W_hh first, from (seed, 0), whatever D and
K are), on the training batches of stream s. Its training depends only on (cell, T,
scale, s) and the training settings (``steps``, ``optimizer``, ``lr``, ``clip``,
``train-batch``, ``dtype``), never on the rest of the grid, so a resumed sweep trains
exactly what an uninterrupted one would. ``rnnsim train`` draws its seeds 0..N-1 the
same way, so it reproduces the sweep's points.

Fixed settings: held-out evaluation on :data:`EVAL_BATCH` sequences at
:func:`eval_steps` (step 0, about every ``steps / EVAL_POINTS`` steps, and the last);
SGD momentum :data:`MOMENTUM`.

Notes
-----
The success rate is the task's: classification accuracy for ``temporal-order`` and
``copy-first``, and for ``adding`` the fraction of sequences with squared error
:math:`(\hat y - y)^2 < 0.04`. A network solved the task when its final held-out rate
is at least :data:`rnnsim.train.SOLVED_RATE`; its steps to success are the first
evaluation step at which the rate reached it.
"""
from __future__ import annotations

import math

import numpy as np

EVAL_BATCH = 256
"""Held-out sequences of each evaluation (one fixed batch per network)."""

EVAL_POINTS = 50
"""About this many evaluations between step 0 and the last step."""

MOMENTUM = 0.9
"""SGD momentum (the adam optimizer has none)."""

TRAIN_DEFAULTS = {
    "task": None, "cell": "rnn", "hidden": 64, "length": 100, "scale": 1.0, "init": "gaussian",
    "input-scale": 1.0, "bias-scale": 0.0, "forget-bias": 1.0, "update-bias": 0.0,
    "optimizer": "adam", "lr": 0.001, "clip": "off", "steps": 1000, "batch": 32, "seeds": 4,
    "dtype": "float64",
}
"""The settings of ``rnnsim train`` (:mod:`rnnsim.sweep.trainrun`) (flag names; ``task`` has no default)."""

PREFIX = "train:"

RATE_MEANING = ("success rate on the held-out batch: accuracy for temporal-order and copy-first, the "
                "fraction of sequences with squared error < 0.04 for adding")

_LN10 = math.log(10.0)


def eval_every(steps: int) -> int:
    """Steps between evaluations: ceil(steps / :data:`EVAL_POINTS`)."""
    return max(1, -(-int(steps) // EVAL_POINTS))


def eval_steps(steps: int) -> np.ndarray:
    """The evaluation steps: 0, every :func:`eval_every` steps, and ``steps``
    (:func:`rnnsim.train.evaluation_steps`, the rule train() follows)."""
    from ..train import evaluation_steps
    return evaluation_steps(int(steps), eval_every(steps))


def tasks() -> tuple:
    from ..train import TASKS
    return TASKS


def parse_task(item: str, name: str = "measure") -> str:
    """The measure name ``"train:TASK"`` checked: TASK must be one of :data:`rnnsim.train.TASKS`."""
    task = item[len(PREFIX):] if item.startswith(PREFIX) else ""
    if task not in tasks():
        choices = ", ".join(PREFIX + t for t in tasks())
        if item == "train" or not task:
            raise ValueError(f"{name}: {item!r} needs a task: one of {choices}")
        raise ValueError(f"{name}: unknown task {task!r} in {item!r}; expected one of {choices}")
    return item


def check_lengths(task: str, lengths) -> None:
    """Refuse lengths shorter than the task's shortest sequence (one line, before any work)."""
    from ..train.tasks import check_length

    check_length(task, min(lengths))


def task_of(measure: tuple):
    """The task of the chosen measures (``"adding"`` for ``train:adding``), or None."""
    found = [name[len(PREFIX):] for name in measure if name.startswith(PREFIX)]
    return found[0] if found else None


def parse_clip(value, name: str = "clip"):
    """Gradient clipping: ``"off"`` or 0 is None (no clipping), else a global norm c > 0."""
    from .._parse import MAX_SCALE, finite_float

    if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
        return None
    clip = finite_float(name, value, minimum=0.0, maximum=MAX_SCALE)
    return None if clip == 0.0 else clip


def optimizers() -> tuple:
    from ..train import OPTIMIZERS
    return OPTIMIZERS


def draw_networks(config, cell, points, dims) -> dict:
    """The stacked (E, ...) parameters of the networks of ``points`` with the task's sizes
    (see the module notes: network s is the gradient map's W_hh with the task's W_ih and readout)."""
    from ..init import init_params

    drawn = [init_params(cell, config.hidden, dims.input_size, dims.outputs, 1, scheme=config.init,
                         scale=scale, input_scale=config.input_scale, bias_scale=config.bias_scale,
                         forget_bias=config.forget_bias, update_bias=config.update_bias, seed=seed,
                         dtype=config.dtype) for scale, seed in points]
    return {k: np.concatenate([p[k] for p in drawn]) for k in drawn[0]}


def compute(config, cell, T, points, device, networks, data, *, progress=None):
    """The "train" computation of one call: one :func:`rnnsim.train.train` call over the call's
    networks (drawn here with the task's sizes; the gradient map's ``networks`` and ``data`` are
    not used), network e on training stream ``points[e][1]``; ``progress`` goes to ``train``."""
    from ..train import task_dims, train

    task = task_of(config.measure)
    params = draw_networks(config, cell, points, task_dims(task))
    result = train(cell, params, task, length=T, steps=config.steps, batch=config.train_batch,
                   optimizer=config.optimizer, lr=config.lr, momentum=MOMENTUM, clip=config.clip,
                   seed=[int(seed) for _, seed in points], eval_batch=EVAL_BATCH,
                   eval_every=eval_every(config.steps), device=device, progress=progress)
    return result


def _number(value):
    """A float for the summary, None (an empty cell) for NaN."""
    value = float(value)
    return None if math.isnan(value) else value


def evaluate(call, _prepared=None):
    """(rows, arrays) of the train measure for one call (see :data:`COLUMNS` and :data:`ARRAYS`)."""
    result = call.results["train"]
    final, history = result.final, result.history
    log10_norm = np.asarray(history["log_grad_norm"], dtype=np.float64) / _LN10     # (steps, E)
    finite = np.isfinite(log10_norm)  # rows after a divergence are NaN, an overflowing norm +inf
    peak = np.where(finite.any(axis=0), np.where(finite, log10_norm, -np.inf).max(axis=0), np.nan)
    rows = []
    for e in range(len(call.points)):
        rows.append({
            "train_loss": float(final["loss"][e]),
            "train_rate": float(final["rate"][e]),
            "train_solved": int(bool(final["solved"][e])),
            "train_steps_to_success": _number(final["steps_to_success"][e]),
            "train_diverged": int(bool(final["diverged"][e])),
            "train_diverged_at": _number(final["diverged_at"][e]),
            "train_clipped": float(np.mean(history["clipped"][:, e])),
            "train_skipped": int(np.sum(history["skipped"][:, e])),
            "train_log10_grad_norm_init": float(log10_norm[0, e]),
            "train_log10_grad_norm_max": _number(peak[e]),
        })
    arrays = {
        "train_eval_loss": np.asarray(result.evaluations["loss"], dtype=np.float64).T.copy(),
        "train_eval_rate": np.asarray(result.evaluations["rate"], dtype=np.float64).T.copy(),
        "train_loss_curve": np.asarray(history["loss"]).T.astype(np.float32),
        "train_log10_grad_norm_curve": log10_norm.T.astype(np.float32),
    }
    return rows, arrays


COLUMNS = (
    ("train_loss", float, "final held-out loss after training on the task (train:TASK)"),
    ("train_rate", float, "final " + RATE_MEANING),
    ("train_solved", int, "1 if train_rate >= rnnsim.train.SOLVED_RATE, else 0 (the figures show the "
                          "fraction of seeds)"),
    ("train_steps_to_success", float, "first evaluation step at which the held-out rate reached "
                                      "SOLVED_RATE; empty if never (the figures show the median over "
                                      "the seeds that solved)"),
    ("train_diverged", int, "1 if the training diverged (non-finite loss), else 0"),
    ("train_diverged_at", float, "the step at which it diverged; empty if it did not"),
    ("train_clipped", float, "fraction of the training steps whose gradient norm was clipped"),
    ("train_skipped", int, "training steps skipped for a non-finite gradient norm"),
    ("train_log10_grad_norm_init", float, "log10 of the global gradient norm of the task's loss at step 0"),
    ("train_log10_grad_norm_max", float, "its largest finite value over the training"),
)
"""The summary columns of ``train:TASK``: (name, kind, meaning)."""


def _evaluations(config, T):
    return (len(eval_steps(config.steps)),)


def _steps(config, T):
    return (config.steps,)


ARRAYS = (
    ("train_eval_loss", _evaluations, "held-out loss at the steps eval_steps(steps) (float64)"),
    ("train_eval_rate", _evaluations, "held-out success rate at the steps eval_steps(steps) (float64)"),
    ("train_loss_curve", _steps, "training-batch loss at every step, before its update (float32)"),
    ("train_log10_grad_norm_curve", _steps, "log10 of the unclipped global gradient norm at every step "
                                            "(float32)"),
)
"""The profile-file arrays of ``train:TASK``: (name, shape(config, T), meaning)."""


# --------------------------------------------------------------------------- memory and work

def call_bytes(config, cell, T, networks, *, workers, tile) -> int:
    """Estimated peak host memory of training ``networks`` networks of (cell, T) in one call.

    A gradients call at the larger of the training and evaluation batches (the
    evaluation is at most that), the networks five times over (weights, gradients,
    two optimizer moments, a copy), one batch of training and evaluation data, and the
    per-step history.
    """
    from .. import _memory, cells
    from ..train import task_dims

    spec = cells.get(cell)
    dims = task_dims(task_of(config.measure))
    itemsize = np.dtype(config.dtype).itemsize
    E, H, D, K = networks, config.hidden, dims.input_size, dims.outputs
    B = max(config.train_batch, EVAL_BATCH)
    engine = _memory.gradients_bytes(spec.G, len(spec.state), E, B, T, D, H, K, itemsize,
                                     loss_every=True, workers=workers, tile=tile)  # the larger estimate
    weights = 5 * _memory.params_bytes(spec.G, E, H, D, K, 8)
    data = 2 * E * B * T * (D + K) * 8
    history = E * config.steps * (3 * 8 + 2) + 2 * E * len(eval_steps(config.steps)) * 8
    return engine + weights + data + history


def work_per_network(config) -> float:
    """Training work of one network relative to the gradient map's one gradients call at the
    same (cell, T): ``steps`` calls at ``train-batch`` sequences and the evaluations (a forward
    pass, about a third of a gradients call) at :data:`EVAL_BATCH`, over ``batch`` sequences."""
    evaluations = len(eval_steps(config.steps)) * EVAL_BATCH / 3.0
    return (config.steps * config.train_batch + evaluations) / config.batch
