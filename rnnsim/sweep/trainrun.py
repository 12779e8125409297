r"""``rnnsim train``: one ensemble trained on a task, into a results folder.

The folder follows the conventions of :mod:`rnnsim.sweep.store`: a lock for the
whole run, the ``.rnnsim`` marker written first, every file written atomically, a
folder that rnnsim did not write refused, existing results replaced only with
``overwrite``. It holds:

``manifest.json``
    ``tool`` = "rnnsim train", ``config`` (the settings, flag names as keys, see
    :data:`TRAIN_DEFAULTS`), provenance (versions, git commit, device), status, times.
``history.csv``
    One row per (cell, seed, step) -- the long layout, so that every column is one
    quantity and the file reads into any table tool: ``loss`` and ``rate`` of the
    training batch before the step's update, ``log10_grad_norm`` (log10 of the
    unclipped global gradient norm: finite where the norm itself would overflow),
    ``clipped`` and ``skipped`` (0/1).
``evaluations.csv``
    One row per (cell, seed, step) at the evaluation steps: ``loss`` and ``rate`` on the
    fixed held-out batch.
``final.json``
    Per cell and seed the final held-out loss and rate, solved, steps to success,
    diverged (at); per cell the fraction of seeds that solved and the median steps to
    success over those that did (``null`` where none did).

The network of (cell, seed s) is the sweep's network of the point (cell, T = length,
scale, s) for the task (:func:`rnnsim.sweep.training.draw_networks`), trained on
stream s, all seeds of a cell in one :func:`rnnsim.train.train` call: a train run
reproduces the sweep's ``train:TASK`` numbers at that point.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
from pathlib import Path

import numpy as np

from .. import _memory
from .._parse import MAX_SCALE, finite_float, positive_int
from .._validate import DEVICES, check_choice
from . import training
from .config import _PARSERS as SWEEP_PARSERS
from .config import SweepConfig
from .provenance import now, provenance
from .store import (
    MANIFEST,
    MARKER,
    _is_transient,
    atomic_write,
    locked_folder,
    read_manifest,
    remove_stale_temps,
    write_json,
)

TOOL = "rnnsim train"
HISTORY = "history.csv"
EVALUATIONS = "evaluations.csv"
FINAL = "final.json"
FIGURES = ("learning_curves.png", "learning_curves.pdf")
FORMAT = 1
_MARKER_TEXT = json.dumps({"tool": "rnnsim", "contents": "training results", "format": FORMAT}) + "\n"

TRAIN_DEFAULTS = training.TRAIN_DEFAULTS

HISTORY_COLUMNS = ("cell", "seed", "step", "loss", "rate", "log10_grad_norm", "clipped", "skipped")
EVALUATION_COLUMNS = ("cell", "seed", "step", "loss", "rate")
_KINDS = {"cell": str, "seed": int, "step": int, "clipped": int, "skipped": int}


def _task(value):
    return check_choice("task", value, training.tasks())


_PARSERS = {
    "task": _task,
    "length": lambda value: positive_int("length", value),
    "scale": lambda value: finite_float("scale", value, minimum=0.0, strict=True, maximum=MAX_SCALE),
    "batch": lambda value: positive_int("batch", value),
    **{key: SWEEP_PARSERS[key] for key in ("cell", "hidden", "init", "input-scale", "bias-scale",
                                           "forget-bias", "update-bias", "seeds", "dtype", "steps", "lr",
                                           "clip")},
    "optimizer": lambda value: check_choice("optimizer", value, training.optimizers()),
}


def train_settings(mapping) -> dict:
    """The settings of a train run, validated and canonical (flag names; :data:`TRAIN_DEFAULTS` fill
    the rest). Raises a one-line ``ValueError``/``TypeError`` naming the bad key."""
    unknown = sorted(str(k) for k in mapping if k not in TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
    merged = {**TRAIN_DEFAULTS, **{k: v for k, v in mapping.items() if v is not None}}
    if merged["task"] is None:
        raise ValueError(f"task is required: one of {', '.join(training.tasks())}")
    settings = {key: _PARSERS[key](merged[key]) for key in TRAIN_DEFAULTS}
    settings["cell"] = list(settings["cell"])
    return settings


def _as_sweep(settings) -> SweepConfig:
    """The one-point sweep configuration whose ``train:TASK`` measure trains these networks."""
    return SweepConfig.from_mapping({
        "cell": settings["cell"], "hidden": settings["hidden"], "lengths": [settings["length"]],
        "scales": [settings["scale"]], "init": settings["init"], "input-scale": settings["input-scale"],
        "bias-scale": settings["bias-scale"], "forget-bias": settings["forget-bias"],
        "update-bias": settings["update-bias"], "seeds": settings["seeds"], "dtype": settings["dtype"],
        "measure": ["gradients", training.PREFIX + settings["task"]], "steps": settings["steps"],
        "optimizer": settings["optimizer"], "lr": settings["lr"],
        "clip": "off" if settings["clip"] is None else settings["clip"], "train-batch": settings["batch"]})


# --------------------------------------------------------------------------- the folder

def _has_results(out: Path) -> bool:
    return any((out / name).exists() for name in (HISTORY, EVALUATIONS, FINAL))


def _check_folder(out: Path, overwrite: bool) -> None:
    """Refuse, before writing, a file in the way, a folder rnnsim did not write, sweep results,
    and existing training results without ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"results folder {out} exists and is not a folder")
    if not out.is_dir():
        return
    ours = (out / MARKER).is_file() or (out / MANIFEST).is_file()
    if not ours and not all(_is_transient(e) for e in out.iterdir()):
        raise FileExistsError(f"{out} is not empty and holds no {MANIFEST}; "
                              "it is not an rnnsim results folder, choose another --out")
    if (out / MANIFEST).is_file():
        try:
            tool = json.loads((out / MANIFEST).read_bytes()).get("tool")
        except (OSError, ValueError, AttributeError):
            tool = None
        if tool != TOOL:
            raise FileExistsError(f"{out} holds the results of {tool or 'another rnnsim command'}, "
                                  "not of rnnsim train; choose another --out")
    elif (out / "summary.csv").exists():
        raise FileExistsError(f"{out} holds sweep results; choose another --out")
    if _has_results(out) and not overwrite:
        raise FileExistsError(f"{out} already holds training results; use --overwrite to replace them")


