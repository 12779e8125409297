"""Options and checks shared by several commands."""
from __future__ import annotations

import os

import click
import numpy as np

from .._validate import DEVICES

device_option = click.option(
    "--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
    help="Where to compute: cpu, cuda (error without a usable GPU) or auto (GPU when usable).")


def check_out(out_path: str, force: bool) -> None:
    """Refuse an existing ``--out`` file without ``--force``, and a folder that does not exist."""
    if os.path.exists(out_path) and not force:
        raise click.BadParameter(f"{out_path} already exists; pass --force to overwrite it",
                                 param_hint="--out")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out_path))):
        raise click.BadParameter(f"the folder of {out_path} does not exist", param_hint="--out")


def _load(path: str, what: str):
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise click.BadParameter(f"{path}: no such file", param_hint=what) from None
    except Exception as exc:  # corrupt, truncated, pickled objects, a folder, ...
        raise click.BadParameter(f"cannot read {path}: {str(exc).splitlines()[0]}", param_hint=what) from None


def load_params(path: str) -> dict:
    archive = _load(path, "--params")
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise click.BadParameter(f"{path} is a single array; expected an .npz archive of named arrays",
                                 param_hint="--params")
    with archive:
        try:
            return {key: archive[key] for key in archive.files}
        except Exception as exc:
            raise click.BadParameter(f"cannot read {path}: {str(exc).splitlines()[0]}",
                                     param_hint="--params") from None


def load_array(path: str, what: str) -> np.ndarray:
    arr = _load(path, what)
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise click.BadParameter(f"{path} is an .npz archive; expected a single .npy array", param_hint=what)
    return arr


def with_ensemble_axis(params: dict, *arrays):
    """The files of ``grad`` and ``lyapunov`` may leave out the ensemble axis: without it in
    the weights, everything is one network. Returns (single, params, arrays) with the axis."""
    single = params.get("weight_hh_l0") is not None and np.ndim(params["weight_hh_l0"]) == 2
    if not single:
        return False, params, arrays
    inputs = arrays[0]
    if inputs.ndim != 3:
        raise click.BadParameter(f"the params have no ensemble axis, so inputs must be (B, T, D); "
                                 f"got shape {inputs.shape}", param_hint="--inputs")
    return True, {key: np.asarray(v)[None] for key, v in params.items()}, tuple(a[None] for a in arrays)
