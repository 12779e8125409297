"""``rnnsim lyapunov``: Lyapunov spectra for weights brought from PyTorch."""
from __future__ import annotations

import click
import numpy as np

from .. import cells
from .._io import atomic_write
from ._common import check_out, load_array, load_params, with_ensemble_axis


@click.command()
@click.option("--cell", type=click.Choice(cells.names()), required=True, help="Recurrent cell.")
@click.option("--params", "params_path", required=True, metavar="P.npz",
              help="np.savez of a torch state dict (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0); "
                   "weight_out and bias_out may be there too (they are not used); leading ensemble axis "
                   "optional.")
@click.option("--inputs", "inputs_path", required=True, metavar="X.npy",
              help="Inputs (B, T, D), or (E, B, T, D) with an ensemble axis; float32 or float64.")
@click.option("--k", "k", default="1", show_default=True, metavar="K",
              help="Exponents to compute, 1 to the state dimension (H; 2H for the lstm's (h, c)).")
@click.option("--warmup", default="100", show_default=True, metavar="STEPS",
              help="Steps discarded before averaging; warmup + qr-every <= T.")
@click.option("--qr-every", default="1", show_default=True, metavar="STEPS",
              help="Steps between QR reorthonormalisations of the k tangent vectors.")
@click.option("--out", "out_path", required=True, metavar="L.npz", help="Where to write the exponents.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
def lyapunov(cell, params_path, inputs_path, k, warmup, qr_every, out_path, force):
    """Top-k Lyapunov exponents of the input-driven forward dynamics (on the CPU, float64).

    L.npz holds the keys of rnnsim.lyapunov: exponents (k,), the mean over sequences,
    in nats per step and decreasing; exponents_per_sequence (B, k); log_growth (B, T),
    the log growth of the k-volume after the warm-up; steps, the number of steps
    averaged. With an ensemble axis in the files, each gets a leading E axis.
    """
    from .. import lyapunov as lyapunov_lib
    from .._parse import parse_int

    k = parse_int("k", k, minimum=1)
    warmup = parse_int("warmup", warmup, minimum=0)
    qr_every = parse_int("qr-every", qr_every, minimum=1)
    check_out(out_path, force)
    params = load_params(params_path)
    inputs = load_array(inputs_path, "--inputs")

    single, params, (inputs,) = with_ensemble_axis(params, inputs)
    if "weight_out" not in params and "bias_out" not in params and params.get("weight_hh_l0") is not None:
        # The spectrum does not involve the readout: give the library a zero one (one class).
        E, _, H = np.shape(params["weight_hh_l0"])
        dtype = np.asarray(params["weight_hh_l0"]).dtype
        params["weight_out"] = np.zeros((E, 1, H), dtype=dtype)
        params["bias_out"] = np.zeros((E, 1), dtype=dtype)

    result = lyapunov_lib(cell, params, inputs, k=k, qr_every=qr_every, warmup=warmup, device="cpu")
    if single:
        result = {key: (v[0] if isinstance(v, np.ndarray) else v) for key, v in result.items()}
    atomic_write(out_path, lambda handle: np.savez(handle, **result))
    top = np.atleast_2d(result["exponents"])[:, 0]
    click.echo(f"wrote {out_path}: {top.size} network(s), k = {k}, lambda_max {np.mean(top):.6g} per step "
               f"(mean), averaged over {result['steps']} steps")
