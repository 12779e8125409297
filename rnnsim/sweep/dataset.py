r"""A results folder as one xarray Dataset, and its export to NetCDF or Zarr.

Needs the optional extra ``pip install "rnnsim[xarray]"`` (xarray, h5netcdf, zarr);
nothing else in rnnsim imports xarray.

Layout of :func:`open_dataset`
------------------------------
- Coordinates ``cell``, ``T``, ``scale``, ``seed`` (the sweep's grid, from the
  manifest's configuration).
- Every column of ``summary.csv`` but the key (``cell, init, hidden, T, scale, seed``,
  constant ``init`` and ``hidden`` are attributes) and ``profile_file`` is a variable on
  (cell, T, scale, seed): floats as float64 (NaN where a point is not finished or the
  cell is empty), labels (``regime``, ``mf_regime``) as strings ("" where missing).
  Each variable's ``meaning`` attribute is the column's meaning.
- Every profile array (:func:`rnnsim.sweep.measures.profile_arrays`) is a variable on
  (cell, T, scale, seed, ...) with its own trailing dims: ``t`` (0..max T, the
  per-step profiles, NaN beyond the row's own T), ``sequence`` (the B sequences),
  ``grid`` (the steps :func:`rate_grid` of each T, given by the variable
  ``rate_grid_step`` on (T, grid), NaN padded) and ``exponent`` (1..lyap-k); arrays of
  measures this module does not know get dims ``<name>_dim<i>``. Their dtype is the
  file's (float32 for the log10 profiles).
- Attributes: ``manifest`` (the whole manifest.json, as JSON text, so nothing is
  lost), and flat copies for convenience: ``config_<key>`` (lists as arrays, lists of
  names comma-joined), ``version_<package>``, and the manifest's provenance scalars
  (``device``, ``device_name``, ``git_commit``, ``started``, ``finished``, ``status``...).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .._io import TMP_PREFIX, _fsync_dir
from . import measures, store

MISSING = 'xarray export needs the xarray extra: pip install "rnnsim[xarray]"'
FORMATS = ("netcdf", "zarr")
KEYS = ("cell", "T", "scale", "seed")
_DIMS = {"log10_grad_norm_mean": ("t",), "log10_grad_norm_std": ("t",), "rate_seq": ("sequence",),
         "log10_ratio_seq": ("sequence",), "log_grad_norm_grid": ("sequence", "grid"),
         "lyap_max_seq": ("sequence",), "lyap_spectrum": ("exponent",)}


def _xarray():
    try:
        import xarray
    except ImportError:
        raise RuntimeError(MISSING) from None
    return xarray


def _attr(value):
    """A manifest value as a NetCDF attribute (None for what has no such form)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (str, int, float)):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in value):
        return np.asarray(value)
    return None


def _attributes(manifest, config) -> dict:
    attrs = {"title": "rnnsim sweep results", "manifest": json.dumps(manifest, sort_keys=True)}
    for key, value in manifest.items():
        if key not in ("config", "versions", "stats", "earlier_runs") and _attr(value) is not None:
            attrs[key] = _attr(value)
    for key, value in config.as_dict().items():
        if _attr(value) is not None:
            attrs[f"config_{key.replace('-', '_')}"] = _attr(value)
    for key, value in (manifest.get("versions") or {}).items():
        if _attr(value) is not None:
            attrs[f"version_{key}"] = _attr(value)
    return attrs


