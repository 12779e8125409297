r"""The classic long-memory tasks, with seeded generators.

Each task draws a batch of sequences for one network from its own stream,
``SeedSequence(seed, spawn_key=(TASK_STREAM, task, T, kind, step))``, so a network's
data depend only on (task, T, seed, step), never on the other networks of an
ensemble (as :func:`rnnsim.sweep.run.make_data` for the gradient sweep).

Tasks
-----
``adding`` (Hochreiter & Schmidhuber 1997, experiment 4; Pascanu, Mikolov & Bengio 2013)
    Two input channels: a value in U[0, 1] and a marker. One marker lies in the first
    10% of the sequence, the other in the first half (after the first). The target is
    the mean of the two marked values, read at t = T by a linear readout (K = 1) under
    the MSE loss. A sequence is solved when its squared error is below
    :data:`ADDING_TOLERANCE` = 0.04. Predicting the constant 0.5 gives an MSE of
    1/24 ≈ 0.042 and solves 64% of the sequences (the mean of two U[0, 1] values is
    triangular on [0, 1]): that is this task's chance level.
``temporal-order`` (Hochreiter & Schmidhuber 1997, experiment 6a; Pascanu et al. 2013)
    Six one-hot symbols: the relevant A and B, and four distractors. A or B is placed
    once in [0.1 T, 0.2 T) and once in [0.5 T, 0.6 T); every other step holds a
    random distractor. The class at t = T is the order seen (AA, AB, BA, BB), softmax
    cross-entropy; chance is 25%.
``copy-first``
    A one-hot symbol of :data:`COPY_SYMBOLS` = 8 at t = 1, Gaussian noise N(0, 0.5²) (:data:`COPY_NOISE`) on
    every channel afterwards; classify the symbol at t = T (chance 1/8). The minimal
    probe of memory over T: the answer is only in the first input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._parse import positive_int
from .._validate import check_choice
from ..losses import cross_entropy

TASKS = ("adding", "temporal-order", "copy-first")
TASK_STREAM = 0x7A5C  # spawn-key tag of the task streams (the sweep's data use 0xDA7A)
ADDING_TOLERANCE = 0.04
COPY_SYMBOLS = 8
# the standard deviation of the noise after the symbol (at 1.0 no cell learned T = 50 in 600 Adam steps)
COPY_NOISE = 0.5
ORDER_SYMBOLS = 6  # A, B and four distractors
MIN_LENGTH = {"adding": 2, "temporal-order": 10, "copy-first": 1}


@dataclass(frozen=True)
class TaskDims:
    """What a network needs for a task: input size D, readout size K, and the loss."""

    input_size: int
    outputs: int
    loss: str


_DIMS = {
    "adding": TaskDims(2, 1, "mse-last"),
    "temporal-order": TaskDims(ORDER_SYMBOLS, 4, "last"),
    "copy-first": TaskDims(COPY_SYMBOLS, COPY_SYMBOLS, "last"),
}


def task_dims(task: str) -> TaskDims:
    """Input size, outputs and loss of ``task`` (one of :data:`TASKS`)."""
    return _DIMS[check_choice("task", task, TASKS)]


def check_length(task: str, T) -> int:
    """T as an int, refused (ValueError) below the task's shortest sequence."""
    T = positive_int("length", T)
    if T < MIN_LENGTH[task]:
        raise ValueError(f"task {task!r} needs length >= {MIN_LENGTH[task]}, got {T}")
    return T


