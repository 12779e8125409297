"""Real networks (one W_hh for all steps) against the annealed mean field (fresh weights every step).

For each cell and gate bias, runs ``rnnsim.sweep.run_sweep`` with the ``rates`` and
``lyapunov`` measures (the real CPU kernels, gaussian init, input scale 1, bias scale
0, loss at the last step) into a temporary folder, and prints per scale:

- ``measured``: the typical rate of ln‖∂L/∂h_t‖ going back (``rate``, the fit over the
  middle half of T), mean over the networks, with the 95% bootstrap interval over
  networks × sequences;
- ``mean``: the mean rate (½ ln of the mean over sequences of ‖∂L/∂h_t‖², pooled);
- ``lambda_max``: the top Lyapunov exponent of the same networks on the same inputs;
- ``annealed``: the mean field's ½ ln χ (``mf_rate``), exact for fresh weights at every
  step (``tests/test_theory_gated.py``);
- ``gap``: measured − annealed.

    python benchmarks/gated_gap.py                       # H = 256, T = 1000, the table of results/README.md
    python benchmarks/gated_gap.py --hidden 1024 --cells lstm --lstm-biases 1 --scales 1

Takes a few minutes on 2 cores at H = 256. Nothing is tuned: the theory column comes
from :mod:`rnnsim.theory_gated` as it is.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np


def _pooled(values, cell, T, scale, tag):
    from rnnsim.sweep import bootstrap
    rng = bootstrap.point_rng(cell, T, scale, 0, tag=tag)
    return bootstrap.interval(bootstrap.weighted_mean(bootstrap.weights(rng, *values.shape), values))


def main(argv=None) -> int:
    from rnnsim import sweep
    from rnnsim.sweep import bootstrap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--scales", default="0.5,1,2,3")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lstm-biases", default="0,1,2", help="forget biases of the lstm")
    parser.add_argument("--gru-biases", default="-1,0,1", help="update biases of the gru")
    args = parser.parse_args(argv)

    biases = {"rnn": [None], "lstm": [float(b) for b in args.lstm_biases.split(",")],
              "gru": [float(b) for b in args.gru_biases.split(",")]}
    keyword = {"lstm": "forget-bias", "gru": "update-bias"}
    print(f"H = {args.hidden}, T = {args.T} (rate fitted over steps {args.T // 4}..{args.T - args.T // 4}), "
          f"{args.seeds} networks x {args.batch} sequences per point, input scale 1, bias scale 0; "
          "intervals: 95% bootstrap over networks x sequences")
    print(f"{'cell':5} {'bias':>5} {'S':>4}  {'measured':>8} {'95% interval':>19}  {'mean':>7}  "
          f"{'lambda_max':>10}  {'annealed':>8}  {'gap':>7}")
    folder = tempfile.mkdtemp(prefix="rnnsim-gap-")
    try:
        for cell in sweep.parse_cells(args.cells):
            for b in biases[cell]:
                config = {"cell": cell, "hidden": args.hidden, "lengths": str(args.T), "scales": args.scales,
                          "seeds": args.seeds, "batch": args.batch, "measure": "rates,lyapunov"}
                if b is not None:
                    config[keyword[cell]] = b
                out = os.path.join(folder, f"{cell}_{b}")
                sweep.run_sweep(config, out)
                parsed = sweep.SweepConfig.from_mapping(config)
                rows = sweep.read_summary(out, parsed)
                data = sweep.read_profiles(out, cell, args.T, parsed)
                steps = sweep.rate_grid(args.T)
                for s in parsed.scales:
                    here = [r for r in rows if r["scale"] == s]
                    pick = data["scale"] == s
                    rate = np.mean([r["rate"] for r in here])
                    lo, hi = _pooled(data["rate_seq"][pick], cell, args.T, s, 100)
                    ones = np.ones((1, *data["log_grad_norm_grid"][pick].shape[:2]))
                    mean = bootstrap.weighted_mean_rate(ones, data["log_grad_norm_grid"][pick], steps)[0]
                    lam = np.mean([r["lyap_max"] for r in here])
                    annealed = here[0]["mf_rate"]
                    print(f"{cell:5} {'' if b is None else f'{b:g}':>5} {s:4g}  {rate:8.4f} "
                          f"[{lo:8.4f}, {hi:8.4f}]  {mean:7.4f}  {lam:10.4f}  {annealed:8.4f}  "
                          f"{rate - annealed:+7.4f}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
