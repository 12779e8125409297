"""The ``rnnsim`` command line: a Click group of thin commands.

Commands parse their options, call the library, and report. Errors the user can
fix (bad input, missing files, no GPU) end with exit code 2 and one line on
stderr, never a traceback; set ``RNNSIM_DEBUG=1`` to see the traceback anyway.
"""
from __future__ import annotations

import os

import click

from .. import __version__


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # One line, without click's usage block: scripts grep stderr.
            click.echo(f"Error: {exc.format_message()}", err=True)
            ctx.exit(2)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (ValueError, TypeError, OSError, RuntimeError, KeyError) as exc:
            if os.environ.get("RNNSIM_DEBUG"):
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            click.echo(f"Error: {message}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnsim")
def main():
    """Exact gradients through time for ensembles of RNNs and LSTMs."""


def _register():
    # Each command lives in its own module; importing registers nothing by side effect.
    from .grad import grad
    main.add_command(grad)
    for name in ("theory", "sweep", "plot"):
        try:
            module = __import__(f"{__name__}.{name}", fromlist=[name])
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        main.add_command(getattr(module, name))


_register()
