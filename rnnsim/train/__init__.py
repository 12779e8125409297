"""Training ensembles on the classic long-memory tasks (issue: trainability ground truth).

:func:`train` takes an ensemble of networks (each with its own weights, data stream
and optimiser state) through ``steps`` optimiser steps, one exact
:func:`rnnsim.gradients` call per step for all networks at once. The tasks live in
:mod:`rnnsim.train.tasks`, the optimisers in :mod:`rnnsim.train.optim`.
"""
from .loop import SOLVED_RATE, TrainResult, evaluation_steps, train
from .optim import OPTIMIZERS, SGD, Adam
from .tasks import TASKS, TaskDims, make_batch, make_ensemble_batch, score, task_dims

__all__ = ["train", "TrainResult", "evaluation_steps", "SOLVED_RATE", "OPTIMIZERS", "SGD", "Adam", "TASKS",
           "TaskDims", "task_dims", "make_batch", "make_ensemble_batch", "score"]
