"""``rnnsim theory``: mean-field values of the tanh RNN (and the lstm forget-gate timescale)."""
from __future__ import annotations

import json
import math

import click

from .. import theory as th
from ..sweep import parse_scales


def _finite_or_none(x):
    return float(x) if math.isfinite(x) else None


@click.command()
@click.option("--scale", "scales", required=True, metavar="S",
              help="Recurrent scale S (W_hh ~ N(0, S²/H)): a value, a comma list, or A:B:N evenly spaced.")
@click.option("--input-scale", type=float, default=1.0, show_default=True, metavar="U",
              help="W_ih ~ N(0, U²/D) with inputs x ~ N(0, 1).")
@click.option("--bias-scale", type=float, default=0.0, show_default=True, metavar="B", help="Bias ~ N(0, B²).")
@click.option("--forget-bias", type=float, default=0.0, show_default=True, metavar="F",
              help="LSTM forget-gate bias, for the cell timescale -1/ln sigmoid(F).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def theory(scales, input_scale, bias_scale, forget_bias, as_json):
    """Mean-field theory by Gauss-Hermite quadrature: q*, chi, timescale, critical scale.

    q* = S² E[tanh(√q* z)²] + U² + B²;  chi = S² E[tanh'(√q* z)²] multiplies E‖dL/dh‖² per
    step back in time;  xi = -1/ln chi (> 0 decay, < 0 growth, in steps).
    """
    try:
        scales = parse_scales(scales)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--scale'") from None
    mf = th.mean_field(scales, input_scale, bias_scale)
    forget = th.forget_timescale(forget_bias)
    regimes = ["vanishing" if c < 1 else "exploding" if c > 1 else "critical" for c in mf["chi"]]
    if as_json:
        points = [{"scale": float(s), "q_star": float(q), "chi": float(c), "rate": float(r),
                   "timescale": _finite_or_none(xi), "regime": reg}
                  for s, q, c, r, xi, reg in zip(mf["scale"], mf["q_star"], mf["chi"], mf["rate"],
                                                 mf["timescale"], regimes)]
        click.echo(json.dumps({
            "input_scale": input_scale, "bias_scale": bias_scale, "forget_bias": forget_bias,
            "critical_scale": mf["critical_scale"], "lstm_forget_timescale": forget, "points": points,
        }, indent=2, allow_nan=False))
        return
    click.echo(f"mean-field tanh RNN, W_hh ~ N(0, S^2/H), input scale U = {input_scale:g}, "
               f"bias scale B = {bias_scale:g}")
    click.echo(f"critical scale S_c (chi = 1): {mf['critical_scale']:.6f}")
    click.echo(f"lstm forget-gate timescale -1/ln sigmoid({forget_bias:g}) = {forget:.4g} steps")
    click.echo("")
    header = f"{'scale':>9}  {'q*':>10}  {'chi':>10}  {'rate 0.5*ln(chi)':>16}  {'xi = -1/ln(chi)':>15}  regime"
    click.echo(header)
    for s, q, c, r, xi, reg in zip(mf["scale"], mf["q_star"], mf["chi"], mf["rate"], mf["timescale"], regimes):
        click.echo(f"{s:9.6g}  {q:10.5g}  {c:10.5g}  {r:16.5g}  {xi:15.5g}  {reg}")
    click.echo("rate: per-step change of ln||dL/dh_t|| going back in time; xi < 0 means growth "
               "by e every |xi| steps")
