"""``rnnsim sweep``: a grid of cells × lengths × init scales × seeds into a results folder."""
from __future__ import annotations

import contextlib
import sys

import click
from click.core import ParameterSource

from .. import sweep as sweep_lib
from ..init import SCHEMES
from ..losses import LOSSES
from ._common import device_option

DEFAULT_OUT = "rnnsim-sweep"
_D = sweep_lib.DEFAULTS


def _default(key):
    return f"[default: {_D[key]}]"


@click.command()
@click.option("--cell", metavar="LIST", help=f"Cells, a comma list of rnn, lstm. {_default('cell')}")
@click.option("--hidden", type=int, metavar="H", help=f"Hidden size. {_default('hidden')}")
@click.option("--input-size", type=int, metavar="D", help=f"Input size. {_default('input-size')}")
@click.option("--classes", type=int, metavar="K", help=f"Output classes. {_default('classes')}")
@click.option("--batch", type=int, metavar="B", help=f"Sequences per grid point. {_default('batch')}")
@click.option("--lengths", metavar="RANGE",
              help=f"Sequence lengths T: a comma list (25,50,100) or A:B:N, N log-spaced integers. "
                   f"{_default('lengths')}")
@click.option("--scales", metavar="RANGE",
              help=f"Init scales: a comma list or A:B:N, N evenly spaced. {_default('scales')}")
@click.option("--init", type=click.Choice(SCHEMES), help=f"Recurrent init scheme. {_default('init')}")
@click.option("--input-scale", type=float, metavar="U", help=f"W_ih ~ N(0, U²/D). {_default('input-scale')}")
@click.option("--bias-scale", type=float, metavar="B", help=f"Bias ~ N(0, B²). {_default('bias-scale')}")
@click.option("--forget-bias", type=float, metavar="F", help=f"LSTM forget-gate bias. {_default('forget-bias')}")
@click.option("--seeds", type=int, metavar="N", help=f"Networks per (cell, T, scale): seeds 0..N-1. {_default('seeds')}")
@click.option("--loss", type=click.Choice(LOSSES), help=f"Cross-entropy at the last step or every step. {_default('loss')}")
@click.option("--threshold", type=float, metavar="DECADES",
              help=f"Regime labels: log10_ratio below -threshold vanishing, above +threshold exploding. "
                   f"{_default('threshold')}")
@click.option("--dtype", type=click.Choice(sweep_lib.DTYPES), help=f"Compute dtype. {_default('dtype')}")
@device_option
@click.option("--out", metavar="DIR", help=f"Results folder. [default: {DEFAULT_OUT}]")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out, skipping finished points.")
@click.option("--overwrite", is_flag=True, help="Replace the results rnnsim wrote in --out.")
@click.option("--config", "config_file", metavar="FILE",
              help="TOML file with the same keys as the flags (input-scale = 1.0); explicit flags win.")
@click.option("--quiet", is_flag=True, help="No progress bar and no report.")
@click.pass_context
def sweep(ctx, config_file, resume, overwrite, quiet, device, out, **flags):
    """Phase diagram of vanishing/exploding gradients over sequence length × init scale.

    Writes manifest.json, summary.csv and profiles/*.npz into --out; every finished
    point is on disk before the next starts, so a killed sweep continues with --resume.
    Then run `rnnsim plot DIR`.
    """
    table = sweep_lib.load_config_file(config_file) if config_file is not None else {}
    mapping = {key: value for key, value in table.items() if key in _D}
    mapping.update({name.replace("_", "-"): value for name, value in flags.items() if value is not None})
    config = sweep_lib.SweepConfig.from_mapping(mapping)

    if ctx.get_parameter_source("device") is ParameterSource.DEFAULT and "device" in table:
        device = table["device"]
    if out is None:
        out = table.get("out", DEFAULT_OUT)
    if not isinstance(out, str) or not out:
        raise click.BadParameter(f"out must be a folder name, got {out!r}", param_hint="'out'")
    if not isinstance(table.get("quiet", False), bool):
        raise ValueError(f"config file {config_file}: quiet must be true or false")
    quiet = quiet or table.get("quiet", False)

    err = sys.stderr
    hidden = quiet or not err.isatty()
    with contextlib.ExitStack() as stack:
        bar = None

        def progress(advance, total, label):
            nonlocal bar
            if bar is None:
                bar = stack.enter_context(click.progressbar(
                    length=max(total, 1), label="sweep", file=err, hidden=hidden, show_eta=True,
                    item_show_func=lambda item: item))
            bar.update(advance, label or None)

        stats = sweep_lib.run_sweep(config, out, device=device, resume=resume, overwrite=overwrite,
                                    progress=progress)
    if not quiet:
        share = stats["kernel_share"]
        click.echo(f"{stats['points_total']} points ({stats['points_computed']} computed, "
                   f"{stats['points_skipped']} already done) in {stats['wall_seconds']:.1f} s, "
                   f"{100 * share:.0f}% of it inside the kernels; results in {out}")
        click.echo(f"next: rnnsim plot {out}")

