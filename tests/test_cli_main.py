"""The `rnnsim` group: version, help of every command, and what `--help` and `theory` import."""
import json
import time

from cli_helpers import CLI, run, run_process

import rnnsim
from rnnsim.cli import main


def test_version_and_help():
    result = run("--version")
    assert result.exit_code == 0 and rnnsim.__version__ in result.output
    for command in main.commands:
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output, command
    assert {"grad", "sweep", "plot", "theory", "lyapunov"} <= set(main.commands)


_LOADED = ("import json, sys; from rnnsim.cli import main\n"
           "try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
           "print(json.dumps(sorted(sys.modules)), file=sys.stderr)")


def _modules_after(*args):
    import subprocess
    done = subprocess.run([CLI[0], "-c", _LOADED.format(args=list(args))], capture_output=True, text=True,
                          check=True)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_help_and_theory_load_neither_matplotlib_nor_the_sweep_runner():
    """Commands import their libraries lazily: `rnnsim --help` and `rnnsim theory` stay light."""
    heavy = ("matplotlib", "scipy", "numba", "rnnsim.plot", "rnnsim.sweep.run", "rnnsim.sweep.store",
             "rnnsim.kernels")
    for args in (["--help"], ["theory", "--scale", "0.5:3:6"], ["theory", "--cell", "gru", "--scale", "1,30"],
                 ["sweep", "--help"], ["plot", "--help"], ["lyapunov", "--help"]):
        loaded = _modules_after(*args)
        assert "rnnsim.cli" in loaded
        found = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in heavy))
        assert not found, (args, found)


def test_help_and_theory_answer_quickly():
    """Under 0.5 s on an idle machine; 2 s here leaves room for a loaded CI runner."""
    for args in (["--help"], ["theory", "--scale", "1"]):
        start = time.perf_counter()
        done = run_process(*args)
        assert done.returncode == 0, done.stderr
        assert time.perf_counter() - start < 2.0, args
