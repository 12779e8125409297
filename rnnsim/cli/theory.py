"""``rnnsim theory``: mean-field values of the tanh RNN (and the lstm forget-gate timescale)."""
from __future__ import annotations

import json
import math

import click


def _finite_or_none(x):
    return float(x) if math.isfinite(x) else None


@click.command()
@click.option("--scale", "scales", required=True, metavar="S",
              help="Recurrent scale S (W_hh ~ N(0, S²/H)): a value, a comma list, or A:B:N evenly spaced; "
                   "0 < S <= 1e6.")
@click.option("--input-scale", default="1.0", show_default=True, metavar="U",
              help="W_ih ~ N(0, U²/D) with inputs x ~ N(0, 1); 0 <= U <= 1e6.")
@click.option("--bias-scale", default="0.0", show_default=True, metavar="B",
              help="Bias ~ N(0, B²); 0 <= B <= 1e6.")
@click.option("--forget-bias", default="0.0", show_default=True, metavar="F",
              help="LSTM forget-gate bias, for the cell timescale -1/ln sigmoid(F); |F| <= 1e6.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table (inf as null).")
def theory(scales, input_scale, bias_scale, forget_bias, as_json):
    """Mean-field theory by Gauss-Hermite quadrature: q*, chi, timescale, critical scale.

    q* = S² E[tanh(√q* z)²] + U² + B²;  chi = S² E[tanh'(√q* z)²] multiplies E‖dL/dh‖² per
    step back in time;  xi = -1/ln chi (> 0 decay, < 0 growth, in steps).
    """
    from .. import theory as th
    from .._parse import MAX_SCALE, finite_float, parse_scales

    try:
        scales = parse_scales(scales, name="scale")
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--scale'") from None
    input_scale = finite_float("input-scale", input_scale, minimum=0.0, maximum=MAX_SCALE)
    bias_scale = finite_float("bias-scale", bias_scale, minimum=0.0, maximum=MAX_SCALE)
    forget_bias = finite_float("forget-bias", forget_bias, minimum=-MAX_SCALE, maximum=MAX_SCALE)
    mf = th.mean_field(scales, input_scale, bias_scale)
    forget = th.forget_timescale(forget_bias)
    regimes = [th.regime(c) for c in mf["chi"]]
    if as_json:
        points = [{"scale": float(s), "q_star": _finite_or_none(q), "chi": _finite_or_none(c),
                   "rate": _finite_or_none(r), "timescale": _finite_or_none(xi), "regime": reg or None}
                  for s, q, c, r, xi, reg in zip(mf["scale"], mf["q_star"], mf["chi"], mf["rate"],
                                                 mf["timescale"], regimes)]
        click.echo(json.dumps({
            "input_scale": input_scale, "bias_scale": bias_scale, "forget_bias": forget_bias,
            "critical_scale": _finite_or_none(mf["critical_scale"]),
            "lstm_forget_timescale": _finite_or_none(forget), "points": points,
        }, indent=2, allow_nan=False))
        return
    click.echo(f"mean-field tanh RNN, W_hh ~ N(0, S^2/H), input scale U = {input_scale:g}, "
               f"bias scale B = {bias_scale:g}")
    click.echo(f"critical scale S_c (chi = 1): {mf['critical_scale']:.6f}")
    click.echo(f"lstm forget-gate timescale -1/ln sigmoid({forget_bias:g}) = {forget:.4g} steps")
    click.echo("")
    click.echo(f"{'scale':>9}  {'q*':>10}  {'chi':>10}  {'rate 0.5*ln(chi)':>16}  {'xi = -1/ln(chi)':>15}  "
               "regime")
    columns = (mf["scale"], mf["q_star"], mf["chi"], mf["rate"], mf["timescale"], regimes)
    for s, q, c, r, xi, reg in zip(*columns):
        click.echo(f"{s:9.6g}  {q:10.5g}  {c:10.5g}  {r:16.5g}  {xi:15.5g}  {reg or 'n/a'}")
    click.echo("rate: per-step change of ln||dL/dh_t|| going back in time; xi < 0 means growth "
               "by e every |xi| steps")
