"""The ``rnnsim`` command line: a Click group of thin commands.

Commands parse their options, call the library, and report. Errors the user can
fix (bad input, missing or damaged files, a folder in use, sizes that cannot fit,
no GPU) end with exit code 2 and one line on stderr, never a traceback; set
``RNNSIM_DEBUG=1`` to see the traceback anyway.

Each command imports its library modules inside the command function, so that
``rnnsim --help`` and ``rnnsim theory`` load neither matplotlib nor the sweep runner.
"""
from __future__ import annotations

import os

import click

from .. import __version__


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing key {exc}"
    if isinstance(exc, MemoryError):
        return f"out of memory{': ' + str(exc).splitlines()[0] if str(exc) else ''}; use smaller sizes"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # One line, without click's usage block ("Usage: ...", "Try ...", blank line).
            click.echo(f"Error: {' '.join(exc.format_message().split())}", err=True)
            ctx.exit(2)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (ValueError, TypeError, OSError, RuntimeError, KeyError, MemoryError) as exc:
            if os.environ.get("RNNSIM_DEBUG"):
                raise
            click.echo(f"Error: {_one_line(exc)}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnsim")
def main():
    """Exact gradients through time for ensembles of RNNs, LSTMs and GRUs."""


from .export import export  # noqa: E402
from .grad import grad  # noqa: E402  (commands import the group's helpers)
from .lyapunov import lyapunov  # noqa: E402
from .plot import plot  # noqa: E402
from .sweep import sweep  # noqa: E402
from .theory import theory  # noqa: E402
from .train import train  # noqa: E402

for _command in (grad, lyapunov, sweep, train, plot, theory, export):
    main.add_command(_command)
