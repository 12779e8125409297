"""Options and checks shared by several commands."""
from __future__ import annotations

import click

from .._validate import DEVICES

device_option = click.option(
    "--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
    help="Where to compute: cpu, cuda (error without a usable GPU) or auto (GPU when usable).")
