"""``rnnsim plot DIR``: the figures of a sweep's results folder, or the learning curves of a train folder."""
from __future__ import annotations

import click


@click.command()
@click.argument("out", metavar="DIR")
@click.option("--scales", metavar="LIST",
              help="Scales for the profiles and spectrum figures (nearest in the sweep), a comma list or "
                   "A:B:N. "
                   "[default: five across the range and the one nearest the critical scale]")
@click.option("--quiet", is_flag=True, help="Do not list the files written.")
def plot(out, scales, quiet):
    """Write phase_<cell>, profiles and rates figures (PNG and PDF) into DIR, spectrum when the
    sweep ran the lyapunov measure and trainability_<cell> with train:TASK; for a folder of
    `rnnsim train`, learning_curves (--scales does not apply).

    Every figure is written atomically; DIR is locked while they are drawn, so a
    sweep still writing DIR is reported as in use.
    """
    from .._parse import parse_scales

    chosen = None
    if scales is not None:
        try:
            chosen = parse_scales(scales)
        except (TypeError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="'--scales'") from None
    from .. import plot as plot_lib

    paths = plot_lib.plot_results(out, scales=chosen)
    if not quiet:
        for path in paths:
            click.echo(str(path))