@contextlib.contextmanager
def _open_folder(out: Path, overwrite: bool):
    with locked_folder(out, "train", lambda: _check_folder(out, overwrite)) as (lock, _):
        lock.claim()
        if not (out / MARKER).is_file():
            atomic_write(out / MARKER, lambda fh: fh.write(_MARKER_TEXT.encode()))
        remove_stale_temps(out)
        for name in (HISTORY, EVALUATIONS, FINAL, MANIFEST) + FIGURES:
            if (out / name).is_file():  # a run killed before its results, or overwrite
                (out / name).unlink()
        yield


# --------------------------------------------------------------------------- running

def _csv_bytes(columns, rows) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue().encode()


def _json_number(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _cell_results(cell, result, seeds):
    """history rows, evaluation rows and the final.json entry of one cell's train() result."""
    history, evaluations, final = result.history, result.evaluations, result.final
    steps = history["loss"].shape[0]
    log10_norm = np.asarray(history["log_grad_norm"], dtype=np.float64) / math.log(10.0)
    rows = [(cell, s, t, repr(float(history["loss"][t, e])), repr(float(history["rate"][t, e])),
             repr(float(log10_norm[t, e])), int(history["clipped"][t, e]), int(history["skipped"][t, e]))
            for e, s in enumerate(seeds) for t in range(steps)]
    eval_rows = [(cell, s, int(step), repr(float(evaluations["loss"][i, e])),
                  repr(float(evaluations["rate"][i, e])))
                 for e, s in enumerate(seeds) for i, step in enumerate(evaluations["step"])]
    solved = np.asarray(final["solved"], dtype=bool)
    to_success = np.asarray(final["steps_to_success"], dtype=np.float64)
    entry = {
        "seed": list(seeds),
        "loss": [_json_number(v) for v in final["loss"]],
        "rate": [_json_number(v) for v in final["rate"]],
        "solved": [bool(v) for v in solved],
        "steps_to_success": [_json_number(v) for v in to_success],
        "diverged": [bool(v) for v in final["diverged"]],
        "diverged_at": [_json_number(v) for v in final["diverged_at"]],
        "solved_fraction": float(solved.mean()),
        "median_steps_to_success": float(np.median(to_success[solved])) if solved.any() else None,
        "median_loss": _json_number(np.median(final["loss"])),
    }
    return rows, eval_rows, entry


def run_training(settings, out, *, device="cpu", overwrite=False, progress=None) -> dict:
    """Train ``seeds`` networks of every cell on the task and write the results folder ``out``.

    Parameters
    ----------
    settings : mapping
        Flag-named settings (:data:`TRAIN_DEFAULTS`); ``task`` is required.
    out : path
        The results folder; created if missing. Existing training results need
        ``overwrite``; a folder that rnnsim did not write, or a sweep's, is refused.
    device : {"cpu", "cuda", "auto"}
    progress : callable, optional
        ``progress(steps_done, steps_total)`` over all cells.

    Returns
    -------
    dict
        ``final`` (the contents of final.json) and ``stats`` (``wall_seconds``,
        ``train_seconds``).

    Notes
    -----
    Every check (settings, device, memory, folder) runs before the first write. The
    network of (cell, seed s) and its training are those of the sweep's point
    (cell, length, scale, s) under ``--measure train:TASK`` (see the module notes).
    """
    from ..engine import resolve_device
    from ..train import SOLVED_RATE, task_dims

    wall_start = time.perf_counter()
    settings = train_settings(settings)
    device = resolve_device(check_choice("device", device, DEVICES))
    config = _as_sweep(settings)
    from .. import config as engine_config
    from .plan import _workers

    workers, tile = _workers(device), max(1, min(engine_config.CPU_SEQUENCE_TILE, settings["batch"]))
    for cell in config.cell:
        _memory.require(training.call_bytes(config, cell, settings["length"], settings["seeds"],
                                            workers=workers, tile=tile),
                        f"training {settings['seeds']} {cell} network(s) at T={settings['length']} (hidden "
                        f"{settings['hidden']}, batch {settings['batch']}, {settings['dtype']})")
    out = Path(out)
    with _open_folder(out, overwrite):
        manifest = {"format": FORMAT, "tool": TOOL, "config": settings, "status": "running",
                    "started": now(), "finished": None, **provenance(device), "dtype": settings["dtype"],
                    "eval_batch": training.EVAL_BATCH,
                    "eval_steps": training.eval_steps(settings["steps"]).tolist(),
                    "momentum": training.MOMENTUM, "solved_rate": SOLVED_RATE,
                    "rate_meaning": training.RATE_MEANING, "stats": None}
        write_json(out / MANIFEST, manifest)
        seeds = list(range(settings["seeds"]))
        points = [(settings["scale"], s) for s in seeds]
        history, evaluations = [], []
        final = {"task": settings["task"], "rate_meaning": training.RATE_MEANING, "solved_rate": SOLVED_RATE,
                 "outputs": task_dims(settings["task"]).outputs, "cells": {}}
        train_seconds = 0.0
        total = settings["steps"] * len(config.cell)
        for index, cell in enumerate(config.cell):
            start = time.perf_counter()
            offset = index * settings["steps"]
            hook = None if progress is None else (
                lambda done, _steps, offset=offset: progress(offset + done, total))
            result = training.compute(config, cell, settings["length"], points, device, None, None,
                                      progress=hook)
            train_seconds += time.perf_counter() - start
            rows, eval_rows, entry = _cell_results(cell, result, seeds)
            history += rows
            evaluations += eval_rows
            final["cells"][cell] = entry
        atomic_write(out / HISTORY, lambda fh: fh.write(_csv_bytes(HISTORY_COLUMNS, history)))
        atomic_write(out / EVALUATIONS, lambda fh: fh.write(_csv_bytes(EVALUATION_COLUMNS, evaluations)))
        text = json.dumps(final, indent=2, allow_nan=False) + "\n"
        atomic_write(out / FINAL, lambda fh: fh.write(text.encode()))
        stats = {"wall_seconds": time.perf_counter() - wall_start, "train_seconds": train_seconds}
        manifest.update(status="complete", finished=now(), stats=stats)
        write_json(out / MANIFEST, manifest)
    return {"final": final, "stats": stats}


# --------------------------------------------------------------------------- reading

def is_train_folder(out) -> bool:
    """Whether ``out`` holds a manifest written by ``rnnsim train``."""
    try:
        return json.loads((Path(out) / MANIFEST).read_bytes()).get("tool") == TOOL
    except (OSError, ValueError, AttributeError):
        return False


def _read_csv(path: Path, columns) -> list:
    rows = []
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != tuple(columns):
                raise ValueError(f"its header is not {','.join(columns)}")
            for raw in reader:
                if None in raw or None in raw.values():
                    raise ValueError(f"line {reader.line_num} does not have {len(columns)} fields")
                try:
                    rows.append({k: _KINDS.get(k, float)(v) if k != "cell" else v for k, v in raw.items()})
                except ValueError:
                    raise ValueError(f"line {reader.line_num} holds a value that is not a number") from None
    except FileNotFoundError:
        raise OSError(f"cannot read {path}: no such file") from None
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise ValueError(f"{path} is damaged: {' '.join(str(exc).split())}") from None
    return rows


def read_training(out) -> dict:
    """The manifest, history and evaluations of a finished train folder, validated.

    Returns ``{"manifest", "settings", "history": {cell: {name: (steps, seeds) array}},
    "evaluations": {cell: {"step": (n,), "loss", "rate": (n, seeds)}}}``. Raises ``OSError``
    (missing or unreadable files) or a one-line ``ValueError`` naming the damaged file.
    """
    out = Path(out)
    path = out / MANIFEST
    manifest = read_manifest(out)  # a JSON object with a "config" object, or one line naming the file
    if manifest.get("tool") != TOOL:
        raise ValueError(f"{path} is not the manifest of an rnnsim train folder")
    try:
        settings = train_settings(manifest["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} holds invalid settings: {exc}") from None
    if manifest.get("status") != "complete":
        raise ValueError(f"{out} holds no finished training (status {manifest.get('status')!r}); "
                         "run rnnsim train again with --overwrite")
    steps, seeds = settings["steps"], settings["seeds"]
    expected_steps = training.eval_steps(steps)
    found = {"manifest": manifest, "settings": settings, "history": {}, "evaluations": {}}
    for name, columns, keys, index in (
            (HISTORY, HISTORY_COLUMNS, HISTORY_COLUMNS[3:], np.arange(steps)),
            (EVALUATIONS, EVALUATION_COLUMNS, EVALUATION_COLUMNS[3:], expected_steps)):
        rows = _read_csv(out / name, columns)
        target = found["history" if name == HISTORY else "evaluations"]
        for cell in settings["cell"]:
            mine = [r for r in rows if r["cell"] == cell]
            grid = {(r["seed"], r["step"]): r for r in mine}
            want = [(s, int(t)) for s in range(seeds) for t in index]
            if len(mine) != len(want) or set(grid) != set(want):
                raise ValueError(f"{out / name} is damaged: the {cell}'s rows are not seeds 0..{seeds - 1} "
                                 f"x {len(index)} steps")
            target[cell] = {k: np.array([[grid[(s, int(t))][k] for s in range(seeds)] for t in index])
                            for k in keys}
            if name == EVALUATIONS:
                target[cell]["step"] = expected_steps
    return found
