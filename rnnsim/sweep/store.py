"""The results folder: one contract for the sweep, its resume and ``rnnsim plot``.

- ``.rnnsim.lock``: locked for the whole run (:mod:`rnnsim.sweep.lock`).
- ``.rnnsim``: the marker, written (atomically) before anything else, so that a
  folder killed at any point is recognisably rnnsim's and can be resumed.
- ``manifest.json``: configuration, provenance, status and run statistics.
- ``summary.csv``: one row per finished point, the columns of the sweep's measures
  (:data:`SUMMARY_COLUMNS` with the default ones); the index of what is done.
- ``profiles/<cell>_T<T>.npz``: ``scale`` (n,), ``seed`` (n,) and the arrays of the
  measures (:class:`rnnsim.sweep.measures.Array`), (n, ...) each: the per-step
  profiles (n, T+1), and with the optional measures per-sequence values and the
  Lyapunov spectra.

Every file is written to a temporary file beside it, fsync'ed and renamed
(:func:`rnnsim._io.atomic_write`). Readers validate what they read, and a damaged
file is a one-line ``ValueError`` that names it.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .._io import TMP_PREFIX, atomic_write
from . import measures
from .config import SweepConfig
from .lock import LOCK, FolderInUseError, FolderLock  # noqa: F401  (FolderInUseError is public here)

MANIFEST = "manifest.json"
SUMMARY = "summary.csv"
PROFILES_DIR = "profiles"
MARKER = ".rnnsim"
FIGURE_PATTERNS = ("phase_*.png", "phase_*.pdf", "profiles.png", "profiles.pdf", "rates.png", "rates.pdf",
                   "spectrum.png", "spectrum.pdf", "trainability_*.png", "trainability_*.pdf")
MANIFEST_FORMAT = 1
SUMMARY_COLUMNS = measures.SUMMARY_COLUMNS
_KINDS = {c.name: c.kind for c in measures.ALL_COLUMNS}
_MARKER_TEXT = json.dumps({"tool": "rnnsim", "contents": "sweep results", "format": MANIFEST_FORMAT}) + "\n"


def profile_name(cell, T) -> str:
    return f"{PROFILES_DIR}/{cell}_T{T}.npz"


def _reason(exc) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------- reading

def read_manifest(out) -> dict:
    """The manifest as a dict; ``ValueError`` naming the file if it is not an rnnsim manifest."""
    path = Path(out) / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {_reason(exc)}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not an rnnsim manifest: it holds a JSON {type(manifest).__name__}, "
                         "not an object")
    if not isinstance(manifest.get("config"), dict):
        raise ValueError(f"{path} is not an rnnsim manifest: it has no \"config\" object")
    if not isinstance(manifest.get("earlier_runs", []), list):
        raise ValueError(f"{path} is damaged: \"earlier_runs\" is not a list")
    return manifest


def manifest_config(out, manifest=None) -> SweepConfig:
    """The :class:`SweepConfig` stored in the manifest; ``ValueError`` naming the file if it is invalid."""
    manifest = read_manifest(out) if manifest is None else manifest
    try:
        return SweepConfig.from_mapping(manifest["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{Path(out) / MANIFEST} holds an invalid configuration: {_reason(exc)}") from None


def _cell_value(kind, text):
    if kind is str:
        return text
    if text == "":
        return None
    return int(text) if kind is int else float(text)


def summary_columns(config: SweepConfig | None = None) -> tuple:
    """The columns of ``summary.csv`` for the measures of ``config`` (default measures if None)."""
    return measures.column_names(config.measure) if config is not None else SUMMARY_COLUMNS


def read_summary(out, config: SweepConfig | None = None) -> list:
    """The rows of ``summary.csv`` as dicts, numbers parsed (empty cells -> None).

    With ``config``, the file must hold the columns of its measures and every row
    must be a distinct point of that sweep. Raises
    ``OSError`` if the file cannot be read and ``ValueError`` naming the file and
    line if it is damaged.
    """
    path = Path(out) / SUMMARY
    rows = []
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not set(summary_columns(config)) <= set(reader.fieldnames):
                raise ValueError("it lacks the summary columns")
            for raw in reader:
                if None in raw or None in raw.values():
                    raise ValueError(f"line {reader.line_num} does not have {len(reader.fieldnames)} fields")
                row = {}
                for key, text in raw.items():
                    try:
                        row[key] = _cell_value(_KINDS.get(key, str), text)  # unknown columns stay text
                    except ValueError:
                        raise ValueError(f"line {reader.line_num}: {key} {text!r} is not a number") from None
                rows.append(row)
    except OSError as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise ValueError(f"{path} is damaged: {_reason(exc)}") from None
    if config is not None:
        _check_rows(path, rows, config)
    return rows


def _check_rows(path, rows, config: SweepConfig) -> None:
    cells, lengths, scales = set(config.cell), set(config.lengths), set(config.scales)
    seen = set()
    for number, row in enumerate(rows, start=2):
        key = (row["cell"], row["T"], row["scale"], row["seed"])
        in_grid = (key[0] in cells and key[1] in lengths and key[2] in scales and key[3] is not None
                   and 0 <= key[3] < config.seeds)
        if (not in_grid or row["init"] != config.init or row["hidden"] != config.hidden
                or row["profile_file"] != profile_name(key[0], key[1])):
            raise ValueError(f"{path} is damaged: line {number} (cell {key[0]}, T {key[1]}, scale {key[2]}, "
                             f"seed {key[3]}) is not a point of the sweep in {MANIFEST}")
        if key in seen:
            raise ValueError(f"{path} is damaged: the point on line {number} appears twice")
        seen.add(key)


def read_profiles(out, cell, T, config: SweepConfig | None = None) -> dict:
    """The profile arrays of one (cell, T), validated: ``scale``, ``seed`` and the arrays of the
    measures of ``config`` (the default measures if None).

    Raises ``OSError`` if the file cannot be read and ``ValueError`` naming the file
    if it is damaged (not an .npz archive, truncated, arrays missing or of the wrong shape).
    """
    path = Path(out) / profile_name(cell, T)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("it is not an .npz archive")
            data = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise OSError(f"cannot read {path}: no such file") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise OSError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, RuntimeError,
            AttributeError) as exc:  # what np.load raises for truncated, corrupt or foreign files
        raise ValueError(f"{path} is damaged: {_reason(exc)}") from None
    arrays = measures.profile_arrays(config.measure if config is not None else measures.DEFAULT_MEASURES)
    for key in ("scale", "seed", *(a.name for a in arrays)):
        if key not in data:
            raise ValueError(f"{path} is damaged: it lacks the array {key!r}")
    n = data["scale"].shape[0] if data["scale"].ndim == 1 else -1
    if (n < 0 or data["scale"].dtype.kind != "f" or data["seed"].shape != (n,)
            or data["seed"].dtype.kind not in "iu"):
        raise ValueError(f"{path} is damaged: 'scale' and 'seed' must be float and integer arrays "
                         "of one length")
    for array in arrays:
        key, shape = array.name, (n, *array.shape(config, T))
        if data[key].shape != shape or data[key].dtype.kind != "f":
            raise ValueError(f"{path} is damaged: {key!r} has shape {data[key].shape} and dtype "
                             f"{data[key].dtype}; expected {shape} floats")
    if len(set(zip(data["scale"].tolist(), data["seed"].tolist()))) != n:
        raise ValueError(f"{path} is damaged: a (scale, seed) appears twice")
    return data


# --------------------------------------------------------------------------- writing

def write_json(path, obj) -> None:
    atomic_write(path, lambda fh: fh.write((json.dumps(obj, indent=2, allow_nan=True) + "\n").encode()))


def _format(value):
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def csv_line(row, names=SUMMARY_COLUMNS) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_format(row[c]) for c in names])
    return buf.getvalue()


def summary_bytes(lines, names=SUMMARY_COLUMNS) -> bytes:
    """The summary file from already formatted rows (formatted once: the file is rewritten often)."""
    return (",".join(names) + "\n" + "".join(lines)).encode()


def merge_profiles(out, cell, T, new: dict, grid: set, config: SweepConfig | None = None) -> None:
    """Add ``new`` entries to the profile file of (cell, T), replacing the same (scale, seed).

    Old entries outside ``grid`` (the sweep's (scale, seed) pairs) are dropped.
    """
    out = Path(out)
    path = out / profile_name(cell, T)
    if path.is_file():
        old = read_profiles(out, cell, T, config)
        replaced = set(zip(new["scale"].tolist(), new["seed"].tolist()))
        keep = np.array([key not in replaced and key in grid
                         for key in zip(old["scale"].tolist(), old["seed"].tolist())], dtype=bool)
        new = {k: np.concatenate([old[k][keep], new[k]]) for k in new}
    order = np.lexsort((new["seed"], new["scale"]))
    new = {k: v[order] for k, v in new.items()}
    atomic_write(path, lambda fh: np.savez(fh, **new))


# --------------------------------------------------------------------------- the folder as a whole

def _is_transient(entry: Path) -> bool:
    """Files rnnsim leaves before a folder has results: lock, marker, temp files, an empty profiles/."""
    if entry.name in (LOCK, MARKER) or entry.name.startswith(TMP_PREFIX):
        return True
    if entry.name == PROFILES_DIR and entry.is_dir():
        return all(e.name.startswith(TMP_PREFIX) for e in entry.iterdir())
    return False


def _has_results(out: Path) -> bool:
    return ((out / MANIFEST).exists() or (out / SUMMARY).exists()
            or ((out / PROFILES_DIR).is_dir() and any((out / PROFILES_DIR).glob("*.npz"))))


def check_folder(out, config: SweepConfig, *, resume=False, overwrite=False) -> dict:
    """Everything :func:`open_sweep` checks before it writes, without writing anything.

    Returns the finished rows (resume only) as ``{(cell, T, scale, seed): row}`` and
    the old manifest: a row is finished when ``summary.csv`` lists it and its profile
    is on disk.
    """
    if resume and overwrite:
        raise ValueError("choose one of resume and overwrite, not both")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"results folder {out} exists and is not a folder")
    found = {"done": {}, "manifest": {}}
    if not out.is_dir():
        return found
    ours = (out / MARKER).is_file() or (out / MANIFEST).is_file()
    contents = _marker_contents(out)
    if contents not in (None, "sweep results"):  # another command's folder (rnnsim train)
        raise FileExistsError(f"{out} holds {contents}, not a sweep; choose another --out")
    if not ours and not all(_is_transient(e) for e in out.iterdir()):
        raise FileExistsError(f"{out} is not empty and holds no {MANIFEST}; "
                              "it is not an rnnsim results folder, choose another --out")
    if not _has_results(out):
        return found
    if not (resume or overwrite):
        raise FileExistsError(f"{out} already holds results; use --resume to continue "
                              "them or --overwrite to replace them")
    if overwrite:
        return found
    if not (out / MANIFEST).is_file():
        raise ValueError(f"cannot resume {out}: it holds results but no {MANIFEST}; use --overwrite")
    manifest = read_manifest(out)
    stored = manifest_config(out, manifest)  # keys written before they existed read as their defaults
    diff = config.same_results_as(stored.as_dict())
    if diff:
        raise ValueError(f"cannot resume {out}: it was written with a different configuration "
                         f"({', '.join(diff)} differ)")
    rows = read_summary(out, config) if (out / SUMMARY).is_file() else []
    on_disk = {}
    for cell in config.cell:
        for T in config.lengths:
            if (out / profile_name(cell, T)).exists():
                data = read_profiles(out, cell, T, config)
                on_disk[(cell, T)] = set(zip(data["scale"].tolist(), data["seed"].tolist()))
    for row in rows:
        if (row["scale"], row["seed"]) in on_disk.get((row["cell"], row["T"]), ()):
            found["done"][(row["cell"], row["T"], row["scale"], row["seed"])] = row
    found["manifest"] = manifest
    return found


def _marker_contents(out: Path):
    """What the folder's marker says it holds ("sweep results", "training results"), or None."""
    try:
        return json.loads((out / MARKER).read_bytes()).get("contents")
    except (OSError, ValueError, AttributeError):
        return None


def _owned_files(out: Path):
    """Every file of a results folder that rnnsim wrote (and may replace with overwrite)."""
    found = [out / MANIFEST, out / SUMMARY]
    for pattern in FIGURE_PATTERNS + (TMP_PREFIX + "*",):
        found += sorted(out.glob(pattern))
    if (out / PROFILES_DIR).is_dir():
        found += sorted((out / PROFILES_DIR).glob("*_T*.npz"))
        found += sorted((out / PROFILES_DIR).glob(TMP_PREFIX + "*"))
    return [p for p in found if p.is_file()]


def _check_writable(folder: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX + "probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(f"cannot write to results folder {folder}: {exc.strerror or exc}") from None


def remove_stale_temps(out) -> None:
    """Delete temp files a killed process left (only under the lock: no writer is running)."""
    out = Path(out)
    for folder in (out, out / PROFILES_DIR):
        if folder.is_dir():
            for stale in folder.glob(TMP_PREFIX + "*"):
                if stale.is_file():
                    stale.unlink()


class SweepFolder:
    """A checked and locked results folder (see :func:`open_sweep`).

    ``done`` maps (cell, T, scale, seed) to the finished rows (resume only) and
    ``manifest`` is the old manifest ({} for a new folder). :meth:`start` prepares
    the folder for writing; until it is called, nothing has been written.
    """

    def __init__(self, path: Path, lock: FolderLock, found: dict, overwrite: bool):
        self.path, self._lock, self._overwrite = path, lock, overwrite
        self.done, self.manifest = found["done"], found["manifest"]

    def start(self) -> None:
        """Record the lock's holder, mark the folder, clear stale temp files (and with
        overwrite the files rnnsim wrote), and create ``profiles/``."""
        out = self.path
        self._lock.claim()
        if not (out / MARKER).is_file():
            atomic_write(out / MARKER, lambda fh: fh.write(_MARKER_TEXT.encode()))
        remove_stale_temps(out)
        if self._overwrite:
            for old in _owned_files(out):
                old.unlink()
        try:
            (out / PROFILES_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create {out / PROFILES_DIR}: {exc.strerror or exc}") from None
        _check_writable(out / PROFILES_DIR)


@contextlib.contextmanager
def open_sweep(out, config: SweepConfig, *, resume=False, overwrite=False):
    """Check and lock the results folder ``out`` for the ``with`` block; yield a :class:`SweepFolder`.

    Every read-only check runs before anything is written, then the folder is
    created if missing and locked, and the checks run again under the lock.

    Raises
    ------
    ValueError
        resume and overwrite together; a resume whose configuration differs; a
        damaged manifest, summary or profile file (named).
    FileExistsError
        The folder holds results and neither resume nor overwrite was given, or it
        is not an rnnsim results folder.
    FolderInUseError
        Another rnnsim process holds the folder.
    OSError
        The folder cannot be created or written.
    """
    out = Path(out)
    with locked_folder(out, "sweep", lambda: check_folder(out, config, resume=resume, overwrite=overwrite)
                       ) as (lock, found):
        yield SweepFolder(out, lock, found, overwrite)


@contextlib.contextmanager
def locked_folder(out: Path, command: str, check):
    """Create ``out`` if needed and hold its lock for ``command``; yield (lock, what ``check``
    returned). ``check()`` runs read-only before anything is created (refuse before writing)
    and again once the lock is held; a folder this call created is removed again when the
    lock cannot be had. The one protocol of the sweep's and ``rnnsim train``'s folders."""
    check()
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create results folder {out}: {exc.strerror or exc}") from None
    lock = FolderLock(out, command)
    try:
        _check_writable(out)
        lock.acquire()
    except OSError:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    try:
        yield lock, check()  # again, now that it is ours
    finally:
        lock.release()


def prepare_folder(out, config: SweepConfig, *, resume=False, overwrite=False) -> list:
    """Check and prepare ``out`` as a sweep does, release it, and return the finished rows."""
    with open_sweep(out, config, resume=resume, overwrite=overwrite) as folder:
        folder.start()
        return list(folder.done.values())
