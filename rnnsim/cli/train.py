"""``rnnsim train``: an ensemble of networks trained on a long-memory task, into a results folder."""
from __future__ import annotations

import contextlib
import sys

import click

from .. import cells
from .._validate import DEVICES
from ..init import SCHEMES
from ..sweep.config import DTYPES
from ..sweep.training import TRAIN_DEFAULTS

TASK_NAMES = ("adding", "temporal-order", "copy-first")
"""For the help text only (the library checks against rnnsim.train.TASKS, which the tests compare)."""


def _default(key):
    return f"[default: {TRAIN_DEFAULTS[key]}]"


@click.command()
@click.option("--task", metavar="TASK", required=True,
              help=f"The task: {', '.join(TASK_NAMES)} (the information sits at the start of the sequence).")
@click.option("--cell", metavar="LIST", help=f"Cells, one or a comma list of {', '.join(cells.names())}. "
                                             f"{_default('cell')}")
@click.option("--hidden", metavar="H", help=f"Hidden size. {_default('hidden')}")
@click.option("--length", metavar="T", help=f"Sequence length. {_default('length')}")
@click.option("--scale", metavar="S", help=f"Init scale of W_hh, 0 < S <= 1e6. {_default('scale')}")
@click.option("--init", type=click.Choice(SCHEMES), help=f"Recurrent init scheme. {_default('init')}")
@click.option("--input-scale", metavar="U", help=f"W_ih ~ N(0, U²/D). {_default('input-scale')}")
@click.option("--bias-scale", metavar="B", help=f"Bias ~ N(0, B²). {_default('bias-scale')}")
@click.option("--forget-bias", metavar="F", help=f"LSTM forget-gate bias. {_default('forget-bias')}")
@click.option("--update-bias", metavar="Z", help=f"GRU update-gate bias. {_default('update-bias')}")
@click.option("--optimizer", metavar="NAME", help=f"adam or sgd (momentum 0.9). {_default('optimizer')}")
@click.option("--lr", metavar="RATE", help=f"Learning rate. {_default('lr')}")
@click.option("--clip", metavar="C", help=f"Clip each network's global gradient norm at C; off or 0: no "
                                          f"clipping. {_default('clip')}")
@click.option("--steps", metavar="N", help=f"Training steps. {_default('steps')}")
@click.option("--batch", metavar="B", help=f"Training sequences per step. {_default('batch')}")
@click.option("--seeds", metavar="N", help=f"Networks per cell: seeds 0..N-1. {_default('seeds')}")
@click.option("--dtype", type=click.Choice(DTYPES), help=f"Compute dtype. {_default('dtype')}")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="Where to compute: cpu, cuda (error without a usable GPU) or auto.")
@click.option("--out", metavar="DIR", required=True, help="Results folder.")
@click.option("--overwrite", is_flag=True, help="Replace the training results rnnsim wrote in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar and no report.")
def train(device, out, overwrite, quiet, **flags):
    """Train N networks per cell on a task; write history.csv, evaluations.csv, final.json and
    manifest.json into --out.

    Network s is the sweep's network of the point (cell, T, S, seed s) for the task, so the
    numbers equal `rnnsim sweep --measure train:TASK` at that point. The folder is locked while
    it trains; every file is written atomically. Then run `rnnsim plot DIR` for the learning
    curves.
    """
    from ..sweep import trainrun

    settings = {name.replace("_", "-"): value for name, value in flags.items() if value is not None}
    err = sys.stderr
    with contextlib.ExitStack() as stack:
        bar = None

        def progress(done, total):
            nonlocal bar
            if bar is None:
                bar = stack.enter_context(click.progressbar(length=total, label="train", file=err,
                                                            hidden=quiet or not err.isatty(), show_eta=True))
            bar.update(done - bar.pos)

        result = trainrun.run_training(settings, out, device=device, overwrite=overwrite, progress=progress)
    if quiet:
        return
    final = result["final"]
    for cell, entry in final["cells"].items():
        median = entry["median_steps_to_success"]
        when = f", median {median:g} steps to success" if median is not None else ""
        rates = ", ".join("—" if r is None else f"{r:.3f}" for r in entry["rate"])
        click.echo(f"{cell}: {sum(entry['solved'])} of {len(entry['solved'])} solved {final['task']}{when}; "
                   f"final held-out rate {rates}")
    click.echo(f"{result['stats']['wall_seconds']:.1f} s; results in {out}")
    click.echo(f"next: rnnsim plot {out}")
