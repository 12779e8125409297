"""``rnnsim export``: a results folder as one xarray Dataset in a NetCDF file or a Zarr store."""
from __future__ import annotations

import click


@click.command()
@click.argument("folder", metavar="DIR")
@click.option("--to", "to", type=click.Choice(("netcdf", "zarr")), required=True,
              help="NetCDF-4 file (h5netcdf) or Zarr store (a folder).")
@click.option("--out", metavar="FILE", required=True,
              help="Where to write; an existing FILE needs --overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace FILE if it exists.")
def export(folder, to, out, overwrite):
    """Export the sweep results in DIR: dims (cell, T, scale, seed) for the summary measures,
    (..., t) for the profiles, the manifest as attributes. Needs rnnsim[xarray].
    Read it back with xarray.open_dataset (or rnnsim.sweep.open_dataset(DIR) directly)."""
    from ..sweep import dataset

    path = dataset.export(folder, out, to, overwrite=overwrite)
    click.echo(f"wrote {path} ({to})")
