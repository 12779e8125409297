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
              help="Cross-entropy losses: integer classes, (B,) for last, (B, T) for every and masked. "
                   "MSE losses: floats like the inputs, (B, K) for mse-last, (B, T, K) for mse-every and "
                   "mse-masked. With a leading E axis when the params have one.")
@click.option("--loss", type=click.Choice(LOSSES), default="last", show_default=True,
              help="Cross-entropy (last, every, masked) or MSE of the linear readout (mse-*), at the final "
                   "step, averaged over every step, or over the steps of --mask.")
@click.option("--mask", "mask_path", default=None, metavar="M.npy",
              help="Bool mask of the steps that carry a loss term, for --loss masked and mse-masked: "
                   "(T,), (B, T) or (E, B, T).")
@click.option("--clip", type=click.FloatRange(min=0.0, min_open=True), default=None, metavar="C",
              help="Clip every network's gradient to global norm at most C (G.npz then holds 'clipped').")
@device_option
@click.option("--out", "out_path", required=True, metavar="G.npz", help="Where to write the gradients.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
def grad(cell, params_path, inputs_path, targets_path, loss, mask_path, clip, device, out_path, force):
    """Exact gradients and log-domain gradient-norm profiles for given weights.

    G.npz holds the keys of rnnsim.gradients: one gradient per parameter, loss,
    log_grad_norm (B, T+1), log_grad_norm_c (lstm), log_grad_norm_params (unclipped)
    and, with --clip, clipped. When the files have no ensemble axis, neither has G.npz.
    """
    from .. import gradients

    check_out(out_path, force)
    params = load_params(params_path)
    inputs = load_array(inputs_path, "--inputs")
    targets = load_array(targets_path, "--targets")
    mask = None if mask_path is None else load_array(mask_path, "--mask")

    single, params, (inputs, targets) = with_ensemble_axis(params, inputs, targets)

    # a mask broadcasts against (E, B, T) as it is, with or without an ensemble axis
    result = gradients(cell, params, inputs, targets, loss=loss, mask=mask, clip=clip, device=device)
    if single:
        result = {k: v[0] for k, v in result.items()}
    atomic_write(out_path, lambda handle: np.savez(handle, **result))
    losses = np.atleast_1d(result["loss"])
    norms = np.atleast_1d(result["log_grad_norm_params"])
    click.echo(f"wrote {out_path}: {losses.size} network(s), loss {np.mean(losses):.6g} (mean), "
               f"ln|grad| {np.mean(norms):.6g} (mean)")
