"""``rnnsim theory``: the annealed mean field of a cell (rnn, lstm or gru) over scales."""
from __future__ import annotations

import json
import math

import click

from .. import cells


def _finite_or_none(x):
    return float(x) if x is not None and math.isfinite(x) else None


_LABELS = {"q_star": "q*", "q_h": "Q_h", "q_c": "Q_c"}


@click.command()
@click.option("--cell", type=click.Choice(cells.names()), default="rnn", show_default=True,
              help="The cell whose mean field to print.")
@click.option("--scale", "scales", required=True, metavar="S",
              help="Recurrent scale S (W_hh ~ N(0, S²/H)): a value, a comma list, or A:B:N evenly spaced; "
                   "0 < S <= 1e6.")
@click.option("--input-scale", default="1.0", show_default=True, metavar="U",
              help="W_ih ~ N(0, U²/D) with inputs x ~ N(0, 1); 0 <= U <= 1e6.")
@click.option("--bias-scale", default="0.0", show_default=True, metavar="B",
              help="Bias ~ N(0, B²); 0 <= B <= 1e6.")
@click.option("--forget-bias", metavar="F",
              help="LSTM forget-gate bias (--cell lstm; with --cell rnn only the lstm's cell timescale "
                   "-1/ln sigmoid(F) is printed); |F| <= 1e6. [default: 0.0]")
@click.option("--update-bias", metavar="Z",
              help="GRU update-gate bias (--cell gru); |Z| <= 1e6. [default: 0.0]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table (inf and NaN as null).")
def theory(cell, scales, input_scale, bias_scale, forget_bias, update_bias, as_json):
    """Annealed mean-field theory by Gauss-Hermite quadrature: fixed point, chi, timescale, critical scale.

    rnn: q* = S² E[tanh(√q* z)²] + U² + B², chi = S² E[tanh'(√q* z)²]. lstm and gru:
    the fixed point of E[h²] (and E[c²]) and chi, the per-step multiplier of E‖dL/dh‖²
    (the lstm's is the Perron root of a 2x2 map on the (c, h) adjoints); see
    rnnsim.theory_gated. rate = ½ ln chi per step going back; xi = -1/ln chi (> 0 decay,
    < 0 growth, in steps). The annealed mean field is exact for networks that draw fresh
    weights at every step; networks that keep one W_hh can differ (results/README.md).
    """
    from .. import theory as th
    from .._parse import MAX_SCALE, finite_float, parse_scales

    try:
        scales = parse_scales(scales, name="scale")
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--scale'") from None
    input_scale = finite_float("input-scale", input_scale, minimum=0.0, maximum=MAX_SCALE)
    bias_scale = finite_float("bias-scale", bias_scale, minimum=0.0, maximum=MAX_SCALE)
    given = {"forget_bias": forget_bias, "update_bias": update_bias}
    allowed = {kw for kw, _ in cells.get(cell).gate_bias} | ({"forget_bias"} if cell == "rnn" else set())
    for keyword, value in given.items():
        if value is not None and keyword not in allowed:
            owners = [c for c in cells.names() if keyword in {kw for kw, _ in cells.get(c).gate_bias}]
            flag = f"--{keyword.replace('_', '-')}"
            raise click.BadParameter(f"{flag} applies to --cell {' or '.join(owners)}, not {cell}",
                                     param_hint=f"'{flag}'")
    biases = {kw: finite_float(kw.replace("_", "-"), "0.0" if v is None else v, minimum=-MAX_SCALE,
                               maximum=MAX_SCALE) for kw, v in given.items()}
    module = th.for_cell(cell)
    gate_bias = {kw: biases[kw] for kw, _ in cells.get(cell).gate_bias}
    mf = module.mean_field_of(cell, scales, input_scale, bias_scale, gate_bias)
    critical = module.critical_scale_of(cell, input_scale, bias_scale, gate_bias)
    moments = module.MOMENTS[cell]
    regimes = [th.regime(c) for c in mf["chi"]]
    if cell == "rnn":
        forget = th.forget_timescale(biases["forget_bias"])
    if as_json:
        points = []
        for i, s in enumerate(mf["scale"]):
            point = {"scale": float(s)}
            point.update({m: _finite_or_none(mf[m][i]) for m in moments})
            point.update({"chi": _finite_or_none(mf["chi"][i]), "rate": _finite_or_none(mf["rate"][i]),
                          "timescale": _finite_or_none(mf["timescale"][i]), "regime": regimes[i] or None})
            points.append(point)
        head = {"cell": cell, "input_scale": input_scale, "bias_scale": bias_scale}
        if cell == "rnn":
            head.update(forget_bias=biases["forget_bias"])
        head.update(gate_bias)
        head["critical_scale"] = _finite_or_none(critical)
        if cell == "rnn":
            head["lstm_forget_timescale"] = _finite_or_none(forget)
        for keyword, value in gate_bias.items():
            head["carry_path_rate"] = _finite_or_none(-1.0 / th.forget_timescale(value))
        click.echo(json.dumps({**head, "points": points}, indent=2, allow_nan=False))
        return
    if cell == "rnn":
        click.echo(f"mean-field tanh RNN, W_hh ~ N(0, S^2/H), input scale U = {input_scale:g}, "
                   f"bias scale B = {bias_scale:g}")
    else:
        biases_text = ", ".join(f"{kw.replace('_', ' ')} {v:g}" for kw, v in gate_bias.items())
        click.echo(f"annealed mean-field {cell}, every W_hh block ~ N(0, S^2/H), "
                   f"input scale U = {input_scale:g}, bias scale B = {bias_scale:g}, {biases_text}")
    if critical is not None:
        click.echo(f"critical scale S_c (chi = 1): {critical:.6f}")
    else:
        click.echo("critical scale S_c (chi = 1): none (chi does not cross 1 for S in [0.05, 50])")
    if cell == "rnn":
        click.echo(f"lstm forget-gate timescale -1/ln sigmoid({biases['forget_bias']:g}) = "
                   f"{forget:.4g} steps")
    for keyword, value in gate_bias.items():
        gate = dict(cells.get(cell).gate_bias)[keyword]
        carry = 0.0 - 1.0 / th.forget_timescale(value)
        click.echo(f"carry path alone: ln sigmoid(b_{gate}) = {carry:.5g} per step")
    click.echo("")
    names = [_LABELS[m] for m in moments]
    click.echo(f"{'scale':>9}  " + "".join(f"{n:>10}  " for n in names)
               + f"{'chi':>10}  {'rate 0.5*ln(chi)':>16}  {'xi = -1/ln(chi)':>15}  regime")
    for i, s in enumerate(mf["scale"]):
        values = "".join(f"{mf[m][i]:10.5g}  " for m in moments)
        click.echo(f"{s:9.6g}  {values}{mf['chi'][i]:10.5g}  {mf['rate'][i]:16.5g}  "
                   f"{mf['timescale'][i]:15.5g}  {regimes[i] or 'n/a'}")
    click.echo("rate: per-step change of ln||dL/dh_t|| going back in time; xi < 0 means growth "
               "by e every |xi| steps")
    if any(math.isnan(c) for c in mf["chi"]):
        click.echo("nan: the mean field has no fixed point there (the lstm's E[f^2] rounds to 1: its cell "
                   "state's variance grows without bound)")
