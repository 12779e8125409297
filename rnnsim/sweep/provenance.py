"""Where a sweep's numbers came from: versions, git commit, device and times (for the manifest)."""
from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from .._machine import cpu_model


def git_commit():
    """(commit, dirty) of the checkout rnnsim runs from, or (None, None) outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def device_name(device: str) -> str:
    if device == "cuda":
        try:
            from numba import cuda
            name = cuda.get_current_device().name
            return name.decode() if isinstance(name, bytes) else str(name)
        except Exception as exc:  # the name is provenance only; never fail a sweep over it
            return f"cuda ({type(exc).__name__})"
    import numba
    return f"{cpu_model()}, {numba.get_num_threads()} threads"


def provenance(device: str) -> dict:
    import numba
    commit, dirty = git_commit()
    return {
        "versions": {"rnnsim": __version__, "numba": numba.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "git_commit": commit,
        "git_dirty": dirty,
        "device": device,
        "device_name": device_name(device),
        "platform": platform.platform(),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
