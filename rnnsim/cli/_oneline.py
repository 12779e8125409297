"""A Click command class whose usage errors are one line on stderr (exit code 2).

Click prints a bad option value as a usage block ("Usage: ...", "Try ...", blank
line, "Error: ..."). The sweep, plot and theory commands promise one line per error,
like the library errors the group turns into "Error: <message>".
"""
from __future__ import annotations

import click


class _OneLineUsageError(click.ClickException):
    exit_code = 2


class OneLineCommand(click.Command):
    """``click.Command`` that reports ``click.UsageError`` as ``Error: <one line>``."""

    @staticmethod
    def _one_line(exc: click.UsageError) -> _OneLineUsageError:
        return _OneLineUsageError(" ".join(exc.format_message().split()))

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise self._one_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise self._one_line(exc) from None