def _rng(task, T, seed, kind, step):
    key = (TASK_STREAM, TASKS.index(task), int(T), kind, int(step))
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def _adding(rng, B, T):
    x = np.zeros((B, T, 2))
    x[:, :, 0] = rng.uniform(0.0, 1.0, size=(B, T))
    first = rng.integers(0, max(1, T // 10), size=B)
    # the second marker: in the first half, after the first (Hochreiter & Schmidhuber: the first T/2)
    second = first + 1 + rng.integers(0, np.maximum(1, T // 2 - first - 1))
    rows = np.arange(B)
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = 0.5 * (x[rows, first, 0] + x[rows, second, 0])
    return x, y[:, None]


def _temporal_order(rng, B, T):
    symbols = rng.integers(2, ORDER_SYMBOLS, size=(B, T))  # distractors 2..5
    lo1, hi1 = int(0.1 * T), max(int(0.2 * T), int(0.1 * T) + 1)
    lo2, hi2 = int(0.5 * T), max(int(0.6 * T), int(0.5 * T) + 1)
    t1 = rng.integers(lo1, hi1, size=B)
    t2 = rng.integers(lo2, hi2, size=B)
    first, second = rng.integers(0, 2, size=B), rng.integers(0, 2, size=B)  # 0 = A, 1 = B
    rows = np.arange(B)
    symbols[rows, t1] = first
    symbols[rows, t2] = second
    x = np.zeros((B, T, ORDER_SYMBOLS))
    np.put_along_axis(x, symbols[:, :, None], 1.0, axis=2)
    return x, 2 * first + second


def _copy_first(rng, B, T):
    symbol = rng.integers(0, COPY_SYMBOLS, size=B)
    x = COPY_NOISE * rng.standard_normal((B, T, COPY_SYMBOLS))
    x[:, 0] = 0.0
    x[np.arange(B), 0, symbol] = 1.0
    return x, symbol


_MAKERS = {"adding": _adding, "temporal-order": _temporal_order, "copy-first": _copy_first}


def make_batch(task, B, T, seed, *, step=0, evaluation=False, dtype="float64"):
    """One network's batch: inputs (B, T, D) and targets.

    Parameters
    ----------
    task : one of :data:`TASKS`
    B, T : batch size and sequence length
    seed : int, the network's data stream
    step : int, the training step (each step draws a fresh batch)
    evaluation : bool, draw from the held-out evaluation stream instead (``step`` ignored)
    dtype : the inputs' dtype

    Returns
    -------
    (inputs, targets): targets are int64 classes (B,) for the classification tasks,
    and (B, 1) values in the inputs' dtype for ``adding``.
    """
    task = check_choice("task", task, TASKS)
    B, T = positive_int("batch", B), check_length(task, T)
    rng = _rng(task, T, seed, 1 if evaluation else 0, 0 if evaluation else step)
    x, y = _MAKERS[task](rng, B, T)
    y = y.astype(dtype) if task == "adding" else y.astype(np.int64)
    return x.astype(dtype), y


def make_ensemble_batch(task, seeds, B, T, *, step=0, evaluation=False, dtype="float64"):
    """Batches of every network, stacked: inputs (E, B, T, D) and targets (E, ...);
    network e draws from stream ``seeds[e]`` (a stream shared by several networks is drawn once)."""
    drawn = {}
    for seed in dict.fromkeys(int(s) for s in seeds):
        drawn[seed] = make_batch(task, B, T, seed, step=step, evaluation=evaluation, dtype=dtype)
    return (np.stack([drawn[int(s)][0] for s in seeds]), np.stack([drawn[int(s)][1] for s in seeds]))


def score(task, outputs, targets):
    """Per-sequence loss and solved flags from the readout at t = T.

    Parameters
    ----------
    outputs : (E, B, K) float, the readout z_T = W_out h_T + b_out
    targets : (E, B) int classes, or (E, B, 1) values for ``adding``

    Returns
    -------
    (loss, solved): (E, B) float64 loss terms (squared error, or cross-entropy), and
    (E, B) bool (squared error below :data:`ADDING_TOLERANCE`, or the arg-max class correct).
    """
    z = np.asarray(outputs, dtype=np.float64)
    if task == "adding":
        sq = ((z - targets) ** 2).mean(axis=-1)
        return sq, sq < ADDING_TOLERANCE
    ce, _ = cross_entropy(z, targets)
    return ce, z.argmax(axis=-1) == targets
