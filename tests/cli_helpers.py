"""Helpers shared by the command-line and fault tests."""
from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from rnnsim.cli import main

CLI = [sys.executable, "-c", "from rnnsim.cli import main; main()"]
"""The command line in a fresh process (for kill tests and import checks)."""


def run(*args):
    """``rnnsim ARGS`` in this process, through Click's CliRunner (stderr kept apart)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def run_process(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, **kwargs)


def snapshot(folder):
    """Every file under ``folder`` (hidden ones included) and its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def assert_one_line_error(result, *words):
    """Exit code 2, one line on stderr starting 'Error: ' and holding ``words``, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    for word in words:
        assert word in lines[0], (word, lines[0])