def open_dataset(out):
    """The results folder ``out`` as an :class:`xarray.Dataset` (layout in the module notes).

    Reads ``manifest.json``, ``summary.csv`` and the profile files through
    :mod:`rnnsim.sweep.store` (which validates them: a damaged file is a one-line
    ``ValueError`` naming it). Points not yet finished are NaN (or ""). Raises
    ``RuntimeError`` when xarray is not installed.
    """
    xr = _xarray()
    manifest = store.read_manifest(out)
    config = store.manifest_config(out, manifest)
    rows = store.read_summary(out, config) if (Path(out) / store.SUMMARY).is_file() else []
    coords = {"cell": list(config.cell), "T": np.asarray(config.lengths, dtype=np.int64),
              "scale": np.asarray(config.scales, dtype=np.float64),
              "seed": np.arange(config.seeds, dtype=np.int64)}
    index = [{v: i for i, v in enumerate(np.asarray(coords[k]).tolist())} for k in KEYS]
    shape = tuple(len(c) for c in coords.values())
    data_vars = {}
    for column in measures.columns(config.measure):
        if column.name in KEYS or column.name in ("init", "hidden", "profile_file"):
            continue
        values = np.full(shape, "" if column.kind is str else np.nan,
                         dtype=object if column.kind is str else np.float64)
        for row in rows:
            at = tuple(index[i][row[k]] for i, k in enumerate(KEYS))
            if row[column.name] is not None:
                values[at] = row[column.name]
        if column.kind is str:
            values = values.astype(str)
        data_vars[column.name] = (KEYS, values, {"meaning": column.meaning})
    data_vars.update(_profiles(out, config, index, shape, coords))
    attrs = _attributes(manifest, config)
    attrs.update(init=config.init, hidden=config.hidden)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _profiles(out, config, index, shape, coords) -> dict:
    arrays = measures.profile_arrays(config.measure)
    dims = {a.name: _DIMS.get(a.name) or tuple(f"{a.name}_dim{i}" for i in range(len(a.shape(config, 1))))
            for a in arrays}
    sizes = {}
    for a in arrays:
        for T in config.lengths:
            for dim, n in zip(dims[a.name], a.shape(config, T)):
                sizes[dim] = max(sizes.get(dim, 0), n)
    found = {}
    for cell in config.cell:
        for T in config.lengths:
            if (Path(out) / store.profile_name(cell, T)).is_file():
                found[(cell, T)] = store.read_profiles(out, cell, T, config)
    found_dtype = {a.name: next((d[a.name].dtype for d in found.values()), np.dtype(np.float64))
                   for a in arrays}
    variables = {}
    for a in arrays:
        values = np.full(shape + tuple(sizes[d] for d in dims[a.name]), np.nan, dtype=found_dtype[a.name])
        for (cell, T), data in found.items():
            for j, (scale, seed) in enumerate(zip(data["scale"].tolist(), data["seed"].tolist())):
                at = (index[0][cell], index[1][T], index[2][scale], index[3][seed])
                values[at + tuple(slice(0, n) for n in data[a.name].shape[1:])] = data[a.name][j]
        variables[a.name] = (KEYS + dims[a.name], values, {"meaning": a.meaning})
    for dim, n in sizes.items():
        coords[dim] = np.arange(1, n + 1) if dim == "exponent" else np.arange(n)
    if "grid" in sizes:
        steps = np.full((len(config.lengths), sizes["grid"]), np.nan)
        for i, T in enumerate(config.lengths):
            grid = measures.rate_grid(T)
            steps[i, :len(grid)] = grid
        variables["rate_grid_step"] = (("T", "grid"), steps, {"meaning": "the steps t of log_grad_norm_grid "
                                                                         "(rate_grid(T)), NaN padded"})
    return variables


def export(out, path, to, *, overwrite=False) -> Path:
    """Write :func:`open_dataset` of ``out`` to ``path`` as NetCDF-4 (h5netcdf) or Zarr (a folder).

    The file is written beside ``path`` under a temporary name and renamed into place,
    so ``path`` is never half-written; an existing ``path`` is replaced only with
    ``overwrite``. Returns ``path``.
    """
    if to not in FORMATS:
        raise ValueError(f"to must be one of {', '.join(FORMATS)}, got {to!r}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; use --overwrite to replace it")
    if path.exists() and (path.is_dir() != (to == "zarr")):
        raise FileExistsError(f"{path} exists and is a {'folder' if path.is_dir() else 'file'}; "
                              f"a {to} export cannot replace it")
    dataset = open_dataset(out)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OSError(f"cannot write {path}: the folder {folder} does not exist")
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=TMP_PREFIX + path.name + "."))
    try:
        if to == "netcdf":
            target = tmp / "data.nc"
            dataset.to_netcdf(target, engine="h5netcdf")
            with open(target, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(target, path)
        else:
            target = tmp / "data.zarr"
            dataset.to_zarr(target, mode="w", zarr_format=2, consolidated=True)  # v2: portable strings
            old = tmp / "old"
            if path.exists():  # the old folder aside, the new one in, then the old one removed
                os.replace(path, old)
            os.replace(target, path)
        _fsync_dir(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
