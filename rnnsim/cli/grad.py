"""``rnnsim grad``: gradients for weights brought from PyTorch."""
from __future__ import annotations

import click
import numpy as np

from .. import cells
from .._io import atomic_write
from ..losses import LOSSES
from ._common import check_out, device_option, load_array, load_params, with_ensemble_axis


@click.command()
@click.option("--cell", type=click.Choice(cells.names()), required=True, help="Recurrent cell.")
@click.option("--params", "params_path", required=True, metavar="P.npz",
              help="np.savez of a torch state dict (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0) "
                   "plus weight_out (K, H) and bias_out (K,); leading ensemble axis optional.")
@click.option("--inputs", "inputs_path", required=True, metavar="X.npy",
              help="Inputs (B, T, D), or (E, B, T, D) with an ensemble axis; float32 or float64.")
@click.option("--targets", "targets_path", required=True, metavar="Y.npy",
              help="Integer class targets: (B,) for --loss last, (B, T) for --loss every "
                   "(with a leading E axis when the params have one).")
@click.option("--loss", type=click.Choice(LOSSES), default="last", show_default=True,
              help="Cross-entropy at the final step, or averaged over every step.")
@device_option
@click.option("--out", "out_path", required=True, metavar="G.npz", help="Where to write the gradients.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
def grad(cell, params_path, inputs_path, targets_path, loss, device, out_path, force):
    """Exact gradients and log-domain gradient-norm profiles for given weights.

    G.npz holds the keys of rnnsim.gradients: one gradient per parameter, loss,
    log_grad_norm (B, T+1), log_grad_norm_c (lstm) and log_grad_norm_params. When
    the files have no ensemble axis, neither has G.npz.
    """
    from .. import gradients

    check_out(out_path, force)
    params = load_params(params_path)
    inputs = load_array(inputs_path, "--inputs")
    targets = load_array(targets_path, "--targets")

    single, params, (inputs, targets) = with_ensemble_axis(params, inputs, targets)

    result = gradients(cell, params, inputs, targets, loss=loss, device=device)
    if single:
        result = {k: v[0] for k, v in result.items()}
    atomic_write(out_path, lambda handle: np.savez(handle, **result))
    losses = np.atleast_1d(result["loss"])
    norms = np.atleast_1d(result["log_grad_norm_params"])
    click.echo(f"wrote {out_path}: {losses.size} network(s), loss {np.mean(losses):.6g} (mean), "
               f"ln|grad| {np.mean(norms):.6g} (mean)")
