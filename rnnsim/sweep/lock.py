"""The lock of a results folder: one rnnsim process writes a folder at a time.

``.rnnsim.lock`` inside the folder is locked with ``fcntl.flock`` (exclusive,
non-blocking) for the whole run of ``rnnsim sweep`` or ``rnnsim plot``. The
operating system releases the lock when the process ends, however it ends
(``kill -9`` included), so a stale lock cannot block a later run. The file itself
stays (deleting a lock file that another process may have open would let two
processes hold "the" lock); once locked it records the holder's pid and command,
which is how a refused run can name it.

Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK = ".rnnsim.lock"


class FolderInUseError(OSError):
    """Another rnnsim process holds the results folder's lock."""


def _holder(path: Path) -> str:
    for attempt in range(5):
        try:
            info = json.loads(path.read_text())
            return f"{info['command']} (pid {int(info['pid'])})"
        except (OSError, ValueError, KeyError, TypeError):  # the holder has not written it yet
            time.sleep(0.05)
    return "process (pid unknown)"


class FolderLock:
    """An exclusive lock on ``folder`` for ``command`` ("sweep" or "plot"); use as a context manager.

    Raises :class:`FolderInUseError` when another process holds it, and ``OSError``
    when the lock file cannot be created (a read-only folder).
    """

    def __init__(self, folder, command: str):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.command = command
        self._fd = None

    def acquire(self) -> "FolderLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise OSError(f"cannot write to results folder {self.folder}: {exc.strerror or exc}") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise FolderInUseError(f"{self.folder} is in use by another rnnsim {_holder(self.path)}; "
                                       "wait for it to finish") from None
        self._fd = fd
        return self

    def claim(self) -> None:
        """Record this process as the holder (after the checks that may still refuse the run)."""
        data = json.dumps({"pid": os.getpid(), "command": self.command}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
