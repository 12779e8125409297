"""``rnnsim sweep``: a grid of cells × lengths × init scales × seeds into a results folder."""
from __future__ import annotations

import contextlib
import sys

import click

from .. import cells
from .._validate import DEVICES
from ..init import SCHEMES
from ..losses import FUSED_LOSSES
from ..sweep.config import DEFAULT_DEVICE, DEFAULT_OUT, DEFAULTS, DTYPES
from ..sweep.measures import MEASURES


def _default(key):
    return f"[default: {DEFAULTS[key]}]"


@click.command()
@click.option("--cell", metavar="LIST",
              help=f"Cells, a comma list of {', '.join(cells.names())}. {_default('cell')}")
@click.option("--hidden", metavar="H", help=f"Hidden size. {_default('hidden')}")
@click.option("--input-size", metavar="D", help=f"Input size. {_default('input-size')}")
@click.option("--classes", metavar="K", help=f"Output classes. {_default('classes')}")
@click.option("--batch", metavar="B", help=f"Sequences per grid point. {_default('batch')}")
@click.option("--lengths", metavar="RANGE",
              help=f"Sequence lengths T: a comma list (25,50,100) or A:B:N, N log-spaced integers. "
                   f"{_default('lengths')}")
@click.option("--scales", metavar="RANGE",
              help=f"Init scales (0 < S <= 1e6): a comma list or A:B:N, N evenly spaced. "
                   f"{_default('scales')}")
@click.option("--init", type=click.Choice(SCHEMES), help=f"Recurrent init scheme. {_default('init')}")
@click.option("--input-scale", metavar="U",
              help=f"W_ih ~ N(0, U²/D), 0 <= U <= 1e6. {_default('input-scale')}")
@click.option("--bias-scale", metavar="B", help=f"Bias ~ N(0, B²), 0 <= B <= 1e6. {_default('bias-scale')}")
@click.option("--forget-bias", metavar="F",
              help=f"LSTM forget-gate bias, |F| <= 1e6. {_default('forget-bias')}")
@click.option("--update-bias", metavar="Z",
              help=f"GRU update-gate bias, |Z| <= 1e6. {_default('update-bias')}")
@click.option("--seeds", metavar="N",
              help=f"Networks per (cell, T, scale): seeds 0..N-1. {_default('seeds')}")
@click.option("--loss", type=click.Choice(FUSED_LOSSES),
              help=f"Cross-entropy at the last step or every step. {_default('loss')}")
@click.option("--threshold", metavar="DECADES",
              help=f"Regime labels: log10_ratio below -threshold vanishing, above +threshold exploding. "
                   f"{_default('threshold')}")
@click.option("--dtype", type=click.Choice(DTYPES), help=f"Compute dtype. {_default('dtype')}")
@click.option("--measure", metavar="LIST",
              help="What to measure, a comma list of "
                   f"{', '.join(n for n in MEASURES if n != 'train')}, train:TASK: gradients and mean_field "
                   "always; rates adds bootstrap intervals and the mean rate, lyapunov the top Lyapunov "
                   "exponents, pascanu sigma_max(W_hh) and the Pascanu bound, train:TASK trains every "
                   "network on TASK (adding, temporal-order or copy-first; one task per sweep). "
                   f"{_default('measure')}")
@click.option("--lyap-k", metavar="K",
              help=f"Lyapunov exponents per network (with --measure lyapunov), 1 to the state dimension. "
                   f"{_default('lyap-k')}")
@click.option("--steps", metavar="N",
              help=f"Training steps per network (with train:TASK). {_default('steps')}")
@click.option("--optimizer", metavar="NAME",
              help=f"Training optimizer, adam or sgd (momentum 0.9) (with train:TASK). "
                   f"{_default('optimizer')}")
@click.option("--lr", metavar="RATE", help=f"Learning rate (with train:TASK). {_default('lr')}")
@click.option("--clip", metavar="C",
              help=f"Clip each network's global gradient norm at C during training; off or 0: no clipping "
                   f"(with train:TASK). {_default('clip')}")
@click.option("--train-batch", metavar="B",
              help=f"Training sequences per step (with train:TASK). {_default('train-batch')}")
@click.option("--device", type=click.Choice(DEVICES),
              help=f"Where to compute: cpu, cuda (error without a usable GPU) or auto. "
                   f"[default: {DEFAULT_DEVICE}]")
@click.option("--out", metavar="DIR", help=f"Results folder. [default: {DEFAULT_OUT}]")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run the ensemble calls as tasks on the Dask cluster of this scheduler (tcp://host:8786); "
                   "the results are the same. Needs rnnsim[distributed].")
@click.option("--workers", metavar="N",
              help="Run on a Dask LocalCluster of N worker processes started here (with --device cuda: one "
                   "per GPU). Needs rnnsim[distributed].")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out, skipping finished points.")
@click.option("--overwrite", is_flag=True, help="Replace the results rnnsim wrote in --out.")
@click.option("--config", "config_file", metavar="FILE",
              help="TOML file with the same keys as the flags (input-scale = 1.0), and out, device, quiet; "
                   "explicit flags win.")
@click.option("--quiet", is_flag=True, default=None, help="No progress bar and no report.")
def sweep(config_file, resume, overwrite, **flags):
    """Phase diagram of vanishing/exploding gradients over sequence length × init scale.

    Writes manifest.json, summary.csv and profiles/*.npz into --out; every finished
    point is on disk before the next starts, so a killed sweep continues with --resume.
    The folder is locked while the sweep runs. Then run `rnnsim plot DIR`.
    """
    from .. import sweep as sweep_lib

    table = sweep_lib.load_config_file(config_file) if config_file is not None else {}
    explicit = {name.replace("_", "-"): value for name, value in flags.items() if value is not None}
    config, run = sweep_lib.configure(table, explicit)

    err = sys.stderr
    hidden = run.quiet or not err.isatty()
    with contextlib.ExitStack() as stack:
        bar = None
        done = 0.0

        def progress(advance, total, label):
            nonlocal bar, done
            if bar is None:  # the bar counts whole units of the library's (fractional) work estimate
                bar = stack.enter_context(click.progressbar(
                    length=max(round(total), 1), label="sweep", file=err, hidden=hidden, show_eta=True,
                    item_show_func=lambda item: item))
            done += advance
            bar.update(round(done) - bar.pos, label or None)

        stats = sweep_lib.run_sweep(config, run.out, device=run.device, resume=resume, overwrite=overwrite,
                                    progress=progress, scheduler=run.scheduler, workers=run.workers)
    if run.quiet:
        return
    counts = (f"{stats['points_total']} points ({stats['points_computed']} computed, "
              f"{stats['points_skipped']} already done)")
    if stats.get("nothing_to_do"):
        click.echo(f"{counts}: nothing left to do, every point of {run.out} is finished")
    else:
        share = stats["kernel_share"]
        inside = f", {100 * share:.0f}% of it inside the kernels" if share is not None else ""
        click.echo(f"{counts} in {stats['wall_seconds']:.1f} s{inside}; results in {run.out}")
    click.echo(f"next: rnnsim plot {run.out}")
