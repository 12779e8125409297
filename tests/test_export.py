"""Issue 13: a results folder as an xarray Dataset, exported to NetCDF and Zarr without loss."""
import json
import sys

import numpy as np
import pytest
import xarray as xr  # noqa: E402  (in the [test] extra: CI always runs these)
from cli_helpers import assert_one_line_error, run

from rnnsim import sweep

CONFIG = {"cell": "rnn,lstm", "hidden": 6, "input-size": 2, "classes": 3, "batch": 3, "lengths": "4,9",
          "scales": "0.5,2", "seeds": 2, "measure": "rates,lyapunov,pascanu", "lyap-k": 2}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    sweep.run_sweep(CONFIG, out)
    return out


def test_the_dataset_holds_every_row_and_profile(folder):
    ds = sweep.open_dataset(folder)
    config = sweep.SweepConfig.from_mapping(CONFIG)
    assert ds["log10_ratio"].dims == ("cell", "T", "scale", "seed")
    assert ds["log10_grad_norm_mean"].dims == ("cell", "T", "scale", "seed", "t")
    assert ds.sizes["t"] == max(config.lengths) + 1 and ds.sizes["exponent"] == 2
    rows = sweep.read_summary(folder, config)
    assert len(rows) == config.n_points
    for row in rows:
        at = {k: row[k] for k in ("cell", "T", "scale", "seed")}
        for key, value in row.items():
            if key in at or key in ("init", "hidden", "profile_file"):
                continue
            got = ds[key].sel(at).item()
            if value is None:
                assert np.isnan(got), key
            else:
                assert got == value, key  # the same float64 (or label), not a rounding of it
        prof = sweep.read_profiles(folder, row["cell"], row["T"], config)
        j = np.flatnonzero((prof["scale"] == row["scale"]) & (prof["seed"] == row["seed"]))[0]
        mean = ds["log10_grad_norm_mean"].sel(at).values
        assert mean.dtype == np.float32
        np.testing.assert_array_equal(mean[:row["T"] + 1], prof["log10_grad_norm_mean"][j])
        assert np.isnan(mean[row["T"] + 1:]).all()  # NaN beyond the row's own T
        np.testing.assert_array_equal(ds["lyap_spectrum"].sel(at).values, prof["lyap_spectrum"][j])
        grid = ds["log_grad_norm_grid"].sel(at).values
        m = prof["log_grad_norm_grid"].shape[2]
        np.testing.assert_array_equal(grid[:, :m], prof["log_grad_norm_grid"][j])
        np.testing.assert_array_equal(ds["rate_grid_step"].sel(T=row["T"]).values[:m],
                                      sweep.rate_grid(row["T"]))
    manifest = sweep.read_manifest(folder)
    assert json.loads(ds.attrs["manifest"]) == manifest
    assert ds.attrs["config_hidden"] == 6 and ds.attrs["config_cell"] == "rnn,lstm"
    assert ds.attrs["version_numba"] == manifest["versions"]["numba"]
    assert ds.attrs.get("git_commit") == manifest["git_commit"] or manifest["git_commit"] is None


def test_an_unfinished_folder_reads_as_nan(folder, tmp_path):
    import shutil
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    lines = (partial / sweep.SUMMARY).read_text().splitlines(keepends=True)
    (partial / sweep.SUMMARY).write_text("".join(lines[:3]))  # two points finished
    ds = sweep.open_dataset(partial)
    assert int(np.isfinite(ds["log10_ratio"].values).sum()) == 2
    assert int((ds["regime"].values != "").sum()) == 2


@pytest.mark.parametrize("to, suffix", [("netcdf", "nc"), ("zarr", "zarr")])
def test_export_round_trips_and_never_clobbers(folder, tmp_path, to, suffix):
    path = tmp_path / f"sweep.{suffix}"
    result = run("export", folder, "--to", to, "--out", path)
    assert result.exit_code == 0, result.output
    ds = sweep.open_dataset(folder)
    back = xr.open_dataset(path, engine="h5netcdf" if to == "netcdf" else "zarr").load()
    assert back.identical(ds)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rnnsim-tmp-")]
    before = sorted(p.stat().st_mtime_ns for p in [path, *path.rglob("*")])
    assert_one_line_error(run("export", folder, "--to", to, "--out", path), "exists", "--overwrite")
    assert sorted(p.stat().st_mtime_ns for p in [path, *path.rglob("*")]) == before
    result = run("export", folder, "--to", to, "--out", path, "--overwrite")
    assert result.exit_code == 0, result.output
    assert xr.open_dataset(path, engine="h5netcdf" if to == "netcdf" else "zarr").load().identical(ds)


def test_export_errors_are_one_line(folder, tmp_path, monkeypatch):
    assert_one_line_error(run("export", tmp_path / "nothing", "--to", "netcdf", "--out", tmp_path / "a.nc"),
                          "cannot read")
    assert_one_line_error(run("export", folder, "--to", "netcdf", "--out", tmp_path / "no" / "a.nc"),
                          "does not exist")
    monkeypatch.setitem(sys.modules, "xarray", None)
    assert_one_line_error(run("export", folder, "--to", "netcdf", "--out", tmp_path / "a.nc"),
                          'pip install "rnnsim[xarray]"')
    assert not (tmp_path / "a.nc").exists()
